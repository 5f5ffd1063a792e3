"""The colour network in one Triton kernel each way (fast path of :meth:`backend.field.NeuSField.color`).

The reference concatenates the colour network's input ``[feat, x, normal, SH(view_dir)]`` (N, 37), then runs two
hidden layers and the output through cuBLAS, each layer's pre-activation and activation an (N, 64) array in memory,
and autograd adds the bias gradients as column sums over (N, 64) (two ~90 us reductions a training step on an H200)
and the transposed products. Here a tile of ``COLOR_ROWS`` points goes through the whole network in registers
(``tl.dot``, float32 accuracy from three TF32 products; one TF32 product in the backward with
``FieldConfig.precision = "mixed"``, the training default, and both ways with ``"tf32"``): the
forward reads the inputs and writes the colour (N, 3); the backward recomputes the forward from the same inputs
(nothing (N, 64)-sized is stored), back-propagates, writes ``dL/d feat`` (N, F) and ``dL/d normal`` (N, 3) and sums
the weight gradients of its tiles in registers.

Notation (F features, S = sh_degree**2 spherical-harmonic columns, H hidden units, ReLU hidden layers, sigmoid out):

- input split in two tiles: ``a = [feat, x, normal, 0]`` (B, AP) and ``s = SH(view_dir)`` (B, 16), with the first
  layer's weight split to match: ``W1a`` (H, AP) and ``W1s`` (H, 16) (zero columns where padded);
- forward: ``z1 = a W1a^T + s W1s^T + b1``, ``h1 = relu(z1)``, ``z2 = h1 W2^T + b2``, ``h2 = relu(z2)``,
  ``rgb = sigmoid(h2 W3^T + b3)``;
- backward, given ``g = dL/d rgb``: ``d3 = g rgb (1 - rgb)``, ``d2 = (d3 W3) [z2 > 0]``, ``d1 = (d2 W2) [z1 > 0]``,
  ``dL/d a = d1 W1a``; ``dW3 = d3^T h2``, ``dW2 = d2^T h1``, ``dW1a = d1^T a``, ``dW1s = d1^T s``, bias gradients the
  column sums of ``d3``, ``d2``, ``d1``.

Weight gradients: each program of the backward sums ``COLOR_TILES_PER_PROGRAM`` tiles and then either adds its sums
to one buffer by atomics (``COLOR_REDUCE = "atomic"``) or writes them to its own row of a (programs, total) buffer
that one column sum reduces (``"partial"``, deterministic). Gradients w.r.t. the positions and view directions are
not computed (they are not learned); :func:`supports` sends inputs that require them to the reference.
``NEUSBLEND_FUSED_COLOR=0`` turns this path off.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import triton
import triton.language as tl
from torch.nn import functional as F

from .. import debug
from .fused_geometry import _pow2, backward_precision, input_precision, weight_grad_precision
from .hashgrid_triton import runs_kernels

if TYPE_CHECKING:
    from ..field import NeuSField

COLOR_ROWS = 64
COLOR_WARPS = 4
COLOR_TILES_PER_PROGRAM = debug.number("NEUSBLEND_COLOR_TILES")
COLOR_STAGES = debug.number("NEUSBLEND_COLOR_STAGES")  # software pipelining of the backward's tile loop
COLOR_REDUCE = debug.text("NEUSBLEND_COLOR_REDUCE")
SP = 16  # spherical-harmonic columns of the input tile (degree <= 4)
OP = 16  # output columns of the last product (3 used)


def enabled() -> bool:
    """Whether the fused colour network may run (``NEUSBLEND_FUSED_COLOR``, default on)."""
    return debug.on("NEUSBLEND_FUSED_COLOR")


@triton.jit
def _sh_tile(d_ptr, rows, rmask, DEG: tl.constexpr, BLOCK: tl.constexpr):
    """Real spherical harmonics of the tile's view directions, (BLOCK, 16), columns past DEG**2 zero (the same
    constants and operation order as :func:`backend.field.sh_encode`)."""
    x = tl.load(d_ptr + rows * 3 + 0, mask=rmask, other=0.0)[:, None]
    y = tl.load(d_ptr + rows * 3 + 1, mask=rmask, other=0.0)[:, None]
    z = tl.load(d_ptr + rows * 3 + 2, mask=rmask, other=0.0)[:, None]
    c = tl.arange(0, 16)[None, :]
    s = tl.zeros([BLOCK, 16], dtype=tl.float32) + tl.where(c == 0, 0.28209479177387814, 0.0)
    if DEG > 1:
        s = tl.where(c == 1, -0.48860251190291987 * y, s)
        s = tl.where(c == 2, 0.48860251190291987 * z, s)
        s = tl.where(c == 3, -0.48860251190291987 * x, s)
    if DEG > 2:
        xx, yy, zz = x * x, y * y, z * z
        s = tl.where(c == 4, 1.0925484305920792 * x * y, s)
        s = tl.where(c == 5, -1.0925484305920792 * y * z, s)
        s = tl.where(c == 6, 0.94617469575755997 * zz - 0.31539156525251999, s)
        s = tl.where(c == 7, -1.0925484305920792 * x * z, s)
        s = tl.where(c == 8, 0.54627421529603959 * (xx - yy), s)
        if DEG > 3:
            s = tl.where(c == 9, 0.59004358992664352 * y * (3 * xx - yy), s)
            s = tl.where(c == 10, 2.8906114426405538 * x * y * z, s)
            s = tl.where(c == 11, 0.45704579946446572 * y * (5 * zz - 1), s)
            s = tl.where(c == 12, 0.3731763325901154 * z * (5 * zz - 3), s)
            s = tl.where(c == 13, 0.45704579946446572 * x * (5 * zz - 1), s)
            s = tl.where(c == 14, 1.4453057213202769 * z * (xx - yy), s)
            s = tl.where(c == 15, 0.59004358992664352 * x * (xx - 3 * yy), s)
    return s


@triton.jit
def _input_tile(feat_ptr, FS, x_ptr, n_ptr, rows, rmask, F: tl.constexpr, AP: tl.constexpr):
    """``[feat, x, normal, 0]`` of the tile, (BLOCK, AP); ``feat`` rows are FS floats apart."""
    r = rows[:, None]
    m = rmask[:, None]
    c = tl.arange(0, AP)[None, :]
    a = tl.load(feat_ptr + r * FS + c, mask=m & (c < F), other=0.0)
    a += tl.load(x_ptr + r * 3 + (c - F), mask=m & (c >= F) & (c < F + 3), other=0.0)
    a += tl.load(n_ptr + r * 3 + (c - F - 3), mask=m & (c >= F + 3) & (c < F + 6), other=0.0)
    return a


@triton.jit
def _layers(a, s, w1a, w1s, b1, w2, b2, w3, b3, PREC: tl.constexpr):
    """The network on one tile: pre-activations z1, z2 (BLOCK, H), activations h1, h2, colour (BLOCK, OP)."""
    z1 = tl.dot(a, tl.trans(w1a), input_precision=PREC) + tl.dot(s, tl.trans(w1s), input_precision=PREC) + b1[None, :]
    h1 = tl.maximum(z1, 0.0)
    z2 = tl.dot(h1, tl.trans(w2), input_precision=PREC) + b2[None, :]
    h2 = tl.maximum(z2, 0.0)
    z3 = tl.dot(h2, tl.trans(w3), input_precision=PREC) + b3[None, :]
    rgb = 1.0 / (1.0 + tl.exp(-z3))
    return z1, h1, z2, h2, rgb


@triton.jit
def _weights(w1a_ptr, w1s_ptr, b1_ptr, w2_ptr, b2_ptr, w3_ptr, b3_ptr, H: tl.constexpr, AP: tl.constexpr):
    """The padded weights (see :func:`_padded_weights`) as register tiles."""
    hc = tl.arange(0, H)
    w1a = tl.load(w1a_ptr + hc[:, None] * AP + tl.arange(0, AP)[None, :])  # (H, AP)
    w1s = tl.load(w1s_ptr + hc[:, None] * 16 + tl.arange(0, 16)[None, :])  # (H, 16)
    w2 = tl.load(w2_ptr + hc[:, None] * H + hc[None, :])  # (H, H)
    w3 = tl.load(w3_ptr + tl.arange(0, 16)[:, None] * H + hc[None, :])  # (16, H)
    return w1a, w1s, tl.load(b1_ptr + hc), w2, tl.load(b2_ptr + hc), w3, tl.load(b3_ptr + tl.arange(0, 16))


@triton.jit
def _color_fwd_kernel(feat_ptr, FS, x_ptr, n_ptr, d_ptr, w1a_ptr, w1s_ptr, b1_ptr, w2_ptr, b2_ptr, w3_ptr, b3_ptr,
                      out_ptr, N, F: tl.constexpr, DEG: tl.constexpr, H: tl.constexpr, AP: tl.constexpr,
                      PREC: tl.constexpr, BLOCK: tl.constexpr):
    """rgb (N, 3) of one tile of points."""
    rows = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    rmask = rows < N
    w1a, w1s, b1, w2, b2, w3, b3 = _weights(w1a_ptr, w1s_ptr, b1_ptr, w2_ptr, b2_ptr, w3_ptr, b3_ptr, H, AP)
    a = _input_tile(feat_ptr, FS, x_ptr, n_ptr, rows, rmask, F, AP)
    s = _sh_tile(d_ptr, rows, rmask, DEG, BLOCK)
    _, _, _, _, rgb = _layers(a, s, w1a, w1s, b1, w2, b2, w3, b3, PREC)
    oc = tl.arange(0, 16)[None, :]
    tl.store(out_ptr + rows[:, None] * 3 + oc, rgb, mask=rmask[:, None] & (oc < 3))


@triton.jit
def _put(ptr, offs, v, mask, ATOMIC: tl.constexpr):
    if ATOMIC:
        tl.atomic_add(ptr + offs, v, mask=mask)
    else:
        tl.store(ptr + offs, v, mask=mask)


@triton.jit
def _color_bwd_kernel(feat_ptr, FS, x_ptr, n_ptr, d_ptr, w1a_ptr, w1s_ptr, b1_ptr, w2_ptr, b2_ptr, w3_ptr, b3_ptr,
                      g_ptr, dfeat_ptr, dn_ptr, part_ptr, N, TILES_PER_PROG, F: tl.constexpr, DEG: tl.constexpr,
                      H: tl.constexpr, AP: tl.constexpr, ATOMIC: tl.constexpr, PREC: tl.constexpr,
                      BLOCK: tl.constexpr, WPREC: tl.constexpr = "tf32x3", ZPREC: tl.constexpr = "tf32x3"):
    """Backward of :func:`_color_fwd_kernel` over ``TILES_PER_PROG`` tiles: ``dL/d feat`` (N, F), ``dL/d normal``
    (N, 3), and this program's sums of the weight gradients, their products in ``WPREC`` (atomically added, or
    written to its row of ``part_ptr``; layout: dW1a (H, AP), dW1s (H, 16), db1 (H), dW2 (H, H), db2 (H), dW3 (16, H),
    db3 (16))."""
    hc = tl.arange(0, H)
    c16 = tl.arange(0, 16)
    acol = tl.arange(0, AP)
    w1a, w1s, b1, w2, b2, w3, b3 = _weights(w1a_ptr, w1s_ptr, b1_ptr, w2_ptr, b2_ptr, w3_ptr, b3_ptr, H, AP)
    acc_w1a = tl.zeros([H, AP], dtype=tl.float32)
    acc_w1s = tl.zeros([H, 16], dtype=tl.float32)
    acc_w2 = tl.zeros([H, H], dtype=tl.float32)
    acc_w3 = tl.zeros([16, H], dtype=tl.float32)
    acc_b1 = tl.zeros([H], dtype=tl.float32)
    acc_b2 = tl.zeros([H], dtype=tl.float32)
    acc_b3 = tl.zeros([16], dtype=tl.float32)
    for t in range(TILES_PER_PROG):
        rows = (tl.program_id(0) * TILES_PER_PROG + t) * BLOCK + tl.arange(0, BLOCK)
        rmask = rows < N
        a = _input_tile(feat_ptr, FS, x_ptr, n_ptr, rows, rmask, F, AP)
        s = _sh_tile(d_ptr, rows, rmask, DEG, BLOCK)
        z1, h1, z2, h2, rgb = _layers(a, s, w1a, w1s, b1, w2, b2, w3, b3, ZPREC)  # the forward's values
        g = tl.load(g_ptr + rows[:, None] * 3 + c16[None, :], mask=rmask[:, None] & (c16[None, :] < 3),
                    other=0.0)  # (BLOCK, 16): rows past N and padded columns contribute nothing
        d3 = g * rgb * (1.0 - rgb)
        acc_w3 += tl.dot(tl.trans(d3), h2, input_precision=WPREC)
        acc_b3 += tl.sum(d3, 0)
        d2 = tl.where(z2 > 0, tl.dot(d3, w3, input_precision=PREC), 0.0)
        acc_w2 += tl.dot(tl.trans(d2), h1, input_precision=WPREC)
        acc_b2 += tl.sum(d2, 0)
        d1 = tl.where(z1 > 0, tl.dot(d2, w2, input_precision=PREC), 0.0)
        acc_w1a += tl.dot(tl.trans(d1), a, input_precision=WPREC)
        acc_w1s += tl.dot(tl.trans(d1), s, input_precision=WPREC)
        acc_b1 += tl.sum(d1, 0)
        da = tl.dot(d1, w1a, input_precision=PREC)  # (BLOCK, AP): dL/d [feat, x, normal, 0]
        r = rows[:, None]
        m = rmask[:, None]
        c = acol[None, :]
        tl.store(dfeat_ptr + r * F + c, da, mask=m & (c < F))
        tl.store(dn_ptr + r * 3 + (c - F - 3), da, mask=m & (c >= F + 3) & (c < F + 6))
    base = part_ptr if ATOMIC else part_ptr + tl.program_id(0).to(tl.int64) * (H * AP + H * H + 34 * H + 16)
    o = 0
    _put(base, o + hc[:, None] * AP + acol[None, :], acc_w1a, hc[:, None] < H, ATOMIC)
    o += H * AP
    _put(base, o + hc[:, None] * 16 + c16[None, :], acc_w1s, hc[:, None] < H, ATOMIC)
    o += H * 16
    _put(base, o + hc, acc_b1, hc < H, ATOMIC)
    o += H
    _put(base, o + hc[:, None] * H + hc[None, :], acc_w2, hc[:, None] < H, ATOMIC)
    o += H * H
    _put(base, o + hc, acc_b2, hc < H, ATOMIC)
    o += H
    _put(base, o + c16[:, None] * H + hc[None, :], acc_w3, c16[:, None] < 16, ATOMIC)
    o += 16 * H
    _put(base, o + c16, acc_b3, c16 < 16, ATOMIC)


def _padded_weights(field: NeuSField) -> tuple[torch.Tensor, ...]:
    """The colour network's parameters laid out for the kernels: W1a (H, AP) = W1's [feat, x, normal] columns and
    W1s (H, 16) = its SH columns, each zero-padded; b1 (H,); W2 (H, H); b2 (H,); W3 (16, H) and b3 (16,) zero-padded
    rows. Made outside autograd (the backward returns gradients of the modules' own parameters)."""
    l1, l2, l3 = field.color_layers
    nf = field.cfg.feature_dim + 6
    ap = _pow2(nf)
    with torch.no_grad():
        W1 = l1.weight
        w1a = F.pad(W1[:, :nf], (0, ap - nf)).contiguous()
        w1s = F.pad(W1[:, nf:], (0, SP - (W1.shape[1] - nf))).contiguous()
        w3 = F.pad(l3.weight, (0, 0, 0, OP - 3)).contiguous()
        b3 = F.pad(l3.bias, (0, OP - 3)).contiguous()
    return w1a, w1s, l1.bias.detach().contiguous(), l2.weight.detach().contiguous(), l2.bias.detach().contiguous(), \
        w3, b3


class ColorFunction(torch.autograd.Function):
    """rgb (N, 3) of the two-hidden-layer colour network at (feat, x, normal, view_dir), differentiable w.r.t.
    ``feat``, ``normal`` and the six parameters (not w.r.t. ``x`` and ``view_dir``)."""

    @staticmethod
    def forward(ctx, feat: torch.Tensor, x: torch.Tensor, normal: torch.Tensor, view_dir: torch.Tensor,  # noqa: ANN001
                deg: int, prec: str, bprec: str, padded: tuple[torch.Tensor, ...], W1: torch.Tensor, b1: torch.Tensor,
                W2: torch.Tensor, b2: torch.Tensor, W3: torch.Tensor, b3: torch.Tensor) -> torch.Tensor:
        n, nf = feat.shape[0], feat.shape[1]
        H = W2.shape[0]
        w1a = padded[0]
        out = x.new_empty(n, 3)
        if n:
            _color_fwd_kernel[(triton.cdiv(n, COLOR_ROWS),)](
                feat, feat.stride(0), x, normal, view_dir, *padded, out, n, F=nf, DEG=deg, H=H, AP=w1a.shape[1],
                PREC=prec, BLOCK=COLOR_ROWS, num_warps=COLOR_WARPS)
        ctx.save_for_backward(feat, x, normal, view_dir, *padded)
        ctx.deg, ctx.n_sh, ctx.prec, ctx.bprec = deg, W1.shape[1] - nf - 6, prec, bprec
        ctx.set_materialize_grads(False)
        return out

    @staticmethod
    def backward(ctx, d_rgb: torch.Tensor | None):  # noqa: ANN001, ANN205
        feat, x, normal, view_dir, *padded = ctx.saved_tensors
        if d_rgb is None:
            return (None,) * 14
        n, nf = feat.shape
        w1a = padded[0]
        H, AP = w1a.shape
        sizes = (H * AP, H * 16, H, H * H, H, 16 * H, 16)  # the kernel's layout of the sums (its docstring)
        total = sum(sizes)
        d_feat = feat.new_empty(n, nf)
        d_normal = feat.new_empty(n, 3)
        per_prog = max(1, COLOR_TILES_PER_PROGRAM)
        programs = max(1, triton.cdiv(triton.cdiv(n, COLOR_ROWS), per_prog))
        atomic = COLOR_REDUCE == "atomic"
        part = feat.new_zeros(total) if atomic else feat.new_empty(programs, total)
        if n:
            _color_bwd_kernel[(programs,)](
                feat, feat.stride(0), x, normal, view_dir, *padded, d_rgb.contiguous(), d_feat, d_normal, part, n,
                per_prog, F=nf, DEG=ctx.deg, H=H, AP=AP, ATOMIC=atomic, PREC=ctx.bprec, BLOCK=COLOR_ROWS,
                WPREC=weight_grad_precision(ctx.bprec), ZPREC=ctx.prec,
                num_warps=COLOR_WARPS, num_stages=COLOR_STAGES)
        else:
            part.zero_()
        sums = part if atomic else part.sum(0)
        dw1a, dw1s, db1, dw2, db2, dw3, db3 = torch.split(sums, sizes)
        dW1 = torch.cat([dw1a.view(H, AP)[:, :nf + 6], dw1s.view(H, 16)[:, :ctx.n_sh]], 1)
        need = ctx.needs_input_grad
        return (d_feat if need[0] else None, None, d_normal if need[2] else None, None, None, None, None, None,
                dW1 if need[8] else None, db1 if need[9] else None, dw2.view(H, H) if need[10] else None,
                db2 if need[11] else None, dw3.view(16, H)[:3] if need[12] else None, db3[:3] if need[13] else None)


def supports(field: NeuSField, x: torch.Tensor, normal: torch.Tensor, view_dir: torch.Tensor, feat: torch.Tensor
             ) -> bool:
    """Whether :func:`color` takes this field and input: float32 on CUDA (or in Triton's interpreter on the CPU),
    two hidden ReLU layers of a power-of-two width, features + 6 <= 64 columns, SH degree <= 4, and positions and
    view directions that need no gradient."""
    cfg = field.cfg
    layers = field.color_layers
    if not (enabled() and runs_kernels(x) and len(layers) == 3 and cfg.sh_degree <= 4):
        return False
    H = layers[0].out_features
    return (H >= 16 and H & (H - 1) == 0 and layers[1].out_features == H and layers[2].out_features == 3
            and cfg.feature_dim + 6 <= 64 and feat.shape[1] == cfg.feature_dim
            and all(t.dtype == torch.float32 and t.device == x.device for t in (x, normal, view_dir, feat))
            and layers[0].weight.dtype == torch.float32 and layers[0].weight.device == x.device
            and not x.requires_grad and not view_dir.requires_grad)


def color(field: NeuSField, x: torch.Tensor, normal: torch.Tensor, view_dir: torch.Tensor, feat: torch.Tensor
          ) -> torch.Tensor | None:
    """``field.color`` (N, 3) through the fused kernels, or None when :func:`supports` says no."""
    if not supports(field, x, normal, view_dir, feat):
        return None
    if feat.stride(1) != 1:
        feat = feat.contiguous()
    l1, l2, l3 = field.color_layers
    return ColorFunction.apply(feat, x.contiguous(), normal.contiguous(), view_dir.contiguous(), field.cfg.sh_degree,
                               input_precision(field), backward_precision(field), _padded_weights(field), l1.weight,
                               l1.bias, l2.weight, l2.bias, l3.weight, l3.bias)
