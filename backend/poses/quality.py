"""How good is a reconstruction: region of interest, statistics and cameras that look wrong (numpy only).

Everything here works on :class:`ModelArrays`, plain arrays taken from a ``pycolmap.Reconstruction`` by
:func:`model_arrays` (duck-typed: this module never imports pycolmap), so it is cheap to test on synthetic
cameras. Poses are world-to-camera ``(R, t)``, OpenCV axes; pixels follow COLMAP (the centre of the top-left
pixel is at (0.5, 0.5)), which only matters here for "is it inside the image".
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..region import object_region

#: Points of the region of interest are subsampled to at most this many (visibility costs points x cameras).


@dataclass
class ModelArrays:
    """A reconstruction as arrays: N registered images, P points.

    Attributes:
        names: N image names.
        R: (N, 3, 3) world-to-camera rotations.
        t: (N, 3) world-to-camera translations.
        K: (N, 3, 3) pinhole part of each camera (COLMAP pixel convention; distortion ignored).
        sizes: (N, 2) image (width, height).
        camera_ids: (N,) COLMAP camera id of each image.
        points: (P, 3) sparse points.
        colors: (P, 3) uint8.
        errors: (P,) mean reprojection error of each point in pixels.
        track_lengths: (P,) number of images that observe each point.
        image_num_points: (N,) number of points each image observes.
        image_errors: (N,) mean reprojection error of each image's observations in pixels (NaN without any).
    """

    names: list[str]
    R: np.ndarray
    t: np.ndarray
    K: np.ndarray
    sizes: np.ndarray
    camera_ids: np.ndarray
    points: np.ndarray
    colors: np.ndarray
    errors: np.ndarray
    track_lengths: np.ndarray
    image_num_points: np.ndarray
    image_errors: np.ndarray

    @property
    def centers(self) -> np.ndarray:
        """(N, 3) camera centres in world coordinates."""
        return -np.einsum("nji,nj->ni", self.R, self.t)

    @property
    def axes(self) -> np.ndarray:
        """(N, 3) unit optical axes (camera +z) in world coordinates."""
        return self.R[:, 2, :].copy()

    @property
    def ups(self) -> np.ndarray:
        """(N, 3) camera up vectors (camera -y) in world coordinates."""
        return -self.R[:, 1, :]


def model_arrays(reconstruction: Any) -> ModelArrays:
    """Arrays of the registered images and the points of a ``pycolmap.Reconstruction``."""
    rec = reconstruction
    image_ids = sorted(rec.reg_image_ids())
    point_ids = sorted(rec.point3D_ids())
    index_of_point = {pid: i for i, pid in enumerate(point_ids)}
    pts = [rec.points3D[pid] for pid in point_ids]
    points = np.array([p.xyz for p in pts], dtype=np.float64).reshape(-1, 3)
    n = len(image_ids)
    R, t, K = np.zeros((n, 3, 3)), np.zeros((n, 3)), np.zeros((n, 3, 3))
    sizes, cam_ids = np.zeros((n, 2), dtype=np.int64), np.zeros(n, dtype=np.int64)
    n_obs, img_err = np.zeros(n, dtype=np.int64), np.full(n, np.nan)
    names = []
    for i, iid in enumerate(image_ids):
        image = rec.images[iid]
        cam = rec.cameras[image.camera_id]
        pose = np.asarray(image.cam_from_world().matrix())
        R[i], t[i] = pose[:, :3], pose[:, 3]
        K[i] = cam.calibration_matrix()
        sizes[i] = (cam.width, cam.height)
        cam_ids[i] = image.camera_id
        names.append(image.name)
        obs = [(p2.xy, index_of_point[p2.point3D_id]) for p2 in image.points2D
               if p2.has_point3D() and p2.point3D_id in index_of_point]
        n_obs[i] = len(obs)
        if obs:
            xy = np.array([o[0] for o in obs], dtype=np.float64)
            x_cam = points[[o[1] for o in obs]] @ R[i].T + t[i]
            uv = np.asarray(cam.img_from_cam(x_cam), dtype=np.float64).reshape(-1, 2)
            img_err[i] = float(np.nanmean(np.linalg.norm(uv - xy, axis=1)))
    return ModelArrays(
        names=names, R=R, t=t, K=K, sizes=sizes, camera_ids=cam_ids, points=points,
        colors=np.array([p.color for p in pts], dtype=np.uint8).reshape(-1, 3),
        errors=np.array([p.error for p in pts], dtype=np.float64),
        track_lengths=np.array([p.track.length() for p in pts], dtype=np.int64),
        image_num_points=n_obs, image_errors=img_err,
    )


# ------------------------------------------------------------------------------------------------ geometry


def mean_up(m: ModelArrays) -> np.ndarray:
    """Normalized mean of the cameras' up vectors (camera -y in world coordinates)."""
    up = m.ups.sum(0)
    norm = np.linalg.norm(up)
    return up / norm if norm > 1e-12 else np.array([0.0, 0.0, 1.0])


def _well_triangulated(m: ModelArrays, min_points: int) -> tuple[np.ndarray, dict[str, Any]]:
    """Sparse points worth locating the object with: seen by several cameras with a low reprojection error (relaxed
    when that leaves too few)."""
    pts, err, tl = m.points, m.errors, m.track_lengths
    info: dict[str, Any] = {"n_points_total": len(pts)}
    ok = np.isfinite(pts).all(1)
    med_err = float(np.median(err[ok])) if ok.any() else 0.0
    for min_track, max_err in ((3, max(1.0, 2.0 * med_err)), (2, max(2.0, 3.0 * med_err)), (2, np.inf)):
        good = ok & (tl >= min_track) & (err <= max_err)
        if good.sum() >= min_points:
            break
    info.update(min_track_length=int(min_track), max_error_px=float(max_err) if np.isfinite(max_err) else None)
    return pts[good], info


def model_c2w(m: ModelArrays) -> np.ndarray:
    """(N, 4, 4) camera-to-world (OpenCV axes) of the registered images."""
    c2w = np.tile(np.eye(4), (len(m.names), 1, 1))
    c2w[:, :3, :3] = np.transpose(m.R, (0, 2, 1))
    c2w[:, :3, 3] = m.centers
    return c2w


def region_of_interest(model: Any, min_points: int = 20) -> dict[str, Any]:
    """Bounding sphere and box of the object the cameras look at, in the reconstruction's coordinates: what the
    optical axes converge on and the sparse points every photo frames around it (:func:`backend.region.
    object_region`, the same region training finds by itself), not the walls and floor farther away.

    Args:
        model: a ``pycolmap.Reconstruction`` or :class:`ModelArrays`.
        min_points: fewest well-triangulated sparse points to size the region from; with fewer, a ball of the
            radius the photos frame around the point the optical axes meet.

    Returns:
        ``{"center": [x, y, z], "radius": r, "box_min": [...], "box_max": [...], "up": [...],
        "n_points": used, "source": "points" | "cameras" | "all_points", "converged": bool,
        "cameras_inside": k, "filter": {...}}`` where ``up`` is the normalized mean camera up vector (camera -y),
        ``converged`` False means the cameras look the same way (the region is then the points' bulk and may hold
        walls: the user should draw the box) and ``cameras_inside`` counts cameras inside the sphere.
    """
    m = model if isinstance(model, ModelArrays) else model_arrays(model)
    if len(m.names) == 0:
        raise ValueError("no registered images")
    pts, info = _well_triangulated(m, min_points)
    centers = m.centers
    r = object_region(model_c2w(m), m.K, m.sizes, pts)
    if r["source"] == "none":  # no focus and too few points: around the cameras' centroid
        center = centers.mean(0)
        radius = 0.5 * float(np.median(np.linalg.norm(centers - center, axis=1))) if len(centers) > 1 else 1.0
        box = np.stack([center - radius / math.sqrt(3.0), center + radius / math.sqrt(3.0)])
        r.update(center=center, radius=radius, box=box, source="cameras")
    center = np.asarray(r["center"], dtype=np.float64)
    radius = float(r["radius"]) if r["radius"] and r["radius"] > 0 else 1.0
    info.update(n_points_near=r["n_points_near"], frame_radius=r["frame_radius"], focus=r["focus"])
    cam_dist = np.linalg.norm(centers - center, axis=1)
    return {
        "center": center.tolist(), "radius": radius, "box_min": np.asarray(r["box"][0]).tolist(),
        "box_max": np.asarray(r["box"][1]).tolist(), "up": mean_up(m).tolist(), "n_points": int(r["n_points"]),
        "source": r["source"], "converged": bool(r["converged"]), "cameras_inside": int((cam_dist < radius).sum()),
        "filter": info,
    }


# ------------------------------------------------------------------------------------------------ checks


def suspicious_cameras(m: ModelArrays, roi: dict[str, Any], miss_factor: float = 3.0,
                       error_factor: float = 3.0) -> list[dict[str, Any]]:
    """Cameras whose pose looks wrong, each ``{"name", "code", "reason", "value"}``.

    Checks:
        ``looks_away``: the common region lies behind the camera.
        ``axis_misses_region``: the optical axis passes the region's centre farther than one radius and farther
            than ``miss_factor`` times the typical camera does (relative, so wide scenes are not all flagged).
        ``region_outside_image``: the region's centre projects outside the image.
        ``high_reprojection_error``: the image's mean error is above 1 px and ``error_factor`` times the median.
        ``few_points``: the image observes very few points (weakly attached, easily misplaced).
    """
    out: list[dict[str, Any]] = []
    if not len(m.names):
        return out
    c = np.asarray(roi["center"], dtype=np.float64)
    r = max(float(roi["radius"]), 1e-12)
    v = c[None] - m.centers
    axes = m.axes
    depth = (v * axes).sum(1)
    miss = np.linalg.norm(v - depth[:, None] * axes, axis=1) / r
    typical_miss = float(np.median(miss[depth > 0])) if (depth > 0).any() else 0.0
    pc = np.einsum("nij,nj->ni", m.R, np.broadcast_to(c, m.t.shape)) + m.t
    with np.errstate(divide="ignore", invalid="ignore"):
        uv = np.einsum("nij,nj->ni", m.K[:, :2, :2], pc[:, :2] / pc[:, 2:3]) + m.K[:, :2, 2]
    errs = m.image_errors
    med_err = float(np.nanmedian(errs)) if np.isfinite(errs).any() else 0.0
    med_obs = float(np.median(m.image_num_points))
    for i, name in enumerate(m.names):
        w, h = m.sizes[i]
        if depth[i] <= 0:
            out.append({"name": name, "code": "looks_away", "value": float(depth[i] / r),
                        "reason": "the region the other cameras look at is behind this camera"})
            continue
        if miss[i] > max(1.0, miss_factor * typical_miss):
            out.append({"name": name, "code": "axis_misses_region", "value": float(miss[i]),
                        "reason": f"its optical axis passes {miss[i]:.1f} radii from the centre of the common "
                                  f"region (typical camera: {typical_miss:.2f})"})
        elif not (0 <= uv[i, 0] <= w and 0 <= uv[i, 1] <= h):
            out.append({"name": name, "code": "region_outside_image", "value": float(miss[i]),
                        "reason": "the centre of the common region is outside this image"})
        if np.isfinite(errs[i]) and errs[i] > max(1.0, error_factor * med_err):
            out.append({"name": name, "code": "high_reprojection_error", "value": float(errs[i]),
                        "reason": f"mean reprojection error {errs[i]:.2f} px (median image: {med_err:.2f} px)"})
        if m.image_num_points[i] < max(15.0, 0.1 * med_obs):
            out.append({"name": name, "code": "few_points", "value": int(m.image_num_points[i]),
                        "reason": f"observes only {int(m.image_num_points[i])} points (median image: "
                                  f"{med_obs:.0f}); its pose rests on little evidence"})
    return out


def model_statistics(m: ModelArrays) -> dict[str, Any]:
    """Registered count, points, mean track length and mean reprojection error over all observations."""
    obs = float(m.track_lengths.sum())
    return {
        "registered": len(m.names),
        "num_points": int(len(m.points)),
        "num_observations": int(obs),
        "mean_track_length": float(m.track_lengths.mean()) if len(m.points) else 0.0,
        "mean_reprojection_error_px": float((m.errors * m.track_lengths).sum() / obs) if obs else None,
        "mean_points_per_image": float(m.image_num_points.mean()) if len(m.names) else 0.0,
    }


def subset_images(m: ModelArrays, keep: np.ndarray) -> ModelArrays:
    """The same model with only the images where ``keep`` (N,) bool is true; the points stay as they are."""
    keep = np.asarray(keep, dtype=bool)
    return ModelArrays(
        names=[n for n, k in zip(m.names, keep, strict=True) if k], R=m.R[keep], t=m.t[keep], K=m.K[keep],
        sizes=m.sizes[keep], camera_ids=m.camera_ids[keep], points=m.points, colors=m.colors, errors=m.errors,
        track_lengths=m.track_lengths, image_num_points=m.image_num_points[keep], image_errors=m.image_errors[keep],
    )


def implausible_cameras(m: ModelArrays, codes: tuple[str, ...], rounds: int = 3) -> list[str]:
    """Names of cameras whose pose does not fit the others, by the checks ``codes``.

    ``codes`` are those of :func:`suspicious_cameras`, plus ``inside_region`` (the camera sits inside the region
    the others look at: impossible for photos of an object). Misplaced cameras pull the region of interest towards
    themselves, which can hide each other; so the check is repeated (up to ``rounds`` times) on the cameras left,
    with the region found again without the ones already flagged. When more than half of the cameras are flagged,
    the model as a whole does not hold together and every camera is returned.
    """
    keep = np.ones(len(m.names), dtype=bool)
    flagged: list[str] = []
    for _ in range(rounds):
        sub = subset_images(m, keep)
        roi = region_of_interest(sub)
        found = {s["name"] for s in suspicious_cameras(sub, roi) if s["code"] in codes}
        if "inside_region" in codes:
            dist = np.linalg.norm(sub.centers - np.asarray(roi["center"]), axis=1)
            found |= {n for n, d in zip(sub.names, dist, strict=True) if d < roi["radius"]}
        if not found:
            break
        flagged += sorted(found)
        keep &= np.array([n not in found for n in m.names])
        if 2 * len(flagged) > len(m.names) or keep.sum() < 3:
            return sorted(m.names)
    return sorted(flagged)
