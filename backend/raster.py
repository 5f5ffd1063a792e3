"""Small CPU rasterizer for evaluation: mesh silhouettes and depth in a pinhole camera (numpy only)."""

from __future__ import annotations

import numpy as np

from .scene import project


def silhouette(vertices: np.ndarray, faces: np.ndarray, K: np.ndarray, c2w: np.ndarray, width: int, height: int
               ) -> np.ndarray:
    """Which pixels a mesh covers.

    Args:
        vertices: (V, 3) world coordinates; faces: (F, 3) int.
        K: (3, 3) intrinsics (OpenCV pixel convention); c2w: (4, 4) camera-to-world, OpenCV axes.
        width, height: image size.

    Returns:
        (height, width) bool mask: True where the centre of the pixel lies inside a projected triangle in
        front of the camera.
    """
    uv, z = project(np.asarray(K, np.float64), np.asarray(c2w, np.float64), np.asarray(vertices, np.float64))
    tri = uv[faces]  # (F, 3, 2)
    front = (z[faces] > 1e-9).all(1)
    tri = tri[front]
    out = np.zeros((height, width), dtype=bool)
    if len(tri) == 0:
        return out
    lo = np.floor(tri.min(1)).astype(np.int64)
    hi = np.ceil(tri.max(1)).astype(np.int64)
    lo = np.clip(lo, 0, [width - 1, height - 1])
    hi = np.clip(hi, 0, [width - 1, height - 1])
    keep = (hi >= lo).all(1) & (tri.max(1) >= 0).all(1) & (tri.min(1)[:, 0] <= width) & (tri.min(1)[:, 1] <= height)
    tri, lo, hi = tri[keep], lo[keep], hi[keep]
    span = hi - lo + 1
    # group triangles by the size of their pixel box, so each group is one vectorised test
    sizes = np.maximum(span[:, 0], span[:, 1])
    for s in np.unique(np.minimum(sizes, 64)):
        sel = np.minimum(sizes, 64) == s
        if s >= 64:
            for t, a in zip(tri[sel], lo[sel]):
                _fill_one(out, t, a, width, height)
            continue
        _fill_group(out, tri[sel], lo[sel], int(s))
    return out


def _edge_test(px: np.ndarray, py: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Inside test of pixel centres against triangles, either winding. t: (..., 3, 2) broadcast with px, py."""
    def edge(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return (b[..., 0] - a[..., 0]) * (py - a[..., 1]) - (b[..., 1] - a[..., 1]) * (px - a[..., 0])

    e0 = edge(t[..., 0, :], t[..., 1, :])
    e1 = edge(t[..., 1, :], t[..., 2, :])
    e2 = edge(t[..., 2, :], t[..., 0, :])
    return ((e0 >= 0) & (e1 >= 0) & (e2 >= 0)) | ((e0 <= 0) & (e1 <= 0) & (e2 <= 0))


def _fill_group(out: np.ndarray, tri: np.ndarray, lo: np.ndarray, s: int) -> None:
    h, w = out.shape
    off = np.arange(s)
    chunk = max(1, 2**22 // (s * s))
    for c in range(0, len(tri), chunk):
        t = tri[c:c + chunk, None, None]  # (T, 1, 1, 3, 2)
        xs = lo[c:c + chunk, 0, None, None] + off[None, None, :]  # (T, 1, s)
        ys = lo[c:c + chunk, 1, None, None] + off[None, :, None]  # (T, s, 1)
        xs_b = np.broadcast_to(xs, (len(t), s, s))
        ys_b = np.broadcast_to(ys, (len(t), s, s))
        inside = _edge_test(xs_b.astype(np.float64), ys_b.astype(np.float64), t[:, 0, 0][:, None, None])
        inside &= (xs_b < w) & (ys_b < h)
        out[ys_b[inside], xs_b[inside]] = True


def _fill_one(out: np.ndarray, t: np.ndarray, lo: np.ndarray, width: int, height: int) -> None:
    hi = np.minimum(np.ceil(t.max(0)).astype(np.int64), [width - 1, height - 1])
    ys, xs = np.mgrid[lo[1]:hi[1] + 1, lo[0]:hi[0] + 1]
    inside = _edge_test(xs.astype(np.float64), ys.astype(np.float64), t)
    out[ys[inside], xs[inside]] = True


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two boolean masks of the same shape (1.0 when both are empty)."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)
