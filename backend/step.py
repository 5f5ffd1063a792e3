"""One training step's computation on packed samples, eagerly or replayed from a CUDA graph.

:func:`step_losses` is the single definition of the losses (used by both paths). It works on buffers that may be
padded: padded samples have ``sample_valid == 0`` and belong to a spare ray (index ``R``, one past the last real
ray), padded rays have ``ray_valid == 0``. With fixed capacities the shapes never change, so
:class:`GraphStep` can capture forward, double backward and the optimiser step in one CUDA graph and replay it:
the host then only launches one graph per step instead of hundreds of kernels.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, TypeVar

import torch

from .field import NeuSField
from .render import neus_alpha, render_weights

if TYPE_CHECKING:
    from .config import TrainConfig

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class StepInputs:
    """Tensors of one step. S samples (sorted by ray), R rays plus one spare row, E eikonal points.

    Attributes:
        pts, dirs: (S, 3) sample positions and their ray directions; deltas: (S,) interval lengths.
        ray_indices: (S,) int64 in [0, R]; sample_valid: (S,) float 0/1.
        ray_dirs: (R + 1, 3) ray directions (for the background field).
        gt: (R + 1, 3) target colours (already composited on ``bg`` when there are masks).
        bg: (R + 1, 3) background colour behind each ray, or None to use the field's background model.
        mask: (R + 1,) mask values in [0, 1], or None.
        ray_valid: (R + 1,) float 0/1; inv_n_rays: () 1 / number of valid rays.
        rand_pts: (E, 3) uniform points for the eikonal term; cos_anneal: () NeuS annealing ratio.
        ray_origins: (R + 1, 3) ray origins and bg_jitter: (R + 1,) in [0, 1), where the background field's samples
            sit in their intervals (see :func:`backend.field.background_distances`); None without that field.
    """

    pts: torch.Tensor
    dirs: torch.Tensor
    deltas: torch.Tensor
    ray_indices: torch.Tensor
    sample_valid: torch.Tensor
    ray_dirs: torch.Tensor
    gt: torch.Tensor
    bg: torch.Tensor | None
    mask: torch.Tensor | None
    ray_valid: torch.Tensor
    inv_n_rays: torch.Tensor
    rand_pts: torch.Tensor
    cos_anneal: torch.Tensor
    ray_origins: torch.Tensor | None = None
    bg_jitter: torch.Tensor | None = None


@dataclass(frozen=True)
class LossWeights:
    """The losses of a step and their weights.

    Attributes:
        eikonal: weight of the eikonal term. mask: of the mask's binary cross-entropy (with masks).
        rgb_loss: "l1" or "huber". distortion: of the background field's distortion loss (mean over the valid rays).
        opacity_entropy: without masks, of the foreground opacity's binary entropy (mean over the valid rays): pushes
            each ray to see the object fully or not at all.
    """

    eikonal: float = 0.1
    mask: float = 0.1
    rgb_loss: str = "l1"
    distortion: float = 0.0
    opacity_entropy: float = 0.0

    @classmethod
    def from_train(cls, cfg: TrainConfig) -> LossWeights:
        """The weights a training configuration sets."""
        return cls(eikonal=cfg.eikonal_weight, mask=cfg.mask_weight, rgb_loss=cfg.rgb_loss,
                   distortion=cfg.bg_distortion_weight, opacity_entropy=cfg.opacity_entropy_weight)


def step_losses(field: NeuSField, x: StepInputs, losses: LossWeights, *,
                bg_rows: int | None = None) -> dict[str, torch.Tensor]:
    """Render the packed samples and compute the training losses (nothing is synchronised with the host).

    Args:
        losses: which losses, how heavily (the mask term only where ``x`` has masks).
        bg_rows: the background field is evaluated on the first this many ray rows only (None: all); the rows past
            them must not be valid rays. Its cost grows with the rows, so the CUDA graph sizes it to the rays drawn.

    Returns:
        ``loss`` (total), ``mse``, ``eikonal``, ``mask`` (zero without masks): scalar tensors.
    """
    n_rows = x.ray_dirs.shape[0]
    sdf, feat, grad = field.sdf_with_gradient(x.pts, create_graph=True)
    alpha = neus_alpha(sdf, (x.dirs * grad).sum(-1), x.deltas, field.inv_s(), x.cos_anneal) * x.sample_valid
    weights, _ = render_weights(alpha, x.ray_indices, n_rows, x.sample_valid)
    normal = grad / grad.norm(dim=-1, keepdim=True).clamp_min(1e-6)
    rgb_s = field.color(x.pts, normal, x.dirs, feat)
    rgb = torch.zeros(n_rows, 3, device=x.pts.device).index_add(0, x.ray_indices, weights[:, None] * rgb_s)
    opacity = torch.zeros(n_rows, device=x.pts.device).index_add(0, x.ray_indices, weights)
    distortion = None
    if x.bg is not None:  # masks: a given colour behind the object
        rgb = rgb + (1.0 - opacity[:, None]) * x.bg
    else:
        rows = n_rows if bg_rows is None else min(int(bg_rows), n_rows)
        bg = field.background(x.ray_dirs[:rows], None if x.ray_origins is None else x.ray_origins[:rows],
                              None if x.bg_jitter is None else x.bg_jitter[:rows])
        if bg is not None:
            bg = bg.padded(n_rows)
            rgb = bg.composite(rgb, opacity)
            if losses.distortion > 0 and bg.distortion is not None:
                distortion = (bg.distortion * x.ray_valid).sum() * x.inv_n_rays
    diff = rgb - x.gt
    if losses.rgb_loss == "huber":
        per_ray = torch.nn.functional.smooth_l1_loss(rgb, x.gt, beta=0.1, reduction="none").mean(-1)
    else:
        per_ray = diff.abs().mean(-1)
    loss_rgb = (per_ray * x.ray_valid).sum() * x.inv_n_rays
    mse = ((diff**2).mean(-1) * x.ray_valid).sum() * x.inv_n_rays
    # eikonal on the ray samples and on random points, so that culled space stays a distance field too
    _, _, rand_grad = field.sdf_with_gradient(x.rand_pts, create_graph=True)
    eik_s = field.eikonal_sum(grad, x.sample_valid)
    eik_r = field.eikonal_sum(rand_grad)
    loss_eik = (eik_s + eik_r) / (x.sample_valid.sum() + x.rand_pts.shape[0])
    loss = loss_rgb + losses.eikonal * loss_eik
    if distortion is not None:
        loss = loss + losses.distortion * distortion
    loss_mask = torch.zeros((), device=x.pts.device)
    if x.mask is not None and losses.mask > 0:
        op = opacity.clamp(1e-3, 1 - 1e-3)
        bce = -(x.mask * torch.log(op) + (1 - x.mask) * torch.log(1 - op))
        loss_mask = (bce * x.ray_valid).sum() * x.inv_n_rays
        loss = loss + losses.mask * loss_mask
    elif x.mask is None and losses.opacity_entropy > 0:
        # without masks nothing else asks the foreground to be opaque or clear: its binary entropy per ray
        op = opacity.clamp(1e-4, 1 - 1e-4)
        entropy = -(op * torch.log(op) + (1 - op) * torch.log(1 - op))
        loss = loss + losses.opacity_entropy * (entropy * x.ray_valid).sum() * x.inv_n_rays
    return {"loss": loss, "mse": mse, "eikonal": loss_eik, "mask": loss_mask}


def capture_graph(body: Callable[[], T], optimizer: torch.optim.Optimizer, warmup: int = 1
                  ) -> tuple[torch.cuda.CUDAGraph, T]:
    """Run ``body`` (a training step: forward, backward, optimiser step) ``warmup`` times on a side stream, as
    capture requires, then capture one call of it as a CUDA graph. Gradients are reset to None before each run, so
    the captured backward allocates them in the graph's pool.

    Returns:
        The graph (``replay()`` runs the step again on the same buffers) and what the captured call returned.
    """
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(warmup):
            optimizer.zero_grad(set_to_none=True)
            body()
    torch.cuda.current_stream().wait_stream(side)
    optimizer.zero_grad(set_to_none=True)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = body()
    return graph, out


class GraphStep:
    """Replays forward, double backward and optimiser step of :func:`step_losses` from a CUDA graph.

    Capacities are fixed (``max_rays`` rays, ``sample_capacity`` samples, ``eik_points`` eikonal points); inputs
    are copied into static buffers before each replay. The graph is captured again when something it baked in
    changes (the number of active hash levels). The optimiser must be capturable (tensor learning rates).
    """

    def __init__(self, field: NeuSField, optimizer: torch.optim.Optimizer, params: list[torch.Tensor], *,
                 max_rays: int, sample_capacity: int, eik_points: int, has_masks: bool,
                 losses: LossWeights) -> None:
        dev = next(field.parameters()).device
        self.field, self.optimizer, self.params = field, optimizer, params
        self.R, self.S, self.E = int(max_rays), int(sample_capacity), int(eik_points)
        self.has_masks = has_masks
        self.has_bg_field = getattr(field, "bg_field", None) is not None
        self.losses = losses
        self.device = dev
        self.buf = self.new_inputs()
        self.bg_rows: int | None = None  # see step_losses; part of the key the graph is captured for
        self.graph: torch.cuda.CUDAGraph | None = None
        self.key: object = None
        self.out: dict[str, torch.Tensor] = {}
        self.captures = 0

    def new_inputs(self) -> StepInputs:
        """Empty step inputs of the graph's shapes (what :meth:`load` leaves in unused rows)."""
        S, R1, dev = self.S, self.R + 1, self.device
        z = torch.zeros
        x = StepInputs(
            pts=z(S, 3, device=dev), dirs=z(S, 3, device=dev), deltas=z(S, device=dev),
            ray_indices=torch.full((S,), self.R, dtype=torch.long, device=dev), sample_valid=z(S, device=dev),
            ray_dirs=z(R1, 3, device=dev), gt=z(R1, 3, device=dev),
            bg=z(R1, 3, device=dev) if self.has_masks else None, mask=z(R1, device=dev) if self.has_masks else None,
            ray_valid=z(R1, device=dev), inv_n_rays=z((), device=dev), rand_pts=z(self.E, 3, device=dev),
            cos_anneal=z((), device=dev), ray_origins=z(R1, 3, device=dev) if self.has_bg_field else None,
            bg_jitter=z(R1, device=dev) if self.has_bg_field else None)
        x.dirs[:, 2] = 1.0
        x.ray_dirs[:, 2] = 1.0
        return x

    def load_inputs(self, x: StepInputs, cos_anneal: float) -> None:
        """Copy step inputs of the graph's shapes (made by :meth:`new_inputs`, filled by
        :func:`backend.kernels.batch_triton.pack`) into the static buffers."""
        for f in fields(StepInputs):
            dst = getattr(self.buf, f.name)
            if dst is not None and f.name != "cos_anneal":
                dst.copy_(getattr(x, f.name))
        self.buf.cos_anneal.fill_(cos_anneal)

    def load(self, pts: torch.Tensor, dirs: torch.Tensor, deltas: torch.Tensor, ray_indices: torch.Tensor,
             ray_dirs: torch.Tensor, gt: torch.Tensor, bg: torch.Tensor | None, mask: torch.Tensor | None,
             rand_pts: torch.Tensor, cos_anneal: float, ray_origins: torch.Tensor | None = None,
             bg_jitter: torch.Tensor | None = None) -> None:
        """Copy one step's real data (S' <= S samples of R' <= R rays) into the static buffers, padding the rest."""
        b = self.buf
        s, r = pts.shape[0], ray_dirs.shape[0]
        b.pts[:s].copy_(pts)
        b.pts[s:].zero_()
        b.dirs[:s].copy_(dirs)
        b.deltas[:s].copy_(deltas)
        b.deltas[s:].zero_()
        b.ray_indices[:s].copy_(ray_indices)
        b.ray_indices[s:].fill_(self.R)
        b.sample_valid[:s].fill_(1.0)
        b.sample_valid[s:].zero_()
        b.ray_dirs[:r].copy_(ray_dirs)
        b.gt[:r].copy_(gt)
        if b.bg is not None and bg is not None:
            b.bg[:r].copy_(bg)
        if b.mask is not None and mask is not None:
            b.mask[:r].copy_(mask)
        b.ray_valid[:r].fill_(1.0)
        b.ray_valid[r:].zero_()
        b.inv_n_rays.fill_(1.0 / max(r, 1))
        b.rand_pts.copy_(rand_pts)
        b.cos_anneal.fill_(cos_anneal)
        if b.ray_origins is not None and ray_origins is not None:
            b.ray_origins[:r].copy_(ray_origins)
            b.bg_jitter[:r].copy_(bg_jitter)

    def _body(self) -> dict[str, torch.Tensor]:
        out = step_losses(self.field, self.buf, self.losses, bg_rows=self.bg_rows)
        out["loss"].backward(inputs=self.params)
        self.optimizer.step()
        return {k: v.detach() for k, v in out.items()}

    def background_rows(self, n_rays: int) -> int | None:
        """The background rows (see :func:`step_losses`) for a batch of ``n_rays`` drawn rays: the next power of two
        (at least 1024; all rows past the capacity), and never fewer than an earlier batch needed (a ray count that
        wanders across a power of two would otherwise capture the graph again at every step), so that the graph is
        captured again only a few times as the rays per step grow. None without a background field."""
        if not self.has_bg_field:
            return None
        rows = min(self.R + 1, max(1024, 1 << max(int(n_rays) - 1, 1).bit_length()))
        self._bg_rows_seen = max(rows, getattr(self, "_bg_rows_seen", 0))
        return self._bg_rows_seen

    def run(self, key: object, bg_rows: int | None = None) -> dict[str, torch.Tensor]:
        """One step on the loaded buffers; ``key`` names what the graph bakes in besides ``bg_rows`` (the background
        rows, see :meth:`background_rows`): the graph is captured again when either changes."""
        key = (key, bg_rows)
        self.bg_rows = bg_rows
        if self.graph is None or key != self.key:  # the warm-up step that capture requires is a real step
            self.graph, self.out = capture_graph(self._body, self.optimizer)
            self.key = key
            self.captures += 1
            log.info("captured the training step as a CUDA graph (%d samples, %d rays)", self.S, self.R)
        self.graph.replay()
        return self.out
