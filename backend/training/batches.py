"""Training batches: the capture's pixels on the device, random rays, and their samples marched through the
occupancy grid, as typed batches the step consumes.

- :class:`RaySampler` holds every training image as flat uint8 tensors on the device and draws random rays.
- :class:`BatchBuilder` turns a draw into one step's samples: :meth:`BatchBuilder.marched` in PyTorch (any device,
  a :class:`MarchedBatch`), or :meth:`BatchBuilder.fused` in a few Triton kernels written straight into the CUDA
  graph's input layout (a :class:`FusedBatch`; with the graph and the Triton march).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .. import debug
from ..config import TrainConfig
from ..render import rays_from_pixels


@dataclass
class RayBatch:
    """``n`` random training rays: origins, dirs (n, 3) normalized frame; rgb (n, 3) in [0, 1]; mask (n,) in
    [0, 1] or None; u (n, 6) the draw's uniform numbers (row and column jitter, march offset, background colour)."""

    origins: torch.Tensor
    dirs: torch.Tensor
    rgb: torch.Tensor
    mask: torch.Tensor | None
    u: torch.Tensor


@dataclass
class MarchedBatch:
    """One step's samples built in PyTorch. S samples sorted by ray, R rays, E eikonal points.

    Attributes:
        pts, dirs: (S, 3); deltas: (S,); ray_indices: (S,) int64 in [0, R).
        ray_dirs, gt: (R, 3) (gt composited on ``bg`` with masks); bg: (R, 3) or None; mask: (R,) or None.
        rand_pts: (E, 3) uniform in the unit cube, for the eikonal term.
        n_samples: S (after culling); n_marched: samples the march produced; n_rays: R.
        ray_origins: (R, 3) and bg_jitter: (R,) for the background field, else None.
    """

    pts: torch.Tensor
    dirs: torch.Tensor
    deltas: torch.Tensor
    ray_indices: torch.Tensor
    ray_dirs: torch.Tensor
    gt: torch.Tensor
    bg: torch.Tensor | None
    mask: torch.Tensor | None
    rand_pts: torch.Tensor
    n_samples: int
    n_marched: int
    n_rays: int
    ray_origins: torch.Tensor | None
    bg_jitter: torch.Tensor | None


@dataclass
class FusedBatch:
    """One step's samples built by the Triton batch kernels, in the CUDA graph's input layout.

    Attributes:
        inputs: the graph's :class:`~backend.step.StepInputs` (a staging copy).
        stats: (3,) int64: samples written, rays that fit, samples kept before the capacity cut (pinned host memory
            on CUDA: read after ``done``).
        done: a CUDA event recorded after ``stats`` was copied, or None off CUDA.
        n_marched: samples the march produced; drawn: rays drawn.
    """

    inputs: Any
    stats: torch.Tensor
    done: Any
    n_marched: int
    drawn: int


class RaySampler:
    """The training images on the device and random rays through their pixels.

    Attributes:
        pixels: (P, 3) uint8, every image's pixels in one flat list; masks: (P,) uint8 or None.
        pix_offsets: (N + 1,) int64 first pixel of each image; widths: (N,) image widths.
        K_inv: (N, 3, 3) float32 inverse intrinsics; c2w: (N, 4, 4) float32 normalized camera-to-world.
        n_pixels: P.
    """

    def __init__(self, scene: Any, device: torch.device) -> None:
        self.device = device
        sizes = scene.sizes  # (N, 2) w, h
        counts = sizes[:, 0] * sizes[:, 1]
        self.pix_offsets = torch.tensor(np.concatenate([[0], np.cumsum(counts)]), device=device)
        self.widths = torch.tensor(sizes[:, 0], device=device)
        self.pixels = torch.cat([torch.from_numpy(np.require(im, requirements="CW").reshape(-1, 3))
                                 for im in scene.images]).to(device)
        self.masks = (torch.cat([torch.from_numpy(np.require(m, requirements="CW").reshape(-1))
                                 for m in scene.masks]).to(device) if scene.masks is not None else None)
        self.K_inv = torch.from_numpy(np.linalg.inv(scene.K)).float().to(device)
        self.c2w = torch.from_numpy(scene.normalized_c2w()).float().to(device)
        self.n_pixels = int(counts.sum())

    def draw(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Random draws for ``n`` rays: pixels (n,) int64 in the flat pixel list and (n, 6) uniform numbers."""
        return (torch.randint(0, self.n_pixels, (n,), device=self.device), torch.rand(n, 6, device=self.device))

    def rays(self, n: int, draws: tuple[torch.Tensor, torch.Tensor] | None = None) -> RayBatch:
        """``n`` random rays (or the rays of ``draws``, see :meth:`draw`)."""
        gid, u = draws if draws is not None else self.draw(n)
        img = torch.searchsorted(self.pix_offsets[1:], gid, right=True)
        local = gid - self.pix_offsets[img]
        w = self.widths[img]
        rows = (local // w).float() + u[:, 0] - 0.5
        cols = (local % w).float() + u[:, 1] - 0.5
        o, d = rays_from_pixels(self.K_inv[img], self.c2w[img], cols, rows)
        rgb = self.pixels[gid].float() / 255.0
        mask = self.masks[gid].float() / 255.0 if self.masks is not None else None
        return RayBatch(o, d, rgb, mask, u)


class BatchBuilder:
    """Builds each step's batch from the sampler's rays, the occupancy grid and the field (for culling).

    Args:
        graph_step: the CUDA graph (:class:`~backend.step.GraphStep`) whose capacity bounds the samples, or None.
    """

    def __init__(self, sampler: RaySampler, field: Any, grid: Any, cfg: TrainConfig, graph_step: Any) -> None:
        self.sampler = sampler
        self.field = field
        self.grid = grid
        self.cfg = cfg
        self.graph_step = graph_step
        self.device = sampler.device
        self._staging = None  # the fused batches' StepInputs (see fused)

    def marched(self, n_rays: int, draws: tuple[torch.Tensor, torch.Tensor] | None = None) -> MarchedBatch:
        """Rays of one step (random, or those of ``draws``), their samples marched through the occupancy grid, and
        random eikonal points.

        Synchronises the current stream with the host (the number of samples is data-dependent). With a CUDA graph,
        rays whose samples would not fit its capacity are left out (the leading rays whose samples all fit stay).
        """
        cfg = self.cfg
        rb = self.sampler.rays(int(n_rays), draws)
        origins, dirs, gt, mask, u = rb.origins, rb.dirs, rb.rgb, rb.mask, rb.u
        bg = None
        if mask is not None:
            bg = u[:, 3:6]  # a random background forces the opacity to follow the mask
            gt = gt * mask[:, None] + bg * (1 - mask[:, None])
        samples = self.grid.sample(origins, dirs, cfg.step_size, offset=u[:, 2])
        n_marched = n_samples = len(samples)
        ridx, t = samples.ray_indices, samples.t_mid
        n = origins.shape[0]
        if cfg.cull_transmittance > 0 and n_samples:
            # Samples behind opaque surfaces get no weight: leave them out, so the sample budget buys more rays.
            # With a CUDA graph this runs on the side stream while the graph updates the parameters: the SDF then
            # mixes this step's and the last step's values, an estimate as good as either for culling.
            from ..render import cull_hidden

            with torch.no_grad():
                keep = cull_hidden(self.field.sdf, origins, dirs, ridx, t, self.field.inv_s(), cfg.cull_transmittance,
                                   cfg.cull_stride)
            ridx, t = ridx[keep], t[keep]
            n_samples = len(t)
        gs = self.graph_step
        if gs is not None and n_samples > gs.S:  # over capacity: keep the leading rays whose samples all fit
            counts = torch.zeros(n, dtype=torch.long, device=self.device)
            counts.index_add_(0, ridx, torch.ones_like(ridx))
            keep_rays = int(torch.searchsorted(torch.cumsum(counts, 0), gs.S, right=True))
            keep = ridx < keep_rays
            ridx, t, n = ridx[keep], t[keep], keep_rays
            origins, dirs, gt = origins[:n], dirs[:n], gt[:n]
            bg = None if bg is None else bg[:n]
            mask = None if mask is None else mask[:n]
        d = dirs[ridx]
        n_eik = gs.E if gs is not None else max(256, n_samples // 8)
        # without masks, the draws' background columns place the background field's samples instead
        bg_jitter = u[:n, 3] if self.field.bg_field is not None else None
        return MarchedBatch(pts=origins[ridx] + d * t[:, None], dirs=d, deltas=torch.full_like(t, cfg.step_size),
                            ray_indices=ridx, ray_dirs=dirs, gt=gt, bg=bg, mask=mask,
                            rand_pts=torch.rand(n_eik, 3, device=self.device) * 2 - 1, n_samples=n_samples,
                            n_marched=n_marched, n_rays=n, ray_origins=origins if bg_jitter is not None else None,
                            bg_jitter=bg_jitter)

    def uses_fused(self) -> bool:
        """Whether batches come from :meth:`fused`: with the CUDA graph and the Triton march, unless
        ``NEUSBLEND_BATCH=torch`` (or ``NEUSBLEND_MARCH=torch``) asks for the PyTorch chain of :meth:`marched`, or
        the culling pre-pass is strided (a CPU option)."""
        return (self.graph_step is not None and self.grid.triton_march and self.cfg.cull_stride <= 1
                and debug.text("NEUSBLEND_BATCH") != "torch" and debug.text("NEUSBLEND_MARCH") != "torch")

    def fused(self, n_rays: int) -> FusedBatch:
        """:meth:`marched` in a few Triton kernels and one host synchronisation (:mod:`backend.kernels.batch_triton`),
        written into a staging copy of the CUDA graph's inputs (padded as the graph needs)."""
        if self._staging is None:
            self._staging = self.graph_step.new_inputs()
        return self.fused_from(self.sampler.draw(int(n_rays)), self._staging)

    def fused_from(self, draws: tuple[torch.Tensor, torch.Tensor], out: Any) -> FusedBatch:
        """:meth:`fused` for given ``draws`` (see :meth:`RaySampler.draw`) into ``out``, step inputs of the graph's
        shapes. Runs on the CPU too, in Triton's interpreter (for tests)."""
        from ..kernels import batch_triton, march_triton

        cfg, s = self.cfg, self.sampler
        gid, u = draws
        lo, hi = self.grid.occupied_bounds()
        rays = batch_triton.draw_rays(gid, u, s.pix_offsets, s.widths, s.K_inv, s.c2w, s.pixels, s.masks, lo, hi,
                                      cfg.step_size)
        m = march_triton.Marcher(rays.origins, rays.dirs, rays.start, rays.far, rays.n_steps, rays.offset,
                                 self.grid.binary, cfg.step_size, self.grid.coarse_occupancy())
        lane_counts = m.counts()
        ends = torch.cumsum(lane_counts, 0, dtype=torch.long)
        total = int(ends[-1])  # the batch's one host synchronisation: how many samples the march writes
        lane_first = ends - lane_counts
        ridx, _, pts = m.write(lane_first, total, want_pts=True)
        counts, first = m.per_ray(lane_counts, lane_first)
        kept = counts
        if cfg.cull_transmittance > 0 and total:
            with torch.no_grad():
                sdf = self.field.sdf(pts)
                kept = batch_triton.visible_counts(sdf, first, counts, self.field.inv_s(), cfg.cull_transmittance)
        stats = batch_triton.pack(out, rays, ridx, pts, first, kept, cfg.step_size)
        if out.ray_origins is not None:  # the background field's rows (rays past those that fit are not valid)
            n = rays.origins.shape[0]
            out.ray_origins[:n].copy_(rays.origins)
            out.bg_jitter[:n].copy_(u[:, 3])
        out.rand_pts.uniform_(-1.0, 1.0)
        if self.device.type != "cuda":
            return FusedBatch(out, stats, None, total, gid.shape[0])
        host = torch.empty(3, dtype=torch.long, pin_memory=True)
        host.copy_(stats, non_blocking=True)
        done = torch.cuda.Event()
        done.record()
        return FusedBatch(out, host, done, total, gid.shape[0])

    def next(self, n_rays: int) -> MarchedBatch | FusedBatch:
        """The next step's batch, fused where it can be."""
        return self.fused(n_rays) if self.uses_fused() else self.marched(n_rays)
