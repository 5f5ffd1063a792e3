"""Marching cubes of an SDF in blocks: memory bounded at any resolution, outward-facing triangles.

Two paths give the same mesh: this module's reference (NumPy lattice, PyMCubes per block, on the CPU) and
:mod:`backend.meshing.torch_mc` (PyTorch over the surface cells only, on the SDF's device).
:func:`marching_cubes_blocks` takes the fast one for a :class:`TorchSdf` on CUDA (``method="auto"``).

The volume is cut into blocks of ``block`` samples a side that share their boundary samples. Each block's SDF
is evaluated in chunks and meshed with PyMCubes; blocks the surface cannot reach (judged from a coarse pass)
are skipped. Vertices on shared block faces come out identical in both blocks (same samples, same
interpolation) and are welded, so the result is one watertight-where-possible mesh.
Memory: one block of floats plus the mesh itself, whatever the resolution.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from .. import debug
from .grid import GridSpec
from .mesh_io import weld

log = logging.getLogger(__name__)

SdfFn = Callable[[np.ndarray], np.ndarray]  # (P, 3) float32 -> (P,) float32
METHODS = ("auto", "reference", "fast")


class TorchSdf:
    """An SDF given as a PyTorch function on a device; also callable with NumPy arrays (for the reference path).

    Args:
        fn: (P, 3) float32 tensor on ``device`` -> (P,) signed distance tensor; called under ``torch.no_grad``.
        device: the device ``fn`` runs on.
    """

    def __init__(self, fn: Callable[[Any], Any], device: Any) -> None:  # noqa: ANN401 - torch types
        import torch

        self.fn = fn
        self.device = torch.device(device)

    def torch(self, x: Any) -> Any:  # noqa: ANN401 - torch types
        """(P, 3) float32 tensor on ``device`` -> (P,) float32 tensor."""
        import torch

        with torch.no_grad():
            return self.fn(x).float()

    def __call__(self, pts: np.ndarray) -> np.ndarray:
        """(P, 3) float32 array -> (P,) float32 array."""
        import torch

        return self.torch(torch.from_numpy(np.ascontiguousarray(pts, dtype=np.float32)).to(self.device)).cpu().numpy()


def choose_method(sdf_fn: SdfFn | TorchSdf, method: str = "auto") -> str:
    """The path to take, "reference" or "fast".

    ``method`` "auto" (or ``$NEUSBLEND_MC`` when ``method`` is "auto") means fast for a :class:`TorchSdf` on CUDA.
    """
    if method == "auto":
        method = debug.text("NEUSBLEND_MC") or "auto"
    if method not in METHODS:
        raise ValueError(f"unknown marching-cubes method {method!r}; use one of {', '.join(METHODS)}")
    if method == "auto":
        cuda = isinstance(sdf_fn, TorchSdf) and sdf_fn.device.type == "cuda"
        return "fast" if cuda else "reference"
    return method


def _eval_chunks(sdf_fn: SdfFn, pts: np.ndarray, chunk: int) -> np.ndarray:
    out = np.empty(len(pts), dtype=np.float32)
    for s in range(0, len(pts), chunk):
        out[s:s + chunk] = sdf_fn(pts[s:s + chunk])
    return out


def marching_cubes_blocks(sdf_fn: SdfFn, box: np.ndarray, resolution: int, *, block: int = 128,
                          chunk: int = 2**18, skip_empty: bool = True, lipschitz: float = 2.0,
                          progress: Callable[[float], None] | None = None, method: str = "auto"
                          ) -> tuple[np.ndarray, np.ndarray]:
    """Extract the zero level set of an SDF (positive outside) inside a box.

    Args:
        sdf_fn: (P, 3) float32 -> (P,) float32 signed distance; a :class:`TorchSdf` also serves the fast path.
        box: (2, 3) min and max corner.
        resolution: samples along the box's longest side.
        block: samples per block side (memory ~ block^3 floats).
        chunk: points per ``sdf_fn`` call.
        skip_empty: skip blocks that a coarse pass proves empty (assumes |grad sdf| <= ``lipschitz``).
        progress: called with the fraction done.
        method: "reference" (blocks, PyMCubes on the CPU), "fast" (:func:`backend.meshing.torch_mc.marching_cubes_torch`
            on the SDF's device, or the CPU for a NumPy function; ``block`` is not used there) or "auto" (fast for a
            :class:`TorchSdf` on CUDA; ``$NEUSBLEND_MC`` overrides "auto"). Both give the same mesh up to vertex
            and face order.

    Returns:
        vertices (V, 3) float32 in the box's coordinates; faces (F, 3) int32, counter-clockwise seen from
        outside (normals point out of the negative region).
    """
    if choose_method(sdf_fn, method) == "fast":
        return _fast(sdf_fn, box, resolution, chunk=chunk, skip_empty=skip_empty, lipschitz=lipschitz,
                     progress=progress)
    import mcubes

    spec = GridSpec.from_box(box, resolution)
    n = np.array(spec.shape)
    step = block - 1  # blocks overlap by one sample
    starts = [list(range(0, max(int(n[a]) - 1, 1), step)) for a in range(3)]
    verts_all: list[np.ndarray] = []
    faces_all: list[np.ndarray] = []
    n_verts = 0
    total = len(starts[0]) * len(starts[1]) * len(starts[2])
    done = 0
    for sx in starts[0]:
        for sy in starts[1]:
            for sz in starts[2]:
                start = (sx, sy, sz)
                size = tuple(int(min(block, n[a] - start[a])) for a in range(3))
                done += 1
                if min(size) < 2:
                    continue
                if skip_empty:
                    vol = _sparse_block(sdf_fn, spec, start, size, chunk, lipschitz)
                    if vol is None:
                        continue
                else:
                    vol = _eval_chunks(sdf_fn, spec.points(start, size), chunk).reshape(size)
                if not (vol.min() < 0 < vol.max()):
                    continue
                v, f = mcubes.marching_cubes(vol.astype(np.float64), 0.0)
                if len(f) == 0:
                    continue
                v = v + np.array(start, dtype=np.float64)  # global sample-index coordinates
                verts_all.append(v)
                faces_all.append(f.astype(np.int64) + n_verts)
                n_verts += len(v)
                if progress is not None:
                    progress(done / total)
    if not verts_all:
        return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int32)
    verts = np.concatenate(verts_all)
    faces = np.concatenate(faces_all)
    verts, faces = weld(verts, faces)
    faces = faces[:, ::-1]  # PyMCubes winds triangles inward for a field that is negative inside
    world = spec.lo + verts * spec.spacing
    return world.astype(np.float32), np.ascontiguousarray(faces, dtype=np.int32)


def _fast(sdf_fn: SdfFn | TorchSdf, box: np.ndarray, resolution: int, *, chunk: int, skip_empty: bool,
          lipschitz: float, progress: Callable[[float], None] | None) -> tuple[np.ndarray, np.ndarray]:
    """The fast path for any SDF: a NumPy function is wrapped to run on the CPU."""
    import torch

    from .torch_mc import marching_cubes_torch

    if isinstance(sdf_fn, TorchSdf):
        fn, device = sdf_fn.torch, sdf_fn.device
    else:
        def fn(x: torch.Tensor) -> torch.Tensor:
            return torch.from_numpy(np.asarray(sdf_fn(x.cpu().numpy()), dtype=np.float32)).to(x.device)

        device = torch.device("cpu")
    if device.type == "cuda":
        chunk = max(chunk, 2**20)  # fewer, larger calls: the GPU is idle between them
    try:
        return marching_cubes_torch(fn, box, resolution, device=device, chunk=chunk,
                                    lipschitz=lipschitz if skip_empty else float("inf"), progress=progress)
    except torch.cuda.OutOfMemoryError:
        log.warning("fast marching cubes ran out of GPU memory at %d^3; using the block-wise reference path",
                    resolution)
        torch.cuda.empty_cache()
    return marching_cubes_blocks(sdf_fn, box, resolution, chunk=chunk, skip_empty=skip_empty,
                                 lipschitz=lipschitz, progress=progress, method="reference")


def _lerp_axis(coarse: np.ndarray, sub: np.ndarray, n: int, axis: int) -> np.ndarray:
    """Linear interpolation of ``coarse`` sampled at indices ``sub`` (sorted, from 0 to n - 1) to all n indices."""
    i = np.arange(n)
    k = np.clip(np.searchsorted(sub, i, side="right") - 1, 0, len(sub) - 2)
    t = (i - sub[k]) / (sub[k + 1] - sub[k])
    shape = [1] * coarse.ndim
    shape[axis] = n
    t = t.reshape(shape)
    return np.take(coarse, k, axis=axis) * (1 - t) + np.take(coarse, k + 1, axis=axis) * t


def _sparse_block(sdf_fn: SdfFn, spec: GridSpec, start: tuple[int, int, int], size: tuple[int, ...], chunk: int,
                  lipschitz: float, stride: int = 4) -> np.ndarray | None:
    """SDF samples of a block, evaluated exactly only near the surface.

    A coarse lattice (every ``stride``-th sample) is evaluated first. Fine samples in coarse cells whose corners
    are all farther from the surface than the cell can reach (|sdf| > ``lipschitz`` x cell diagonal) keep the
    coarse trilinear value: their sign is right, and marching cubes only places vertices on edges whose ends
    are both near the surface, which are evaluated exactly. Evaluations drop from O(n^3) to about O(n^2).

    Returns:
        (sx, sy, sz) float32 volume, or None when the block cannot contain surface.
    """
    if min(size) <= stride + 1:
        return _eval_chunks(sdf_fn, spec.points(start, size), chunk).reshape(size)
    sub = [np.unique(np.r_[np.arange(0, size[a], stride), size[a] - 1]) for a in range(3)]
    axes = [spec.lo[a] + (start[a] + sub[a]) * spec.spacing for a in range(3)]
    pts = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3).astype(np.float32)
    coarse = _eval_chunks(sdf_fn, pts, chunk).reshape(len(sub[0]), len(sub[1]), len(sub[2]))
    reach = stride * spec.spacing * np.sqrt(3.0) * lipschitz
    a = np.abs(coarse)
    cmin = np.minimum.reduce([a[i:a.shape[0] - 1 + i, j:a.shape[1] - 1 + j, k:a.shape[2] - 1 + k]
                              for i in (0, 1) for j in (0, 1) for k in (0, 1)])
    near = cmin <= reach
    if not near.any():
        return None
    # grow by one cell so that samples on a cell's faces are judged by every cell they touch
    grown = near.copy()
    for ax in range(3):
        lo = [slice(None)] * 3
        hi = [slice(None)] * 3
        lo[ax], hi[ax] = slice(1, None), slice(None, -1)
        grown[tuple(lo)] |= near[tuple(hi)]
        grown[tuple(hi)] |= near[tuple(lo)]
    vol = coarse
    for ax in range(3):
        vol = _lerp_axis(vol, sub[ax], size[ax], ax)
    vol = np.ascontiguousarray(vol, dtype=np.float32)
    cell = [np.clip(np.searchsorted(sub[ax], np.arange(size[ax]), side="right") - 1, 0, len(sub[ax]) - 2)
            for ax in range(3)]
    mask = grown[np.ix_(cell[0], cell[1], cell[2])]
    idx = np.nonzero(mask)
    if len(idx[0]):
        fine = np.stack([spec.lo[ax] + (start[ax] + idx[ax]) * spec.spacing for ax in range(3)], -1)
        vol[idx] = _eval_chunks(sdf_fn, fine.astype(np.float32), chunk)
    return vol
