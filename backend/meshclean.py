"""Mesh clean-up for captures without masks: the final mesh clean by default.

A field trained without masks puts surface where the photos show background: a shell where the SDF's clamp closes
the volume on the region's boundary, floaters, pieces that only one camera ever saw, and the table or ground the
object stands on. Each step here is a function of the mesh that returns the faces it keeps (a (F,) bool mask) and
what it found; :func:`clean_mesh` chains them and says how many faces each reason removed:

1. ``outside_region``: cut to the region (an oriented box, 4x4 cube-to-mesh matrix, and/or the training sphere);
2. ``boundary_shell``: faces whose corners all lie within a thin band inside the region's boundary, and whole
   connected parts that are mostly such faces;
3. ``unseen``: faces whose corners are all in front of and inside the image of fewer than ``min_views`` cameras
   (no occlusion test: a frustum count, see docs/REFINE.md);
4. ``floaters``: connected parts (faces sharing a vertex) with less area than a fraction of the largest part;
5. ``support_plane`` (an option): the dominant plane the object rests on, by RANSAC and a least-squares refinement,
   and everything at or below it as seen from the cameras; then floaters again.

numpy only: Blender's own Python imports this module (like :mod:`backend.protocol`), so no scipy, torch or bpy.
Arrays: ``vertices`` (V, 3) float, ``faces`` (F, 3) int, ``colors`` (V, C) or None, all in the mesh's coordinates
(the reconstruction's input coordinates).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

#: Report keys, in the order the steps run.
REASONS = ("outside_region", "boundary_shell", "unseen", "floaters", "support_plane")


# ---------------------------------------------------------------------------------------------------------------
# inputs


@dataclass(frozen=True)
class Region:
    """A region of interest in mesh (world) coordinates: an oriented box, a sphere, or where both hold (a training
    run's region: its unit sphere and its region box). The clean-up cuts to it; ``backend eval`` crops to it and
    measures the shell fraction against it.

    Attributes:
        box: None or (4, 4) matrix mapping the cube [-1, 1]^3 onto the box (what ``train --roi`` reads).
        sphere_center: None or (3,) centre of the sphere (the training sphere, where the field's clamp closes the
            volume); sphere_radius: its radius.
        source: where it came from (a file, a job), for reports.

    Raises:
        ValueError: neither a box nor a sphere, a flat or non-finite box, a sphere without a positive radius, or a
            box whose centre lies outside the sphere.
    """

    box: np.ndarray | None = None
    sphere_center: np.ndarray | None = None
    sphere_radius: float = 0.0
    source: str = ""

    def __post_init__(self) -> None:
        if self.box is None and self.sphere_center is None:
            raise ValueError("a region needs a box or a sphere")
        if self.box is not None:
            m = np.asarray(self.box, dtype=np.float64).reshape(4, 4)
            if not np.all(np.isfinite(m)) or abs(np.linalg.det(m[:3, :3])) < 1e-12:
                raise ValueError("the region box is empty or flat")
            object.__setattr__(self, "box", m)
        if self.sphere_center is not None:
            object.__setattr__(self, "sphere_center", np.asarray(self.sphere_center, dtype=np.float64).reshape(3))
            if not self.sphere_radius > 0:
                raise ValueError("the region sphere needs a positive radius")
            if self.box is not None and np.linalg.norm(self.box[:3, 3] - self.sphere_center) >= self.sphere_radius:
                raise ValueError("the region box's centre lies outside its sphere")

    @property
    def has_sphere(self) -> bool:
        return self.sphere_center is not None

    @property
    def center(self) -> np.ndarray:
        """(3,) the point directions are measured from: the box's centre, else the sphere's."""
        return self.box[:3, 3].copy() if self.box is not None else self.sphere_center.copy()

    def size(self) -> float:
        """A length for tolerances: the sphere's radius or the box's half-diagonal, the smaller one."""
        sizes = []
        if self.box is not None:
            sizes.append(float(np.linalg.norm(self.box[:3, :3] @ np.ones(3))))
        if self.has_sphere:
            sizes.append(float(self.sphere_radius))
        return min(sizes)

    def inside_distance(self, points: np.ndarray) -> np.ndarray:
        """(M,) distance of (M, 3) points to the region's boundary: positive inside, negative outside (exact for
        the sphere and inside a box with orthogonal axes, a close estimate elsewhere)."""
        pts = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        d = np.full(len(pts), np.inf)
        if self.box is not None:
            axes = self.box[:3, :3]
            local = (pts - self.box[:3, 3]) @ np.linalg.inv(axes).T
            half = np.linalg.norm(axes, axis=0)  # (3,) half extents along the box's axes
            d = np.minimum(d, ((1.0 - np.abs(local)) * half).min(axis=1))
        if self.has_sphere:
            d = np.minimum(d, self.sphere_radius - np.linalg.norm(pts - self.sphere_center, axis=1))
        return d

    def ratio(self, points: np.ndarray) -> np.ndarray:
        """(P,) for (P, 3) points: distance from :attr:`center` over the distance from the centre to the region's
        boundary in the same direction (< 1 inside, 1 on the boundary, > 1 outside; 0 at the centre).

        For the box it is the largest absolute box coordinate (the box maps to [-1, 1]^3); for the sphere
        (centre s, radius R, seen from c) ``|p - c| / t`` with ``t`` the positive root of ``|c + t d - s| = R``;
        where both are given, the larger of the two.
        """
        p = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        c = self.center
        out = np.zeros(len(p))
        if self.box is not None:
            local = (p - c) @ np.linalg.inv(self.box[:3, :3]).T
            out = np.abs(local).max(1)
        if self.sphere_center is not None:
            v = p - c
            dist = np.linalg.norm(v, axis=1)
            d = v / np.maximum(dist, 1e-300)[:, None]
            oc = c - self.sphere_center
            b = d @ oc
            t = -b + np.sqrt(np.maximum(b * b - oc @ oc + self.sphere_radius**2, 0.0))
            out = np.maximum(out, np.where(dist > 0, dist / np.maximum(t, 1e-300), 0.0))
        return out

    def describe(self) -> dict[str, Any]:
        """JSON-ready description (for the metrics)."""
        out: dict[str, Any] = {"source": self.source, "center": self.center.tolist()}
        if self.box is not None:
            out["box_matrix"] = self.box.tolist()
        if self.sphere_center is not None:
            out["sphere_center"] = self.sphere_center.tolist()
            out["sphere_radius"] = float(self.sphere_radius)
        return out


def region_from_frame(to_world: np.ndarray, roi: np.ndarray | None = None, box: np.ndarray | None = None,
                      source: str = "") -> Region:
    """The region of a training run, in input coordinates.

    Args:
        to_world: (4, 4) similarity from the normalized frame (the unit training sphere) to input coordinates.
        roi: None or (2, 3) axis-aligned box in the normalized frame (``Scene.roi``, clipped to [-1, 1]^3).
        box: None or (4, 4) cube-to-input matrix of an oriented region box (``--roi``); preferred over ``roi``.
        source: where it came from, for reports.
    """
    to_world = np.asarray(to_world, dtype=np.float64).reshape(4, 4)
    scale = float(np.cbrt(abs(np.linalg.det(to_world[:3, :3]))))
    if box is None and roi is not None:
        r = np.clip(np.asarray(roi, dtype=np.float64).reshape(2, 3), -1.0, 1.0)
        cube = np.eye(4)
        cube[:3, :3] = np.diag((r[1] - r[0]) / 2)
        cube[:3, 3] = (r[1] + r[0]) / 2
        box = to_world @ cube
    return Region(box=box, sphere_center=to_world[:3, 3].copy(), sphere_radius=scale, source=source)


@dataclass(frozen=True)
class Cameras:
    """Pinhole cameras in mesh coordinates.

    Attributes:
        K: (N, 3, 3) intrinsics (OpenCV pixel convention).
        c2w: (N, 4, 4) camera-to-world, OpenCV axes (x right, y down, z forward).
        sizes: (N, 2) image (width, height) in pixels, matching ``K``.
    """

    K: np.ndarray
    c2w: np.ndarray
    sizes: np.ndarray

    def __post_init__(self) -> None:
        n = len(np.asarray(self.c2w))
        object.__setattr__(self, "K", np.asarray(self.K, dtype=np.float64).reshape(n, 3, 3))
        object.__setattr__(self, "c2w", np.asarray(self.c2w, dtype=np.float64).reshape(n, 4, 4))
        object.__setattr__(self, "sizes", np.asarray(self.sizes, dtype=np.float64).reshape(n, 2))

    def __len__(self) -> int:
        return len(self.c2w)

    def centers(self) -> np.ndarray:
        """(N, 3) camera centres."""
        return self.c2w[:, :3, 3]

    def up(self, min_agreement: float = 0.5) -> np.ndarray | None:
        """(3,) mean camera up (camera -y) when the cameras agree on it (mean resultant length of their unit up
        vectors at least ``min_agreement``), else None (e.g. a top-down capture with the camera turned freely)."""
        ups = -self.c2w[:, :3, 1]
        ups = ups / np.maximum(np.linalg.norm(ups, axis=1, keepdims=True), 1e-12)
        mean = ups.mean(axis=0)
        length = float(np.linalg.norm(mean))
        return mean / length if len(ups) and length >= min_agreement else None


@dataclass(frozen=True)
class CleanOptions:
    """Which steps :func:`clean_mesh` runs and their tolerances (fractions are of the stated length)."""

    crop: bool = True
    #: boundary shell: band inside the region's boundary, as a fraction of :meth:`Region.size`
    shell: bool = True
    shell_band: float = 0.015
    #: a connected part goes whole when more than this share of its area lies in the band
    shell_part_fraction: float = 0.5
    #: faces seen by fewer cameras than this go (0 turns the step off)
    min_views: int = 2
    #: parts with less area than this fraction of the largest part go (0 turns the step off)
    floaters: bool = True
    min_part: float = 0.05
    #: support plane (off by default)
    remove_plane: bool = False
    #: RANSAC inlier distance and upper bound of the removal tolerance, fraction of the mesh's bounding diagonal
    plane_tolerance: float = 0.01
    #: a plane must hold at least this share of the mesh's area
    plane_min_fraction: float = 0.08
    #: and at least this share of its area must lie outside the footprint of what stands on it
    plane_min_outside: float = 0.25
    #: share of the cameras that must be on the plane's near side
    plane_camera_side: float = 0.9
    #: preferred up direction (mesh coordinates); None: the cameras' mean up when they agree on one
    up: tuple[float, float, float] | None = None
    #: planes within this angle of ``up`` are tried first
    up_angle_deg: float = 25.0
    ransac_iterations: int = 400
    seed: int = 0


# ---------------------------------------------------------------------------------------------------------------
# mesh helpers


def face_areas(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(F,) triangle areas of (V, 3) vertices and (F, 3) faces."""
    t = np.asarray(vertices, dtype=np.float64)[faces]
    return 0.5 * np.linalg.norm(np.cross(t[:, 1] - t[:, 0], t[:, 2] - t[:, 0]), axis=1)


def submesh(vertices: np.ndarray, faces: np.ndarray, colors: np.ndarray | None, keep: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The kept faces (``keep`` (F,) bool) and the vertices they use: (V', 3) vertices, (F', 3) int32 faces
    renumbered, (V', C) colours or None. Dtypes of vertices and colours are kept."""
    kept = faces[keep]
    used = np.zeros(len(vertices), dtype=bool)
    used[kept.ravel()] = True
    remap = np.cumsum(used) - 1
    return vertices[used], remap[kept].astype(np.int32), None if colors is None else colors[used]


def face_components(n_vertices: int, faces: np.ndarray) -> np.ndarray:
    """(F,) connected-part label (0..P-1) of each face; faces sharing a vertex are connected.

    Union-find on the vertices, vectorized: every round hooks each root that shares an edge with a smaller root
    onto the smallest such root, then compresses every path to its root; the edges left between different roots
    shrink fast (a few rounds for meshes of millions of faces).
    """
    faces = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    if len(faces) == 0:
        return np.zeros(0, dtype=np.int64)
    parent = np.arange(n_vertices, dtype=np.int64)
    a = np.concatenate([faces[:, 0], faces[:, 1]])
    b = np.concatenate([faces[:, 1], faces[:, 2]])
    while len(a):
        ra, rb = parent[a], parent[b]
        cross = ra != rb
        if not cross.any():
            break
        a, b, ra, rb = a[cross], b[cross], ra[cross], rb[cross]
        np.minimum.at(parent, np.maximum(ra, rb), np.minimum(ra, rb))  # a root only ever points lower: no cycles
        while True:
            up = parent[parent]
            if np.array_equal(up, parent):
                break
            parent = up
    _, labels = np.unique(parent[faces[:, 0]], return_inverse=True)
    return labels.ravel()


def median_edge_length(vertices: np.ndarray, faces: np.ndarray) -> float:
    """Median length of the (F, 3) faces' edges (each counted once per face)."""
    if len(faces) == 0:
        return 0.0
    v = np.asarray(vertices, dtype=np.float64)
    e = np.concatenate([v[faces[:, 1]] - v[faces[:, 0]], v[faces[:, 2]] - v[faces[:, 1]],
                        v[faces[:, 0]] - v[faces[:, 2]]])
    return float(np.median(np.linalg.norm(e, axis=1)))


def _bbox_diagonal(vertices: np.ndarray, faces: np.ndarray) -> float:
    if len(faces) == 0:
        return 0.0
    used = np.asarray(vertices, dtype=np.float64)[np.unique(faces)]
    return float(np.linalg.norm(used.max(0) - used.min(0)))


# ---------------------------------------------------------------------------------------------------------------
# steps: each returns the (F,) bool mask of the faces it keeps and what it found


def crop_to_region(vertices: np.ndarray, faces: np.ndarray, region: Region) -> tuple[np.ndarray, dict[str, Any]]:
    """Keep the faces whose three corners lie inside the region (box and sphere; 1e-6 of its size of slack)."""
    inside = region.inside_distance(vertices) >= -1e-6 * max(region.size(), 1e-12)
    keep = inside[faces].all(axis=1)
    return keep, {"removed": int((~keep).sum())}


def boundary_shell(vertices: np.ndarray, faces: np.ndarray, region: Region, *, band: float = 0.015,
                   part_fraction: float = 0.5) -> tuple[np.ndarray, dict[str, Any]]:
    """Surface lying on the region's boundary, where the field's clamp closes the volume.

    A face is on the boundary when its three corners lie within ``band`` x :meth:`Region.size` of the boundary
    (inside or out). Those faces go, and so do whole connected parts with more than ``part_fraction`` of their area
    on the boundary (a shell's rim that bends inward stays attached to the shell, not to the object).

    Returns:
        keep (F,) bool, and ``removed``, ``parts`` (shell parts removed whole), ``band`` (in mesh units).
    """
    width = band * region.size()
    near = region.inside_distance(vertices) < width
    on_boundary = near[faces].all(axis=1)
    if not on_boundary.any():
        return np.ones(len(faces), dtype=bool), {"removed": 0, "parts": 0, "band": width}
    labels = face_components(len(vertices), faces)
    area = face_areas(vertices, faces)
    part_area = np.bincount(labels, weights=area)
    part_boundary = np.bincount(labels, weights=area * on_boundary)
    shell_part = part_boundary > part_fraction * np.maximum(part_area, 1e-300)
    keep = ~(on_boundary | shell_part[labels])
    return keep, {"removed": int((~keep).sum()), "parts": int(shell_part.sum()), "band": width}


def view_counts(vertices: np.ndarray, cameras: Cameras, cap: int | None = None) -> np.ndarray:
    """(V,) number of cameras each vertex is in front of and inside the image of (pixel centres at integers,
    the image spans [-0.5, size - 0.5)). With ``cap``, counting stops at ``cap`` (a vertex that reached it is not
    projected again: most vertices reach a small cap within the first few cameras)."""
    pts = np.asarray(vertices, dtype=np.float64)
    count = np.zeros(len(pts), dtype=np.int32)
    todo = np.arange(len(pts))
    for K, c2w, (w, h) in zip(cameras.K, cameras.c2w, cameras.sizes):
        if cap is not None:
            todo = todo[count[todo] < cap]
            if len(todo) == 0:
                break
        R, t = c2w[:3, :3], c2w[:3, 3]
        pc = (pts[todo] - t) @ R  # world -> camera for a rigid camera-to-world: R^T (x - t)
        z = pc[:, 2]
        front = z > 1e-9 * max(float(np.abs(pc).max(initial=0.0)), 1.0)
        uvw = pc @ K.T
        zs = np.where(front, uvw[:, 2], 1.0)
        u, v = uvw[:, 0] / zs, uvw[:, 1] / zs
        count[todo] += front & (u >= -0.5) & (u < w - 0.5) & (v >= -0.5) & (v < h - 0.5)
    return count


def seen_faces(vertices: np.ndarray, faces: np.ndarray, cameras: Cameras, *, min_views: int = 2
               ) -> tuple[np.ndarray, dict[str, Any]]:
    """Keep the faces with at least one corner in front of and inside the image of ``min_views`` cameras or
    more. No occlusion test (see docs/REFINE.md): this removes what lies outside the views, not what is hidden."""
    counts = view_counts(vertices, cameras, cap=min_views)
    keep = (counts >= min_views)[faces].any(axis=1)
    return keep, {"removed": int((~keep).sum()), "min_views": int(min_views)}


def floaters(vertices: np.ndarray, faces: np.ndarray, *, min_part: float = 0.05
             ) -> tuple[np.ndarray, dict[str, Any]]:
    """Keep the connected parts whose area is at least ``min_part`` times the largest part's."""
    if len(faces) == 0:
        return np.ones(0, dtype=bool), {"removed": 0, "parts": 0}
    labels = face_components(len(vertices), faces)
    part_area = np.bincount(labels, weights=face_areas(vertices, faces))
    keep_part = part_area >= min_part * part_area.max()
    keep = keep_part[labels]
    return keep, {"removed": int((~keep).sum()), "parts": int((~keep_part).sum()),
                  "parts_kept": int(keep_part.sum())}


# ---------------------------------------------------------------------------------------------------------------
# support plane


@dataclass(frozen=True)
class Plane:
    """A plane ``normal . x + offset = 0`` with ``normal`` (3,) a unit vector towards the cameras / the object
    (so :meth:`height` is positive on the object's side); ``tolerance`` is the removal distance in mesh units."""

    normal: np.ndarray
    offset: float
    tolerance: float
    info: dict[str, Any] = field(default_factory=dict)

    def height(self, points: np.ndarray) -> np.ndarray:
        """(M,) signed distance of (M, 3) points above the plane."""
        return np.asarray(points, dtype=np.float64) @ self.normal + self.offset


#: faces count as lying on a plane when their normal is within about 25 degrees of the plane's
PARALLEL_COS = float(np.cos(np.radians(25.0)))


def _robust_sigma(x: np.ndarray) -> float:
    """Standard deviation of (M,) values estimated from their median absolute deviation."""
    return 1.4826 * float(np.median(np.abs(x - np.median(x)))) if len(x) else 0.0


def _fit_plane(points: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, float]:
    """Weighted least-squares plane of (M, 3) points: (unit normal, offset)."""
    w = weights / max(weights.sum(), 1e-300)
    c = w @ points
    d = points - c
    cov = (d * w[:, None]).T @ d
    _, vecs = np.linalg.eigh(cov)
    n = vecs[:, 0]
    return n, -float(n @ c)


def _plane_basis(n: np.ndarray) -> np.ndarray:
    """(2, 3) two unit vectors spanning the plane of normal ``n``."""
    a = np.eye(3)[int(np.argmin(np.abs(n)))]
    u = np.cross(n, a)
    u /= np.linalg.norm(u)
    return np.stack([u, np.cross(n, u)])


def _outside_footprint(vertices: np.ndarray, heights: np.ndarray, centroids: np.ndarray, areas: np.ndarray,
                       inlier: np.ndarray, normal: np.ndarray, tolerance: float, edge: float, cells: int = 64
                       ) -> float:
    """Share of the plane's inlier area (faces ``inlier`` (F,) bool) lying outside the footprint of what stands
    above it (vertices higher than ``tolerance``, projected onto the plane on a grid of ``cells`` across the plane
    but no finer than two edge lengths ``edge``, so that a mesh's vertices fill the cells they cover; grown by one
    cell). A support plane reaches past the object's base; the flat base of an object alone does not."""
    basis = _plane_basis(normal)
    p_in = centroids[inlier] @ basis.T
    above = heights > tolerance
    if not above.any():  # nothing stands on it: the top of something, not a support
        return 0.0
    lo, hi = p_in.min(0), p_in.max(0)
    cell = max(float((hi - lo).max()) / cells, 2.0 * edge, 1e-12)
    shape = np.maximum(np.ceil((hi - lo) / cell).astype(np.int64) + 1, 1)
    grid = np.zeros(shape + 2, dtype=bool)  # one cell of padding for the dilation
    q = np.floor((vertices[above] @ basis.T - lo) / cell).astype(np.int64)
    ok = np.all((q >= 0) & (q < shape), axis=1)
    grid[q[ok, 0] + 1, q[ok, 1] + 1] = True
    grown = grid.copy()
    for dx in (-1, 0, 1):
        for dy in (-1, 0, 1):
            grown[1:-1, 1:-1] |= grid[1 + dx:grid.shape[0] - 1 + dx, 1 + dy:grid.shape[1] - 1 + dy]
    qi = np.floor((p_in - lo) / cell).astype(np.int64)
    covered = grown[qi[:, 0] + 1, qi[:, 1] + 1]
    a = areas[inlier]
    return float(a[~covered].sum() / max(a.sum(), 1e-300))


def find_support_plane(vertices: np.ndarray, faces: np.ndarray, *, cameras: Cameras | None = None,
                       options: CleanOptions = CleanOptions()) -> tuple[Plane | None, dict[str, Any]]:
    """The dominant plane the object rests on, or None ("no plane found").

    RANSAC over area-weighted face centroids: planes through three of them, scored by the area of faces near and
    parallel to them (truncated quadratic: a face at distance d counts 1 - (d / t)^2 up to t = ``plane_tolerance``
    of the mesh's bounding diagonal, so the tighter of two parallel layers wins). The best few are refined by
    weighted least squares on their inliers, the band narrowing to three robust sigmas. Planes within
    ``up_angle_deg`` of the up direction (``options.up``, else the cameras' mean up when they agree on one) are tried
    first, then any. A plane qualifies when it holds ``plane_min_fraction`` of the area, at least
    ``plane_camera_side`` of the cameras are on one side of it (when cameras are known), and ``plane_min_outside``
    of its area lies outside the footprint of what stands on it.

    Args:
        vertices: (V, 3), faces: (F, 3).

    Returns:
        the plane (normal towards the cameras, or ``up``, or the side with more surface) and a report.
    """
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    if len(f) < 3:
        return None, {"found": False, "why": "no plane found", "rejected": ["fewer than 3 faces"]}
    cross = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    areas = 0.5 * np.linalg.norm(cross, axis=1)
    face_normals = cross / np.maximum(2.0 * areas, 1e-300)[:, None]
    total = float(areas.sum())
    centroids = v[f].mean(axis=1)
    diag = _bbox_diagonal(v, f)
    threshold = options.plane_tolerance * diag
    if total <= 0 or threshold <= 0:
        return None, {"found": False, "why": "no plane found", "rejected": ["the mesh has no area"]}
    median_edge = median_edge_length(v, f)
    rng = np.random.default_rng(options.seed)
    pick = rng.choice(len(f), size=min(len(f), 20000), p=areas / total)
    s_pts, s_nrm = centroids[pick], face_normals[pick]
    up = np.asarray(options.up, dtype=np.float64) if options.up is not None else (
        cameras.up() if cameras is not None and len(cameras) else None)
    if up is not None:
        up = up / np.linalg.norm(up)

    def score(pts: np.ndarray, nrm: np.ndarray, w: np.ndarray | None, n: np.ndarray, off: np.ndarray
              ) -> np.ndarray:
        """(C,) truncated-quadratic score of (C, 3) planes over (M, 3) points with normals and weights."""
        d = (pts @ n.T + off) / threshold
        near = np.maximum(0.0, 1.0 - d * d) * (np.abs(nrm @ n.T) > PARALLEL_COS)
        return near.sum(axis=0) if w is None else w @ near

    tri = s_pts[rng.integers(0, len(s_pts), size=(options.ransac_iterations, 3))]
    normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    length = np.linalg.norm(normals, axis=1)
    good = length > 1e-9 * diag * diag
    normals = normals[good] / length[good, None]
    offsets = -np.einsum("ij,ij->i", normals, tri[good, 0])
    scores = np.concatenate([score(s_pts, s_nrm, None, normals[s:s + 32], offsets[s:s + 32])
                             for s in range(0, len(normals), 32)] or [np.zeros(0)])

    passes = []
    if up is not None:
        passes.append(("up", np.abs(normals @ up) >= np.cos(np.radians(options.up_angle_deg))))
    passes.append(("any", np.ones(len(normals), dtype=bool)))
    def same(n: np.ndarray, off: float, m: np.ndarray, o: float, cos: float, dist: float) -> bool:
        return bool(abs(n @ m) > cos and abs(off - o * np.sign(n @ m)) < dist)

    def refine(n: np.ndarray, off: float) -> tuple[np.ndarray, float]:
        """Least squares on the inliers (near and parallel, so the rim of what stands on the plane does not tilt
        it), the band narrowing to three robust sigmas; on the sample, then once on every face."""
        band = threshold
        for pts, nrm, w in ((s_pts, s_nrm, np.ones(len(s_pts))),) * 4 + ((centroids, face_normals, areas),):
            inlier = (np.abs(pts @ n + off) < band) & (np.abs(nrm @ n) > PARALLEL_COS)
            if inlier.sum() < 3:
                break
            n, off = _fit_plane(pts[inlier], w[inlier])
            band = min(threshold, max(3.0 * _robust_sigma(pts[inlier] @ n + off), 1e-3 * threshold))
        return n, off

    rejected: list[str] = []
    for name, allowed in passes:
        refined: list[tuple[float, np.ndarray, float]] = []
        seeds: list[tuple[np.ndarray, float]] = []
        for i in np.argsort(-scores)[:200]:
            if len(seeds) >= 8 or not allowed[i] or scores[i] <= 0:
                continue
            if any(same(normals[i], offsets[i], m, o, 0.995, threshold) for m, o in seeds):
                continue  # a candidate near one already refined
            seeds.append((normals[i], float(offsets[i])))
            n, off = refine(normals[i], float(offsets[i]))
            if any(same(n, off, m, o, 0.999, 0.1 * threshold) for _, m, o in refined):
                continue  # the same plane again
            refined.append((float(score(centroids, face_normals, areas, n[None], np.array([off]))[0]), n, off))
        for _, n, off in sorted(refined, key=lambda r: -r[0]):
            heights_c = centroids @ n + off
            inlier = (np.abs(heights_c) < threshold) & (np.abs(face_normals @ n) > PARALLEL_COS)
            fraction = float(areas[inlier].sum() / total)
            if fraction < options.plane_min_fraction:
                rejected.append(f"{name}: {fraction:.1%} of the area on the plane")
                continue
            # which side is the object's: the cameras', else up's, else the one with more surface
            if cameras is not None and len(cameras):
                side = float(np.mean(cameras.centers() @ n + off > 0))
                if max(side, 1 - side) < options.plane_camera_side:
                    rejected.append(f"{name}: cameras on both sides ({side:.0%} / {1 - side:.0%})")
                    continue
                sign = 1.0 if side >= 0.5 else -1.0
            elif up is not None:
                sign = 1.0 if n @ up >= 0 else -1.0
            else:
                sign = 1.0 if areas[heights_c > threshold].sum() >= areas[heights_c < -threshold].sum() else -1.0
            n, off = n * sign, off * sign
            sigma = _robust_sigma(centroids[inlier] @ n + off)
            tolerance = min(threshold, max(3.0 * sigma, 0.5 * median_edge))
            outside = _outside_footprint(v, v @ n + off, centroids, areas, inlier, n, tolerance, median_edge)
            if outside < options.plane_min_outside:
                rejected.append(f"{name}: only {outside:.0%} of the plane reaches past what stands on it")
                continue
            info = {"found": True, "normal": n.tolist(), "point": (-off * n).tolist(), "tolerance": tolerance,
                    "area_fraction": fraction, "outside_footprint": outside, "pass": name,
                    "angle_to_up_deg": None if up is None else float(np.degrees(np.arccos(np.clip(n @ up, -1, 1))))}
            return Plane(n, off, tolerance, info), info
    return None, {"found": False, "why": "no plane found", "rejected": rejected[:8]}


def support_plane(vertices: np.ndarray, faces: np.ndarray, *, cameras: Cameras | None = None,
                  options: CleanOptions = CleanOptions()) -> tuple[np.ndarray, dict[str, Any]]:
    """Remove the support plane: faces with every corner at most the plane's tolerance above it (on it, or on
    the far side from the cameras). A mesh without a qualifying plane is kept whole (``why``: "no plane found").

    Returns:
        keep (F,) bool, and the :func:`find_support_plane` report with ``removed``.
    """
    plane, info = find_support_plane(vertices, faces, cameras=cameras, options=options)
    if plane is None:
        return np.ones(len(faces), dtype=bool), {**info, "removed": 0}
    heights = plane.height(vertices)
    keep = (heights > plane.tolerance)[faces].any(axis=1)
    return keep, {**info, "removed": int((~keep).sum())}


def remove_support_plane(vertices: np.ndarray, faces: np.ndarray, *, cameras: Cameras | None = None,
                         options: CleanOptions = CleanOptions()) -> tuple[np.ndarray, dict[str, Any]]:
    """:func:`support_plane`, then the floaters that leaves (parts below ``options.min_part`` of the largest part
    left; ``min_part`` 0 skips them): what Blender's Remove Support Plane runs on any triangle mesh.

    Returns:
        keep (F,) bool over ``faces``, and a report: ``removed`` {"support_plane": n, "floaters": m} and ``plane``
        (the :func:`find_support_plane` report).
    """
    f = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    keep, plane = support_plane(vertices, f, cameras=cameras, options=options)
    removed = {"support_plane": int((~keep).sum()), "floaters": 0}
    if plane.get("found") and options.floaters and options.min_part > 0 and keep.any():
        kept = np.flatnonzero(keep)
        part_keep, _ = floaters(vertices, f[kept], min_part=options.min_part)
        keep[kept[~part_keep]] = False
        removed["floaters"] = int((~part_keep).sum())
    return keep, {"removed": removed, "plane": plane}


# ---------------------------------------------------------------------------------------------------------------
# everything


def clean_mesh(vertices: np.ndarray, faces: np.ndarray, colors: np.ndarray | None = None, *,
               region: Region | None = None, cameras: Cameras | None = None,
               options: CleanOptions = CleanOptions()) -> tuple[np.ndarray, np.ndarray, np.ndarray | None,
                                                                dict[str, Any]]:
    """Clean a reconstructed mesh: cut to the region, boundary shell, unseen parts, floaters, and (an option) the
    support plane followed by floaters again. Steps without their input (no region, no cameras) are skipped.

    Args:
        vertices: (V, 3), faces: (F, 3), colors: (V, C) or None, in the same coordinates as ``region`` and
            ``cameras``.

    Returns:
        (V', 3) vertices, (F', 3) int32 faces, (V', C) colours or None, and a report: ``removed`` {reason: faces}
        (see :data:`REASONS`), ``faces_before``, ``faces_after``, ``steps`` (each step's details) and, with
        ``remove_plane``, ``plane`` (the plane, or ``{"found": False, "why": "no plane found"}``). When the steps
        would remove every face the mesh is returned as it was, with ``kept_whole`` saying why.
    """
    v = np.asarray(vertices)
    f = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    c = colors
    report: dict[str, Any] = {"removed": {}, "faces_before": int(len(f)), "steps": {}}

    def apply(reason: str, keep: np.ndarray, info: dict[str, Any]) -> None:
        nonlocal v, f, c
        report["removed"][reason] = int((~keep).sum())
        report["steps"][reason] = info
        if not keep.all():
            v, f, c = submesh(v, f, c, keep)
            f = f.astype(np.int64)

    if region is not None and options.crop and len(f):
        apply("outside_region", *crop_to_region(v, f, region))
    if region is not None and options.shell and region.size() > 0 and len(f):
        apply("boundary_shell", *boundary_shell(v, f, region, band=options.shell_band,
                                                part_fraction=options.shell_part_fraction))
    if cameras is not None and len(cameras) and options.min_views > 0 and len(f):
        apply("unseen", *seen_faces(v, f, cameras, min_views=options.min_views))
    if options.floaters and options.min_part > 0 and len(f):
        apply("floaters", *floaters(v, f, min_part=options.min_part))
    if options.remove_plane and len(f):
        keep, info = remove_support_plane(v, f, cameras=cameras, options=options)
        report["plane"] = info["plane"]
        for reason, n in info["removed"].items():
            report["removed"][reason] = report["removed"].get(reason, 0) + n
        report["steps"]["support_plane"] = info
        if not keep.all():
            v, f, c = submesh(v, f, c, keep)
            f = f.astype(np.int64)
    if len(f) == 0 and report["faces_before"] > 0:
        return (np.asarray(vertices), np.asarray(faces, dtype=np.int32), colors,
                {**report, "faces_after": report["faces_before"],
                 "kept_whole": "the clean-up would have removed every face; the mesh is kept as it was",
                 "would_remove": report["removed"], "removed": {}})
    report["faces_after"] = int(len(f))
    return v, f.astype(np.int32), c, report


def clean_final_mesh(vertices: np.ndarray, faces: np.ndarray, colors: np.ndarray | None, *,
                     K: np.ndarray | None = None, c2w: np.ndarray | None = None, sizes: np.ndarray | None = None,
                     to_world: np.ndarray | None = None, roi: np.ndarray | None = None,
                     roi_matrix: np.ndarray | None = None, remove_plane: bool = False,
                     options: CleanOptions | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None,
                                                                   dict[str, Any]]:
    """:func:`clean_mesh` with a training run's cameras and region, for the final mesh of a capture without masks.

    Args:
        vertices, faces, colors: the mesh in input coordinates.
        K: (N, 3, 3), c2w: (N, 4, 4) OpenCV camera-to-world, sizes: (N, 2) (width, height): the scene's cameras in
            input coordinates (``Scene.K``, ``Scene.c2w``, ``Scene.sizes``); None skips the ``unseen`` step.
        to_world: (4, 4) normalized-to-input similarity (the unit sphere is the training sphere).
        roi: (2, 3) normalized-frame region box (``Scene.roi``); roi_matrix: (4, 4) oriented region box in input
            coordinates (``--roi``), preferred over ``roi``.
        remove_plane: also remove the support plane.
        options: the steps' settings (default :class:`CleanOptions`); ``remove_plane`` overrides its field.
    """
    opts = replace(options or CleanOptions(), remove_plane=remove_plane or (options is not None
                                                                              and options.remove_plane))
    region = region_from_frame(to_world, roi, roi_matrix) if to_world is not None else (
        Region(box=roi_matrix) if roi_matrix is not None else None)
    cameras = Cameras(K, c2w, sizes) if K is not None and c2w is not None and sizes is not None else None
    return clean_mesh(vertices, faces, colors, region=region, cameras=cameras, options=opts)


def removed_summary(report: dict[str, Any]) -> str:
    """One line for the user: "removed 1200 faces: 800 boundary shell, 400 floaters; no plane found"."""
    parts = [f"{n} {reason.replace('_', ' ')}" for reason, n in report.get("removed", {}).items() if n]
    text = f"removed {sum(report.get('removed', {}).values())} faces" + (": " + ", ".join(parts) if parts else "")
    plane = report.get("plane")
    if plane is not None and not plane.get("found"):
        text += "; no plane found"
    if report.get("kept_whole"):
        text = report["kept_whole"]
    return text
