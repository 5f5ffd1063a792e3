"""The capture files that cross between the backend and Blender: one writer and one reader for each (numpy only).

Part of the seam with :mod:`backend.protocol`: it imports neither torch nor bpy, so Blender's Python reads these
files with the same code the backend writes them with. The files (docs/POSES.md has their fields):

- ``cameras.json``: per image its name, size, ``K`` (OpenCV pixels, top-left pixel centre at (0, 0)) and ``c2w``
  (camera-to-world 4x4, OpenCV camera axes), optional ``path`` and ``camera_id``; written by ``poses`` and by
  ``export-capture``, read by the Blender import.
- ``points.npz``: sparse points ``xyz`` float32 (P, 3), ``rgb`` uint8 (P, 3), optional ``error`` float32 (P,) and
  ``track_length`` int32 (P,).
- a region file (``roi.json`` of a poses job, the client's ``<job>.roi.json``, a crop box): ``matrix`` (4x4, the
  cube [-1, 1]^3 to capture coordinates) and/or ``box_min``/``box_max`` (axis-aligned), with optional ``center``,
  ``radius``, ``up`` and notes; read by ``train --roi``, ``extract --box`` and the Blender import.
- ``capture.json``: what a capture is: ``name``, ``layout``, ``source`` and notes.

And the writers of the two capture layouts a capture made in Blender is written in (``synthetic/``, through
:func:`write_neus` and :func:`write_transforms`; the backend's own :mod:`backend.data.export` writes through them
too), read by the backend's loaders (:mod:`backend.data.neus`, :mod:`backend.data.nerf`): the NeuS/IDR layout
(``image/``, ``mask/``, ``cameras_sphere.npz``) and transforms.json with ``images/`` and ``masks/``; with the image
files' encoding (:func:`encode_image`, Pillow, imported when an image is written) and the camera conventions they
use (:func:`projection_matrix`, :func:`opengl_to_opencv`).
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import protocol
from .errors import BackendError
from .scene import CV_TO_GL
from .threads import default_workers

CAMERAS = "cameras.json"
POINTS = "points.npz"
REGION = "roi.json"
CAPTURE = "capture.json"
REPORT = "report.json"

class CaptureFileError(BackendError, ValueError):
    """A capture file that is missing, malformed or describes an impossible box (a ValueError too, for callers
    that do not import the backend's errors)."""


CAMERAS_CONVENTION = ("K: OpenCV pixels (top-left pixel centre at 0,0); c2w: camera-to-world 4x4, OpenCV camera axes "
                      "(x right, y down, z forward)")


def _write_json(path: str | os.PathLike[str], doc: Mapping[str, Any]) -> Path:
    return protocol.atomic_write_text(path, json.dumps(protocol.clean_json(dict(doc)), indent=1) + "\n")


def _read_json(path: str | os.PathLike[str], what: str, hint: str) -> dict[str, Any]:
    p = Path(path)
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise CaptureFileError(f"there is no {what}", hint=hint, file=p) from exc
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise CaptureFileError(f"cannot read the {what}: {exc}", hint=hint, file=p) from exc
    if not isinstance(doc, dict):
        raise CaptureFileError(f"the {what} is not a JSON object", hint=hint, file=p)
    return doc


# ----------------------------------------------------------------------------------------------------- cameras


@dataclass
class CameraEntry:
    """One image's camera as ``cameras.json`` holds it."""

    name: str
    width: int
    height: int
    K: np.ndarray  # (3, 3) OpenCV pixel convention
    c2w: np.ndarray  # (4, 4) camera-to-world, OpenCV camera axes
    path: str = ""  # absolute image path where the writer knew it ("" = images/<name> beside the file)
    camera_id: int | None = None


def write_cameras(path: str | os.PathLike[str], names: Sequence[str], sizes: np.ndarray, K: np.ndarray,
                  c2w: np.ndarray, *, frame: str, paths: Sequence[str] | None = None,
                  camera_ids: Sequence[int] | None = None) -> Path:
    """Write ``cameras.json``.

    Args:
        names: N image names. sizes: (N, 2) width, height. K: (N, 3, 3) OpenCV pixels. c2w: (N, 4, 4) OpenCV axes.
        frame: the coordinates the cameras are in, said in the convention line (e.g. "input coordinates").
        paths: N absolute image paths, or None. camera_ids: N shared-intrinsics ids, or None.
    """
    sizes, K, c2w = np.asarray(sizes), np.asarray(K, dtype=np.float64), np.asarray(c2w, dtype=np.float64)
    images = []
    for i, name in enumerate(names):
        entry: dict[str, Any] = {"name": str(name)}
        if camera_ids is not None:
            entry["camera_id"] = int(camera_ids[i])
        entry.update(width=int(sizes[i, 0]), height=int(sizes[i, 1]), K=K[i].reshape(3, 3),
                     c2w=c2w[i].reshape(4, 4))
        if paths is not None:
            entry["path"] = str(paths[i])
        images.append(entry)
    return _write_json(path, {"convention": f"{CAMERAS_CONVENTION}, {frame}", "images": images})


def read_cameras(path: str | os.PathLike[str]) -> list[CameraEntry]:
    """The entries of a ``cameras.json`` (raises :class:`BackendError` naming the file when it is malformed)."""
    hint = "Estimate the poses again (Estimate Poses or `python -m backend poses`)."
    doc = _read_json(path, "camera file", hint)
    try:
        entries = [CameraEntry(str(e["name"]), int(e["width"]), int(e["height"]),
                               np.asarray(e["K"], dtype=np.float64).reshape(3, 3),
                               np.asarray(e["c2w"], dtype=np.float64).reshape(4, 4), str(e.get("path") or ""),
                               int(e["camera_id"]) if e.get("camera_id") is not None else None)
                   for e in doc["images"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise CaptureFileError(f"the camera file is malformed: {exc}", hint=hint, file=path) from exc
    return entries


# ------------------------------------------------------------------------------------------------------ points


def write_points(path: str | os.PathLike[str], xyz: np.ndarray, rgb: np.ndarray | None = None,
                 error: np.ndarray | None = None, track_length: np.ndarray | None = None) -> Path:
    """Write ``points.npz``: xyz (P, 3), rgb (P, 3) uint8 (grey when None), error (P,), track_length (P,)."""
    xyz = np.asarray(xyz, dtype=np.float32).reshape(-1, 3)
    arrays = {"xyz": xyz, "rgb": (np.asarray(rgb, dtype=np.uint8).reshape(-1, 3) if rgb is not None
                                  else np.full((len(xyz), 3), 200, dtype=np.uint8))}
    if error is not None:
        arrays["error"] = np.asarray(error, dtype=np.float32).reshape(-1)
    if track_length is not None:
        arrays["track_length"] = np.asarray(track_length, dtype=np.int32).reshape(-1)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return protocol.atomic_write_bytes(path, buf.getvalue())


def read_points(path: str | os.PathLike[str]) -> dict[str, np.ndarray | None]:
    """``{"xyz": (P, 3) float64, "rgb": (P, 3) uint8, "error": (P,) or None, "track_length": (P,) or None}``."""
    try:
        with np.load(path, allow_pickle=False) as z:
            xyz = np.asarray(z["xyz"], dtype=np.float64).reshape(-1, 3)
            return {"xyz": xyz,
                    "rgb": (np.asarray(z["rgb"], dtype=np.uint8).reshape(-1, 3) if "rgb" in z
                            else np.full((len(xyz), 3), 200, dtype=np.uint8)),
                    "error": np.asarray(z["error"], dtype=np.float32) if "error" in z else None,
                    "track_length": np.asarray(z["track_length"], dtype=np.int32) if "track_length" in z else None}
    except (OSError, ValueError, KeyError, EOFError) as exc:
        raise CaptureFileError(f"cannot read the sparse points: {exc}", hint="Estimate the poses again.",
                           file=path) from exc


# ------------------------------------------------------------------------------------------------------ region


def box_matrix(box_min: Any, box_max: Any) -> np.ndarray:
    """(4, 4) matrix mapping the cube [-1, 1]^3 onto the axis-aligned box [box_min, box_max] (3-vectors): how a
    region or crop box given by its corners reads as a box matrix, on both sides (``roi.json``, ``extract --box``,
    the Blender box objects)."""
    lo, hi = np.asarray(box_min, dtype=np.float64), np.asarray(box_max, dtype=np.float64)
    m = np.eye(4)
    m[:3, :3] = np.diag((hi - lo) / 2)
    m[:3, 3] = (hi + lo) / 2
    return m


def _checked_box(m: np.ndarray, file: str | os.PathLike[str] | None) -> np.ndarray:
    if not np.all(np.isfinite(m)) or abs(np.linalg.det(m[:3, :3])) < 1e-12:
        raise CaptureFileError("the region-of-interest box is empty or flat", hint="Give the box a size on every axis.",
                           file=file)
    return m


def write_region(path: str | os.PathLike[str], matrix: np.ndarray | None = None, **fields: Any) -> Path:
    """Write a region file: ``matrix`` (4, 4) cube-to-capture (checked: finite, not flat) when given, and the other
    fields as they are (``box_min``, ``box_max``, ``center``, ``radius``, ``up``, notes)."""
    doc: dict[str, Any] = {}
    if matrix is not None:
        doc["matrix"] = _checked_box(np.asarray(matrix, dtype=np.float64).reshape(4, 4), path)
    doc.update(fields)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return _write_json(path, doc)


def read_region(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A region file's fields as written (``matrix`` as a (4, 4) array when present)."""
    doc = _read_json(path, "region-of-interest file", "Give a JSON file with a 4x4 'matrix' or with 'box_min' and "
                     "'box_max' (the roi.json of `poses`, or draw the box again).")
    if "matrix" in doc:
        try:
            doc["matrix"] = np.asarray(doc["matrix"], dtype=np.float64).reshape(4, 4)
        except (TypeError, ValueError) as exc:
            raise CaptureFileError(f"the region's matrix is malformed: {exc}", hint="Give 4 rows of 4 numbers.",
                               file=path) from exc
    return doc


def region_matrix(path: str | os.PathLike[str]) -> np.ndarray:
    """(4, 4) cube-to-capture matrix of a region file (its ``matrix``, else its ``box_min``/``box_max``)."""
    doc = read_region(path)
    if "matrix" in doc:
        m = doc["matrix"]
    else:
        try:
            m = box_matrix(doc["box_min"], doc["box_max"])
        except (KeyError, TypeError, ValueError) as exc:
            raise CaptureFileError(f"cannot read the region of interest: {exc!r} is missing or malformed",
                               hint="Give a JSON file with a 4x4 'matrix' or with 'box_min' and 'box_max'.",
                               file=path) from exc
    return _checked_box(m, path)


# ------------------------------------------------------------------------------------------------ pose report


def write_pose_report(path: str | os.PathLike[str], report: Mapping[str, Any]) -> Path:
    """Write the pose step's quality report (``report.json``; its fields: docs/POSES.md)."""
    return _write_json(path, report)


def read_pose_report(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The pose step's quality report (raises :class:`CaptureFileError` naming the file when it is unreadable)."""
    return _read_json(path, "pose report", "Estimate the poses again.")


# ----------------------------------------------------------------------------------------------------- capture


def write_capture_info(path: str | os.PathLike[str], name: str, layout: str, source: str, **notes: Any) -> Path:
    """Write ``capture.json``: the capture's display name, its layout (a loader's name) and where it came from."""
    return _write_json(path, {"name": name, "layout": layout, "source": source, **notes})


def read_capture_info(path: str | os.PathLike[str]) -> dict[str, Any]:
    """``capture.json``'s fields (``name``, ``layout``, ``source`` and notes)."""
    return _read_json(path, "capture description", "Import the capture again.")


# ------------------------------------------------------------------------------------------------ capture layouts

#: Image file suffixes the layouts are written with, and Pillow's name for each.
IMAGE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF", ".tiff": "TIFF", ".bmp": "BMP",
                 ".webp": "WEBP"}


def projection_matrix(K: np.ndarray, c2w: np.ndarray) -> np.ndarray:
    """(3, 4) ``P = K [R | t]`` from (3, 3) K and (4, 4) camera-to-world (a NeuS ``world_mat``'s top rows)."""
    w2c = np.linalg.inv(np.asarray(c2w, dtype=np.float64))
    return np.asarray(K, dtype=np.float64) @ w2c[:3, :4]


def opengl_to_opencv(c2w: np.ndarray) -> np.ndarray:
    """(..., 4, 4) camera-to-world with OpenGL camera axes -> OpenCV camera axes (and back: its own inverse)."""
    return np.asarray(c2w, dtype=np.float64) @ CV_TO_GL


def encode_image(array: np.ndarray, ext: str = ".png", quality: int = 95) -> bytes:
    """(H, W, 3) or (H, W) uint8 -> file bytes in the format of ``ext`` (see :data:`IMAGE_FORMATS`)."""
    from PIL import Image  # here, so the seam imports where Pillow is missing

    fmt = IMAGE_FORMATS[ext.lower()]
    buf = io.BytesIO()
    kwargs: dict[str, object] = {"quality": quality} if fmt in ("JPEG", "WEBP") else {}
    if fmt == "WEBP":
        kwargs["lossless"] = True
    if fmt == "PNG":
        kwargs["compress_level"] = 1  # fast; these are working copies
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def write_images(files: Sequence[tuple[Path, np.ndarray, str]]) -> None:
    """Encode and write ``(path, (H, W[, 3]) uint8 array, ext)`` triples atomically, on a few threads."""
    def one(job: tuple[Path, np.ndarray, str]) -> None:
        path, arr, ext = job
        protocol.atomic_write_bytes(path, encode_image(arr, ext))

    with ThreadPoolExecutor(max_workers=default_workers()) as pool:
        list(pool.map(one, files))


def write_neus(out_dir: str | os.PathLike[str], images: Sequence[np.ndarray], K: np.ndarray, c2w: np.ndarray,
               to_world: np.ndarray, masks: Sequence[np.ndarray] | None = None, *, ext: str = ".png") -> Path:
    """Write the NeuS/IDR layout: ``image/000000.png ...``, ``mask/000000.png ...``, ``cameras_sphere.npz``.

    Args:
        images: N (H, W, 3) uint8. K: (N, 3, 3) OpenCV pixel centres (as NeuS uses them). c2w: (N, 4, 4)
            camera-to-world, OpenCV axes. to_world: (4, 4), every ``scale_mat_i`` (the unit sphere -> the scene).
        masks: N (H, W) uint8, or None.

    ``world_mat_i`` is the 4x4 ``[[K [R | t]], [0 0 0 1]]`` of image i. Images are numbered so that their sorted
    order is the camera order.

    Returns:
        the output folder.
    """
    out = Path(out_dir)
    names = [f"{i:06d}" for i in range(len(images))]
    files = [(out / "image" / f"{s}{ext}", im, ext) for s, im in zip(names, images, strict=True)]
    if masks is not None:
        files += [(out / "mask" / f"{s}.png", m, ".png") for s, m in zip(names, masks, strict=True)]
    write_images(files)
    arrays: dict[str, np.ndarray] = {}
    for i in range(len(images)):
        P = np.eye(4)
        P[:3, :4] = projection_matrix(K[i], c2w[i])
        arrays[f"world_mat_{i}"] = P
        arrays[f"scale_mat_{i}"] = np.array(to_world, dtype=np.float64)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    protocol.atomic_write_bytes(out / "cameras_sphere.npz", buf.getvalue())
    return out


def write_transforms(out_dir: str | os.PathLike[str], images: Sequence[np.ndarray], K: np.ndarray,
                     c2w: np.ndarray, stems: Sequence[str], masks: Sequence[np.ndarray] | None = None, *,
                     ext: str = ".png", file_name: str = "transforms.json") -> Path:
    """Write ``transforms.json`` with ``images/<stem><ext>`` (and ``masks/<stem>.png`` as per-frame ``mask_path``).

    Args:
        images: N (H, W, 3) uint8. K: (N, 3, 3) OpenCV pixel centres. c2w: (N, 4, 4) camera-to-world, OpenCV axes.
        stems: N file stems. masks: N (H, W) uint8, or None.

    ``transform_matrix`` is camera-to-world with OpenGL axes; intrinsics are per frame (``fl_x``, ``fl_y``,
    ``cx``, ``cy``, ``w``, ``h``) with the instant-ngp / nerfstudio pixel convention (top-left pixel centre at
    (0.5, 0.5)), and repeated at the top level when every frame shares them.

    Returns:
        the json file.
    """
    out = Path(out_dir)
    files = [(out / "images" / f"{s}{ext}", im, ext) for s, im in zip(stems, images, strict=True)]
    if masks is not None:
        files += [(out / "masks" / f"{s}.png", m, ".png") for s, m in zip(stems, masks, strict=True)]
    write_images(files)
    frames = []
    intr = []
    for i, s in enumerate(stems):
        k = K[i]
        h, w = images[i].shape[:2]
        cam = {"fl_x": float(k[0, 0]), "fl_y": float(k[1, 1]), "cx": float(k[0, 2] + 0.5),
               "cy": float(k[1, 2] + 0.5), "w": int(w), "h": int(h)}
        intr.append(cam)
        frame: dict[str, object] = {"file_path": f"images/{s}{ext}", **cam,
                                    "transform_matrix": opengl_to_opencv(c2w[i]).tolist()}
        if masks is not None:
            frame["mask_path"] = f"masks/{s}.png"
        frames.append(frame)
    meta: dict[str, object] = {"camera_model": "OPENCV"}
    if all(c == intr[0] for c in intr):
        meta.update(intr[0])
    meta["frames"] = frames
    path = out / file_name
    protocol.atomic_write_text(path, json.dumps(meta, indent=1))
    return path
