"""Training configuration: presets are data (``backend/presets/*.json``), the CLI overrides single keys."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from . import protocol
from .errors import BackendError

PRESET_DIR = Path(__file__).resolve().parent / "presets"
PRESETS = tuple(protocol.PRESETS)


@dataclass
class TrainConfig:
    """Every knob of a training run. Units: steps, pixels, seconds, normalized-frame lengths."""

    preset: str = "default"
    steps: int = 20000
    max_image_size: int = 0  # longer image side after loading (0 = as is)
    seed: int = 0
    # hash grid
    n_levels: int = 16
    n_features: int = 2
    log2_table_size: int = 19
    base_resolution: int = 16
    finest_resolution: int = 2048
    # networks
    sdf_hidden: int = 64
    sdf_layers: int = 1
    feature_dim: int = 15
    color_hidden: int = 64
    color_layers: int = 2
    activation: str = "softplus"
    sphere_init_radius: float = 0.5
    # normals (the SDF's gradient, for rendering, the colour network and the eikonal loss): "analytic" (exact, with
    # the eikonal loss's second-order terms) or "finite_difference" (central differences of six more SDF values,
    # first-order derivatives only; smoother across hash-grid cells)
    normals: str = "analytic"
    normal_step: float = 0.0  # finite-difference step (normalized frame); 0 = one cell of the finest active level
    # products of the fast path's fused SDF and colour networks on CUDA: "mixed" (the default: the forward's
    # products float32-accurate, so SDF, normals and colour are float32's; the backward's in one TF32 product, so the
    # gradients are rounded; same held-out PSNR and IoU on DTU 65 as "float32", about 9% less time to the mesh,
    # docs/BENCHMARKS.md), "float32" (three TF32 tensor-core products each way) or "tf32" (one TF32 product both
    # ways: inputs rounded to 10-bit mantissas, float32 sums; about 11% less time for about 0.2 dB of held-out
    # PSNR). The hash grid, its gradients, the losses and Adam stay float32; the reference path and the CPU compute
    # in float32 either way.
    precision: str = "mixed"
    # progressive levels: start with this many, add one every level_every steps
    start_levels: int = 4
    level_every: int = 1000
    # occupancy grid
    grid_resolution: int = 128
    grid_threshold: float = 1e-3
    grid_update_every: int = 16
    grid_warmup_steps: int = 256
    # ray marching and batching
    render_steps: int = 1024  # samples across the unit sphere's diameter
    target_samples: int = 2**18  # samples per training step (rays adapt to reach it)
    init_rays: int = 1024
    max_rays: int = 2**16
    cuda_graph: bool = True  # replay the step from a CUDA graph when a fast path runs on CUDA
    sample_headroom: float = 1.05  # CUDA graph: sample capacity / target_samples (rays past it are left out)
    # skip samples the camera cannot see (transmittance in front of them below this, from an SDF pre-pass;
    # 0 = train on every sample the occupancy grid keeps)
    cull_transmittance: float = 1e-4
    cull_stride: int = 1  # the pre-pass evaluates the SDF at every cull_stride-th marched sample of a ray
    # background (what lies outside the region of interest): "auto" (a radiance field beyond the unit sphere when
    # there are no masks, nothing with masks), "field", "env" (a direction-only colour) or "none"
    background: str = "auto"
    bg_samples: int = 16  # background samples per ray (a fixed count: the step's shapes stay static)
    bg_spacing: float = 1.0  # half of them lie within this distance of the ray's exit from the sphere
    bg_levels: int = 8  # the background's hash grid (over the contracted space, the ball of radius 2)
    bg_log2_table_size: int = 18
    bg_finest_resolution: int = 1024
    bg_hidden: int = 32
    bg_sh_degree: int = 1  # view dependence of the background's colour (spherical-harmonics bands)
    bg_front_fraction: float = 0.25  # share of the background samples in front of the region (rays through it)
    bg_distortion_weight: float = 0.01  # mip-NeRF 360's distortion loss on the background (sharper)
    # optimisation
    lr: float = 1e-2
    lr_mlp: float = 1e-3
    lr_variance: float = 1e-3
    warmup_steps: int = 500
    min_lr_factor: float = 0.05
    cos_anneal_steps: int = 5000
    # losses
    rgb_loss: str = "l1"  # "l1" or "huber"
    eikonal_weight: float = 0.1
    mask_weight: float = 0.1
    opacity_entropy_weight: float = 0.0  # without masks: the foreground opacity's binary entropy per ray
    # meshes
    mesh_every_s: float = 30.0
    snapshot_resolution: int = 192
    final_resolution: int = 512
    # evaluation
    holdout_every: int = 0  # hold out every k-th image from training (0 = train on all)
    eval_max_size: int = 800  # held-out views are rendered with their longer side at most this (0 = as loaded)

    @property
    def step_size(self) -> float:
        return 2.0 / self.render_steps

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> TrainConfig:
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise BackendError(f"unknown configuration keys in {source}: {', '.join(unknown)}",
                               hint=f"Known keys: {', '.join(sorted(known))}.", file=source)
        cfg = cls()
        for key, value in data.items():
            current = getattr(cfg, key)
            try:
                setattr(cfg, key, type(current)(value))
            except (TypeError, ValueError) as exc:
                raise BackendError(f"configuration key {key!r} in {source} must be {type(current).__name__}, "
                                   f"got {value!r}", hint="Fix the value.", file=source) from exc
        return cfg


#: Keys that shape the network and its occupancy grid: a checkpoint keeps them whatever preset continues it.
ARCHITECTURE_KEYS = ("n_levels", "n_features", "log2_table_size", "base_resolution", "finest_resolution",
                     "sdf_hidden", "sdf_layers", "feature_dim", "color_hidden", "color_layers", "activation",
                     "sphere_init_radius", "grid_resolution", "seed", "background", "bg_levels",
                     "bg_log2_table_size", "bg_finest_resolution", "bg_hidden", "bg_sh_degree")


def load_preset(name: str) -> TrainConfig:
    """The named preset (``preview``, ``default``, ``quality``) or a JSON file of keys."""
    path = Path(name)
    if not path.suffix:
        path = PRESET_DIR / f"{name}.json"
        if not path.is_file():
            raise BackendError(f"unknown preset {name!r}", hint=f"Choose one of {', '.join(PRESETS)} "
                               "or give the path of a JSON file with configuration keys.")
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise BackendError(f"cannot read preset: {exc}", hint="Give a readable JSON file.", file=path) from exc
    data.setdefault("preset", path.stem)
    return TrainConfig.from_dict(data, source=str(path))
