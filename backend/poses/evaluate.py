"""Compare estimated cameras with calibrated ones (tests and benchmarks; numpy only).

Poses are world-to-camera ``(R, t)`` in OpenCV axes: ``x_cam = R @ x_world + t``. An estimated reconstruction
lives in its own frame (arbitrary rotation, translation and scale), so it is first mapped onto the calibrated
frame with a similarity found from the camera centres (:func:`umeyama`), then the residual centre distances and
rotation angles are measured.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


def umeyama(src: np.ndarray, dst: np.ndarray, with_scale: bool = True) -> tuple[float, np.ndarray, np.ndarray]:
    """Least-squares similarity ``dst ~ s * R @ src + t`` (Umeyama, PAMI 1991).

    Args:
        src: (N, 3) points, N >= 3, not all on one line.
        dst: (N, 3) corresponding points.
        with_scale: estimate the scale (else s = 1, a rigid transform).

    Returns:
        s (float), R (3, 3) proper rotation, t (3,).
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 3 or len(src) < 3:
        raise ValueError(f"need two (N, 3) arrays with N >= 3, got {src.shape} and {dst.shape}")
    mu_s, mu_d = src.mean(0), dst.mean(0)
    xs, xd = src - mu_s, dst - mu_d
    cov = xd.T @ xs / len(src)
    u, sing, vt = np.linalg.svd(cov)
    fix = np.eye(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:  # a reflection would fit better: take the best rotation instead
        fix[2, 2] = -1.0
    rot = u @ fix @ vt
    var_s = (xs**2).sum() / len(src)
    scale = float(np.trace(np.diag(sing) @ fix) / var_s) if with_scale else 1.0
    t = mu_d - scale * rot @ mu_s
    return scale, rot, t


def rotation_angle_deg(rot: np.ndarray) -> np.ndarray:
    """Angle in degrees of rotation matrices (..., 3, 3)."""
    tr = np.trace(np.asarray(rot), axis1=-2, axis2=-1)
    return np.degrees(np.arccos(np.clip((tr - 1.0) / 2.0, -1.0, 1.0)))


def camera_centers(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """(N, 3) centres of world-to-camera poses R (N, 3, 3), t (N, 3): C = -R^T t."""
    return -np.einsum("nji,nj->ni", R, t)


@dataclass
class PoseErrors:
    """Errors of estimated cameras after a similarity alignment onto calibrated ones.

    Attributes:
        center_error: (N,) distance of each aligned camera centre from the calibrated one (calibrated units).
        rotation_error_deg: (N,) angle of the residual rotation of each camera.
        scale, R, t: the similarity ``x_calibrated = scale * R @ x_estimated + t``.
    """

    center_error: np.ndarray
    rotation_error_deg: np.ndarray
    scale: float
    R: np.ndarray
    t: np.ndarray

    def summary(self) -> dict[str, float]:
        """Mean/median/max of both errors, JSON-able."""
        c, r = self.center_error, self.rotation_error_deg
        return {"center_mean": float(c.mean()), "center_median": float(np.median(c)), "center_max": float(c.max()),
                "rotation_mean_deg": float(r.mean()), "rotation_median_deg": float(np.median(r)),
                "rotation_max_deg": float(r.max()), "n": len(c)}


def pose_errors(R_est: np.ndarray, t_est: np.ndarray, R_ref: np.ndarray, t_ref: np.ndarray) -> PoseErrors:
    """Align estimated cameras onto reference cameras (Umeyama on the centres) and measure the residuals.

    Args:
        R_est, t_est: (N, 3, 3), (N, 3) estimated world-to-camera poses.
        R_ref, t_ref: (N, 3, 3), (N, 3) calibrated world-to-camera poses of the same images, same order.
    """
    c_est, c_ref = camera_centers(R_est, t_est), camera_centers(R_ref, t_ref)
    s, rot, t = umeyama(c_est, c_ref)
    aligned = s * c_est @ rot.T + t
    # A world point x_ref = s R x_est + t is seen by camera i with rotation R_est_i R^T in the reference frame.
    r_aligned = R_est @ rot.T
    rel = R_ref @ np.transpose(r_aligned, (0, 2, 1))
    return PoseErrors(np.linalg.norm(aligned - c_ref, axis=1), rotation_angle_deg(rel), s, rot, t)


def rq3(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """RQ decomposition of a 3x3 matrix: ``m = K @ R`` with K upper triangular (positive diagonal), R orthonormal."""
    flip = np.eye(3)[::-1]
    # QR of the transposed, row-reversed matrix gives the RQ factors once the reversals are undone.
    q, r = np.linalg.qr((flip @ m).T)
    k = flip @ r.T @ flip
    rot = flip @ q.T
    signs = np.diag(np.sign(np.diag(k)))
    k, rot = k @ signs, signs @ rot
    return k, rot


def decompose_projection(P: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split a 3x4 projection ``P ~ K [R | t]`` into K (normalized so K[2, 2] = 1), a proper rotation R and t."""
    P = np.asarray(P, dtype=np.float64)[:3, :4]
    k, rot = rq3(P[:, :3])
    scale = k[2, 2]
    if np.linalg.det(rot) < 0:  # P is only defined up to scale: absorb a sign flip
        rot, scale = -rot, -scale
    k_n = k / k[2, 2]
    t = np.linalg.solve(k, P[:, 3]) * (k[2, 2] / scale)
    return k_n, rot, t


def read_middlebury_par(path: str | Path) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Middlebury ``*_par.txt``: name -> (K, R, t), world-to-camera, OpenCV axes (P = K [R | t])."""
    out: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    for line in Path(path).read_text().splitlines():
        parts = line.split()
        if len(parts) != 22:  # the first line holds only the number of images
            continue
        v = np.array([float(x) for x in parts[1:]])
        out[parts[0]] = (v[:9].reshape(3, 3), v[9:18].reshape(3, 3), v[18:21])
    return out


def read_neus_cameras(npz_path: str | Path, names: list[str]) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """NeuS/IDR ``cameras_sphere.npz``: image name (in sorted order, i-th name <-> ``world_mat_i``) -> (K, R, t)."""
    with np.load(npz_path, allow_pickle=False) as z:
        return {name: decompose_projection(z[f"world_mat_{i}"]) for i, name in enumerate(sorted(names))}


def compare_with_calibration(names: list[str], R: np.ndarray, t: np.ndarray,
                             calibrated: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]
                             ) -> tuple[list[str], PoseErrors]:
    """Errors of the estimated poses (R (N, 3, 3), t (N, 3), one per name) of the images that have a calibration.

    Returns the names compared (in order) and their :class:`PoseErrors`.
    """
    idx = [i for i, n in enumerate(names) if n in calibrated]
    if len(idx) < 3:
        raise ValueError(f"only {len(idx)} estimated images have a calibration")
    common = [names[i] for i in idx]
    R_ref = np.stack([calibrated[n][1] for n in common])
    t_ref = np.stack([calibrated[n][2] for n in common])
    return common, pose_errors(np.asarray(R)[idx], np.asarray(t)[idx], R_ref, t_ref)
