"""Cameras and frames between the capture (OpenCV conventions) and Blender (no bpy; numpy only).

Conventions:

- Capture coordinates: the reconstruction's own frame (``cameras.json``, ``points.npz``, ``roi.json``, the meshes
  the backend streams). ``c2w`` is camera-to-world with OpenCV camera axes (x right, y down, z forward); ``K`` uses
  OpenCV pixels (the centre of the top-left pixel is at (0, 0)).
- Blender's camera looks down its -Z axis with +Y up (OpenGL axes): ``c2w_blender = c2w @ CV_TO_GL``.
- Blender's perspective camera, at render resolution W x H (square pixels), is a pinhole whose focal length in
  pixels is ``lens / sensor * S`` and whose frame is shifted by ``shift * S`` pixels, where ``S`` is the image side
  the sensor fits: W for a horizontal fit, H for a vertical one. We fit the longer side (horizontal for landscape,
  vertical for portrait, what Blender's *Auto* fit does too), with a sensor whose longer side is
  :data:`SENSOR_MM`, so ``S = max(W, H)`` and ``lens`` is close to the 35 mm-equivalent focal length.
- The *frame* of an imported capture is one similarity ``blender_from_capture`` (4 x 4): rotation that takes the
  capture's up direction to +Z, uniform scale, translation. The import puts it on one parent empty; every child
  (cameras, points, region box, reconstructed mesh) keeps capture coordinates in its local matrix.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..backend.capture_files import box_matrix  # noqa: F401 - the region-box convention, shared with the backend

#: OpenCV camera axes <-> OpenGL / Blender camera axes (y and z flipped); its own inverse.
CV_TO_GL = np.diag([1.0, -1.0, -1.0, 1.0])

#: Longer side of the Blender camera's sensor in millimetres (a full-frame 35 mm sensor).
SENSOR_MM = 36.0


@dataclass(frozen=True)
class BlenderCameraParams:
    """Settings of a Blender camera (and of the scene's render size) that reproduce one pinhole camera.

    Attributes:
        lens: focal length in millimetres.
        sensor_fit: "HORIZONTAL" (landscape or square) or "VERTICAL" (portrait).
        sensor_width, sensor_height: sensor size in millimetres (the longer side is :data:`SENSOR_MM`).
        shift_x, shift_y: principal-point shift in Blender's units (the fitted side's length, see the module).
        width, height: the image size in pixels: the scene's render resolution must be this.
        pixel_aspect_x, pixel_aspect_y: the scene's pixel aspect (1, 1 unless fx != fy; Blender wants both >= 1).
        skew: K[0, 1] in pixels; Blender cameras have no skew, so it is dropped.
    """

    lens: float
    sensor_fit: str
    sensor_width: float
    sensor_height: float
    shift_x: float
    shift_y: float
    width: int
    height: int
    pixel_aspect_x: float = 1.0
    pixel_aspect_y: float = 1.0
    skew: float = 0.0


def blender_camera_params(K: np.ndarray, width: int, height: int, sensor_mm: float = SENSOR_MM
                          ) -> BlenderCameraParams:
    """The Blender camera settings for OpenCV intrinsics ``K`` (3 x 3) of a ``width`` x ``height`` image.

    Blender's frame at render size W x H with pixel aspect (ax, ay), ``c = ay / ax``, and fitted side ``S``
    (W for a horizontal fit, ``c`` H for a vertical one) is the pinhole ``fx = lens / sensor * S``, ``fy = fx / c``,
    ``cx = (W - 1) / 2 - shift_x S``, ``cy = (H - 1) / 2 + shift_y S / c`` (OpenCV pixels: Blender moves the frame,
    so the sign is opposite in x, where pixels grow right, and equal in y, where they grow down). This inverts it.
    """
    K = np.asarray(K, dtype=np.float64).reshape(3, 3)
    w, h = int(width), int(height)
    if w <= 0 or h <= 0:
        raise ValueError(f"image size {w}x{h} must be positive")
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    if fx <= 0 or fy <= 0:
        raise ValueError(f"focal lengths ({fx}, {fy}) must be positive")
    c = fx / fy  # Blender's ycor = pixel_aspect_y / pixel_aspect_x
    longer = max(w, h)
    horizontal = w >= h
    side = w if horizontal else c * h
    sensor = sensor_mm * (w if horizontal else h) / longer
    return BlenderCameraParams(
        lens=float(fx * sensor / side),
        sensor_fit="HORIZONTAL" if horizontal else "VERTICAL",
        sensor_width=float(sensor_mm * w / longer),
        sensor_height=float(sensor_mm * h / longer),
        shift_x=float(((w - 1) / 2.0 - cx) / side),
        shift_y=float((cy - (h - 1) / 2.0) * c / side),
        width=w, height=h,
        pixel_aspect_x=float(1.0 / c) if c < 1.0 else 1.0,
        pixel_aspect_y=float(c) if c > 1.0 else 1.0,
        skew=float(K[0, 1]),
    )


def intrinsics_from_blender(lens: float, sensor_fit: str, sensor_width: float, sensor_height: float,
                            shift_x: float, shift_y: float, width: int, height: int,
                            pixel_aspect_x: float = 1.0, pixel_aspect_y: float = 1.0) -> np.ndarray:
    """OpenCV K (3 x 3) of a Blender camera rendered at ``width`` x ``height`` (any sensor fit, Auto included).

    The inverse of :func:`blender_camera_params`, following Blender's own viewplane code: used by tests and by
    anyone who exports Blender cameras back to OpenCV.
    """
    w, h = int(width), int(height)
    c = pixel_aspect_y / pixel_aspect_x
    fit = sensor_fit
    if fit == "AUTO":
        fit = "HORIZONTAL" if pixel_aspect_x * w >= pixel_aspect_y * h else "VERTICAL"
    side = w if fit == "HORIZONTAL" else c * h
    sensor = sensor_height if sensor_fit == "VERTICAL" else sensor_width  # Auto always takes the width
    fx = lens / sensor * side
    cx = (w - 1) / 2.0 - shift_x * side
    cy = (h - 1) / 2.0 + shift_y * side / c
    return np.array([[fx, 0.0, cx], [0.0, fx / c, cy], [0.0, 0.0, 1.0]])


def opencv_to_blender_c2w(c2w: np.ndarray) -> np.ndarray:
    """(..., 4, 4) camera-to-world with OpenCV axes -> the same camera with Blender's axes (looks down -Z)."""
    return np.asarray(c2w, dtype=np.float64) @ CV_TO_GL


def project_opencv(K: np.ndarray, c2w: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixels (M, 2) (OpenCV convention) and depths (M,) of (M, 3) world points seen by one camera."""
    c2w = np.asarray(c2w, dtype=np.float64)
    R, t = c2w[:3, :3], c2w[:3, 3]
    pc = (np.asarray(points, dtype=np.float64) - t) @ R  # = R^T (X - t)
    z = pc[:, 2]
    uvw = pc @ np.asarray(K, dtype=np.float64).T
    with np.errstate(divide="ignore", invalid="ignore"):
        uv = uvw[:, :2] / uvw[:, 2:3]
    return uv, z


# ---------------------------------------------------------------------------------------------------------------
# the capture frame


def mean_camera_up(c2w: np.ndarray) -> np.ndarray:
    """(3,) normalized mean of the cameras' up vectors (camera -y in world coordinates, OpenCV axes)."""
    up = -np.asarray(c2w, dtype=np.float64)[:, :3, 1].mean(0)
    n = np.linalg.norm(up)
    if n < 1e-9:  # cameras upside down in equal numbers: take the first one's up
        up = -np.asarray(c2w, dtype=np.float64)[0, :3, 1]
        n = np.linalg.norm(up)
    return up / n


def frame_rotation(up: Sequence[float], forward: Sequence[float]) -> np.ndarray:
    """(3, 3) rotation taking capture directions to Blender's: ``up`` -> +Z, ``forward`` (made horizontal) -> +Y.

    Blender's front view (numpad 1) looks along +Y, so with ``forward`` the first camera's optical axis the front
    view sees the object from where the first photo was taken.
    """
    z = np.asarray(up, dtype=np.float64)
    z = z / np.linalg.norm(z)
    f = np.asarray(forward, dtype=np.float64)
    y = f - z * (f @ z)
    if np.linalg.norm(y) < 1e-6 * max(np.linalg.norm(f), 1e-12):  # forward is vertical: any horizontal axis
        helper = np.eye(3)[int(np.argmin(np.abs(z)))]
        y = helper - z * (helper @ z)
    y = y / np.linalg.norm(y)
    x = np.cross(y, z)
    return np.stack([x, y, z])  # rows: Blender axes in capture coordinates


def capture_frame(up: Sequence[float], forward: Sequence[float], center: Sequence[float], radius: float,
                  target_radius: float | None = 1.0) -> np.ndarray:
    """``blender_from_capture`` (4 x 4 similarity) of an imported capture.

    Args:
        up: the capture's up direction (roi.json ``up``: the mean camera up).
        forward: a direction that becomes Blender's +Y once made horizontal (the first camera's optical axis).
        center: the region of interest's centre (capture coordinates); it becomes Blender's origin.
        radius: the region's radius (capture units).
        target_radius: the region's radius in Blender units (None or 0: keep the capture's scale).

    Returns:
        ``M`` with ``x_blender = M @ [x_capture, 1]``: ``M = [s R | -s R c]``.
    """
    R = frame_rotation(up, forward)
    s = float(target_radius) / float(radius) if target_radius and radius > 0 else 1.0
    M = np.eye(4)
    M[:3, :3] = s * R
    M[:3, 3] = -s * R @ np.asarray(center, dtype=np.float64)
    return M


def similarity_parts(M: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Scale, rotation (3 x 3) and translation (3,) of a similarity 4 x 4 (raises ValueError for anything else)."""
    M = np.asarray(M, dtype=np.float64).reshape(4, 4)
    A = M[:3, :3]
    s = float(np.cbrt(np.linalg.det(A)))
    if s <= 0 or not np.allclose(A.T @ A, s * s * np.eye(3), atol=1e-6 * s * s):
        raise ValueError("not a similarity with positive scale")
    return s, A / s, M[:3, 3].copy()


def transform_points(M: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(M, 3) points through the affine 4 x 4 ``M``."""
    M = np.asarray(M, dtype=np.float64)
    return np.asarray(points, dtype=np.float64) @ M[:3, :3].T + M[:3, 3]


def box_corners(box_min: Sequence[float], box_max: Sequence[float]) -> np.ndarray:
    """(8, 3) corners of an axis-aligned box."""
    lo, hi = np.asarray(box_min, dtype=np.float64), np.asarray(box_max, dtype=np.float64)
    return np.array([[(lo, hi)[i][0], (lo, hi)[j][1], (lo, hi)[k][2]] for i in (0, 1) for j in (0, 1)
                     for k in (0, 1)])


def region_box_in_frame(frame: np.ndarray, box_min: Sequence[float], box_max: Sequence[float],
                        points: np.ndarray | None = None, min_points: int = 20, pad: float = 0.05
                        ) -> tuple[np.ndarray, np.ndarray]:
    """An axis-aligned box in Blender coordinates (upright) for the capture's region of interest.

    The capture's box (``roi.json``) is axis-aligned in capture coordinates, which are tilted in Blender. Upright
    is easier to adjust, so: the sparse points inside the capture's box, seen through ``frame``, bounded by their
    0.5-99.5 percentiles per axis and padded by ``pad`` of the extent; with fewer than ``min_points`` such points,
    the box around the capture box's rotated corners.

    Returns:
        ``(box_min, box_max)`` in Blender coordinates (3,) each.
    """
    corners = transform_points(frame, box_corners(box_min, box_max))
    lo_c, hi_c = corners.min(0), corners.max(0)
    if points is not None and len(points):
        p = np.asarray(points, dtype=np.float64)
        inside = np.all((p >= np.asarray(box_min)) & (p <= np.asarray(box_max)), axis=1)
        if int(inside.sum()) >= min_points:
            q = transform_points(frame, p[inside])
            lo, hi = np.percentile(q, 0.5, axis=0), np.percentile(q, 99.5, axis=0)
            ext = np.maximum(hi - lo, 1e-3 * (hi_c - lo_c).max())
            return np.maximum(lo - pad * ext, lo_c), np.minimum(hi + pad * ext, hi_c)
    return lo_c, hi_c


# ---------------------------------------------------------------------------------------------------------------
# the region of interest for training


def roi_in_capture(capture_to_blender: np.ndarray, box_world: np.ndarray) -> np.ndarray:
    """The box's cube-to-capture matrix (what ``train --roi`` reads) from Blender matrices.

    Args:
        capture_to_blender: the frame's matrix_world (the parent empty's), capture -> Blender world.
        box_world: the box object's matrix_world (its mesh is the cube [-1, 1]^3).
    """
    return np.linalg.inv(np.asarray(capture_to_blender, dtype=np.float64)) @ np.asarray(box_world, dtype=np.float64)


def roi_file_for(job_dir: str | os.PathLike[str]) -> Path:
    """Where the client writes a job's region of interest: beside the job folder (``<job>.roi.json``), like its
    log, never inside it (only the backend writes there)."""
    job = Path(job_dir)
    return job.parent / f"{job.name}.roi.json"


def box_sphere(matrix: np.ndarray) -> tuple[np.ndarray, float]:
    """Centre (3,) and circumscribed radius of the box ``matrix`` maps the cube [-1, 1]^3 to (what ``train``
    normalizes to with ``--roi``, unless cameras are inside that sphere)."""
    corners = transform_points(matrix, box_corners([-1.0] * 3, [1.0] * 3))
    center = corners.mean(0)
    return center, float(np.linalg.norm(corners - center, axis=1).max())
