"""Volume rendering of an SDF: rays, occupancy grid, ray marching that skips empty space, NeuS weights.

Samples are *packed*: a batch of rays produces S samples stored as flat arrays with ``ray_indices`` (S,)
sorted by ray and then by distance, like nerfacc's packed layout. Reference implementations in plain PyTorch;
fast paths live in ``backend/kernels`` and are checked against these.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from . import debug


def rays_from_pixels(K_inv: torch.Tensor, c2w: torch.Tensor, cols: torch.Tensor, rows: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Rays through pixel positions (OpenCV pixel convention: pixel (c, r) has its centre at (c, r)).

    Args:
        K_inv: (R, 3, 3) inverse intrinsics of each ray's camera.
        c2w: (R, 4, 4) camera-to-world (OpenCV axes) of each ray's camera, normalized frame.
        cols, rows: (R,) float pixel coordinates.

    Returns:
        origins (R, 3), unit directions (R, 3).
    """
    pix = torch.stack([cols, rows, torch.ones_like(cols)], -1)  # (R, 3)
    d_cam = (K_inv @ pix[..., None])[..., 0]
    d = (c2w[:, :3, :3] @ d_cam[..., None])[..., 0]
    d = d / d.norm(dim=-1, keepdim=True)
    return c2w[:, :3, 3].clone(), d


def ray_sphere(origins: torch.Tensor, dirs: torch.Tensor, radius: float = 1.0
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Entry and exit distances of unit-direction rays through a sphere at the origin.

    Returns:
        near (R,), far (R,) (near clamped at 0), hit (R,) bool.
    """
    b = (origins * dirs).sum(-1)
    c = (origins * origins).sum(-1) - radius * radius
    disc = b * b - c
    hit = disc > 0
    s = torch.sqrt(disc.clamp_min(0))
    near = (-b - s).clamp_min(0.0)
    far = -b + s
    hit = hit & (far > near)
    return near, far, hit


def ray_box(origins: torch.Tensor, dirs: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Entry and exit distances of rays through an axis-aligned box (slab method); exit < entry for a miss.

    Args:
        origins, dirs: (R, 3) rays.
        lo, hi: (3,) box corners.

    Returns:
        t_enter (R,), t_exit (R,).
    """
    inv = 1.0 / torch.where(dirs.abs() < 1e-12, torch.full_like(dirs, 1e-12), dirs)
    t0 = (lo - origins) * inv
    t1 = (hi - origins) * inv
    return torch.minimum(t0, t1).amax(-1), torch.maximum(t0, t1).amin(-1)


@dataclass
class PackedSamples:
    """Samples along a batch of rays, packed.

    Attributes:
        ray_indices: (S,) int64 ray of each sample, non-decreasing.
        t_starts, t_ends: (S,) interval of each sample along its ray.
        n_rays: number of rays in the batch.
    """

    ray_indices: torch.Tensor
    t_starts: torch.Tensor
    t_ends: torch.Tensor
    n_rays: int

    @property
    def t_mid(self) -> torch.Tensor:
        return 0.5 * (self.t_starts + self.t_ends)

    @property
    def deltas(self) -> torch.Tensor:
        return self.t_ends - self.t_starts

    def __len__(self) -> int:
        return int(self.ray_indices.shape[0])


class OccupancyGrid(torch.nn.Module):
    """Binary occupancy over the cube [-1, 1]^3, updated from the SDF during training.

    Each cell keeps an exponential moving average of the NeuS opacity that a ray step through the cell would
    get (estimated from the SDF at a random point in the cell and the current sharpness). Cells whose value
    stays below ``threshold`` are skipped by :meth:`sample`. Before the first update every cell is occupied.
    """

    def __init__(self, resolution: int = 128, threshold: float = 1e-3, ema_decay: float = 0.95) -> None:
        super().__init__()
        self.resolution = int(resolution)
        self.threshold = float(threshold)
        self.ema_decay = float(ema_decay)
        r = self.resolution
        self.register_buffer("values", torch.zeros(r, r, r))
        self.register_buffer("binary", torch.ones(r, r, r, dtype=torch.bool))  # all occupied until updated
        # march with the Triton kernels (:mod:`backend.kernels.march_triton`): set by the trainer on a fast path
        # (``NEUSBLEND_MARCH=torch`` keeps the reference march anyway)
        self.triton_march = False
        # what occupied_bounds and coarse_occupancy computed, for the occupancy tensor and version in the key
        self._cache: dict = {}
        self._cache_key: int | None = None
        self._cache_binary: torch.Tensor | None = None

    @property
    def cell_size(self) -> float:
        return 2.0 / self.resolution

    def cell_centers(self) -> torch.Tensor:
        """(r^3, 3) cell centres in flat index order: cell (i, j, k) is row i*r*r + j*r + k."""
        r = self.resolution
        ax = (torch.arange(r, device=self.values.device, dtype=torch.float32) + 0.5) * self.cell_size - 1.0
        g = torch.stack(torch.meshgrid(ax, ax, ax, indexing="ij"), -1)
        return g.reshape(-1, 3)

    @torch.no_grad()
    def update(self, sdf_fn, inv_s: float | torch.Tensor, step_size: float, n_cells: int | None = None,  # noqa: ANN001
               chunk: int = 2**18) -> None:
        """Refresh the occupancy from the SDF.

        Args:
            sdf_fn: callable (P, 3) -> (P,) signed distance in the normalized frame.
            inv_s: current NeuS sharpness (a number, or a scalar tensor on the grid's device: no host sync).
            step_size: the ray-marching step (length of the interval whose opacity is estimated).
            n_cells: update only this many random cells (None: all of them).
            chunk: points per SDF call.
        """
        r = self.resolution
        flat_vals = self.values.view(-1)
        device = flat_vals.device
        if n_cells is None or n_cells >= r**3:
            idx = torch.arange(r**3, device=device)
        else:
            idx = torch.randint(0, r**3, (n_cells,), device=device)
        i, j, k = idx // (r * r), (idx // r) % r, idx % r
        corner = torch.stack([i, j, k], -1).float() * self.cell_size - 1.0
        pts = corner + torch.rand(len(idx), 3, device=device) * self.cell_size
        sdf = torch.cat([sdf_fn(pts[s:s + chunk]) for s in range(0, len(idx), chunk)])
        # Worst case over the cell: the surface may be as close as |sdf| - half a cell diagonal.
        half_diag = 0.5 * self.cell_size * 3**0.5
        dist = (sdf.abs() - half_diag).clamp_min(0.0)
        alpha = neus_alpha_from_distance(dist, inv_s, step_size)
        new = torch.maximum(flat_vals[idx] * self.ema_decay, alpha)
        flat_vals[idx] = new
        self.binary = self.values > self.threshold

    @torch.no_grad()
    def mark_all(self) -> None:
        """Forget the estimate: every cell occupied until the next full update."""
        self.values.zero_()
        self.binary.fill_(True)

    def occupied(self, pts: torch.Tensor) -> torch.Tensor:
        """(P, 3) -> (P,) bool: inside the cube and in an occupied cell."""
        r = self.resolution
        ijk = ((pts + 1.0) * (0.5 * r)).floor().long()
        inside = ((ijk >= 0) & (ijk < r)).all(-1)
        ijk = ijk.clamp(0, r - 1)
        return inside & self.binary.view(-1)[(ijk[:, 0] * r + ijk[:, 1]) * r + ijk[:, 2]]

    def occupied_fraction(self) -> float:
        return float(self.binary.float().mean())

    def occupied_box(self) -> torch.Tensor:
        """(2, 3) bounding box of the occupied cells (the whole cube if none)."""
        nz = self.binary.nonzero()
        if len(nz) == 0:
            return torch.tensor([[-1.0] * 3, [1.0] * 3])
        lo = nz.min(0).values.float() * self.cell_size - 1.0
        hi = (nz.max(0).values.float() + 1.0) * self.cell_size - 1.0
        return torch.stack([lo, hi]).cpu()

    @torch.no_grad()
    def sample(self, origins: torch.Tensor, dirs: torch.Tensor, step_size: float, perturb: bool = True,
               radius: float = 1.0, offset: torch.Tensor | None = None) -> PackedSamples:
        """March every ray through the unit sphere in steps of ``step_size``, keeping occupied steps.

        Args:
            origins, dirs: (R, 3) rays (unit directions), normalized frame.
            step_size: distance between samples.
            perturb: jitter the first sample by a random fraction of a step (training).
            offset: (R,) that fraction of each ray, drawn already (overrides ``perturb``).

        Returns:
            :class:`PackedSamples` sorted by ray and distance.
        """
        n_rays = origins.shape[0]
        near_s, far, hit = ray_sphere(origins, dirs, radius)
        # Only the stretch of each ray inside the box around the occupied cells can keep samples: start the march
        # there (on the same lattice of steps from the sphere's entry, so the kept samples are exactly those of a
        # march through the whole sphere) and stop at its exit.
        lo, hi = self.occupied_bounds()
        t_lo, t_hi = ray_box(origins, dirs, lo, hi)
        far = torch.minimum(far, t_hi + step_size)  # a step of slack either side for rounding
        first = (torch.floor((torch.maximum(near_s, t_lo) - near_s) / step_size) - 1.0).clamp_min(0.0)  # (R,)
        start = near_s + first * step_size
        hit = hit & (far > start)
        span = torch.where(hit, far - start, torch.zeros_like(far))
        device = origins.device
        if offset is None:
            offset = torch.rand(n_rays, device=device) if perturb else torch.full((n_rays,), 0.5, device=device)
        if self.triton_march and debug.text("NEUSBLEND_MARCH") != "torch":
            from .kernels import march_triton

            n_steps = torch.ceil(span / step_size).to(torch.int32) + hit.to(torch.int32)
            ray_idx, t = march_triton.march(origins, dirs, start, far, n_steps, offset, self.binary, step_size,
                                            self.coarse_occupancy())
        else:
            ray_idx, t = march_dense(origins, dirs, start, far, hit, span, offset, self.occupied, step_size)
        half = 0.5 * step_size
        return PackedSamples(ray_idx, t - half, t + half, n_rays)

    def occupied_bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(3,) min and max corner of the box around the occupied cells, on the grid's device, without a host sync
        (an empty grid gives an empty box: min > max). Computed again only when the occupancy changed (every
        training step marches, the grid changes every few steps)."""
        return self._derived("bounds", self._occupied_bounds)

    def coarse_occupancy(self) -> torch.Tensor:
        """Blocks of 8^3 cells with any occupied cell, for the Triton march's skipping (see
        :func:`backend.kernels.march_triton.coarse_occupancy`); cached like :meth:`occupied_bounds`."""
        from .kernels.march_triton import coarse_occupancy

        return self._derived("coarse", lambda: coarse_occupancy(self.binary))

    def _derived(self, name: str, compute):  # noqa: ANN001, ANN202
        """``compute()``, cached until the occupancy tensor or its version counter changes."""
        if self._cache_binary is not self.binary or self._cache_key != self.binary._version:
            self._cache, self._cache_key, self._cache_binary = {}, self.binary._version, self.binary
        if name not in self._cache:
            self._cache[name] = compute()
        return self._cache[name]

    def _occupied_bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        r = self.resolution
        idx = torch.arange(r, device=self.binary.device)
        lo, hi = [], []
        for axis in range(3):
            other = tuple(a for a in range(3) if a != axis)
            any_axis = self.binary.any(dim=other)  # (r,)
            lo.append(torch.where(any_axis, idx, r).min())
            hi.append(torch.where(any_axis, idx, -1).max() + 1)
        cell = self.cell_size
        return torch.stack(lo).float() * cell - 1.0, torch.stack(hi).float() * cell - 1.0


def march_dense(origins: torch.Tensor, dirs: torch.Tensor, start: torch.Tensor, far: torch.Tensor, hit: torch.Tensor,
                span: torch.Tensor, offset: torch.Tensor, occupied, step_size: float  # noqa: ANN001
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference march of :meth:`OccupancyGrid.sample`: every ray's steps ``start + (k + offset) * step_size``
    before ``far`` as one dense (R, T) array, T the longest ray's steps, then the steps in occupied cells.

    Args:
        origins, dirs: (R, 3); start, far, span: (R,) with span = far - start (0 for rays that miss);
        hit: (R,) bool; offset: (R,) in [0, 1); occupied: (P, 3) -> (P,) bool.

    Returns:
        ray_indices (S,) sorted, t (S,) sample distances.
    """
    device = origins.device
    n_steps = int(torch.ceil(span.max() / step_size).item()) + 1 if origins.shape[0] else 0
    if n_steps <= 1:
        return torch.zeros(0, dtype=torch.long, device=device), torch.zeros(0, device=device)
    k = torch.arange(n_steps, device=device, dtype=origins.dtype)[None]
    t_mid = start[:, None] + (k + offset[:, None]) * step_size  # (R, T)
    valid = hit[:, None] & (t_mid < far[:, None])
    ray_idx, step_idx = valid.nonzero(as_tuple=True)
    t = t_mid[ray_idx, step_idx]
    keep = occupied(origins[ray_idx] + dirs[ray_idx] * t[:, None])
    return ray_idx[keep], t[keep]


def neus_alpha_from_distance(dist: torch.Tensor, inv_s: float | torch.Tensor, step: float) -> torch.Tensor:
    """Opacity of a step of length ``step`` that crosses the surface head-on at distance ``dist`` from it.

    Uses the NeuS discrete opacity with the SDF going from ``dist + step/2`` to ``dist - step/2``.
    """
    prev = torch.sigmoid((dist + 0.5 * step) * inv_s)
    nxt = torch.sigmoid((dist - 0.5 * step) * inv_s)
    return ((prev - nxt) / (prev + 1e-6)).clamp(0.0, 1.0)


def neus_alpha(sdf: torch.Tensor, dir_dot_grad: torch.Tensor, deltas: torch.Tensor, inv_s: torch.Tensor,
               cos_anneal_ratio: float = 1.0) -> torch.Tensor:
    """NeuS unbiased discrete opacity of each sample (Wang et al. 2021, eq. 13).

    The SDF at the interval's ends is extrapolated from its value and directional derivative at the midpoint.

    Args:
        sdf: (S,) SDF at the interval midpoints.
        dir_dot_grad: (S,) dot(ray direction, SDF gradient) at the midpoints.
        deltas: (S,) interval lengths.
        inv_s: scalar sharpness.
        cos_anneal_ratio: 0 at the start of training (the slope is taken as at least 0.5 in magnitude,
            which lets gradients reach surfaces seen at grazing angles), 1 afterwards (the true slope).

    Returns:
        (S,) opacity in [0, 1].
    """
    true_cos = dir_dot_grad
    iter_cos = -(torch.relu(-true_cos * 0.5 + 0.5) * (1.0 - cos_anneal_ratio)
                 + torch.relu(-true_cos) * cos_anneal_ratio)
    est_prev = sdf - iter_cos * deltas * 0.5
    est_next = sdf + iter_cos * deltas * 0.5
    prev_cdf = torch.sigmoid(est_prev * inv_s)
    next_cdf = torch.sigmoid(est_next * inv_s)
    return ((prev_cdf - next_cdf) / (prev_cdf + 1e-6)).clamp(0.0, 1.0)


def first_index_of_ray(ray_indices: torch.Tensor, n_rays: int) -> torch.Tensor:
    """(S,) sorted ray indices -> (n_rays,) index of each ray's first sample (S for rays with none)."""
    # index_add instead of bincount: no device-to-host sync, so it can run inside a CUDA graph
    counts = torch.zeros(n_rays, dtype=torch.long, device=ray_indices.device)
    counts.index_add_(0, ray_indices, torch.ones_like(ray_indices))
    starts = torch.cumsum(counts, 0) - counts
    return starts


def render_weights(alpha: torch.Tensor, ray_indices: torch.Tensor, n_rays: int,
                   sample_valid: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Volume-rendering weights ``w_i = alpha_i * prod_{j<i} (1 - alpha_j)`` within each ray.

    Args:
        alpha: (S,) opacities, packed and sorted by ray then distance.
        ray_indices: (S,) ray of each sample.
        n_rays: number of rays.
        sample_valid: optional (S,) 0/1: padding samples (0) get transmittance 1 and no weight; they may share
            one spare ray without making its first sample a hot spot for the backward pass.

    Returns:
        weights (S,), transmittance before each sample (S,).
    """
    if alpha.numel() == 0:
        return alpha, alpha
    log1m = torch.log1p(-alpha.clamp(max=1.0 - 1e-6)).double()
    incl = torch.cumsum(log1m, 0)
    excl = incl - log1m
    starts = first_index_of_ray(ray_indices, n_rays).clamp(max=len(alpha) - 1)
    first = starts.index_select(0, ray_indices)
    if sample_valid is not None:
        first = torch.where(sample_valid > 0, first, torch.arange(len(alpha), device=alpha.device))
    # gather, not advanced indexing: its backward is an atomic scatter-add instead of a sort
    base = excl.gather(0, first)
    trans = torch.exp(excl - base).to(alpha.dtype)
    return alpha * trans, trans


def visible_samples(sdf: torch.Tensor, ray_indices: torch.Tensor, n_rays: int, inv_s: torch.Tensor | float,
                    eps: float) -> torch.Tensor:
    """Samples that the camera can still see: the transmittance in front of them is above ``eps``.

    The opacity between two consecutive samples of a ray is the NeuS discrete opacity with the SDF at the two
    samples as the interval's ends (no gradient is needed); a ray's last sample gets none. A sample is kept when
    the transmittance up to the sample before it exceeds ``eps`` (one step of slack: the training opacity of a
    sample covers half a step before it), so a ray keeps at least its first two samples and everything up to just
    past the first surface it crosses opaquely.

    Args:
        sdf: (S,) SDF at the samples, packed and sorted by ray then distance.
        ray_indices: (S,) ray of each sample; n_rays: number of rays.
        inv_s: current NeuS sharpness (scalar); eps: transmittance threshold.

    Returns:
        (S,) bool.
    """
    n = sdf.shape[0]
    if n < 2:
        return torch.ones(n, dtype=torch.bool, device=sdf.device)
    same = ray_indices[1:] == ray_indices[:-1]  # (S-1,) sample i+1 is on the ray of sample i
    cdf = torch.sigmoid(sdf * inv_s)
    nxt = torch.cat([torch.where(same, cdf[1:], cdf[:-1]), cdf[-1:]])
    alpha = ((cdf - nxt) / (cdf + 1e-6)).clamp(0.0, 1.0)
    _, trans = render_weights(alpha, ray_indices, n_rays)
    prev = torch.cat([trans[:1], torch.where(same, trans[:-1], trans[1:])])  # up to the sample before (or 1)
    return prev > eps


def cull_hidden(sdf_fn, origins: torch.Tensor, dirs: torch.Tensor, ray_indices: torch.Tensor,  # noqa: ANN001
                t: torch.Tensor, inv_s: torch.Tensor | float, eps: float, stride: int = 1) -> torch.Tensor:
    """Which marched samples to train on: :func:`visible_samples` with the SDF evaluated at every ``stride``-th
    sample of each ray (and its last) only.

    The transmittance between two evaluated samples is the NeuS opacity across the whole stretch (where the SDF
    falls monotonically, the product of the per-step opacities telescopes to the same value). A ray keeps its
    samples up to, not including, its first hidden evaluated sample: up to 2 ``stride`` steps past the first
    opaque crossing. With ``stride=1`` this is exactly :func:`visible_samples` (the GPU default: there the extra
    indexing costs more than the SDF evaluations it saves; on the CPU the SDF evaluations dominate).

    Args:
        sdf_fn: (P, 3) -> (P,) signed distance (called once, without gradients).
        origins, dirs: (R, 3) rays; ray_indices: (S,) ray of each sample, sorted; t: (S,) sample distances.
        inv_s: NeuS sharpness; eps: transmittance threshold; stride: samples per SDF evaluation.

    Returns:
        (S,) bool.
    """
    n, n_rays = t.shape[0], origins.shape[0]
    if n < 2:
        return torch.ones(n, dtype=torch.bool, device=t.device)
    if stride <= 1:  # every sample: no indexing needed
        return visible_samples(sdf_fn(origins[ray_indices] + dirs[ray_indices] * t[:, None]), ray_indices, n_rays,
                               inv_s, eps)
    pos = torch.arange(n, device=t.device) - first_index_of_ray(ray_indices, n_rays).index_select(0, ray_indices)
    last = torch.ones(n, dtype=torch.bool, device=t.device)
    last[:-1] = ray_indices[1:] != ray_indices[:-1]
    idx = ((pos % stride == 0) | last).nonzero()[:, 0]  # the evaluated samples
    r = ray_indices.index_select(0, idx)
    sdf = sdf_fn(origins.index_select(0, r) + dirs.index_select(0, r) * t.index_select(0, idx)[:, None])
    hidden = ~visible_samples(sdf, r, n_rays, inv_s, eps)
    cut = torch.full((n_rays,), n, dtype=pos.dtype, device=t.device)  # first hidden position of each ray
    cut.scatter_reduce_(0, r[hidden], pos.index_select(0, idx)[hidden], reduce="amin")
    return pos < cut.index_select(0, ray_indices)


def accumulate(values: torch.Tensor | None, weights: torch.Tensor, ray_indices: torch.Tensor, n_rays: int
               ) -> torch.Tensor:
    """Sum ``weights * values`` per ray.

    Args:
        values: (S, C) per-sample values, or None to accumulate the weights themselves (opacity).
        weights: (S,).

    Returns:
        (n_rays, C) or (n_rays,).
    """
    if values is None:
        out = torch.zeros(n_rays, device=weights.device, dtype=weights.dtype)
        return out.index_add(0, ray_indices, weights)
    out = torch.zeros(n_rays, values.shape[-1], device=values.device, dtype=values.dtype)
    return out.index_add(0, ray_indices, weights[:, None] * values)
