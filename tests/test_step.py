"""The training step's losses: padded buffers (what the CUDA graph replays) equal the unpadded computation."""

from __future__ import annotations

import pytest
import torch

from backend.field import BackgroundConfig, FieldConfig, HashGridConfig, NeuSField
from backend.optim import Adam
from backend.step import GraphStep, LossWeights, StepInputs, step_losses


def make_field(seed: int, background: str, normals: str = "analytic") -> NeuSField:
    torch.manual_seed(seed)
    bg = BackgroundConfig(grid=HashGridConfig(n_levels=4, log2_table_size=10, finest_resolution=64), hidden=16,
                          samples=6)
    field = NeuSField(FieldConfig(grid=HashGridConfig(n_levels=6, log2_table_size=12, finest_resolution=128),
                                  background=background, normals=normals, bg=bg))
    with torch.no_grad():
        torch.nn.init.normal_(field.sdf_layers[0].weight, 0, 0.3)  # let the grid features matter
        field.encoding.embeddings.normal_(0, 0.1)
        if field.bg_field is not None:
            field.bg_field.encoding.embeddings.normal_(0, 0.5)
    return field


def random_batch(n_rays: int, seed: int, masks: bool) -> dict:
    g = torch.Generator().manual_seed(seed)
    counts = torch.randint(0, 12, (n_rays,), generator=g)
    ridx = torch.repeat_interleave(torch.arange(n_rays), counts)
    s = len(ridx)
    dirs = torch.nn.functional.normalize(torch.randn(n_rays, 3, generator=g), dim=-1)
    gt = torch.rand(n_rays, 3, generator=g)
    return {"pts": torch.rand(s, 3, generator=g) * 1.2 - 0.6, "dirs": dirs[ridx], "deltas": torch.full((s,), 0.02),
            "ray_indices": ridx, "ray_dirs": dirs, "gt": gt,
            "bg": torch.rand(n_rays, 3, generator=g) if masks else None,
            "mask": torch.rand(n_rays, generator=g) if masks else None,
            "rand_pts": torch.rand(40, 3, generator=g) * 2 - 1, "cos": 0.3,
            # cameras outside the unit sphere, for the background field
            "ray_origins": torch.nn.functional.normalize(torch.randn(n_rays, 3, generator=g), dim=-1) * 3.0,
            "bg_jitter": torch.rand(n_rays, generator=g)}


def spare(v: torch.Tensor | None) -> torch.Tensor | None:
    return None if v is None else torch.cat([v, torch.zeros_like(v[:1])])


@pytest.mark.parametrize("background", ["none", "env", "field"])
def test_padded_step_equals_unpadded(background: str) -> None:
    masks = background == "none"
    b = random_batch(50, seed=3, masks=masks)
    n = b["ray_dirs"].shape[0]
    with_bg = background == "field"
    kw = {"losses": LossWeights(eikonal=0.1, mask=0.1, rgb_loss="l1", distortion=0.01 if with_bg else 0.0,
                                opacity_entropy=0.0 if masks else 0.01)}

    ref_field = make_field(0, background)
    valid = torch.ones(n + 1)
    valid[-1] = 0
    x = StepInputs(pts=b["pts"], dirs=b["dirs"], deltas=b["deltas"], ray_indices=b["ray_indices"],
                   sample_valid=torch.ones(len(b["pts"])), ray_dirs=spare(b["ray_dirs"]), gt=spare(b["gt"]),
                   bg=spare(b["bg"]), mask=spare(b["mask"]), ray_valid=valid, inv_n_rays=torch.tensor(1.0 / n),
                   rand_pts=b["rand_pts"], cos_anneal=torch.tensor(b["cos"]),
                   ray_origins=spare(b["ray_origins"]) if with_bg else None,
                   bg_jitter=spare(b["bg_jitter"]) if with_bg else None)
    ref = step_losses(ref_field, x, **kw)
    ref["loss"].backward()
    ref_grads = [p.grad.clone() for p in ref_field.parameters()]
    if with_bg:  # the background field takes part: its table and networks get gradients
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in ref_field.bg_field.parameters())

    field = make_field(0, background)
    params = list(field.parameters())
    opt = torch.optim.SGD(params, lr=0.0)  # lr 0: the step leaves the parameters as they are
    gs = GraphStep(field, opt, params, max_rays=80, sample_capacity=len(b["pts"]) + 37, eik_points=40,
                   has_masks=masks, **kw)
    gs.load(b["pts"], b["dirs"], b["deltas"], b["ray_indices"], b["ray_dirs"], b["gt"], b["bg"], b["mask"],
            b["rand_pts"], b["cos"], ray_origins=b["ray_origins"] if with_bg else None,
            bg_jitter=b["bg_jitter"] if with_bg else None)
    assert int(gs.buf.sample_valid.sum()) == len(b["pts"]) and int(gs.buf.ray_valid.sum()) == n
    assert (gs.buf.ray_origins is not None) == with_bg
    assert gs.background_rows(n) == (81 if with_bg else None)  # the next power of two, at most the capacity
    if with_bg:  # never fewer rows than before: a wandering ray count must not capture the graph at every step
        small = GraphStep(field, opt, params, max_rays=5000, sample_capacity=64, eik_points=8, has_masks=False, **kw)
        assert [small.background_rows(r) for r in (900, 1500, 1000, 2100, 1900)] == [1024, 2048, 2048, 4096, 4096]
    gs.bg_rows = n if with_bg else None  # the background field on the valid rows only: the same step
    out = gs._body()
    for k in ("loss", "mse", "eikonal", "mask"):
        torch.testing.assert_close(out[k], ref[k].detach(), rtol=1e-5, atol=1e-6)
    for p, g in zip(params, ref_grads):
        torch.testing.assert_close(p.grad, g, rtol=1e-4, atol=1e-6)


@pytest.mark.gpu
@pytest.mark.parametrize("path,normals,background", [("triton", "analytic", "none"), ("reference", "analytic", "none"),
                                                     ("triton", "finite_difference", "none"),
                                                     ("triton", "analytic", "field"),
                                                     ("reference", "analytic", "field")])
def test_cuda_graph_replay_matches_eager_steps(path: str, normals: str, background: str) -> None:
    """Replaying the captured step moves the parameters exactly as the same eager steps do, on the fast path and on
    the reference (whose step must not synchronise with the host either, or capture fails), with analytic or
    finite-difference normals.

    Capturing runs one real warm-up step on the loaded batch and the first replay runs it again, so the graphed
    sequence b1, b2, b3 equals the eager sequence b1, b1, b2, b3.
    """
    from backend.kernels import use_fast_path

    dev = torch.device("cuda")
    kw = {"losses": LossWeights(eikonal=0.1, mask=0.1, rgb_loss="l1")}
    masks = background == "none"
    batches = [random_batch(300, seed=s, masks=masks) for s in (5, 6, 7)]
    results = []
    for graphed in (False, True):
        field = make_field(1, background, normals).to(dev)
        use_fast_path(field, path)
        params = list(field.parameters())
        opt = Adam([{"params": params, "lr": torch.tensor(1e-2, device=dev)}])  # the trainer's, capturable
        gs = GraphStep(field, opt, params, max_rays=400, sample_capacity=4000, eik_points=40, has_masks=masks, **kw)
        sequence = batches if graphed else [batches[0], *batches]
        for b in sequence:
            m = {k: (v.to(dev) if isinstance(v, torch.Tensor) else v) for k, v in b.items()}
            gs.load(m["pts"], m["dirs"], m["deltas"], m["ray_indices"], m["ray_dirs"], m["gt"], m["bg"], m["mask"],
                    m["rand_pts"], m["cos"], ray_origins=m["ray_origins"], bg_jitter=m["bg_jitter"])
            if graphed:
                gs.run(key=0)
            else:
                opt.zero_grad(set_to_none=True)
                gs._body()
        torch.cuda.synchronize()
        results.append([p.detach().clone() for p in params])
        if graphed:
            assert gs.captures == 1
    for a, b in zip(*results):
        torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-4)


def test_opacity_entropy_pushes_rays_to_be_opaque_or_clear() -> None:
    """Without masks, the opacity entropy term adds to the loss (it is part of what is optimised); with masks it
    plays no part (the mask loss decides the opacity there)."""
    b = random_batch(40, seed=9, masks=False)
    n = b["ray_dirs"].shape[0]
    valid = torch.ones(n + 1)
    valid[-1] = 0
    x = StepInputs(pts=b["pts"], dirs=b["dirs"], deltas=b["deltas"], ray_indices=b["ray_indices"],
                   sample_valid=torch.ones(len(b["pts"])), ray_dirs=spare(b["ray_dirs"]), gt=spare(b["gt"]),
                   bg=None, mask=None, ray_valid=valid, inv_n_rays=torch.tensor(1.0 / n), rand_pts=b["rand_pts"],
                   cos_anneal=torch.tensor(b["cos"]))
    field = make_field(0, "env")
    kw = {"losses": LossWeights(eikonal=0.1, mask=0.1, rgb_loss="l1")}
    plain = step_losses(field, x, **kw)["loss"]
    entropy = {"losses": LossWeights(eikonal=0.1, mask=0.1, rgb_loss="l1", opacity_entropy=0.5)}
    with_entropy = step_losses(field, x, **entropy)["loss"]
    assert float(with_entropy) > float(plain)
    masked = random_batch(40, seed=9, masks=True)
    xm = StepInputs(pts=masked["pts"], dirs=masked["dirs"], deltas=masked["deltas"],
                    ray_indices=masked["ray_indices"], sample_valid=torch.ones(len(masked["pts"])),
                    ray_dirs=spare(masked["ray_dirs"]), gt=spare(masked["gt"]), bg=spare(masked["bg"]),
                    mask=spare(masked["mask"]), ray_valid=valid, inv_n_rays=torch.tensor(1.0 / n),
                    rand_pts=masked["rand_pts"], cos_anneal=torch.tensor(masked["cos"]))
    assert float(step_losses(field, xm, **entropy)["loss"]) == pytest.approx(
        float(step_losses(field, xm, **kw)["loss"]))
