"""A training batch prepared in a few Triton kernels, straight into the CUDA graph's input layout.

The reference batch (:meth:`backend.training.batches.BatchBuilder.marched`) is a chain of about a hundred small
PyTorch kernels and three to four host synchronisations: drawing rays, clipping them to the sphere and the occupied
box, the march, the culling pre-pass, compacting what it keeps, and the capacity cut. Here:

1. :func:`draw_rays` (one kernel): pixel, ray, colour, mask and background of each ray, and where its march starts
   and ends (the unit sphere clipped to the box around the occupied cells);
2. the march's count pass (:class:`~backend.kernels.march_triton.Marcher`), its prefix sum and the batch's one host
   synchronisation (the number of marched samples), then the write pass with the sample positions;
3. the SDF at every marched sample (:func:`~backend.kernels.fused_geometry.sdf_only`) and :func:`visible_counts`
   (one kernel): how many leading samples of each ray the camera can see;
4. :func:`pack` (one kernel): the visible samples of the leading rays that fit the sample capacity, padding, and
   the per-ray rows, written into a :class:`~backend.step.StepInputs` of the graph's shapes.

Same rays, samples and culling as the reference for the same random draws (up to float rounding in the ray
directions and at the transmittance threshold; tested in ``tests/test_kernels.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

ROWS = 256  # rays or rows per program


@triton.jit
def _rays_kernel(gid_ptr, u_ptr, offs_ptr, widths_ptr, kinv_ptr, c2w_ptr, pix_ptr, mask_ptr, lo_ptr, hi_ptr,
                 o_ptr, d_ptr, gt_ptr, bg_ptr, m_ptr, start_ptr, far_ptr, n_ptr, off_ptr, R, n_img, n_search, step,
                 HAS_MASK: tl.constexpr, BLOCK: tl.constexpr):
    rays = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    rm = rays < R
    gid = tl.load(gid_ptr + rays, mask=rm, other=0)
    # the image of each pixel: the last offset <= gid (offsets[n_img] is the pixel count, above every gid)
    lo = tl.zeros([BLOCK], dtype=tl.int32)
    hi = tl.zeros([BLOCK], dtype=tl.int32) + n_img
    for _ in range(n_search):
        mid = (lo + hi) // 2
        go = tl.load(offs_ptr + mid, mask=rm, other=0) <= gid
        lo = tl.where(go, mid, lo)
        hi = tl.where(go, hi, mid)
    img = lo
    local = gid - tl.load(offs_ptr + img, mask=rm, other=0)
    w = tl.load(widths_ptr + img, mask=rm, other=1)
    row = (local // w).to(tl.float32) + tl.load(u_ptr + rays * 6 + 0, mask=rm, other=0.0) - 0.5
    col = (local % w).to(tl.float32) + tl.load(u_ptr + rays * 6 + 1, mask=rm, other=0.0) - 0.5
    k = kinv_ptr + img * 9
    cx = tl.load(k + 0, mask=rm, other=0.0) * col + tl.load(k + 1, mask=rm, other=0.0) * row + tl.load(
        k + 2, mask=rm, other=0.0)
    cy = tl.load(k + 3, mask=rm, other=0.0) * col + tl.load(k + 4, mask=rm, other=0.0) * row + tl.load(
        k + 5, mask=rm, other=0.0)
    cz = tl.load(k + 6, mask=rm, other=0.0) * col + tl.load(k + 7, mask=rm, other=0.0) * row + tl.load(
        k + 8, mask=rm, other=1.0)
    c = c2w_ptr + img * 16
    dx = tl.load(c + 0, mask=rm, other=0.0) * cx + tl.load(c + 1, mask=rm, other=0.0) * cy + tl.load(
        c + 2, mask=rm, other=0.0) * cz
    dy = tl.load(c + 4, mask=rm, other=0.0) * cx + tl.load(c + 5, mask=rm, other=0.0) * cy + tl.load(
        c + 6, mask=rm, other=0.0) * cz
    dz = tl.load(c + 8, mask=rm, other=0.0) * cx + tl.load(c + 9, mask=rm, other=0.0) * cy + tl.load(
        c + 10, mask=rm, other=1.0) * cz
    nrm = tl.sqrt(dx * dx + dy * dy + dz * dz)
    dx = dx / nrm
    dy = dy / nrm
    dz = dz / nrm
    ox = tl.load(c + 3, mask=rm, other=0.0)
    oy = tl.load(c + 7, mask=rm, other=0.0)
    oz = tl.load(c + 11, mask=rm, other=0.0)
    tl.store(o_ptr + rays * 3 + 0, ox, mask=rm)
    tl.store(o_ptr + rays * 3 + 1, oy, mask=rm)
    tl.store(o_ptr + rays * 3 + 2, oz, mask=rm)
    tl.store(d_ptr + rays * 3 + 0, dx, mask=rm)
    tl.store(d_ptr + rays * 3 + 1, dy, mask=rm)
    tl.store(d_ptr + rays * 3 + 2, dz, mask=rm)
    # colour, composited on a random background where there are masks
    mk = tl.zeros([BLOCK], dtype=tl.float32)
    if HAS_MASK:
        mk = tl.load(mask_ptr + gid, mask=rm, other=0).to(tl.float32) / 255.0
        tl.store(m_ptr + rays, mk, mask=rm)
    for ch in tl.static_range(3):
        v = tl.load(pix_ptr + gid * 3 + ch, mask=rm, other=0).to(tl.float32) / 255.0
        if HAS_MASK:
            b = tl.load(u_ptr + rays * 6 + 3 + ch, mask=rm, other=0.0)
            tl.store(bg_ptr + rays * 3 + ch, b, mask=rm)
            v = v * mk + b * (1.0 - mk)
        tl.store(gt_ptr + rays * 3 + ch, v, mask=rm)
    # the march's span: the unit sphere, clipped to the box around the occupied cells (a step of slack)
    b = ox * dx + oy * dy + oz * dz
    cc = ox * ox + oy * oy + oz * oz - 1.0
    disc = b * b - cc
    s = tl.sqrt(tl.maximum(disc, 0.0))
    near = tl.maximum(-b - s, 0.0)
    far = -b + s
    hit = (disc > 0) & (far > near)
    ix = 1.0 / tl.where(tl.abs(dx) < 1e-12, 1e-12, dx)
    iy = 1.0 / tl.where(tl.abs(dy) < 1e-12, 1e-12, dy)
    iz = 1.0 / tl.where(tl.abs(dz) < 1e-12, 1e-12, dz)
    ax0 = (tl.load(lo_ptr + 0) - ox) * ix
    ax1 = (tl.load(hi_ptr + 0) - ox) * ix
    ay0 = (tl.load(lo_ptr + 1) - oy) * iy
    ay1 = (tl.load(hi_ptr + 1) - oy) * iy
    az0 = (tl.load(lo_ptr + 2) - oz) * iz
    az1 = (tl.load(hi_ptr + 2) - oz) * iz
    t_lo = tl.maximum(tl.maximum(tl.minimum(ax0, ax1), tl.minimum(ay0, ay1)), tl.minimum(az0, az1))
    t_hi = tl.minimum(tl.minimum(tl.maximum(ax0, ax1), tl.maximum(ay0, ay1)), tl.maximum(az0, az1))
    far = tl.minimum(far, t_hi + step)
    first = tl.maximum(tl.floor((tl.maximum(near, t_lo) - near) / step) - 1.0, 0.0)
    start = near + first * step
    hit = hit & (far > start)
    span = tl.where(hit, far - start, 0.0)
    n = tl.ceil(span / step).to(tl.int32) + hit.to(tl.int32)
    tl.store(start_ptr + rays, start, mask=rm)
    tl.store(far_ptr + rays, far, mask=rm)
    tl.store(n_ptr + rays, n, mask=rm)
    tl.store(off_ptr + rays, tl.load(u_ptr + rays * 6 + 2, mask=rm, other=0.0), mask=rm)


@dataclass
class Rays:
    """One batch's rays (R of them) and their march spans.

    Attributes:
        origins, dirs: (R, 3); gt: (R, 3) colours in [0, 1] (composited on ``bg`` where there are masks);
        bg: (R, 3) random background or None; mask: (R,) in [0, 1] or None;
        start, far: (R,) the march's lattice origin and exit; n_steps: (R,) int32 steps to try; offset: (R,) jitter.
    """

    origins: torch.Tensor
    dirs: torch.Tensor
    gt: torch.Tensor
    bg: torch.Tensor | None
    mask: torch.Tensor | None
    start: torch.Tensor
    far: torch.Tensor
    n_steps: torch.Tensor
    offset: torch.Tensor


def draw_rays(gid: torch.Tensor, u: torch.Tensor, pix_offsets: torch.Tensor, widths: torch.Tensor,
              K_inv: torch.Tensor, c2w: torch.Tensor, pixels: torch.Tensor, masks: torch.Tensor | None,
              lo: torch.Tensor, hi: torch.Tensor, step_size: float) -> Rays:
    """Rays through the drawn pixels, as ``Trainer.sample_rays`` and ``OccupancyGrid.sample`` make them.

    Args:
        gid: (R,) int64 pixel of each ray in the flat pixel list; u: (R, 6) uniform draws: row and column jitter,
            march offset, background colour.
        pix_offsets: (N + 1,) int64 first pixel of each image (and the count); widths: (N,) int64;
        K_inv: (N, 3, 3); c2w: (N, 4, 4) normalized frame; pixels: (P, 3) uint8; masks: (P,) uint8 or None.
        lo, hi: (3,) the box around the occupied cells; step_size: the march's step.
    """
    R = gid.shape[0]
    dev = gid.device
    f = torch.empty
    o, d, gt = f(R, 3, device=dev), f(R, 3, device=dev), f(R, 3, device=dev)
    bg = f(R, 3, device=dev) if masks is not None else None
    mask = f(R, device=dev) if masks is not None else None
    start, far, off = f(R, device=dev), f(R, device=dev), f(R, device=dev)
    n = f(R, dtype=torch.int32, device=dev)
    n_img = widths.shape[0]
    if R:
        _rays_kernel[(triton.cdiv(R, ROWS),)](
            gid.contiguous(), u.contiguous(), pix_offsets.contiguous(), widths.contiguous(),
            K_inv.reshape(-1, 9).contiguous(), c2w.reshape(-1, 16).contiguous(), pixels.contiguous(),
            masks if masks is not None else pixels, lo.contiguous(), hi.contiguous(), o, d, gt,
            bg if bg is not None else gt, mask if mask is not None else start, start, far, n, off, R, n_img,
            max(1, math.ceil(math.log2(max(n_img, 1)))) + 1, float(step_size), HAS_MASK=masks is not None,
            BLOCK=ROWS)
    return Rays(o, d, gt, bg, mask, start, far, n, off)


@triton.jit
def _visible_kernel(sdf_ptr, first_ptr, count_ptr, inv_s_ptr, kept_ptr, R, eps, BLOCK: tl.constexpr):
    rays = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    rm = rays < R
    first = tl.load(first_ptr + rays, mask=rm, other=0)
    cnt = tl.load(count_ptr + rays, mask=rm, other=0)
    inv_s = tl.load(inv_s_ptr)
    c_cur = tl.sigmoid(tl.load(sdf_ptr + first, mask=rm & (cnt > 0), other=0.0) * inv_s)
    te_prev = tl.full([BLOCK], 1.0, tl.float32)  # transmittance in front of the sample before (1 for the first)
    te = tl.full([BLOCK], 1.0, tl.float32)  # transmittance in front of this sample
    kept = tl.zeros([BLOCK], dtype=tl.int32)
    going = rm & (cnt > 0)
    j = 0
    while tl.max(going.to(tl.int32), 0) > 0:
        keep = going & (te_prev > eps)
        kept += keep.to(tl.int32)
        has_next = keep & (j + 1 < cnt)
        c_next = tl.sigmoid(tl.load(sdf_ptr + first + j + 1, mask=has_next, other=0.0) * inv_s)
        c_next = tl.where(has_next, c_next, c_cur)  # a ray's last sample gets no opacity
        alpha = tl.minimum(tl.maximum((c_cur - c_next) / (c_cur + 1e-6), 0.0), 1.0 - 1e-6)
        te_prev = te
        te = te * (1.0 - alpha)
        c_cur = c_next
        going = has_next
        j += 1
    tl.store(kept_ptr + rays, kept, mask=rm)


def visible_counts(sdf: torch.Tensor, first: torch.Tensor, counts: torch.Tensor, inv_s: torch.Tensor,
                   eps: float) -> torch.Tensor:
    """How many leading samples of each ray :func:`backend.render.visible_samples` keeps (a ray's kept samples are
    always its first ones: the transmittance only falls along a ray).

    Args:
        sdf: (S,) SDF at the packed samples; first: (R,) int64 each ray's first sample; counts: (R,) int32 its
            samples; inv_s: () NeuS sharpness on the device; eps: transmittance threshold.

    Returns:
        (R,) int32.
    """
    R = first.shape[0]
    kept = torch.empty(R, dtype=torch.int32, device=first.device)
    if R:
        _visible_kernel[(triton.cdiv(R, 32),)](sdf.contiguous(), first.contiguous(), counts.contiguous(),
                                              inv_s.reshape(1).float().contiguous(), kept, R, float(eps), BLOCK=32,
                                              num_warps=1)
    return kept


@triton.jit
def _pack_kernel(ridx_ptr, pts_ptr, mfirst_ptr, kept_ptr, kends_ptr, fit_ptr, dirs_ptr, gt_ptr, bg_ptr, mask_ptr,
                 o_pts, o_dirs, o_deltas, o_ridx, o_valid, o_raydirs, o_gt, o_bg, o_mask, o_rvalid, o_inv_n,
                 total, S, R, R_cap, step, HAS_MASK: tl.constexpr, BLOCK: tl.constexpr):
    rows = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    n_fit = tl.load(fit_ptr)  # samples of the rays that fit
    n_rays = tl.load(fit_ptr + 1)  # rays that fit
    # marched samples -> their row among the kept ones
    m = rows < total
    r = tl.load(ridx_ptr + rows, mask=m, other=0)
    kept = tl.load(kept_ptr + r, mask=m, other=0)
    kend = tl.load(kends_ptr + r, mask=m, other=0)
    pos = rows - tl.load(mfirst_ptr + r, mask=m, other=0)
    take = m & (pos < kept) & (kend <= S)
    out = kend - kept + pos
    for ch in tl.static_range(3):
        tl.store(o_pts + out * 3 + ch, tl.load(pts_ptr + rows * 3 + ch, mask=take, other=0.0), mask=take)
        tl.store(o_dirs + out * 3 + ch, tl.load(dirs_ptr + r * 3 + ch, mask=take, other=0.0), mask=take)
    tl.store(o_deltas + out, tl.zeros([BLOCK], dtype=tl.float32) + step, mask=take)
    tl.store(o_ridx + out, r, mask=take)
    tl.store(o_valid + out, tl.full([BLOCK], 1.0, tl.float32), mask=take)
    # padding samples: on the spare ray, no length, no weight
    pad = (rows < S) & (rows >= n_fit)
    zero = tl.zeros([BLOCK], dtype=tl.float32)
    for ch in tl.static_range(3):
        tl.store(o_pts + rows * 3 + ch, zero, mask=pad)
    tl.store(o_dirs + rows * 3 + 0, zero, mask=pad)
    tl.store(o_dirs + rows * 3 + 1, zero, mask=pad)
    tl.store(o_dirs + rows * 3 + 2, zero + 1.0, mask=pad)
    tl.store(o_deltas + rows, zero, mask=pad)
    tl.store(o_ridx + rows, rows.to(tl.int64) * 0 + R_cap, mask=pad)
    tl.store(o_valid + rows, zero, mask=pad)
    # per-ray rows
    rr = rows < R
    for ch in tl.static_range(3):
        tl.store(o_raydirs + rows * 3 + ch, tl.load(dirs_ptr + rows * 3 + ch, mask=rr, other=0.0), mask=rr)
        tl.store(o_gt + rows * 3 + ch, tl.load(gt_ptr + rows * 3 + ch, mask=rr, other=0.0), mask=rr)
        if HAS_MASK:
            tl.store(o_bg + rows * 3 + ch, tl.load(bg_ptr + rows * 3 + ch, mask=rr, other=0.0), mask=rr)
    if HAS_MASK:
        tl.store(o_mask + rows, tl.load(mask_ptr + rows, mask=rr, other=0.0), mask=rr)
    tl.store(o_rvalid + rows, (rows < n_rays).to(tl.float32), mask=rows < R_cap + 1)
    if tl.program_id(0) == 0:
        tl.store(o_inv_n, 1.0 / tl.maximum(n_rays, 1).to(tl.float32))


def pack(out, rays: Rays, ray_indices: torch.Tensor, pts: torch.Tensor, first: torch.Tensor,  # noqa: ANN001
         kept: torch.Tensor, step_size: float) -> torch.Tensor:
    """Write the kept samples of the leading rays that fit into ``out`` (a :class:`~backend.step.StepInputs` with S
    sample rows and R_cap + 1 ray rows; its ``rand_pts`` and ``cos_anneal`` are left alone).

    Args:
        rays: this batch's R rays; ray_indices: (M,) int64 and pts: (M, 3) the marched samples; first: (R,) int64
            each ray's first marched sample; kept: (R,) int32 its leading samples to train on.

    Returns:
        (3,) int64 on the device: samples and rays that fit, and the samples kept before the capacity cut.
    """
    S, R1 = out.pts.shape[0], out.ray_dirs.shape[0]
    R, M = first.shape[0], ray_indices.shape[0]
    kends = torch.cumsum(kept, 0, dtype=torch.long)
    fits = kends <= S
    n_rays = fits.sum()
    stats = torch.stack([torch.where(fits, kends, 0).amax() if R else n_rays, n_rays,
                         kends[-1] if R else n_rays])
    has_mask = out.mask is not None and rays.mask is not None
    rows = max(M, S, R1)
    _pack_kernel[(triton.cdiv(rows, ROWS),)](
        ray_indices.contiguous(), pts.contiguous(), first.contiguous(), kept.contiguous(), kends, stats, rays.dirs,
        rays.gt, rays.bg if has_mask else rays.gt,
        rays.mask if has_mask else rays.start, out.pts, out.dirs, out.deltas, out.ray_indices, out.sample_valid,
        out.ray_dirs, out.gt, out.bg if has_mask else out.gt, out.mask if has_mask else out.deltas, out.ray_valid,
        out.inv_n_rays, M, S, R, R1 - 1, float(step_size), HAS_MASK=has_mask, BLOCK=ROWS)
    return stats
