"""The trainer's Adam (``backend/optim.py``) against ``torch.optim.Adam``: same updates, checkpoints in both
directions, and no import of ``torch._dynamo``."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

HAS_CUDA = torch.cuda.is_available()
if not HAS_CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")  # the Triton update runs in the interpreter (before triton loads)

from backend.optim import Adam, _plain_adam  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
needs_triton = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton not installed")


def make_params(seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(shape, generator=g)) for shape in ((300, 2), (7, 5), (), (4,))]


def groups(params: list[torch.Tensor], lr: float | torch.Tensor) -> list[dict]:
    return [{"params": params[:2], "lr": lr, "base_lr": 1e-2}, {"params": params[2:3], "lr": 1e-3},
            {"params": params[3:], "lr": 5e-2}]


def run(opt, params: list[torch.Tensor], steps: int, seed: int) -> None:  # noqa: ANN001
    g = torch.Generator().manual_seed(seed)
    for i in range(steps):
        opt.zero_grad(set_to_none=True)
        loss = sum(((p - torch.randn(p.shape, generator=g)) ** 2).sum() for p in params[: 3 if i % 3 else 4])
        loss.backward()  # the last parameter has no gradient every third step: it must not move then
        opt.step()


@pytest.mark.parametrize("tensor_lr", [False, True])
def test_adam_matches_torch(tensor_lr: bool) -> None:
    ours_p, ref_p = make_params(0), make_params(0)
    lr = torch.tensor(1e-2) if tensor_lr else 1e-2
    ours = Adam(groups(ours_p, lr), betas=(0.9, 0.99), eps=1e-15)
    ref = torch.optim.Adam(groups(ref_p, 1e-2), betas=(0.9, 0.99), eps=1e-15)
    run(ours, ours_p, 12, seed=1)
    run(ref, ref_p, 12, seed=1)
    for a, b in zip(ours_p, ref_p):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert float(ours.state[ours_p[0]]["step"]) == 12 and float(ours.state[ours_p[3]]["step"]) == 4


def test_falls_back_where_the_fused_kernel_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    """An older torch (no fused kernel for the device, or none taking a tensor rate): the same updates."""
    ours_p, ref_p = make_params(5), make_params(5)

    def missing(*args, **kwargs) -> None:  # noqa: ANN002, ANN003
        raise TypeError("_fused_adam_() received an invalid combination of arguments")

    monkeypatch.setattr(torch, "_fused_adam_", missing)
    ours = Adam(groups(ours_p, torch.tensor(1e-2)), betas=(0.9, 0.99), eps=1e-15)
    run(ours, ours_p, 6, seed=2)
    monkeypatch.undo()
    ref = torch.optim.Adam(groups(ref_p, 1e-2), betas=(0.9, 0.99), eps=1e-15)
    run(ref, ref_p, 6, seed=2)
    for a, b in zip(ours_p, ref_p):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_plain_update_matches_the_fused_kernel() -> None:
    """The fallback for devices without the fused kernel computes the same update."""
    a, b = make_params(2), make_params(2)
    grads = [torch.randn_like(p) for p in a]
    m0 = [torch.randn_like(p) for p in a]
    v0 = [torch.rand_like(p) for p in a]
    states = [[t.clone() for t in m0] for _ in range(2)]
    sq = [[t.clone() for t in v0] for _ in range(2)]
    steps = [[torch.tensor(3.0) for _ in a] for _ in range(2)]
    with torch.no_grad():
        torch._fused_adam_(a, grads, states[0], sq[0], [], steps[0], lr=0.01, beta1=0.9, beta2=0.99,
                           weight_decay=0.0, eps=1e-15, amsgrad=False, maximize=False)
        _plain_adam(b, grads, states[1], sq[1], steps[1], 0.01, 0.9, 0.99, 1e-15)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-7)


def test_checkpoints_load_either_way() -> None:
    """A state saved by ``torch.optim.Adam`` continues in ours and the other way round, as if never interrupted."""
    p_ref, p_a, p_b = make_params(3), make_params(3), make_params(3)
    ref = torch.optim.Adam(groups(p_ref, 1e-2), betas=(0.9, 0.99), eps=1e-15)
    run(ref, p_ref, 10, seed=4)

    torch_first = torch.optim.Adam(groups(p_a, 1e-2), betas=(0.9, 0.99), eps=1e-15)
    run(torch_first, p_a, 5, seed=4)
    ours = Adam(groups(p_a, torch.tensor(0.5)), betas=(0.9, 0.99), eps=1e-15)  # a tensor rate keeps its tensor
    lr_tensor = ours.param_groups[0]["lr"]
    ours.load_state_dict(torch_first.state_dict())
    assert ours.param_groups[0]["lr"] is lr_tensor and float(lr_tensor) == pytest.approx(1e-2)
    ours_first = Adam(groups(p_b, 1e-2), betas=(0.9, 0.99), eps=1e-15)
    run(ours_first, p_b, 5, seed=4)
    torch_then = torch.optim.Adam(groups(p_b, 1e-2), betas=(0.9, 0.99), eps=1e-15)
    torch_then.load_state_dict(ours_first.state_dict())
    # the same five remaining draws as the uninterrupted run
    g = torch.Generator().manual_seed(4)
    draws = []
    for i in range(10):
        draws.append([torch.randn(p.shape, generator=g) for p in p_ref[: 3 if i % 3 else 4]])
    for opt, params in ((ours, p_a), (torch_then, p_b)):
        for i in range(5, 10):
            opt.zero_grad(set_to_none=True)
            sum(((p - t) ** 2).sum() for p, t in zip(params, draws[i])).backward()
            opt.step()
        for a, b in zip(params, p_ref):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="parameter groups"):
        Adam([{"params": p_a, "lr": 1.0}]).load_state_dict(ref.state_dict())


def test_making_one_does_not_import_dynamo() -> None:
    code = ("import sys, torch; from backend.optim import Adam; p = torch.nn.Parameter(torch.zeros(3)); "
            "o = Adam([{'params': [p], 'lr': 0.1}]); p.grad = torch.ones(3); o.step(); o.state_dict(); "
            "print('torch._dynamo' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


@needs_triton
@pytest.mark.parametrize("tensor_lr", [False, True])
def test_triton_update_matches_the_fused_kernel(tensor_lr: bool) -> None:
    """The hash table's update (``backend/kernels/adam_triton.py``; in the interpreter without CUDA) against
    PyTorch's fused kernel over three steps (bias corrections of steps 1 to 3), the last block partial."""
    from backend.kernels import adam_triton

    dev = "cuda" if HAS_CUDA else "cpu"
    g = torch.Generator().manual_seed(11)
    n = 3 * adam_triton.ADAM_BLOCK // 2 + 5
    p0 = torch.randn(n, 2, generator=g).to(dev)
    ours = [p0.clone(), torch.zeros_like(p0), torch.zeros_like(p0), torch.zeros((), device=dev)]
    ref = [p0.clone(), torch.zeros_like(p0), torch.zeros_like(p0), torch.zeros((), device=dev)]
    lr = torch.tensor(0.01, device=dev) if tensor_lr else 0.01
    for _ in range(3):
        grad = torch.randn(n, 2, generator=g).to(dev)
        ours[3] += 1
        ref[3] += 1
        adam_triton.adam_update(ours[0], grad, ours[1], ours[2], ours[3], lr, 0.9, 0.99, 1e-15)
        torch._fused_adam_([ref[0]], [grad], [ref[1]], [ref[2]], [], [ref[3]], lr=lr, beta1=0.9, beta2=0.99,
                           weight_decay=0.0, eps=1e-15, amsgrad=False, maximize=False)
    for a, b in zip(ours[:3], ref[:3]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    assert not torch.equal(ours[0], p0)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs CUDA")
def test_gpu_large_tensors_take_the_triton_update(monkeypatch: pytest.MonkeyPatch) -> None:
    """On CUDA with ``triton=True`` (the fast path) the trainer's Adam updates a tensor of at least ``MIN_NUMEL``
    elements (the hash table) with the Triton kernel, the small ones with PyTorch's; without it (the reference
    path) none. Both: the same parameters as ``torch.optim.Adam`` after 12 steps."""
    from backend.kernels import adam_triton

    calls = []
    real = adam_triton.adam_update

    def counted(*args, **kwargs) -> None:  # noqa: ANN002, ANN003
        calls.append(args[0].numel())
        real(*args, **kwargs)

    monkeypatch.setattr(adam_triton, "adam_update", counted)
    g = torch.Generator().manual_seed(12)
    shapes = ((adam_triton.MIN_NUMEL // 2 + 3, 2), (7, 5), (4,))
    init = [torch.randn(s, generator=g) for s in shapes]
    ours_p = [torch.nn.Parameter(t.cuda()) for t in init]
    ref_p = [torch.nn.Parameter(t.cuda()) for t in init]
    ours = Adam([{"params": ours_p, "lr": torch.tensor(1e-2, device="cuda")}], betas=(0.9, 0.99), eps=1e-15,
                triton=True)
    ref = torch.optim.Adam([{"params": ref_p, "lr": 1e-2}], betas=(0.9, 0.99), eps=1e-15)
    plain_p = [torch.nn.Parameter(t.cuda()) for t in init]
    plain = Adam([{"params": plain_p, "lr": 1e-2}], betas=(0.9, 0.99), eps=1e-15)  # the reference path's
    for opt, params in ((ours, ours_p), (ref, ref_p), (plain, plain_p)):
        gen = torch.Generator(device="cuda").manual_seed(13)
        for _ in range(12):
            opt.zero_grad(set_to_none=True)
            sum(((p - torch.randn(p.shape, generator=gen, device="cuda")) ** 2).sum() for p in params).backward()
            opt.step()
    assert calls == [ours_p[0].numel()] * 12  # the large tensor only, and only with triton=True
    for a, b, c in zip(ours_p, ref_p, plain_p):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(c, b, rtol=1e-5, atol=1e-6)
