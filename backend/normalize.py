"""Automatic normalization: which sphere of the input becomes the unit sphere the field is trained in.

No hand-picked sphere. Depending on what the capture carries, in this order:

1. masks -> **visual hull**: voxels of a coarse grid (two passes, about 64^3 then up to 96^3) are kept when they
   project inside the (conservatively dilated) mask of every view whose image they fall into, and fall into at
   least half of the images. The sphere bounds the kept voxels with a 10 % margin; ``roi`` is their box.
2. sparse points (COLMAP) -> the object the cameras look at (:mod:`backend.region`): the point the optical axes
   converge on, and the sparse points within the radius every photo frames around it that fall inside at least half
   of the images (so walls and floors farther away stay out), trimmed to the 2nd..98th percentile along each axis,
   their box grown by 5 % per side; the sphere bounds the box's points with a 10 % margin.
3. cameras only -> the point closest to all optical axes, then the region 90 % of the views see around it,
   bounded by the nearest camera; the sphere bounds that region with a 10 % margin; ``roi`` is the whole cube.

The cameras always stay outside the unit sphere (the sphere shrinks, with a warning, when they would not).
``to_world`` has no rotation: the normalized axes are the input's axes, scaled and shifted.
"""

from __future__ import annotations

import logging
import math
from dataclasses import replace
from typing import Any

import numpy as np

from .region import object_region
from .region import views_containing as region_views
from .scene import Scene, similarity
from .threads import default_workers

log = logging.getLogger(__name__)

MARGIN = 1.10  # sphere radius over the object's bounding radius
CAMERA_CLEARANCE = 0.95  # unit sphere radius at most this fraction of the nearest camera's distance
MIN_VIEW_FRACTION = 0.5  # a hull voxel or a sparse point must fall inside at least this share of the images
FRUSTUM_VIEW_FRACTION = 0.9  # cameras-only region: seen by this share of the views
MASK_TOLERANCE = 0.002  # mask dilation on top of a voxel's projected radius, as a share of the image size
HULL_MASK_SIZE = 1024  # masks larger than this are max-pooled for carving


# ---------------------------------------------------------------------------------------------------------------
# small geometry helpers


def _w2c(c2w: np.ndarray) -> np.ndarray:
    """(N, 4, 4) world-to-camera of rigid (N, 4, 4) camera-to-world."""
    R = c2w[:, :3, :3]
    t = c2w[:, :3, 3]
    out = np.tile(np.eye(4), (len(c2w), 1, 1))
    out[:, :3, :3] = np.transpose(R, (0, 2, 1))
    out[:, :3, 3] = -np.einsum("nji,nj->ni", R, t)
    return out


def _in_view(K: np.ndarray, w2c: np.ndarray, size: tuple[int, int], pts: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Project (M, 3) points into one view. Returns u, v, z (M,) and inside (M,) bool (in front and in image)."""
    pc = pts @ w2c[:3, :3].T + w2c[:3, 3]
    z = pc[:, 2]
    front = z > 1e-12
    zs = np.where(front, z, 1.0)
    u = (K[0, 0] * pc[:, 0] + K[0, 1] * pc[:, 1]) / zs + K[0, 2]
    v = K[1, 1] * pc[:, 1] / zs + K[1, 2]
    w, h = size
    inside = front & (u >= -0.5) & (u < w - 0.5) & (v >= -0.5) & (v < h - 0.5)
    return u, v, z, inside


def views_containing(scene: Scene, pts: np.ndarray) -> np.ndarray:
    """(M,) number of views whose image each of the (M, 3) world points projects into (in front of the camera)."""
    return region_views(scene.c2w, scene.K, scene.sizes, pts)


def camera_focus(c2w: np.ndarray) -> np.ndarray:
    """(3,) least-squares point closest to all optical axes of (N, 4, 4) camera-to-world (OpenCV, +z forward).

    For (nearly) parallel axes (a forward-facing capture) the problem is degenerate; the point is then placed
    in front of the cameras' centroid at twice their spread.
    """
    o = c2w[:, :3, 3]
    d = c2w[:, :3, 2] / np.linalg.norm(c2w[:, :3, 2], axis=1, keepdims=True)
    proj = np.eye(3)[None] - d[:, :, None] * d[:, None, :]  # (N, 3, 3) projectors orthogonal to each axis
    A = proj.sum(0)
    b = np.einsum("nij,nj->i", proj, o)
    eig = np.linalg.eigvalsh(A)
    if len(c2w) < 2 or eig[0] < 1e-3 * eig[-1]:
        centroid = o.mean(0)
        spread = float(np.linalg.norm(o - centroid, axis=1).max()) if len(o) > 1 else 1.0
        mean_dir = d.mean(0)
        mean_dir /= max(np.linalg.norm(mean_dir), 1e-12)
        return centroid + mean_dir * 2.0 * max(spread, 1e-6)
    return np.linalg.solve(A, b)


def _grid(lo: np.ndarray, hi: np.ndarray, n_max: int) -> tuple[np.ndarray, float]:
    """Centres (M, 3) of a voxel grid over the box [lo, hi] with cubic voxels, longest side n_max voxels."""
    ext = hi - lo
    vox = float(ext.max()) / n_max
    dims = np.maximum(1, np.ceil(ext / vox - 1e-9).astype(int))
    axes = [lo[k] + (np.arange(dims[k]) + 0.5) * vox for k in range(3)]
    g = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    return g, vox


def _fibonacci_directions(n: int) -> np.ndarray:
    """(n, 3) unit vectors spread evenly over the sphere."""
    i = np.arange(n) + 0.5
    z = 1.0 - 2.0 * i / n
    phi = i * math.pi * (3.0 - math.sqrt(5.0))
    r = np.sqrt(1.0 - z * z)
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=1)


def _bounding_sphere(pts: np.ndarray, pad: float = 0.0) -> tuple[np.ndarray, float]:
    """Near-minimal sphere around (M, 3) points: centre (3,) and radius reaching every point, plus ``pad``.

    The centre comes from Badoiu-Clarkson iterations on the points extreme along 128 directions; the radius is
    then measured on all points, so the sphere always contains them.
    """
    pts = np.asarray(pts, dtype=np.float64)
    dirs = _fibonacci_directions(128)
    ext = pts[np.unique(np.argmax(dirs @ pts.T, axis=1))]
    c = 0.5 * (pts.min(0) + pts.max(0))
    for it in range(1, 2000):
        far = ext[np.argmax(np.linalg.norm(ext - c, axis=1))]
        c = c + (far - c) / (it + 1)
    return c, float(np.linalg.norm(pts - c, axis=1).max()) + pad


# ---------------------------------------------------------------------------------------------------------------
# masks: visual hull


class _MaskIndex:
    """Answers "is there an object pixel within r pixels (square) of (row, col)" for many points at once, with an
    integral image of the mask (max-pooled first when the mask is larger than :data:`HULL_MASK_SIZE`).

    ``touches`` (left, right, top, bottom): whether the object reaches that image border. Where it does not, the
    object lies wholly inside the frame on that side, so the view also carves what projects beyond that border.
    """

    def __init__(self, mask: np.ndarray) -> None:
        m = np.asarray(mask) > 0
        h, w = m.shape
        band = max(2, round(0.005 * max(h, w)))
        self.touches = (bool(m[:, :band].any()), bool(m[:, -band:].any()),
                        bool(m[:band].any()), bool(m[-band:].any()))
        k = max(1, math.ceil(max(h, w) / HULL_MASK_SIZE))
        if k > 1:  # any object pixel in a k x k block marks the block: conservative
            m = np.pad(m, ((0, -h % k), (0, -w % k)))
            m = m.reshape(m.shape[0] // k, k, m.shape[1] // k, k).any(axis=(1, 3))
        self.k = k
        self.shape = m.shape
        self.integral = np.zeros((m.shape[0] + 1, m.shape[1] + 1), dtype=np.int32)
        np.cumsum(np.cumsum(m, axis=0, dtype=np.int32), axis=1, out=self.integral[1:, 1:])

    def any_within(self, row: np.ndarray, col: np.ndarray, radius: np.ndarray) -> np.ndarray:
        """(M,) bool for (M,) integer pixel rows, columns (full mask resolution) and radii in pixels."""
        k = self.k
        r = np.ceil(radius / k).astype(np.int64)
        row = row // k
        col = col // k
        h, w = self.shape
        r0 = np.clip(row - r, 0, h)
        r1 = np.clip(row + r + 1, 0, h)
        c0 = np.clip(col - r, 0, w)
        c1 = np.clip(col + r + 1, 0, w)
        S = self.integral
        return (S[r1, c1] - S[r0, c1] - S[r1, c0] + S[r0, c0]) > 0


def _mask_indices(scene: Scene) -> list[_MaskIndex]:
    """One :class:`_MaskIndex` per mask (built in threads: numpy releases the GIL in its reductions)."""
    assert scene.masks is not None
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=default_workers()) as pool:
        return list(pool.map(_MaskIndex, scene.masks))


def _carve(scene: Scene, pts: np.ndarray, voxel_radius: float, min_views: int, indices: list[_MaskIndex]
           ) -> np.ndarray:
    """(M,) bool: voxels (centres ``pts``, bounding radius ``voxel_radius``) consistent with every mask.

    A view carves a voxel in front of it that projects into the image farther than the voxel's projected radius
    (plus a small tolerance) from any object pixel, or beyond an image border that the mask does not touch (the
    silhouette is taken to be connected: an object cut by the frame crosses the border on that side). A voxel must
    also fall inside ``min_views`` images. ``indices``: one :class:`_MaskIndex` per view (:func:`_mask_indices`).
    """
    w2c = _w2c(scene.c2w)
    sizes = scene.sizes
    alive = np.arange(len(pts))
    seen = np.zeros(len(pts), dtype=np.int32)
    for i in range(len(scene)):
        if len(alive) == 0:
            break
        K = scene.K[i]
        w, h = int(sizes[i, 0]), int(sizes[i, 1])
        index = indices[i]
        u, v, z, inside = _in_view(K, w2c[i], (w, h), pts[alive])
        front = z > 0
        r_px = max(K[0, 0], K[1, 1]) * voxel_radius / np.where(front, z, 1.0) + MASK_TOLERANCE * max(w, h) + 1.0
        left, right, top, bottom = index.touches
        beyond = np.zeros(len(alive), dtype=bool)
        if not left:
            beyond |= u < -0.5 - r_px
        if not right:
            beyond |= u > w - 0.5 + r_px
        if not top:
            beyond |= v < -0.5 - r_px
        if not bottom:
            beyond |= v > h - 0.5 + r_px
        carved = front & beyond
        idx = np.nonzero(inside)[0]
        if len(idx):
            col = np.floor(u[idx] + 0.5).astype(np.int64)
            row = np.floor(v[idx] + 0.5).astype(np.int64)
            ok = index.any_within(row, col, r_px[idx])
            seen[alive[idx]] += 1
            carved[idx[~ok]] = True
        alive = alive[~carved]
    keep = np.zeros(len(pts), dtype=bool)
    keep[alive] = True
    return keep & (seen >= min_views)


CARVE_CHUNK = 32768  # points per thread of :func:`_carve_threaded`


def _carve_threaded(scene: Scene, pts: np.ndarray, voxel_radius: float, min_views: int,
                    indices: list[_MaskIndex]) -> np.ndarray:
    """:func:`_carve` over chunks of ``pts`` in threads (a voxel's fate depends on the views only, so the chunks
    are independent; numpy releases the GIL in the large array operations). Same (M,) result."""
    workers = default_workers()
    n_chunks = min(workers * 2, max(1, len(pts) // CARVE_CHUNK))
    if n_chunks <= 1:
        return _carve(scene, pts, voxel_radius, min_views, indices)
    from concurrent.futures import ThreadPoolExecutor

    chunks = np.array_split(pts, n_chunks)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        parts = list(pool.map(lambda c: _carve(scene, c, voxel_radius, min_views, indices), chunks))
    return np.concatenate(parts)


def visual_hull_bounds(scene: Scene, resolution: int = 96) -> dict[str, Any] | None:
    """Bounds of the visual hull of the masks, in input coordinates.

    Returns:
        None when the scene has no masks or nothing survives carving; else a dict with ``points`` (M, 3) kept
        voxel centres, ``voxel`` (edge length), ``box`` (2, 3) padded by one voxel, ``center`` (3,), ``radius``
        (bounding radius of the kept voxels, no margin).
    """
    if scene.masks is None or len(scene) == 0:
        return None
    n = len(scene)
    min_views = max(1, math.ceil(MIN_VIEW_FRACTION * n))
    c0 = camera_focus(scene.c2w)
    d_min = float(np.linalg.norm(scene.camera_centers() - c0, axis=1).min())
    # pass 1: a coarse grid over the ball the nearest camera leaves free
    pts, vox = _grid(c0 - d_min, c0 + d_min, 64)
    pts = pts[np.linalg.norm(pts - c0, axis=1) <= d_min]
    indices = _mask_indices(scene)  # shared by both passes
    keep = _carve_threaded(scene, pts, vox * math.sqrt(3) / 2, min_views, indices)
    if not keep.any():
        return None
    # pass 2: a finer grid over what survived
    lo = pts[keep].min(0) - vox
    hi = pts[keep].max(0) + vox
    pts, vox = _grid(lo, hi, resolution)
    keep = _carve_threaded(scene, pts, vox * math.sqrt(3) / 2, min_views, indices)
    if not keep.any():
        return None
    kept = pts[keep]
    center, radius = _bounding_sphere(kept, pad=vox * math.sqrt(3) / 2)
    box = np.stack([kept.min(0) - vox, kept.max(0) + vox])
    return {"points": kept, "voxel": vox, "box": box, "center": center, "radius": radius,
            "n_voxels": int(keep.sum()), "min_views": min_views}


# ---------------------------------------------------------------------------------------------------------------
# sparse points


def sparse_point_bounds(scene: Scene) -> dict[str, Any] | None:
    """The object's region from the cameras and ``scene.points`` (:func:`backend.region.object_region`: what the
    optical axes converge on, the sparse points near it that most views frame), in input coordinates.

    Returns None without enough points (fewer than 10) or when neither the cameras nor the points locate an object;
    else a dict with ``box`` (2, 3), ``center`` (3,), ``radius`` (no margin), ``n_points``, ``n_points_total``,
    ``region_source`` and ``converged`` (False: the cameras look the same way; the region is the points' core).
    """
    if scene.points is None or len(scene.points) < 10:
        return None
    P = np.asarray(scene.points, dtype=np.float64).reshape(-1, 3)
    P = P[np.all(np.isfinite(P), axis=1)]
    r = object_region(scene.c2w, scene.K, scene.sizes, P)
    if r["source"] == "none":
        return None
    return {"box": r["box"], "center": r["center"], "radius": r["radius"], "n_points": r["n_points"],
            "n_points_total": int(len(P)), "region_source": r["source"], "converged": r["converged"]}


# ---------------------------------------------------------------------------------------------------------------
# cameras only


def frustum_bounds(scene: Scene, resolution: int = 48) -> dict[str, Any]:
    """The region around the cameras' focus that (almost) every view sees, in input coordinates.

    A coarse grid over the ball the nearest camera leaves free finds the region, a second grid over its box
    measures it. Returns a dict with ``center`` (3,), ``radius``, ``box`` (2, 3), ``focus`` (3,) (the axes'
    closest point) and ``view_fraction`` (the share of views required: 90 %, lowered when nothing reaches it).
    """
    n = len(scene)
    c0 = camera_focus(scene.c2w)
    d_min = float(np.linalg.norm(scene.camera_centers() - c0, axis=1).min())

    def region(lo: np.ndarray, hi: np.ndarray, need: int) -> tuple[np.ndarray, float]:
        pts, vox = _grid(lo, hi, resolution)
        pts = pts[np.linalg.norm(pts - c0, axis=1) <= d_min]
        return pts[views_containing(scene, pts) >= need], vox

    for frac in (FRUSTUM_VIEW_FRACTION, 0.75, 0.5):
        need = max(1, math.ceil(frac * n))
        pts, vox = region(c0 - d_min, c0 + d_min, need)
        if len(pts) == 0:
            continue
        fine, fine_vox = region(pts.min(0) - vox, pts.max(0) + vox, need)
        if len(fine) >= 8:
            pts, vox = fine, fine_vox
        center, radius = _bounding_sphere(pts, pad=vox * math.sqrt(3) / 2)
        return {"center": center, "radius": radius, "focus": c0, "view_fraction": frac,
                "box": np.stack([pts.min(0) - vox / 2, pts.max(0) + vox / 2]), "n_voxels": len(pts)}
    r = 0.5 * d_min
    return {"center": c0, "radius": r, "focus": c0, "view_fraction": 0.0, "box": np.stack([c0 - r, c0 + r]),
            "n_voxels": 0}


# ---------------------------------------------------------------------------------------------------------------
# putting it together


def _clear_cameras(scene: Scene, center: np.ndarray, radius: float, warnings: list[str]) -> float:
    """``radius`` shrunk (with a warning) so that every camera stays outside the sphere."""
    d = float(np.linalg.norm(scene.camera_centers() - center, axis=1).min())
    if radius > CAMERA_CLEARANCE * d:
        warnings.append(f"a camera is {d:.4g} from the centre, inside the sphere of radius {radius:.4g} the object "
                        f"needs; the sphere was shrunk to {CAMERA_CLEARANCE * d:.4g} (parts of the object may be cut)")
        radius = CAMERA_CLEARANCE * d
    return radius


def _roi_from_box(box: np.ndarray, to_world: np.ndarray) -> np.ndarray:
    """(2, 3) normalized-frame box around the (2, 3) world box's eight corners, clipped to [-1, 1]."""
    corners = np.array([[box[i, 0], box[j, 1], box[k, 2]] for i in (0, 1) for j in (0, 1) for k in (0, 1)])
    inv = np.linalg.inv(to_world)
    c = corners @ inv[:3, :3].T + inv[:3, 3]
    return np.clip(np.stack([c.min(0), c.max(0)]), -1.0, 1.0)


def _object_bounds(scene: Scene, warnings: list[str]) -> tuple[str, dict[str, Any]] | None:
    if scene.masks is not None:
        hull = visual_hull_bounds(scene)
        if hull is not None:
            return "visual_hull", hull
        warnings.append("the visual hull of the masks is empty (masks and cameras disagree); the masks were "
                        "ignored for the normalization")
    pts = sparse_point_bounds(scene)
    if pts is not None:
        if not pts["converged"]:
            warnings.append("the cameras do not converge on one object (they look the same way), so the region is "
                            "the bulk of the sparse points and may hold walls or floor: draw the region box around "
                            "the object in Blender (or pass --roi), or add masks")
        return "sparse_points", pts
    return None


def auto_normalization(scene: Scene) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Find the sphere that becomes the unit sphere.

    Returns:
        to_world: (4, 4) similarity, normalized frame -> input coordinates.
        roi: (2, 3) box around the object in the normalized frame ([-1, 1]^3 when only cameras are known).
        info: ``method`` ("visual_hull" | "sparse_points" | "cameras"), ``center`` (3 floats, input units),
            ``radius`` (input units), ``roi``, ``camera_distance`` (nearest camera, in radii), ``warnings``,
            plus method details (voxel or point counts).
    """
    if len(scene) == 0:
        raise ValueError("a scene without images has no normalization")
    warnings: list[str] = []
    found = _object_bounds(scene, warnings)
    if found is not None:
        method, b = found
        center, radius = b["center"], b["radius"] * MARGIN
        box = b["box"]
    else:
        # the same margin: an object may leave the frame in a few views (Middlebury's dino does)
        method, b = "cameras", frustum_bounds(scene)
        center, radius, box = b["center"], b["radius"] * MARGIN, None
    radius = _clear_cameras(scene, center, radius, warnings)
    to_world = similarity(radius, center)
    roi = _roi_from_box(box, to_world) if box is not None else np.array([[-1.0] * 3, [1.0] * 3])
    d = float(np.linalg.norm(scene.camera_centers() - center, axis=1).min())
    info: dict[str, Any] = {
        "method": method,
        "center": [float(x) for x in center],
        "radius": float(radius),
        "roi": roi.tolist(),
        "camera_distance": d / radius,
        "warnings": warnings,
    }
    for key in ("n_voxels", "voxel", "n_points", "n_points_total", "view_fraction"):
        if key in b:
            info[key] = float(b[key]) if key in ("voxel", "view_fraction") else int(b[key])
    for key in ("region_source", "converged"):
        if key in b:
            info[key] = b[key]
    for w in warnings:
        log.warning(w)
    return to_world, roi, info


def normalize_scene(scene: Scene, *, prefer_given: bool = True) -> tuple[Scene, dict[str, Any]]:
    """The scene with ``to_world`` and ``roi`` set, and a description of how (for the ``start`` message).

    A loader that returns a ``to_world`` other than the identity (NeuS/IDR ``scale_mat``) gives the dataset's own
    normalization: with ``prefer_given`` it is kept, and only the ``roi`` is computed (from the masks or points
    when there are any); ``info["auto"]`` then holds what the automatic method would choose, for comparison.
    """
    given = prefer_given and not np.allclose(scene.to_world, np.eye(4))
    if not given:
        to_world, roi, info = auto_normalization(scene)
        return replace(scene, to_world=to_world, roi=roi), info
    to_world = scene.to_world
    warnings: list[str] = []
    center = to_world[:3, 3]
    radius = scene.scale
    d = float(np.linalg.norm(scene.camera_centers() - center, axis=1).min())
    if d <= radius:
        warnings.append(f"a camera lies inside the dataset's unit sphere ({d:.4g} from its centre, radius "
                        f"{radius:.4g})")
    info: dict[str, Any] = {"method": "given", "center": [float(x) for x in center], "radius": radius,
                            "camera_distance": d / radius, "warnings": warnings}
    roi = np.array([[-1.0] * 3, [1.0] * 3])
    found = _object_bounds(scene, warnings)
    if found is not None:
        method, b = found
        roi = _roi_from_box(b["box"], to_world)
        info["auto"] = {"method": method, "center": [float(x) for x in b["center"]],
                        "radius": float(b["radius"] * MARGIN)}
    info["roi"] = roi.tolist()
    for w in warnings:
        log.warning(w)
    return replace(scene, roi=roi), info


def normalization_from_box(scene: Scene, box_to_world: np.ndarray, margin: float = 1.0
                           ) -> tuple[Scene, dict[str, Any]]:
    """Normalize to a region of interest the user placed: an oriented box.

    Args:
        scene: the capture.
        box_to_world: (4, 4) affine map from the cube [-1, 1]^3 to input coordinates (a Blender cube object's
            matrix_world maps its default cube exactly so), rotation, non-uniform scale and translation allowed.
        margin: factor on the box's circumscribed sphere.

    Returns:
        The scene with ``to_world`` (a similarity whose unit sphere circumscribes the box) and ``roi`` (the
        box's axis-aligned bounds in the normalized frame), and the description for the ``start`` message.
    """
    m = np.asarray(box_to_world, dtype=np.float64).reshape(4, 4)
    corners = np.array([[x, y, z, 1.0] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)]) @ m.T
    corners = corners[:, :3]
    if np.linalg.matrix_rank(m[:3, :3]) < 3:
        raise ValueError("the region-of-interest box is flat (a zero scale)")
    center = corners.mean(0)
    radius = float(np.linalg.norm(corners - center, axis=1).max()) * margin
    warnings: list[str] = []
    radius = _clear_cameras(scene, center, radius, warnings)
    to_world = similarity(radius, center)
    inv = np.linalg.inv(to_world)
    c = corners @ inv[:3, :3].T + inv[:3, 3]
    roi = np.clip(np.stack([c.min(0), c.max(0)]), -1.0, 1.0)
    if scene.points is not None and len(scene.points) >= 20:  # a box beside the object holds none of its points
        p = np.asarray(scene.points, dtype=np.float64).reshape(-1, 3)
        local = (p - m[:3, 3]) @ np.linalg.inv(m[:3, :3]).T  # in the box's cube [-1, 1]^3
        n_in = int(np.all(np.abs(local) <= 1.0, axis=1).sum())
        if n_in < max(5, 0.001 * len(p)):
            warnings.append(f"the region box holds {n_in} of the {len(p)} sparse points: it may miss the object; "
                            "move and scale the box over the object (or remove it to use the automatic region)")
    d = float(np.linalg.norm(scene.camera_centers() - center, axis=1).min())
    info = {"method": "box", "center": [float(x) for x in center], "radius": radius, "roi": roi.tolist(),
            "camera_distance": d / radius, "warnings": warnings}
    for w in warnings:
        log.warning(w)
    return replace(scene, to_world=to_world, roi=roi), info
