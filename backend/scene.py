"""One in-memory description of a posed capture, whatever format it came from.

Conventions (see docs/ARCHITECTURE.md):
- ``c2w``: camera-to-world 4x4 in the *input's* coordinates, OpenCV camera axes (x right, y down, z forward).
- ``K``: 3x3 pinhole intrinsics per image, OpenCV pixel convention: the centre of the top-left pixel is at
  (0, 0). COLMAP puts it at (0.5, 0.5), so the COLMAP loader subtracts 0.5 from its principal point.
- ``images``: uint8 (H, W, 3) each; ``masks`` uint8 (H, W), 0 = background, 255 = object.
- ``to_world``: similarity 4x4 mapping the normalized frame (object inside the unit sphere) to input
  coordinates: ``x_world = to_world @ [x_norm, 1]``. Training happens in the normalized frame; every output
  goes back through ``to_world``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

# OpenCV camera axes <-> OpenGL camera axes (y and z flipped); its own inverse.
CV_TO_GL = np.diag([1.0, -1.0, -1.0, 1.0])


@dataclass
class Scene:
    """A posed capture.

    Attributes:
        names: image names (file names without folder), length N.
        images: N uint8 arrays (H_i, W_i, 3).
        K: (N, 3, 3) float64 intrinsics.
        c2w: (N, 4, 4) float64 camera-to-world, OpenCV axes, input coordinates.
        masks: None or N uint8 arrays (H_i, W_i), 255 inside the object.
        points: None or (P, 3) float64 sparse points in input coordinates (e.g. from COLMAP).
        point_colors: None or (P, 3) uint8.
        to_world: (4, 4) similarity from the normalized unit-sphere frame to input coordinates.
        source: which loader made it ("neus", "nerf", "colmap", "middlebury", ...).
        root: the folder it came from.
        image_paths: the image files, length N.
        roi: None or (2, 3) axis-aligned box in the normalized frame that bounds the object (used for
            mesh extraction and the occupancy grid); defaults to the cube [-1, 1]^3.
        skipped: damaged images the loader left out (with their cameras): ``{"name", "reason", "file"}`` each.
    """

    names: list[str]
    images: list[np.ndarray]
    K: np.ndarray
    c2w: np.ndarray
    masks: list[np.ndarray] | None = None
    points: np.ndarray | None = None
    point_colors: np.ndarray | None = None
    to_world: np.ndarray = field(default_factory=lambda: np.eye(4))
    source: str = ""
    root: Path | None = None
    image_paths: list[Path] = field(default_factory=list)
    roi: np.ndarray | None = None
    skipped: list[dict[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = len(self.images)
        self.K = np.asarray(self.K, dtype=np.float64).reshape(n, 3, 3)
        self.c2w = np.asarray(self.c2w, dtype=np.float64).reshape(n, 4, 4)
        self.to_world = np.asarray(self.to_world, dtype=np.float64).reshape(4, 4)
        if len(self.names) != n:
            raise ValueError(f"{len(self.names)} names for {n} images")
        if self.masks is not None and len(self.masks) != n:
            raise ValueError(f"{len(self.masks)} masks for {n} images")

    # ------------------------------------------------------------------ sizes

    def __len__(self) -> int:
        return len(self.images)

    @property
    def sizes(self) -> np.ndarray:
        """(N, 2) int array of (width, height)."""
        return np.array([[im.shape[1], im.shape[0]] for im in self.images], dtype=np.int64)

    @property
    def has_masks(self) -> bool:
        return self.masks is not None

    # ------------------------------------------------------------------ frames

    @property
    def scale(self) -> float:
        """Length of one normalized unit in input units."""
        return float(np.cbrt(abs(np.linalg.det(self.to_world[:3, :3]))))

    def normalized_from_world(self, points: np.ndarray) -> np.ndarray:
        """(..., 3) input coordinates -> (..., 3) normalized frame."""
        inv = np.linalg.inv(self.to_world)
        return points @ inv[:3, :3].T + inv[:3, 3]

    def world_from_normalized(self, points: np.ndarray) -> np.ndarray:
        """(..., 3) normalized frame -> (..., 3) input coordinates."""
        return points @ self.to_world[:3, :3].T + self.to_world[:3, 3]

    def normalized_c2w(self) -> np.ndarray:
        """(N, 4, 4) camera-to-world in the normalized frame, with orthonormal rotations."""
        inv = np.linalg.inv(self.to_world)
        out = inv[None] @ self.c2w
        out[:, :3, :3] *= self.scale  # undo the similarity's scale on the rotation part
        return out

    def camera_centers(self) -> np.ndarray:
        """(N, 3) camera centres in input coordinates."""
        return self.c2w[:, :3, 3].copy()

    # ------------------------------------------------------------------ derived scenes

    def subset(self, indices: list[int] | np.ndarray) -> Scene:
        """The scene restricted to some images (same normalization)."""
        idx = [int(i) for i in indices]
        return replace(
            self,
            names=[self.names[i] for i in idx],
            images=[self.images[i] for i in idx],
            K=self.K[idx].copy(),
            c2w=self.c2w[idx].copy(),
            masks=None if self.masks is None else [self.masks[i] for i in idx],
            image_paths=[self.image_paths[i] for i in idx] if self.image_paths else [],
        )

    def downscaled(self, max_size: int) -> Scene:
        """Images resized so that their longer side is at most ``max_size`` (K scaled to match)."""
        from PIL import Image

        if max_size <= 0:
            return self
        images, masks, Ks = [], [] if self.masks is not None else None, []
        for i, im in enumerate(self.images):
            h, w = im.shape[:2]
            f = max_size / max(h, w)
            if f >= 1.0:
                images.append(im)
                Ks.append(self.K[i])
                if masks is not None:
                    masks.append(self.masks[i])  # type: ignore[index]
                continue
            nw, nh = max(1, round(w * f)), max(1, round(h * f))
            images.append(np.asarray(Image.fromarray(im).resize((nw, nh), Image.Resampling.LANCZOS)))
            if masks is not None:
                m = Image.fromarray(self.masks[i]).resize((nw, nh), Image.Resampling.BILINEAR)  # type: ignore[index]
                masks.append(((np.asarray(m) >> 7) * np.uint8(255)).astype(np.uint8))
            sx, sy = nw / w, nh / h
            # OpenCV pixel centres: x' = (x + 0.5) * s - 0.5
            A = np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5], [0.0, 0.0, 1.0]])
            Ks.append(A @ self.K[i])
        return replace(self, images=images, masks=masks, K=np.stack(Ks))

    def summary(self) -> dict[str, object]:
        """A small JSON-able description for the ``start`` message."""
        sizes = self.sizes
        return {
            "n_images": len(self),
            "image_size": [int(sizes[:, 0].max()), int(sizes[:, 1].max())],
            "has_masks": self.has_masks,
            "n_points": 0 if self.points is None else len(self.points),
            "source": self.source,
            "root": str(self.root) if self.root else None,
            "scale": self.scale,
            "skipped": [{"name": s["name"], "reason": s["reason"]} for s in self.skipped],
        }


def project(K: np.ndarray, c2w: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Project world points into one camera.

    Args:
        K: (3, 3) intrinsics.
        c2w: (4, 4) camera-to-world, OpenCV axes.
        points: (P, 3) world points.

    Returns:
        uv: (P, 2) pixel coordinates (pixel (col, row) has its centre at (col, row); round to index).
        depth: (P,) z in the camera frame (positive in front).
    """
    w2c = np.linalg.inv(c2w)
    pc = points @ w2c[:3, :3].T + w2c[:3, 3]
    z = pc[:, 2]
    uvw = pc @ K.T
    with np.errstate(divide="ignore", invalid="ignore"):
        uv = uvw[:, :2] / uvw[:, 2:3]
    return uv, z


def similarity(scale: float, center: np.ndarray, rotation: np.ndarray | None = None) -> np.ndarray:
    """4x4 ``to_world`` that maps the unit sphere to a sphere of ``scale`` around ``center``."""
    m = np.eye(4)
    r = np.eye(3) if rotation is None else np.asarray(rotation, dtype=np.float64)
    m[:3, :3] = r * float(scale)
    m[:3, 3] = np.asarray(center, dtype=np.float64)
    return m
