"""COLMAP sparse models (binary or text), read with pycolmap 4 (imported only here, lazily).

Layouts: ``<dir>/sparse/0`` or ``<dir>/sparse`` (or ``<dir>`` itself being the model) with the photos in
``<dir>/images``; an optional ``<dir>/masks`` (or ``mask``) folder holds one mask per image, with the same
relative name or the name plus ``.png`` (COLMAP's own mask naming).

- Only pinhole cameras: PINHOLE, SIMPLE_PINHOLE, or SIMPLE_RADIAL / RADIAL / OPENCV / FULL_OPENCV whose
  distortion parameters are all zero. Anything else raises a :class:`BackendError` that says how to undistort.
- COLMAP puts the centre of the top-left pixel at (0.5, 0.5); we subtract 0.5 from the principal point.
- ``image.cam_from_world()`` (a method in pycolmap 4) is world-to-camera with OpenCV axes.
- Only registered images (with a pose) are loaded, in natural name order; points3D fill ``points`` and
  ``point_colors``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BackendError
from ..scene import Scene
from .cameras import c2w_from_w2c, intrinsics
from .images import find_subfolder, load_images, match_masks, natural_key

log = logging.getLogger(__name__)

PINHOLE_MODELS = ("SIMPLE_PINHOLE", "PINHOLE")
ZERO_DISTORTION_OK = ("SIMPLE_RADIAL", "RADIAL", "OPENCV", "FULL_OPENCV")
UNDISTORT_HINT = ("Undistort the photos first: `python -m backend poses --images PHOTOS --out JOB` writes undistorted "
                  "images and a PINHOLE model (then train with --data JOB), or run `colmap image_undistorter` and "
                  "choose its output folder.")


def is_model_dir(d: Path) -> bool:
    return d.is_dir() and any((d / f"cameras.{ext}").is_file() for ext in ("bin", "txt"))


def find_colmap_model(path: Path) -> tuple[Path, Path] | None:
    """(model folder, images folder) for ``path``, or None when ``path`` holds no COLMAP model.

    Looks for ``path/sparse/0``, other numbered models under ``path/sparse`` (the one with the biggest images file),
    ``path/sparse`` and ``path`` itself; the images folder is ``images`` in ``path`` or up to two folders above the
    model.
    """
    if not path.is_dir():
        return None
    model: Path | None = None
    sparse = path / "sparse"
    if is_model_dir(sparse / "0"):
        model = sparse / "0"
    elif sparse.is_dir() and (subs := [d for d in sparse.iterdir() if is_model_dir(d) and d.name[0] != "."]):
        def size(d: Path) -> int:
            return max(((d / f).stat().st_size for f in ("images.bin", "images.txt") if (d / f).is_file()),
                       default=0)
        model = max(subs, key=size)
    elif is_model_dir(sparse):
        model = sparse
    elif is_model_dir(path):
        model = path
    if model is None:
        return None
    for cand in (path, model.parent, model.parent.parent):
        if (cand / "images").is_dir():
            return model, cand / "images"
    return model, path / "images"


def camera_intrinsics(camera: Any, where: Path) -> np.ndarray:
    """(3, 3) OpenCV K of a pycolmap camera, or BackendError for distorted models."""
    name = str(camera.model_name)
    params = np.asarray(camera.params, dtype=np.float64)
    extras = params[list(camera.extra_params_idxs())] if len(camera.extra_params_idxs()) else np.zeros(0)
    if name not in PINHOLE_MODELS and not (name in ZERO_DISTORTION_OK and np.all(np.abs(extras) < 1e-12)):
        raise BackendError(f"COLMAP camera {camera.camera_id} uses the {name} model with lens distortion "
                           f"{np.array2string(extras, precision=4)}; only pinhole cameras are supported",
                           UNDISTORT_HINT, where)
    f_idx = list(camera.focal_length_idxs())
    c_idx = list(camera.principal_point_idxs())
    fx, fy = params[f_idx[0]], params[f_idx[-1]]
    cx, cy = params[c_idx[0]], params[c_idx[1]]
    return intrinsics(fx, fy, cx - 0.5, cy - 0.5)


def read_colmap_model(model_dir: Path) -> Any:
    """A ``pycolmap.Reconstruction``; BackendError when pycolmap is missing or the model cannot be read."""
    try:
        import pycolmap
    except ImportError as exc:
        raise BackendError("Reading a COLMAP model needs the pycolmap package",
                           "pip install pycolmap (the Blender extension bundles it).", model_dir) from exc
    try:
        return pycolmap.Reconstruction(str(model_dir))
    except Exception as exc:  # noqa: BLE001 - pycolmap raises ValueError/RuntimeError for broken files
        raise BackendError(f"Cannot read the COLMAP model: {exc}",
                           "The model files are missing or corrupt; re-run the reconstruction.", model_dir) from exc


def load_colmap(path: str | os.PathLike[str], *, max_image_size: int = 0) -> Scene:
    """Load a COLMAP sparse model and its images (see the module docstring for layouts)."""
    path = Path(path)
    if not path.is_dir():
        raise BackendError("The folder does not exist", "Check the path you chose.", path)
    found = find_colmap_model(path)
    if found is None:
        raise BackendError("No COLMAP model (sparse/0, sparse or cameras.bin/txt) here",
                           "Choose the folder that holds sparse/ and images/.", path)
    model_dir, images_dir = found
    rec = read_colmap_model(model_dir)
    images = [im for im in rec.images.values() if im.has_pose]
    if not images:
        raise BackendError("The COLMAP model has no registered image", "Re-run the pose estimation.", model_dir)
    images.sort(key=lambda im: natural_key(im.name))
    if len(images) < rec.num_images():
        log.info("%d of %d images in the model have a pose; the others are skipped", len(images), rec.num_images())
    cam_file = next(model_dir / f"cameras.{e}" for e in ("bin", "txt") if (model_dir / f"cameras.{e}").is_file())
    cam_K = {cid: camera_intrinsics(cam, cam_file) for cid, cam in rec.cameras.items()
             if any(im.camera_id == cid for im in images)}
    names = [im.name for im in images]
    if not images_dir.is_dir():
        raise BackendError("The COLMAP model has no images folder beside it",
                           "Put the photos in an images/ folder next to sparse/.", images_dir)
    image_paths = [images_dir / n for n in names]
    for n, p in zip(names, image_paths, strict=True):
        if not p.is_file():
            raise BackendError(f"The COLMAP model lists image {n} but the file is missing",
                               f"Put it in {images_dir}, or choose the folder that holds the model's images.", p)
    K = np.stack([cam_K[im.camera_id] for im in images])
    c2w = []
    for im in images:
        m = np.asarray(im.cam_from_world().matrix(), dtype=np.float64)
        c2w.append(c2w_from_w2c(m[:, :3], m[:, 3]))
    root = images_dir.parent
    mask_dir = find_subfolder(root, ("masks", "mask"))
    mask_paths = match_masks(image_paths, mask_dir, names) if mask_dir is not None else None
    loaded = load_images(image_paths, mask_paths, max_image_size=max_image_size)
    images, names, image_paths = loaded.pick(images), loaded.pick(names), loaded.pick(image_paths)
    K, c2w = K[loaded.kept], [c2w[int(i)] for i in loaded.kept]
    # the size COLMAP calibrated for must be the size of the files
    for im, (w, h), p in zip(images, loaded.full_sizes, image_paths, strict=True):
        cam = rec.cameras[im.camera_id]
        if (int(cam.width), int(cam.height)) != (int(w), int(h)):
            raise BackendError(f"COLMAP camera {im.camera_id} is {cam.width}x{cam.height} but {im.name} is {w}x{h}",
                               "Use the images the model was made from (undistorted ones for an undistorted "
                               "model).", p)
    points = colors = None
    if rec.num_points3D() > 0:
        pts = list(rec.points3D.values())
        points = np.array([p.xyz for p in pts], dtype=np.float64).reshape(-1, 3)
        colors = np.array([p.color for p in pts], dtype=np.uint8).reshape(-1, 3)
    return Scene(names=names, images=loaded.images, K=loaded.scale_K(K), c2w=np.stack(c2w), masks=loaded.masks,
                 points=points, point_colors=colors, source="colmap", root=root, image_paths=image_paths,
                 skipped=loaded.skipped)
