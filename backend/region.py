"""The region of interest of a capture without masks: the object the cameras look at, not the room around it.

Numpy only (no torch, no bpy): the pose step (in Blender's own Python) and training share it, so the box Blender
shows after Estimate Poses and the region training finds by itself are the same.

People photograph an object by walking round it and keeping it in frame, so what the optical axes converge on is
the object, and the part of space that every photo frames around that point bounds it. Sparse points on walls,
floors and furniture farther away are outside that frame in most views. The region is:

1. the **focus**: the point closest to all optical axes, re-weighted so that a few cameras looking elsewhere do not
   move it (iteratively reweighted least squares, Cauchy weights on each axis's miss distance);
2. the **frame radius**: the radius of the circle through each photo's corners at the focus's depth, the median
   over the cameras;
3. the sparse points within that radius of the focus that fall inside at least half of the images, trimmed to
   their 2nd..98th percentiles per axis; their box, grown by 5 % a side, is the region (the object and what it
   stands on, the table top around it, but not the walls). Without enough such points, a ball of the frame
   radius around the focus.

Cameras that do not converge (all looking the same way: a facade, a room scanned from its middle) have no focus;
then :func:`object_region` says so (``converged`` False) and falls back to the robust core of the points, and the
caller warns that the user should draw the region box or add masks.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

MIN_POINTS = 20  # fewest sparse points to size the region from
MIN_VIEW_FRACTION = 0.5  # a point must fall inside at least this share of the images
PERCENTILES = (2.0, 98.0)  # per-axis trim of the selected points
PADDING = 0.05  # the box grows by this fraction of its size on each side
CONVERGENCE = 0.05  # smallest eigenvalue of the axes' normal matrix over the largest, below which axes are parallel


def focus_point(centers: np.ndarray, axes: np.ndarray, iterations: int = 10) -> tuple[np.ndarray | None, np.ndarray]:
    """The point the optical axes converge on, robust to a few cameras that look elsewhere.

    Args:
        centers: (N, 3) camera centres; axes: (N, 3) unit viewing directions (OpenCV +z).
        iterations: reweighting rounds.

    Returns:
        focus (3,) or None when the axes do not converge (fewer than two cameras, or nearly parallel axes, or a
        point behind most cameras); weights (N,) in [0, 1], each camera's say in it (low: its axis misses).
    """
    centers = np.asarray(centers, dtype=np.float64).reshape(-1, 3)
    axes = np.asarray(axes, dtype=np.float64).reshape(-1, 3)
    axes = axes / np.maximum(np.linalg.norm(axes, axis=1, keepdims=True), 1e-12)
    n = len(centers)
    w = np.ones(n)
    if n < 2:
        return None, w
    proj = np.eye(3)[None] - axes[:, :, None] * axes[:, None, :]  # (N, 3, 3) projectors orthogonal to each axis
    focus = None
    for _ in range(iterations):
        A = np.einsum("n,nij->ij", w, proj)
        eig = np.linalg.eigvalsh(A)
        if eig[-1] <= 0 or eig[0] < CONVERGENCE * eig[-1]:
            return None, w
        focus = np.linalg.solve(A, np.einsum("n,nij,nj->i", w, proj, centers))
        miss = np.linalg.norm(np.einsum("nij,nj->ni", proj, focus[None] - centers), axis=1)  # axis-to-point distance
        scale = max(float(np.median(miss)), 1e-3 * float(np.median(np.linalg.norm(centers - focus, axis=1))), 1e-12)
        w = 1.0 / (1.0 + (miss / (2.0 * scale)) ** 2)
    depth = ((focus[None] - centers) * axes).sum(1)
    if focus is None or (depth <= 0).mean() > 0.5:
        return None, w
    return focus, w


def frame_radius(centers: np.ndarray, axes: np.ndarray, K: np.ndarray, sizes: np.ndarray, point: np.ndarray
                 ) -> float:
    """Median over the cameras of the radius of the circle through the image's corners at ``point``'s depth (what a
    photo frames there: an object that fills the frame reaches its corners).

    Args:
        centers, axes: (N, 3); K: (N, 3, 3) intrinsics; sizes: (N, 2) width, height; point: (3,).
    """
    depth = ((np.asarray(point)[None] - centers) * axes).sum(1)
    half = np.hypot(0.5 * sizes[:, 0] / K[:, 0, 0], 0.5 * sizes[:, 1] / K[:, 1, 1])  # tan of the half-diagonal
    ok = depth > 0
    if not ok.any():
        return float(np.median(np.linalg.norm(centers - point, axis=1))) * 0.5
    return float(np.median(depth[ok] * half[ok]))


def views_containing(c2w: np.ndarray, K: np.ndarray, sizes: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """(M,) how many images each of the (M, 3) points falls into, in front of the camera.

    Args:
        c2w: (N, 4, 4) camera-to-world (OpenCV axes); K: (N, 3, 3); sizes: (N, 2) width, height.
    """
    count = np.zeros(len(pts), dtype=np.int32)
    for i in range(len(c2w)):
        R, t = c2w[i, :3, :3], c2w[i, :3, 3]
        pc = (pts - t) @ R  # world -> camera: R^T (p - t)
        z = pc[:, 2]
        front = z > 1e-12
        zs = np.where(front, z, 1.0)
        u = (K[i, 0, 0] * pc[:, 0] + K[i, 0, 1] * pc[:, 1]) / zs + K[i, 0, 2]
        v = K[i, 1, 1] * pc[:, 1] / zs + K[i, 1, 2]
        w, h = sizes[i]
        count += front & (u >= -0.5) & (u < w - 0.5) & (v >= -0.5) & (v < h - 0.5)
    return count


def _box_of(pts: np.ndarray) -> np.ndarray:
    """(2, 3) box of the points' per-axis percentiles, grown by :data:`PADDING` a side."""
    lo, hi = np.percentile(pts, PERCENTILES[0], axis=0), np.percentile(pts, PERCENTILES[1], axis=0)
    pad = PADDING * (hi - lo)
    return np.stack([lo - pad, hi + pad])


def object_region(c2w: np.ndarray, K: np.ndarray, sizes: np.ndarray, points: np.ndarray | None = None,
                  max_points: int = 60_000) -> dict[str, Any]:
    """The region of interest of a capture without masks (see the module docstring).

    Args:
        c2w: (N, 4, 4) camera-to-world, OpenCV axes; K: (N, 3, 3); sizes: (N, 2) width, height.
        points: (M, 3) sparse points (already filtered for reprojection error and track length), or None.
        max_points: a random subset of at most this many points is used.

    Returns:
        ``box`` (2, 3) axis-aligned region in the cameras' coordinates, ``center`` (3,) its centre, ``radius`` the
        distance from the centre to the farthest selected point (or the ball's radius), ``source`` ("points",
        "cameras", "all_points", or "none": no focus and too few points; box, centre and radius are then None),
        ``converged`` (whether the optical axes meet), ``focus`` (3,) or None,
        ``frame_radius``, ``n_points`` (points used), ``n_points_near`` (points within the frame radius),
        ``camera_weights`` (N,).
    """
    c2w = np.asarray(c2w, dtype=np.float64).reshape(-1, 4, 4)
    K = np.asarray(K, dtype=np.float64).reshape(-1, 3, 3)
    sizes = np.asarray(sizes, dtype=np.float64).reshape(-1, 2)
    centers, axes = c2w[:, :3, 3], c2w[:, :3, 2]
    axes = axes / np.maximum(np.linalg.norm(axes, axis=1, keepdims=True), 1e-12)
    pts = np.zeros((0, 3)) if points is None else np.asarray(points, dtype=np.float64).reshape(-1, 3)
    pts = pts[np.isfinite(pts).all(1)]
    if len(pts) > max_points:
        pts = pts[np.random.default_rng(0).choice(len(pts), max_points, replace=False)]
    need = max(1, math.ceil(MIN_VIEW_FRACTION * len(c2w)))
    seen = views_containing(c2w, K, sizes, pts) >= need if len(pts) else np.zeros(0, dtype=bool)
    focus, weights = focus_point(centers, axes)
    out: dict[str, Any] = {"converged": focus is not None, "focus": None if focus is None else focus.tolist(),
                           "camera_weights": weights.tolist()}
    if focus is None:  # no object the cameras agree on: the points' robust core (or, without points, the centroid)
        core = pts[seen] if seen.sum() >= MIN_POINTS else pts
        if len(core) >= MIN_POINTS:
            box = _box_of(core)
            center = box.mean(0)
            out.update(box=box, center=center, source="all_points", n_points=int(len(core)), n_points_near=0,
                       radius=float(np.linalg.norm(core - center, axis=1).max()), frame_radius=None)
            return out
        out.update(box=None, center=None, radius=None, source="none", n_points=0, n_points_near=0, frame_radius=None)
        return out
    rho = frame_radius(centers, axes, K, sizes, focus)
    near = seen & (np.linalg.norm(pts - focus, axis=1) <= rho) if len(pts) else seen
    out.update(frame_radius=rho, n_points_near=int(near.sum()))
    if near.sum() >= MIN_POINTS:
        sel = pts[near]
        box = _box_of(sel)
        center = box.mean(0)
        lo, hi = np.percentile(sel, PERCENTILES[0], axis=0), np.percentile(sel, PERCENTILES[1], axis=0)
        inside = sel[((sel >= lo) & (sel <= hi)).all(1)]  # the trimmed core
        radius = float(np.linalg.norm(inside - center, axis=1).max()) if len(inside) else rho
        out.update(box=box, center=center, radius=radius, source="points", n_points=int(len(inside)))
        return out
    box = np.stack([focus - rho, focus + rho])
    out.update(box=box, center=np.asarray(focus, dtype=np.float64), radius=rho, source="cameras", n_points=0)
    return out
