"""Adam's update of one large float32 tensor in one Triton kernel (used by :class:`backend.optim.Adam` on the fast
path for the hash table on CUDA).

The update reads the parameter, its gradient and both moments and writes the parameter and the moments: 28 bytes
an element, so on a table of 12 M entries it is bound by memory bandwidth. PyTorch's fused multi-tensor kernel
(``torch._fused_adam_``) took 0.112 ms for the issue's field on an H200, about 3.1 TB/s. This kernel streams the one
contiguous tensor in wide blocks (each thread several consecutive elements) and does the same arithmetic in the same
order as that kernel (the moments first, then ``p -= lr / bc1 * m / (sqrt(v) / sqrt(bc2) + eps)`` with the bias
corrections ``bc = 1 - beta^step`` from the device-side step count), so parameters agree to float32 rounding.
Measured: docs/KERNELS.md, "The loss and the optimiser". ``NEUSBLEND_TRITON_ADAM=0`` turns it off.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .. import debug
from .hashgrid_triton import runs_kernels

ADAM_BLOCK = 2048  # 16 elements a thread; measured: docs/KERNELS.md
ADAM_WARPS = 4
MIN_NUMEL = 1 << 20  # smaller tensors stay in PyTorch's multi-tensor kernel (one launch for all of them)


def enabled() -> bool:
    """Whether the Triton update may run (``NEUSBLEND_TRITON_ADAM``, default on)."""
    return debug.on("NEUSBLEND_TRITON_ADAM")


def supports(p: torch.Tensor, grad: torch.Tensor, m: torch.Tensor, v: torch.Tensor, lr: float | torch.Tensor
             ) -> bool:
    """Whether this kernel takes the update: large contiguous float32 tensors on CUDA (or on the CPU in the
    interpreter), the learning rate a float or a one-element float32 tensor on the same device."""
    if not (enabled() and runs_kernels(p) and p.numel() >= MIN_NUMEL):
        return False
    ts = (p, grad, m, v)
    if any(t.dtype != torch.float32 or not t.is_contiguous() or t.device != p.device or t.shape != p.shape
           for t in ts):
        return False
    return not isinstance(lr, torch.Tensor) or (lr.numel() == 1 and lr.dtype == torch.float32
                                                and lr.device == p.device)


@triton.jit
def _adam_kernel(p_ptr, g_ptr, m_ptr, v_ptr, step_ptr, lr_ptr, lr_value, n, beta1, beta2, eps,
                 LR_PTR: tl.constexpr, BLOCK: tl.constexpr):
    step = tl.load(step_ptr)
    lr = tl.load(lr_ptr) if LR_PTR else lr_value
    bc1 = 1.0 - tl.exp2(step * tl.log2(beta1))
    bc2 = 1.0 - tl.exp2(step * tl.log2(beta2))
    step_size = lr / bc1
    bc2_sqrt = tl.sqrt(bc2)
    i = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = i < n
    g = tl.load(g_ptr + i, mask=mask, other=0.0)
    m = tl.load(m_ptr + i, mask=mask, other=0.0)
    v = tl.load(v_ptr + i, mask=mask, other=0.0)
    p = tl.load(p_ptr + i, mask=mask, other=0.0)
    m = beta1 * m + (1.0 - beta1) * g
    v = beta2 * v + (1.0 - beta2) * g * g
    p = p - step_size * m / (tl.sqrt(v) / bc2_sqrt + eps)
    tl.store(p_ptr + i, p, mask=mask)
    tl.store(m_ptr + i, m, mask=mask)
    tl.store(v_ptr + i, v, mask=mask)


def adam_update(p: torch.Tensor, grad: torch.Tensor, m: torch.Tensor, v: torch.Tensor, step: torch.Tensor,
                lr: float | torch.Tensor, beta1: float, beta2: float, eps: float) -> None:
    """Adam's update of ``p`` in place (``m``, ``v``: its moments, updated too; ``step``: the step count after this
    step, a 0-dim float32 tensor on ``p``'s device). All tensors of one shape (any), contiguous float32."""
    n = p.numel()
    on_device = isinstance(lr, torch.Tensor)  # read by the kernel (a captured step's rate), else passed by value
    _adam_kernel[(triton.cdiv(n, ADAM_BLOCK),)](p, grad, m, v, step, lr if on_device else step,
                                                0.0 if on_device else float(lr), n, float(beta1), float(beta2),
                                                float(eps), LR_PTR=on_device, BLOCK=ADAM_BLOCK, num_warps=ADAM_WARPS)
