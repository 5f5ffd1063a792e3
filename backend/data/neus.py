"""NeuS / IDR layout: ``image/`` (or ``images/``), optional ``mask/`` (or ``masks/``), ``cameras_sphere.npz``.

``world_mat_i`` is ``K [R | t]`` (3x4 or 4x4) for the i-th image in sorted order, in the input's coordinates;
``scale_mat_i`` (the same for every i) maps the unit sphere to the object's region: it becomes ``to_world``.
The dataset's principal point uses the OpenCV pixel convention (NeuS casts rays through integer pixel
coordinates), so K is used as it is.
"""

from __future__ import annotations

import logging
import os
import re
import zipfile
from pathlib import Path

import numpy as np

from ..errors import BackendError
from ..scene import Scene
from .cameras import decompose_projection
from .images import find_subfolder, list_images, load_images, match_masks

log = logging.getLogger(__name__)

IMAGE_DIRS = ("image", "images")
MASK_DIRS = ("mask", "masks")
CAMERA_FILES = ("cameras_sphere.npz", "cameras.npz")


def find_camera_file(root: Path) -> Path | None:
    return next((root / f for f in CAMERA_FILES if (root / f).is_file()), None)


def read_neus_cameras(npz_path: str | os.PathLike[str], n_images: int | None = None
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Cameras of a NeuS/IDR ``cameras*.npz``.

    Args:
        npz_path: the file.
        n_images: when given, the number of images the file must describe.

    Returns:
        K: (N, 3, 3) OpenCV intrinsics.
        c2w: (N, 4, 4) camera-to-world, OpenCV axes, input coordinates.
        scale_mat: (4, 4) or None when the file has none.
    """
    npz_path = Path(npz_path)
    try:
        with np.load(npz_path, allow_pickle=False) as z:
            arrays = {k: np.asarray(z[k], dtype=np.float64) for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise BackendError(f"Cannot read the camera file: {exc}",
                           "The file is corrupt or not a NeuS/IDR cameras npz; re-export it.", npz_path) from exc
    idx = sorted(int(m.group(1)) for k in arrays if (m := re.fullmatch(r"world_mat_(\d+)", k)))
    if not idx:
        raise BackendError("The camera file has no world_mat_0, world_mat_1, ... entries",
                           "A NeuS/IDR camera file holds world_mat_i = K[R|t] for image i.", npz_path)
    n = len(idx)
    if idx != list(range(n)):
        missing = sorted(set(range(max(idx) + 1)) - set(idx))
        raise BackendError(f"The camera file lacks world_mat_{missing[0]}",
                           "world_mat_i must exist for i = 0 .. N-1, one per image in sorted order.", npz_path)
    if n_images is not None and n != n_images:
        raise BackendError(f"The camera file describes {n} cameras but the image folder holds {n_images} images",
                           "Each image (sorted by name) needs world_mat_i; remove extra images or re-export "
                           "the cameras.", npz_path)
    Ks, c2ws = [], []
    for i in range(n):
        P = arrays[f"world_mat_{i}"]
        if P.shape not in ((3, 4), (4, 4)) or not np.all(np.isfinite(P)):
            raise BackendError(f"world_mat_{i} is not a finite 3x4 or 4x4 matrix (shape {P.shape})",
                               "Re-export the cameras.", npz_path)
        try:
            K, c2w = decompose_projection(P)
        except ValueError as exc:
            raise BackendError(f"world_mat_{i} is degenerate: {exc}", "Re-export the cameras.", npz_path) from exc
        Ks.append(K)
        c2ws.append(c2w)
    scale_mat = None
    if "scale_mat_0" in arrays:
        scale_mat = arrays["scale_mat_0"].reshape(4, 4)
        others = [arrays[f"scale_mat_{i}"] for i in range(n) if f"scale_mat_{i}" in arrays]
        if any(not np.allclose(s, scale_mat) for s in others):
            log.warning("%s: scale_mat_i differ between images; using scale_mat_0", npz_path.name)
    return np.stack(Ks), np.stack(c2ws), scale_mat


def load_neus(path: str | os.PathLike[str], *, max_image_size: int = 0) -> Scene:
    """Load a NeuS/IDR folder; ``to_world`` is ``scale_mat_0`` when the file has it, else identity."""
    root = Path(path)
    if not root.is_dir():
        raise BackendError("The folder does not exist", "Check the path you chose.", root)
    img_dir = find_subfolder(root, IMAGE_DIRS)
    if img_dir is None:
        raise BackendError("No image/ or images/ folder beside the camera file",
                           "The NeuS layout is image/ (photos), mask/ (optional) and cameras_sphere.npz.", root)
    image_paths = list_images(img_dir)
    cam_file = find_camera_file(root)
    if cam_file is None:
        raise BackendError("No cameras_sphere.npz or cameras.npz", "Add the NeuS/IDR camera file.", root)
    K, c2w, scale_mat = read_neus_cameras(cam_file, len(image_paths))
    mask_dir = find_subfolder(root, MASK_DIRS)
    mask_paths = match_masks(image_paths, mask_dir) if mask_dir is not None else None
    loaded = load_images(image_paths, mask_paths, max_image_size=max_image_size)
    return Scene(
        names=[p.name for p in loaded.pick(image_paths)],
        images=loaded.images,
        K=loaded.scale_K(K[loaded.kept]),
        c2w=c2w[loaded.kept],
        masks=loaded.masks,
        to_world=scale_mat if scale_mat is not None else np.eye(4),
        source="neus",
        root=root,
        image_paths=loaded.pick(image_paths),
        skipped=loaded.skipped,
    )
