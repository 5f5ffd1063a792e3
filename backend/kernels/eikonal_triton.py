"""The eikonal loss's sum in one Triton kernel each way (fast path of :meth:`backend.field.NeuSField.eikonal_sum`).

The reference computes ``sum_i w_i (|g_i| - 1)^2`` over SDF gradients ``g`` (N, 3) as a chain of PyTorch operations
(norm, subtract, square, multiply by the weights, sum) and autograd adds as many backward kernels (the norm's
backward alone takes three: a division, a product and a fill where the norm is zero). At the issue's 2^18 points a
step these small kernels took about 30 us of a 1.36 ms field step on an H200 (docs/KERNELS.md). Here:

- forward: each program reads ``BLOCK`` gradients (and weights), sums ``w (|g| - 1)^2`` and adds its sum to the
  scalar result with one atomic (the order of those additions varies from run to run, as in any atomic sum);
- backward, given ``go = dL/d sum`` (a device scalar: nothing is synchronised with the host):
  ``dL/dg_i = go w_i 2 (|g_i| - 1) g_i / |g_i|``, zero where ``|g_i| = 0`` (as the reference's norm backward).

The weights are constants (a validity mask in training): their gradient is not computed, and :func:`supports` sends
weights that require one to the reference. The backward is not differentiable again (the loss's gradient feeds the
geometry node's backward, which holds the second-order terms). ``NEUSBLEND_FUSED_EIKONAL=0`` turns this path off.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch.autograd.function import once_differentiable

from .. import debug
from .hashgrid_triton import runs_kernels

EIK_BLOCK = 1024
EIK_WARPS = 4


def enabled() -> bool:
    """Whether the fused eikonal sum may run (``NEUSBLEND_FUSED_EIKONAL``, default on)."""
    return debug.on("NEUSBLEND_FUSED_EIKONAL")


def supports(grad: torch.Tensor, weight: torch.Tensor | None) -> bool:
    """Whether the kernels take these inputs: float32 (N, 3) gradients on CUDA (or on the CPU in the interpreter),
    and weights that are None or a float32 (N,) tensor on the same device that needs no gradient."""
    if not (enabled() and runs_kernels(grad) and grad.dtype == torch.float32 and grad.dim() == 2
            and grad.shape[1] == 3):
        return False
    return weight is None or (weight.dtype == torch.float32 and weight.shape == grad.shape[:1]
                              and weight.device == grad.device and not weight.requires_grad)


@triton.jit
def _eik_fwd_kernel(g_ptr, w_ptr, out_ptr, n, HAS_W: tl.constexpr, BLOCK: tl.constexpr):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = i < n
    gx = tl.load(g_ptr + 3 * i, mask=m, other=0.0)
    gy = tl.load(g_ptr + 3 * i + 1, mask=m, other=0.0)
    gz = tl.load(g_ptr + 3 * i + 2, mask=m, other=0.0)
    r = tl.sqrt(gx * gx + gy * gy + gz * gz) - 1.0
    e = r * r
    if HAS_W:
        e = e * tl.load(w_ptr + i, mask=m, other=0.0)
    e = tl.where(m, e, 0.0)
    tl.atomic_add(out_ptr, tl.sum(e, axis=0))


@triton.jit
def _eik_bwd_kernel(g_ptr, w_ptr, go_ptr, dg_ptr, n, HAS_W: tl.constexpr, BLOCK: tl.constexpr):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = i < n
    gx = tl.load(g_ptr + 3 * i, mask=m, other=0.0)
    gy = tl.load(g_ptr + 3 * i + 1, mask=m, other=0.0)
    gz = tl.load(g_ptr + 3 * i + 2, mask=m, other=0.0)
    norm = tl.sqrt(gx * gx + gy * gy + gz * gz)
    c = 2.0 * tl.load(go_ptr) * (norm - 1.0) / tl.where(norm > 0.0, norm, 1.0)
    c = tl.where(norm > 0.0, c, 0.0)
    if HAS_W:
        c = c * tl.load(w_ptr + i, mask=m, other=0.0)
    tl.store(dg_ptr + 3 * i, c * gx, mask=m)
    tl.store(dg_ptr + 3 * i + 1, c * gy, mask=m)
    tl.store(dg_ptr + 3 * i + 2, c * gz, mask=m)


class EikonalSumFunction(torch.autograd.Function):
    """``total = EikonalSumFunction.apply(grad, weight)``: ``sum_i weight_i (|grad_i| - 1)^2``, a 0-dim tensor.

    Args (forward): grad: (N, 3) float32 SDF gradients; weight: (N,) float32 or None (all ones).
    Backward: ``dL/d grad`` (N, 3); None for the weights.
    """

    @staticmethod
    def forward(ctx, grad: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:  # noqa: ANN001
        grad = grad.contiguous()
        weight = weight.contiguous() if weight is not None else None
        n = grad.shape[0]
        out = torch.zeros((), device=grad.device)
        if n:
            _eik_fwd_kernel[(triton.cdiv(n, EIK_BLOCK),)](grad, weight if weight is not None else grad, out, n,
                                                          HAS_W=weight is not None, BLOCK=EIK_BLOCK,
                                                          num_warps=EIK_WARPS)
        ctx.save_for_backward(grad, weight)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, go: torch.Tensor) -> tuple[torch.Tensor, None]:  # noqa: ANN001
        grad, weight = ctx.saved_tensors
        n = grad.shape[0]
        dg = torch.empty_like(grad)
        if n:
            _eik_bwd_kernel[(triton.cdiv(n, EIK_BLOCK),)](grad, weight if weight is not None else grad,
                                                          go.contiguous(), dg, n, HAS_W=weight is not None,
                                                          BLOCK=EIK_BLOCK, num_warps=EIK_WARPS)
        return dg, None


def eikonal_sum(grad: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor | None:
    """``sum_i weight_i (|grad_i| - 1)^2`` (0-dim) by the kernels, or None when :func:`supports` says no.

    Args: grad: (N, 3) SDF gradients; weight: (N,) or None.
    """
    if not supports(grad, weight):
        return None
    return EikonalSumFunction.apply(grad, weight)
