"""The neural field: multi-resolution hash-grid encoding, SDF and colour networks, learned sharpness, background.

This is the portable reference path (plain PyTorch, any device). Fast paths (Triton kernels) implement the
same functions beside it and are checked against it (see ``backend/kernels``).
All positions are in the normalized frame: the object lies inside the unit sphere.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.nn import functional as F

from .errors import BackendError

if TYPE_CHECKING:
    from .config import TrainConfig

# Spatial hash primes of Teschner et al. (2003), as used by Instant-NGP (Mueller et al. 2022).
_PRIMES = (1, 2654435761, 805459861)


@dataclass
class HashGridConfig:
    """Hyper-parameters of :class:`HashGridEncoding`."""

    n_levels: int = 16
    n_features: int = 2
    log2_table_size: int = 19
    base_resolution: int = 16
    finest_resolution: int = 2048
    init_scale: float = 1e-4


class HashGridEncoding(nn.Module):
    """Multi-resolution hash encoding (Instant-NGP) in plain PyTorch.

    Level ``l`` has resolution ``floor(base * b**l)`` with ``b`` chosen so the last level reaches
    ``finest_resolution``. Coarse levels whose grid fits in the table are indexed densely (no collisions); finer
    levels are hashed. Features are trilinearly interpolated from the 8 corners of the cell.

    Progressive training: only the first ``active_levels`` levels contribute; the others output zeros (their
    parameters get no gradient until activated).
    """

    def __init__(self, cfg: HashGridConfig) -> None:
        super().__init__()
        self.cfg = cfg
        L = cfg.n_levels
        growth = math.exp((math.log(cfg.finest_resolution) - math.log(cfg.base_resolution)) / max(L - 1, 1))
        resolutions, sizes, offsets = [], [], [0]
        table = 2**cfg.log2_table_size
        for level in range(L):
            res = int(math.floor(cfg.base_resolution * growth**level))
            size = min(table, (res + 1) ** 3)
            size = int(math.ceil(size / 8) * 8)  # keep levels aligned for vectorised kernels
            resolutions.append(res)
            sizes.append(size)
            offsets.append(offsets[-1] + size)
        self.growth = growth
        self.level_resolutions = tuple(resolutions)  # the same as ``resolutions``, on the host
        self.register_buffer("resolutions", torch.tensor(resolutions, dtype=torch.int64), persistent=False)
        self.register_buffer("level_sizes", torch.tensor(sizes, dtype=torch.int64), persistent=False)
        self.register_buffer("level_offsets", torch.tensor(offsets[:-1], dtype=torch.int64), persistent=False)
        dense = [(r + 1) ** 3 <= s for r, s in zip(resolutions, sizes)]
        self.register_buffer("dense_levels", torch.tensor(dense), persistent=False)
        # the two groups' level indices, kept as tensors: selecting them per call by the boolean mask would
        # synchronise with the host (and break CUDA-graph capture of a reference step)
        self.register_buffer("_dense_idx", torch.tensor([i for i, d in enumerate(dense) if d], dtype=torch.int64),
                             persistent=False)
        self.register_buffer("_hashed_idx", torch.tensor([i for i, d in enumerate(dense) if not d],
                                                         dtype=torch.int64), persistent=False)
        self.embeddings = nn.Parameter(torch.empty(offsets[-1], cfg.n_features).uniform_(-cfg.init_scale,
                                                                                         cfg.init_scale))
        corners = torch.tensor([[(c >> 0) & 1, (c >> 1) & 1, (c >> 2) & 1] for c in range(8)], dtype=torch.int64)
        self.register_buffer("corners", corners, persistent=False)  # (8, 3)
        self.register_buffer("primes", torch.tensor(_PRIMES, dtype=torch.int64), persistent=False)
        self.active_levels = L

    @property
    def n_output_dims(self) -> int:
        return self.cfg.n_levels * self.cfg.n_features

    def level_mask(self, device: torch.device | None = None) -> torch.Tensor:
        """(L,) float mask of the active levels."""
        m = (torch.arange(self.cfg.n_levels) < self.active_levels).float()
        return m.to(device) if device is not None else m

    def _level_groups(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(dense level indices, hashed level indices), int64 on the encoding's device."""
        return self._dense_idx, self._hashed_idx

    def corner_indices(self, x01: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Table rows and interpolation weights of the 8 corners at every level.

        Args:
            x01: (N, 3) positions in [0, 1]^3.

        Returns:
            rows: (N, L, 8) int64 rows of :attr:`embeddings`.
            weights: (N, L, 8) trilinear weights (differentiable w.r.t. ``x01``).
        """
        res = self.resolutions.to(x01.dtype)  # (L,)
        pos = x01[:, None, :] * res[None, :, None]  # (N, L, 3)
        # the last cell is closed on its far side, so x01 = 1 stays inside the table
        cell = torch.minimum(torch.floor(pos), (res - 1)[None, :, None]).detach()
        frac = pos - cell  # (N, L, 3)
        c = cell.long()
        # per-axis corner coordinates (N, L, 2); corner k = x_bit + 2 y_bit + 4 z_bit, laid out as (z, y, x)
        ax, ay, az = (torch.stack([c[..., a], c[..., a] + 1], -1) for a in range(3))
        # each level is indexed one way only: the dense levels' rows and the hashed levels' rows are computed on
        # their own levels (computing both everywhere and choosing doubled the cost of this function)
        idx = torch.empty(*ax.shape[:2], 2, 2, 2, dtype=torch.int64, device=x01.device)  # (N, L, z, y, x)
        dense_lv, hashed_lv = self._level_groups()
        if len(dense_lv):
            r1 = (self.resolutions[dense_lv] + 1)[None, :, None]
            bx, by, bz = ax[:, dense_lv], ay[:, dense_lv] * r1, az[:, dense_lv] * (r1 * r1)
            idx[:, dense_lv] = bx[..., None, None, :] + by[..., None, :, None] + bz[..., :, None, None]
        if len(hashed_lv):
            p = self.primes
            hx, hy, hz = ax[:, hashed_lv] * p[0], ay[:, hashed_lv] * p[1], az[:, hashed_lv] * p[2]
            hashed = hx[..., None, None, :] ^ hy[..., None, :, None] ^ hz[..., :, None, None]
            # hashed levels are powers of two: the mask keeps the low bits
            idx[:, hashed_lv] = hashed & (self.level_sizes[hashed_lv] - 1)[None, :, None, None, None]
        rows = (idx + self.level_offsets[None, :, None, None, None]).reshape(x01.shape[0], -1, 8)
        wx, wy, wz = (torch.stack([1 - frac[..., a], frac[..., a]], -1) for a in range(3))
        w = (wz[..., :, None, None] * wy[..., None, :, None] * wx[..., None, None, :]).reshape(x01.shape[0], -1, 8)
        return rows, w

    def forward(self, x01: torch.Tensor) -> torch.Tensor:
        """Encode positions.

        Args:
            x01: (N, 3) positions in [0, 1]^3 (values outside are clamped).

        Returns:
            (N, L * F) features, zero for inactive levels.
        """
        x01 = x01.clamp(0.0, 1.0)
        rows, w = self.corner_indices(x01)
        feats = self.embeddings[rows]  # (N, L, 8, F)
        out = (feats * w[..., None]).sum(2)  # (N, L, F)
        if self.active_levels < self.cfg.n_levels:
            out = out * self.level_mask(out.device)[None, :, None]
        return out.reshape(x01.shape[0], -1)


def sh_encode(d: torch.Tensor, degree: int = 4) -> torch.Tensor:
    """Real spherical harmonics of unit directions.

    Args:
        d: (N, 3) unit vectors.
        degree: 1..4 (number of bands); output has degree**2 channels.

    Returns:
        (N, degree**2) SH basis values.
    """
    x, y, z = d.unbind(-1)
    out = [torch.full_like(x, 0.28209479177387814)]
    if degree > 1:
        out += [-0.48860251190291987 * y, 0.48860251190291987 * z, -0.48860251190291987 * x]
    if degree > 2:
        xx, yy, zz = x * x, y * y, z * z
        out += [1.0925484305920792 * x * y, -1.0925484305920792 * y * z, 0.94617469575755997 * zz - 0.31539156525251999,
                -1.0925484305920792 * x * z, 0.54627421529603959 * (xx - yy)]
    if degree > 3:
        out += [0.59004358992664352 * y * (3 * xx - yy), 2.8906114426405538 * x * y * z,
                0.45704579946446572 * y * (5 * zz - 1), 0.3731763325901154 * z * (5 * zz - 3),
                0.45704579946446572 * x * (5 * zz - 1), 1.4453057213202769 * z * (xx - yy),
                0.59004358992664352 * x * (xx - 3 * yy)]
    return torch.stack(out, -1)


@dataclass
class Background:
    """What a ray meets outside the region: ``front`` (R, 3) colour accumulated before it enters the unit sphere and
    ``front_trans`` (R,) the transmittance through that stretch (None: nothing in front), ``back`` (R, 3) the colour
    seen behind it (through to infinity)."""

    back: torch.Tensor
    front: torch.Tensor | None = None
    front_trans: torch.Tensor | None = None
    distortion: torch.Tensor | None = None  # (R,) see BackgroundField.forward

    def composite(self, rgb: torch.Tensor, opacity: torch.Tensor) -> torch.Tensor:
        """The ray's colour (R, 3) with the foreground's accumulated colour ``rgb`` (R, 3) and ``opacity`` (R,)
        between the stretch in front and what lies behind."""
        out = rgb + (1.0 - opacity[:, None]) * self.back
        if self.front is None:
            return out
        return self.front + self.front_trans[:, None] * out

    def padded(self, n: int) -> Background:
        """The same for ``n`` rows, the rows past these with nothing outside (black behind, clear in front)."""
        extra = n - self.back.shape[0]
        if extra <= 0:
            return self
        z = self.back.new_zeros(extra, 3)
        zeros = self.back.new_zeros(extra)
        return Background(back=torch.cat([self.back, z]),
                          front=None if self.front is None else torch.cat([self.front, z]),
                          front_trans=None if self.front_trans is None else torch.cat(
                              [self.front_trans, zeros + 1.0]),
                          distortion=None if self.distortion is None else torch.cat([self.distortion, zeros]))


@dataclass
class BackgroundConfig:
    """Hyper-parameters of :class:`BackgroundField`."""

    grid: HashGridConfig
    hidden: int = 32
    samples: int = 16  # samples per ray outside the sphere
    spacing: float = 1.0  # half of the samples behind the sphere lie within this distance (normalized frame) of it
    sh_degree: int = 1
    front_fraction: float = 0.25  # share of a ray's samples in front of the sphere (for rays through it)


def contract(p: torch.Tensor) -> torch.Tensor:
    """Contract all of space into the ball of radius 2: the unit ball stays, a point at distance r > 1 goes to
    distance 2 - 1/r in the same direction (mip-NeRF 360's contraction, Barron et al. 2022).

    Args:
        p: (..., 3) positions in the normalized frame. Returns: (..., 3) in the ball of radius 2.
    """
    r = p.norm(dim=-1, keepdim=True).clamp_min(1e-9)
    return torch.where(r <= 1.0, p, (2.0 - 1.0 / r) * (p / r))


NEAR_FRACTION = 0.5  # background samples start at this fraction of the camera's distance to the region's centre


def background_distances(origins: torch.Tensor, dirs: torch.Tensor, n: int, jitter: torch.Tensor | None,
                         spacing: float, front_fraction: float = 0.25
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Where the background samples lie along each ray: everywhere but inside the unit sphere.

    A ray through the sphere gets ``round(n * front_fraction)`` samples in front of it, from half the camera's
    distance to the centre to its entry, closer together towards the entry (a table or floor around the object is
    there), and the rest beyond its exit, spaced evenly in ``u = s / (s + spacing)``, ``s`` the distance past the
    exit, so they thin out towards infinity (``u = 1``). A ray that misses the sphere gets all ``n`` that way from
    that same near distance (or its point closest to the centre, if nearer), with the spacing at least half the
    distance to that point (what it passes there is as far away as the region). Nothing nearer the camera: space
    that one camera alone sees would hold whatever fits that view (floaters) and spoil the others.

    Args:
        origins, dirs: (R, 3) rays (unit directions), normalized frame; n: samples per ray;
        jitter: (R,) in [0, 1) (None: 0.5): where each ray's samples sit in their intervals; spacing: see above.

    Returns:
        t: (R, n) distances along the rays, increasing; front: (R, n) bool, the samples in front of the sphere;
        s: (R, n) each sample's place in its stretch, in [0, 1] (in front: from the near end to the entry;
        behind: ``u``), the coordinate of the distortion loss.
    """
    b = (origins * dirs).sum(-1)
    oo = (origins * origins).sum(-1)
    disc = b * b - (oo - 1.0)
    root = torch.sqrt(disc.clamp_min(0.0))
    t_in, t_out = (-b - root).clamp_min(0.0), (-b + root).clamp_min(0.0)
    hit = (disc > 0) & (t_out > 0)
    # nothing closer to the camera than half its distance to the region: space seen by one camera only would hold
    # whatever fits that view (floaters) and spoil the others
    t_near = NEAR_FRACTION * torch.sqrt(oo)
    n_front = min(max(int(round(n * front_fraction)), 1), n - 1)
    k = torch.arange(n, device=origins.device, dtype=origins.dtype)[None]  # (1, n)
    j = (torch.full_like(b, 0.5) if jitter is None else jitter)[:, None]  # (R, 1)
    # behind (or all along a miss): u evenly spaced in (0, 1)
    n_back = torch.where(hit, torch.full_like(b, n - n_front), torch.full_like(b, n))[:, None]
    k_back = k - torch.where(hit, torch.full_like(b, n_front), torch.zeros_like(b))[:, None]
    u = ((k_back + j) / n_back).clamp(0.0, 1.0 - 1e-6)
    start = torch.where(hit, t_out, torch.minimum(t_near, (-b).clamp_min(0.0)))[:, None]
    scale = torch.where(hit, torch.full_like(b, spacing), (-0.5 * b).clamp_min(spacing))[:, None]
    t_back = start + scale * (u / (1.0 - u))
    # in front: v from 1 (near the origin) down to 0 (the entry), quadratically denser towards the entry
    v = (1.0 - (k + j) / max(n_front, 1)).clamp(0.0, 1.0)
    near = torch.minimum(t_near, t_in)[:, None]
    t_front = t_in[:, None] - (t_in[:, None] - near) * v * v
    front = hit[:, None] & (k < n_front)
    return torch.where(front, t_front, t_back), front, torch.where(front, 1.0 - v, u)


class BackgroundField(nn.Module):
    """A radiance field for everything outside the unit sphere (the region of interest), so that the SDF never has
    to explain the room: density and colour over the contracted space (:func:`contract`), hash-encoded, sampled at
    a fixed number of points per ray outside the sphere, a few in front of it and the rest beyond its exit
    (:func:`background_distances`), and volume-rendered in that order around the foreground (what passes through
    all of them shows the environment at infinity). NeuS's unmasked setting composites a NeRF++ background behind
    its sphere the same way; the stretch in front matters here because the cameras stand outside the region, and
    a table or floor between them and the region must not be explained by the SDF.

    Fixed samples per ray keep every shape static, so the training step stays one CUDA graph. Opacities use the
    spacing in ``u``: sample ``k`` covers ``1 / n`` of it, ``alpha_k = 1 - exp(-sigma_k / n)``.
    """

    def __init__(self, cfg: BackgroundConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoding = HashGridEncoding(cfg.grid)
        h = cfg.hidden
        self.density_layers = nn.ModuleList([nn.Linear(self.encoding.n_output_dims, h), nn.Linear(h, 1)])
        self.color_layers = nn.ModuleList([nn.Linear(h + cfg.sh_degree**2, h), nn.Linear(h, 3)])
        with torch.no_grad():  # start faint: about a third of the light passes all samples
            self.density_layers[1].bias.fill_(math.log(0.4))

    def query(self, pts: torch.Tensor, view_sh: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Density and colour at points.

        Args:
            pts: (P, 3) normalized-frame positions (anywhere); view_sh: (P, sh_degree**2) their rays' direction
                encoding.

        Returns:
            sigma (P,) >= 0 per unit of ``u``; rgb (P, 3) in [0, 1].
        """
        x01 = contract(pts) * 0.25 + 0.5  # the ball of radius 2 inside [0, 1]^3
        h = F.relu(self.density_layers[0](self.encoding(x01)))
        sigma = torch.exp(self.density_layers[1](h)[:, 0].clamp(-15.0, 15.0))
        c = F.relu(self.color_layers[0](torch.cat([h, view_sh], -1)))
        return sigma, torch.sigmoid(self.color_layers[1](c))

    def forward(self, origins: torch.Tensor, dirs: torch.Tensor, jitter: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Volume-render the background along rays, in front of the sphere and behind it apart.

        Args:
            origins, dirs: (R, 3) rays (unit directions), normalized frame; jitter: (R,) in [0, 1) or None.

        Returns:
            front_rgb (R, 3) and front_trans (R,): colour accumulated in front of the sphere and the transmittance
            through it; back_rgb (R, 3) and back_trans (R,): the same behind the sphere (all of a ray that misses it);
            distortion (R,): mip-NeRF 360's distortion of each stretch's weights, summed (small when each stretch's
            light comes from one compact place: a surface rather than haze).
        """
        n = self.cfg.samples
        R = origins.shape[0]
        t, front, s = background_distances(origins, dirs, n, jitter, self.cfg.spacing, self.cfg.front_fraction)
        pts = (origins[:, None] + dirs[:, None] * t[..., None]).reshape(R * n, 3)
        sh = sh_encode(dirs, self.cfg.sh_degree)  # (R, D)
        sigma, rgb = self.query(pts, sh[:, None].expand(R, n, sh.shape[-1]).reshape(R * n, -1))
        tau = sigma.view(R, n) / n  # optical depth of each sample's interval
        rgb = rgb.view(R, n, 3)
        out = []
        distortion = tau.new_zeros(R)
        for part in (front, ~front):
            tp = tau * part
            acc = torch.cumsum(tp, 1)  # (R, n): through sample k, this part's samples only
            w = torch.exp(tp - acc) - torch.exp(-acc)  # alpha_k * transmittance before k (0 outside the part)
            out += [(w[..., None] * rgb).sum(1), torch.exp(-acc[:, -1])]
            sp = s * part
            width = 1.0 / part.sum(1, keepdim=True).clamp_min(1)  # each sample's share of its stretch
            distortion = distortion + (w[:, :, None] * w[:, None, :] * (sp[:, :, None] - sp[:, None, :]).abs()
                                       ).sum((1, 2)) + (w * w).sum(1) * width[:, 0] / 3.0
        return out[0], out[1], out[2], out[3], distortion


@dataclass
class FieldConfig:
    """Hyper-parameters of :class:`NeuSField`."""

    grid: HashGridConfig
    sdf_hidden: int = 64
    sdf_layers: int = 1
    feature_dim: int = 15
    color_hidden: int = 64
    color_layers: int = 2
    activation: str = "softplus"  # "softplus" (smooth second derivative) or "relu"
    sphere_init_radius: float = 0.5
    init_variance: float = 0.3
    sh_degree: int = 4
    background: str = "env"  # "field": radiance field beyond the sphere (+ env at infinity); "env": direction-only
    # environment; "none": nothing (masks say what is not the object)
    bg: BackgroundConfig | None = None  # the background field's settings (``background == "field"``)
    normals: str = "analytic"  # or "finite_difference" (see NeuSField.sdf_with_gradient)
    normal_step: float = 0.0  # finite-difference step; 0 = one cell of the finest active level
    precision: str = "float32"  # "mixed", "tf32": the fused networks' products on CUDA (TrainConfig.precision)

    @classmethod
    def from_train(cls, cfg: TrainConfig, has_masks: bool) -> FieldConfig:
        """The field of a training configuration (with masks there is no background model: the masks say what is
        not the object)."""
        if cfg.normals not in NORMALS:
            raise BackendError(f"unknown normals {cfg.normals!r}", hint=f"Choose one of {', '.join(NORMALS)}.")
        if cfg.normal_step < 0:
            raise BackendError(f"normal_step must be >= 0, got {cfg.normal_step}",
                               hint="0 takes one cell of the finest active level; a positive value is a fixed step.")
        if cfg.precision not in PRECISIONS:
            raise BackendError(f"unknown precision {cfg.precision!r}", hint=f"Choose one of {', '.join(PRECISIONS)}.")
        background = background_model(cfg.background, has_masks)
        bg = None
        if background == "field":  # the background's keys are the field's with a ``bg_`` prefix
            bg = BackgroundConfig(grid=HashGridConfig(n_levels=cfg.bg_levels, n_features=2,
                                                      log2_table_size=cfg.bg_log2_table_size, base_resolution=16,
                                                      finest_resolution=cfg.bg_finest_resolution),
                                  **_same_named(BackgroundConfig, cfg, prefix="bg_"))
        return cls(grid=HashGridConfig(**_same_named(HashGridConfig, cfg)), background=background, bg=bg,
                   **_same_named(cls, cfg, skip=("background",)))


def _same_named(target: type, cfg: TrainConfig, prefix: str = "", skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """The keys of ``cfg`` named like ``target``'s fields (after ``prefix``): how a training configuration's flat keys
    reach the field's settings without copying them one by one."""
    return {f.name: getattr(cfg, prefix + f.name) for f in fields(target)
            if f.name not in skip and hasattr(cfg, prefix + f.name)}


BACKGROUNDS = ("auto", "field", "env", "none")


def background_model(name: str, has_masks: bool) -> str:
    """The background model a configuration's ``background`` key asks for: ``"auto"`` is ``"none"`` with masks (they
    say what is not the object) and ``"field"`` without."""
    if name not in BACKGROUNDS:
        raise BackendError(f"unknown background {name!r}", hint=f"Choose one of {', '.join(BACKGROUNDS)}.")
    if name == "auto":
        return "none" if has_masks else "field"
    return name


NORMALS = ("analytic", "finite_difference")
PRECISIONS = ("float32", "mixed", "tf32")


class NeuSField(nn.Module):
    """SDF network (hash grid + MLP), colour network, learned sharpness ``inv_s`` and background.

    The SDF is positive outside the surface. At initialisation it approximates a sphere of radius
    ``sphere_init_radius`` (geometric initialisation of Atzmon & Lipman 2020, with zero weights on the grid
    features so the initial field is the sphere whatever the random table).
    """

    def __init__(self, cfg: FieldConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoding = HashGridEncoding(cfg.grid)
        in_dim = 3 + self.encoding.n_output_dims
        dims = [in_dim] + [cfg.sdf_hidden] * cfg.sdf_layers + [1 + cfg.feature_dim]
        self.sdf_layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self._geometric_init()
        cdims = [cfg.feature_dim + 3 + 3 + cfg.sh_degree**2] + [cfg.color_hidden] * cfg.color_layers + [3]
        self.color_layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(cdims[:-1], cdims[1:]))
        self.variance = nn.Parameter(torch.tensor(float(cfg.init_variance)))
        if cfg.background in ("env", "field"):  # the field's colour at infinity is the environment
            self.bg_layers = nn.ModuleList([nn.Linear(cfg.sh_degree**2, 32), nn.Linear(32, 3)])
        else:
            self.bg_layers = nn.ModuleList()
        self.bg_field = BackgroundField(cfg.bg or BackgroundConfig(grid=HashGridConfig(n_levels=8, n_features=2))) \
            if cfg.background == "field" else None

    def _geometric_init(self) -> None:
        layers = list(self.sdf_layers)
        for i, layer in enumerate(layers):
            out_dim, in_dim = layer.weight.shape
            if i == len(layers) - 1:
                nn.init.normal_(layer.weight, mean=math.sqrt(math.pi) / math.sqrt(in_dim), std=1e-4)
                nn.init.constant_(layer.bias, -self.cfg.sphere_init_radius)
            else:
                nn.init.normal_(layer.weight, 0.0, math.sqrt(2) / math.sqrt(out_dim))
                nn.init.constant_(layer.bias, 0.0)
                if i == 0:
                    nn.init.constant_(layer.weight[:, 3:], 0.0)  # grid features start silent

    def _act(self, x: torch.Tensor) -> torch.Tensor:
        return F.softplus(x, beta=100.0) if self.cfg.activation == "softplus" else F.relu(x)

    # ------------------------------------------------------------------ geometry

    def geometry(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """SDF and geometry features.

        Args:
            x: (N, 3) positions in the normalized frame (inside [-1, 1]^3).

        Returns:
            sdf: (N,) signed distance (positive outside).
            feat: (N, feature_dim) features for the colour network.
        """
        h = torch.cat([x, self.encoding((x + 1.0) * 0.5)], -1)
        layers = self.sdf_layers
        for layer in layers[:-1]:
            h = self._act(layer(h))
        out = layers[-1](h)
        return out[:, 0], out[:, 1:]

    def sdf(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3) -> (N,) signed distance."""
        fused = getattr(self.encoding, "fused_sdf", None)  # fast paths outside autograd: same values
        fast = fused(self, x) if fused is not None else None
        return fast if fast is not None else self.geometry(x)[0]

    def bounded_sdf(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3) -> (N,) signed distance intersected with the unit ball (nothing outside the region): what the
        occupancy grid and the meshes see."""
        return torch.maximum(self.sdf(x), x.norm(dim=-1) - 1.0)

    def normal_step(self) -> float:
        """The finite-difference step in the normalized frame: ``cfg.normal_step``, or one cell of the finest active
        hash-grid level (``2 / resolution``: it shrinks as training adds levels, as in Neuralangelo)."""
        if self.cfg.normal_step > 0:
            return float(self.cfg.normal_step)
        enc = self.encoding
        level = max(1, min(int(enc.active_levels), enc.cfg.n_levels)) - 1
        return 2.0 / enc.level_resolutions[level]

    def sdf_with_gradient(self, x: torch.Tensor, create_graph: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """SDF, features and the SDF's spatial gradient: analytic (by autograd, or a fast path's fused node), or by
        central differences when ``cfg.normals == "finite_difference"``.

        Args:
            x: (N, 3) positions.
            create_graph: keep the graph of the gradient (needed for the eikonal loss in training).

        Returns:
            sdf (N,), feat (N, feature_dim), grad (N, 3).
        """
        if self.cfg.normals == "finite_difference":
            return self._sdf_with_difference_gradient(x, create_graph)
        fused = getattr(self.encoding, "fused_geometry", None)  # fast paths: one autograd node, same values
        fast = fused(self, x) if fused is not None else None
        if fast is not None:
            sdf, feat, grad = fast
            return sdf, feat, grad if create_graph else grad.detach()
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            sdf, feat = self.geometry(x)
            (grad,) = torch.autograd.grad(sdf.sum(), x, create_graph=create_graph)
        return sdf, feat, grad

    def _sdf_with_difference_gradient(self, x: torch.Tensor, create_graph: bool
                                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``grad_i = (sdf(x + h e_i) - sdf(x - h e_i)) / 2h`` with ``h = normal_step()``: the SDF at 7N points in one
        call of :meth:`geometry`, so the fast path's encoding kernels see one batch. The gradient's derivatives are
        first order (through the six SDF values), so the eikonal loss needs no double backward; positions outside
        the grid's cube are clamped by the encoding as in :meth:`geometry`.

        Args:
            x: (N, 3) positions. Returns: sdf (N,), feat (N, feature_dim), grad (N, 3).
        """
        n, h = x.shape[0], self.normal_step()
        eye = torch.eye(3, dtype=x.dtype, device=x.device) * h
        offsets = torch.cat([torch.zeros_like(eye[:1]), eye, -eye])[:, None]  # (7, 1, 3): 0, then +h, -h per axis
        pts = (x.detach()[None] + offsets).reshape(7 * n, 3)  # (7N, 3)
        sdf, feat = self.geometry(pts)
        sdf = sdf.view(7, n)
        grad = (sdf[1:4] - sdf[4:7]).T / (2.0 * h)  # (N, 3)
        return sdf[0], feat[:n], grad if create_graph else grad.detach()

    def eikonal_sum(self, grad: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        """The eikonal loss's sum ``sum_i weight_i (|grad_i| - 1)^2`` (a 0-dim tensor; divide by the count for the
        mean). A fast path's kernels compute the same sum and its gradient with respect to ``grad``.

        Args:
            grad: (N, 3) SDF gradients (from :meth:`sdf_with_gradient` with ``create_graph=True``).
            weight: (N,) per-point weights (a validity mask; not differentiated) or None for ones.
        """
        fused = getattr(self.encoding, "fused_eikonal", None)  # fast paths: one kernel each way, same value
        fast = fused(grad, weight) if fused is not None else None
        if fast is not None:
            return fast
        res = (grad.norm(dim=-1) - 1.0) ** 2
        return (res * weight if weight is not None else res).sum()

    # ------------------------------------------------------------------ appearance

    def color(self, x: torch.Tensor, normal: torch.Tensor, view_dir: torch.Tensor, feat: torch.Tensor) -> torch.Tensor:
        """Radiance.

        Args:
            x: (N, 3) positions; normal: (N, 3) unit normals; view_dir: (N, 3) unit ray directions
            (from camera to point); feat: (N, feature_dim).

        Returns:
            (N, 3) colour in [0, 1].
        """
        fused = getattr(self.encoding, "fused_color", None)  # fast paths: one autograd node, same values
        fast = fused(self, x, normal, view_dir, feat) if fused is not None else None
        if fast is not None:
            return fast
        parts = [feat, x, normal, sh_encode(view_dir, self.cfg.sh_degree)]
        # on CUDA, rows of a multiple of 4 floats (zero columns: same values): cuBLAS then takes aligned kernels
        pad = -self.color_layers[0].in_features % 4 if x.is_cuda else 0
        h = torch.cat(parts + [x.new_zeros(x.shape[0], pad)] if pad else parts, -1)
        last = len(self.color_layers) - 1
        for i, layer in enumerate(self.color_layers):
            h = F.linear(h, F.pad(layer.weight, (0, pad)) if i == 0 and pad else layer.weight, layer.bias)
            h = F.relu(h) if i < last else torch.sigmoid(h)
        return h

    def environment(self, view_dir: torch.Tensor) -> torch.Tensor | None:
        """(R, 3) ray directions -> (R, 3) colour at infinity in each direction, or None without a background model."""
        if len(self.bg_layers) == 0:
            return None
        h = F.relu(self.bg_layers[0](sh_encode(view_dir, self.cfg.sh_degree)))
        return torch.sigmoid(self.bg_layers[1](h))

    def background(self, view_dir: torch.Tensor, origins: torch.Tensor | None = None,
                   jitter: torch.Tensor | None = None) -> Background | None:
        """What lies outside the unit sphere along each ray, to composite with the foreground (see
        :meth:`Background.composite`).

        With the background field (``cfg.background == "field"``) it is volume-rendered along the ray in front of the
        sphere and behind it (see :class:`BackgroundField`), over the environment at infinity; otherwise the
        environment alone, behind.

        Args:
            view_dir: (R, 3) unit ray directions; origins: (R, 3) ray origins (needed by the field);
            jitter: (R,) in [0, 1): where the field's samples sit in their intervals (None: the middle).

        Returns:
            The background, or None without a background model.
        """
        env = self.environment(view_dir)
        if env is None:
            return None
        if self.bg_field is None:
            return Background(back=env)
        if origins is None:
            raise ValueError("the background field needs the rays' origins")
        front, front_trans, back, back_trans, distortion = self.bg_field(origins, view_dir, jitter)
        return Background(back=back + back_trans[:, None] * env, front=front, front_trans=front_trans,
                          distortion=distortion)

    def inv_s(self) -> torch.Tensor:
        """Scalar sharpness 1/s of the logistic density (grows as training converges)."""
        return torch.exp(self.variance * 10.0).clamp(1e-6, 1e6)
