"""Ray marching through the occupancy grid in two Triton passes (fast path of ``OccupancyGrid.sample``).

The reference (:func:`backend.render.march_dense`) lays every ray's steps out as one dense (R, T) array, keeps the
steps before each ray's exit, looks up their cells and compacts the occupied ones: about ten kernels over R x T
elements and three host synchronisations per batch. Here threads walk the rays:

1. count: each ray counts its occupied steps (nothing is written but the count);
2. the counts' prefix sum gives each ray's first output row (one host synchronisation, for the total);
3. write: each ray walks again and writes the ray index and distance (and, if asked, the position) of its occupied
   steps from that row on.

A ray is walked by ``SEGMENTS`` threads, each over an equal stretch of its steps, counted and written apart (in
order, so the samples stay sorted by ray and distance): a batch has only some thousands of rays, and more threads
hide more of the walk's memory latency.

A walk skips empty space: a step in an empty block of ``COARSE``^3 cells (or in an empty cell) jumps to the last
step of the lattice before the ray leaves that block (or cell), so a ray costs about one iteration per empty block
or cell it crosses instead of one per step. Every step that is looked at is computed as the reference computes it,
and the steps jumped over lie at least one step inside the empty block, far beyond float rounding (only for a ray
running within about 1e-5 cells of a cell face parallel to it could rounding decide otherwise, as it does for the
reference itself).

Same samples as the reference, bit for bit: the same float32 operations in the same order (products rounded before
the following add, as PyTorch's separate kernels do; ``mul.rn`` is never contracted into an fma).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .. import debug
from .hashgrid_triton import _ROUNDED_MUL, _mul_rn

# lanes per program; NEUSBLEND_MARCH_RAYS for measurements
RAYS_PER_PROGRAM = debug.number("NEUSBLEND_MARCH_RAYS")
# lanes per ray, each walking one stretch of its steps (more lanes hide more memory latency);
# NEUSBLEND_MARCH_SEGMENTS for measurements (a power of two)
SEGMENTS = debug.number("NEUSBLEND_MARCH_SEGMENTS")
# cells per side of a block of the coarse occupancy that the walk skips at once
COARSE = 8


@triton.jit
def _exit_steps(ox, oy, oz, dx, dy, dz, t, bx, by, bz, size, inv_half_res, step):
    """Whole steps from distance ``t`` to where the ray leaves the axis-aligned block of ``size`` cells whose lowest
    cell is (bx, by, bz) (at least 1)."""
    big = 3.0e38
    ex = tl.where(dx > 0, bx + size, bx).to(tl.float32) * inv_half_res - 1.0
    ey = tl.where(dy > 0, by + size, by).to(tl.float32) * inv_half_res - 1.0
    ez = tl.where(dz > 0, bz + size, bz).to(tl.float32) * inv_half_res - 1.0
    tx = tl.where(tl.abs(dx) > 1e-9, (ex - ox) / tl.where(tl.abs(dx) > 1e-9, dx, 1.0), big)
    ty = tl.where(tl.abs(dy) > 1e-9, (ey - oy) / tl.where(tl.abs(dy) > 1e-9, dy, 1.0), big)
    tz = tl.where(tl.abs(dz) > 1e-9, (ez - oz) / tl.where(tl.abs(dz) > 1e-9, dz, 1.0), big)
    t_exit = tl.minimum(tl.minimum(tx, ty), tz)
    m = tl.floor(tl.minimum(t_exit - t, 1.0e6) / step).to(tl.int32)
    return tl.maximum(m, 1)


@triton.jit
def _march_kernel(o_ptr, d_ptr, start_ptr, far_ptr, nsteps_ptr, offset_ptr, occ_ptr, coarse_ptr, first_ptr,
                  count_ptr, ridx_ptr, t_ptr, pts_ptr, R, res, cres, half_res, step, WRITE: tl.constexpr,
                  PTS: tl.constexpr, CF: tl.constexpr, G: tl.constexpr, ROUNDED: tl.constexpr, BLOCK: tl.constexpr):
    """Walk BLOCK lanes, G per ray (lane l walks the l % G-th of G equal stretches of ray l // G's steps): step k
    sits at ``start + (k + offset) * step`` and counts while it lies before ``far`` in an occupied cell.
    WRITE=False stores each lane's count; WRITE=True writes its samples from row ``first[lane]`` on (and their
    positions when PTS). CF cells per side of a coarse block."""
    lanes = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    rays = lanes // G
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
        row = tl.load(first_ptr + lanes, mask=rmask, other=0)
    inv_half_res = 1.0 / half_res
    count = tl.zeros([BLOCK], dtype=tl.int32)
    stretch = (n + G - 1) // G
    k = (lanes % G) * stretch
    n = tl.minimum(k + stretch, n)  # this lane's steps end here
    active = rmask & (k < n)
    while tl.max(active.to(tl.int32), 0) > 0:
        t = start + _mul_rn(k.to(tl.float32) + off, step, ROUNDED)
        px = (ox + _mul_rn(dx, t, ROUNDED) + 1.0) * half_res
        py = (oy + _mul_rn(dy, t, ROUNDED) + 1.0) * half_res
        pz = (oz + _mul_rn(dz, t, ROUNDED) + 1.0) * half_res
        ix = tl.floor(px).to(tl.int32)
        iy = tl.floor(py).to(tl.int32)
        iz = tl.floor(pz).to(tl.int32)
        inside = (ix >= 0) & (ix < res) & (iy >= 0) & (iy < res) & (iz >= 0) & (iz < res)
        active = active & (t < far)
        live = active & inside
        cx = ix // CF
        cy = iy // CF
        cz = iz // CF
        block_occ = tl.load(coarse_ptr + (cx * cres + cy) * cres + cz, mask=live, other=0) != 0
        occ = tl.load(occ_ptr + (ix * res + iy) * res + iz, mask=live & block_occ, other=0) != 0
        occ = occ & live & block_occ
        if WRITE:
            at = row + count
            tl.store(ridx_ptr + at, rays.to(tl.int64), mask=occ)
            tl.store(t_ptr + at, t, mask=occ)
            if PTS:
                tl.store(pts_ptr + at * 3 + 0, ox + _mul_rn(dx, t, ROUNDED), mask=occ)
                tl.store(pts_ptr + at * 3 + 1, oy + _mul_rn(dy, t, ROUNDED), mask=occ)
                tl.store(pts_ptr + at * 3 + 2, oz + _mul_rn(dz, t, ROUNDED), mask=occ)
        count += occ.to(tl.int32)
        # an empty block (or cell): jump to the last step inside it; otherwise the next step
        size = tl.where(block_occ, 1, CF)
        m = _exit_steps(ox, oy, oz, dx, dy, dz, t, tl.where(block_occ, ix, cx * CF), tl.where(block_occ, iy, cy * CF),
                        tl.where(block_occ, iz, cz * CF), size, inv_half_res, step)
        k += tl.where(live & ~occ, m, 1)
        active = active & (k < n)
    if not WRITE:
        tl.store(count_ptr + lanes, count, mask=rmask)


def coarse_occupancy(occupied: torch.Tensor, factor: int = COARSE) -> torch.Tensor:
    """(r, r, r) bool -> (ceil(r / factor),) * 3 uint8: 1 where any cell of the factor^3 block is occupied."""
    r = occupied.shape[0]
    c = -(-r // factor)
    pad = c * factor - r
    occ = occupied.to(torch.uint8)
    if pad:
        occ = torch.nn.functional.pad(occ, (0, pad, 0, pad, 0, pad))
    return occ.view(c, factor, c, factor, c, factor).amax(dim=(1, 3, 5)).contiguous()


class Marcher:
    """The two passes over one batch of rays (see the module docstring); :func:`march` runs both."""

    def __init__(self, origins: torch.Tensor, dirs: torch.Tensor, start: torch.Tensor, far: torch.Tensor,
                 n_steps: torch.Tensor, offset: torch.Tensor, occupied: torch.Tensor, step_size: float,
                 coarse: torch.Tensor | None = None) -> None:
        self.R = origins.shape[0]
        self.device = origins.device
        self.res = occupied.shape[0]
        self.coarse = coarse_occupancy(occupied) if coarse is None else coarse
        occ = occupied.contiguous().view(torch.uint8).view(-1)
        self.args = [c.contiguous() for c in (origins, dirs, start, far)] + [
            n_steps.to(torch.int32).contiguous(), offset.contiguous(), occ, self.coarse.view(-1)]
        self.step = float(step_size)
        self.lanes = self.R * SEGMENTS
        self.grid = (triton.cdiv(self.lanes, RAYS_PER_PROGRAM),)

    def _launch(self, first: torch.Tensor, counts: torch.Tensor, ridx: torch.Tensor, t: torch.Tensor,
                pts: torch.Tensor, write: bool, want_pts: bool) -> None:
        _march_kernel[self.grid](*self.args, first, counts, ridx, t, pts, self.R, self.res, self.coarse.shape[0],
                                 0.5 * self.res, self.step, WRITE=write, PTS=want_pts, CF=COARSE, G=SEGMENTS,
                                 ROUNDED=_ROUNDED_MUL, BLOCK=RAYS_PER_PROGRAM, num_warps=max(1, RAYS_PER_PROGRAM // 32))

    def counts(self) -> torch.Tensor:
        """(R * SEGMENTS,) int32 occupied steps of each lane, ray-major (the count pass; see :meth:`per_ray`)."""
        counts = torch.empty(self.lanes, dtype=torch.int32, device=self.device)
        if self.R:
            dummy = torch.empty(1, dtype=torch.long, device=self.device)
            self._launch(dummy, counts, dummy, dummy.float(), dummy.float(), False, False)
        return counts

    def write(self, first: torch.Tensor, total: int, want_pts: bool = False
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The write pass: ray indices (total,) int64, distances (total,) and positions (total, 3) if asked, each
        lane's samples from row ``first[lane]`` (int64, the exclusive prefix sum of :meth:`counts`) on."""
        ridx = torch.empty(total, dtype=torch.long, device=self.device)
        t = torch.empty(total, device=self.device)
        pts = torch.empty(total if want_pts else 1, 3, device=self.device)
        if total:
            self._launch(first, first, ridx, t, pts, True, want_pts)
        return ridx, t, pts if want_pts else None

    def per_ray(self, counts: torch.Tensor, first: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Lane counts and first rows -> (R,) int32 samples of each ray and (R,) int64 its first row."""
        return counts.view(self.R, SEGMENTS).sum(1, dtype=torch.int32), first.view(self.R, SEGMENTS)[:, 0].contiguous()


def march(origins: torch.Tensor, dirs: torch.Tensor, start: torch.Tensor, far: torch.Tensor, n_steps: torch.Tensor,
          offset: torch.Tensor, occupied: torch.Tensor, step_size: float, coarse: torch.Tensor | None = None
          ) -> tuple[torch.Tensor, torch.Tensor]:
    """Occupied steps of each ray, packed: the same samples as :func:`backend.render.march_dense`.

    Args:
        origins, dirs: (R, 3) float32 rays; start, far: (R,) the first step's lattice origin and the exit distance;
        n_steps: (R,) int32 steps to try per ray (0 for rays that miss); offset: (R,) fraction of a step of the
        first sample; occupied: (r, r, r) bool occupancy over [-1, 1]^3; step_size: distance between samples;
        coarse: :func:`coarse_occupancy` of ``occupied`` if the caller keeps it (computed otherwise).

    Returns:
        ray_indices (S,) int64 sorted, t (S,) float32 sample distances.
    """
    m = Marcher(origins, dirs, start, far, n_steps, offset, occupied, step_size, coarse)
    counts = m.counts()
    if m.R == 0:
        return torch.zeros(0, dtype=torch.long, device=m.device), torch.zeros(0, device=m.device)
    ends = torch.cumsum(counts, 0, dtype=torch.long)
    total = int(ends[-1])  # the one host synchronisation: the output's size
    ridx, t, _ = m.write(ends - counts, total)
    return ridx, t
