"""Schedules over the training steps, as plain functions of the configuration and the step."""

from __future__ import annotations

import math

from ..config import TrainConfig


def lr_factor(cfg: TrainConfig, step: int) -> float:
    """The learning rates' factor: a linear warm-up over ``warmup_steps``, then a cosine down to ``min_lr_factor``."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(cfg.steps - cfg.warmup_steps, 1)
    progress = min(max(progress, 0.0), 1.0)
    return cfg.min_lr_factor + (1 - cfg.min_lr_factor) * 0.5 * (1 + math.cos(math.pi * progress))


def active_levels(cfg: TrainConfig, step: int) -> int:
    """Hash levels in use at ``step``: one more every ``level_every`` steps, all of them by half the run."""
    to_add = max(cfg.n_levels - cfg.start_levels, 1)
    every = max(1, min(cfg.level_every, cfg.steps // (2 * to_add)))
    return min(cfg.n_levels, cfg.start_levels + step // every)


def cos_anneal_ratio(cfg: TrainConfig, step: int) -> float:
    """NeuS's annealing of the SDF-to-opacity slope: 0 -> 1 over ``cos_anneal_steps`` (1 at once when 0)."""
    return 1.0 if cfg.cos_anneal_steps <= 0 else min(1.0, step / cfg.cos_anneal_steps)
