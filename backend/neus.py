"""Rendering a batch of rays through a :class:`~backend.field.NeuSField` with occupancy culling."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .field import NeuSField
from .render import OccupancyGrid, PackedSamples, accumulate, neus_alpha, render_weights


@dataclass
class RenderOutput:
    """What :func:`render_rays` returns for R rays and S samples.

    Attributes:
        rgb: (R, 3) composited colour (background included).
        opacity: (R,) accumulated weight of the surface (0 = ray sees only background).
        depth: (R,) expected distance along the ray (where opacity > 0).
        normal: (R, 3) accumulated normal.
        gradients: (S, 3) SDF gradients at the samples (for the eikonal loss), or None.
        n_samples: S.
    """

    rgb: torch.Tensor
    opacity: torch.Tensor
    depth: torch.Tensor
    normal: torch.Tensor
    gradients: torch.Tensor | None
    n_samples: int


def render_rays(field: NeuSField, grid: OccupancyGrid, origins: torch.Tensor, dirs: torch.Tensor, *,
                step_size: float, bg_color: torch.Tensor | None = None, cos_anneal_ratio: float = 1.0,
                perturb: bool = False, training: bool = False, samples: PackedSamples | None = None,
                eval_chunk: int = 2**18) -> RenderOutput:
    """Render rays (normalized frame) by NeuS volume rendering of the SDF.

    Args:
        field: the neural field.
        grid: occupancy grid used to skip empty space.
        origins, dirs: (R, 3) rays with unit directions.
        step_size: ray-marching step.
        bg_color: (R, 3) or (3,) constant background; None uses the field's background model (or black).
        cos_anneal_ratio: see :func:`backend.render.neus_alpha`.
        perturb: jitter sample positions (training).
        training: keep the graph of the SDF gradient for the eikonal loss.
        samples: precomputed samples (otherwise marched through ``grid``).
    """
    n_rays = origins.shape[0]
    if samples is None:
        samples = grid.sample(origins, dirs, step_size, perturb=perturb)
    ridx = samples.ray_indices
    t = samples.t_mid
    d = dirs[ridx]
    pts = origins[ridx] + d * t[:, None]
    if len(samples) > 0:
        inv_s = field.inv_s()
        if training:
            sdf, feat, grad = field.sdf_with_gradient(pts, create_graph=True)
            normal = grad / grad.norm(dim=-1, keepdim=True).clamp_min(1e-6)
            rgb_s = field.color(pts, normal, d, feat)
        else:  # evaluate in chunks: memory stays bounded however many samples the rays hold
            parts: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
            for s in range(0, len(pts), eval_chunk):
                p_, d_ = pts[s:s + eval_chunk], d[s:s + eval_chunk]
                sdf_c, feat_c, grad_c = field.sdf_with_gradient(p_, create_graph=False)
                with torch.no_grad():
                    n_c = grad_c / grad_c.norm(dim=-1, keepdim=True).clamp_min(1e-6)
                    parts.append((sdf_c.detach(), grad_c.detach(), field.color(p_, n_c, d_, feat_c)))
            sdf, grad, rgb_s = (torch.cat(t) for t in zip(*parts))
            normal = grad / grad.norm(dim=-1, keepdim=True).clamp_min(1e-6)
        alpha = neus_alpha(sdf, (d * grad).sum(-1), samples.deltas, inv_s, cos_anneal_ratio)
        weights, _ = render_weights(alpha, ridx, n_rays)
        rgb = accumulate(rgb_s, weights, ridx, n_rays)
        opacity = accumulate(None, weights, ridx, n_rays)
        depth = accumulate(t[:, None], weights, ridx, n_rays)[:, 0]
        normal_acc = accumulate(normal, weights, ridx, n_rays)
    else:
        grad = None
        z = torch.zeros(n_rays, device=origins.device)
        rgb, opacity, depth, normal_acc = torch.zeros(n_rays, 3, device=origins.device), z, z, torch.zeros_like(dirs)
    if bg_color is None:
        bg = field.background(dirs, origins)
        if bg is not None:
            rgb = bg.composite(rgb, opacity)
    else:
        rgb = rgb + (1.0 - opacity[:, None]) * (bg_color.expand_as(rgb) if bg_color.dim() == 1 else bg_color)
    return RenderOutput(rgb=rgb, opacity=opacity, depth=depth, normal=normal_acc,
                        gradients=grad if training else None, n_samples=len(samples))


@torch.no_grad()
def render_image(field: NeuSField, grid: OccupancyGrid, K: torch.Tensor, c2w: torch.Tensor, width: int, height: int,
                 *, step_size: float, bg_color: torch.Tensor | None = None, chunk: int = 0
                 ) -> dict[str, torch.Tensor]:
    """Render a whole image (normalized-frame camera).

    Args:
        K: (3, 3) intrinsics; c2w: (4, 4) camera-to-world (OpenCV axes, normalized frame).

    Returns:
        ``rgb`` (H, W, 3), ``opacity`` (H, W), ``depth`` (H, W), ``normal`` (H, W, 3).
    """
    from .render import rays_from_pixels

    device = grid.values.device
    chunk = chunk or (16384 if device.type == "cuda" else 4096)
    rows, cols = torch.meshgrid(torch.arange(height, device=device, dtype=torch.float32),
                                torch.arange(width, device=device, dtype=torch.float32), indexing="ij")
    rows, cols = rows.reshape(-1), cols.reshape(-1)
    K_inv = torch.linalg.inv(K.float().to(device))
    c2w = c2w.float().to(device)
    outs: dict[str, list[torch.Tensor]] = {"rgb": [], "opacity": [], "depth": [], "normal": []}
    for s in range(0, rows.numel(), chunk):
        r, c = rows[s:s + chunk], cols[s:s + chunk]
        o, d = rays_from_pixels(K_inv.expand(len(r), 3, 3), c2w.expand(len(r), 4, 4), c, r)
        out = render_rays(field, grid, o, d, step_size=step_size, bg_color=bg_color)
        for k in outs:
            outs[k].append(getattr(out, k).detach())
    return {k: torch.cat(v).reshape(height, width, -1).squeeze(-1) for k, v in outs.items()}
