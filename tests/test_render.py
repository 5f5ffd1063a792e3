"""Rendering: rays, NeuS weights on analytic SDFs, the occupancy grid, packed sampling."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from backend.render import (
    OccupancyGrid,
    accumulate,
    cull_hidden,
    neus_alpha,
    ray_sphere,
    rays_from_pixels,
    render_weights,
    visible_samples,
)


def test_ray_sphere_hand_computed() -> None:
    o = torch.tensor([[0.0, 0.0, -3.0], [0.0, 0.0, 0.0], [0.0, 2.0, -3.0]])
    d = torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    near, far, hit = ray_sphere(o, d, 1.0)
    assert hit.tolist() == [True, True, False]
    assert near[:2].tolist() == pytest.approx([2.0, 0.0]) and far[:2].tolist() == pytest.approx([4.0, 1.0])


def test_rays_from_pixels_principal_point_looks_down_the_axis() -> None:
    K = torch.tensor([[100.0, 0, 40], [0, 100.0, 30], [0, 0, 1]])
    c2w = torch.eye(4)
    c2w[:3, 3] = torch.tensor([1.0, 2.0, 3.0])
    o, d = rays_from_pixels(torch.linalg.inv(K)[None].expand(2, 3, 3), c2w[None].expand(2, 4, 4),
                            torch.tensor([40.0, 140.0]), torch.tensor([30.0, 30.0]))
    torch.testing.assert_close(o[0], torch.tensor([1.0, 2.0, 3.0]))
    torch.testing.assert_close(d[0], torch.tensor([0.0, 0.0, 1.0]))
    torch.testing.assert_close(d[1], torch.tensor([1.0, 0.0, 1.0]) / math.sqrt(2))  # 100 px right at f=100: 45 deg


def dense_weights(alpha: torch.Tensor) -> torch.Tensor:
    """Reference: weights of a dense (R, T) alpha array by cumulative product."""
    trans = torch.cumprod(torch.cat([torch.ones_like(alpha[:, :1]), 1 - alpha[:, :-1]], 1), 1)
    return alpha * trans


def test_packed_weights_match_dense_cumprod() -> None:
    torch.manual_seed(1)
    n_rays, T = 7, 30
    alpha = torch.rand(n_rays, T) ** 3
    counts = torch.randint(0, T + 1, (n_rays,))
    counts[2] = 0  # a ray with no samples
    valid = torch.arange(T)[None] < counts[:, None]
    ref = dense_weights(alpha * valid)
    ray_idx = torch.arange(n_rays)[:, None].expand(n_rays, T)[valid]
    w, trans = render_weights(alpha[valid], ray_idx, n_rays)
    torch.testing.assert_close(w, ref[valid], atol=1e-6, rtol=1e-5)
    opacity = accumulate(None, w, ray_idx, n_rays)
    torch.testing.assert_close(opacity, ref.sum(1), atol=1e-6, rtol=1e-5)
    assert float(opacity[2]) == 0.0


def march_plane(inv_s: float, step: float, cos_ratio: float = 1.0, tilt: float = 0.0) -> tuple[float, float]:
    """Render one ray against the plane z = 0.5 (SDF 0.5 - z): returns (depth, opacity)."""
    t = torch.arange(0.0, 1.0, step) + 0.5 * step
    d = torch.tensor([math.sin(tilt), 0.0, math.cos(tilt)])
    z = t * d[2]
    sdf = 0.5 - z
    grad = torch.tensor([0.0, 0.0, -1.0])
    alpha = neus_alpha(sdf, (d * grad).sum().expand_as(sdf), torch.full_like(t, step), torch.tensor(inv_s), cos_ratio)
    ridx = torch.zeros(len(t), dtype=torch.long)
    w, _ = render_weights(alpha, ridx, 1)
    return float((w * t).sum() / w.sum()), float(w.sum())


@pytest.mark.parametrize("tilt", [0.0, 0.6])
def test_neus_weights_are_unbiased_on_a_plane(tilt: float) -> None:
    depth, opacity = march_plane(inv_s=400.0, step=1e-3, tilt=tilt)
    true_depth = 0.5 / math.cos(tilt)
    assert opacity == pytest.approx(1.0, abs=1e-3)
    assert depth == pytest.approx(true_depth, abs=2e-3)
    # sharper density -> weights concentrate, still at the surface
    depth2, _ = march_plane(inv_s=4000.0, step=1e-4, tilt=tilt)
    assert depth2 == pytest.approx(true_depth, abs=2e-4)


def test_neus_alpha_is_zero_away_from_the_surface_and_bounded() -> None:
    sdf = torch.tensor([0.5, 0.2, 0.0, -0.2, -0.5])
    a = neus_alpha(sdf, torch.full_like(sdf, -1.0), torch.full_like(sdf, 0.01), torch.tensor(200.0))
    assert bool((a >= 0).all() and (a <= 1).all())
    assert float(a[0]) < 1e-4 and float(a[2]) > 0.5
    # leaving the surface (going from inside to outside) is transparent
    b = neus_alpha(sdf, torch.full_like(sdf, 1.0), torch.full_like(sdf, 0.01), torch.tensor(200.0))
    assert float(b.max()) < 1e-3


def sphere_sdf(x: torch.Tensor, r: float = 0.5) -> torch.Tensor:
    return x.norm(dim=-1) - r


def test_occupancy_grid_marks_a_known_sphere() -> None:
    grid = OccupancyGrid(resolution=32, threshold=1e-3)
    assert grid.occupied_fraction() == 1.0  # before any update nothing is culled
    grid.update(sphere_sdf, inv_s=500.0, step_size=2 / 256)
    centers = grid.cell_centers()
    dist = (centers.norm(dim=-1) - 0.5).abs().reshape(32, 32, 32)
    cell = grid.cell_size
    on_surface = dist < 0.25 * cell  # the surface certainly crosses these cells
    far = dist > 3 * cell
    assert bool(grid.binary[on_surface].all()), "a cell the sphere passes through was culled"
    assert not bool(grid.binary[far].any()), "a cell far from the sphere is still occupied"
    assert 0.01 < grid.occupied_fraction() < 0.5


def test_grid_sampling_keeps_only_occupied_steps_in_order() -> None:
    grid = OccupancyGrid(resolution=32)
    grid.update(sphere_sdf, inv_s=500.0, step_size=0.01)
    torch.manual_seed(0)
    o = torch.nn.functional.normalize(torch.randn(64, 3), dim=-1) * 2.5
    d = torch.nn.functional.normalize(-o + 0.3 * torch.randn(64, 3), dim=-1)
    s = grid.sample(o, d, step_size=0.01, perturb=True)
    assert len(s) > 0
    assert bool((s.ray_indices[1:] >= s.ray_indices[:-1]).all())
    same = s.ray_indices[1:] == s.ray_indices[:-1]
    assert bool((s.t_starts[1:][same] > s.t_starts[:-1][same]).all())
    pts = o[s.ray_indices] + d[s.ray_indices] * s.t_mid[:, None]
    assert bool(grid.occupied(pts).all())
    assert float(pts.norm(dim=-1).max()) <= 1.0 + 1e-5
    assert float((pts.norm(dim=-1) - 0.5).abs().max()) < 0.25  # everything sampled hugs the sphere


def test_grid_sampling_without_culling_covers_the_chord() -> None:
    grid = OccupancyGrid(resolution=16)
    o = torch.tensor([[0.0, 0.0, -3.0]])
    d = torch.tensor([[0.0, 0.0, 1.0]])
    s = grid.sample(o, d, step_size=0.1, perturb=False)
    np.testing.assert_allclose(s.t_mid.numpy(), 2.05 + 0.1 * np.arange(20), atol=1e-5)


@pytest.mark.parametrize("shell", [(0.3, 0.6), (0.0, 0.2), None])
def test_grid_sampling_clipped_to_the_occupied_box_keeps_exactly_the_full_march(shell: tuple | None) -> None:
    """The march starts at the box around the occupied cells: the kept samples are exactly those of a brute-force
    march through the whole sphere on the same lattice (same jitter), for a shell, a small ball and an empty grid."""
    grid = OccupancyGrid(resolution=32)
    r = grid.cell_centers().norm(dim=-1).reshape(32, 32, 32)
    grid.binary = (r > shell[0]) & (r < shell[1]) if shell else torch.zeros(32, 32, 32, dtype=torch.bool)
    grid.binary[20, 5, 7] = shell is not None  # a lone floater far from the rest widens the box
    g = torch.Generator().manual_seed(3)
    origins = torch.randn(300, 3, generator=g)
    origins = 2.5 * origins / origins.norm(dim=-1, keepdim=True)
    dirs = (torch.rand(300, 3, generator=g) - 0.5) * 1.2 - origins
    dirs = dirs / dirs.norm(dim=-1, keepdim=True)
    step = 2.0 / 256
    torch.manual_seed(7)
    got = grid.sample(origins, dirs, step, perturb=True)
    torch.manual_seed(7)
    offset = torch.rand(300, 1)  # the jitter sample() draws first
    near, far, hit = ray_sphere(origins, dirs)
    k = torch.arange(int(math.ceil(2.0 / step)) + 1, dtype=torch.float32)[None]
    t = near[:, None] + (k + offset) * step
    ok = hit[:, None] & (t < far[:, None])
    ray_idx, step_idx = ok.nonzero(as_tuple=True)
    t = t[ray_idx, step_idx]
    keep = grid.occupied(origins[ray_idx] + dirs[ray_idx] * t[:, None])
    want_rays, want_t = ray_idx[keep], t[keep]
    assert torch.equal(got.ray_indices, want_rays)
    assert torch.allclose(got.t_starts + 0.5 * step, want_t, atol=1e-5)
    if shell:
        assert len(want_t) > 500


def test_visible_samples_stop_one_step_past_the_first_opaque_surface() -> None:
    """Two rays through a wall (SDF = z, sharp) and one ray parallel to it: samples behind the wall are culled
    (transmittance below eps), those in front and one step past it stay; the parallel ray keeps everything; a soft
    field (small inv_s) keeps everything; the kept set matches a per-ray dense computation."""
    step = 0.01
    t = torch.arange(100, dtype=torch.float32) * step  # 0 .. 0.99 along each ray
    sdf_through = 0.5 - t  # crosses zero at t = 0.5 (sample 50)
    sdf_along = torch.full_like(t, 0.2)  # never crosses
    sdf = torch.cat([sdf_through, sdf_along, 0.3 - t[:60]])  # third ray: crossing at sample 30, 60 samples
    ridx = torch.cat([torch.zeros(100), torch.ones(100), torch.full((60,), 2.0)]).long()
    keep = visible_samples(sdf, ridx, 3, inv_s=2000.0, eps=1e-4)
    k0, k1, k2 = keep[:100], keep[100:200], keep[200:]
    assert k1.all()
    for k, cross in ((k0, 50), (k2, 30)):
        assert k[:cross + 1].all()  # up to the sample just past the crossing
        assert not k[cross + 4:].any()  # well behind it: culled
    assert visible_samples(sdf, ridx, 3, inv_s=5.0, eps=1e-4).all()  # soft: light goes through
    # against a dense per-ray computation of the same rule
    for r in range(3):
        s = sdf[ridx == r]
        cdf = torch.sigmoid(s * 2000.0)
        alpha = ((cdf[:-1] - cdf[1:]) / (cdf[:-1] + 1e-6)).clamp(0, 1)
        trans = torch.cat([torch.ones(1), torch.cumprod(1 - alpha, 0)])  # before each sample
        want = torch.cat([torch.ones(1, dtype=torch.bool), trans[:-1] > 1e-4])
        assert torch.equal(keep[ridx == r], want), r


def test_occupied_bounds_follow_every_change_of_the_grid() -> None:
    """The box around the occupied cells is kept between marches; it must follow in-place edits, a new occupancy,
    ``mark_all`` and a loaded state."""
    grid = OccupancyGrid(16)

    def fresh() -> tuple[list[float], list[float]]:
        lo, hi = grid._occupied_bounds()
        return lo.tolist(), hi.tolist()

    def cached() -> tuple[list[float], list[float]]:
        lo, hi = grid.occupied_bounds()
        return lo.tolist(), hi.tolist()

    assert cached() == fresh() == ([-1.0] * 3, [1.0] * 3)
    grid.binary.zero_()
    grid.binary[4:6, 8, 2:12] = True  # in place
    assert cached() == fresh() == ([-0.5, 0.0, -0.75], [-0.25, 0.125, 0.5])
    grid.update(lambda p: p.norm(dim=-1) - 0.3, inv_s=2000.0, step_size=0.01)  # a new tensor
    assert cached() == fresh() and cached()[0][0] > -0.6
    other = OccupancyGrid(16)
    other.binary.zero_()
    other.binary[0, 0, 0] = True
    grid.load_state_dict(other.state_dict())
    assert cached() == fresh() == ([-1.0] * 3, [-0.875] * 3)
    grid.mark_all()
    assert cached() == fresh() == ([-1.0] * 3, [1.0] * 3)

@pytest.mark.parametrize("stride", [1, 3, 4])
def test_cull_hidden_evaluates_every_stride_th_sample(stride: int) -> None:
    """Rays through a sphere of radius 0.5 (sharp), with gaps in the march: stride 1 is exactly the per-sample
    rule; a larger stride keeps a superset, at most 2 strides more per ray, and calls the SDF on about 1/stride
    of the samples."""
    gen = torch.Generator().manual_seed(3)
    n_rays = 40
    origins = torch.cat([torch.rand(n_rays, 2, generator=gen) * 1.2 - 0.6, torch.full((n_rays, 1), -1.5)], 1)
    dirs = torch.tensor([[0.0, 0.0, 1.0]]).expand(n_rays, 3).contiguous()
    t = torch.arange(0.5, 2.5, 0.01)
    ridx = torch.arange(n_rays).repeat_interleave(len(t))
    tt = t.repeat(n_rays)
    drop = torch.rand(len(tt), generator=gen) < 0.1  # gaps, as empty cells leave in a march
    ridx, tt = ridx[~drop], tt[~drop]
    calls = []

    def sdf_fn(p: torch.Tensor) -> torch.Tensor:
        calls.append(p.shape[0])
        return p.norm(dim=-1) - 0.5

    keep = cull_hidden(sdf_fn, origins, dirs, ridx, tt, 2000.0, 1e-4, stride)
    pts = origins[ridx] + dirs[ridx] * tt[:, None]
    exact = visible_samples(sdf_fn(pts), ridx, n_rays, 2000.0, 1e-4)
    assert calls[0] <= len(tt) // stride + 2 * n_rays  # per ray: every stride-th and the last
    if stride == 1:
        assert torch.equal(keep, exact)
    else:
        assert not (exact & ~keep).any()  # a superset
        extra = torch.zeros(n_rays, dtype=torch.long).index_add_(0, ridx, (keep & ~exact).long())
        assert int(extra.max()) <= 2 * stride
    radial = origins[:, :2].norm(dim=-1)
    per_ray = torch.zeros(n_rays, dtype=torch.long).index_add_(0, ridx, keep.long())
    total = torch.zeros(n_rays, dtype=torch.long).index_add_(0, ridx, torch.ones_like(ridx))
    assert (per_ray[radial < 0.45] < 0.75 * total[radial < 0.45]).all()  # through the sphere: the back is culled
    assert torch.equal(per_ray[radial > 0.55], total[radial > 0.55])  # past it: nothing is
