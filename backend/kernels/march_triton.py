"""Ray marching through the occupancy grid in two Triton passes (fast path of ``OccupancyGrid.sample``).

The reference (:func:`backend.render.march_dense`) lays every ray's steps out as one dense (R, T) array, keeps the
steps before each ray's exit, looks up their cells and compacts the occupied ones: about ten kernels over R x T
elements and three host synchronisations per batch. Here one thread walks one ray:

1. count: each ray counts its occupied steps (nothing is written but the count);
2. the counts' prefix sum gives each ray's first output row (one host synchronisation, for the total);
3. write: each ray walks again and writes the ray index and distance of its occupied steps from that row on.

Same samples as the reference, bit for bit: the same float32 operations in the same order (products rounded before
the following add, as PyTorch's separate kernels do; ``mul.rn`` is never contracted into an fma).
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from .hashgrid_triton import _ROUNDED_MUL, _mul_rn

# rays per program (one per lane); NEUSBLEND_MARCH_RAYS for measurements
RAYS_PER_PROGRAM = int(os.environ.get("NEUSBLEND_MARCH_RAYS", "128"))


@triton.jit
def _march_kernel(o_ptr, d_ptr, start_ptr, far_ptr, nsteps_ptr, offset_ptr, occ_ptr, first_ptr, count_ptr,
                  ridx_ptr, t_ptr, R, res, half_res, step, WRITE: tl.constexpr, ROUNDED: tl.constexpr,
                  BLOCK: tl.constexpr):
    """Walk BLOCK rays, one per lane: step k sits at ``start + (k + offset) * step`` and counts while it lies before
    ``far`` in an occupied cell. WRITE=False stores each ray's count; WRITE=True writes its samples from row
    ``first[ray]`` on."""
    rays = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    rmask = rays < R
    ox = tl.load(o_ptr + rays * 3 + 0, mask=rmask, other=0.0)
    oy = tl.load(o_ptr + rays * 3 + 1, mask=rmask, other=0.0)
    oz = tl.load(o_ptr + rays * 3 + 2, mask=rmask, other=0.0)
    dx = tl.load(d_ptr + rays * 3 + 0, mask=rmask, other=0.0)
    dy = tl.load(d_ptr + rays * 3 + 1, mask=rmask, other=0.0)
    dz = tl.load(d_ptr + rays * 3 + 2, mask=rmask, other=0.0)
    start = tl.load(start_ptr + rays, mask=rmask, other=0.0)
    far = tl.load(far_ptr + rays, mask=rmask, other=0.0)
    n = tl.load(nsteps_ptr + rays, mask=rmask, other=0)
    off = tl.load(offset_ptr + rays, mask=rmask, other=0.0)
    row = tl.zeros([BLOCK], dtype=tl.int64)
    if WRITE:
        row = tl.load(first_ptr + rays, mask=rmask, other=0)
    count = tl.zeros([BLOCK], dtype=tl.int32)
    for k in range(0, tl.max(n, 0)):
        t = start + _mul_rn(k + off, step, ROUNDED)
        px = (ox + _mul_rn(dx, t, ROUNDED) + 1.0) * half_res
        py = (oy + _mul_rn(dy, t, ROUNDED) + 1.0) * half_res
        pz = (oz + _mul_rn(dz, t, ROUNDED) + 1.0) * half_res
        ix = tl.floor(px).to(tl.int32)
        iy = tl.floor(py).to(tl.int32)
        iz = tl.floor(pz).to(tl.int32)
        inside = (ix >= 0) & (ix < res) & (iy >= 0) & (iy < res) & (iz >= 0) & (iz < res)
        live = (k < n) & (t < far) & inside
        cell = (ix * res + iy) * res + iz
        occ = tl.load(occ_ptr + cell, mask=live, other=0) != 0
        occ = occ & live
        if WRITE:
            at = row + count
            tl.store(ridx_ptr + at, rays.to(tl.int64), mask=occ)
            tl.store(t_ptr + at, t, mask=occ)
        count += occ.to(tl.int32)
    if not WRITE:
        tl.store(count_ptr + rays, count, mask=rmask)


def march(origins: torch.Tensor, dirs: torch.Tensor, start: torch.Tensor, far: torch.Tensor, n_steps: torch.Tensor,
          offset: torch.Tensor, occupied: torch.Tensor, step_size: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Occupied steps of each ray, packed: the same samples as :func:`backend.render.march_dense`.

    Args:
        origins, dirs: (R, 3) float32 rays; start, far: (R,) the first step's lattice origin and the exit distance;
        n_steps: (R,) int32 steps to try per ray (0 for rays that miss); offset: (R,) fraction of a step of the
        first sample; occupied: (r, r, r) bool occupancy over [-1, 1]^3; step_size: distance between samples.

    Returns:
        ray_indices (S,) int64 sorted, t (S,) float32 sample distances.
    """
    R = origins.shape[0]
    dev = origins.device
    if R == 0:
        return torch.zeros(0, dtype=torch.long, device=dev), torch.zeros(0, device=dev)
    res = occupied.shape[0]
    occ = occupied.contiguous().view(torch.uint8).view(-1)
    args = [c.contiguous() for c in (origins, dirs, start, far)] + [n_steps.to(torch.int32).contiguous(),
                                                                    offset.contiguous(), occ]
    grid = (triton.cdiv(R, RAYS_PER_PROGRAM),)
    counts = torch.empty(R, dtype=torch.int32, device=dev)
    dummy_i64 = torch.empty(1, dtype=torch.long, device=dev)
    dummy_f = torch.empty(1, device=dev)
    _march_kernel[grid](*args, dummy_i64, counts, dummy_i64, dummy_f, R, res, 0.5 * res, step_size, WRITE=False,
                        ROUNDED=_ROUNDED_MUL, BLOCK=RAYS_PER_PROGRAM)
    ends = torch.cumsum(counts, 0, dtype=torch.long)
    total = int(ends[-1])  # the one host synchronisation: the output's size
    first = ends - counts
    ridx = torch.empty(total, dtype=torch.long, device=dev)
    t = torch.empty(total, device=dev)
    if total:
        _march_kernel[grid](*args, first, counts, ridx, t, R, res, 0.5 * res, step_size, WRITE=True,
                            ROUNDED=_ROUNDED_MUL, BLOCK=RAYS_PER_PROGRAM)
    return ridx, t
