"""Pose estimation (``python -m backend poses``): helpers on synthetic data, pycolmap on real photos.

The real-photo tests are marked ``slow`` (about a minute in total on 2 cores) and skip without ../shared/data.
Measured accuracy is printed (run with ``-s``) and attached to the test report as properties.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from backend import protocol
from backend.errors import BackendError
from backend.poses import pairs as pairing
from backend.poses.evaluate import (
    compare_with_calibration,
    decompose_projection,
    pose_errors,
    read_middlebury_par,
    rotation_angle_deg,
    umeyama,
)
from backend.poses.quality import ModelArrays, region_of_interest, suspicious_cameras

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------------ helpers


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q * np.sign(np.linalg.det(q))


def look_at(center: np.ndarray, target: np.ndarray, world_up: np.ndarray) -> np.ndarray:
    """World-to-camera rotation (OpenCV axes) of a camera at ``center`` looking at ``target``."""
    z = target - center
    z = z / np.linalg.norm(z)
    x = np.cross(z, world_up)  # x right, y down (so -y is up)
    x = x / np.linalg.norm(x)
    y = np.cross(z, x)
    return np.stack([x, y, z])


def ring_model(n: int = 12, n_points: int = 2000, radius: float = 0.5, seed: int = 0) -> ModelArrays:
    """Cameras on a ring at distance 3 looking at a ball of points of ``radius`` at (1, 2, 3); z is up."""
    rng = np.random.default_rng(seed)
    target = np.array([1.0, 2.0, 3.0])
    up = np.array([0.0, 0.0, 1.0])
    R, t = [], []
    for k in range(n):
        a = 2 * np.pi * k / n
        c = target + 3.0 * np.array([np.cos(a), np.sin(a), 0.4])
        rot = look_at(c, target, up)
        R.append(rot)
        t.append(-rot @ c)
    d = rng.normal(size=(n_points, 3))
    r = radius * rng.uniform(0.2, 1.0, (n_points, 1)) ** (1 / 3)
    pts = target + r * d / np.linalg.norm(d, axis=1, keepdims=True)
    outliers = target + rng.uniform(-30, 30, size=(40, 3))
    points = np.concatenate([pts, outliers])
    K = np.array([[500.0, 0, 320], [0, 500.0, 240], [0, 0, 1]])
    return ModelArrays(
        names=[f"{k:03d}.jpg" for k in range(n)], R=np.array(R), t=np.array(t), K=np.repeat(K[None], n, 0),
        sizes=np.tile([640, 480], (n, 1)), camera_ids=np.ones(n, dtype=np.int64), points=points,
        colors=np.zeros((len(points), 3), np.uint8), errors=np.full(len(points), 0.5),
        track_lengths=np.full(len(points), 5), image_num_points=np.full(n, 500), image_errors=np.full(n, 0.5),
    )


def run_cli(args: list[str], cwd: Path = ROOT) -> tuple[int, list[dict], str]:
    """Run ``python -m backend poses ... --json``; every stdout line must be a protocol message."""
    proc = subprocess.run([sys.executable, "-m", "backend", "poses", *args, "--json"], cwd=cwd,
                          capture_output=True, text=True, timeout=600)
    messages = [protocol.decode_message(line) for line in proc.stdout.splitlines()]
    return proc.returncode, messages, proc.stderr


def write_noise_image(path: Path, seed: int, size: tuple[int, int] = (320, 240)) -> None:
    import pycolmap

    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, size=(size[1] // 4, size[0] // 4, 3), dtype=np.uint8)
    arr = np.repeat(np.repeat(arr, 4, 0), 4, 1)  # blocky noise: many features, none shared with anything
    pycolmap.Bitmap.from_array(np.ascontiguousarray(arr)).write(path)


# ------------------------------------------------------------------------------------------------ alignment


def test_umeyama_recovers_similarity() -> None:
    rng = np.random.default_rng(1)
    src = rng.normal(size=(20, 3))
    rot = random_rotation(rng)
    dst = 2.5 * src @ rot.T + np.array([1.0, -2.0, 0.5])
    s, r, t = umeyama(src, dst)
    assert s == pytest.approx(2.5)
    np.testing.assert_allclose(r, rot, atol=1e-10)
    np.testing.assert_allclose(t, [1.0, -2.0, 0.5], atol=1e-10)
    s, r, _ = umeyama(src, dst * np.array([1, 1, -1]))  # a mirror image: still a proper rotation
    assert np.linalg.det(r) == pytest.approx(1.0)


def test_decompose_projection_round_trip() -> None:
    rng = np.random.default_rng(2)
    K = np.array([[2892.3, 0.4, 823.2], [0, 2883.2, 619.1], [0, 0, 1]])
    for scale in (1.0, -3.0, 0.01):
        rot, t = random_rotation(rng), rng.normal(size=3) * 100
        k2, r2, t2 = decompose_projection(scale * K @ np.c_[rot, t])
        np.testing.assert_allclose(k2, K, rtol=1e-9)
        np.testing.assert_allclose(r2, rot, atol=1e-9)
        np.testing.assert_allclose(t2, t, atol=1e-7)


def test_pose_errors_zero_after_similarity() -> None:
    rng = np.random.default_rng(3)
    R_ref = np.stack([random_rotation(rng) for _ in range(8)])
    t_ref = rng.normal(size=(8, 3))
    # the same cameras in another frame: x_est = (R_s^T (x_ref - t_s)) / s
    s, R_s, t_s = 0.3, random_rotation(rng), rng.normal(size=3)
    R_est = R_ref @ R_s
    c_ref = -np.einsum("nji,nj->ni", R_ref, t_ref)
    c_est = (c_ref - t_s) @ R_s / s
    t_est = -np.einsum("nij,nj->ni", R_est, c_est)
    err = pose_errors(R_est, t_est, R_ref, t_ref)
    assert err.center_error.max() < 1e-9
    assert err.rotation_error_deg.max() < 1e-5
    assert err.scale == pytest.approx(s)
    rot5 = np.array([[np.cos(0.1), -np.sin(0.1), 0], [np.sin(0.1), np.cos(0.1), 0], [0, 0, 1]])
    assert rotation_angle_deg(rot5) == pytest.approx(np.degrees(0.1))


# ------------------------------------------------------------------------------------------------ ROI, checks


def test_region_of_interest_bounds_the_object_not_the_outliers() -> None:
    m = ring_model()
    roi = region_of_interest(m)
    assert set(roi) >= {"center", "radius", "box_min", "box_max", "up"}
    np.testing.assert_allclose(roi["center"], [1, 2, 3], atol=0.1)
    assert 0.4 < roi["radius"] < 0.75  # the ball has radius 0.5; outliers up to 30 away are trimmed
    assert np.all(np.array(roi["box_min"]) < [1, 2, 3]) and np.all(np.array(roi["box_max"]) > [1, 2, 3])
    np.testing.assert_allclose(roi["up"], [0, 0, 1], atol=1e-9)
    assert roi["source"] == "points" and roi["cameras_inside"] == 0
    json.dumps(roi)  # JSON-able as it is


def test_region_of_interest_without_points_uses_the_cameras() -> None:
    m = ring_model(n_points=0)
    m.points, m.errors, m.track_lengths = m.points[:0], m.errors[:0], m.track_lengths[:0]
    m.colors = m.colors[:0]
    roi = region_of_interest(m)
    assert roi["source"] == "cameras"
    np.testing.assert_allclose(roi["center"], [1, 2, 3], atol=1e-6)  # where the optical axes meet


def test_suspicious_cameras_flags_misplaced_views() -> None:
    m = ring_model()
    roi = region_of_interest(m)
    assert suspicious_cameras(m, roi) == []
    bad = ring_model()
    centers = bad.centers
    bad.R[3] = np.diag([-1.0, 1.0, -1.0]) @ bad.R[3]  # turned around its own y axis: looks away
    a = np.radians(40.0)  # turned sideways by 40 degrees: its axis misses the ball
    bad.R[7] = np.array([[np.cos(a), 0, -np.sin(a)], [0, 1, 0], [np.sin(a), 0, np.cos(a)]]) @ bad.R[7]
    for i in (3, 7):
        bad.t[i] = -bad.R[i] @ centers[i]  # same place, new direction
    bad.image_errors[5] = 4.0
    bad.image_num_points[9] = 3
    flagged = {(s["name"], s["code"]) for s in suspicious_cameras(bad, roi)}
    assert ("003.jpg", "looks_away") in flagged
    assert ("007.jpg", "axis_misses_region") in flagged
    assert ("005.jpg", "high_reprojection_error") in flagged
    assert ("009.jpg", "few_points") in flagged
    assert {name for name, _ in flagged} == {"003.jpg", "005.jpg", "007.jpg", "009.jpg"}


# ------------------------------------------------------------------------------------------------ pairs


def test_sequence_detection_and_pairing_choice() -> None:
    frames = [f"frame_{i:05d}.jpg" for i in range(1, 200)]
    assert pairing.looks_sequential(frames)
    assert pairing.looks_sequential([f"IMG_{i}.JPG" for i in range(1000, 1300, 3)])
    assert not pairing.looks_sequential(["a.jpg", "house.jpg", "tree.png", "x1.jpg"])
    assert pairing.choose_matching(frames[:40]) == "exhaustive"
    # 199 images: every pair while affordable (small photos, few features), neighbours when not (full-size photos)
    assert pairing.choose_matching(frames, mean_features=1600, threads=2) == "exhaustive"
    assert pairing.choose_matching(frames, mean_features=8192, threads=2) == "sequential"
    assert pairing.choose_matching(frames[:100], mean_features=8192, threads=2) == "exhaustive"
    assert pairing.choose_matching(frames + ["frame_00200.jpg"] * 10) == "sequential"  # over 200 images
    assert pairing.choose_matching([f"{h:08x}_photo.jpg" for h in range(5, 10000, 37)]) == "retrieval"
    # the cost model matches what was measured on 2 cores: DTU 65 (1176 pairs, 8192 features) 87 s
    assert 60 < pairing.estimated_match_seconds(1176, 8192, 2) < 120
    assert sorted(pairing.natural_key(n) for n in ["img10", "img2"]) == [pairing.natural_key("img2"),
                                                                        pairing.natural_key("img10")]


def test_sequential_and_exhaustive_pairs() -> None:
    assert len(pairing.exhaustive_pairs(49)) == 49 * 48 // 2
    seq = pairing.sequential_pairs(100, overlap=3, quadratic=True)
    assert (0, 1) in seq and (0, 3) in seq and (0, 4) in seq and (0, 8) in seq and (0, 5) not in seq
    assert all(i < j for i, j in seq) and len(set(seq)) == len(seq)


def test_retrieval_pairs_find_images_of_the_same_place() -> None:
    rng = np.random.default_rng(4)
    places = rng.integers(0, 256, size=(5, 300, 128)).astype(np.float32)  # 5 places, their own "features"
    descriptors = []
    for img in range(30):  # 6 images per place, each a noisy subset of its place's features
        base = places[img % 5][rng.choice(300, 200, replace=False)]
        descriptors.append(np.clip(base + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8))
    found = pairing.retrieval_pairs(descriptors, k=5)
    same = [(i % 5) == (j % 5) for i, j in found]
    assert np.mean(same) > 0.9
    assert all(any(i in (a, b) for a, b in found) for i in range(30))


def test_mask_matching_conventions(tmp_path: Path) -> None:
    from backend.poses.pipeline import _match_mask

    masks = {n: tmp_path / n for n in ["000.png", "a.jpg.png", "b.png", "c.jpg"]}
    assert _match_mask(Path("000000.jpg"), tmp_path, masks) == tmp_path / "000.png"
    assert _match_mask(Path("a.jpg"), tmp_path, masks) == tmp_path / "a.jpg.png"
    assert _match_mask(Path("b.jpg"), tmp_path, masks) == tmp_path / "b.png"
    assert _match_mask(Path("c.jpg"), tmp_path, masks) == tmp_path / "c.jpg"
    assert _match_mask(Path("d.jpg"), tmp_path, masks) is None


def test_poses_module_never_imports_torch() -> None:
    code = ("import sys; import backend.poses, backend.poses.pipeline; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=120)


# ------------------------------------------------------------------------------------------------ bad input


def test_fewer_than_three_images_is_an_error(tmp_path: Path) -> None:
    from backend.poses import estimate_poses

    images = tmp_path / "photos"
    images.mkdir()
    for name in ("a.jpg", "b.jpg", "notes.txt"):
        (images / name).write_bytes(b"x")
    with pytest.raises(BackendError) as info:
        estimate_poses(images, tmp_path / "job")
    assert "at least 3" in info.value.message and info.value.hint
    code, messages, _ = run_cli(["--images", str(images), "--out", str(tmp_path / "job2")])
    assert code == protocol.EXIT_ERROR
    assert messages[-1]["type"] == "error" and "at least 3" in messages[-1]["message"]
    assert any(m["type"] == "warning" and "notes.txt" in m["message"] for m in messages)


def test_output_folder_not_writable(tmp_path: Path) -> None:
    from backend.poses import estimate_poses

    images = tmp_path / "photos"
    images.mkdir()
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(BackendError, match="cannot write"):
        estimate_poses(images, blocker / "job")
    if hasattr(os, "geteuid") and os.geteuid() != 0:  # root ignores permissions
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o555)
        try:
            with pytest.raises(BackendError, match="cannot write"):
                estimate_poses(images, locked / "job")
        finally:
            locked.chmod(0o755)


def test_missing_image_folder(tmp_path: Path) -> None:
    from backend.poses import estimate_poses

    with pytest.raises(BackendError, match="not found"):
        estimate_poses(tmp_path / "nowhere", tmp_path / "job")


@pytest.mark.slow
def test_images_that_do_not_overlap(tmp_path: Path) -> None:
    pytest.importorskip("pycolmap")
    from backend.poses import PoseOptions, estimate_poses

    images = tmp_path / "noise"
    images.mkdir()
    for k in range(4):
        write_noise_image(images / f"{k}.png", seed=k)
    with pytest.raises(BackendError) as info:
        estimate_poses(images, tmp_path / "job", PoseOptions(max_image_size=320))
    assert "do not overlap" in info.value.message or "registered" in info.value.message
    assert sorted(p.name for p in images.iterdir()) == ["0.png", "1.png", "2.png", "3.png"]  # nothing written


# ------------------------------------------------------------------------------------------------ real photos


@pytest.mark.slow
@pytest.mark.data
def test_cli_end_to_end_with_masks_and_bad_files(data_dir: Path, tmp_path: Path) -> None:
    """Six DTU views plus a fake .jpg, a text file and an unrelated image: the usable model, a full report."""
    pycolmap = pytest.importorskip("pycolmap")
    src = data_dir / "dtu_scan65"
    images, masks = tmp_path / "photos", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    for i in range(6):
        shutil.copy(src / "image" / f"{i:06d}.jpg", images)
        shutil.copy(src / "mask" / f"{i:03d}.png", masks)  # other naming: matched by number
    (images / "broken.jpg").write_text("this is not a JPEG")
    (images / "notes.txt").write_text("shot list")
    write_noise_image(images / "unrelated.png", seed=7, size=(400, 300))
    before = sorted(p.name for p in images.iterdir())
    job = tmp_path / "job"

    code, messages, stderr = run_cli(["--images", str(images), "--out", str(job), "--masks", str(masks),
                                      "--max-image-size", "1200"])
    assert code == protocol.EXIT_OK, stderr[-3000:]
    assert sorted(p.name for p in images.iterdir()) == before  # the photo folder is only read
    types = [m["type"] for m in messages]
    assert types[0] == "start" and types[-1] == "done"
    stages = [m["name"] for m in messages if m["type"] == "stage"]
    for name in ("scan", "extract", "match", "map", "refine", "undistort", "report"):
        assert name in stages
    assert any(m["type"] == "progress" and m["phase"] == "extract" and m["step"] == m["total"] for m in messages)
    warnings = " ".join(m["message"] for m in messages if m["type"] == "warning")
    assert "notes.txt" in warnings and "broken.jpg" in warnings

    done = messages[-1]
    report = done["report"]
    poses = Path(done["poses"])
    assert poses == job / "poses"
    assert report["total"] == 8 and report["registered"] == 6
    reasons = {d["name"]: d["reason"] for d in report["dropped"]}
    assert reasons["broken.jpg"] == "unreadable"
    assert reasons["unrelated.png"] in ("no_matches", "not_registered")
    assert [s["name"] for s in report["skipped_files"]] == ["notes.txt"]
    for key in ("mean_reprojection_error_px", "mean_track_length", "num_points", "suspicious", "roi"):
        assert key in report
    assert report["mean_reprojection_error_px"] < 1.5 and report["num_points"] > 100
    assert report["suspicious"] == []

    # the dataset the training command reads: COLMAP layout with PINHOLE cameras
    assert json.loads((poses / "report.json").read_text())["registered"] == 6
    roi = json.loads((poses / "roi.json").read_text())
    assert set(roi) == {"center", "radius", "box_min", "box_max", "up"} and roi == done["roi"]
    rec = pycolmap.Reconstruction(poses / "sparse")
    assert rec.num_reg_images() == 6
    assert {cam.model_name for cam in rec.cameras.values()} == {"PINHOLE"}
    names = sorted(rec.images[i].name for i in rec.reg_image_ids())
    assert sorted(p.name for p in (poses / "images").iterdir()) == names
    for iid in rec.reg_image_ids():
        image = rec.images[iid]
        cam = rec.cameras[image.camera_id]
        photo = pycolmap.Bitmap.read(poses / "images" / image.name, False)
        mask = pycolmap.Bitmap.read(poses / "masks" / (image.name + ".png"), False)
        assert (photo.width, photo.height) == (mask.width, mask.height) == (cam.width, cam.height)
        fraction = float((np.asarray(mask.to_array()) > 127).mean())
        assert 0.05 < fraction < 0.95  # the object, not an empty or full mask
    cams = json.loads((poses / "cameras.json").read_text())["images"]
    assert [c["name"] for c in cams] == names
    with np.load(poses / "points.npz", allow_pickle=False) as z:
        assert z["xyz"].shape == (report["num_points"], 3) and z["rgb"].dtype == np.uint8
    assert not (job / ".poses.partial").exists()

    # the training side's COLMAP loader reads the dataset as it is, masks included
    try:
        from backend.data.colmap import load_colmap
    except ImportError:  # the loader is not part of this checkout
        return
    scene = load_colmap(poses)
    assert scene.names == names and scene.masks is not None
    np.testing.assert_allclose(scene.K[0], cams[0]["K"], atol=1e-9)
    np.testing.assert_allclose(scene.c2w[0], cams[0]["c2w"], atol=1e-9)


@pytest.mark.slow
@pytest.mark.data
def test_sacre_coeur_registers_mixed_cameras(data_dir: Path, tmp_path: Path,
                                             record_property: pytest.RecordProperty) -> None:
    pytest.importorskip("pycolmap")
    from backend.poses import estimate_poses

    report = estimate_poses(data_dir / "sacre_coeur", tmp_path / "job")
    print(f"\nsacre_coeur: {report['registered']}/{report['total']} registered, "
          f"{report['mean_reprojection_error_px']:.3f} px, {report['num_points']} points, "
          f"timings {report['timings_s']}")
    record_property("sacre_coeur_registered", report["registered"])
    assert report["total"] == 10
    assert report["registered"] >= 9
    assert len(report["cameras"]) >= 9  # different photographers: one camera each


@pytest.mark.slow
@pytest.mark.data
def test_temple_poses_match_calibration(data_dir: Path, tmp_path: Path,
                                        record_property: pytest.RecordProperty) -> None:
    pycolmap = pytest.importorskip("pycolmap")
    from backend.poses import estimate_poses
    from backend.poses.quality import model_arrays

    folder = data_dir / "middlebury" / "templeSparseRing"
    report = estimate_poses(folder, tmp_path / "job")
    calibrated = read_middlebury_par(folder / "templeSR_par.txt")
    m = model_arrays(pycolmap.Reconstruction(tmp_path / "job" / "poses" / "sparse"))
    names, err = compare_with_calibration(m.names, m.R, m.t, calibrated)
    s = err.summary()
    print(f"\ntemple: {report['registered']}/16 registered ({report['mapper']}), rotation error mean "
          f"{s['rotation_mean_deg']:.3f} max {s['rotation_max_deg']:.3f} deg, centre error median "
          f"{1000 * s['center_median']:.2f} mm max {1000 * s['center_max']:.2f} mm, timings {report['timings_s']}")
    for key, value in s.items():
        record_property(f"temple_{key}", value)
    assert report["registered"] >= 13
    assert s["rotation_max_deg"] < 1.0
    assert s["center_median"] < 0.005  # metres; the ring has a radius of about 0.6 m
    assert report["suspicious"] == []

    # the region of interest, mapped into the calibrated frame, holds the temple's tight bounding box
    roi = report["roi"]
    lo, hi = np.array([-0.073568, 0.021728, -0.012445]), np.array([0.028855, 0.181892, 0.062736])
    center = err.scale * err.R @ np.array(roi["center"]) + err.t
    radius = err.scale * roi["radius"]
    corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    reach = np.linalg.norm(corners - center, axis=1).max()
    print(f"temple ROI: radius {radius:.3f} m, farthest box corner {reach:.3f} m from its centre")
    assert np.linalg.norm(center - 0.5 * (lo + hi)) < 0.05
    assert 0.6 * reach < radius < 2.5 * reach
    assert np.linalg.norm(roi["up"]) == pytest.approx(1.0)
