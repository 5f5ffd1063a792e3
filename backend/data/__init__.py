"""Data loading: one call turns a capture folder (or a transforms.json) into a :class:`~backend.scene.Scene`.

Supported layouts (detected in this order):

- ``nerf``: a ``transforms.json`` (or ``transforms_train.json``) file or a folder holding one;
- ``neus``: ``cameras_sphere.npz`` / ``cameras.npz`` with ``image/`` (or ``images/``) and optional ``mask/``;
- ``colmap``: a COLMAP sparse model (``sparse/0``, ``sparse`` or the folder itself) with ``images/`` and
  optional ``masks/``;
- ``middlebury``: a ``*_par.txt`` beside its images.

numpy and Pillow only; pycolmap is imported only for COLMAP models.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from ..errors import BackendError
from ..scene import Scene
from .colmap import find_colmap_model, load_colmap
from .images import IMAGE_EXTENSIONS, is_image_file
from .middlebury import find_par_file, load_middlebury
from .nerf import TRANSFORMS_FILES, find_transforms, load_nerf
from .neus import CAMERA_FILES, find_camera_file, load_neus

log = logging.getLogger(__name__)

__all__ = ["FORMATS", "detect_format", "load_scene", "load_scene_with_info", "load_colmap", "load_middlebury",
           "load_nerf", "load_neus"]

#: format name -> loader(path, *, max_image_size) -> Scene
FORMATS = {
    "nerf": load_nerf,
    "neus": load_neus,
    "colmap": load_colmap,
    "middlebury": load_middlebury,
}

_LOOKED_FOR = (f"{' or '.join(TRANSFORMS_FILES)} (NeRF / instant-ngp / nerfstudio), "
               f"{' or '.join(CAMERA_FILES)} with image/ (NeuS / IDR), "
               "sparse/0, sparse/ or cameras.bin / cameras.txt with images/ (COLMAP), "
               "*_par.txt (Middlebury)")


def detect_format(path: str | os.PathLike[str]) -> str:
    """The format of a capture: one of :data:`FORMATS`.

    Raises:
        BackendError: the path does not exist, or holds none of the known layouts (the message lists them).
    """
    p = Path(path)
    if not p.exists():
        raise BackendError("The path does not exist", "Check the path you chose.", p)
    if p.is_file():
        if p.suffix.lower() == ".json":
            return "nerf"
        if p.name.endswith("_par.txt"):
            return "middlebury"
        if p.name in CAMERA_FILES:
            return "neus"
        raise BackendError(f"Unknown capture file {p.name}",
                           f"Choose a capture folder or a transforms.json; looked for {_LOOKED_FOR}.", p)
    if find_transforms(p) is not None:
        return "nerf"
    if find_camera_file(p) is not None:
        return "neus"
    if find_colmap_model(p) is not None:
        return "colmap"
    if find_par_file(p) is not None:
        return "middlebury"
    photos = p if any(is_image_file(f) for f in p.iterdir()) else next(
        (p / d for d in ("images", "image") if (p / d).is_dir() and any(is_image_file(f) for f in (p / d).iterdir())),
        None)
    if photos is not None:
        raise BackendError("The folder holds photos but no camera poses", poses_hint(photos) +
                           f" (looked for {_LOOKED_FOR})", p)
    raise BackendError("The folder holds no capture",
                       f"Looked for {_LOOKED_FOR}; images must be {', '.join(IMAGE_EXTENSIONS)}.", p)


def poses_hint(photos: str | os.PathLike[str]) -> str:
    """What to run for a folder of photos without poses: the ``poses`` command, then ``train`` on its job."""
    import shlex

    photos = Path(photos).resolve()
    job = photos.parent / f"{photos.name}-poses"
    return (f"Estimate the camera poses first: `python -m backend poses --images {shlex.quote(str(photos))} "
            f"--out {shlex.quote(str(job))}`, then train on that job: `python -m backend train --data "
            f"{shlex.quote(str(job))} --out JOB`")


def load_scene_with_info(path: str | os.PathLike[str], *, max_image_size: int = 0, normalize: bool = True,
                         prefer_given: bool = True, fmt: str | None = None) -> tuple[Scene, dict[str, Any]]:
    """Like :func:`load_scene`, and also the normalization's description (empty without ``normalize``)."""
    from ..normalize import normalize_scene

    fmt = fmt or detect_format(path)
    if fmt not in FORMATS:
        raise BackendError(f"Unknown format {fmt!r}", f"Use one of {', '.join(FORMATS)}.", path)
    p = Path(path)
    if fmt == "neus" and p.is_file():
        p = p.parent
    scene = FORMATS[fmt](p, max_image_size=max_image_size)
    log.info("loaded %d images (%s) from %s", len(scene), fmt, p)
    if not normalize:
        return scene, {}
    scene, info = normalize_scene(scene, prefer_given=prefer_given)
    log.info("normalization: %s, centre %s, radius %.4g", info["method"],
             ", ".join(f"{x:.4g}" for x in info["center"]), info["radius"])
    return scene, info


def load_scene(path: str | os.PathLike[str], *, max_image_size: int = 0, normalize: bool = True,
               prefer_given: bool = True) -> Scene:
    """Load a posed capture of any supported format (see the module docstring).

    Args:
        path: a capture folder, or a transforms.json / *_par.txt / cameras_sphere.npz file.
        max_image_size: longer image side after loading (0: full size); intrinsics follow.
        normalize: set ``to_world`` and ``roi`` (:func:`backend.normalize.normalize_scene`); otherwise
            ``to_world`` is the dataset's own (NeuS ``scale_mat``) or the identity, and ``roi`` None.
        prefer_given: keep a dataset's own normalization (NeuS ``scale_mat``) instead of the automatic one.

    Raises:
        BackendError: anything wrong with the input, naming the file and what to do.
    """
    return load_scene_with_info(path, max_image_size=max_image_size, normalize=normalize,
                                prefer_given=prefer_given)[0]


def attach_masks(scene: Scene, mask_dir: str | os.PathLike[str]) -> Scene:
    """The scene with masks read from ``mask_dir`` (one per image, matched by name; see ``match_masks``).

    Each mask must have the size of its photo as stored on disk; it is resized like the photo when the scene was
    loaded downscaled.

    Raises:
        BackendError: the folder is missing, an image has no mask, or a mask's size differs from its photo's.
    """
    from dataclasses import replace

    from PIL import Image

    from .images import match_masks, read_mask, resize_mask

    mdir = Path(mask_dir).expanduser()
    if not mdir.is_dir():
        raise BackendError("The mask folder does not exist", "Choose the folder that holds one mask per photo.", mdir)
    if not scene.image_paths:
        raise BackendError("This capture does not say which files its images came from, so masks cannot be "
                           "matched to them", "Put the masks into the capture's own mask folder instead.", mdir)
    paths = match_masks(scene.image_paths, mdir, scene.names)
    masks = []
    for img_path, mpath, img in zip(scene.image_paths, paths, scene.images):
        mask = read_mask(mpath)
        with Image.open(img_path) as im:
            orig = im.size
        if (mask.shape[1], mask.shape[0]) != orig:
            raise BackendError(f"The mask is {mask.shape[1]}x{mask.shape[0]} but its photo {img_path.name} is "
                               f"{orig[0]}x{orig[1]}", "Masks must have the size of their photos.", mpath)
        masks.append(resize_mask(mask, (img.shape[1], img.shape[0])))
    return replace(scene, masks=masks)
