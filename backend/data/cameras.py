"""Camera conventions shared by the loaders and writers (numpy only).

Internally a camera is ``K`` (3, 3) with OpenCV pixel centres (top-left pixel centre at (0, 0)) and ``c2w``
(4, 4) camera-to-world with OpenCV axes (x right, y down, z forward). A projection matrix is ``P = K [R | t]``
with ``[R | t]`` world-to-camera. The conventions the capture files are written in, :func:`projection_matrix` and
:func:`opengl_to_opencv`, are the seam's (:mod:`backend.capture_files`) and imported from there.
"""

from __future__ import annotations

import numpy as np

from ..capture_files import opengl_to_opencv as opengl_to_opencv
from ..capture_files import projection_matrix as projection_matrix


def rq3(M: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """RQ decomposition of a 3x3 matrix: ``M = U @ Q`` with U upper triangular, Q orthogonal.

    Uses numpy's QR on the row-reversed transpose: with J the exchange matrix, ``(J M)^T = Q' R'`` gives
    ``M = (J R'^T J) (J Q'^T)`` where ``J R'^T J`` is upper triangular. Signs are not normalized here.
    """
    J = np.eye(3)[::-1]
    q, r = np.linalg.qr((J @ M).T)
    return J @ r.T @ J, J @ q.T


def decompose_projection(P: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split ``P = s K [R | t]`` (any non-zero scale s, also negative) into intrinsics and pose.

    Args:
        P: (3, 4) or (4, 4) projection matrix (a 4x4 one uses its first three rows).

    Returns:
        K: (3, 3) upper triangular with positive diagonal and ``K[2, 2] = 1``.
        c2w: (4, 4) camera-to-world with ``det(R) = +1`` (OpenCV axes).
    """
    P = np.asarray(P, dtype=np.float64)[:3, :4]
    M = P[:, :3]
    det = np.linalg.det(M)
    if not np.isfinite(det) or abs(det) < 1e-300:
        raise ValueError("projection matrix has a singular 3x3 part")
    if det < 0:  # the overall scale is free: choose the sign that makes R a rotation
        P = -P
        M = -M
    K, R = rq3(M)
    D = np.diag(np.sign(np.diag(K)))
    K = K @ D
    R = D @ R  # D @ D = I, and det(D) = +1 here because det(K) > 0 and det(R) = det(M)/det(K) > 0
    t = np.linalg.solve(K, P[:, 3])
    K = K / K[2, 2]
    c2w = np.eye(4)
    c2w[:3, :3] = R.T
    c2w[:3, 3] = -R.T @ t
    return K, c2w


def c2w_from_w2c(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """(4, 4) camera-to-world from world-to-camera rotation (3, 3) and translation (3,)."""
    R = np.asarray(R, dtype=np.float64).reshape(3, 3)
    t = np.asarray(t, dtype=np.float64).reshape(3)
    c2w = np.eye(4)
    c2w[:3, :3] = R.T
    c2w[:3, 3] = -R.T @ t
    return c2w


def orthonormalize(R: np.ndarray) -> np.ndarray:
    """The rotation nearest to a (3, 3) matrix (SVD), with det +1."""
    u, _, vt = np.linalg.svd(R)
    d = np.sign(np.linalg.det(u @ vt))
    return u @ np.diag([1.0, 1.0, d]) @ vt


def intrinsics(fx: float, fy: float, cx: float, cy: float, skew: float = 0.0) -> np.ndarray:
    """(3, 3) pinhole intrinsics."""
    return np.array([[fx, skew, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


def scale_intrinsics(K: np.ndarray, sx: float, sy: float) -> np.ndarray:
    """Intrinsics of an image resized by (sx, sy) = (new_w / w, new_h / h), OpenCV pixel centres.

    A pixel centre at x maps to (x + 0.5) * sx - 0.5, so ``K' = A @ K`` with
    ``A = [[sx, 0, 0.5 sx - 0.5], [0, sy, 0.5 sy - 0.5], [0, 0, 1]]``.

    Args:
        K: (3, 3) or (N, 3, 3).
    """
    A = np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5], [0.0, 0.0, 1.0]])
    return A @ np.asarray(K, dtype=np.float64)
