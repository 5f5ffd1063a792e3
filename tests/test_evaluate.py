"""Evaluation metrics on cases with known answers, mesh readers, and the ``eval`` command's protocol."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from backend import protocol
from backend.evaluate import (
    bounding_radius,
    mesh_metrics,
    psnr,
    read_mesh,
    sample_surface,
    ssim,
    triangulate,
)
from backend.meshing import signed_volume, write_ply

ROOT = Path(__file__).resolve().parents[1]


def icosphere(subdivisions: int = 4, radius: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """(V, 3) vertices on a sphere and (F, 3) outward-facing triangles (a subdivided icosahedron)."""
    t = (1 + 5**0.5) / 2
    verts = [(-1, t, 0), (1, t, 0), (-1, -t, 0), (1, -t, 0), (0, -1, t), (0, 1, t), (0, -1, -t), (0, 1, -t),
             (t, 0, -1), (t, 0, 1), (-t, 0, -1), (-t, 0, 1)]
    faces = [(0, 11, 5), (0, 5, 1), (0, 1, 7), (0, 7, 10), (0, 10, 11), (1, 5, 9), (5, 11, 4), (11, 10, 2),
             (10, 7, 6), (7, 1, 8), (3, 9, 4), (3, 4, 2), (3, 2, 6), (3, 6, 8), (3, 8, 9), (4, 9, 5), (2, 4, 11),
             (6, 2, 10), (8, 6, 7), (9, 8, 1)]
    v = [np.array(p, dtype=np.float64) / np.linalg.norm(p) for p in verts]
    f = faces
    def mid(cache: dict[tuple[int, int], int], a: int, b: int) -> int:
        key = (min(a, b), max(a, b))
        if key not in cache:
            m = v[a] + v[b]
            v.append(m / np.linalg.norm(m))
            cache[key] = len(v) - 1
        return cache[key]

    for _ in range(subdivisions):
        cache: dict[tuple[int, int], int] = {}
        new = []
        for a, b, c in f:
            ab, bc, ca = mid(cache, a, b), mid(cache, b, c), mid(cache, c, a)
            new += [(a, ab, ca), (b, bc, ab), (c, ca, bc), (ab, bc, ca)]
        f = new
    return np.array(v) * radius, np.array(f, dtype=np.int64)


@pytest.fixture(scope="module")
def sphere() -> tuple[np.ndarray, np.ndarray]:
    v, f = icosphere(5)
    assert signed_volume(v, f) > 0  # outward-facing
    return v, f


# ---------------------------------------------------------------------------------------------------------------
# mesh metrics


def test_sampling_is_uniform_by_area() -> None:
    # two squares side by side, one four times the area of the other
    v = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0], [1, 0, 0], [3, 0, 0], [3, 2, 0], [1, 2, 0]], float)
    f = np.array([[0, 1, 2], [0, 2, 3], [4, 5, 6], [4, 6, 7]])
    pts, normals = sample_surface(v, f, 50_000, np.random.default_rng(0))
    assert abs(float(np.mean(pts[:, 0] < 1)) - 0.2) < 0.01
    assert np.allclose(normals, [0, 0, 1])
    inside_small = pts[pts[:, 0] < 1]
    assert inside_small[:, 1].max() <= 1 + 1e-12 and np.all(pts[:, 2] == 0)


def test_mesh_against_itself(sphere: tuple[np.ndarray, np.ndarray]) -> None:
    v, f = sphere
    m = mesh_metrics(v, f, v, f, n_points=50_000)
    # only sampling separates the two point sets: about half the mean spacing sqrt(4 pi / 50000) = 0.016
    assert m["chamfer"] < 0.01 and m["chamfer_rel"] < 0.01
    assert m["fscore"] == 1.0 and m["precision"] == 1.0 and m["recall"] == 1.0
    assert m["normal_consistency"] > 0.99 and m["normal_consistency_signed"] > 0.99
    assert m["gt_radius"] == pytest.approx(bounding_radius(v))
    assert m["threshold"] == pytest.approx(0.01 * 2 * m["gt_radius"])


def test_concentric_spheres_chamfer_is_the_gap(sphere: tuple[np.ndarray, np.ndarray]) -> None:
    """Spheres of radius 1 and 1.2: every point of one is exactly 0.2 from the other, both ways."""
    v, f = sphere
    d = 0.2
    m = mesh_metrics(v * (1 + d), f, v, f, n_points=50_000)
    # the nearest *sample* is a little further than the surface: sqrt(d^2 + s^2) with s ~ 0.005 here
    assert m["accuracy"] == pytest.approx(d, rel=0.01)
    assert m["completeness"] == pytest.approx(d, rel=0.01)
    assert m["chamfer"] == pytest.approx(d, rel=0.01)
    assert m["chamfer_rel"] == pytest.approx(d / bounding_radius(v), rel=0.01)
    assert m["fscore"] == 0.0  # 0.2 is far beyond 1 % of the diagonal (0.035)
    m2 = mesh_metrics(v * (1 + d), f, v, f, n_points=20_000, threshold=0.25)
    assert m2["fscore"] == 1.0
    assert m["normal_consistency"] > 0.99  # radial normals at nearest neighbours


def test_shifted_plane_chamfer_is_the_shift() -> None:
    """A large square against a copy lifted by d along its normal: Chamfer d (edges are aligned)."""
    v = np.array([[0, 0, 0], [10, 0, 0], [10, 10, 0], [0, 10, 0]], float)
    f = np.array([[0, 1, 2], [0, 2, 3]])
    d = 0.3
    m = mesh_metrics(v + [0, 0, d], f, v, f, n_points=100_000)
    assert m["chamfer"] == pytest.approx(d, rel=0.01)


def test_accuracy_and_completeness_directions(sphere: tuple[np.ndarray, np.ndarray]) -> None:
    """A prediction that is only the upper half of the reference is accurate but half complete."""
    v, f = sphere
    upper = f[(v[f][:, :, 2] > 0).all(1)]
    m = mesh_metrics(v, upper, v, f, n_points=50_000)
    assert m["accuracy"] < 0.01 and m["precision"] == pytest.approx(1.0, abs=1e-3)
    assert m["completeness"] > 0.2 and m["recall"] == pytest.approx(0.5, abs=0.03)
    assert 0.6 < m["fscore"] < 0.7  # 2 * 1 * 0.5 / 1.5


def test_normal_consistency_of_a_flipped_mesh(sphere: tuple[np.ndarray, np.ndarray]) -> None:
    v, f = sphere
    m = mesh_metrics(v, f[:, ::-1], v, f, n_points=20_000)
    assert m["normal_consistency"] > 0.99  # orientation-blind
    assert m["normal_consistency_signed"] < -0.99  # the flipped faces point inward
    assert m["chamfer"] < 0.02


# ---------------------------------------------------------------------------------------------------------------
# image metrics


def test_psnr_hand_computed() -> None:
    gt = np.random.default_rng(0).random((20, 30, 3)) * 0.8
    assert psnr(gt + 0.1, gt) == pytest.approx(20.0)  # MSE 0.01
    assert psnr(gt, gt) == math.inf
    pred = gt.copy()
    pred[:10] += 0.5
    mask = np.zeros((20, 30), bool)
    mask[10:] = True
    assert psnr(pred, gt, mask=mask) == math.inf
    assert psnr(pred, gt) == pytest.approx(-10 * math.log10(0.5 * 0.25))
    assert psnr(gt * 255 + 10, gt * 255, data_range=255) == pytest.approx(20 * math.log10(255 / 10))


def test_ssim_known_values() -> None:
    rng = np.random.default_rng(0)
    img = rng.random((64, 48, 3))
    assert ssim(img, img) == pytest.approx(1.0, abs=1e-12)
    noisy = np.clip(img + rng.normal(0, 0.1, img.shape), 0, 1)
    assert 0.0 < ssim(img, noisy) < 0.95
    assert ssim(img, noisy) == pytest.approx(ssim(noisy, img))
    # constant images: no variance, so SSIM is the luminance term (2ab + C1) / (a^2 + b^2 + C1)
    a, b, c1 = 0.5, 0.6, 0.01**2
    assert ssim(np.full((20, 20), a), np.full((20, 20), b)) == pytest.approx((2 * a * b + c1) / (a * a + b * b + c1))
    # a constant offset on a textured image changes only the luminance term, which is near 1 for small offsets
    assert ssim(img, img + 0.01) > 0.99
    # the structure term: a negated image correlates negatively
    assert ssim(img, 1 - img) < 0
    with pytest.raises(ValueError):
        ssim(np.zeros((8, 8)), np.zeros((8, 8)))


# ---------------------------------------------------------------------------------------------------------------
# mesh files


def test_read_obj_quads_negative_indices_and_ply_npz(tmp_path: Path, sphere: tuple[np.ndarray, np.ndarray]) -> None:
    obj = tmp_path / "quad.obj"
    obj.write_text("# a quad and a triangle with relative indices\nv 0 0 0\nv 1 0 0\nv 1 1 0\nv 0 1 0\n"
                   "vn 0 0 1\nf 1//1 2//1 3//1 4//1\nv 2 0 0\nf -1 -4 -3\n")
    mesh = read_mesh(obj, polygons=True)
    assert mesh["vertices"].shape == (5, 3)
    assert mesh["polygons"] == [[0, 1, 2, 3], [4, 1, 2]]
    assert mesh["faces"].tolist() == [[0, 1, 2], [0, 2, 3], [4, 1, 2]]
    assert triangulate([[0, 1, 2, 3, 4]]).tolist() == [[0, 1, 2], [0, 2, 3], [0, 3, 4]]
    v, f = sphere
    write_ply(str(tmp_path / "s.ply"), v, f)
    protocol.write_snapshot(tmp_path / "s.npz", v, f)
    for name in ("s.ply", "s.npz"):
        m = read_mesh(tmp_path / name)
        assert np.allclose(m["vertices"], v, atol=1e-6) and np.array_equal(m["faces"], f)


# ---------------------------------------------------------------------------------------------------------------
# the command


def run_eval(*args: str) -> tuple[int, list[dict], str]:
    proc = subprocess.run([sys.executable, "-m", "backend", "eval", *args, "--json"], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                          stdin=subprocess.DEVNULL)
    msgs = [protocol.decode_message(line) for line in proc.stdout.splitlines() if line.strip()]
    return proc.returncode, msgs, proc.stderr


def test_eval_command_mesh_metrics(tmp_path: Path) -> None:
    v, f = icosphere(4)
    write_ply(str(tmp_path / "gt.ply"), v, f)
    protocol.write_snapshot(tmp_path / "pred.npz", v * 1.1, f)
    code, msgs, err = run_eval("--mesh", str(tmp_path / "pred.npz"), "--reference", str(tmp_path / "gt.ply"),
                               "--points", "20000", "--threshold", "0.15", "--out", str(tmp_path / "m.json"))
    assert code == 0, err
    assert [m["type"] for m in msgs][0] == "start" and msgs[-1]["type"] == "done"
    metrics = msgs[-1]["metrics"]
    assert metrics["chamfer"] == pytest.approx(0.1, rel=0.03)
    assert metrics["fscore"] == 1.0 and metrics["threshold"] == 0.15
    assert (tmp_path / "m.json").is_file()


def test_eval_command_errors(tmp_path: Path) -> None:
    code, msgs, _ = run_eval()
    assert code == protocol.EXIT_ERROR and msgs[-1]["type"] == "error" and "--mesh" in msgs[-1]["hint"]
    code, msgs, _ = run_eval("--mesh", str(tmp_path / "missing.ply"), "--reference", str(tmp_path / "gt.ply"))
    assert code == protocol.EXIT_ERROR and msgs[-1]["type"] == "error"
    assert msgs[-1]["file"].endswith("missing.ply")
