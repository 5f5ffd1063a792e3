"""Writers: a :class:`~backend.scene.Scene` to the NeuS/IDR, transforms.json and COLMAP layouts.

Used by the loaders' agreement tests and by tools that make captures. The NeuS/IDR and transforms.json layouts are
written by the seam's writers (:mod:`backend.capture_files`, which the synthetic captures in Blender use too); this
module hands them a Scene, and writes COLMAP models itself (with pycolmap).
Every file is written under a temporary name and renamed into place (:func:`backend.protocol.atomic_write_bytes`).
Cameras are written in input coordinates; each writer's docstring gives its conventions.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .. import capture_files
from ..scene import Scene


def _stems(scene: Scene) -> list[str]:
    """File stems for the scene's images: their own names when unique, else numbered."""
    stems = [Path(n).stem for n in scene.names]
    if len(set(stems)) != len(stems) or any(not s or "/" in s or "\\" in s for s in stems):
        stems = [f"{i:06d}" for i in range(len(scene))]
    return stems


def write_neus(scene: Scene, out_dir: str | os.PathLike[str], *, ext: str = ".png") -> Path:
    """Write the NeuS/IDR layout of ``scene`` (:func:`backend.capture_files.write_neus`: ``image/``, ``mask/``,
    ``cameras_sphere.npz`` with ``scale_mat_i`` = ``scene.to_world``). Returns the output folder."""
    return capture_files.write_neus(out_dir, scene.images, scene.K, scene.c2w, scene.to_world, scene.masks, ext=ext)


def write_transforms(scene: Scene, out_dir: str | os.PathLike[str], *, ext: str = ".png",
                     file_name: str = "transforms.json") -> Path:
    """Write ``transforms.json`` with ``images/`` and ``masks/`` of ``scene``
    (:func:`backend.capture_files.write_transforms`; the images keep their own names when unique). Returns the
    json file."""
    return capture_files.write_transforms(out_dir, scene.images, scene.K, scene.c2w, _stems(scene), scene.masks,
                                          ext=ext, file_name=file_name)


def write_colmap(scene: Scene, out_dir: str | os.PathLike[str], *, ext: str = ".png", text: bool = False) -> Path:
    """Write a COLMAP model ``sparse/0`` (binary, or text with ``text``) with ``images/`` and ``masks/``.

    One PINHOLE camera per distinct (K, size), principal point shifted by +0.5 (COLMAP's pixel convention);
    ``scene.points`` (and colours) become points3D without tracks. Needs pycolmap.

    Returns:
        the model folder.
    """
    import pycolmap

    out = Path(out_dir)
    stems = _stems(scene)
    names = [f"{s}{ext}" for s in stems]
    jobs = [(out / "images" / n, im, ext) for n, im in zip(names, scene.images, strict=True)]
    if scene.masks is not None:
        jobs += [(out / "masks" / f"{n}.png", m, ".png") for n, m in zip(names, scene.masks, strict=True)]
    capture_files.write_images(jobs)
    rec = pycolmap.Reconstruction()
    cam_ids: dict[tuple[float, ...], int] = {}
    for i, n in enumerate(names):
        K = scene.K[i]
        h, w = scene.images[i].shape[:2]
        key = (float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2]), float(w), float(h))
        if key not in cam_ids:
            cid = len(cam_ids) + 1
            cam = pycolmap.Camera.create_from_model_name(cid, "PINHOLE", float(K[0, 0]), int(w), int(h))
            cam.params = [K[0, 0], K[1, 1], K[0, 2] + 0.5, K[1, 2] + 0.5]
            rec.add_camera_with_trivial_rig(cam)
            cam_ids[key] = cid
        w2c = np.linalg.inv(scene.c2w[i])
        image = pycolmap.Image(name=n, camera_id=cam_ids[key], image_id=i + 1)
        rec.add_image_with_trivial_frame(image, pycolmap.Rigid3d(w2c[:3, :4]))
    if scene.points is not None:
        colors = scene.point_colors if scene.point_colors is not None else np.full((len(scene.points), 3), 128)
        for xyz, rgb in zip(np.asarray(scene.points, dtype=np.float64), np.asarray(colors, dtype=np.uint8),
                            strict=True):
            rec.add_point3D(xyz, pycolmap.Track(), rgb)
    model = out / "sparse" / "0"
    model.mkdir(parents=True, exist_ok=True)
    tmp = out / "sparse" / ".0.tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    (rec.write_text if text else rec.write)(str(tmp))
    for f in tmp.iterdir():  # rename file by file: a reader sees old or new files, never half a file
        os.replace(f, model / f.name)
    tmp.rmdir()
    return model
