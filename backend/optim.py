"""Adam for the trainer, without ``torch.optim``.

Making the first ``torch.optim`` optimiser imports ``torch._dynamo`` (its methods are wrapped to keep the compiler
out), which took 2-5 s of a GPU run's set-up, most of a minute-long run's set-up after loading the photos. This class
keeps the parts the trainer uses: parameter groups with a float or device-tensor learning rate (a tensor makes the
step capturable in a CUDA graph), ``step``, ``zero_grad`` and ``state_dict`` / ``load_state_dict`` in
``torch.optim.Adam``'s layout, so checkpoints load either way. The update is PyTorch's fused multi-tensor Adam
kernel (``torch._fused_adam_``, the one ``torch.optim.Adam(fused=True)`` calls); where that kernel is missing for a
device, the same update in plain tensor operations. With ``triton=True`` (the fast path) large CUDA tensors, i.e.
the hash table, take :mod:`backend.kernels.adam_triton` instead, the same update at a higher memory bandwidth. No
weight decay, AMSGrad or maximisation.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

import torch

_TORCH_GROUP_DEFAULTS = {"weight_decay": 0.0, "amsgrad": False, "maximize": False, "foreach": None,
                         "capturable": False, "differentiable": False, "fused": None,
                         "decoupled_weight_decay": False}


class Adam:
    """Adam (Kingma and Ba) with bias correction, as ``torch.optim.Adam`` computes it.

    Args:
        groups: parameter groups, each a dict with ``params`` and ``lr`` (and any other keys the caller keeps, such
            as ``base_lr``); ``betas``, ``eps``: defaults for groups that do not set them.
        triton: update CUDA tensors of at least ``adam_triton.MIN_NUMEL`` elements with the Triton kernel (the
            fast path; the reference path keeps PyTorch's kernels only).
    """

    def __init__(self, groups: Iterable[dict[str, Any]], betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, triton: bool = False) -> None:
        self.triton = triton
        self.param_groups: list[dict[str, Any]] = []
        for g in groups:
            group = dict(g)
            group["params"] = list(group["params"])
            group.setdefault("betas", tuple(betas))
            group.setdefault("eps", float(eps))
            self.param_groups.append(group)
        self.state: dict[torch.Tensor, dict[str, torch.Tensor]] = {}
        self._plain_on: set[str] = set()  # device types where the fused kernel turned out missing

    def _params(self) -> list[torch.Tensor]:
        return [p for g in self.param_groups for p in g["params"]]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self._params():
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.zero_()

    def _state(self, p: torch.Tensor) -> dict[str, torch.Tensor]:
        st = self.state.get(p)
        if st is None:  # the step count lives on the parameter's device, so a captured step can advance it
            st = {"step": torch.zeros((), dtype=torch.float32, device=p.device),
                  "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
                  "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format)}
            self.state[p] = st
        return st

    @torch.no_grad()
    def step(self) -> None:
        """One update of every parameter that has a gradient (no host synchronisation)."""
        for g in self.param_groups:
            params = [p for p in g["params"] if p.grad is not None]
            if not params:
                continue
            states = [self._state(p) for p in params]
            grads = [p.grad for p in params]
            m = [s["exp_avg"] for s in states]
            v = [s["exp_avg_sq"] for s in states]
            steps = [s["step"] for s in states]
            beta1, beta2 = g["betas"]
            lr = g["lr"]
            torch._foreach_add_(steps, 1)  # one launch for all step counts
            if self.triton:  # the fast path: the hash table in its own kernel, the rest below
                rest = []
                for i, p in enumerate(params):
                    if not _triton_update(p, grads[i], m[i], v[i], steps[i], lr, beta1, beta2, g["eps"]):
                        rest.append(i)
                params, grads, m, v, steps = ([t[i] for i in rest] for t in (params, grads, m, v, steps))
                if not params:
                    continue
            device = params[0].device.type
            if device not in self._plain_on:
                try:
                    torch._fused_adam_(params, grads, m, v, [], steps, lr=lr, beta1=beta1, beta2=beta2,
                                       weight_decay=0.0, eps=g["eps"], amsgrad=False, maximize=False)
                    continue
                except (AttributeError, NotImplementedError, TypeError):  # no fused kernel for this device, or a
                    # torch without it (before 2.0) or its tensor-rate form (before 2.2; torch>=2.1 is supported)
                    self._plain_on.add(device)
            _plain_adam(params, grads, m, v, steps, lr, beta1, beta2, g["eps"])

    def state_dict(self) -> dict[str, Any]:
        """``torch.optim.Adam``'s layout: parameters numbered in group order."""
        index: dict[torch.Tensor, int] = {}
        groups = []
        for g in self.param_groups:
            packed = dict(_TORCH_GROUP_DEFAULTS)  # what torch.optim.Adam expects of a group it loads
            packed.update({k: v for k, v in g.items() if k != "params"})
            packed["params"] = [index.setdefault(p, len(index)) for p in g["params"]]
            groups.append(packed)
        state = {index[p]: dict(s) for p, s in self.state.items() if p in index}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` (or ``torch.optim.Adam.state_dict``) saved, onto these parameters."""
        saved = copy.deepcopy(state_dict)
        groups = saved["param_groups"]
        if len(groups) != len(self.param_groups) or any(
                len(a["params"]) != len(b["params"]) for a, b in zip(groups, self.param_groups)):
            raise ValueError("the saved optimiser state has other parameter groups than this optimiser")
        by_index = dict(zip((i for g in groups for i in g["params"]), self._params()))
        self.state = {}
        for i, s in saved["state"].items():
            p = by_index[int(i)]
            self.state[p] = {"step": torch.as_tensor(s["step"], dtype=torch.float32).to(p.device).reshape(()),
                             "exp_avg": s["exp_avg"].to(device=p.device, dtype=p.dtype),
                             "exp_avg_sq": s["exp_avg_sq"].to(device=p.device, dtype=p.dtype)}
        for g, sg in zip(self.param_groups, groups):
            for k, v in sg.items():
                if k == "params":
                    continue
                if k == "lr" and isinstance(g.get("lr"), torch.Tensor):
                    g["lr"].fill_(float(v))  # keep the tensor a captured step reads
                elif k == "lr":
                    g["lr"] = float(v)
                else:
                    g[k] = v


def _triton_update(p: torch.Tensor, grad: torch.Tensor, m: torch.Tensor, v: torch.Tensor, step: torch.Tensor,
                   lr: float | torch.Tensor, beta1: float, beta2: float, eps: float) -> bool:
    """Update a large CUDA tensor (the hash table) with :mod:`backend.kernels.adam_triton`; False (nothing done)
    where that kernel does not take it or Triton is missing."""
    if not p.is_cuda:
        return False
    try:
        from .kernels import adam_triton
    except Exception:  # noqa: BLE001 - no Triton: the multi-tensor kernel updates it
        return False
    if not adam_triton.supports(p, grad, m, v, lr):
        return False
    adam_triton.adam_update(p, grad, m, v, step, lr, beta1, beta2, eps)
    return True


def _plain_adam(params: list[torch.Tensor], grads: list[torch.Tensor], m: list[torch.Tensor],
                v: list[torch.Tensor], steps: list[torch.Tensor], lr: float | torch.Tensor, beta1: float,
                beta2: float, eps: float) -> None:
    """The fused kernel's update in tensor operations (steps already advanced)."""
    for p, g, ma, va, st in zip(params, grads, m, v, steps):
        ma.lerp_(g, 1 - beta1)
        va.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        bc1 = 1 - beta1 ** st
        bc2 = 1 - beta2 ** st
        denom = (va.sqrt() / bc2.sqrt()).add_(eps)
        p.sub_(lr * ma / (bc1 * denom))
