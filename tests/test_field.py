"""The reference field: hash-grid encoding, SH, SDF initialisation, derivatives."""

from __future__ import annotations

import math

import pytest
import torch

from backend.field import FieldConfig, HashGridConfig, HashGridEncoding, NeuSField, sh_encode


def dense_encoding(res: int = 4, features: int = 3) -> HashGridEncoding:
    enc = HashGridEncoding(HashGridConfig(n_levels=1, n_features=features, log2_table_size=12, base_resolution=res,
                                          finest_resolution=res))
    with torch.no_grad():
        enc.embeddings.normal_()
    return enc


def test_dense_level_hits_table_at_vertices_and_interpolates_linearly() -> None:
    res = 4
    enc = dense_encoding(res)
    assert bool(enc.dense_levels[0])
    ijk = torch.tensor([[0, 0, 0], [1, 2, 3], [4, 4, 4], [3, 0, 2]])
    feats = enc(ijk.float() / res)
    rows = ijk[:, 0] + ijk[:, 1] * (res + 1) + ijk[:, 2] * (res + 1) ** 2
    torch.testing.assert_close(feats, enc.embeddings[rows])
    # halfway along x between two vertices: the mean of their features
    a, b = torch.tensor([[1, 2, 3]]), torch.tensor([[2, 2, 3]])
    mid = enc((a.float() + 0.5 * (b - a).float()) / res)
    torch.testing.assert_close(mid, 0.5 * (enc(a.float() / res) + enc(b.float() / res)))


def test_levels_sizes_and_hashing() -> None:
    cfg = HashGridConfig(n_levels=16, n_features=2, log2_table_size=14, base_resolution=16, finest_resolution=2048)
    enc = HashGridEncoding(cfg)
    assert enc.resolutions[0] == 16 and abs(int(enc.resolutions[-1]) - 2048) <= 1
    assert bool(enc.dense_levels[0]) and not bool(enc.dense_levels[-1])
    assert int(enc.level_sizes.max()) <= 2**14
    x = torch.rand(5000, 3)
    rows, w = enc.corner_indices(x)
    lo = enc.level_offsets[None, :, None]
    hi = lo + enc.level_sizes[None, :, None]
    assert bool(((rows >= lo) & (rows < hi)).all()), "a corner indexes outside its level's table"
    torch.testing.assert_close(w.sum(-1), torch.ones(5000, 16))
    assert enc(x).shape == (5000, 32)


def test_progressive_levels_are_silent_and_get_no_gradient() -> None:
    enc = HashGridEncoding(HashGridConfig(n_levels=6, n_features=2, log2_table_size=12, finest_resolution=128))
    with torch.no_grad():
        enc.embeddings.normal_()
    enc.active_levels = 2
    out = enc(torch.rand(300, 3))
    assert out[:, 4:].abs().max() == 0 and out[:, :4].abs().max() > 0
    out.sum().backward()
    g = enc.embeddings.grad
    start = int(enc.level_offsets[2])
    assert g[start:].abs().max() == 0 and g[:start].abs().max() > 0


def test_encoding_first_and_second_derivatives_match_finite_differences() -> None:
    enc = HashGridEncoding(HashGridConfig(n_levels=3, n_features=2, log2_table_size=10, base_resolution=3,
                                          finest_resolution=40)).double()
    with torch.no_grad():
        enc.embeddings.normal_()
    x = (torch.rand(6, 3, dtype=torch.float64) * 0.8 + 0.1).requires_grad_(True)
    assert torch.autograd.gradcheck(enc, (x,), eps=1e-7, atol=1e-5)
    # the eikonal loss needs d/d(table) of d(out)/dx: check it the same way
    table = enc.embeddings

    def grad_wrt_x(tab: torch.Tensor) -> torch.Tensor:
        rows, w = enc.corner_indices(x)
        out = (tab[rows] * w[..., None]).sum((1, 2)).sum()
        (g,) = torch.autograd.grad(out, x, create_graph=True)
        return g

    assert torch.autograd.gradcheck(grad_wrt_x, (table.detach().clone().requires_grad_(True),), eps=1e-6, atol=1e-5)


def test_sh_basis_is_orthonormal_on_the_sphere() -> None:
    torch.manual_seed(0)
    d = torch.randn(200000, 3, dtype=torch.float64)
    d = d / d.norm(dim=-1, keepdim=True)
    y = sh_encode(d, 4)
    gram = (y.T @ y) * (4 * math.pi / len(d))  # Monte Carlo integral over the sphere
    torch.testing.assert_close(gram, torch.eye(16, dtype=torch.float64), atol=0.03, rtol=0)


def small_field(**kw: object) -> NeuSField:
    grid = HashGridConfig(n_levels=8, n_features=2, log2_table_size=14, finest_resolution=256)
    return NeuSField(FieldConfig(grid=grid, **kw))  # type: ignore[arg-type]


def test_sphere_initialisation() -> None:
    torch.manual_seed(0)
    field = small_field(sphere_init_radius=0.5)
    x = torch.rand(4000, 3) * 2 - 1
    sdf, _, grad = field.sdf_with_gradient(x, create_graph=False)
    err = (sdf - (x.norm(dim=-1) - 0.5)).abs()
    assert float(err.detach().mean()) < 0.2
    assert float(field.sdf(torch.zeros(1, 3))) < -0.2, "the centre must start inside"
    assert float(field.sdf(torch.full((1, 3), 0.95))) > 0.5, "the corners must start outside"
    assert 0.7 < float(grad.norm(dim=-1).mean()) < 1.3


def test_difference_normals() -> None:
    """Central-difference normals: on the initial (smooth) field they match the analytic gradient; the step is one
    cell of the finest active level unless set; the gradient is differentiable (first order) w.r.t. the table and
    the MLP, as the same differences taken one axis at a time; with create_graph=False it is detached; a mode that
    does not exist is a clear error."""
    from backend.config import TrainConfig
    from backend.errors import BackendError

    torch.manual_seed(0)
    analytic = small_field()
    fd = small_field(normals="finite_difference", normal_step=1e-3)
    fd.load_state_dict(analytic.state_dict())
    x = torch.rand(2000, 3) * 1.6 - 0.8
    s_a, f_a, g_a = analytic.sdf_with_gradient(x, create_graph=False)
    s_f, f_f, g_f = fd.sdf_with_gradient(x, create_graph=False)
    torch.testing.assert_close(s_f, s_a.detach())
    torch.testing.assert_close(f_f, f_a.detach())
    assert float((g_f - g_a).norm() / g_a.norm()) < 1e-3
    assert not g_f.requires_grad

    auto = small_field(normals="finite_difference")
    res = auto.encoding.level_resolutions
    for levels in (3, 8):
        auto.encoding.active_levels = levels
        assert auto.normal_step() == pytest.approx(2.0 / res[levels - 1])

    with torch.no_grad():  # a field whose grid matters, so that the table gets gradients
        auto.encoding.embeddings.normal_(0.0, 0.1)
        auto.sdf_layers[0].weight.normal_(0.0, 0.3)
    h = auto.normal_step()
    _, _, grad = auto.sdf_with_gradient(x, create_graph=True)
    ((grad.norm(dim=-1) - 1) ** 2).mean().backward()
    got = {k: p.grad.clone() for k, p in auto.named_parameters() if p.grad is not None}
    auto.zero_grad(set_to_none=True)
    axes = [(auto.geometry(x + h * e)[0] - auto.geometry(x - h * e)[0]) / (2 * h) for e in torch.eye(3)]
    ((torch.stack(axes, -1).norm(dim=-1) - 1) ** 2).mean().backward()
    want = {k: p.grad for k, p in auto.named_parameters() if p.grad is not None}
    assert got.keys() == want.keys() and "encoding.embeddings" in got
    for k in want:  # the same sums in another order (the head's bias gets +1 and -1 per point: about zero)
        assert float((got[k] - want[k]).norm()) < 1e-5 * max(float(want[k].norm()), 1.0), k

    cfg = TrainConfig(normals="sobel")
    with pytest.raises(BackendError, match="normals"):
        FieldConfig.from_train(cfg, has_masks=False)


def test_precision_reaches_the_field_and_is_checked() -> None:
    """Training's precision ("mixed" by default, ``--set precision=float32`` or ``tf32``) reaches the field built
    for training and extraction; an unknown precision is a clear error that names the choices. (What it changes
    runs on CUDA: ``test_gpu_tf32_precision_...``, ``test_gpu_mixed_precision_...``.)"""
    from backend.config import TrainConfig
    from backend.errors import BackendError

    assert FieldConfig(grid=HashGridConfig()).precision == "float32"
    assert FieldConfig.from_train(TrainConfig(), has_masks=False).precision == "mixed"
    assert FieldConfig.from_train(TrainConfig(precision="float32"), has_masks=False).precision == "float32"
    assert FieldConfig.from_train(TrainConfig(precision="tf32"), has_masks=True).precision == "tf32"
    assert FieldConfig.from_train(TrainConfig(precision="mixed"), has_masks=True).precision == "mixed"
    with pytest.raises(BackendError, match="precision") as err:
        FieldConfig.from_train(TrainConfig(precision="fp8"), has_masks=False)
    assert all(p in str(err.value.hint) for p in ("float32", "mixed", "tf32"))


def test_color_and_background_shapes_and_ranges() -> None:
    field = small_field()
    x = torch.rand(50, 3) - 0.5
    d = torch.nn.functional.normalize(torch.randn(50, 3), dim=-1)
    _, feat = field.geometry(x)
    rgb = field.color(x, d, d, feat)
    assert rgb.shape == (50, 3) and float(rgb.min()) >= 0 and float(rgb.max()) <= 1
    bg = field.background(d)
    assert bg is not None and bg.back.shape == (50, 3) and bg.front is None
    assert small_field(background="none").background(d) is None
    assert float(field.inv_s()) == pytest.approx(math.exp(3.0), rel=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (run on the GPU machine: pytest -m gpu)")
def test_gpu_colour_network_with_aligned_rows_matches_cpu() -> None:
    """On CUDA the colour input is padded with zero columns to a multiple of 4 floats: same colour and same
    gradients (of the padded weight's real columns) as the unpadded CPU evaluation."""
    torch.manual_seed(0)
    field = NeuSField(FieldConfig(grid=HashGridConfig(n_levels=4, log2_table_size=12), background="none"))
    assert field.color_layers[0].in_features % 4 != 0  # the case being tested
    gpu = NeuSField(field.cfg).cuda()
    gpu.load_state_dict(field.state_dict())
    n = 1000
    x, normal = torch.rand(n, 3) * 2 - 1, torch.nn.functional.normalize(torch.randn(n, 3), dim=-1)
    d, feat = torch.nn.functional.normalize(torch.randn(n, 3), dim=-1), torch.randn(n, field.cfg.feature_dim)
    out = {}
    for name, f, dev in (("cpu", field, "cpu"), ("gpu", gpu, "cuda")):
        fe = feat.to(dev).clone().requires_grad_(True)  # a leaf of its own on each device
        rgb = f.color(x.to(dev), normal.to(dev), d.to(dev), fe)
        (rgb * torch.arange(3, device=dev)).sum().backward()
        out[name] = [rgb.detach().cpu(), fe.grad.cpu(), f.color_layers[0].weight.grad.cpu()]
    for a, b in zip(out["gpu"], out["cpu"]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_background_samples_lie_outside_the_sphere_in_ray_order() -> None:
    """Rays through the sphere: a quarter of the samples between the origin and the entry, the rest beyond the exit,
    increasing along the ray; rays that miss it: all from the origin on. None inside the sphere."""
    from backend.field import background_distances

    g = torch.Generator().manual_seed(0)
    origins = torch.nn.functional.normalize(torch.randn(400, 3, generator=g), dim=-1) * 3.0
    dirs = torch.nn.functional.normalize(-origins + torch.randn(400, 3, generator=g) * 1.5, dim=-1)
    t, front, u = background_distances(origins, dirs, 16, torch.rand(400, generator=g), 1.0)
    assert bool(((u >= 0) & (u <= 1)).all())
    assert t.shape == front.shape == (400, 16)
    assert bool((t[:, 1:] > t[:, :-1]).all()) and bool((t > 0).all())
    r = (origins[:, None] + dirs[:, None] * t[..., None]).norm(dim=-1)
    assert bool((r >= 1.0 - 1e-4).all()), "no background sample inside the region"
    b = (origins * dirs).sum(-1)
    hits = (b * b - (origins * origins).sum(-1) + 1.0 > 0) & (b < 0)
    assert 50 < int(hits.sum()) < 350
    assert bool((front.sum(1)[hits] == 4).all()) and not front[~hits].any()
    t_in = -b - torch.sqrt((b * b - (origins * origins).sum(-1) + 1.0).clamp_min(0))
    assert bool((t[hits][front[hits]].view(-1, 4) <= t_in[hits, None] + 1e-5).all())


def test_background_composites_in_ray_order() -> None:
    """front + T_front * (foreground + (1 - opacity) * back) is one volume rendering of the ray's pieces in order:
    checked against sequential alpha compositing of the background field's own samples around a foreground
    sample."""
    from backend.field import BackgroundConfig, background_distances

    torch.manual_seed(1)
    bg_cfg = BackgroundConfig(grid=HashGridConfig(n_levels=4, log2_table_size=10, finest_resolution=64), hidden=16,
                              samples=8)
    field = NeuSField(FieldConfig(grid=HashGridConfig(n_levels=4, log2_table_size=10, finest_resolution=64),
                                  background="field", bg=bg_cfg))
    with torch.no_grad():
        field.bg_field.encoding.embeddings.normal_(0, 1.0)
    origins = torch.tensor([[0.0, 0.0, -3.0], [0.0, 0.0, -3.0]])
    dirs = torch.nn.functional.normalize(torch.tensor([[0.05, 0.0, 1.0], [0.6, 0.0, 0.8]]), dim=-1)
    fg_rgb, fg_op = torch.tensor([[0.2, 0.9, 0.4], [0.0, 0.0, 0.0]]), torch.tensor([0.7, 0.0])
    with torch.no_grad():
        got = field.background(dirs, origins).composite(fg_rgb * fg_op[:, None], fg_op)
        t, front, _ = background_distances(origins, dirs, 8, None, 1.0, bg_cfg.front_fraction)
        pts = (origins[:, None] + dirs[:, None] * t[..., None]).reshape(-1, 3)
        deg = bg_cfg.sh_degree
        sh = sh_encode(dirs, deg)[:, None].expand(2, 8, deg * deg).reshape(-1, deg * deg)
        sigma, rgb = field.bg_field.query(pts, sh)
        alpha, rgb = 1 - torch.exp(-sigma.view(2, 8) / 8), rgb.view(2, 8, 3)
        env = field.environment(dirs)
        for i in range(2):
            color, trans = torch.zeros(3), 1.0
            pieces = [(alpha[i, k], rgb[i, k]) for k in range(8) if front[i, k]] + [(fg_op[i], fg_rgb[i])] + [
                (alpha[i, k], rgb[i, k]) for k in range(8) if not front[i, k]] + [(torch.tensor(1.0), env[i])]
            for a, c in pieces:
                color, trans = color + trans * a * c, trans * (1 - a)
            torch.testing.assert_close(got[i], color, rtol=1e-5, atol=1e-6)


def test_background_distortion_prefers_one_compact_place() -> None:
    """The distortion loss of the background's weights: all light from one sample costs less than the same light
    spread over the stretch, and it is differentiable."""
    from backend.field import BackgroundConfig, BackgroundField

    torch.manual_seed(2)
    bgf = BackgroundField(BackgroundConfig(grid=HashGridConfig(n_levels=2, log2_table_size=8, finest_resolution=16),
                                           hidden=8, samples=8))
    origins = torch.tensor([[0.0, 0.0, -3.0]])
    dirs = torch.tensor([[0.0, 0.0, 1.0]])
    spread = torch.full((8,), 2.0)  # haze: every sample a little opaque
    compact = torch.zeros(8)
    compact[6] = 16.0  # one opaque sample behind the sphere
    losses = []
    for sigma in (spread, compact):
        sig = sigma.clone().requires_grad_(True)
        bgf.query = lambda pts, sh, s=sig: (s, torch.full((len(pts), 3), 0.5))  # noqa: B023 - a fixed field
        loss = bgf(origins, dirs)[4]
        loss.sum().backward()
        assert sig.grad is not None and torch.isfinite(sig.grad).all()
        losses.append(float(loss))
    assert losses[1] < losses[0]
