"""The sample lattice of an extraction, shared by both marching-cubes paths (numpy only)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class GridSpec:
    """Sample lattice of an extraction.

    Attributes:
        lo: (3,) first sample position; spacing: distance between samples; shape: (3,) samples per axis.
    """

    lo: np.ndarray
    spacing: float
    shape: tuple[int, int, int]

    @classmethod
    def from_box(cls, box: np.ndarray, resolution: int) -> GridSpec:
        """``resolution`` samples along the box's longest side, same spacing on the others."""
        box = np.asarray(box, dtype=np.float64).reshape(2, 3)
        extent = box[1] - box[0]
        if np.any(extent <= 0):
            raise ValueError(f"empty extraction box {box.tolist()}")
        spacing = float(extent.max() / (resolution - 1))
        shape = tuple(int(np.ceil(e / spacing - 1e-9)) + 1 for e in extent)
        return cls(lo=box[0].copy(), spacing=spacing, shape=shape)  # type: ignore[arg-type]

    def points(self, start: tuple[int, int, int], size: tuple[int, int, int]) -> np.ndarray:
        """(sx*sy*sz, 3) float32 sample positions of a block, C order (x slowest)."""
        axes = [self.lo[a] + (start[a] + np.arange(size[a])) * self.spacing for a in range(3)]
        g = np.stack(np.meshgrid(*axes, indexing="ij"), -1)
        return g.reshape(-1, 3).astype(np.float32)
