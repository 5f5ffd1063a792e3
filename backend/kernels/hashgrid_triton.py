"""Triton kernels for the multi-resolution hash-grid encoding, with the derivatives the eikonal loss needs.

Same function as :class:`backend.field.HashGridEncoding` (the reference and the oracle in tests): same level
resolutions, dense-vs-hashed choice, row layout, hash, clamp of ``x01`` to [0, 1] (and its gradient: passed on
[0, 1], zero outside), last cell closed on its far side, and ``active_levels`` masking. Derivatives are with
respect to ``x01`` (the mapping ``x01 = (x + 1) / 2`` lives in ``NeuSField.geometry``).

Two features per level (F = 2, every preset's setting; other F go through the reference). One program per block
of ``BLOCK`` points loops over the active levels: the position is loaded once, each point lives in one thread, a
corner's two features are one 8-byte load (the table read as int64), an output pair one 8-byte store.

Kernels (N points, L levels, K = 2 L outputs, ``w_c`` the trilinear weight of corner c, ``a_c = u . dw_c/dx``):

- ``_fwd_kernel``: ``enc[n, k] = sum_c w_c T[row_c]``; optionally the Jacobian ``J = d enc / d x01``, stored
  level-major ((L, 3, N) pairs: coalesced) so that later passes need no table reads; without the Jacobian, two
  x-neighbour corners whose rows form an aligned pair come in one 16-byte load;
- ``_jac_t_kernel``: ``grad_x = J^T g``; ``_jac_u_kernel``: ``dL/dg = J u`` (the second-order term to the MLP);
- ``_bwd_kernel``: ``grad_table[row_c] += g w_c`` (+ ``g2 a_c``: the eikonal term, fused, see below) with
  float32 atomics (one 8-byte vector reduction per corner on CUDA, one 16-byte reduction for two x-neighbour
  corners whose rows form an aligned pair); ``grad_x = sum g T dw/dx`` (gather mode);
- ``_bwd2_kernel``: ``dL/dT[row_c] += g a_c`` and/or ``dL/dg = sum_c T a_c`` (gather mode).

Autograd: :class:`HashGridFunction` (forward) whose backward is itself differentiable through
:class:`HashGridBackwardFunction` when the graph is kept (``create_graph=True``). In the eikonal step's final
backward both nodes add to the table gradient; when the engine will still run the forward's node in the same pass,
the backward node defers its table term to it, and one atomic pass adds both (guarded by the engine's graph-task
id; ``NEUSBLEND_HASHGRID_FUSE=0`` turns it off). Not computed (None, i.e. zero): the derivative of the input
gradient with respect to the positions themselves (mixed second derivatives of the trilinear weights); positions
are not learned, so training needs none of it.

Development: the kernels also run in Triton's CPU interpreter (``TRITON_INTERPRET=1`` set before triton is
imported) on CPU tensors; that is how the CPU tests run them (the vector reductions and paired loads, inline PTX,
are CUDA-only: the interpreter makes the same choices with scalar atomics and plain loads).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from .. import debug

_INTERPRET = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
# Points per program and warps per program (measured on the H100: see docs/KERNELS.md); the interpreter's cost is
# per program, so it takes bigger blocks.
BLOCK = debug.number("NEUSBLEND_HASHGRID_BLOCK")
NUM_WARPS = debug.number("NEUSBLEND_HASHGRID_WARPS")
# One 8-byte vector reduction (red.global.add.v2.f32, sm_90) per corner instead of two scalar atomics.
VEC_RED = not _INTERPRET and debug.on("NEUSBLEND_HASHGRID_VECRED")
# The table gradient's x-neighbour corners in one 16-byte reduction where their rows form an aligned pair
# (_red_add_corners); NEUSBLEND_HASHGRID_PAIRS=0 turns it off.
PAIR_RED = debug.on("NEUSBLEND_HASHGRID_PAIRS")
# The forward's x-neighbour corners in one 16-byte load where their rows pair up (_load_corners), when it writes
# no Jacobian (with it, the paired loads made the forward slower: docs/KERNELS.md).
PAIR_LOAD = debug.on("NEUSBLEND_HASHGRID_PAIR_LOADS")
# Levels per program of the forward and table-gradient kernels: the grid's second axis runs over groups of levels.
# The first axis (point blocks) varies fastest, so the GPU schedules one group's programs before the next group's,
# and the programs in flight at a time touch only a few levels' rows of the table and its gradient (a smaller
# random-access footprint in the L2) instead of all of them. Measured: docs/KERNELS.md, "Level groups".
LEVEL_GROUP = debug.number("NEUSBLEND_HASHGRID_GROUP")
# Points per program of the streaming Jacobian kernels (measured: see docs/KERNELS.md).
JAC_BLOCK = 256 if _INTERPRET else 128
# The compiler contracts x * res - floor(x * res) into one fma, which changes the cell fraction by up to an ulp of
# the position (1e-4 of a cell at res 2048): the position is rounded first, as in the reference (mul.rn is never
# contracted). The interpreter does not contract.
_ROUNDED_MUL: tl.constexpr = tl.constexpr(not _INTERPRET)


def interpreting() -> bool:
    """True when Triton runs kernels in its CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def runs_kernels(t: torch.Tensor) -> bool:
    """Whether the kernels can run on ``t``'s device: CUDA, or the CPU in Triton's interpreter."""
    return t.is_cuda or (interpreting() and t.device.type == "cpu")


# ---------------------------------------------------------------------------------------------------- kernels


@triton.jit
def _load_x(x_ptr, n, mask):
    """Clamped position and per-axis 'inside' masks (the reference's clamp passes gradient on [0, 1])."""
    x = tl.load(x_ptr + n * 3 + 0, mask=mask, other=0.0)
    y = tl.load(x_ptr + n * 3 + 1, mask=mask, other=0.0)
    z = tl.load(x_ptr + n * 3 + 2, mask=mask, other=0.0)
    ix = ((x >= 0.0) & (x <= 1.0)).to(tl.float32)
    iy = ((y >= 0.0) & (y <= 1.0)).to(tl.float32)
    iz = ((z >= 0.0) & (z <= 1.0)).to(tl.float32)
    x = tl.minimum(tl.maximum(x, 0.0), 1.0)
    y = tl.minimum(tl.maximum(y, 0.0), 1.0)
    z = tl.minimum(tl.maximum(z, 0.0), 1.0)
    return x, y, z, ix, iy, iz


@triton.jit
def _mul_rn(a, b, ROUNDED: tl.constexpr):
    """a * b rounded to float32 (never fused into a later add)."""
    if ROUNDED:
        return tl.inline_asm_elementwise(asm="mul.rn.f32 $0, $1, $2;", constraints="=r,r,r", args=[a, b],
                                         dtype=tl.float32, is_pure=True, pack=1)
    else:
        return a * b


@triton.jit
def _level(x, y, z, res_ptr, r1_ptr, size_ptr, off_ptr, dense_ptr, lvl):
    """Per-level constants, cell (int32) and fractions of the clamped position, as the reference computes them.

    Returns res, r1, size, offset, dense flag, the fractions (fx, fy, fz) and the cell (ix, iy, iz).
    """
    res = tl.load(res_ptr + lvl)
    r1 = tl.load(r1_ptr + lvl)
    size = tl.load(size_ptr + lvl)
    off = tl.load(off_ptr + lvl)
    dense = tl.load(dense_ptr + lvl)
    px = _mul_rn(x, res, _ROUNDED_MUL)
    py = _mul_rn(y, res, _ROUNDED_MUL)
    pz = _mul_rn(z, res, _ROUNDED_MUL)
    top = res - 1.0  # the last cell is closed on its far side: x01 = 1 lies in cell res - 1 with fraction 1
    cx = tl.minimum(tl.floor(px), top)
    cy = tl.minimum(tl.floor(py), top)
    cz = tl.minimum(tl.floor(pz), top)
    fx = px - cx
    fy = py - cy
    fz = pz - cz
    return res, r1, size, off, dense, fx, fy, fz, cx.to(tl.int32), cy.to(tl.int32), cz.to(tl.int32)


@triton.jit
def _row(ix, iy, iz, bx: tl.constexpr, by: tl.constexpr, bz: tl.constexpr, r1, size, off, dense):
    """Table row of corner (ix + bx, iy + by, iz + bz) of a level, exactly as the reference computes it.

    Dense levels: ``x + y r1 + z r1^2`` (corners lie in [0, res]^3, so the index is under ``r1^3 <= size``).
    Hashed levels (power-of-two size): the XOR hash with the primes (1, 2654435761, 805459861) in uint32
    wrap-around arithmetic, masked by ``size - 1``: the low bits equal those of the reference's int64 products.
    """
    cx = ix + bx
    cy = iy + by
    cz = iz + bz
    d = cx + cy * r1 + cz * (r1 * r1)
    h = cx.to(tl.uint32) ^ (cy.to(tl.uint32) * 2654435761) ^ (cz.to(tl.uint32) * 805459861)
    h = (h & (size - 1).to(tl.uint32)).to(tl.int32)
    return tl.where(dense != 0, d, h) + off


@triton.jit
def _weights(fx, fy, fz, bx: tl.constexpr, by: tl.constexpr, bz: tl.constexpr):
    """Trilinear weight of a corner and its partial derivatives w.r.t. the fractions (times res: w.r.t. x01)."""
    if bx:
        wx = fx
        sx = 1.0
    else:
        wx = 1.0 - fx
        sx = -1.0
    if by:
        wy = fy
        sy = 1.0
    else:
        wy = 1.0 - fy
        sy = -1.0
    if bz:
        wz = fz
        sz = 1.0
    else:
        wz = 1.0 - fz
        sz = -1.0
    wzy = wz * wy  # the reference's order: (wz * wy) * wx
    return wzy * wx, wzy * sx, wz * sy * wx, sz * wy * wx


@triton.jit
def _unpack(v):
    """int64 holding two float32 (little-endian: feature 0 in the low half) -> (f0, f1)."""
    lo = v.to(tl.int32).to(tl.float32, bitcast=True)
    hi = (v >> 32).to(tl.int32).to(tl.float32, bitcast=True)
    return lo, hi


@triton.jit
def _pack(a, b):
    """Two float32 -> one int64 (a in the low half), for one 8-byte store."""
    lo = a.to(tl.int32, bitcast=True).to(tl.int64) & 0xFFFFFFFF
    hi = b.to(tl.int32, bitcast=True).to(tl.int64) << 32
    return hi | lo


@triton.jit
def _red_add2(ptr, a, b, mask, VEC: tl.constexpr):
    """``ptr[0] += a; ptr[1] += b`` atomically (ptr: float32, 8-byte aligned), where ``mask``."""
    if VEC:
        tl.inline_asm_elementwise(
            asm="{ .reg .pred p; setp.ne.s32 p, $4, 0; @p red.global.add.v2.f32 [$1], {$2, $3}; mov.u32 $0, 0; }",
            constraints="=r,l,r,r,r", args=[ptr.to(tl.int64), a, b, mask.to(tl.int32)], dtype=tl.int32,
            is_pure=False, pack=1)
    else:
        tl.atomic_add(ptr, a, mask=mask, sem="relaxed")
        tl.atomic_add(ptr + 1, b, mask=mask, sem="relaxed")


@triton.jit
def _row_pair(ptr, r0, r1, ROW: tl.constexpr):
    """Whether rows ``r0`` and ``r1`` form an aligned pair (``r0 ^ r1 == 1``), and the addresses of the pair's low
    row, of ``r0`` and of ``r1`` (``ROW`` elements of ``ptr`` a row)."""
    return ((r0 ^ r1) == 1, ptr + tl.minimum(r0, r1).to(tl.int64) * ROW, ptr + r0.to(tl.int64) * ROW,
            ptr + r1.to(tl.int64) * ROW)


@triton.jit
def _red_add_corners(gt_ptr, r0, r1, a0, a1, b0, b1, mask, VEC: tl.constexpr):
    """``gt[r0] += (a0, a1); gt[r1] += (b0, b1)`` atomically (gt: rows of two float32, 16-byte aligned): one 16-byte
    reduction where the two rows form an aligned pair (``r0 ^ r1 == 1``), two 8-byte ones elsewhere.

    The corners of a cell that differ in x alone land in such a pair for about half of the cells: in hashed levels
    the hash's x prime is 1, so an even x and x + 1 give rows ``h`` and ``h ^ 1``; in dense levels the rows are
    ``d`` and ``d + 1``, a pair when ``d`` is even (level offsets are multiples of 8). Fewer reductions reach the
    L2, whose reduction rate bounds the table pass (docs/KERNELS.md)."""
    pair, plo, p0, p1 = _row_pair(gt_ptr, r0, r1, 2)
    first = r0 < r1
    v0 = tl.where(first, a0, b0)
    v1 = tl.where(first, a1, b1)
    v2 = tl.where(first, b0, a0)
    v3 = tl.where(first, b1, a1)
    if VEC:
        tl.inline_asm_elementwise(
            asm="{ .reg .pred m, q, mq, mn; setp.ne.s32 m, $12, 0; setp.ne.s32 q, $13, 0; and.pred mq, m, q; "
                "not.pred q, q; and.pred mn, m, q; @mq red.global.add.v4.f32 [$1], {$4, $5, $6, $7}; "
                "@mn red.global.add.v2.f32 [$2], {$8, $9}; @mn red.global.add.v2.f32 [$3], {$10, $11}; "
                "mov.u32 $0, 0; }",
            constraints="=r,l,l,l,r,r,r,r,r,r,r,r,r,r",
            args=[plo.to(tl.int64), p0.to(tl.int64), p1.to(tl.int64), v0, v1, v2, v3, a0, a1, b0, b1,
                  mask.to(tl.int32), pair.to(tl.int32)], dtype=tl.int32, is_pure=False, pack=1)
    else:
        m4 = mask & pair
        m2 = mask & (pair == 0)
        tl.atomic_add(plo, v0, mask=m4, sem="relaxed")
        tl.atomic_add(plo + 1, v1, mask=m4, sem="relaxed")
        tl.atomic_add(plo + 2, v2, mask=m4, sem="relaxed")
        tl.atomic_add(plo + 3, v3, mask=m4, sem="relaxed")
        tl.atomic_add(p0, a0, mask=m2, sem="relaxed")
        tl.atomic_add(p0 + 1, a1, mask=m2, sem="relaxed")
        tl.atomic_add(p1, b0, mask=m2, sem="relaxed")
        tl.atomic_add(p1 + 1, b1, mask=m2, sem="relaxed")


@triton.jit
def _load_corners(t_ptr, r0, r1, mask, VEC: tl.constexpr):
    """Feature pairs of rows ``r0`` and ``r1`` of the table (t_ptr: int64 pairs, 16-byte aligned): one 16-byte load
    where the rows form an aligned pair (see :func:`_red_add_corners`), two 8-byte loads elsewhere; zero where not
    ``mask``. Returns (t0[r0], t1[r0], t0[r1], t1[r1])."""
    pair, plo, p0, p1 = _row_pair(t_ptr, r0, r1, 1)
    if VEC:
        a0, a1, b0, b1 = tl.inline_asm_elementwise(
            asm="{ .reg .pred m, q, mq, mn; setp.ne.s32 m, $7, 0; setp.ne.s32 q, $8, 0; and.pred mq, m, q; "
                "not.pred q, q; and.pred mn, m, q; mov.b32 $0, 0; mov.b32 $1, 0; mov.b32 $2, 0; mov.b32 $3, 0; "
                "@mq ld.global.v4.b32 {$0, $1, $2, $3}, [$4]; @mn ld.global.v2.b32 {$0, $1}, [$5]; "
                "@mn ld.global.v2.b32 {$2, $3}, [$6]; }",
            constraints="=r,=r,=r,=r,l,l,l,r,r",
            args=[plo.to(tl.int64), p0.to(tl.int64), p1.to(tl.int64), mask.to(tl.int32), pair.to(tl.int32)],
            dtype=(tl.float32, tl.float32, tl.float32, tl.float32), is_pure=True, pack=1)
    else:  # the same selection with plain loads (the interpreter)
        a0, a1 = _unpack(tl.load(tl.where(pair, plo, p0), mask=mask, other=0))
        b0, b1 = _unpack(tl.load(tl.where(pair, plo + 1, p1), mask=mask, other=0))
    swap = pair & (r0 > r1)  # the pair's low row is r1's
    return tl.where(swap, b0, a0), tl.where(swap, b1, a1), tl.where(swap, a0, b0), tl.where(swap, a1, b1)


@triton.jit(do_not_specialize=["N", "L", "n_active"])
def _fwd_kernel(x_ptr, t_ptr, out_ptr, jac_ptr, res_ptr, r1_ptr, size_ptr, off_ptr, dense_ptr, N, L, n_active,
                BLOCK: tl.constexpr, WITH_JAC: tl.constexpr, GROUP: tl.constexpr, PAIRS: tl.constexpr = False,
                VEC: tl.constexpr = False):
    """t_ptr: (T,) int64 (feature pairs); out_ptr: (N, L) int64; jac_ptr: (n_active, 3, N) int64. Program
    (i, k) does levels [k GROUP, (k + 1) GROUP) of points [i BLOCK, (i + 1) BLOCK). ``PAIRS``: a cell's
    x-neighbour corners are loaded together (:func:`_load_corners`; 16-byte loads with ``VEC``), without the
    Jacobian only (with it the paired loads were slower: docs/KERNELS.md)."""
    tl.static_assert(not (PAIRS and WITH_JAC), "paired loads are for the forward without its Jacobian")
    n = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = n < N
    lo = tl.program_id(1) * GROUP
    x, y, z, inx, iny, inz = _load_x(x_ptr, n, mask)
    for lvl in range(lo, tl.minimum(lo + GROUP, n_active)):
        res, r1, size, off, dense, fx, fy, fz, ix, iy, iz = _level(x, y, z, res_ptr, r1_ptr, size_ptr, off_ptr,
                                                                   dense_ptr, lvl)
        a0 = tl.zeros((BLOCK,), dtype=tl.float32)
        a1 = tl.zeros((BLOCK,), dtype=tl.float32)
        jx0 = tl.zeros((BLOCK,), dtype=tl.float32)
        jx1 = tl.zeros((BLOCK,), dtype=tl.float32)
        jy0 = tl.zeros((BLOCK,), dtype=tl.float32)
        jy1 = tl.zeros((BLOCK,), dtype=tl.float32)
        jz0 = tl.zeros((BLOCK,), dtype=tl.float32)
        jz1 = tl.zeros((BLOCK,), dtype=tl.float32)
        for c in tl.static_range(4 if PAIRS else 0):  # corners (0, by, bz) and (1, by, bz) together
            r0 = _row(ix, iy, iz, 0, c & 1, c >> 1, r1, size, off, dense)
            r1_ = _row(ix, iy, iz, 1, c & 1, c >> 1, r1, size, off, dense)
            t0, t1, s0, s1 = _load_corners(t_ptr, r0, r1_, mask, VEC)
            w, _, _, _ = _weights(fx, fy, fz, 0, c & 1, c >> 1)
            v, _, _, _ = _weights(fx, fy, fz, 1, c & 1, c >> 1)
            a0 += t0 * w  # in the unpaired loop's order of corners (same rounding)
            a1 += t1 * w
            a0 += s0 * v
            a1 += s1 * v
        for c in tl.static_range(8 if not PAIRS else 0):
            row = _row(ix, iy, iz, c & 1, (c >> 1) & 1, (c >> 2) & 1, r1, size, off, dense)
            w, dwx, dwy, dwz = _weights(fx, fy, fz, c & 1, (c >> 1) & 1, (c >> 2) & 1)
            t0, t1 = _unpack(tl.load(t_ptr + row, mask=mask, other=0))
            a0 += t0 * w
            a1 += t1 * w
            if WITH_JAC:
                jx0 += t0 * dwx
                jx1 += t1 * dwx
                jy0 += t0 * dwy
                jy1 += t1 * dwy
                jz0 += t0 * dwz
                jz1 += t1 * dwz
        tl.store(out_ptr + n * L + lvl, _pack(a0, a1), mask=mask)
        if WITH_JAC:
            sx = res * inx
            sy = res * iny
            sz = res * inz
            jrow = jac_ptr + (lvl * 3) * N.to(tl.int64) + n
            tl.store(jrow, _pack(jx0 * sx, jx1 * sx), mask=mask)
            tl.store(jrow + N, _pack(jy0 * sy, jy1 * sy), mask=mask)
            tl.store(jrow + 2 * N, _pack(jz0 * sz, jz1 * sz), mask=mask)
    for lvl in range(tl.maximum(lo, n_active), tl.minimum(lo + GROUP, L)):
        tl.store(out_ptr + n * L + lvl, tl.zeros((BLOCK,), dtype=tl.int64), mask=mask)


@triton.jit(do_not_specialize=["N", "L", "n_active"])
def _jac_t_kernel(jac_ptr, g_ptr, gx_ptr, N, L, n_active, BLOCK: tl.constexpr):
    """grad_x[n, d] = sum_l J[l, d, n] . g[n, l] (J: (n_active, 3, N) pairs, g: (N, L) pairs)."""
    n = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = n < N
    sx = tl.zeros((BLOCK,), dtype=tl.float32)
    sy = tl.zeros((BLOCK,), dtype=tl.float32)
    sz = tl.zeros((BLOCK,), dtype=tl.float32)
    for lvl in range(0, n_active):
        g0, g1 = _unpack(tl.load(g_ptr + n * L + lvl, mask=mask, other=0))
        jrow = jac_ptr + (lvl * 3) * N.to(tl.int64) + n
        j0, j1 = _unpack(tl.load(jrow, mask=mask, other=0))
        sx += j0 * g0 + j1 * g1
        j0, j1 = _unpack(tl.load(jrow + N, mask=mask, other=0))
        sy += j0 * g0 + j1 * g1
        j0, j1 = _unpack(tl.load(jrow + 2 * N, mask=mask, other=0))
        sz += j0 * g0 + j1 * g1
    tl.store(gx_ptr + n * 3 + 0, sx, mask=mask)
    tl.store(gx_ptr + n * 3 + 1, sy, mask=mask)
    tl.store(gx_ptr + n * 3 + 2, sz, mask=mask)


@triton.jit(do_not_specialize=["N", "L", "n_active"])
def _jac_u_kernel(jac_ptr, u_ptr, dg_ptr, N, L, n_active, BLOCK: tl.constexpr, LEVEL_MAJOR: tl.constexpr):
    """dg[n, l] = sum_d J[l, d, n] u[n, d] (pairs; zero for inactive levels); ``LEVEL_MAJOR``: dg[l, n] instead,
    active levels only (coalesced stores)."""
    n = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = n < N
    ux = tl.load(u_ptr + n * 3 + 0, mask=mask, other=0.0)
    uy = tl.load(u_ptr + n * 3 + 1, mask=mask, other=0.0)
    uz = tl.load(u_ptr + n * 3 + 2, mask=mask, other=0.0)
    for lvl in range(0, n_active):
        jrow = jac_ptr + (lvl * 3) * N.to(tl.int64) + n
        x0, x1 = _unpack(tl.load(jrow, mask=mask, other=0))
        y0, y1 = _unpack(tl.load(jrow + N, mask=mask, other=0))
        z0, z1 = _unpack(tl.load(jrow + 2 * N, mask=mask, other=0))
        v = _pack(x0 * ux + y0 * uy + z0 * uz, x1 * ux + y1 * uy + z1 * uz)
        if LEVEL_MAJOR:
            tl.store(dg_ptr + lvl * N.to(tl.int64) + n, v, mask=mask)
        else:
            tl.store(dg_ptr + n * L + lvl, v, mask=mask)
    if not LEVEL_MAJOR:
        for lvl in range(n_active, L):
            tl.store(dg_ptr + n * L + lvl, tl.zeros((BLOCK,), dtype=tl.int64), mask=mask)


@triton.jit(do_not_specialize=["N", "L", "n_active"])
def _bwd_kernel(g_ptr, x_ptr, t_ptr, gx_ptr, gt_ptr, u_ptr, g2_ptr, res_ptr, r1_ptr, size_ptr, off_ptr, dense_ptr,
                N, L, n_active, BLOCK: tl.constexpr, NEED_X: tl.constexpr, NEED_T: tl.constexpr,
                WITH_U: tl.constexpr, VEC: tl.constexpr, GROUP: tl.constexpr, PAIRS: tl.constexpr = False):
    """g, g2: (N, L) pairs; gt: (2 T,) float32 accumulated; WITH_U adds the eikonal term g2 a_c (u: (N, 3)).
    Program (i, k) does levels [k GROUP, (k + 1) GROUP) (NEED_X: all levels in one group). ``PAIRS`` (table only):
    a cell's x-neighbour corners are added together (:func:`_red_add_corners`)."""
    n = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = n < N
    lo = tl.program_id(1) * GROUP
    x, y, z, inx, iny, inz = _load_x(x_ptr, n, mask)
    if WITH_U:
        ux = tl.load(u_ptr + n * 3 + 0, mask=mask, other=0.0) * inx
        uy = tl.load(u_ptr + n * 3 + 1, mask=mask, other=0.0) * iny
        uz = tl.load(u_ptr + n * 3 + 2, mask=mask, other=0.0) * inz
    gx = tl.zeros((BLOCK,), dtype=tl.float32)
    gy = tl.zeros((BLOCK,), dtype=tl.float32)
    gz = tl.zeros((BLOCK,), dtype=tl.float32)
    for lvl in range(lo, tl.minimum(lo + GROUP, n_active)):
        res, r1, size, off, dense, fx, fy, fz, ix, iy, iz = _level(x, y, z, res_ptr, r1_ptr, size_ptr, off_ptr,
                                                                   dense_ptr, lvl)
        g0, g1 = _unpack(tl.load(g_ptr + n * L + lvl, mask=mask, other=0))
        if WITH_U:
            h0, h1 = _unpack(tl.load(g2_ptr + n * L + lvl, mask=mask, other=0))
            vx = ux * res
            vy = uy * res
            vz = uz * res
        lx = tl.zeros((BLOCK,), dtype=tl.float32)
        ly = tl.zeros((BLOCK,), dtype=tl.float32)
        lz = tl.zeros((BLOCK,), dtype=tl.float32)
        for c in tl.static_range(8 if not PAIRS else 0):
            row = _row(ix, iy, iz, c & 1, (c >> 1) & 1, (c >> 2) & 1, r1, size, off, dense)
            w, dwx, dwy, dwz = _weights(fx, fy, fz, c & 1, (c >> 1) & 1, (c >> 2) & 1)
            if NEED_T:
                if WITH_U:
                    a = vx * dwx + vy * dwy + vz * dwz
                    _red_add2(gt_ptr + row.to(tl.int64) * 2, g0 * w + h0 * a, g1 * w + h1 * a, mask, VEC)
                else:
                    _red_add2(gt_ptr + row.to(tl.int64) * 2, g0 * w, g1 * w, mask, VEC)
            if NEED_X:
                t0, t1 = _unpack(tl.load(t_ptr + row, mask=mask, other=0))
                s = g0 * t0 + g1 * t1
                lx += s * dwx
                ly += s * dwy
                lz += s * dwz
        for c in tl.static_range(4 if PAIRS else 0):  # corners (0, by, bz) and (1, by, bz) together
            r0 = _row(ix, iy, iz, 0, c & 1, c >> 1, r1, size, off, dense)
            r1_ = _row(ix, iy, iz, 1, c & 1, c >> 1, r1, size, off, dense)
            w0, dx0, dy0, dz0 = _weights(fx, fy, fz, 0, c & 1, c >> 1)
            w1, dx1, dy1, dz1 = _weights(fx, fy, fz, 1, c & 1, c >> 1)
            if WITH_U:
                a = vx * dx0 + vy * dy0 + vz * dz0
                b = vx * dx1 + vy * dy1 + vz * dz1
                _red_add_corners(gt_ptr, r0, r1_, g0 * w0 + h0 * a, g1 * w0 + h1 * a, g0 * w1 + h0 * b,
                                 g1 * w1 + h1 * b, mask, VEC)
            else:
                _red_add_corners(gt_ptr, r0, r1_, g0 * w0, g1 * w0, g0 * w1, g1 * w1, mask, VEC)
        if NEED_X:
            gx += lx * res
            gy += ly * res
            gz += lz * res
    if NEED_X:
        tl.store(gx_ptr + n * 3 + 0, gx * inx, mask=mask)
        tl.store(gx_ptr + n * 3 + 1, gy * iny, mask=mask)
        tl.store(gx_ptr + n * 3 + 2, gz * inz, mask=mask)


@triton.jit(do_not_specialize=["N", "L", "n_active"])
def _bwd2_kernel(u_ptr, g_ptr, x_ptr, t_ptr, dg_ptr, dt_ptr, res_ptr, r1_ptr, size_ptr, off_ptr, dense_ptr, N, L,
                 n_active, BLOCK: tl.constexpr, NEED_G: tl.constexpr, NEED_T: tl.constexpr, VEC: tl.constexpr):
    """u: (N, 3); g, dg: (N, L) pairs; dt: (2 T,) float32 accumulated."""
    n = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = n < N
    x, y, z, inx, iny, inz = _load_x(x_ptr, n, mask)
    ux = tl.load(u_ptr + n * 3 + 0, mask=mask, other=0.0) * inx
    uy = tl.load(u_ptr + n * 3 + 1, mask=mask, other=0.0) * iny
    uz = tl.load(u_ptr + n * 3 + 2, mask=mask, other=0.0) * inz
    for lvl in range(0, n_active):
        res, r1, size, off, dense, fx, fy, fz, ix, iy, iz = _level(x, y, z, res_ptr, r1_ptr, size_ptr, off_ptr,
                                                                   dense_ptr, lvl)
        vx = ux * res
        vy = uy * res
        vz = uz * res
        if NEED_T:
            g0, g1 = _unpack(tl.load(g_ptr + n * L + lvl, mask=mask, other=0))
        a0 = tl.zeros((BLOCK,), dtype=tl.float32)
        a1 = tl.zeros((BLOCK,), dtype=tl.float32)
        for c in tl.static_range(8):
            row = _row(ix, iy, iz, c & 1, (c >> 1) & 1, (c >> 2) & 1, r1, size, off, dense)
            _, dwx, dwy, dwz = _weights(fx, fy, fz, c & 1, (c >> 1) & 1, (c >> 2) & 1)
            a = vx * dwx + vy * dwy + vz * dwz
            if NEED_T:
                _red_add2(dt_ptr + row.to(tl.int64) * 2, g0 * a, g1 * a, mask, VEC)
            if NEED_G:
                t0, t1 = _unpack(tl.load(t_ptr + row, mask=mask, other=0))
                a0 += t0 * a
                a1 += t1 * a
        if NEED_G:
            tl.store(dg_ptr + n * L + lvl, _pack(a0, a1), mask=mask)
    if NEED_G:
        for lvl in range(n_active, L):
            tl.store(dg_ptr + n * L + lvl, tl.zeros((BLOCK,), dtype=tl.int64), mask=mask)


# ---------------------------------------------------------------------------------------------------- launchers


@dataclass(frozen=True)
class LevelMeta:
    """Per-level constants of an encoding, on one device (all (L,) tensors).

    Attributes:
        res: float32 resolutions; r1: int32 ``res + 1``; size: int32 rows per level; offset: int32 first row;
        dense: int32 1 where the level is indexed densely; n_levels: L.
    """

    res: torch.Tensor
    r1: torch.Tensor
    size: torch.Tensor
    offset: torch.Tensor
    dense: torch.Tensor
    n_levels: int

    @staticmethod
    def from_encoding(enc: torch.nn.Module, device: torch.device) -> LevelMeta:
        """Read the level layout off a :class:`backend.field.HashGridEncoding` (raises ValueError if unsupported)."""
        if int(enc.cfg.n_features) != 2:
            raise ValueError(f"the kernels take 2 features per level, not {enc.cfg.n_features}")
        hashed_sizes = [int(s) for s, d in zip(enc.level_sizes.tolist(), enc.dense_levels.tolist()) if not d]
        if any(s & (s - 1) for s in hashed_sizes):
            raise ValueError(f"hashed levels need power-of-two sizes, got {hashed_sizes}")
        if int(enc.embeddings.shape[0]) >= 2**31:
            raise ValueError("table too large for 32-bit rows")
        return LevelMeta(res=enc.resolutions.to(device=device, dtype=torch.float32),
                         r1=(enc.resolutions + 1).to(device=device, dtype=torch.int32),
                         size=enc.level_sizes.to(device=device, dtype=torch.int32),
                         offset=enc.level_offsets.to(device=device, dtype=torch.int32),
                         dense=enc.dense_levels.to(device=device, dtype=torch.int32), n_levels=int(enc.cfg.n_levels))

    def args(self) -> tuple[torch.Tensor, ...]:
        return self.res, self.r1, self.size, self.offset, self.dense


def _grid(n: int, block: int | None = None) -> tuple[int]:
    return (max(1, triton.cdiv(n, block or BLOCK)),)


def _level_grid(n: int, n_levels: int, group: int) -> tuple[int, int]:
    """Programs of the level-grouped kernels: point blocks (fast axis) x groups of ``group`` levels."""
    return (max(1, triton.cdiv(n, BLOCK)), max(1, triton.cdiv(n_levels, group)))


def _pairs(t: torch.Tensor) -> torch.Tensor:
    """A contiguous float32 (..., 2k) tensor seen as int64 pairs (one 8-byte load or store per pair)."""
    return t.view(torch.int64)


def _check(t: torch.Tensor, shape: tuple[int, ...], name: str) -> torch.Tensor:
    if t.dtype != torch.float32 or tuple(t.shape) != shape or not t.is_contiguous():
        raise ValueError(f"{name}: expected a contiguous float32 tensor of shape {shape}, got {t.dtype} "
                         f"{tuple(t.shape)}")
    return t


def encode(x01: torch.Tensor, table: torch.Tensor, meta: LevelMeta, n_active: int,
           out: torch.Tensor | None = None, jac: torch.Tensor | bool = False
           ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Forward kernel, optionally with the Jacobian of the encoding w.r.t. ``x01``.

    Args:
        x01: (N, 3) float32 contiguous positions (clamped to [0, 1] inside).
        table: (T_total, 2) float32 contiguous table.
        meta: level layout; n_active: levels that contribute (the others output zeros).
        out: optional (N, 2 L) float32 output buffer (every element is written).
        jac: False (none), True (allocate) or an (n_active, 3, N, 2) float32 buffer (every element written):
            ``jac[l, d, n, f] = d enc[n, 2 l + f] / d x01[n, d]``, zero along clamped coordinates. Level-major,
            so that its stores and loads are coalesced; inactive levels are left out (their Jacobian is zero).

    Returns:
        (N, 2 L) float32 encoding, and the Jacobian or None.
    """
    n = x01.shape[0]
    L = meta.n_levels
    _check(x01, (n, 3), "x01")
    _check(table, (table.shape[0], 2), "table")
    out = _check(out, (n, 2 * L), "out") if out is not None else torch.empty(n, 2 * L, device=x01.device)
    j = None
    if isinstance(jac, torch.Tensor):
        j = _check(jac, (n_active, 3, n, 2), "jac")
    elif jac:
        j = torch.empty(n_active, 3, n, 2, device=x01.device)
    if n:
        group = min(LEVEL_GROUP, L)
        _fwd_kernel[_level_grid(n, L, group)](x01, _pairs(table), _pairs(out), _pairs(out) if j is None or
                                              j.numel() == 0 else _pairs(j), *meta.args(), n, L, n_active,
                                              BLOCK=BLOCK, WITH_JAC=j is not None, GROUP=group,
                                              PAIRS=PAIR_LOAD and j is None and table.data_ptr() % 16 == 0,
                                              VEC=VEC_RED, num_warps=NUM_WARPS)
    return out, j


def jac_t_vec(jac: torch.Tensor, g: torch.Tensor, n_levels: int, out: torch.Tensor | None = None) -> torch.Tensor:
    """Jacobian (n_active, 3, N, 2), g (N, 2 L) -> (N, 3): the gradient w.r.t. ``x01`` from a saved Jacobian."""
    n_active, _, n, _ = jac.shape
    out = out if out is not None else torch.empty(n, 3, device=jac.device)
    if n:
        _jac_t_kernel[_grid(n, JAC_BLOCK)](_pairs(jac) if jac.numel() else out, _pairs(g), out, n, n_levels,
                                           n_active, BLOCK=JAC_BLOCK, num_warps=4)
    return out


def jac_vec(jac: torch.Tensor, u: torch.Tensor, n_levels: int, out: torch.Tensor | None = None,
            level_major: bool = False) -> torch.Tensor:
    """Jacobian (n_active, 3, N, 2), u (N, 3) -> (N, 2 L): ``d<u, J^T g>/dg``, the second-order term to the MLP;
    ``level_major``: (n_active, N, 2) instead (active levels only; the fused MLP backward reads it so)."""
    n_active, _, n, _ = jac.shape
    if out is None:
        out = torch.empty((n_active, n, 2) if level_major else (n, 2 * n_levels), device=jac.device)
    if n and out.numel():
        _jac_u_kernel[_grid(n, JAC_BLOCK)](_pairs(jac) if jac.numel() else u, u, _pairs(out), n, n_levels,
                                           n_active, BLOCK=JAC_BLOCK, LEVEL_MAJOR=level_major, num_warps=4)
    return out


def encode_backward(g: torch.Tensor, x01: torch.Tensor, table: torch.Tensor, meta: LevelMeta, n_active: int,
                    need_x: bool, need_table: bool, grad_x: torch.Tensor | None = None,
                    grad_table: torch.Tensor | None = None, u: torch.Tensor | None = None,
                    g2: torch.Tensor | None = None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """First-order backward kernel (plus, fused, the eikonal term of the table gradient).

    Args:
        g: (N, 2 L) float32 gradient of the loss w.r.t. the encoding.
        x01: (N, 3), table: (T_total, 2), meta, n_active: as in :func:`encode`.
        need_x: compute ``grad_x`` by gathering the table (the Jacobian path uses :func:`jac_t_vec` instead).
        need_table: compute the table gradient.
        grad_x: optional (N, 3) output buffer (every element written);
        grad_table: optional (T_total, 2) float32 buffer the table gradient is added to (default: zeros).
        u, g2: optional (N, 3) and (N, 2 L): also add the second-order table term of :func:`encode_backward2`
            (``g2 a_c``) in the same atomic pass.

    Returns:
        grad_x (N, 3) or None, grad_table (T_total, 2) float32 or None.
    """
    n = x01.shape[0]
    gx = gt = None
    if need_x:
        gx = grad_x if grad_x is not None else torch.empty(n, 3, device=x01.device)
    if need_table:
        gt = grad_table if grad_table is not None else torch.zeros(table.shape, device=table.device)
    with_u = need_table and u is not None
    if n and (need_x or need_table):
        group = meta.n_levels if need_x else min(LEVEL_GROUP, meta.n_levels)  # grad_x sums over all levels
        _bwd_kernel[_level_grid(n, n_active, group)](
            _pairs(g), x01, _pairs(table), gx if need_x else x01, gt if need_table else x01, u if with_u else x01,
            _pairs(g2) if with_u else _pairs(g), *meta.args(), n, meta.n_levels, n_active, BLOCK=BLOCK,
            NEED_X=need_x, NEED_T=need_table, WITH_U=with_u, VEC=VEC_RED, GROUP=group,
            PAIRS=need_table and not need_x and PAIR_RED and gt.data_ptr() % 16 == 0, num_warps=NUM_WARPS)
    elif need_x:
        gx.zero_()
    return gx, gt


def encode_backward2(u: torch.Tensor, g: torch.Tensor, x01: torch.Tensor, table: torch.Tensor, meta: LevelMeta,
                     n_active: int, need_g: bool, need_table: bool, grad_g: torch.Tensor | None = None,
                     grad_table: torch.Tensor | None = None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Second-order kernel: the gradient of ``<u, grad_x(g, table)>`` w.r.t. ``g`` and the table.

    Args:
        u: (N, 3) gradient of the loss w.r.t. the input gradient ``grad_x``.
        g: (N, 2 L) the encoding gradient that ``grad_x`` was computed from.
        x01, table, meta, n_active: as in :func:`encode`.
        need_g: compute d/dg by gathering the table (the Jacobian path uses :func:`jac_vec` instead).
        need_table: compute the table term.
        grad_g: optional (N, 2 L) output buffer (every element written);
        grad_table: optional (T_total, 2) float32 buffer the table gradient is added to (default: zeros).

    Returns:
        d/dg (N, 2 L) or None, d/d(table) (T_total, 2) float32 or None.
    """
    n = x01.shape[0]
    dg = dt = None
    if need_g:
        dg = grad_g if grad_g is not None else torch.empty(g.shape, device=g.device)
    if need_table:
        dt = grad_table if grad_table is not None else torch.zeros(table.shape, device=table.device)
    if n and (need_g or need_table):
        _bwd2_kernel[_grid(n)](u, _pairs(g), x01, _pairs(table), _pairs(dg) if need_g else _pairs(g),
                               dt if need_table else x01, *meta.args(), n, meta.n_levels, n_active, BLOCK=BLOCK,
                               NEED_G=need_g, NEED_T=need_table, VEC=VEC_RED, num_warps=NUM_WARPS)
    return dg, dt


# ---------------------------------------------------------------------------------------------------- autograd


def _engine_needs(ctx: torch.autograd.function.FunctionCtx, i: int) -> bool:
    """Whether the autograd engine will use the gradient of input ``i`` in this backward pass.

    ``needs_input_grad`` only says the input requires grad; ``torch.autograd.grad(sdf, x)`` (the eikonal pass)
    does not want the table's gradient, and skipping it saves a pass of atomics. Falls back to True.
    """
    if not ctx.needs_input_grad[i]:
        return False
    try:
        node = ctx.next_functions[i][0]
        return node is None or bool(torch._C._will_engine_execute_node(node))
    except Exception:  # noqa: BLE001 - private API: when in doubt, compute
        return True


def _task_id() -> int:
    try:
        return int(torch._C._current_graph_task_id())
    except Exception:  # noqa: BLE001 - private API
        return -1


def _c(t: torch.Tensor) -> torch.Tensor:
    t = t if t.dtype == torch.float32 else t.float()
    return t if t.is_contiguous() else t.contiguous()


def use_jacobian() -> bool:
    """Mode of the derivatives: save the encoding's Jacobian in the forward (``jac``, default: the derivatives
    after the forward read no table) or recompute from the table (``gather``). ``NEUSBLEND_HASHGRID_MODE``."""
    return debug.text("NEUSBLEND_HASHGRID_MODE") != "gather"


def fuse_table_terms() -> bool:
    """Whether the backward node may defer its table term to the forward node's atomic pass."""
    return debug.on("NEUSBLEND_HASHGRID_FUSE")


class HashGridFunction(torch.autograd.Function):
    """``enc = HashGridFunction.apply(x01, table, meta, n_active)``: (N, 3), (T_total, 2) -> (N, 2 L).

    Differentiable w.r.t. ``x01`` and ``table``, twice where the eikonal loss needs it (see the module docstring).
    In ``jac`` mode (see :func:`use_jacobian`) the forward also writes the Jacobian when ``x01`` requires grad, so
    that the gradient w.r.t. ``x01`` and the second-order term to the MLP need no table reads.
    """

    @staticmethod
    def forward(ctx, x01: torch.Tensor, table: torch.Tensor, meta: LevelMeta,  # noqa: ANN001
                n_active: int) -> torch.Tensor:
        x01, table = _c(x01), _c(table)
        out, jac = encode(x01, table, meta, n_active, jac=bool(ctx.needs_input_grad[0]) and use_jacobian())
        ctx.save_for_backward(x01, table, jac)
        ctx.meta, ctx.n_active = meta, n_active
        ctx.pending = None  # (task id, u, g): a table term deferred by the backward node (see module docstring)
        ctx.ran_in_task = None
        return out

    @staticmethod
    def backward(ctx, g: torch.Tensor):  # noqa: ANN001, ANN205
        x01, table, jac = ctx.saved_tensors
        task = _task_id()
        ctx.ran_in_task = task
        pending, ctx.pending = ctx.pending, None
        need_x, need_t = _engine_needs(ctx, 0), _engine_needs(ctx, 1)
        u = g2 = None
        if pending is not None and pending[0] == task and task != -1:
            _, u, g2 = pending
            need_t = True
        if not (need_x or need_t):
            return None, None, None, None
        g = _c(g)
        meta, n_active = ctx.meta, ctx.n_active
        if torch.is_grad_enabled():  # create_graph: the gradient itself must be differentiable
            if u is not None:  # the deferred term is not differentiable again: add it on the side
                _, extra = encode_backward2(u, g2, x01, table, meta, n_active, False, True)
                gx, gt = HashGridBackwardFunction.apply(g, x01, table, jac, ctx, need_x, need_t)
                gt = extra if gt is None else gt + extra
            else:
                gx, gt = HashGridBackwardFunction.apply(g, x01, table, jac, ctx, need_x, need_t)
        elif jac is not None:
            gx = jac_t_vec(jac, g, meta.n_levels) if need_x else None
            _, gt = encode_backward(g, x01, table, meta, n_active, False, need_t, u=u, g2=g2)
        else:
            gx, gt = encode_backward(g, x01, table, meta, n_active, need_x, need_t, u=u, g2=g2)
        return gx, gt, None, None


class HashGridBackwardFunction(torch.autograd.Function):
    """``(grad_x, grad_table) = HashGridBackwardFunction.apply(g, x01, table, jac, fwd_ctx, need_x, need_table)``.

    The first-order backward as a function of ``g`` (N, 2 L), ``x01`` (N, 3) and ``table`` (T_total, 2)
    (``jac``: the forward's Jacobian or None, a cache of a function of ``x01`` and ``table``; ``fwd_ctx``: the
    forward's node, for the level layout and the deferred table term); its own backward is the second-order pass.
    Derivatives computed: of ``grad_x`` w.r.t. ``g`` and ``table``; of ``grad_table`` w.r.t. ``g`` and ``x01``
    (the forward and first-order kernels with the incoming gradient as the table). Not computed (None): ``grad_x``
    w.r.t. ``x01`` (positions are not learned). Its backward is not differentiable again (no third order).
    """

    @staticmethod
    def forward(ctx, g: torch.Tensor, x01: torch.Tensor, table: torch.Tensor, jac: torch.Tensor | None,  # noqa: ANN001
                fwd_ctx: object, need_x: bool, need_t: bool) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(g, x01, table, jac)
        ctx.fwd = fwd_ctx
        meta, n_active = fwd_ctx.meta, fwd_ctx.n_active
        if jac is not None:
            _, gt = encode_backward(g, x01, table, meta, n_active, False, need_t)
            return (jac_t_vec(jac, g, meta.n_levels) if need_x else None), gt
        return encode_backward(g, x01, table, meta, n_active, need_x, need_t)

    @staticmethod
    def _can_defer(ctx) -> bool:  # noqa: ANN001
        """True when the forward's node will still run in this backward pass and add the table term for us."""
        fwd = ctx.fwd
        task = _task_id()
        if not fuse_table_terms() or task == -1 or fwd.ran_in_task == task or fwd.pending is not None:
            return False
        try:
            return bool(torch._C._will_engine_execute_node(fwd)) and _engine_needs(fwd, 1)
        except Exception:  # noqa: BLE001 - private API: do it here
            return False

    @staticmethod
    def backward(ctx, u: torch.Tensor | None, v: torch.Tensor | None):  # noqa: ANN001, ANN205
        g, x01, table, jac = ctx.saved_tensors
        meta, n_active = ctx.fwd.meta, ctx.fwd.n_active
        need_g, need_x, need_t = _engine_needs(ctx, 0), _engine_needs(ctx, 1), _engine_needs(ctx, 2)
        dg = dx = dt = None
        if u is not None and (need_g or need_t):
            u = _c(u)
            if need_t and HashGridBackwardFunction._can_defer(ctx):
                ctx.fwd.pending = (_task_id(), u, g)
                need_t = False
            if jac is not None:
                dg = jac_vec(jac, u, meta.n_levels) if need_g else None
                if need_t:
                    _, dt = encode_backward2(u, g, x01, table, meta, n_active, False, True)
            elif need_g or need_t:
                dg, dt = encode_backward2(u, g, x01, table, meta, n_active, need_g, need_t)
        if v is not None:  # grad_table was used: d/dg is the forward with v as the table, d/dx the first order
            v = _c(v)
            if need_g:
                ev, _ = encode(x01, v, meta, n_active)
                dg = ev if dg is None else dg + ev
            if need_x:
                dx, _ = encode_backward(g, x01, v, meta, n_active, True, False)
        return dg, dx, dt, None, None, None, None
