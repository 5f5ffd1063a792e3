"""Triton hash-grid kernels against the reference encoding: forward, first and second derivatives, field step.

Without CUDA the kernels run in Triton's CPU interpreter (``TRITON_INTERPRET=1``, set here before triton is
imported) on small inputs; those tests skip when triton is not installed. Tests marked ``gpu`` run the training
configuration (16 levels x 2 features, 2^19 table) on CUDA.

Every check draws fresh random inputs (never zeros), poisons output buffers with NaN so that an unwritten element
fails, and compares by relative error ||fast - ref|| / ||ref||, 2e-5 (float32 throughout; the kernels sum the 8
corners and the atomics in another order than the reference).
"""

from __future__ import annotations

import importlib.util
import os

import pytest
import torch

HAS_CUDA = torch.cuda.is_available()
if not HAS_CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")  # must precede the first import of triton

from backend.field import FieldConfig, HashGridConfig, HashGridEncoding, NeuSField, sh_encode  # noqa: E402
from backend.kernels import PATHS, current_path, path_reason, select_path, use_fast_path  # noqa: E402

HAS_TRITON = importlib.util.find_spec("triton") is not None
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # numpy deprecations in triton's interpreter
needs_triton = pytest.mark.skipif(not HAS_TRITON, reason="triton not installed: pip install triton to run the "
                                  "kernels (in its CPU interpreter without CUDA)")
DEV = "cuda" if HAS_CUDA else "cpu"
TOL = 2e-5
_seed = [int.from_bytes(os.urandom(4), "little")]


def fresh_generator() -> torch.Generator:
    """A new seed for every draw (printed on failure through the assertion messages)."""
    _seed[0] += 1
    return torch.Generator().manual_seed(_seed[0])


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    assert torch.isfinite(a).all(), "non-finite values (unwritten output?)"
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def make_encoding(n_levels: int = 6, log2: int = 10, base: int = 4, finest: int = 2048, features: int = 2,
                  active: int | None = None, device: str = DEV) -> tuple[HashGridEncoding, torch.Tensor]:
    """A reference encoding with a random N(0, 1) table (both dense and hashed levels) and its generator seed."""
    gen = fresh_generator()
    enc = HashGridEncoding(HashGridConfig(n_levels=n_levels, n_features=features, log2_table_size=log2,
                                          base_resolution=base, finest_resolution=finest))
    with torch.no_grad():
        enc.embeddings.copy_(torch.randn(enc.embeddings.shape, generator=gen))
    enc.active_levels = n_levels if active is None else active
    assert bool(enc.dense_levels.any()) and not bool(enc.dense_levels.all())
    return enc.to(device), gen


def random_points(n: int, gen: torch.Generator, device: str = DEV) -> torch.Tensor:
    """(n, 3) points in [-0.05, 1.05]^3 (the clamp is exercised), a few of them exactly on 0 and 1."""
    x = torch.rand(n, 3, generator=gen) * 1.1 - 0.05
    x[:4] = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [1.0, 0.0, 0.5], [0.25, 1.0, 0.0]])
    return x.to(device)


def meta_of(enc: HashGridEncoding):  # noqa: ANN201
    from backend.kernels.hashgrid_triton import LevelMeta

    return LevelMeta.from_encoding(enc, enc.embeddings.device)


# -------------------------------------------------------------------------------------------- path selection


def test_select_path_never_raises_and_explains() -> None:
    assert select_path("cpu") == "reference"
    assert "cpu" in path_reason()
    assert select_path("cuda:0") in PATHS  # without CUDA (or triton) this falls back instead of raising
    assert path_reason()
    odd = NeuSField(FieldConfig(grid=HashGridConfig(n_levels=2, n_features=4, log2_table_size=8, finest_resolution=32)))
    assert select_path("cuda", odd) == "reference"
    os.environ["NEUSBLEND_PATH"] = "reference"
    try:
        assert select_path("cuda") == "reference" and "NEUSBLEND_PATH" in path_reason()
    finally:
        del os.environ["NEUSBLEND_PATH"]


@needs_triton
def test_use_fast_path_keeps_parameters_and_round_trips() -> None:
    field = NeuSField(FieldConfig(grid=HashGridConfig(n_levels=4, log2_table_size=10, finest_resolution=64)))
    params = dict(field.named_parameters())
    keys = list(field.state_dict())
    use_fast_path(field, "triton")
    assert current_path(field) == "triton"
    assert list(field.state_dict()) == keys
    assert all(p is params[n] for n, p in field.named_parameters())
    use_fast_path(field, "reference")
    assert current_path(field) == "reference" and type(field.encoding) is HashGridEncoding
    with pytest.raises(ValueError):
        use_fast_path(field, "cuda-magic")


@needs_triton
def test_self_check_passes() -> None:
    from backend.kernels import self_check

    assert self_check(DEV, n_points=300 if DEV == "cpu" else 4000) == ""


# -------------------------------------------------------------------------------------------- kernels


def group_levels(monkeypatch: pytest.MonkeyPatch, group: int) -> None:
    """Run the level-grouped kernels with ``group`` levels per program (16: one group for every test grid)."""
    from backend.kernels import hashgrid_triton

    monkeypatch.setattr(hashgrid_triton, "LEVEL_GROUP", group)


def pair_reductions(monkeypatch: pytest.MonkeyPatch, on: bool) -> None:
    """Load the forward's and add the table gradient's x-neighbour corners together where their rows pair up
    (``on``), or each corner alone."""
    from backend.kernels import hashgrid_triton

    monkeypatch.setattr(hashgrid_triton, "PAIR_RED", on)
    monkeypatch.setattr(hashgrid_triton, "PAIR_LOAD", on)


@needs_triton
@pytest.mark.parametrize("active", [None, 4, 0])
@pytest.mark.parametrize("group", [16, 4])
@pytest.mark.parametrize("pairs", [True, False])
def test_forward_matches_reference(active: int | None, group: int, pairs: bool,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from backend.kernels.hashgrid_triton import encode

    group_levels(monkeypatch, group)
    pair_reductions(monkeypatch, pairs)
    enc, gen = make_encoding(active=active)
    L = enc.cfg.n_levels
    x = random_points(300, gen)
    out = torch.full((300, 2 * L), float("nan"), device=DEV)
    jac = torch.full((enc.active_levels, 3, 300, 2), float("nan"), device=DEV)
    encode(x, enc.embeddings.detach(), meta_of(enc), enc.active_levels, out=out, jac=jac)
    ref = enc(x)
    assert rel(out, ref) < TOL if enc.active_levels else out.abs().max() == 0, _seed
    ref_jac = reference_jacobian(enc, x)  # (N, 3, 2 L)
    ref_jac = ref_jac.reshape(300, 3, L, 2).permute(2, 1, 0, 3)[:enc.active_levels]
    if enc.active_levels:
        assert rel(jac, ref_jac) < TOL, _seed
    if active is not None:
        assert out[:, active * 2:].abs().max() == 0
    out2, none = encode(x, enc.embeddings.detach(), meta_of(enc), enc.active_levels)
    assert none is None and torch.equal(out2, out)


@needs_triton
def test_unsupported_layouts_fall_back_to_the_reference() -> None:
    """Four features per level: the kernels take two; the module must still compute the reference's values."""
    enc = HashGridEncoding(HashGridConfig(n_levels=3, n_features=4, log2_table_size=8, finest_resolution=32))
    with torch.no_grad():
        enc.embeddings.normal_()
    enc = enc.to(DEV)
    fast = HashGridEncoding(enc.cfg).to(DEV)
    fast.load_state_dict(enc.state_dict())
    from backend.kernels import TritonHashGridEncoding

    with pytest.raises(ValueError):  # use_fast_path refuses it
        use_fast_path(fast, "triton")
    fast.__class__ = TritonHashGridEncoding  # and the module, forced, computes through the reference
    x = torch.rand(50, 3, device=DEV)
    assert torch.equal(fast(x), enc(x))


def reference_jacobian(enc: HashGridEncoding, x: torch.Tensor) -> torch.Tensor:
    """(N, 3, L * F): d enc[n, k] / d x[n, d] of the reference, by forward-mode products."""
    cols = []
    for d in range(3):
        e = torch.zeros_like(x)
        e[:, d] = 1
        cols.append(torch.autograd.functional.jvp(lambda p: enc(p), x, e)[1])
    return torch.stack(cols, 1)


@needs_triton
def test_jacobian_products_match_reference() -> None:
    from backend.kernels.hashgrid_triton import encode, jac_t_vec, jac_vec

    enc, gen = make_encoding(active=5)
    x = random_points(300, gen)
    g = torch.randn(300, enc.n_output_dims, generator=gen).to(DEV)
    u = torch.randn(300, 3, generator=gen).to(DEV)
    _, jac = encode(x, enc.embeddings.detach(), meta_of(enc), enc.active_levels, jac=True)
    L = enc.cfg.n_levels
    gx = jac_t_vec(jac, g, L, out=torch.full((300, 3), float("nan"), device=DEV))
    dg = jac_vec(jac, u, L, out=torch.full_like(g, float("nan")))
    xr = x.clone().requires_grad_(True)
    (ref_x,) = torch.autograd.grad(enc(xr), xr, g)
    ref_g, _ = reference_second_order(enc, x, g, u)
    assert rel(gx, ref_x) < TOL and rel(dg, ref_g) < TOL, _seed
    dg_lm = jac_vec(jac, u, L, level_major=True)  # (n_active, N, 2), for the fused MLP backward
    assert dg_lm.shape == (5, 300, 2)
    assert rel(dg_lm, ref_g.view(300, L, 2).permute(1, 0, 2)[:5]) < TOL, _seed


@needs_triton
@pytest.mark.parametrize("active", [None, 4])
@pytest.mark.parametrize("group", [16, 4])
@pytest.mark.parametrize("pairs", [True, False])
def test_first_order_backward_matches_reference(active: int | None, group: int, pairs: bool,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from backend.kernels.hashgrid_triton import encode_backward

    group_levels(monkeypatch, group)
    pair_reductions(monkeypatch, pairs)
    enc, gen = make_encoding(active=active)
    x = random_points(300, gen)
    g = torch.randn(300, enc.n_output_dims, generator=gen).to(DEV)
    base = torch.randn(enc.embeddings.shape, generator=gen).to(DEV)  # the kernel adds to what is there
    gx = torch.full((300, 3), float("nan"), device=DEV)
    gt = base.clone()
    encode_backward(g, x, enc.embeddings.detach(), meta_of(enc), enc.active_levels, True, True, grad_x=gx,
                    grad_table=gt)
    xr = x.clone().requires_grad_(True)
    ref_x, ref_t = torch.autograd.grad(enc(xr), [xr, enc.embeddings], g)
    assert rel(gx, ref_x) < TOL, _seed
    assert rel(gt - base, ref_t) < TOL, _seed
    outside = ((x < 0) | (x > 1))
    assert gx[outside].abs().max() == 0  # clamped coordinates get no gradient, as in the reference
    # each gradient alone (the eikonal pass wants grad_x only, the final backward often the table only)
    gx_only, none_t = encode_backward(g, x, enc.embeddings.detach(), meta_of(enc), enc.active_levels, True, False)
    none_x, gt_only = encode_backward(g, x, enc.embeddings.detach(), meta_of(enc), enc.active_levels, False, True)
    assert none_t is None and none_x is None
    assert rel(gx_only, ref_x) < TOL and rel(gt_only, ref_t) < TOL, _seed


def reference_second_order(enc: HashGridEncoding, x: torch.Tensor, g: torch.Tensor, u: torch.Tensor
                           ) -> tuple[torch.Tensor, torch.Tensor]:
    """d<u, grad_x>/dg and d<u, grad_x>/d(table), grad_x = d<g, enc(x)>/dx, by autograd on the reference."""
    xr = x.clone().requires_grad_(True)
    gr = g.clone().requires_grad_(True)
    (gx,) = torch.autograd.grad(enc(xr), xr, gr, create_graph=True)
    dg, dt = torch.autograd.grad(gx, [gr, enc.embeddings], u)
    return dg, dt


@needs_triton
@pytest.mark.parametrize("active", [None, 4])
def test_second_order_matches_reference(active: int | None) -> None:
    from backend.kernels.hashgrid_triton import encode_backward2

    enc, gen = make_encoding(active=active)
    x = random_points(300, gen)
    g = torch.randn(300, enc.n_output_dims, generator=gen).to(DEV)
    u = torch.randn(300, 3, generator=gen).to(DEV)
    base = torch.randn(enc.embeddings.shape, generator=gen).to(DEV)
    dg = torch.full_like(g, float("nan"))
    dt = base.clone()
    encode_backward2(u, g, x, enc.embeddings.detach(), meta_of(enc), enc.active_levels, True, True, grad_g=dg,
                     grad_table=dt)
    ref_g, ref_t = reference_second_order(enc, x, g, u)
    assert rel(dg, ref_g) < TOL, _seed
    assert rel(dt - base, ref_t) < TOL, _seed


@needs_triton
@pytest.mark.parametrize("mode,with_out", [("jac", True), ("gather", True), ("jac", False)])
def test_autograd_function_all_derivatives_used_by_training(mode: str, with_out: bool,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Through the module: encoding, grad_x with create_graph, then the loss's gradients w.r.t. table and a head;
    also the table gradient kept in the graph (the v path of the backward function). Both derivative modes; without
    the encoding itself in the loss, the forward's node does not run in the second pass and the backward node must
    not defer its table term to it."""
    monkeypatch.setenv("NEUSBLEND_HASHGRID_MODE", mode)
    enc, gen = make_encoding(n_levels=5, active=4)
    fast = HashGridEncoding(enc.cfg).to(DEV)
    fast.load_state_dict(enc.state_dict())
    fast.active_levels = enc.active_levels
    use_fast_path(fast, "triton")
    x = random_points(300, gen)
    head = torch.randn(enc.n_output_dims, generator=gen).to(DEV)
    u = torch.randn(300, 3, generator=gen).to(DEV)
    vt = torch.randn(enc.embeddings.shape, generator=gen).to(DEV)

    def run(e: HashGridEncoding) -> list[torch.Tensor]:
        xx = x.clone().requires_grad_(True)
        h = head.clone().requires_grad_(True)
        out = e(xx)
        gx, gt = torch.autograd.grad((out * h).sum(), [xx, e.embeddings], create_graph=True)
        loss = (gx * u).sum() + (gt * vt).sum() + ((out ** 2).mean() if with_out else 0)
        return [out, gx, gt, *torch.autograd.grad(loss, [e.embeddings, h])]

    for name, a, b in zip(["out", "grad_x", "grad_table", "d/dtable", "d/dhead"], run(fast), run(enc)):
        assert rel(a, b) < TOL, (name, _seed)


def field_grads(field: NeuSField, x: torch.Tensor, d: torch.Tensor) -> dict[str, torch.Tensor]:
    """Gradients of all parameters of the benchmark's field loss (SDF, colour, eikonal: the double backward)."""
    field.zero_grad(set_to_none=True)
    sdf, feat, grad = field.sdf_with_gradient(x, create_graph=True)
    n = grad / grad.norm(dim=-1, keepdim=True).clamp_min(1e-6)
    rgb = field.color(x, n, d, feat)
    loss = rgb.mean() + sdf.abs().mean() + 0.1 * ((grad.norm(dim=-1) - 1) ** 2).mean()
    loss.backward()
    return {k: p.grad.clone() for k, p in field.named_parameters() if p.grad is not None}


def field_pair(cfg: FieldConfig, gen: torch.Generator, biases: bool = False) -> tuple[NeuSField, NeuSField]:
    """A reference field that looks trained (random table and SDF weights, so the grid and every layer matter) and
    a copy on the Triton path, both on DEV."""
    ref = NeuSField(cfg)
    with torch.no_grad():
        ref.encoding.embeddings.copy_(torch.randn(ref.encoding.embeddings.shape, generator=gen) * 0.1)
        for layer in ref.sdf_layers:
            layer.weight.copy_(torch.randn(layer.weight.shape, generator=gen) * 0.3)
            if biases:
                layer.bias.copy_(torch.randn(layer.bias.shape, generator=gen) * 0.1)
    ref = ref.to(DEV)
    fast = NeuSField(cfg).to(DEV)
    fast.load_state_dict(ref.state_dict())
    use_fast_path(fast, "triton")
    return ref, fast


def points_and_dirs(n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, 3) points in [-0.8, 0.8]^3 and (n, 3) unit directions, on DEV."""
    x = (torch.rand(n, 3, generator=gen) * 1.6 - 0.8).to(DEV)
    return x, torch.nn.functional.normalize(torch.randn(n, 3, generator=gen), dim=-1).to(DEV)


def away_from_relu_kinks(field: NeuSField, x: torch.Tensor, d: torch.Tensor, margin: float = 1e-4
                         ) -> torch.Tensor:
    """(N,) bool: points where every hidden ReLU of ``field``'s colour network is at least ``margin`` away from its
    kink. At a kink either side's derivative is right, and rounding (the fast path's tf32x3 products, ~1e-6) decides
    which one a point gets: one point's flip moves a weight gradient of the benchmark loss (a mean, so every point
    pulls the same way) by about 1/N relative, 2.4e-4 for N = 4099, more than the tolerance."""
    _, feat, grad = field.sdf_with_gradient(x, create_graph=False)
    with torch.no_grad():
        n = grad / grad.norm(dim=-1, keepdim=True).clamp_min(1e-6)
        h = torch.cat([feat, x, n, sh_encode(d, field.cfg.sh_degree)], -1)
        keep = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
        for layer in field.color_layers[:-1]:
            z = torch.nn.functional.linear(h, layer.weight, layer.bias)
            keep &= (z.abs() >= margin).all(-1)
            h = torch.relu(z)
    return keep


def kink_free_points(ref: NeuSField, n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`points_and_dirs` without the points :func:`away_from_relu_kinks` leaves out (a few percent)."""
    x, d = points_and_dirs(n, gen)
    keep = away_from_relu_kinks(ref, x, d)
    assert keep.float().mean() > 0.9, "the kink margin should drop only a few points"
    return x[keep], d[keep]


def check_field_step(grid: HashGridConfig, n: int, active: int | None = None, tol: float = TOL,
                     **field_kw: object) -> None:
    gen = fresh_generator()
    ref, fast = field_pair(FieldConfig(grid=grid, sdf_hidden=64, background="none", **field_kw), gen)  # type: ignore[arg-type]
    if active is not None:
        ref.encoding.active_levels = fast.encoding.active_levels = active
    x, d = kink_free_points(ref, n, gen)
    sf, ff, gf = fast.sdf_with_gradient(x, create_graph=False)
    sr, fr, gr = ref.sdf_with_gradient(x, create_graph=False)
    assert rel(sf, sr) < tol and rel(ff, fr) < tol and rel(gf, gr) < tol, _seed
    for _ in range(2):  # twice: nothing may linger from one backward pass to the next
        got, want = field_grads(fast, x, d), field_grads(ref, x, d)
        assert got.keys() == want.keys()
        for k in want:
            assert rel(got[k], want[k]) < tol, (k, rel(got[k], want[k]), _seed)


@needs_triton
@pytest.mark.parametrize("mode,fuse,group", [("jac", "1", 16), ("gather", "1", 16), ("jac", "0", 16),
                                             ("jac", "1", 4)])
def test_field_eikonal_step_matches_reference(mode: str, fuse: str, group: int,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """d/d(table) and d/d(MLP parameters) of an eikonal loss through NeuSField, fast path vs reference (derivative
    modes; table terms fused into one atomic pass or not; levels grouped per program)."""
    group_levels(monkeypatch, group)
    monkeypatch.setenv("NEUSBLEND_HASHGRID_MODE", mode)
    monkeypatch.setenv("NEUSBLEND_HASHGRID_FUSE", fuse)
    check_field_step(HashGridConfig(n_levels=6, n_features=2, log2_table_size=10, base_resolution=4,
                                    finest_resolution=512), 300, active=5)


@needs_triton
def test_field_step_with_difference_normals_matches_reference() -> None:
    """Finite-difference normals (six more SDF values, first-order derivatives) on the fast path: values and every
    parameter gradient of the field loss as the reference's."""
    check_field_step(HashGridConfig(n_levels=6, n_features=2, log2_table_size=10, base_resolution=4,
                                    finest_resolution=512), 300, active=5, normals="finite_difference",
                     normal_step=0.02)


@needs_triton
@pytest.mark.parametrize("jittered", [True, False])
def test_background_field_matches_reference(jittered: bool) -> None:
    """The background field (beyond the unit sphere, hash-encoded over the contracted space) on the fast path: its
    composited colour and every parameter gradient of a loss on it equal the reference's; the fast path switches
    its encoding too."""
    from backend.field import BackgroundConfig
    from backend.kernels import TritonHashGridEncoding

    gen = fresh_generator()
    bg = BackgroundConfig(grid=HashGridConfig(n_levels=5, n_features=2, log2_table_size=10, base_resolution=4,
                                              finest_resolution=256), hidden=16, samples=5)
    ref = NeuSField(FieldConfig(grid=HashGridConfig(n_levels=4, log2_table_size=10, finest_resolution=64),
                                background="field", bg=bg))
    with torch.no_grad():
        ref.bg_field.encoding.embeddings.copy_(torch.randn(ref.bg_field.encoding.embeddings.shape, generator=gen))
    ref = ref.to(DEV)
    fast = NeuSField(ref.cfg).to(DEV)
    fast.load_state_dict(ref.state_dict())
    use_fast_path(fast, "triton")
    assert isinstance(fast.bg_field.encoding, TritonHashGridEncoding)
    n = 96
    origins = (torch.nn.functional.normalize(torch.randn(n, 3, generator=gen), dim=-1) * 3.0).to(DEV)
    dirs = torch.nn.functional.normalize(-origins.cpu() + torch.randn(n, 3, generator=gen) * 0.6, dim=-1).to(DEV)
    jitter = torch.rand(n, generator=gen).to(DEV) if jittered else None
    weight = torch.randn(n, 3, generator=gen).to(DEV)
    fg_rgb, fg_op = torch.rand(n, 3, generator=gen).to(DEV), torch.rand(n, generator=gen).to(DEV)
    outs = []
    for field in (fast, ref):
        field.zero_grad(set_to_none=True)
        out = field.background(dirs, origins, jitter).composite(fg_rgb, fg_op)
        (out * weight).sum().backward()
        outs.append((out.detach(), {k: p.grad.clone() for k, p in field.named_parameters() if p.grad is not None}))
    (got, got_g), (want, want_g) = outs
    assert rel(got, want) < TOL, (rel(got, want), _seed)
    assert got_g.keys() == want_g.keys() and "bg_field.encoding.embeddings" in want_g
    for k in want_g:
        assert rel(got_g[k], want_g[k]) < TOL, (k, rel(got_g[k], want_g[k]), _seed)


def geometry_grads(field: NeuSField, x: torch.Tensor, d: torch.Tensor, loss_terms: str
                   ) -> tuple[str, dict[str, torch.Tensor | None]]:
    """The autograd node of the SDF gradient and every parameter gradient of a loss on SDF, features and gradient
    (``all``), on the gradient only (``eikonal``), or on SDF and features only (``head``: the gradient enters the
    colour network detached)."""
    field.zero_grad(set_to_none=True)
    sdf, feat, grad = field.sdf_with_gradient(x, create_graph=True)
    n = grad / grad.norm(dim=-1, keepdim=True).clamp_min(1e-6)
    loss = torch.zeros((), device=x.device)
    if loss_terms in ("all", "head"):
        loss = loss + field.color(x, n if loss_terms == "all" else n.detach(), d, feat).mean() + sdf.abs().mean()
    if loss_terms in ("all", "eikonal"):
        loss = loss + 0.1 * ((grad.norm(dim=-1) - 1) ** 2).mean()
    loss.backward()
    grads = {k: None if p.grad is None else p.grad.clone() for k, p in field.named_parameters()}
    return type(grad.grad_fn).__name__, grads


@needs_triton
@pytest.mark.filterwarnings("ignore:overflow encountered in exp:RuntimeWarning")  # interpreter: exp(-z) = inf
@pytest.mark.parametrize("layers,activation,fused_mlp", [(1, "softplus", "1"), (1, "relu", "1"), (1, "softplus", "0"),
                                                        (1, "relu", "0"), (2, "softplus", "1"), (3, "relu", "1")])
@pytest.mark.parametrize("loss_terms", ["all", "eikonal", "head"])
def test_fused_geometry_matches_autograd(layers: int, activation: str, loss_terms: str, fused_mlp: str,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The SDF MLP with its hand-derived gradient and backward (one autograd node; one hidden layer: the Triton
    activation passes) against the reference's autograd double backward: values, every parameter gradient, and the
    same None-vs-zero pattern (a bias that only the gradient sees gets zeros, the head's bias nothing). One hidden
    layer runs the whole-MLP kernels, or (``NEUSBLEND_FUSED_MLP=0``) the activation-only kernels."""
    monkeypatch.setenv("NEUSBLEND_FUSED_MLP", fused_mlp)
    grid = HashGridConfig(n_levels=6, n_features=2, log2_table_size=10, base_resolution=4, finest_resolution=512)
    gen = fresh_generator()
    ref, fast = field_pair(FieldConfig(grid=grid, sdf_hidden=32, sdf_layers=layers, activation=activation,
                                       background="none"), gen, biases=True)
    ref.encoding.active_levels = fast.encoding.active_levels = 5
    x, d = points_and_dirs(300, gen)
    sf, ff, gf = fast.sdf_with_gradient(x, create_graph=False)
    sr, fr, gr = ref.sdf_with_gradient(x, create_graph=False)
    assert rel(sf, sr) < TOL and rel(ff, fr) < TOL and rel(gf, gr) < TOL, _seed
    assert not gf.requires_grad  # create_graph=False: the gradient is not differentiable
    node, got = geometry_grads(fast, x, d, loss_terms)
    _, want = geometry_grads(ref, x, d, loss_terms)
    one_layer = "FusedMLPGeometryFunctionBackward" if fused_mlp == "1" else "OneLayerGeometryFunctionBackward"
    assert node == (one_layer if layers == 1 else "GeometryFunctionBackward"), node
    assert {k for k, v in got.items() if v is None} == {k for k, v in want.items() if v is None}
    for k, w in want.items():
        if w is not None:
            err = rel(got[k], w) if w.norm() > 0 else float(got[k].abs().max())
            assert err < TOL, (k, err, _seed)
    monkeypatch.setenv("NEUSBLEND_FUSED_GEOMETRY", "0")  # off: autograd through the hash-grid kernels
    node, _ = geometry_grads(fast, x, d, loss_terms)
    assert "Geometry" not in node, node


@needs_triton
@pytest.mark.filterwarnings("ignore:overflow encountered in exp:RuntimeWarning")
@pytest.mark.parametrize("tiles", [3, 1])
@pytest.mark.parametrize("partials", ["1", "0"])
def test_fused_mlp_backward_sums_several_tiles_per_program(tiles: int, partials: str,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The whole-MLP backward kernel loops over several tiles per program (the last one partly past N) and adds
    its weight gradients once, as a row of partial sums per program or by atomics: same gradients as autograd."""
    from backend.kernels import fused_geometry

    monkeypatch.setattr(fused_geometry, "MLP_TILES_PER_PROGRAM", tiles)  # 3: 4 programs for the 10 tiles
    monkeypatch.setenv("NEUSBLEND_MLP_PARTIALS", partials)
    grid = HashGridConfig(n_levels=8, n_features=2, log2_table_size=10, base_resolution=4, finest_resolution=256)
    gen = fresh_generator()
    ref, fast = field_pair(FieldConfig(grid=grid, sdf_hidden=64, background="none"), gen, biases=True)
    x, d = points_and_dirs(9 * fused_geometry.MLP_ROWS + 5, gen)  # 10 tiles: 4 programs, the last one partial
    node, got = geometry_grads(fast, x, d, "all")
    _, want = geometry_grads(ref, x, d, "all")
    assert node == "FusedMLPGeometryFunctionBackward"
    assert {k for k, v in got.items() if v is None} == {k for k, v in want.items() if v is None}
    for k, w in want.items():
        if w is not None:
            assert rel(got[k], w) < TOL, (k, rel(got[k], w), _seed)


def color_grads(field: NeuSField, inputs: tuple[torch.Tensor, ...], weight: torch.Tensor, x_grad: bool = False
                ) -> tuple[str, torch.Tensor, dict[str, torch.Tensor | None]]:
    """Colour, its autograd node and the gradients of ``(rgb * weight).sum()`` w.r.t. features, normals and the
    colour network's parameters (``x_grad``: the positions require a gradient too)."""
    x, n, d, feat = (t.detach().clone() for t in inputs)
    x.requires_grad_(x_grad)
    n.requires_grad_(True)
    feat.requires_grad_(True)
    field.zero_grad(set_to_none=True)
    rgb = field.color(x, n, d, feat)
    (rgb * weight).sum().backward()
    grads = {k: None if p.grad is None else p.grad.clone() for k, p in field.color_layers.named_parameters()}
    grads.update(feat=feat.grad, normal=n.grad)
    return type(rgb.grad_fn).__name__, rgb.detach(), grads


@needs_triton
@pytest.mark.filterwarnings("ignore:overflow encountered in exp:RuntimeWarning")  # interpreter: exp(-z) = inf
@pytest.mark.parametrize("sh_degree,feature_dim,hidden,tiles,reduce", [
    (4, 15, 64, 4, "partial"), (4, 15, 64, 1, "atomic"), (2, 7, 32, 3, "partial"), (3, 12, 16, 2, "atomic")])
def test_fused_color_matches_reference(sh_degree: int, feature_dim: int, hidden: int, tiles: int, reduce: str,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The colour network in one kernel each way against the reference modules: colour, the gradients w.r.t.
    features and normals and every parameter gradient, with several tiles per program (the last partly past N) and
    both ways of summing the weight gradients; positions or view directions that need a gradient go to the
    reference."""
    from backend.kernels import fused_color

    monkeypatch.setattr(fused_color, "COLOR_TILES_PER_PROGRAM", tiles)
    monkeypatch.setattr(fused_color, "COLOR_REDUCE", reduce)
    grid = HashGridConfig(n_levels=4, n_features=2, log2_table_size=10, base_resolution=4, finest_resolution=64)
    gen = fresh_generator()
    cfg = FieldConfig(grid=grid, sdf_hidden=32, feature_dim=feature_dim, color_hidden=hidden, sh_degree=sh_degree,
                      background="none")
    ref, fast = field_pair(cfg, gen)
    with torch.no_grad():  # biases that switch some ReLUs off, outputs away from the sigmoid's flat ends
        for a, b in zip(ref.color_layers, fast.color_layers):
            a.bias.copy_(torch.randn(a.bias.shape, generator=gen).to(DEV) * 0.3)
            b.bias.copy_(a.bias)
    n_pts = 7 * fused_color.COLOR_ROWS + 5
    x, d = points_and_dirs(n_pts, gen)
    normal = torch.nn.functional.normalize(torch.randn(n_pts, 3, generator=gen), dim=-1).to(DEV)
    head = torch.randn(n_pts, feature_dim + 1, generator=gen).to(DEV)
    feat = head[:, 1:]  # a strided view, as the SDF head's features are
    weight = torch.randn(n_pts, 3, generator=gen).to(DEV)
    node, got_rgb, got = color_grads(fast, (x, normal, d, feat), weight)
    _, want_rgb, want = color_grads(ref, (x, normal, d, feat), weight)
    assert node == "ColorFunctionBackward", node
    assert rel(got_rgb, want_rgb) < TOL, _seed
    assert got.keys() == want.keys()
    for k, w in want.items():
        assert got[k] is not None and got[k].shape == w.shape, k
        assert rel(got[k], w) < TOL, (k, rel(got[k], w), _seed)
    with torch.no_grad():  # outside autograd (re-extraction's vertex colours) too
        assert rel(fast.color(x, normal, d, feat), want_rgb) < TOL
    node, _, _ = color_grads(fast, (x, normal, d, feat), weight, x_grad=True)
    assert node != "ColorFunctionBackward", node  # a gradient w.r.t. the positions: the reference
    monkeypatch.setenv("NEUSBLEND_FUSED_COLOR", "0")
    node, _, _ = color_grads(fast, (x, normal, d, feat), weight)
    assert node != "ColorFunctionBackward", node


@needs_triton
@pytest.mark.parametrize("weighted", [False, True])
def test_fused_eikonal_sum_matches_reference(weighted: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """The eikonal loss's sum in one kernel each way against the reference's operations: the sum and its gradient
    w.r.t. the SDF gradients, over several blocks (the last one partial), with a 0/1 validity mask or none, a zero
    gradient row (no NaN: zero gradient there, as the reference's norm) and an upstream factor other than one;
    weights that need a gradient go to the reference."""
    from backend.kernels import eikonal_triton

    grid = HashGridConfig(n_levels=4, n_features=2, log2_table_size=10, base_resolution=4, finest_resolution=64)
    gen = fresh_generator()
    ref, fast = field_pair(FieldConfig(grid=grid, sdf_hidden=32, background="none"), gen)
    n_pts = 3 * eikonal_triton.EIK_BLOCK + 17
    g0 = (torch.randn(n_pts, 3, generator=gen) * 0.7).to(DEV)
    g0[5] = 0.0
    w = (torch.rand(n_pts, generator=gen) > 0.3).float().to(DEV) if weighted else None

    def run(field: NeuSField, weight: torch.Tensor | None) -> tuple[str, torch.Tensor, torch.Tensor]:
        g = g0.clone().requires_grad_(True)
        total = field.eikonal_sum(g, weight)
        (total * 0.37).backward()
        return type(total.grad_fn).__name__, total.detach(), g.grad

    node, got, got_g = run(fast, w)
    _, want, want_g = run(ref, w)
    assert node == "EikonalSumFunctionBackward", node
    assert rel(got, want) < TOL and rel(got_g, want_g) < TOL, (rel(got, want), rel(got_g, want_g), _seed)
    assert float(got_g[5].abs().max()) == 0.0
    if weighted:
        node, _, _ = run(fast, w.clone().requires_grad_(True))
        assert node != "EikonalSumFunctionBackward", node
    monkeypatch.setenv("NEUSBLEND_FUSED_EIKONAL", "0")
    node, _, _ = run(fast, w)
    assert node != "EikonalSumFunctionBackward", node


@needs_triton
@pytest.mark.filterwarnings("ignore:overflow encountered in exp:RuntimeWarning")
@pytest.mark.parametrize("layers,activation", [(1, "softplus"), (1, "relu"), (2, "softplus")])
def test_sdf_outside_autograd_matches_reference(layers: int, activation: str) -> None:
    """``NeuSField.sdf`` without autograd (grid updates, culling, meshing): one hidden layer takes the two-kernel
    path (encoding, then the whole MLP's SDF row), with the same values as the reference; with autograd recording,
    or with more layers, it goes through the modules (and stays differentiable)."""
    from backend.kernels import fused_geometry

    grid = HashGridConfig(n_levels=6, n_features=2, log2_table_size=10, base_resolution=4, finest_resolution=512)
    gen = fresh_generator()
    ref, fast = field_pair(FieldConfig(grid=grid, sdf_hidden=32, sdf_layers=layers, activation=activation,
                                       background="none"), gen, biases=True)
    ref.encoding.active_levels = fast.encoding.active_levels = 5
    x, _ = points_and_dirs(2 * fused_geometry.MLP_ROWS + 7, gen)  # a partial last tile
    with torch.no_grad():
        want = ref.sdf(x)
        took = fused_geometry.sdf_only(fast, x)
        got = fast.sdf(x)
    assert (took is not None) == (layers == 1)
    assert rel(got, want) < TOL, _seed
    if took is not None:
        assert torch.equal(took, got)
    y = fast.sdf(x)  # autograd recording: the modules, differentiable
    assert y.requires_grad and rel(y.detach(), want) < TOL


def march_case(n_rays: int, res: int, gen: torch.Generator, device: str = DEV, full: bool = False):  # noqa: ANN201
    """An occupancy grid with a random shell of occupied cells (``full``: every cell occupied, so rays end at the
    unit sphere) and rays from outside the unit sphere towards it (some miss the shell), on ``device``."""
    from backend.render import OccupancyGrid

    grid = OccupancyGrid(res)
    c = grid.cell_centers().norm(dim=-1).view(res, res, res)
    if not full:
        grid.binary = (c > 0.3) & (c < 0.6) & (torch.rand(res, res, res, generator=gen) < 0.7)
    grid.binary = grid.binary.to(device)
    origins = torch.nn.functional.normalize(torch.randn(n_rays, 3, generator=gen), dim=-1) * 1.8
    target = (torch.rand(n_rays, 3, generator=gen) * 2 - 1) * 0.9
    dirs = torch.nn.functional.normalize(target - origins, dim=-1)
    return grid.to(device), origins.to(device), dirs.to(device)


@needs_triton
@pytest.mark.parametrize("perturb,full,res", [(True, False, 16), (False, False, 16), (True, True, 16),
                                              (True, False, 64)])
def test_triton_march_gives_the_reference_samples(perturb: bool, full: bool, res: int) -> None:
    """``OccupancyGrid.sample`` with the two-pass Triton march: the same packed samples (ray indices and distances,
    bit for bit) as the dense reference march, for rays that hit and miss, with the occupied-box clipping, and
    rays that end at the unit sphere; at resolution 64 the walk skips empty 8^3 blocks and empty cells."""
    gen = fresh_generator()
    grid, origins, dirs = march_case(300, res, gen, full=full)
    step = 0.32 / res
    torch.manual_seed(5)
    want = grid.sample(origins, dirs, step, perturb=perturb)
    grid.triton_march = True
    torch.manual_seed(5)
    got = grid.sample(origins, dirs, step, perturb=perturb)
    assert len(want) > 1000 and torch.equal(got.ray_indices, want.ray_indices)
    assert torch.equal(got.t_starts, want.t_starts) and torch.equal(got.t_ends, want.t_ends)
    assert full or (torch.bincount(want.ray_indices, minlength=300) == 0).any()  # some rays keep nothing


def _fused_case(tmp_path, data_dir, masks: bool = True):  # noqa: ANN001, ANN202
    """A trainer on six small DTU 65 views (with masks, or without them and so with the background field) whose SDF
    is still the initial sphere, made sharp, and an occupancy grid updated from it: rays through the sphere have
    hidden samples behind it."""
    import argparse
    import dataclasses
    import io

    from backend import protocol
    from backend.data import load_scene
    from backend.train import build_config
    from backend.training.trainer import Trainer

    scene = load_scene(data_dir / "dtu_scan65", max_image_size=48).subset(range(0, 48, 8))
    if not masks:
        scene = dataclasses.replace(scene, masks=None)
    cfg = build_config(argparse.Namespace(preset="preview", steps=100, set=[
        "grid_resolution=32", "render_steps=128", "cull_stride=1", "cuda_graph=false"]))
    tr = Trainer(scene, cfg, device=DEV, job=protocol.JobLayout(tmp_path / "job"),
                 emitter=protocol.Emitter(io.StringIO()))
    with torch.no_grad():
        tr.field.variance.fill_(0.5)  # inv_s about 150: the sphere is opaque
    tr.grid.update(tr.field.bounded_sdf, tr.field.inv_s().detach(), cfg.step_size)
    tr.grid.triton_march = True
    return tr


@needs_triton
@pytest.mark.parametrize("capacity,masks", [(4000, True), (900, True), (900, False)])
def test_fused_batch_matches_the_pytorch_batch(capacity: int, masks: bool, data_dir, tmp_path) -> None:  # noqa: ANN001
    """The Triton batch (rays, march, visibility, packing) gives the PyTorch batch's rays and samples for the same
    draws, in the CUDA graph's padded layout: hidden samples culled and, when they do not all fit (capacity 900),
    only the leading rays whose samples fit; without masks, the background field's ray origins and jitter too."""
    from backend.step import GraphStep, LossWeights

    tr = _fused_case(tmp_path, data_dir, masks)
    assert (tr.field.bg_field is None) == masks
    n = 150
    gen = fresh_generator()
    draws = (torch.randint(0, tr.sampler.n_pixels, (n,), generator=gen).to(DEV),
             torch.rand(n, 6, generator=gen).to(DEV))
    gs = GraphStep(tr.field, tr.optimizer, tr.params, max_rays=256, sample_capacity=capacity, eik_points=16,
                   has_masks=masks, losses=LossWeights(eikonal=0.1, mask=0.1, rgb_loss="l1"))
    tr.batches.graph_step = gs  # the PyTorch batch applies the same capacity cut
    want = tr.batches.marched(n, draws)
    x = gs.new_inputs()
    got = tr.batches.fused_from(draws, x)
    if got.done is not None:
        got.done.synchronize()
    n_fit, n_rays, n_kept = (int(v) for v in got.stats)
    assert got.n_marched == want.n_marched > n_kept == want.n_samples  # the culling drops samples
    assert n_rays == want.n_rays and (n_rays < n) == (capacity < n_kept)
    s = len(want.ray_indices)
    assert n_fit == s and 0 < s <= capacity
    assert torch.equal(x.ray_indices[:s], want.ray_indices)
    torch.testing.assert_close(x.pts[:s], want.pts, rtol=0, atol=1e-5)
    torch.testing.assert_close(x.dirs[:s], want.dirs, rtol=0, atol=1e-6)
    assert torch.equal(x.deltas[:s], want.deltas) and bool((x.sample_valid[:s] == 1).all())
    # padding: spare ray, no length, no weight
    assert bool((x.ray_indices[s:] == gs.R).all()) and not x.sample_valid[s:].any() and not x.deltas[s:].any()
    for name in ("ray_dirs", "gt", "bg", "mask", "ray_origins", "bg_jitter"):
        assert (getattr(x, name) is None) == (getattr(want, name) is None), name
        if getattr(want, name) is not None:
            torch.testing.assert_close(getattr(x, name)[:n_rays], getattr(want, name), rtol=0, atol=1e-6)
    assert bool((x.ray_valid[:n_rays] == 1).all()) and not x.ray_valid[n_rays:].any()
    assert float(x.inv_n_rays) == pytest.approx(1.0 / n_rays)


# -------------------------------------------------------------------------------------------- GPU, full size

FULL = HashGridConfig(n_levels=16, n_features=2, log2_table_size=19, base_resolution=16, finest_resolution=2048)


@pytest.mark.gpu
def test_gpu_select_path_picks_triton() -> None:
    assert select_path("cuda") == "triton", path_reason()


@pytest.mark.gpu
def test_gpu_self_check_started_early_is_taken_once() -> None:
    """A self-check started in the background (as training does before loading) answers the next path selection
    for its device, and only that one."""
    from backend import kernels

    kernels.start_self_check("cuda")
    early = kernels._early_checks["cuda"]
    assert select_path("cuda") == "triton" and early.done() and "cuda" not in kernels._early_checks
    kernels.start_self_check("cpu")  # nothing to check ahead of time off CUDA
    assert "cpu" not in kernels._early_checks


@pytest.mark.gpu
@pytest.mark.parametrize("active", [None, 9])
@pytest.mark.parametrize("group", [16, 4, 1])
def test_gpu_full_size_kernels(active: int | None, group: int, monkeypatch: pytest.MonkeyPatch) -> None:
    from backend.kernels.hashgrid_triton import encode, encode_backward, encode_backward2, jac_t_vec, jac_vec

    group_levels(monkeypatch, group)
    enc, gen = make_encoding(FULL.n_levels, FULL.log2_table_size, FULL.base_resolution, FULL.finest_resolution,
                             active=active)
    n = 65536 + 77
    x = random_points(n, gen)
    m = meta_of(enc)
    tab = enc.embeddings.detach()
    out, jac = encode(x, tab, m, enc.active_levels, out=torch.full((n, 32), float("nan"), device=DEV),
                      jac=torch.full((enc.active_levels, 3, n, 2), float("nan"), device=DEV))
    assert rel(out, enc(x)) < TOL, _seed
    g = torch.randn(n, 32, generator=gen).to(DEV)
    u = torch.randn(n, 3, generator=gen).to(DEV)
    gx, gt = encode_backward(g, x, tab, m, enc.active_levels, True, True,
                             grad_x=torch.full((n, 3), float("nan"), device=DEV))
    xr = x.clone().requires_grad_(True)
    ref_x, ref_t = torch.autograd.grad(enc(xr), [xr, enc.embeddings], g)
    assert rel(gx, ref_x) < TOL and rel(gt, ref_t) < TOL, _seed
    dg, dt = encode_backward2(u, g, x, tab, m, enc.active_levels, True, True,
                              grad_g=torch.full((n, 32), float("nan"), device=DEV))
    ref_g, ref_dt = reference_second_order(enc, x, g, u)
    assert rel(dg, ref_g) < TOL and rel(dt, ref_dt) < TOL, _seed
    assert rel(jac_t_vec(jac, g, 16), ref_x) < TOL and rel(jac_vec(jac, u, 16), ref_g) < TOL, _seed
    # the table alone (x-neighbour corners paired in one reduction where their rows pair up), and the fused pass:
    # first-order and eikonal table terms in one atomic pass
    _, gt_only = encode_backward(g, x, tab, m, enc.active_levels, False, True)
    assert rel(gt_only, ref_t) < TOL, _seed
    _, fused = encode_backward(g, x, tab, m, enc.active_levels, False, True, u=u, g2=g)
    assert rel(fused, ref_t + ref_dt) < TOL, _seed


@needs_triton
def test_each_precision_sets_the_forward_and_backward_products(monkeypatch: pytest.MonkeyPatch) -> None:
    """What each ``FieldConfig.precision`` asks of the fused kernels' products: "float32" three TF32 products both
    ways; "mixed" (the training default) three forward, one backward; "tf32" one both ways; the weight-gradient
    products follow the backward's. (What the products compute is checked on CUDA: the interpreter computes in
    float32 whatever it is asked.)"""
    from backend.config import TrainConfig
    from backend.kernels.fused_geometry import backward_precision, input_precision, weight_grad_precision

    monkeypatch.delenv("NEUSBLEND_WGRAD_TF32", raising=False)
    grid = HashGridConfig(n_levels=4, n_features=2, log2_table_size=10, base_resolution=4, finest_resolution=64)
    want = {"float32": ("tf32x3", "tf32x3"), "mixed": ("tf32x3", "tf32"), "tf32": ("tf32", "tf32")}
    for prec, (fwd, bwd) in want.items():
        field = NeuSField(FieldConfig(grid=grid, sdf_hidden=16, precision=prec))
        assert (input_precision(field), backward_precision(field)) == (fwd, bwd), prec
        assert weight_grad_precision(backward_precision(field)) == bwd, prec
    field = NeuSField(FieldConfig.from_train(TrainConfig(), has_masks=True))
    assert (input_precision(field), backward_precision(field)) == ("tf32x3", "tf32")


# Mixed precision (one TF32 product: inputs with 10-bit mantissas, float32 sums): relative error of values and
# gradients against the float32 reference.
TF32_TOL = 1e-2


@pytest.mark.gpu
def test_gpu_tf32_precision_within_mixed_precision_tolerance() -> None:
    """``precision="tf32"`` (the fused SDF and colour networks in one TF32 product each): the full-size field step
    (values, every parameter gradient of SDF, colour and eikonal losses) against the float32 reference within
    ``TF32_TOL``; and the option takes effect: its values differ from the float32 fast path's by more than that
    path's own error."""
    check_field_step(FULL, 65536, tol=TF32_TOL, precision="tf32")
    gen = fresh_generator()
    ref, fast = field_pair(FieldConfig(grid=FULL, sdf_hidden=64, background="none", precision="tf32"), gen)
    x, d = points_and_dirs(65536, gen)
    with torch.no_grad():
        want = ref.sdf_with_gradient(x, create_graph=False)[2]
        got = {}
        for prec in ("float32", "tf32"):
            fast.cfg.precision = prec
            got[prec] = fast.sdf_with_gradient(x, create_graph=False)[2]
    err32, err_tf32 = rel(got["float32"], want), rel(got["tf32"], want)
    print(f"SDF gradient, relative error: float32 {err32:.2e}, tf32 {err_tf32:.2e}")
    assert err32 < TOL and err_tf32 > 10 * err32 and err_tf32 < TF32_TOL


@pytest.mark.gpu
def test_gpu_mixed_precision_rounds_the_gradients_only(capsys: pytest.CaptureFixture) -> None:
    """``precision="mixed"`` (forward products float32-accurate, the backward's in one TF32 product): the values
    (SDF, features, gradient, colour) are bit-identical to the float32 fast path's; every parameter gradient of the
    full-size field step is within ``TF32_TOL`` of the float32 reference, and the worst is further from it than the
    float32 fast path's (the option takes effect)."""
    gen = fresh_generator()
    ref, fast = field_pair(FieldConfig(grid=FULL, sdf_hidden=64, background="none"), gen)
    x, d = kink_free_points(ref, 65536, gen)
    values, worst = {}, {}
    want = field_grads(ref, x, d)
    for prec in ("float32", "mixed"):
        fast.cfg.precision = prec
        with torch.no_grad():
            sdf, feat, grad = fast.sdf_with_gradient(x, create_graph=False)
            rgb = fast.color(x, grad / grad.norm(dim=-1, keepdim=True), d, feat)
        values[prec] = (sdf, feat, grad, rgb)
        got = field_grads(fast, x, d)
        worst[prec] = max(((k, rel(got[k], want[k])) for k in want), key=lambda kv: kv[1])
    for a, b in zip(values["float32"], values["mixed"]):
        assert torch.equal(a, b)
    with capsys.disabled():
        print(f"\nworst parameter-gradient error: float32 {worst['float32']}, mixed {worst['mixed']}")
    assert worst["float32"][1] < TOL, (worst, _seed)
    assert 10 * worst["float32"][1] < worst["mixed"][1] < TF32_TOL, (worst, _seed)


@pytest.mark.gpu
def test_gpu_weight_gradients_in_one_tf32_product(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
                                                  ) -> None:
    """``NEUSBLEND_WGRAD_TF32=1`` (an experiment): the backward kernels' weight-gradient products in one TF32
    product. The full-size field step stays within the mixed-precision tolerance, and the worst parameter-gradient
    error is printed beside the float32 path's (H200, 48ef2c9: 7.1e-4 against 8.3e-7, so the setting stays off:
    the rounding errors of many points do not average out in gradient sums that cancel)."""
    worst = {}
    for flag in ("0", "1"):
        monkeypatch.setenv("NEUSBLEND_WGRAD_TF32", flag)
        gen = fresh_generator()
        ref, fast = field_pair(FieldConfig(grid=FULL, sdf_hidden=64, background="none"), gen)
        x, d = kink_free_points(ref, 65536, gen)
        got, want = field_grads(fast, x, d), field_grads(ref, x, d)
        errs = {k: rel(got[k], want[k]) for k in want}
        worst[flag] = max(errs.items(), key=lambda kv: kv[1])
        assert worst[flag][1] < TF32_TOL, (flag, worst[flag], _seed)
    with capsys.disabled():
        print(f"\nworst parameter-gradient error: float32 products {worst['0']}, weight gradients in TF32 "
              f"{worst['1']}")
    assert worst["0"][1] < TOL, (worst["0"], _seed)


@pytest.mark.gpu
@pytest.mark.parametrize("mode,fuse", [("jac", "1"), ("gather", "1"), ("jac", "0")])
def test_gpu_field_eikonal_step_full_size(mode: str, fuse: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEUSBLEND_HASHGRID_MODE", mode)
    monkeypatch.setenv("NEUSBLEND_HASHGRID_FUSE", fuse)
    check_field_step(FULL, 65536)
    check_field_step(FULL, 4099, active=7)
