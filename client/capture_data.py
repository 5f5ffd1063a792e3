"""A posed capture as the Blender import needs it: cameras, sparse points, region of interest (no bpy).

Two sources, one reader (:func:`read_capture_folder`), because both write the same files:

- a job folder of ``python -m backend poses`` (``JOB/poses/cameras.json``, ``points.npz``, ``roi.json``,
  ``report.json``; docs/POSES.md), read directly;
- any other posed capture the backend can load (NeuS, transforms.json, COLMAP, Middlebury): ``python -m backend
  export-capture`` loads it with the backend's own loaders and writes the same files into a temporary folder
  (:func:`load_capture`).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..backend import capture_files
from ..backend.protocol import JobLayout
from .camera_math import mean_camera_up
from .datasets import check_input_folder
from .jobs import export_capture_pipeline

#: Seconds the export of a capture that is not a poses job may take.
EXPORT_TIMEOUT_S = 600.0


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


def capture_for_photos(images: str, poses_job: str = "", poses_images: str = "") -> str:
    """The posed capture that a photo folder stands for: ``images`` itself when it is a posed capture, else the
    poses job ``poses_job`` when it was estimated from ``images`` (``poses_images``) and still exists; "" otherwise.

    Args:
        images: the photo folder (an absolute path, or "").
        poses_job: the job folder of the last Estimate Poses.
        poses_images: the photo folder that job was estimated from.
    """
    folder = check_input_folder(images) if images else None
    if folder is None or not folder.kind:
        return ""
    if folder.kind == "posed":
        return str(folder.path)
    if poses_job and poses_images == str(folder.path) and poses_folder(poses_job) is not None:
        return poses_job
    return ""


def trained_on(job: JobLayout) -> str:
    """:func:`capture_key` of the data a job trained on (from its config.json), or "" when it does not say."""
    try:
        data = json.loads(job.config.read_text(encoding="utf-8")).get("data")
    except (OSError, ValueError, AttributeError):
        return ""
    return capture_key(data) if isinstance(data, str) and data else ""


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
    elif (folder / capture_files.REPORT).is_file():
        report = _read(capture_files.read_pose_report, folder / capture_files.REPORT)
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


def load_capture(path: str | os.PathLike[str], backend_python: str, timeout: float = EXPORT_TIMEOUT_S
                 ) -> CaptureData:
    """The capture at ``path``: a poses job read directly; any other layout exported first by ``python -m backend
    export-capture`` (:func:`.jobs.export_capture_pipeline`) into a temporary folder and read from there. Blocks
    until the export has ended (about a second for 50 photos).

    Raises:
        CaptureError: with the backend's message, hint and file, or why the export could not run.
    """
    if poses_folder(path) is not None:
        return read_poses_job(path)
    if not Path(path).exists():
        raise CaptureError(f"{path} does not exist", "Choose a poses job folder or a posed capture.", path)
    out = Path(tempfile.mkdtemp(prefix="neusblend-import-"))
    pipeline = export_capture_pipeline(backend_python, path, out)
    try:
        deadline = time.monotonic() + timeout
        while pipeline.advance():
            if time.monotonic() > deadline:
                pipeline.stop(2.0)
                raise CaptureError(f"reading the capture took more than {timeout:.0f} s", "Choose a poses job "
                                   "folder, or a capture with fewer photos.", path)
            time.sleep(0.02)
        state = pipeline.state
        if state.status != "done":
            error = state.error
            raise CaptureError(error.message if error else f"the capture export ended: {state.status}",
                               (error.hint if error else "") or "Choose a poses job folder or a posed capture.",
                               (error.file if error else "") or path)
        return read_capture_folder(out)
    finally:
        if pipeline.active:
            pipeline.stop(2.0)
        shutil.rmtree(out, ignore_errors=True)
