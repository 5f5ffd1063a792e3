"""Writers: a :class:`~backend.scene.Scene` to the NeuS/IDR, transforms.json and COLMAP layouts.

Used by the loaders' agreement tests and by tools that make captures (synthetic renders, pose estimation).
Every file is written under a temporary name and renamed into place (:func:`backend.protocol.atomic_write_bytes`).
Cameras are written in input coordinates; each writer's docstring gives its conventions.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from ..protocol import atomic_write_bytes, atomic_write_text
from ..scene import Scene
from ..threads import default_workers
from .cameras import opengl_to_opencv, projection_matrix

_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF", ".tiff": "TIFF", ".bmp": "BMP",
            ".webp": "WEBP"}


def encode_image(array: np.ndarray, ext: str = ".png", quality: int = 95) -> bytes:
    """(H, W, 3) or (H, W) uint8 -> file bytes in the format of ``ext``."""
    fmt = _FORMATS[ext.lower()]
    buf = io.BytesIO()
    kwargs: dict[str, object] = {"quality": quality} if fmt in ("JPEG", "WEBP") else {}
    if fmt == "WEBP":
        kwargs["lossless"] = True
    if fmt == "PNG":
        kwargs["compress_level"] = 1  # fast; these are working copies
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def _write_files(jobs: Sequence[tuple[Path, np.ndarray, str]]) -> None:
    def one(job: tuple[Path, np.ndarray, str]) -> None:
        path, arr, ext = job
        atomic_write_bytes(path, encode_image(arr, ext))

    with ThreadPoolExecutor(max_workers=default_workers()) as pool:
        list(pool.map(one, jobs))


def _stems(scene: Scene) -> list[str]:
    """File stems for the scene's images: their own names when unique, else numbered."""
    stems = [Path(n).stem for n in scene.names]
    if len(set(stems)) != len(stems) or any(not s or "/" in s or "\\" in s for s in stems):
        stems = [f"{i:06d}" for i in range(len(scene))]
    return stems


def write_neus(scene: Scene, out_dir: str | os.PathLike[str], *, ext: str = ".png") -> Path:
    """Write the NeuS/IDR layout: ``image/000000.png ...``, ``mask/000000.png ...``, ``cameras_sphere.npz``.

    ``world_mat_i`` is the 4x4 ``[[K [R | t]], [0 0 0 1]]`` of image i (OpenCV pixel centres, as NeuS uses them),
    ``scale_mat_i`` is ``scene.to_world``. Images are numbered so that their sorted order is the camera order.

    Returns:
        the output folder.
    """
    out = Path(out_dir)
    n = len(scene)
    names = [f"{i:06d}" for i in range(n)]
    jobs = [(out / "image" / f"{s}{ext}", im, ext) for s, im in zip(names, scene.images, strict=True)]
    if scene.masks is not None:
        jobs += [(out / "mask" / f"{s}.png", m, ".png") for s, m in zip(names, scene.masks, strict=True)]
    _write_files(jobs)
    arrays: dict[str, np.ndarray] = {}
    for i in range(n):
        P = np.eye(4)
        P[:3, :4] = projection_matrix(scene.K[i], scene.c2w[i])
        arrays[f"world_mat_{i}"] = P
        arrays[f"scale_mat_{i}"] = scene.to_world.copy()
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(out / "cameras_sphere.npz", buf.getvalue())
    return out


def write_transforms(scene: Scene, out_dir: str | os.PathLike[str], *, ext: str = ".png",
                     file_name: str = "transforms.json") -> Path:
    """Write ``transforms.json`` with ``images/`` (and ``masks/`` as per-frame ``mask_path``).

    ``transform_matrix`` is camera-to-world with OpenGL axes; intrinsics are per frame (``fl_x``, ``fl_y``,
    ``cx``, ``cy``, ``w``, ``h``) with the instant-ngp / nerfstudio pixel convention (top-left pixel centre at
    (0.5, 0.5)), and repeated at the top level when every frame shares them.

    Returns:
        the json file.
    """
    out = Path(out_dir)
    stems = _stems(scene)
    jobs = [(out / "images" / f"{s}{ext}", im, ext) for s, im in zip(stems, scene.images, strict=True)]
    if scene.masks is not None:
        jobs += [(out / "masks" / f"{s}.png", m, ".png") for s, m in zip(stems, scene.masks, strict=True)]
    _write_files(jobs)
    frames = []
    intr = []
    for i, s in enumerate(stems):
        K = scene.K[i]
        h, w = scene.images[i].shape[:2]
        cam = {"fl_x": float(K[0, 0]), "fl_y": float(K[1, 1]), "cx": float(K[0, 2] + 0.5),
               "cy": float(K[1, 2] + 0.5), "w": int(w), "h": int(h)}
        intr.append(cam)
        frame: dict[str, object] = {"file_path": f"images/{s}{ext}", **cam,
                                    "transform_matrix": opengl_to_opencv(scene.c2w[i]).tolist()}
        if scene.masks is not None:
            frame["mask_path"] = f"masks/{s}.png"
        frames.append(frame)
    meta: dict[str, object] = {"camera_model": "OPENCV"}
    if all(c == intr[0] for c in intr):
        meta.update(intr[0])
    meta["frames"] = frames
    path = out / file_name
    atomic_write_text(path, json.dumps(meta, indent=1))
    return path


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
    _write_files(jobs)
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
