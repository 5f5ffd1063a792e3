"""Camera layouts and Blender <-> OpenCV camera conventions for synthetic captures (numpy only, no bpy).

Conventions:

- Blender world: right-handed, +Z up. A Blender camera looks down its local -Z with +Y up (OpenGL axes);
  :func:`look_at_blender` builds such camera-to-world matrices.
- The backend wants OpenCV axes (x right, y down, z forward): ``c2w_cv = c2w_blender @ diag(1, -1, -1, 1)``
  (:func:`opencv_from_blender`, its own inverse).
- Pixels: the backend puts the centre of the top-left pixel at (0, 0). Blender's image plane spans [0, W] x [0, H]
  with pixel centres at half-integers, so an unshifted camera has ``cx = W / 2 - 0.5``, ``cy = H / 2 - 0.5``.
- Intrinsics follow Blender's own view-plane computation: the sensor size applies to the image side chosen by the
  sensor fit (``AUTO``: the longer side, using ``sensor_width``), and ``shift_x`` / ``shift_y`` are fractions of
  that same side (positive shift moves the view right / up, so the principal point moves left / down).
"""

from __future__ import annotations

import math

import numpy as np

#: OpenCV <-> OpenGL/Blender camera axes (y and z flipped); its own inverse.
FLIP_YZ = np.diag([1.0, -1.0, -1.0, 1.0])

#: Camera layouts and their default number of views.
LAYOUTS: dict[str, int] = {"ring": 24, "sphere": 48, "dtu": 49}

GOLDEN_ANGLE = math.pi * (3.0 - math.sqrt(5.0))


# ---------------------------------------------------------------------------------------------------------------
# layouts: unit directions from the object's centre towards the cameras


def ring_directions(n: int, elevation_deg: float = 30.0) -> np.ndarray:
    """(n, 3) unit directions on a horizontal ring at ``elevation_deg`` above the XY plane, evenly spaced."""
    az = 2.0 * math.pi * np.arange(n) / n - 0.5 * math.pi  # the first camera on -Y (Blender's front view)
    el = math.radians(elevation_deg)
    return np.stack([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.full(n, math.sin(el))], axis=1)


def fibonacci_directions(n: int, max_polar_deg: float = 180.0) -> np.ndarray:
    """(n, 3) unit directions spread evenly (equal area) over a cap around +Z (the whole sphere at 180 degrees).

    Point i sits at height ``z_i = 1 - (1 - cos(max_polar)) (i + 0.5) / n`` and azimuth ``i`` times the golden
    angle: each point owns the same area of the cap, so the density is uniform.
    """
    i = np.arange(n, dtype=np.float64)
    z = 1.0 - (1.0 - math.cos(math.radians(max_polar_deg))) * (i + 0.5) / n
    r = np.sqrt(np.clip(1.0 - z * z, 0.0, None))
    az = i * GOLDEN_ANGLE - 0.5 * math.pi
    return np.stack([r * np.cos(az), r * np.sin(az), z], axis=1)


def layout_directions(layout: str, n: int | None = None, *, elevation_deg: float = 30.0,
                      cap_deg: float = 65.0) -> np.ndarray:
    """(n, 3) unit directions from the object's centre to the cameras of a named layout.

    Args:
        layout: ``ring`` (one ring at ``elevation_deg``), ``sphere`` (Fibonacci over the whole sphere) or ``dtu``
            (like the DTU rig: views spread evenly over a cap of ``cap_deg`` half-angle above the object; 49 by
            default, as in DTU).
        n: number of views (default: :data:`LAYOUTS`).
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; use one of {', '.join(LAYOUTS)}")
    n = LAYOUTS[layout] if n is None else int(n)
    if n < 1:
        raise ValueError("a capture needs at least one view")
    if layout == "ring":
        return ring_directions(n, elevation_deg)
    if layout == "sphere":
        return fibonacci_directions(n)
    return fibonacci_directions(n, cap_deg)


# ---------------------------------------------------------------------------------------------------------------
# poses


def look_at_blender(eye: np.ndarray, target: np.ndarray, up: np.ndarray | None = None) -> np.ndarray:
    """(4, 4) Blender camera-to-world (camera looks down its -Z, +Y up) at ``eye`` looking at ``target``.

    ``up`` defaults to world +Z; when the view direction is (nearly) parallel to it, world +Y is used instead.
    """
    eye = np.asarray(eye, dtype=np.float64)
    forward = np.asarray(target, dtype=np.float64) - eye
    forward /= np.linalg.norm(forward)
    up_v = np.array([0.0, 0.0, 1.0]) if up is None else np.asarray(up, dtype=np.float64)
    if abs(float(forward @ up_v)) > 0.999 * np.linalg.norm(up_v):
        up_v = np.array([0.0, 1.0, 0.0])
    right = np.cross(forward, up_v)
    right /= np.linalg.norm(right)
    cam_up = np.cross(right, forward)
    c2w = np.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = right, cam_up, -forward, eye
    return c2w


def opencv_from_blender(c2w: np.ndarray) -> np.ndarray:
    """(..., 4, 4) Blender/OpenGL camera-to-world -> OpenCV camera-to-world (and back: its own inverse)."""
    return np.asarray(c2w, dtype=np.float64) @ FLIP_YZ


def layout_poses(directions: np.ndarray, center: np.ndarray, distance: float) -> np.ndarray:
    """(N, 4, 4) Blender camera-to-world of cameras at ``center + distance * direction`` looking at ``center``."""
    center = np.asarray(center, dtype=np.float64)
    return np.stack([look_at_blender(center + distance * d, center) for d in np.asarray(directions, np.float64)])


# ---------------------------------------------------------------------------------------------------------------
# intrinsics


def sensor_fit_side(sensor_fit: str, width: int, height: int, pixel_aspect: float = 1.0) -> str:
    """Which image side the sensor size applies to: ``HORIZONTAL`` or ``VERTICAL``."""
    if sensor_fit == "AUTO":
        return "HORIZONTAL" if width * pixel_aspect >= height else "VERTICAL"
    if sensor_fit not in ("HORIZONTAL", "VERTICAL"):
        raise ValueError(f"unknown sensor fit {sensor_fit!r}")
    return sensor_fit


def intrinsics_from_blender(lens_mm: float, sensor_width_mm: float, sensor_height_mm: float, sensor_fit: str,
                            width: int, height: int, shift_x: float = 0.0, shift_y: float = 0.0) -> np.ndarray:
    """(3, 3) OpenCV K of a Blender perspective camera rendered at ``width`` x ``height`` (square pixels).

    ``AUTO`` fit uses ``sensor_width_mm`` for the longer side; ``VERTICAL`` uses ``sensor_height_mm`` for the
    height. The principal point is in the backend's convention (top-left pixel centre at (0, 0)).
    """
    side = sensor_fit_side(sensor_fit, width, height)
    sensor = sensor_height_mm if (sensor_fit == "VERTICAL") else sensor_width_mm
    span = float(width if side == "HORIZONTAL" else height)  # pixels the sensor size covers
    f = lens_mm / sensor * span
    cx = width / 2.0 - 0.5 - shift_x * span
    cy = height / 2.0 - 0.5 + shift_y * span
    return np.array([[f, 0.0, cx], [0.0, f, cy], [0.0, 0.0, 1.0]])


def blender_from_intrinsics(K: np.ndarray, width: int, height: int, sensor_width_mm: float = 36.0
                            ) -> dict[str, float | str]:
    """Blender camera settings (``lens``, ``sensor_width``, ``sensor_fit``, ``shift_x``, ``shift_y``) for a K.

    The inverse of :func:`intrinsics_from_blender` with ``AUTO`` fit; K must have square pixels and no skew.
    """
    K = np.asarray(K, dtype=np.float64)
    span = float(max(width, height))
    return {"lens": float(K[0, 0] / span * sensor_width_mm), "sensor_width": float(sensor_width_mm),
            "sensor_fit": "AUTO", "shift_x": float((width / 2.0 - 0.5 - K[0, 2]) / span),
            "shift_y": float((K[1, 2] - height / 2.0 + 0.5) / span)}


def fit_distance(radius: float, K: np.ndarray, width: int, height: int, margin: float = 1.05) -> float:
    """Camera distance at which a sphere of ``radius`` (times ``margin``) fits inside the image of an unshifted K.

    The sphere's silhouette is a cone of half-angle ``asin(r / d)``; it must fit in the narrower half field of
    view: ``d = margin * r / sin(half_fov)``.
    """
    half_fov = min(math.atan(width / 2.0 / K[0, 0]), math.atan(height / 2.0 / K[1, 1]))
    return float(margin * radius / math.sin(half_fov))


def project_points(K: np.ndarray, c2w_cv: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Project (P, 3) world points with (3, 3) K and (4, 4) OpenCV camera-to-world: (P, 2) pixels, (P,) depth."""
    w2c = np.linalg.inv(np.asarray(c2w_cv, dtype=np.float64))
    pc = np.asarray(points, dtype=np.float64) @ w2c[:3, :3].T + w2c[:3, 3]
    z = pc[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        uv = (pc @ np.asarray(K, dtype=np.float64).T)[:, :2] / z[:, None]
    return uv, z
