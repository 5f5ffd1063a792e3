"""NeRF / instant-ngp / nerfstudio ``transforms.json``.

- ``frames[i].file_path``: relative to the json file, with or without extension.
- ``frames[i].transform_matrix``: camera-to-world with OpenGL camera axes (x right, y up, z backward);
  multiplied by ``diag(1, -1, -1, 1)`` to get OpenCV axes.
- Intrinsics shared at the top level or per frame (a frame's keys win): ``fl_x``, ``fl_y``, ``cx``, ``cy``,
  ``w``, ``h``, or ``camera_angle_x`` (and optionally ``camera_angle_y``) for the original NeRF files.
- Pixel centres: instant-ngp and nerfstudio put the top-left pixel centre at (0.5, 0.5) (a missing ``cx`` means
  ``w / 2``, the exact image centre), so 0.5 is subtracted from ``cx``, ``cy`` as for COLMAP; the writer in
  :mod:`.export` adds it back.
- Masks: per-frame ``mask_path``, else a ``masks/`` (or ``mask/``) folder beside the json with the same names,
  else the images' alpha channel (NeRF synthetic RGBA images).
- ``w``/``h`` that differ from the stored image size (images downscaled after export) scale the intrinsics.
- Distortion coefficients other than zero, or a fisheye ``camera_model``, are refused: undistort first.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BackendError
from ..scene import Scene
from .cameras import intrinsics, opengl_to_opencv, scale_intrinsics
from .images import IMAGE_EXTENSIONS, find_subfolder, load_images, match_masks

TRANSFORMS_FILES = ("transforms.json", "transforms_train.json")
_DISTORTION_KEYS = ("k1", "k2", "k3", "k4", "p1", "p2")


def find_transforms(path: Path) -> Path | None:
    """The transforms json for ``path`` (the file itself, or transforms.json / transforms_train.json inside)."""
    if path.is_file():
        return path if path.suffix.lower() == ".json" else None
    return next((path / f for f in TRANSFORMS_FILES if (path / f).is_file()), None)


def _resolve(base: Path, file_path: str, json_path: Path, what: str) -> Path:
    p = base / file_path
    if p.is_file():
        return p
    if not p.suffix or p.suffix.lower() not in IMAGE_EXTENSIONS:
        for ext in IMAGE_EXTENSIONS:
            for cand in (p.with_name(p.name + ext), p.with_name(p.name + ext.upper())):
                if cand.is_file():
                    return cand
    raise BackendError(f"transforms.json references a missing {what}: {file_path}",
                       f"Put the file at {p} or fix the path in the json (paths are relative to the json).",
                       json_path)


def _number(d: dict[str, Any], key: str, json_path: Path, where: str) -> float | None:
    if key not in d or d[key] is None:
        return None
    try:
        v = float(d[key])
    except (TypeError, ValueError) as exc:
        raise BackendError(f"{where}: {key} is not a number ({d[key]!r})", "Fix the value in the json.",
                           json_path) from exc
    if not math.isfinite(v):
        raise BackendError(f"{where}: {key} is not finite", "Fix the value in the json.", json_path)
    return v


def _check_pinhole(meta: dict[str, Any], frame: dict[str, Any], json_path: Path, where: str) -> None:
    """BackendError for a fisheye model or non-zero distortion coefficients."""
    d = {**meta, **frame}
    model = str(d.get("camera_model", "OPENCV")).upper()
    if "FISHEYE" in model or model == "EQUIRECTANGULAR":
        raise BackendError(f"{where}: camera_model {model} is not a pinhole camera",
                           "Undistort the images to a pinhole camera first (e.g. `python -m backend poses`, "
                           "or nerfstudio's / COLMAP's undistorter).", json_path)
    for k in _DISTORTION_KEYS:
        v = _number(d, k, json_path, where)
        if v is not None and abs(v) > 1e-9:
            raise BackendError(f"{where}: lens distortion {k} = {v:g} is not supported",
                               "Undistort the images first (`python -m backend poses` writes undistorted "
                               "images and a pinhole model), then use those.", json_path)


def _frame_intrinsics(meta: dict[str, Any], frame: dict[str, Any], size: tuple[int, int], json_path: Path,
                      where: str) -> np.ndarray:
    """(3, 3) K of one frame for its stored image ``size`` (w, h), OpenCV pixel centres."""
    d = {**meta, **frame}
    W, H = size
    w = _number(d, "w", json_path, where) or float(W)
    h = _number(d, "h", json_path, where) or float(H)
    fx = _number(d, "fl_x", json_path, where)
    fy = _number(d, "fl_y", json_path, where)
    ax = _number(d, "camera_angle_x", json_path, where)
    ay = _number(d, "camera_angle_y", json_path, where)
    if fx is None and ax is not None:
        fx = 0.5 * w / math.tan(0.5 * ax)
    if fy is None and ay is not None:
        fy = 0.5 * h / math.tan(0.5 * ay)
    if fx is None:
        fx = fy
    if fy is None:
        fy = fx
    if fx is None or fy is None or fx <= 0 or fy <= 0:
        raise BackendError(f"{where}: no focal length (fl_x / fl_y / camera_angle_x)",
                           "Add fl_x (pixels) or camera_angle_x (radians) to the json.", json_path)
    cx = _number(d, "cx", json_path, where)
    cy = _number(d, "cy", json_path, where)
    cx = w / 2 if cx is None else cx
    cy = h / 2 if cy is None else cy
    K = intrinsics(fx, fy, cx - 0.5, cy - 0.5)
    if (round(w), round(h)) != (W, H):  # the json describes another resolution of the same images
        K = scale_intrinsics(K, W / w, H / h)
    return K


def load_nerf(path: str | os.PathLike[str], *, max_image_size: int = 0) -> Scene:
    """Load a transforms.json capture (``path`` is the json file or its folder)."""
    path = Path(path)
    if not path.exists():
        raise BackendError("The path does not exist", "Check the path you chose.", path)
    json_path = find_transforms(path)
    if json_path is None:
        raise BackendError("No transforms.json here", "Choose the transforms.json file or its folder.", path)
    try:
        meta = json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BackendError(f"Cannot read the json: {exc}", "Fix or re-export the file.", json_path) from exc
    frames = meta.get("frames") if isinstance(meta, dict) else None
    if not isinstance(frames, list) or not frames:
        raise BackendError("transforms.json has no frames", "It needs a non-empty \"frames\" list.", json_path)
    base = json_path.parent
    image_paths: list[Path] = []
    mask_paths: list[Path | None] = []
    c2w = []
    for i, fr in enumerate(frames):
        where = f"frame {i}"
        if not isinstance(fr, dict) or "file_path" not in fr or "transform_matrix" not in fr:
            raise BackendError(f"{where} lacks file_path or transform_matrix",
                               "Every frame needs both.", json_path)
        _check_pinhole(meta, fr, json_path, where)
        image_paths.append(_resolve(base, str(fr["file_path"]), json_path, "image"))
        mp = fr.get("mask_path")
        mask_paths.append(_resolve(base, str(mp), json_path, "mask") if mp else None)
        try:
            T = np.asarray(fr["transform_matrix"], dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise BackendError(f"{where}: transform_matrix is not a matrix", "Fix the json.", json_path) from exc
        if T.shape == (3, 4):
            T = np.vstack([T, [0.0, 0.0, 0.0, 1.0]])
        if T.shape != (4, 4) or not np.all(np.isfinite(T)):
            raise BackendError(f"{where}: transform_matrix must be a finite 4x4 matrix", "Fix the json.",
                               json_path)
        c2w.append(opengl_to_opencv(T))
    names = [p.name for p in image_paths]
    if len(set(names)) != len(names):
        names = [p.relative_to(base).as_posix() if p.is_relative_to(base) else str(p) for p in image_paths]

    masks_given = [m is not None for m in mask_paths]
    final_masks: list[Path] | None
    if all(masks_given):
        final_masks = mask_paths  # type: ignore[assignment]
    elif any(masks_given):
        i = masks_given.index(False)
        raise BackendError(f"frame {i} ({names[i]}) has no mask_path while other frames have one",
                           "Give every frame a mask_path, or none.", json_path)
    else:
        mask_dir = find_subfolder(base, ("masks", "mask"))
        final_masks = match_masks(image_paths, mask_dir) if mask_dir is not None else None

    loaded = load_images(image_paths, final_masks, max_image_size=max_image_size,
                         alpha_as_mask=final_masks is None)
    K_full = np.stack([
        _frame_intrinsics(meta, frames[i], (int(w), int(h)), json_path, f"frame {i}")
        for i, (w, h) in zip(loaded.kept, loaded.full_sizes, strict=True)
    ])
    return Scene(
        names=loaded.pick(names),
        images=loaded.images,
        K=loaded.scale_K(K_full),
        c2w=np.stack(c2w)[loaded.kept],
        masks=loaded.masks,
        source="nerf",
        root=base,
        image_paths=loaded.pick(image_paths),
        skipped=loaded.skipped,
    )
