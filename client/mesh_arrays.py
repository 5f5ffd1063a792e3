"""Mesh work on plain arrays for the refine tools (no bpy): connected parts, fan triangles, the support plane, the
bake's memory check.

:mod:`.scene.mesh_tools` reads a Blender mesh into these arrays (``foreach_get``), calls these functions and
writes the result back with Blender's own tools; keeping the array work here lets it run and be tested in any
Python. The support plane fit itself is the backend's (:func:`backend.meshclean.remove_support_plane`, numpy only),
so Remove Support Plane in Blender and the backend's clean-up agree.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..backend import meshclean

#: Bytes a texel costs while Cycles bakes it (result buffers and per-texel bake data; measured order of magnitude).
BAKE_BYTES_PER_TEXEL = 64


class MeshToolError(RuntimeError):
    """A refinement step that cannot run on this object; the message says why and what to do."""


def part_labels(n_vertices: int, corner_vertex: np.ndarray, corner_poly: np.ndarray) -> np.ndarray:
    """Connected part of each vertex (vertices sharing a polygon are connected): (V,) labels 0..P-1.

    Args:
        n_vertices: V.
        corner_vertex: (L,) int, the vertex of each polygon corner (loop).
        corner_poly: (L,) int, the polygon of each corner.

    Label propagation with pointer jumping, vectorized: each round every polygon pulls its corners to their
    smallest label; rounds grow logarithmically with the part diameter in practice.
    """
    label = np.arange(n_vertices, dtype=np.int64)
    n_polys = int(corner_poly.max()) + 1 if len(corner_poly) else 0
    while True:
        poly_min = np.full(n_polys, n_vertices, dtype=np.int64)
        np.minimum.at(poly_min, corner_poly, label[corner_vertex])
        new = label.copy()
        np.minimum.at(new, corner_vertex, poly_min[corner_poly])
        new = new[new]  # pointer jumping: a root's root
        np.minimum.at(new, label, new)  # the old root learns its members' new root
        new = new[new]
        if np.array_equal(new, label):
            break
        label = new
    _, dense = np.unique(label, return_inverse=True)
    return dense.ravel()


def fan_triangles(corner_vertex: np.ndarray, loop_start: np.ndarray, loop_total: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Fan triangulation of polygons given by their corners.

    Args:
        corner_vertex: (L,) int, the vertex of each corner.
        loop_start: (P,) int, each polygon's first corner.
        loop_total: (P,) int, each polygon's corner count.

    Returns:
        (T, 3) int64 vertex indices and the (T,) polygon of each triangle (polygons with fewer than 3 corners
        give none).
    """
    corner_vertex = np.asarray(corner_vertex, dtype=np.int64)
    start = np.asarray(loop_start, dtype=np.int64)
    total = np.asarray(loop_total, dtype=np.int64)
    per_poly = np.maximum(total - 2, 0)
    poly = np.repeat(np.arange(len(start)), per_poly)
    k = np.arange(len(poly)) - np.repeat(np.cumsum(per_poly) - per_poly, per_poly) + 1  # 1..n-2 in each polygon
    first = start[poly]
    tris = np.stack([corner_vertex[first], corner_vertex[first + k], corner_vertex[first + k + 1]], axis=1)
    return tris, poly


def support_plane_polygons(vertices: np.ndarray, tris: np.ndarray, tri_poly: np.ndarray, n_polys: int, *,
                           tolerance: float = 0.01, min_part: float = 0.05,
                           up: Sequence[float] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """The polygons that Remove Support Plane deletes: those on the plane the mesh stands on, beyond it, and the
    floaters that leaves (:func:`backend.meshclean.remove_support_plane`); a polygon goes only when all its
    triangles go.

    Args:
        vertices: (V, 3) float positions (the mesh's own coordinates).
        tris: (T, 3) int triangles of the polygons (:func:`fan_triangles`); ``tri_poly``: (T,) their polygons.
        n_polys: the polygon count P.
        tolerance: inlier distance of the fit, as a fraction of the mesh's bounding diagonal.
        min_part: afterwards, drop parts with less area than this fraction of the largest (0: keep them).
        up: the up direction in the mesh's coordinates (unit 3-vector), or None.

    Returns:
        (D,) int64 indices of the polygons to delete, and the clean-up's report: ``removed``
        {"support_plane": triangles, "floaters": triangles} and ``plane`` (``found``, ``normal``, ``point``,
        ``tolerance``; or ``why``).
    """
    options = meshclean.CleanOptions(remove_plane=True, plane_tolerance=float(tolerance), min_part=float(min_part),
                                     floaters=min_part > 0, up=None if up is None else tuple(float(u) for u in up))
    keep_tri, report = meshclean.remove_support_plane(np.asarray(vertices, dtype=np.float64).reshape(-1, 3), tris,
                                                      options=options)
    keep_poly = np.bincount(tri_poly, weights=keep_tri, minlength=n_polys) > 0
    return np.flatnonzero(~keep_poly), report


def available_memory() -> int | None:
    """Bytes of memory available now (Linux ``MemAvailable``); None where the platform does not say."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return None


def check_bake_memory(size: int, available: int | None = None) -> None:
    """Refuse a bake whose ``size`` x ``size`` texture would not fit in memory (``available``: bytes free, default:
    measured); raises :class:`MeshToolError` naming the largest size that fits."""
    need = size * size * BAKE_BYTES_PER_TEXEL
    available = available_memory() if available is None else available
    if available is not None and need > 0.8 * available:
        fits = 1 << int(math.log2(math.sqrt(0.8 * available / BAKE_BYTES_PER_TEXEL)))
        raise MeshToolError(f"a {size} x {size} texture needs about {need / 2**30:.1f} GiB to bake, but "
                            f"{available / 2**30:.1f} GiB are free; choose {fits} px or less")
