"""Evaluation metrics on cases with known answers, mesh readers, and the ``eval`` command's protocol."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from backend import capture_files, protocol
from backend.errors import BackendError
from backend.evaluate import (
    Region,
    bounding_radius,
    crop_mesh,
    direction_bins,
    face_areas_normals,
    mesh_metrics,
    nearest,
    psnr,
    read_region,
    region_from_job,
    region_mesh_metrics,
    sample_surface,
    shell_bins,
    shell_fraction,
    ssim,
)
from backend.meshing import signed_volume, write_ply
from backend.meshing.mesh_io import read_mesh, triangulate

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
# regions: crop and shell fraction


def box_surface(matrix: np.ndarray | None = None, scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """The surface of the cube [-scale, scale]^3 (outward triangles), mapped by a (4, 4) matrix."""
    v = np.array([[x, y, z] for z in (-1, 1) for y in (-1, 1) for x in (-1, 1)], float) * scale
    f = np.array([(0, 2, 3), (0, 3, 1), (4, 5, 7), (4, 7, 6), (0, 1, 5), (0, 5, 4), (2, 6, 7), (2, 7, 3),
                  (0, 4, 6), (0, 6, 2), (1, 3, 7), (1, 7, 5)])
    if matrix is not None:
        v = v @ matrix[:3, :3].T + matrix[:3, 3]
    return v, f


def square(half: float, z: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """A horizontal square [-half, half]^2 at height z, facing up."""
    v = np.array([[-half, -half, z], [half, -half, z], [half, half, z], [-half, half, z]], float)
    return v, np.array([[0, 1, 2], [0, 2, 3]])


def tilted_box() -> np.ndarray:
    """(4, 4) a box turned about two axes, with different sizes, away from the origin."""
    c, s = math.cos(0.5), math.sin(0.5)
    rz = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    m = np.eye(4)
    m[:3, :3] = rz @ rx @ np.diag([1.5, 0.8, 0.6])
    m[:3, 3] = [3.0, -2.0, 1.0]
    return m


def test_region_ratio_box_sphere_and_both() -> None:
    box = Region(box=capture_files.box_matrix([-2, -1, -1], [2, 1, 1]))
    assert box.ratio(np.array([[1.0, 0, 0], [0, 1, 0], [0, 0, 0], [2, 0.5, 3]])) == pytest.approx([0.5, 1, 0, 3])
    ball = Region(sphere_center=np.array([1.0, 2, 3]), sphere_radius=2.0)
    assert ball.ratio(np.array([[2.0, 2, 3], [1, 2, 6]])) == pytest.approx([0.5, 1.5])
    # the sphere seen from the box's centre (1, 0, 0), not its own: along -x the boundary is 3 away, along +x 1
    both = Region(box=capture_files.box_matrix([0.5, -0.5, -0.5], [1.5, 0.5, 0.5]), sphere_center=np.zeros(3),
                  sphere_radius=2.0)
    r = both.ratio(np.array([[1.8, 0, 0], [1.2, 0, 0], [1, 0, 0.25]]))
    assert r == pytest.approx([max(1.6, 0.8), max(0.4, 0.2), 0.5])
    m = tilted_box()
    inside = np.array([[0.3, -0.9, 0.5], [-0.95, 0.2, 0.1]]) @ m[:3, :3].T + m[:3, 3]
    assert Region(box=m).ratio(inside) == pytest.approx([0.9, 0.95])
    with pytest.raises(ValueError):
        Region(box=np.diag([1.0, 1.0, 0.0, 1.0]))
    with pytest.raises(ValueError):
        Region(box=capture_files.box_matrix([5, 5, 5], [6, 6, 6]), sphere_center=np.zeros(3), sphere_radius=1.0)


def test_shell_fraction_of_a_shell_at_the_boundary_is_one(sphere: tuple[np.ndarray, np.ndarray]) -> None:
    v, f = sphere
    assert shell_fraction(v * 0.95, f, Region(sphere_center=np.zeros(3), sphere_radius=1.0)) > 0.99
    assert shell_fraction(*box_surface(scale=0.95), np.eye(4)) > 0.99  # a box matrix works as the region
    m = tilted_box()
    assert shell_fraction(*box_surface(m, 0.95), m) > 0.99
    # a shell outside the region counts too (beyond 90 % of the way)
    assert shell_fraction(v * 3.0, f, np.eye(4)) > 0.99
    # but a sphere inscribed in a box only reaches its boundary near the faces' centres
    assert 0.1 < shell_fraction(v * 0.98, f, np.eye(4)) < 0.4


def test_shell_fraction_of_a_small_object_at_the_centre_is_zero(sphere: tuple[np.ndarray, np.ndarray]) -> None:
    v, f = sphere
    assert shell_fraction(v * 0.3, f, np.eye(4)) == 0.0
    assert shell_fraction(v * 0.85, f, Region(sphere_center=np.zeros(3), sphere_radius=1.0)) == 0.0
    m = tilted_box()
    assert shell_fraction(v * 0.3 + m[:3, 3], f, m) == 0.0
    assert shell_fraction(np.zeros((0, 3)), np.zeros((0, 3), int), m) == 0.0


def test_shell_fraction_of_a_plane_through_the_centre_is_its_rim() -> None:
    """A plane through the centre reaches the boundary in exactly the directions along it: the bins the
    equator's directions fall into (about 5 % of 2000), all within a bin's size of the equator."""
    theta = np.linspace(0, 2 * np.pi, 200_000, endpoint=False)
    equator = np.stack([np.cos(theta), np.sin(theta), np.zeros_like(theta)], 1)
    expected = np.zeros(2000, bool)
    expected[np.unique(nearest(equator, direction_bins(2000))[1])] = True
    for half, region in ((1.0, np.eye(4)), (3.0, Region(sphere_center=np.zeros(3), sphere_radius=2.0))):
        counted, dirs = shell_bins(*square(half), region)
        assert np.array_equal(counted, expected)
        assert 0.03 < counted.mean() < 0.07
        assert np.abs(dirs[counted, 2]).max() < math.sqrt(4 * math.pi / 2000)
    # the same plane lower down (like a table top under an object) reaches the boundary in a band below it
    counted, dirs = shell_bins(*square(1.0, -0.5), np.eye(4))
    assert counted.any() and dirs[counted, 2].max() < 0


def test_job_region_is_its_sphere_and_box(tmp_path: Path, sphere: tuple[np.ndarray, np.ndarray]) -> None:
    v, f = sphere
    to_world = np.diag([2.0, 2.0, 2.0, 1.0])
    to_world[:3, 3] = [1.0, 0.0, -1.0]
    job = region_from_job(to_world, None)
    assert job.box is None and job.sphere_radius == pytest.approx(2.0)
    assert shell_fraction(v * 1.9 + [1, 0, -1], f, job) > 0.99
    assert shell_fraction(v * 0.5 + [1, 0, -1], f, job) == 0.0
    roi = np.array([[-0.5, -0.5, -0.5], [0.5, 0.5, 0.5]])  # the world box [0, 2] x [-1, 1] x [-2, 0]
    boxed = region_from_job(to_world, roi)
    assert np.allclose(boxed.box, capture_files.box_matrix([0, -1, -2], [2, 1, 0]))
    assert shell_fraction(*box_surface(boxed.box, 0.95), boxed) > 0.99
    assert shell_fraction(v * 1.9 + [1, 0, -1], f, boxed) > 0.99  # beyond the box
    # read back from a job's checkpoint (written and read in the checkpoint format) through the checkpoint loader
    from backend.checkpoint import save_checkpoint

    ckpt = tmp_path / "job" / "checkpoints" / "last.pt"
    save_checkpoint(ckpt, {"step": 7, "config": {}, "field": {}, "grid": {},
                           "optimizer": {"state": {}, "param_groups": []}, "n_rays": 1, "to_world": to_world,
                           "roi": roi, "roi_matrix": None, "data": None, "masks": None, "has_masks": False})
    for where in (tmp_path / "job", ckpt):
        r = read_region(where)
        assert np.allclose(r.box, boxed.box) and r.sphere_radius == pytest.approx(2.0)


def test_read_region_files(tmp_path: Path) -> None:
    m = tilted_box()
    (tmp_path / "m.json").write_text(json.dumps({"matrix": m.tolist()}))
    assert np.allclose(read_region(tmp_path / "m.json").box, m)
    (tmp_path / "b.json").write_text(json.dumps({"box_min": [0, 1, 2], "box_max": [2, 3, 6]}))
    assert np.allclose(read_region(tmp_path / "b.json").box, capture_files.box_matrix([0, 1, 2], [2, 3, 6]))
    (tmp_path / "s.json").write_text(json.dumps({"center": [1, 2, 3], "radius": 4}))
    r = read_region(tmp_path / "s.json")
    assert r.box is None and r.sphere_radius == 4 and np.allclose(r.center, [1, 2, 3])
    for bad in ({"radius": 2}, {"box_min": [0, 0, 0], "box_max": [1, 1, 0]}, [1, 2]):
        (tmp_path / "bad.json").write_text(json.dumps(bad))
        with pytest.raises(BackendError) as err:
            read_region(tmp_path / "bad.json")
        assert err.value.file is not None and str(err.value.file).endswith("bad.json")
    with pytest.raises(BackendError):
        read_region(tmp_path / "missing.json")


def test_crop_mesh_clips_exactly_and_keeps_the_winding() -> None:
    # a plane cut by a box turned 45 degrees about z: exactly the box's square cross-section (side 2), facing up
    c = math.sqrt(0.5)
    m = np.eye(4)
    m[:3, :3] = np.array([[c, -c, 0], [c, c, 0], [0, 0, 1]]) @ np.diag([1.0, 1.0, 0.5])
    v, f = crop_mesh(*square(3.0), Region(box=m))
    areas, normals = face_areas_normals(v, f)
    assert areas.sum() == pytest.approx(4.0, abs=1e-9)
    assert np.allclose(normals, [0, 0, 1]) and np.abs(v[:, :2]).sum(1).max() == pytest.approx(math.sqrt(2))
    assert Region(box=m).ratio(v).max() <= 1 + 1e-9
    # one triangle, partly inside: the inside part only
    tri = np.array([[0.0, 0, 0], [4, 0, 0], [0, 4, 0]])
    v, f = crop_mesh(tri, np.array([[0, 1, 2]]), Region(box=capture_files.box_matrix([-1, -1, -1], [1, 1, 1])))
    assert face_areas_normals(v, f)[0].sum() == pytest.approx(1.0)  # the unit square under the hypotenuse
    # a sphere region keeps whole faces with every vertex inside
    sv, sf = icosphere(3)
    v, f = crop_mesh(sv, sf, Region(sphere_center=np.array([0, 0, 1.0]), sphere_radius=1.0))
    assert len(f) and np.linalg.norm(v - [0, 0, 1], axis=1).max() <= 1.0 and v[:, 2].min() > 0
    # nothing inside
    v, f = crop_mesh(sv, sf, Region(box=capture_files.box_matrix([5, 5, 5], [6, 6, 6])))
    assert v.shape == (0, 3) and f.shape == (0, 3)


def test_region_metrics_ignore_outside_but_count_floaters_and_missing(sphere: tuple[np.ndarray, np.ndarray]
                                                                       ) -> None:
    """An object on a plane, in a region box around it: what lies outside the box does not change the Chamfer
    distance (the shell fraction sees it); a floater inside, or a missing object, do."""
    v, f = sphere
    obj_v, obj_f = v * 0.5 + [0, 0, 0.5], f
    plane_v, plane_f = square(3.0)
    gt_v, gt_f = join((obj_v, obj_f), (plane_v, plane_f))
    region = Region(box=capture_files.box_matrix([-0.6, -0.6, -0.1], [0.6, 0.6, 1.1]))
    kw = {"n_points": 30_000}
    base = region_mesh_metrics(gt_v, gt_f, gt_v, gt_f, region, **kw)
    assert base["chamfer"] < 0.01 and base["fscore"] > 0.99 and base["region_faces"] > 0
    shell_v, shell_f = v * 3.0, f[:, ::-1]
    with_shell = join((gt_v, gt_f), (shell_v, shell_f))
    m = region_mesh_metrics(*with_shell, gt_v, gt_f, region, **kw)
    assert m["chamfer"] == pytest.approx(base["chamfer"], rel=0.2) and m["fscore"] > 0.99
    assert shell_fraction(*with_shell, region) > 0.99 and shell_fraction(gt_v, gt_f, region) < 0.5
    floater = join((gt_v, gt_f), (v * 0.1 + [0.45, 0.45, 0.9], f))
    m = region_mesh_metrics(*floater, gt_v, gt_f, region, **kw)
    assert m["accuracy"] > 1.5 * base["accuracy"] and m["precision"] < 0.99  # 3 % of its area is the floater
    m = region_mesh_metrics(plane_v, plane_f, gt_v, gt_f, region, **kw)  # the object is missing
    assert m["completeness"] > 0.1 and m["recall"] < 0.5
    m = region_mesh_metrics(shell_v, shell_f, gt_v, gt_f, region, **kw)  # nothing inside at all
    assert m["chamfer"] == math.inf and m["fscore"] == 0.0 and m["region_faces"] == 0
    with pytest.raises(ValueError, match="reference"):
        region_mesh_metrics(gt_v, gt_f, shell_v, shell_f, region, **kw)


def join(*meshes: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate (vertices, faces) meshes."""
    verts, faces, offset = [], [], 0
    for v, f in meshes:
        verts.append(np.asarray(v, float))
        faces.append(np.asarray(f, np.int64) + offset)
        offset += len(v)
    return np.concatenate(verts), np.concatenate(faces)


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


def test_eval_command_region(tmp_path: Path) -> None:
    """``eval --region``: region-cropped figures, the shell fraction of both meshes; ``--mesh --region`` alone gives
    the shell fraction; a region that misses the reference is an error naming the reference."""
    v, f = icosphere(4)
    obj = (v * 0.5 + [0, 0, 0.5], f)
    gt = join(obj, square(0.6))
    write_ply(str(tmp_path / "gt_region.ply"), *gt)
    write_ply(str(tmp_path / "pred.ply"), *join(gt, (v * 3.0, f[:, ::-1])))  # plus a shell far outside
    region = {"matrix": capture_files.box_matrix([-0.6, -0.6, -0.1], [0.6, 0.6, 1.1]).tolist()}
    (tmp_path / "region.json").write_text(json.dumps(region))
    code, msgs, err = run_eval("--mesh", str(tmp_path / "pred.ply"), "--reference", str(tmp_path / "gt_region.ply"),
                               "--region", str(tmp_path / "region.json"), "--points", "20000")
    assert code == 0, err
    m = msgs[-1]["metrics"]
    assert m["chamfer"] < 0.02 and m["fscore"] > 0.99  # the outer shell is cropped away...
    assert m["shell_fraction"] > 0.99 and m["shell_fraction_reference"] < 0.6  # ...and seen here
    assert m["region"]["box_matrix"] == region["matrix"]
    code, msgs, err = run_eval("--mesh", str(tmp_path / "pred.ply"), "--region", str(tmp_path / "region.json"))
    assert code == 0, err
    assert msgs[-1]["metrics"]["shell_fraction"] > 0.99 and "chamfer" not in msgs[-1]["metrics"]
    far = {"box_min": [5, 5, 5], "box_max": [6, 6, 6]}
    (tmp_path / "far.json").write_text(json.dumps(far))
    code, msgs, _ = run_eval("--mesh", str(tmp_path / "pred.ply"), "--reference", str(tmp_path / "gt_region.ply"),
                             "--region", str(tmp_path / "far.json"))
    assert code == protocol.EXIT_ERROR and msgs[-1]["file"].endswith("gt_region.ply")
    code, msgs, _ = run_eval("--mesh", str(tmp_path / "pred.ply"), "--region", str(tmp_path / "nothing.json"))
    assert code == protocol.EXIT_ERROR and msgs[-1]["file"].endswith("nothing.json")
