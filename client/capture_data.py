"""A posed capture as the Blender import needs it: cameras, sparse points, region of interest (no bpy).

Two sources, one reader (:func:`read_capture_folder`), because both write the same files:

- a job folder of ``python -m backend poses`` (``JOB/poses/cameras.json``, ``points.npz``, ``roi.json``,
  ``report.json``; docs/POSES.md), read directly;
- any other posed capture the backend can load (NeuS, transforms.json, COLMAP, Middlebury): the backend's
  interpreter runs :mod:`.export_capture`, which loads it with the backend's own loaders and writes the same files
  into a temporary folder (:func:`export_command`).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..backend import capture_files
from .camera_math import mean_camera_up


class CaptureError(Exception):
    """The capture cannot be read; ``hint`` says what to do, ``file`` which file is to blame."""

    def __init__(self, message: str, hint: str = "", file: str | os.PathLike[str] = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.file = str(file)


@dataclass
class CameraView:
    """One registered photo: OpenCV intrinsics and camera-to-world in capture coordinates."""

    name: str
    width: int
    height: int
    K: np.ndarray  # (3, 3)
    c2w: np.ndarray  # (4, 4), OpenCV axes
    image_path: str = ""


@dataclass
class CaptureData:
    """Everything the import creates objects from (all in capture coordinates).

    Attributes:
        name: what the collection is called (the photo folder's name).
        source: :func:`capture_key` of the data training reads (ties the import to Reconstruct).
        layout: "job" (a poses job) or the backend loader's format ("neus", "nerf", "colmap", "middlebury").
        cameras: the registered photos.
        points: (P, 3) float64 sparse points (P may be 0).
        point_colors: (P, 3) uint8.
        point_errors: None or (P,) float32 reprojection errors in pixels.
        track_lengths: None or (P,) int32 number of images that see each point.
        roi: ``center`` (3), ``radius``, ``box_min`` (3), ``box_max`` (3), ``up`` (3).
    """

    name: str
    source: str
    layout: str
    cameras: list[CameraView]
    points: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    point_colors: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), dtype=np.uint8))
    point_errors: np.ndarray | None = None
    track_lengths: np.ndarray | None = None
    roi: dict[str, Any] = field(default_factory=dict)

    def common_size(self) -> tuple[int, int]:
        """The most common (width, height) of the photos; the first photo's among equally common ones."""
        counts = Counter((c.width, c.height) for c in self.cameras)
        best = max(counts.values())
        return next((c.width, c.height) for c in self.cameras if counts[(c.width, c.height)] == best)


# ---------------------------------------------------------------------------------------------------------------
# locating


def poses_folder(path: str | os.PathLike[str]) -> Path | None:
    """The ``poses`` folder of a poses job (given the job folder or the poses folder itself), else None."""
    p = Path(path).expanduser()
    for candidate in (p / "poses", p):
        if (candidate / "cameras.json").is_file() and (candidate / "sparse").is_dir():
            return candidate
    return None


def capture_key(path: str | os.PathLike[str]) -> str:
    """A stable name for the data training reads from ``path``: the resolved path, a poses job's ``poses`` folder
    for a job (``train`` resolves a job folder the same way)."""
    if not str(path).strip():
        return ""
    p = Path(path).expanduser().resolve()
    if (p / "poses" / "sparse").is_dir():
        p = p / "poses"
    return str(p)


# ---------------------------------------------------------------------------------------------------------------
# reading


def _read(reader: Callable[[Path], Any], path: Path) -> Any:
    """``reader(path)`` with the seam's file errors as :class:`CaptureError`."""
    try:
        return reader(path)
    except capture_files.CaptureFileError as exc:
        raise CaptureError(exc.message, exc.hint, exc.file or path) from exc


def read_capture_folder(folder: str | os.PathLike[str], *, name: str = "", source: str = "",
                        layout: str = "") -> CaptureData:
    """Read ``cameras.json``, ``points.npz`` (optional), ``roi.json`` (optional) and ``capture.json`` or
    ``report.json`` (optional, for the name) from ``folder``.

    Raises:
        CaptureError: no cameras.json, or one without cameras.
    """
    folder = Path(folder)
    cams_file = folder / capture_files.CAMERAS
    if not cams_file.is_file():
        raise CaptureError(f"no cameras.json in {folder}", "Choose a poses job folder (Estimate Poses writes one) or "
                           "a posed capture.", folder)
    cameras = [CameraView(e.name, e.width, e.height, e.K, e.c2w, e.path or str(folder / "images" / e.name))
               for e in _read(capture_files.read_cameras, cams_file)]
    if not cameras:
        raise CaptureError("the capture has no registered cameras", "Estimate the poses again with more, "
                           "overlapping photos.", cams_file)
    info: dict[str, Any] = {}
    if (folder / capture_files.CAPTURE).is_file():
        info = _read(capture_files.read_capture_info, folder / capture_files.CAPTURE)
    elif (folder / "report.json").is_file():
        try:
            report = json.loads((folder / "report.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise CaptureError(f"cannot read report.json: {exc}", "Estimate the poses again.",
                               folder / "report.json") from exc
        if report.get("images_dir"):
            info["name"] = Path(str(report["images_dir"]).rstrip("/\\")).name
    data = CaptureData(name=name or str(info.get("name") or folder.parent.name or "Capture"),
                       source=source or str(info.get("source") or capture_key(folder)),
                       layout=layout or str(info.get("layout") or "job"), cameras=cameras)
    if (folder / capture_files.POINTS).is_file():
        points = _read(capture_files.read_points, folder / capture_files.POINTS)
        data.points, data.point_colors = points["xyz"], points["rgb"]
        data.point_errors, data.track_lengths = points["error"], points["track_length"]
    roi = {}
    if (folder / capture_files.REGION).is_file():
        roi = _read(capture_files.read_region, folder / capture_files.REGION)
        roi.pop("matrix", None)
    data.roi = complete_roi(roi, data)
    return data


def complete_roi(roi: dict[str, Any], data: CaptureData) -> dict[str, Any]:
    """``roi`` with every key the import needs, filled from the cameras and points where missing."""
    out = dict(roi)
    c2w = np.stack([c.c2w for c in data.cameras])
    if "up" not in out:
        out["up"] = mean_camera_up(c2w).tolist()
    if "box_min" not in out or "box_max" not in out:
        if len(data.points) >= 20:
            lo, hi = np.percentile(data.points, 2, axis=0), np.percentile(data.points, 98, axis=0)
        else:  # around the camera centres' middle, half their spread
            centers = c2w[:, :3, 3]
            mid = centers.mean(0)
            half = max(float(np.linalg.norm(centers - mid, axis=1).mean()) / 2.0, 1e-3)
            lo, hi = mid - half, mid + half
        out["box_min"], out["box_max"] = lo.tolist(), hi.tolist()
    lo, hi = np.asarray(out["box_min"], dtype=np.float64), np.asarray(out["box_max"], dtype=np.float64)
    if "center" not in out:
        out["center"] = ((lo + hi) / 2.0).tolist()
    if "radius" not in out:
        out["radius"] = float(np.linalg.norm(hi - lo) / 2.0)
    return out


def read_poses_job(path: str | os.PathLike[str]) -> CaptureData:
    """Read the poses job at ``path`` (the job folder or its ``poses`` folder)."""
    folder = poses_folder(path)
    if folder is None:
        raise CaptureError(f"{path} is not a poses job folder", "Choose the folder Estimate Poses wrote (it holds "
                           "poses/cameras.json).", path)
    return read_capture_folder(folder, source=capture_key(folder), layout="job")


# ---------------------------------------------------------------------------------------------------------------
# other formats, through the backend


def export_command(python: str, data: str | os.PathLike[str], out_dir: str | os.PathLike[str]) -> list[str]:
    """The argv that exports the capture at ``data`` into ``out_dir`` (run with the extension on PYTHONPATH)."""
    return [python, "-m", "client.export_capture", "--data", str(data), "--out", str(out_dir)]


def read_export_result(stdout: str) -> dict[str, Any]:
    """The last JSON line :mod:`.export_capture` printed: ``{"ok": true}`` or ``{"ok": false, "message", "hint",
    "file"}``; a missing line reads as a failure."""
    for line in reversed(stdout.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                result = json.loads(line)
            except ValueError:
                continue
            if isinstance(result, dict) and "ok" in result:
                return result
    return {"ok": False, "message": "the capture export printed no result"}
