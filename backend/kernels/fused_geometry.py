"""The SDF network with its analytic input gradient as one autograd node (fast path of ``sdf_with_gradient``).

The reference computes the SDF's spatial gradient with ``torch.autograd.grad(..., create_graph=True)`` and the
eikonal loss then differentiates through that graph again (a double backward of every layer: about a hundred small
kernels and as many autograd nodes per call). :class:`GeometryFunction` computes the same three outputs, SDF head
``out`` (N, 1 + F) and ``grad`` (N, 3), with the gradient derived by hand in the forward, and its backward gives the
derivatives of a loss on both outputs w.r.t. the hash table and every SDF-MLP parameter in one pass, in the way
NeuS2 derives them for its fused MLP. The hash-grid terms go through the Triton kernels
(:mod:`.hashgrid_triton`): the forward writes the encoding's Jacobian, ``J^T g`` gives the gradient, ``J u`` the
second-order term to the MLP, and one atomic pass adds both table terms.

Notation (K hidden layers, ``act`` softplus with beta or ReLU, ``act'`` and ``act''`` its derivatives):

- forward: ``h0 = [x, enc((x + 1) / 2)]``, ``z_k = h_{k-1} W_k^T + b_k``, ``h_k = act(z_k)``, ``out = h_K W_o^T + b_o``;
- input gradient: ``g_K = W_o[0]``, ``gz_k = g_k * act'(z_k)``, ``g_{k-1} = gz_k W_k``;
  ``grad = g_0[:, :3] + J^T g_0[:, 3:] / 2``;
- backward, given ``A = dL/d out`` and ``U = dL/d grad``: ``V_0 = [U, J U / 2]`` (dL/dg_0); for k = 1..K:
  ``P_k = V_{k-1} W_k^T``, ``dW_k += gz_k^T V_{k-1}``, ``V_k = P_k * act'(z_k)``, ``Q_k = P_k * g_k * act''(z_k)``;
  ``dW_o[0] += sum_n V_K``; then the first-order pass ``dh_K = A W_o`` with ``Q_k`` added at ``z_k``:
  ``dz_k = dh_k * act'(z_k) + Q_k``, ``dW_k += dz_k^T h_{k-1}``, ``dh_{k-1} = dz_k W_k``; the table gets
  ``dh_0[:, 3:]`` through the trilinear weights and ``U / 2`` with ``g_0[:, 3:]`` through their derivatives.

Paths: one hidden layer (every preset) runs :class:`FusedMLPGeometryFunction`, the whole MLP in one Triton kernel
each way (``NEUSBLEND_FUSED_MLP=0``: :class:`OneLayerGeometryFunction`, cuBLAS products and one Triton activation pass
each way); more hidden layers run :class:`GeometryFunction` (PyTorch operations).

Not computed, as in the hash-grid kernels: derivatives w.r.t. the positions (they are not learned).
``NEUSBLEND_FUSED_GEOMETRY=0`` turns this off (the field then differentiates through autograd as the reference
does, with the hash-grid kernels underneath).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import triton
import triton.language as tl
from torch.nn import functional as F

from .. import debug
from .hashgrid_triton import _INTERPRET, LevelMeta, encode, encode_backward, jac_t_vec, jac_vec

if TYPE_CHECKING:
    from ..field import NeuSField

SOFTPLUS_BETA = 100.0


def enabled() -> bool:
    """Whether the fused geometry is on (``NEUSBLEND_FUSED_GEOMETRY``, default on)."""
    return debug.on("NEUSBLEND_FUSED_GEOMETRY")


def _act(z: torch.Tensor, relu: bool) -> torch.Tensor:
    return F.relu(z) if relu else F.softplus(z, beta=SOFTPLUS_BETA)


def _act_d1(z: torch.Tensor, relu: bool) -> torch.Tensor:
    """act'(z), same shape as z."""
    return (z > 0).to(z.dtype) if relu else torch.sigmoid(z * SOFTPLUS_BETA)


def _act_d2(z: torch.Tensor, relu: bool) -> torch.Tensor | None:
    """act''(z) (None for ReLU: zero almost everywhere)."""
    if relu:
        return None
    s = torch.sigmoid(z * SOFTPLUS_BETA)
    return (s - s * s) * SOFTPLUS_BETA


def _encode(x: torch.Tensor, table: torch.Tensor, meta: LevelMeta, n_active: int, jac: bool = True
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Contiguous x (N, 3), x01 = (x + 1) / 2, the encoding (N, E) and (``jac``) its Jacobian (Triton forward
    kernel)."""
    x = x.contiguous()
    x01 = ((x + 1.0) * 0.5).contiguous()
    enc, j = encode(x01, table.contiguous(), meta, n_active, jac=jac)
    return x, x01, enc, j


def _n_active(field: NeuSField) -> int:
    """Hash levels in use, clamped to the encoding's levels."""
    enc = field.encoding
    return max(0, min(int(enc.active_levels), enc.cfg.n_levels))


def _one_hidden_layer(field: NeuSField) -> bool:
    """Whether ``field``'s SDF MLP has one hidden layer of a width the one-layer kernels take."""
    layers = field.sdf_layers
    return len(layers) == 2 and _hidden_ok(layers[0].weight.shape[0])


def _table_grad(ctx, x01: torch.Tensor, table: torch.Tensor, d_enc: torch.Tensor,  # noqa: ANN001
                u_half: torch.Tensor | None, g0e: torch.Tensor) -> torch.Tensor:
    """Hash-table gradient (T_total, 2): ``d_enc`` (N, E) through the trilinear weights and, when the loss used the
    gradient, ``u_half`` (N, 3) with ``g0e`` (N, E) through their derivatives, in one atomic pass."""
    _, d_table = encode_backward(d_enc, x01, table, ctx.meta, ctx.n_active, False, True, u=u_half,
                                 g2=g0e if u_half is not None else None)
    return d_table


# ------------------------------------------------------------------------------- one hidden layer: fused passes

ROWS = 64 if _INTERPRET else 128  # rows of (N, H) per program


@triton.jit
def _tile(N, H, BLOCK):
    """Columns (H,), row mask (BLOCK, 1) and element offsets (BLOCK, H) of this program's tile of a (N, H) array."""
    rows = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    cols = tl.arange(0, H)
    return cols, rows[:, None] < N, rows[:, None] * H + cols[None, :]


@triton.jit
def _tl_act_d1(z, BETA, RELU):
    """act'(z): the step function or sigmoid(beta z)."""
    if RELU:  # noqa: SIM108 - a compile-time branch in a Triton kernel
        s = (z > 0).to(tl.float32)
    else:
        s = 1.0 / (1.0 + tl.exp(-z * BETA))
    return s


@triton.jit
def _softplus(z, BETA):
    bz = z * BETA
    e = tl.exp(-tl.abs(bz))
    log1p_e = tl.where(e < 1e-4, e - 0.5 * e * e, tl.log(1.0 + e))
    return tl.where(bz > 20.0, z, (tl.maximum(bz, 0.0) + log1p_e) / BETA)  # torch's softplus threshold


@triton.jit
def _act_fwd_kernel(z_ptr, g_ptr, h_ptr, gz_ptr, N, H: tl.constexpr, BETA: tl.constexpr, RELU: tl.constexpr,
                    BLOCK: tl.constexpr):
    """h = act(z), gz = g * act'(z) for one (BLOCK, H) tile; g is (H,) (the head's SDF row)."""
    cols, mask, offs = _tile(N, H, BLOCK)
    z = tl.load(z_ptr + offs, mask=mask, other=0.0)
    g = tl.load(g_ptr + cols)
    if RELU:  # noqa: SIM108 - a compile-time branch in a Triton kernel
        h = tl.maximum(z, 0.0)
    else:
        h = _softplus(z, BETA)
    tl.store(h_ptr + offs, h, mask=mask)
    tl.store(gz_ptr + offs, g[None, :] * _tl_act_d1(z, BETA, RELU), mask=mask)


@triton.jit
def _act_bwd_kernel(p_ptr, z_ptr, g_ptr, dh_ptr, dz_ptr, vsum_ptr, dzsum_ptr, N, H: tl.constexpr,
                    BETA: tl.constexpr, RELU: tl.constexpr, HAS_P: tl.constexpr, HAS_DH: tl.constexpr,
                    BLOCK: tl.constexpr):
    """dz = dh * act'(z) + P * g * act''(z); column sums of P * act'(z) (to the head's SDF row) and of dz (bias)."""
    cols, mask, offs = _tile(N, H, BLOCK)
    z = tl.load(z_ptr + offs, mask=mask, other=0.0)
    s = _tl_act_d1(z, BETA, RELU)
    dz = tl.zeros([BLOCK, H], dtype=tl.float32)
    if HAS_P:
        p = tl.load(p_ptr + offs, mask=mask, other=0.0)
        tl.atomic_add(vsum_ptr + cols, tl.sum(p * s, axis=0))
        if not RELU:
            g = tl.load(g_ptr + cols)
            dz += p * g[None, :] * ((s - s * s) * BETA)
    if HAS_DH:
        dz += tl.load(dh_ptr + offs, mask=mask, other=0.0) * s
    tl.store(dz_ptr + offs, dz, mask=mask)
    tl.atomic_add(dzsum_ptr + cols, tl.sum(dz, axis=0))


# ------------------------------------------------------------- one hidden layer: whole MLP in one kernel each way

# Tile shape of the whole-MLP kernels, from a sweep on the H200 (N = 2^18, E 32, H 64; docs/KERNELS.md): 64 points,
# 4 warps, one tile per program. Their products are "tf32x3" by default (see input_precision).
MLP_ROWS = 64
MLP_TILES_PER_PROGRAM = 1
MLP_WARPS = 4


def input_precision(field: NeuSField) -> str:
    """Triton's ``input_precision`` for ``field``'s fused forward products (``FieldConfig.precision``): "tf32x3"
    for "float32" and "mixed" (three TF32 tensor-core products per product, float32 accuracy), "tf32" for "tf32"
    (one product, inputs rounded to 10-bit mantissas, float32 sums). The interpreter computes in float32 either
    way."""
    return "tf32" if field.cfg.precision == "tf32" else "tf32x3"


def backward_precision(field: NeuSField) -> str:
    """``input_precision`` of the backward kernels' own products (the gradients): one TF32 product for "mixed" and
    "tf32", "tf32x3" for "float32". With "mixed" the values (SDF, normals, colour) are the float32 path's, and the
    backward recomputes its pre-activations in the forward's precision, so only the gradients are rounded."""
    return "tf32x3" if field.cfg.precision == "float32" else "tf32"


def weight_grad_precision(prec: str) -> str:
    """``input_precision`` of the backward kernels' weight-gradient products (sums over the points of a tile):
    the backward's ``prec`` (:func:`backward_precision`), or one TF32 product with ``NEUSBLEND_WGRAD_TF32=1``. An
    experiment for "float32", off by default: the hope was that the inputs' rounding errors would average out over a
    tile's points; measured (H200), the worst parameter-gradient error was 7.1e-4 against 8.3e-7 for float32
    products (gradient sums cancel), for a 9% faster field step. Per-point results, such as ``dL/d enc``, keep
    ``prec`` either way. ("mixed" rounds all the backward's products, gradients only: 2e-3, within the mixed
    tolerance.)"""
    return "tf32" if debug.on("NEUSBLEND_WGRAD_TF32") else prec


@triton.jit
def _xyz_tile(ptr, rows, rmask):
    """A tile's 3-vectors (x, or dL/dgrad) as (BLOCK, 16) with zero columns 3..15: an operand of small products
    (the minimum width of ``tl.dot``), so that the three coordinate terms take no (H,)-vectors of registers."""
    c = tl.arange(0, 16)
    return tl.load(ptr + rows[:, None] * 3 + c[None, :], mask=rmask[:, None] & (c[None, :] < 3), other=0.0)


@triton.jit
def _wx_tile(wx_ptr, H: tl.constexpr):
    """Wx^T as (16, H) with zero rows 3..15 (see :func:`_xyz_tile`)."""
    c = tl.arange(0, 16)
    return tl.load(wx_ptr + tl.arange(0, H)[None, :] * 3 + c[:, None], mask=c[:, None] < 3, other=0.0)


@triton.jit
def _enc_z(enc_ptr, we, b1, rows, rmask, ecols, E, PREC: tl.constexpr):
    """The tile's encoding (BLOCK, EP) and enc We^T + b1 (BLOCK, H)."""
    enc = tl.load(enc_ptr + rows[:, None] * E + ecols[None, :], mask=rmask[:, None] & (ecols[None, :] < E),
                  other=0.0)
    return tl.dot(enc, tl.trans(we), input_precision=PREC) + b1[None, :], enc


@triton.jit
def _mlp_z(enc_ptr, x_ptr, we, wxt, b1, rows, rmask, ecols, E, PREC: tl.constexpr):
    """z = enc We^T + x Wx^T + b1 for one tile: (BLOCK, H); also the tile's enc (BLOCK, EP) and x (BLOCK, 16).
    The coordinate term is a float32-accurate product ("tf32x3") whatever ``PREC``, as the sums it replaced (the
    backward's form: see :func:`_mlp_z_sums` for the forward's)."""
    z, enc = _enc_z(enc_ptr, we, b1, rows, rmask, ecols, E, PREC)
    xt = _xyz_tile(x_ptr, rows, rmask)
    z += tl.dot(xt, wxt, input_precision="tf32x3")
    return z, enc, xt


@triton.jit
def _mlp_z_sums(enc_ptr, x_ptr, we, b1, rows, rmask, ecols, E, H: tl.constexpr, wx_ptr, PREC: tl.constexpr):
    """:func:`_mlp_z` with the coordinate term as three broadcast products; also the tile's x columns and Wx's
    columns (the forward's form: it has registers to spare, and the gradient's row sums over Wx's columns cost less
    than a (BLOCK, 16) product there: 0.174 against 0.191 ms, H200)."""
    z, enc = _enc_z(enc_ptr, we, b1, rows, rmask, ecols, E, PREC)
    hcols = tl.arange(0, H)
    x0 = tl.load(x_ptr + rows * 3 + 0, mask=rmask, other=0.0)
    x1 = tl.load(x_ptr + rows * 3 + 1, mask=rmask, other=0.0)
    x2 = tl.load(x_ptr + rows * 3 + 2, mask=rmask, other=0.0)
    w0 = tl.load(wx_ptr + hcols * 3 + 0)
    w1 = tl.load(wx_ptr + hcols * 3 + 1)
    w2 = tl.load(wx_ptr + hcols * 3 + 2)
    z += x0[:, None] * w0[None, :] + x1[:, None] * w1[None, :] + x2[:, None] * w2[None, :]
    return z, enc, w0, w1, w2


@triton.jit
def _jac_tile(jac_ptr, rows, rmask, ecols, N, n_active):
    """The Jacobian of a tile's encoding, one (BLOCK, EP) tile per axis: ``J_d[r, 2 l + f] = jac[l, d, row r, f]``
    from the level-major (n_active, 3, N, 2) layout of the hash-grid forward (512 contiguous bytes per level and
    axis for 64 rows); zero for inactive levels and padding columns."""
    lvl = ecols // 2
    m = rmask[:, None] & (lvl[None, :] < n_active)
    p = jac_ptr + (lvl[None, :] * 3).to(tl.int64) * N * 2 + rows[:, None].to(tl.int64) * 2 + (ecols % 2)[None, :]
    jx = tl.load(p, mask=m, other=0.0)
    jy = tl.load(p + N * 2, mask=m, other=0.0)
    jz = tl.load(p + N * 4, mask=m, other=0.0)
    return jx, jy, jz


@triton.jit
def _mlp_fwd_kernel(enc_ptr, x_ptr, we_ptr, wx_ptr, b1_ptr, wo_ptr, bo_ptr, out_ptr, g0e_ptr, grad_ptr, jac_ptr,
                    N, E, O, n_active, H: tl.constexpr, EP: tl.constexpr, OP: tl.constexpr, BETA: tl.constexpr,
                    RELU: tl.constexpr, PREC: tl.constexpr, BLOCK: tl.constexpr, WITH_GRAD: tl.constexpr = True):
    """out = act(z) Wo^T + bo; g0 = (Wo[0] act'(z)) [We, Wx], the gradient's first factor, and the SDF's gradient
    ``grad = g0x + J^T g0e / 2`` (J: the encoding's Jacobian w.r.t. x01 = (x + 1) / 2, from ``jac_ptr``).
    ``WITH_GRAD=False``: the head only; g0e_ptr, grad_ptr and jac_ptr are not touched."""
    rows = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    rmask = rows < N
    ecols = tl.arange(0, EP)
    hcols = tl.arange(0, H)
    ocols = tl.arange(0, OP)
    we = tl.load(we_ptr + hcols[:, None] * E + ecols[None, :], mask=ecols[None, :] < E, other=0.0)  # (H, EP)
    b1 = tl.load(b1_ptr + hcols)
    z, enc, w0, w1, w2 = _mlp_z_sums(enc_ptr, x_ptr, we, b1, rows, rmask, ecols, E, H, wx_ptr, PREC)
    if RELU:  # noqa: SIM108 - a compile-time branch in a Triton kernel
        h = tl.maximum(z, 0.0)
    else:
        h = _softplus(z, BETA)
    wo = tl.load(wo_ptr + ocols[:, None] * H + hcols[None, :], mask=ocols[:, None] < O, other=0.0)  # (OP, H)
    bo = tl.load(bo_ptr + ocols, mask=ocols < O, other=0.0)
    out = tl.dot(h, tl.trans(wo), input_precision=PREC) + bo[None, :]
    tl.store(out_ptr + rows[:, None] * O + ocols[None, :], out, mask=rmask[:, None] & (ocols[None, :] < O))
    if WITH_GRAD:
        s = _tl_act_d1(z, BETA, RELU)
        gz = tl.load(wo_ptr + hcols)[None, :] * s  # (BLOCK, H): Wo[0] act'(z)
        g0e = tl.dot(gz, we, input_precision=PREC)  # (BLOCK, EP)
        tl.store(g0e_ptr + rows[:, None] * E + ecols[None, :], g0e, mask=rmask[:, None] & (ecols[None, :] < E))
        jx, jy, jz = _jac_tile(jac_ptr, rows, rmask, ecols, N, n_active)
        tl.store(grad_ptr + rows * 3 + 0, tl.sum(gz * w0[None, :], 1) + 0.5 * tl.sum(jx * g0e, 1), mask=rmask)
        tl.store(grad_ptr + rows * 3 + 1, tl.sum(gz * w1[None, :], 1) + 0.5 * tl.sum(jy * g0e, 1), mask=rmask)
        tl.store(grad_ptr + rows * 3 + 2, tl.sum(gz * w2[None, :], 1) + 0.5 * tl.sum(jz * g0e, 1), mask=rmask)


@triton.jit
def _mlp_bwd_kernel(enc_ptr, x_ptr, we_ptr, wx_ptr, b1_ptr, wo_ptr, dout_ptr, dgrad_ptr, ju_ptr, denc_ptr,
                    dwe_ptr, dwx_ptr, db1_ptr, dwo_ptr, dbo_ptr, N, E, O, n_active, TILES_PER_PROG,
                    H: tl.constexpr, EP: tl.constexpr, OP: tl.constexpr, BETA: tl.constexpr, RELU: tl.constexpr,
                    HAS_OUT: tl.constexpr, HAS_GRAD: tl.constexpr, PREC: tl.constexpr, BLOCK: tl.constexpr,
                    PARTIALS: tl.constexpr = False, WPREC: tl.constexpr = "tf32x3", ZPREC: tl.constexpr = "tf32x3"):
    """Backward of :func:`_mlp_fwd_kernel` and of the gradient ``grad = g0x + J^T g0e / 2`` (second order), over
    ``TILES_PER_PROG`` tiles per program; weight gradients are summed in registers and added once per program
    (atomics), or with ``PARTIALS`` stored as the program's row of partial sums at ``dwe_ptr``, laid out
    ``[dWe (H x E), dWx (H x 3), db1 (H), dWo (O x H), dbo (O), dWo[0] through the gradient (H)]``. ``z`` is
    recomputed in ``ZPREC`` (the forward's precision), the gradients' products are in ``PREC`` and ``WPREC``."""
    ecols = tl.arange(0, EP)
    hcols = tl.arange(0, H)
    ocols = tl.arange(0, OP)
    we = tl.load(we_ptr + hcols[:, None] * E + ecols[None, :], mask=ecols[None, :] < E, other=0.0)  # (H, EP)
    b1 = tl.load(b1_ptr + hcols)
    wo = tl.load(wo_ptr + ocols[:, None] * H + hcols[None, :], mask=ocols[:, None] < O, other=0.0)  # (OP, H)
    g = tl.load(wo_ptr + hcols)  # Wo[0]
    wxt = _wx_tile(wx_ptr, H)  # (16, H)
    c16 = tl.arange(0, 16)
    acc_we = tl.zeros([H, EP], dtype=tl.float32)
    acc_wo = tl.zeros([OP, H], dtype=tl.float32)
    acc_bo = tl.zeros([OP], dtype=tl.float32)
    acc_v = tl.zeros([H], dtype=tl.float32)
    # dWx in columns 0..2 and db1 in column 3, as products with the tile's (x, 1) and dL/dgrad: one (H, 16) tile
    # instead of four (H,)-vectors (spread over the warps' columns, they held many registers: 214 spills)
    acc_xb = tl.zeros([H, 16], dtype=tl.float32)
    for t in range(TILES_PER_PROG):
        rows = (tl.program_id(0) * TILES_PER_PROG + t) * BLOCK + tl.arange(0, BLOCK)
        rmask = rows < N
        z, enc, xt = _mlp_z(enc_ptr, x_ptr, we, wxt, b1, rows, rmask, ecols, E, ZPREC)
        s = _tl_act_d1(z, BETA, RELU)
        s = tl.where(rmask[:, None], s, 0.0)  # rows past N contribute nothing
        dz = tl.zeros([BLOCK, H], dtype=tl.float32)
        if HAS_OUT:
            if RELU:  # noqa: SIM108 - a compile-time branch in a Triton kernel
                h = tl.maximum(z, 0.0)
            else:
                h = _softplus(z, BETA)
            h = tl.where(rmask[:, None], h, 0.0)
            dout = tl.load(dout_ptr + rows[:, None] * O + ocols[None, :],
                           mask=rmask[:, None] & (ocols[None, :] < O), other=0.0)  # (BLOCK, OP)
            acc_wo += tl.dot(tl.trans(dout), h, input_precision=WPREC)
            acc_bo += tl.sum(dout, 0)
            dz += tl.dot(dout, wo, input_precision=PREC) * s
        if HAS_GRAD:
            lvl = ecols // 2  # ju: level-major (n_active, N, 2): 512 contiguous bytes a level for 64 rows
            ju = tl.load(ju_ptr + lvl[None, :].to(tl.int64) * N * 2 + rows[:, None].to(tl.int64) * 2
                         + (ecols % 2)[None, :], mask=rmask[:, None] & (lvl[None, :] < n_active),
                         other=0.0)  # (BLOCK, EP): J (dL/dgrad) / 2
            ut = _xyz_tile(dgrad_ptr, rows, rmask)  # (BLOCK, 16): dL/dgrad
            p = tl.dot(ju, tl.trans(we), input_precision=PREC)
            p += tl.dot(ut, wxt, input_precision=PREC)  # (BLOCK, H)
            gz = g[None, :] * s
            acc_v += tl.sum(p * s, 0)
            gzt = tl.trans(gz)
            acc_we += tl.dot(gzt, ju, input_precision=WPREC)
            acc_xb += tl.dot(gzt, ut, input_precision=WPREC)
            if not RELU:
                dz += p * g[None, :] * ((s - s * s) * BETA)
        dzt = tl.trans(dz)
        acc_we += tl.dot(dzt, enc, input_precision=WPREC)
        acc_xb += tl.dot(dzt, tl.where(c16[None, :] == 3, 1.0, xt), input_precision=WPREC)  # (x, 1): dWx, db1
        denc = tl.dot(dz, we, input_precision=PREC)  # (BLOCK, EP): dL/d enc
        tl.store(denc_ptr + rows[:, None] * E + ecols[None, :], denc, mask=rmask[:, None] & (ecols[None, :] < E))
    if PARTIALS:
        base = dwe_ptr + tl.program_id(0).to(tl.int64) * (H * E + 5 * H + O * H + O)
        tl.store(base + hcols[:, None] * E + ecols[None, :], acc_we, mask=ecols[None, :] < E)
        base += H * E
        tl.store(base + hcols[:, None] * 3 + c16[None, :], acc_xb, mask=c16[None, :] < 3)
        tl.store(base + 3 * H + hcols[:, None] + 0 * c16[None, :], acc_xb, mask=c16[None, :] == 3)
        base += 4 * H
        tl.store(base + ocols[:, None] * H + hcols[None, :], acc_wo, mask=ocols[:, None] < O)
        tl.store(base + O * H + ocols, acc_bo, mask=ocols < O)
        tl.store(base + O * H + O + hcols, acc_v)
    else:
        tl.atomic_add(dwe_ptr + hcols[:, None] * E + ecols[None, :], acc_we, mask=ecols[None, :] < E)
        tl.atomic_add(dwx_ptr + hcols[:, None] * 3 + c16[None, :], acc_xb, mask=c16[None, :] < 3)
        tl.atomic_add(db1_ptr + hcols[:, None] + 0 * c16[None, :], acc_xb, mask=c16[None, :] == 3)
        if HAS_OUT:
            tl.atomic_add(dwo_ptr + ocols[:, None] * H + hcols[None, :], acc_wo, mask=ocols[:, None] < O)
            tl.atomic_add(dbo_ptr + ocols, acc_bo, mask=ocols < O)
        if HAS_GRAD:
            tl.atomic_add(dwo_ptr + hcols, acc_v)  # the head's SDF row, through the gradient


def _pow2(n: int) -> int:
    return max(16, 1 << (int(n) - 1).bit_length())


def mlp_partial_sums() -> bool:
    """Whether the fused MLP backward writes per-program partial sums of the weight gradients and sums them in one
    pass (default; deterministic) instead of adding them with atomics (``NEUSBLEND_MLP_PARTIALS=0``). The atomics
    alone took 0.116 ms for 2^18 points against 0.062 ms for writing the rows and summing them (H100)."""
    return debug.on("NEUSBLEND_MLP_PARTIALS")


def fused_mlp_enabled() -> bool:
    """Whether one-hidden-layer fields take :class:`FusedMLPGeometryFunction` (``NEUSBLEND_FUSED_MLP``)."""
    return debug.on("NEUSBLEND_FUSED_MLP")


class FusedMLPGeometryFunction(torch.autograd.Function):
    """:class:`OneLayerGeometryFunction` with the whole SDF MLP in one Triton kernel each way: the forward computes
    ``z``, the head and the gradient's first factor for a tile of 64 points in registers (``tl.dot`` in
    :func:`input_precision`), the backward recomputes ``z`` from the encoding (same precision) and does both passes of
    :class:`GeometryFunction`'s algebra (products in :func:`backward_precision`), summing the weight gradients per
    program. Nothing (N, H)-sized is stored."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, table: torch.Tensor, meta: LevelMeta, n_active: int,  # noqa: ANN001
                relu: bool, prec: str, bprec: str, W1: torch.Tensor, b1: torch.Tensor, Wo: torch.Tensor,
                bo: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, x01, enc, jac = _encode(x, table, meta, n_active)
        n, H, O = x.shape[0], W1.shape[0], Wo.shape[0]
        E = enc.shape[1]
        We, Wx = W1[:, 3:].contiguous(), W1[:, :3].contiguous()
        Wo, b1, bo = Wo.contiguous(), b1.contiguous(), bo.contiguous()
        out = x.new_empty(n, O)
        g0e, grad = x.new_empty(n, E), x.new_empty(n, 3)
        if n:
            _mlp_fwd_kernel[(triton.cdiv(n, MLP_ROWS),)](
                enc, x, We, Wx, b1, Wo, bo, out, g0e, grad, jac if jac.numel() else enc, n, E, O, n_active, H=H,
                EP=_pow2(E), OP=_pow2(O), BETA=SOFTPLUS_BETA, RELU=relu, PREC=prec, BLOCK=MLP_ROWS, num_warps=MLP_WARPS)
        ctx.save_for_backward(x, x01, table, jac, enc, g0e, We, Wx, b1, Wo)
        ctx.meta, ctx.n_active, ctx.relu, ctx.prec, ctx.bprec = meta, n_active, relu, prec, bprec
        ctx.set_materialize_grads(False)
        return out, grad

    @staticmethod
    def backward(ctx, d_out: torch.Tensor | None, d_grad: torch.Tensor | None):  # noqa: ANN001, ANN205
        x, x01, table, jac, enc, g0e, We, Wx, b1, Wo = ctx.saved_tensors
        relu = ctx.relu
        if d_out is None and d_grad is None:
            return (None,) * 11
        n, E = enc.shape
        H, O = We.shape[0], Wo.shape[0]
        denc = x.new_empty(n, E)
        u_half = ju = None
        if d_grad is not None:
            d_grad = d_grad.contiguous()
            u_half = 0.5 * d_grad
            # J u in its own streaming kernel: inside the backward kernel (three more (64, E) tiles live at once) it
            # took 0.95 instead of 0.61 + 0.14 ms (H100, 2^18 points)
            ju = jac_vec(jac, u_half, ctx.meta.n_levels, level_major=True)  # (n_active, N, 2)
        if d_out is not None:
            d_out = d_out.contiguous()
        per_prog = MLP_TILES_PER_PROGRAM
        programs = triton.cdiv(triton.cdiv(n, MLP_ROWS), per_prog)
        partials = n > 0 and mlp_partial_sums()
        sizes = (H * E, 3 * H, H, O * H, O, H)  # a row of partials: dWe, dWx, db1, dWo, dbo, dWo[0] via the gradient
        if partials:  # a row per program (every element written), then one column sum; the kernel writes at dWe
            part = x.new_empty(programs, sum(sizes))
            dWe = dWx = db1 = dWo = dbo = part
        else:  # atomics into zeroed gradients
            dWe, dWx, db1 = torch.zeros_like(We), torch.zeros_like(Wx), torch.zeros_like(b1)
            dWo, dbo = torch.zeros_like(Wo), torch.zeros(O, device=x.device)
        if n:
            _mlp_bwd_kernel[(programs,)](
                enc, x, We, Wx, b1, Wo, d_out if d_out is not None else enc, d_grad if d_grad is not None else x,
                ju if ju is not None and ju.numel() else enc, denc, dWe, dWx, db1, dWo, dbo, n, E, O, ctx.n_active,
                per_prog, H=H, EP=_pow2(E), OP=_pow2(O), BETA=SOFTPLUS_BETA, RELU=relu, HAS_OUT=d_out is not None,
                HAS_GRAD=d_grad is not None, PREC=ctx.bprec, BLOCK=MLP_ROWS, PARTIALS=partials,
                WPREC=weight_grad_precision(ctx.bprec), ZPREC=ctx.prec, num_warps=MLP_WARPS)
        if partials:
            dWe, dWx, db1, dWo, dbo, dv = torch.split(part.sum(0), sizes)  # dWo, dbo: zeros without d_out
            dWe, dWx, dWo = dWe.view(H, E), dWx.view(H, 3), dWo.view(O, H)
            if d_grad is not None:
                dWo[0] += dv  # the head's SDF row, through the gradient
        d_table = _table_grad(ctx, x01, table, denc, u_half, g0e) if ctx.needs_input_grad[1] else None
        need = ctx.needs_input_grad
        return (None, d_table, None, None, None, None, None, torch.cat([dWx, dWe], 1) if need[7] else None,
                db1 if need[8] else None, dWo if need[9] else None,
                dbo if need[10] and d_out is not None else None)


def _rows_grid(n: int) -> tuple[int]:
    return (max(1, triton.cdiv(n, ROWS)),)


def _hidden_ok(h: int) -> bool:
    return h >= 16 and h & (h - 1) == 0  # a power of two: one tile row per point


def _aligned_first_layer(W1: torch.Tensor, n_enc: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The first layer's weight (H, 3 + E) with its columns in the aligned input order ``[enc, x, 0...]``.

    Returns:
        Wr: (H, D) with D = E + 3 rounded up to a multiple of 4 (zero columns at the end);
        We: (H, E) contiguous encoding columns; Wx: (H, 3) position columns.
    """
    H = W1.shape[0]
    D = (n_enc + 3 + 3) // 4 * 4
    We, Wx = W1[:, 3:].contiguous(), W1[:, :3].contiguous()
    return torch.cat([We, Wx, W1.new_zeros(H, D - n_enc - 3)], 1), We, Wx


def _aligned_rows(a: torch.Tensor, b: torch.Tensor, width: int) -> torch.Tensor:
    """(N, width) rows ``[a, b, 0...]``: a row length that is a multiple of 4 floats, so cuBLAS takes its aligned
    (vectorised) kernels; (N, 35) rows fall back to kernels with scalar loads, about twice as slow."""
    out = a.new_empty(a.shape[0], width)
    out[:, :a.shape[1]] = a
    out[:, a.shape[1]:a.shape[1] + b.shape[1]] = b
    out[:, a.shape[1] + b.shape[1]:] = 0
    return out


class OneLayerGeometryFunction(torch.autograd.Function):
    """:class:`GeometryFunction` for one hidden layer (every preset), with the activation and its derivatives in
    one Triton pass each way and no separate bias or head-row reductions. Same arguments with K = 1.

    The matrix products see the input as ``[enc, x, 0]`` (N, D) with D a multiple of 4 (36 for 16 levels), the
    first layer's weight reordered to match, so that every operand is 16-byte aligned.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, table: torch.Tensor, meta: LevelMeta, n_active: int,  # noqa: ANN001
                relu: bool, W1: torch.Tensor, b1: torch.Tensor, Wo: torch.Tensor, bo: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        x, x01, enc, jac = _encode(x, table, meta, n_active)
        n, H = x.shape[0], W1.shape[0]
        Wr, We, Wx = _aligned_first_layer(W1, enc.shape[1])
        h0 = _aligned_rows(enc, x, Wr.shape[1])  # (N, D)
        z = torch.addmm(b1, h0, Wr.t())  # (N, H)
        h1, gz = torch.empty_like(z), torch.empty_like(z)
        g = Wo[0].contiguous()
        if n:
            _act_fwd_kernel[_rows_grid(n)](z, g, h1, gz, n, H=H, BETA=SOFTPLUS_BETA, RELU=relu, BLOCK=ROWS,
                                           num_warps=4)
        out = torch.addmm(bo, h1, Wo.t())
        g0e = gz @ We  # (N, 2 L)
        grad = (gz @ Wx).add_(jac_t_vec(jac, g0e, meta.n_levels), alpha=0.5)  # (N, 3)
        ctx.save_for_backward(x01, table, jac, g0e, h0, z, h1, gz, Wr, We, Wo)
        ctx.meta, ctx.n_active, ctx.relu = meta, n_active, relu
        ctx.set_materialize_grads(False)
        return out, grad

    @staticmethod
    def backward(ctx, d_out: torch.Tensor | None, d_grad: torch.Tensor | None):  # noqa: ANN001, ANN205
        x01, table, jac, g0e, h0, z, h1, gz, Wr, We, Wo = ctx.saved_tensors
        meta, relu = ctx.meta, ctx.relu
        n, H = z.shape
        E = g0e.shape[1]
        if d_out is None and d_grad is None:
            return (None,) * 9
        dWr, dWo = torch.zeros_like(Wr), torch.zeros_like(Wo)
        vsum, db1 = torch.zeros(H, device=z.device), torch.zeros(H, device=z.device)
        dz = torch.empty_like(z)
        P = u_half = dh = dbo = None
        if d_grad is not None:
            d_grad = d_grad.contiguous()
            u_half = 0.5 * d_grad
            V0 = _aligned_rows(jac_vec(jac, u_half, meta.n_levels), d_grad, Wr.shape[1])  # (N, D): dL/dg_0
            P = V0 @ Wr.t()  # (N, H)
            dWr.addmm_(gz.t(), V0)
            del V0
        if d_out is not None:
            d_out = d_out.contiguous()
            dWo.addmm_(d_out.t(), h1)
            dbo = d_out.sum(0)
            dh = d_out @ Wo  # (N, H)
        if n:
            _act_bwd_kernel[_rows_grid(n)](P if P is not None else z, z, Wo[0].contiguous(),
                                           dh if dh is not None else z, dz, vsum, db1, n, H=H, BETA=SOFTPLUS_BETA,
                                           RELU=relu, HAS_P=P is not None, HAS_DH=dh is not None, BLOCK=ROWS,
                                           num_warps=4)
        else:
            dz.zero_()
        if P is not None:
            dWo[0] += vsum
        dWr.addmm_(dz.t(), h0)
        d_table = _table_grad(ctx, x01, table, dz @ We, u_half, g0e) if ctx.needs_input_grad[1] else None
        need = ctx.needs_input_grad
        dW1 = torch.cat([dWr[:, E:E + 3], dWr[:, :E]], 1) if need[5] else None  # back to [x, enc] columns
        return (None, d_table, None, None, None, dW1, db1 if need[6] else None,
                dWo if need[7] else None, dbo if need[8] else None)


class GeometryFunction(torch.autograd.Function):
    """``out, grad = GeometryFunction.apply(x, table, meta, n_active, relu, W_1, b_1, ..., W_K, b_K, W_o, b_o)``.

    Args (forward):
        x: (N, 3) float32 positions in the normalized frame.
        table: (T_total, 2) hash table; meta, n_active: its level layout and active levels.
        relu: activation (False: softplus with beta 100, as :class:`backend.field.NeuSField`).
        weights: the SDF MLP's ``nn.Linear`` weights and biases in order, (H, D) and (H,).

    Returns:
        out: (N, 1 + F) the SDF (column 0) and geometry features; grad: (N, 3) d sdf / d x.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, table: torch.Tensor, meta: LevelMeta, n_active: int,  # noqa: ANN001
                relu: bool, *weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, x01, enc, jac = _encode(x, table, meta, n_active)
        Ws, bs = weights[0::2], weights[1::2]
        hs = [torch.cat([x, enc], -1)]  # h_0 .. h_K
        zs = []  # z_1 .. z_K
        for W, b in zip(Ws[:-1], bs[:-1]):
            zs.append(torch.addmm(b, hs[-1], W.t()))
            hs.append(_act(zs[-1], relu))
        out = torch.addmm(bs[-1], hs[-1], Ws[-1].t())
        g = Ws[-1][0].expand(x.shape[0], -1)  # g_K: d sdf / d h_K
        gs, gzs = [], []  # g_K .. g_1 and gz_K .. gz_1
        for W, z in zip(reversed(Ws[:-1]), reversed(zs)):
            gs.append(g)
            gzs.append(g * _act_d1(z, relu))
            g = gzs[-1] @ W
        g0e = g[:, 3:].contiguous()
        grad = g[:, :3] + 0.5 * jac_t_vec(jac, g0e, meta.n_levels)
        ctx.save_for_backward(x01, table, jac, g0e, *hs, *zs, *reversed(gs[1:]), *reversed(gzs), *weights)
        ctx.meta, ctx.n_active, ctx.relu, ctx.K = meta, n_active, relu, len(zs)
        ctx.set_materialize_grads(False)
        return out, grad

    @staticmethod
    def backward(ctx, d_out: torch.Tensor | None, d_grad: torch.Tensor | None):  # noqa: ANN001, ANN205
        K, relu, meta = ctx.K, ctx.relu, ctx.meta
        saved = ctx.saved_tensors
        x01, table, jac, g0e = saved[:4]
        rest = saved[4:]
        hs, rest = rest[:K + 1], rest[K + 1:]
        zs, rest = rest[:K], rest[K:]
        gs_low, rest = rest[:K - 1], rest[K - 1:]  # g_1 .. g_{K-1}
        gzs, weights = rest[:K], rest[K:]  # gz_1 .. gz_K, then the parameters
        Ws, bs = weights[0::2], weights[1::2]
        n = x01.shape[0]
        dW = [torch.zeros_like(W) for W in Ws]
        db: list[torch.Tensor | None] = [None] * len(bs)
        Q: list[torch.Tensor | None] = [None] * K
        u_half = None
        if d_grad is not None:  # second order: through the input-gradient chain g_0 <- g_1 <- ... <- g_K
            d_grad = d_grad.contiguous()
            u_half = 0.5 * d_grad
            V = torch.cat([d_grad, jac_vec(jac, u_half, meta.n_levels)], -1)  # (N, D_0): dL/dg_0
            for k in range(K):  # layer k + 1
                W, z = Ws[k], zs[k]
                P = V @ W.t()  # (N, H): dL/d gz_{k+1}
                dW[k].addmm_(gzs[k].t(), V)
                V = P * _act_d1(z, relu)  # dL/d g_{k+1}
                d2 = _act_d2(z, relu)
                if d2 is not None:
                    g_k1 = gs_low[k] if k < K - 1 else Ws[-1][0].expand(n, -1)
                    Q[k] = P * g_k1 * d2
            dW[-1][0] += V.sum(0)
        dh = None
        if d_out is not None:
            d_out = d_out.contiguous()
            dW[-1].addmm_(d_out.t(), hs[K])
            db[-1] = d_out.sum(0)
            dh = d_out @ Ws[-1]  # (N, H_K)
        for k in reversed(range(K)):  # first order, with the second-order terms entering at z_k
            dz = dh * _act_d1(zs[k], relu) if dh is not None else None
            if Q[k] is not None:
                dz = Q[k] if dz is None else dz + Q[k]
            if dz is None:
                continue
            dW[k].addmm_(dz.t(), hs[k])
            db[k] = dz.sum(0)
            dh = dz @ Ws[k]
        d_table = None
        if ctx.needs_input_grad[1] and (dh is not None or u_half is not None):
            d_enc = dh[:, 3:].contiguous() if dh is not None else torch.zeros_like(g0e)
            d_table = _table_grad(ctx, x01, table, d_enc, u_half, g0e)
        grads: list[torch.Tensor | None] = []
        for k in range(len(Ws)):
            bias_grad = db[k]
            if bias_grad is None and k < K:  # as autograd: a hidden bias gets zeros, the head's bias nothing
                bias_grad = torch.zeros_like(bs[k])
            grads += [dW[k] if ctx.needs_input_grad[5 + 2 * k] else None,
                      bias_grad if ctx.needs_input_grad[6 + 2 * k] else None]
        return (None, d_table, None, None, None, *grads)


def sdf_only(field: NeuSField, x: torch.Tensor) -> torch.Tensor | None:
    """The SDF (N,) of a one-hidden-layer ``field`` at ``x`` (N, 3) without gradients: the encoding (Triton) and the
    whole MLP's head row in one kernel, nothing (N, H)-sized in memory (grid updates, culling, meshing). None when
    this path does not take the field or input, or when autograd records (the caller then uses the modules)."""
    if torch.is_grad_enabled() or not supports(field, x) or not _one_hidden_layer(field):
        return None
    layers = field.sdf_layers
    x, _, enc, _ = _encode(x, field.encoding.embeddings, field.encoding.level_meta(x.device), _n_active(field),
                           jac=False)
    n, E = enc.shape
    W1, b1 = layers[0].weight, layers[0].bias
    Wo, bo = layers[1].weight[:1].contiguous(), layers[1].bias[:1].contiguous()
    out = x.new_empty(n, 1)
    if n:
        _mlp_fwd_kernel[(triton.cdiv(n, MLP_ROWS),)](
            enc, x, W1[:, 3:].contiguous(), W1[:, :3].contiguous(), b1.contiguous(), Wo, bo, out, out, out, out, n,
            E, 1, 0, H=W1.shape[0], EP=_pow2(E), OP=_pow2(1), BETA=SOFTPLUS_BETA, RELU=field.cfg.activation == "relu",
            PREC=input_precision(field), BLOCK=MLP_ROWS, WITH_GRAD=False, num_warps=MLP_WARPS)
    return out[:, 0]


def supports(field: NeuSField, x: torch.Tensor) -> bool:
    """Whether :func:`sdf_with_gradient` takes this field and input (else the caller uses autograd)."""
    enc = field.encoding
    ok = getattr(enc, "_triton_ok", None)
    return (enabled() and ok is not None and ok(x) and field.cfg.activation in ("softplus", "relu")
            and len(field.sdf_layers) >= 2 and x.requires_grad is False)


def sdf_with_gradient(field: NeuSField, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """SDF (N,), features (N, F) and the SDF's gradient (N, 3) of ``field`` at ``x`` (N, 3), differentiable
    (the gradient too, as with ``create_graph=True``) w.r.t. the hash table and the SDF MLP."""
    enc = field.encoding
    params: list[torch.Tensor] = []
    for layer in field.sdf_layers:
        params += [layer.weight, layer.bias]
    args = (x, enc.embeddings, enc.level_meta(x.device), _n_active(field), field.cfg.activation == "relu")
    if _one_hidden_layer(field) and fused_mlp_enabled():
        out, grad = FusedMLPGeometryFunction.apply(*args, input_precision(field), backward_precision(field), *params)
    else:
        fn = OneLayerGeometryFunction if _one_hidden_layer(field) else GeometryFunction
        out, grad = fn.apply(*args, *params)
    return out[:, 0], out[:, 1:], grad
