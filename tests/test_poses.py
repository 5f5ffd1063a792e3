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


# ------------------------------------------------------------------------------------------------ plausibility


def test_implausible_cameras_are_dropped_until_the_rest_agree() -> None:
    from backend.poses.pipeline import IMPLAUSIBLE_CODES
    from backend.poses.quality import implausible_cameras, subset_images

    m = ring_model(n=16)
    assert implausible_cameras(m, IMPLAUSIBLE_CODES) == []
    # two cameras thrown far off and turned away from the object, as global mapping does with weak views
    centers = m.centers
    for i, shift in ((4, [40.0, 0.0, 0.0]), (11, [0.0, -35.0, 5.0])):
        c = centers[i] + np.array(shift)
        m.R[i] = look_at(c, c + np.array([0.0, 0.0, 1.0]) + np.array(shift), np.array([0.0, 0.0, 1.0]))
        m.t[i] = -m.R[i] @ c
    found = implausible_cameras(m, IMPLAUSIBLE_CODES)
    assert found == ["004.jpg", "011.jpg"]
    kept = subset_images(m, np.array([n not in found for n in m.names]))
    assert len(kept.names) == 14 and kept.R.shape == (14, 3, 3) and len(kept.points) == len(m.points)
    # one camera inside the object, looking at it from there
    inside = ring_model(n=16)
    c = np.array([1.0, 2.0, 3.2])
    inside.R[6] = look_at(c, np.array([1.0, 2.0, 3.0]), np.array([0.0, 1.0, 0.0]))
    inside.t[6] = -inside.R[6] @ c
    assert implausible_cameras(inside, IMPLAUSIBLE_CODES) == ["006.jpg"]
    # a model that does not hold together (most cameras misplaced) is implausible as a whole
    scattered = ring_model(n=8)
    rng = np.random.default_rng(3)
    for i in range(5):
        scattered.R[i] = random_rotation(rng)
        scattered.t[i] = rng.normal(size=3) * 5
    assert implausible_cameras(scattered, IMPLAUSIBLE_CODES) == scattered.names


# ------------------------------------------------------------------------------------------------ job folder


def tree_state(folder: Path) -> dict[str, tuple[int, int, str]]:
    """Every file under ``folder``: (size, mtime_ns, first bytes) by relative path."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns, p.read_bytes()[:64].hex())
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_refuses_an_output_folder_that_is_not_a_poses_job(tmp_path: Path) -> None:
    """A user's own COLMAP project (colmap/database.db, poses/...) or any other non-empty folder is left alone."""
    images = tmp_path / "photos"
    images.mkdir()
    for k in range(3):
        (images / f"{k}.jpg").write_bytes(b"not read before the refusal")
    for layout in ({"colmap/database.db": b"SQLite format 3\0 mine", "poses/cameras.json": b"{}",
                    "poses/images/a.jpg": b"jpeg"},
                   {"notes.txt": b"my notes", "colmap/sparse/0/cameras.bin": b"\1\2"}):
        out = tmp_path / f"project{len(layout)}"
        for rel, data in layout.items():
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            (out / rel).write_bytes(data)
        before = tree_state(out)
        code, messages, stderr = run_cli(["--images", str(images), "--out", str(out)])
        assert code == protocol.EXIT_ERROR, stderr[-2000:]
        err = messages[-1]
        assert err["type"] == "error" and "not empty" in err["message"] and "not a poses job" in err["message"]
        assert err["file"] == str(out.resolve()) and "empty" in err["hint"] and "new" in err["hint"]
        assert tree_state(out) == before  # not one byte touched, nothing added
    # a file where the folder should be
    target = tmp_path / "a_file"
    target.write_text("x")
    code, messages, _ = run_cli(["--images", str(images), "--out", str(target)])
    assert code == protocol.EXIT_ERROR and "is a file" in messages[-1]["message"] and target.read_text() == "x"


def test_job_folder_marker_leftovers_and_replacement(tmp_path: Path) -> None:
    """Our own job: marker first, leftovers of an interrupted run removed, results swapped in, the user's kept."""
    from backend.poses.jobdir import MARKER, PosesJob, read_marker

    root = tmp_path / "job"
    job = PosesJob(root)
    job.prepare(tmp_path / "photos")
    assert job.created and not job.reused and read_marker(root)["kind"] == "poses"
    assert sorted(p.name for p in root.iterdir()) == [MARKER]
    # a finished run
    job.start_work()
    (job.work_partial / "database.db").write_bytes(b"db1")
    (job.poses_partial / "images").mkdir(parents=True)
    (job.poses_partial / "report.json").write_text('{"registered": 3}')
    job.commit()
    assert (root / "colmap" / "database.db").read_bytes() == b"db1" and (root / "poses" / "report.json").is_file()
    # the user adds their own files; an interrupted run leaves temporary files
    (root / "poses" / "my_notes.txt").write_text("keep me")
    (root / "colmap" / "my_vocab.bin").write_bytes(b"keep")
    (root / "meshes").mkdir()
    (root / "meshes" / "final.npz").write_bytes(b"training output")
    (root / ".colmap.partial").mkdir()
    (root / ".poses.partial" / "images").mkdir(parents=True)
    (root / ".config.json.x1y2.tmp").write_text("half")
    (root / "poses" / ".roi.json.abcd.tmp").write_text("half")
    again = PosesJob(root)
    again.prepare(tmp_path / "photos")
    assert again.reused and not again.created
    assert sorted(again.cleaned) == sorted([".colmap.partial", ".poses.partial", ".config.json.x1y2.tmp",
                                            "poses/.roi.json.abcd.tmp"])
    again.start_work()
    (again.work_partial / "database.db").write_bytes(b"db2")
    (again.poses_partial / "report.json").parent.mkdir(parents=True, exist_ok=True)
    (again.poses_partial / "report.json").write_text('{"registered": 4}')
    assert (root / "poses" / "report.json").read_text() == '{"registered": 3}'  # old results until the end
    again.commit()
    assert (root / "colmap" / "database.db").read_bytes() == b"db2"
    assert (root / "poses" / "report.json").read_text() == '{"registered": 4}'
    assert (root / "poses" / "my_notes.txt").read_text() == "keep me"
    assert (root / "colmap" / "my_vocab.bin").read_bytes() == b"keep"
    assert (root / "meshes" / "final.npz").read_bytes() == b"training output"
    assert sorted(again.kept) == ["colmap/my_vocab.bin", "poses/my_notes.txt"]
    assert not [p.name for p in root.iterdir() if p.name.startswith(".")]
    # an older job without the marker but with exactly our layout is accepted (and marked)
    (root / MARKER).unlink()
    (root / "meshes" / "final.npz").unlink()
    (root / "meshes").rmdir()
    (root / "poses" / "report.json").write_text(json.dumps({"registered": 4, "layout": {"images/": "..."}}))
    old = PosesJob(root)
    old.prepare(None)
    assert old.reused and read_marker(root)["kind"] == "poses"
    # a failed run in a folder it made removes everything it wrote, the folder too
    fresh = PosesJob(tmp_path / "new" / "job")
    fresh.prepare(None)
    fresh.start_work()
    (fresh.work_partial / "database.db").write_bytes(b"partial")
    fresh.abort()
    assert not (tmp_path / "new" / "job").exists()
    # ... and in an existing job only its temporary folders
    failed = PosesJob(root)
    failed.prepare(None)
    failed.start_work()
    (failed.work_partial / "database.db").write_bytes(b"partial")
    failed.abort()
    assert (root / "colmap" / "database.db").read_bytes() == b"db2" and not (root / ".colmap.partial").exists()


def test_image_decode_problem_finds_truncated_files(tmp_path: Path) -> None:
    from PIL import Image

    from backend.data.images import image_decode_problem

    rng = np.random.default_rng(5)
    arr = rng.integers(0, 256, size=(240, 320, 3), dtype=np.uint8)
    for ext in ("jpg", "png"):
        path = tmp_path / f"whole.{ext}"
        Image.fromarray(arr).save(path)
        assert image_decode_problem(path) is None
        data = path.read_bytes()
        cut = tmp_path / f"cut.{ext}"
        cut.write_bytes(data[: int(0.85 * len(data))])
        assert "truncated" in image_decode_problem(cut) or "broken" in image_decode_problem(cut)
    (tmp_path / "text.jpg").write_text("not an image")
    assert image_decode_problem(tmp_path / "text.jpg") is None  # not judged: pycolmap reports it unreadable


def test_warnings_for_captures_that_cannot_work_well(tmp_path: Path) -> None:
    from backend.poses.pipeline import PoseEstimator

    emitter = protocol.Emitter(open(os.devnull, "w"), json_mode=True)  # noqa: SIM115 - closed below
    try:
        est = PoseEstimator(tmp_path, tmp_path / "job", emitter=emitter)
        seen: list[dict] = []
        est._emit = lambda msg_type, **fields: seen.append({"type": msg_type, **fields})  # type: ignore[method-assign]
        est._warn_about({"registered": 2, "total": 5, "registered_images": ["a.jpg", "b.jpg"], "num_points": 0,
                         "dropped": [], "suspicious": []})
    finally:
        emitter.stream.close()
    text = " | ".join(m["message"] for m in seen if m["type"] == "warning")
    assert "only 2 views registered" in text and "no sparse points" in text
    seen.clear()
    est._warn_about({"registered": 30, "total": 30, "registered_images": [], "num_points": 900, "dropped": [],
                     "suspicious": []})
    assert seen == []


def test_pycolmap_writes_no_log_files(tmp_path: Path) -> None:
    """glog, inside pycolmap, writes log files to $TMPDIR (else /tmp) unless told not to: nothing may appear."""
    pytest.importorskip("pycolmap")
    images = tmp_path / "noise"
    images.mkdir()
    for k in range(3):
        write_noise_image(images / f"{k}.png", seed=k)
    tmpdir = tmp_path / "tmpdir"
    tmpdir.mkdir()
    env = dict(os.environ, TMPDIR=str(tmpdir), TMP=str(tmpdir), TEST_TMPDIR=str(tmpdir))
    proc = subprocess.run([sys.executable, "-m", "backend", "poses", "--images", str(images), "--out",
                           str(tmp_path / "job"), "--json", "-v", "--max-image-size", "320"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    messages = [protocol.decode_message(line) for line in proc.stdout.splitlines()]
    assert proc.returncode == protocol.EXIT_ERROR and "do not overlap" in messages[-1]["message"]
    assert "feature_extraction" in proc.stderr or "Processed file" in proc.stderr or proc.stderr  # it did log
    assert sorted(p.name for p in tmpdir.iterdir()) == []
    assert not (tmp_path / "job").exists()  # the folder this failed run made is gone again


# ------------------------------------------------------------------------------------------------ full disk


def _mount_tmpfs(path: Path, size: str) -> None:
    """Mount a small tmpfs at ``path``, or skip the test where that is not allowed (no root, no privileges)."""
    if sys.platform != "linux" or shutil.which("mount") is None:
        pytest.skip("needs Linux and mount(8) to make a small file system")
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs unprivileged)")
    path.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True,
                          text=True, timeout=30)
    if proc.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not allowed here: {proc.stderr.strip()}")


def _unmount(path: Path) -> None:
    subprocess.run(["umount", str(path)], capture_output=True, timeout=30)


def test_full_disk_before_the_database_is_written(tmp_path: Path) -> None:
    """3 MB free: refused before the database is written, with a protocol error naming the folder; nothing left."""
    pytest.importorskip("pycolmap")
    images = tmp_path / "noise"
    images.mkdir()
    for k in range(4):
        write_noise_image(images / f"{k}.png", seed=k, size=(640, 480))
    disk = tmp_path / "small"
    _mount_tmpfs(disk, "3m")
    try:
        code, messages, stderr = run_cli(["--images", str(images), "--out", str(disk / "job")])
        assert code == protocol.EXIT_ERROR, stderr[-2000:]
        err = messages[-1]
        assert err["type"] == "error" and "free space" in err["message"] and err["file"] == str(disk / "job")
        assert "Free some space" in err["hint"] and "another disk" in err["hint"]
        assert list(disk.iterdir()) == []
    finally:
        _unmount(disk)


@pytest.mark.slow
def test_full_disk_while_pycolmap_writes(tmp_path: Path) -> None:
    """The disk fills up inside pycolmap (SQLite aborts the process): still a protocol error, exit 2, no files."""
    pytest.importorskip("pycolmap")
    from PIL import Image

    images = tmp_path / "noise"
    images.mkdir()
    rng = np.random.default_rng(9)
    for k in range(8):  # fine noise: many features in small files, so the estimate passes and the database grows
        arr = np.repeat(np.repeat(rng.integers(0, 256, size=(300, 400, 3), dtype=np.uint8), 2, 0), 2, 1)
        Image.fromarray(arr).save(images / f"{k}.jpg", quality=40)
    disk = tmp_path / "small"
    _mount_tmpfs(disk, "8m")
    try:
        code, messages, stderr = run_cli(["--images", str(images), "--out", str(disk / "job")])
        assert code == protocol.EXIT_ERROR, stderr[-2000:]
        err = messages[-1]
        assert err["type"] == "error" and "disk is full" in err["message"], err
        assert err["file"] == str(disk / "job") and "Free some space" in err["hint"]
        assert list(disk.iterdir()) == []  # the partial database and the folder this run made are gone
    finally:
        _unmount(disk)


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(c) for c in path.read_text().split()] if path.exists() else []


def test_a_crash_inside_pycolmap_becomes_an_error(tmp_path: Path) -> None:
    """The worker process dies from a native abort mid-run: one error message, exit code 2, partial files gone."""
    pytest.importorskip("pycolmap")
    if sys.platform != "linux":
        pytest.skip("finds the worker process through /proc")
    import signal

    images = tmp_path / "noise"
    images.mkdir()
    for k in range(6):
        write_noise_image(images / f"{k}.png", seed=k, size=(1600, 1200))
    job = tmp_path / "job"
    proc = subprocess.Popen([sys.executable, "-m", "backend", "poses", "--images", str(images), "--out", str(job),
                             "--json"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if '"name":"extract"' in line:
                break
        workers = _children(proc.pid)
        assert len(workers) == 1
        os.kill(workers[0], signal.SIGABRT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    messages = [protocol.decode_message(line) for line in [*lines, *out.splitlines()]]
    assert proc.returncode == protocol.EXIT_ERROR
    assert messages[-1]["type"] == "error" and "SIGABRT" in messages[-1]["message"]
    assert messages[-1]["file"] == str(job)
    assert [m["type"] for m in messages].count("error") == 1 and not any(m["type"] == "done" for m in messages)
    assert not job.exists()


# ------------------------------------------------------------------------------------------------ real photos, trust


@pytest.mark.slow
@pytest.mark.data
def test_truncated_photo_is_skipped_and_rerun_keeps_the_users_files(data_dir: Path, tmp_path: Path) -> None:
    """A JPEG cut to 85% is skipped with a warning naming it; a second run into the same job replaces only ours."""
    pycolmap = pytest.importorskip("pycolmap")
    from backend.data.images import image_decode_problem

    src = data_dir / "dtu_scan65" / "image"
    images = tmp_path / "photos"
    images.mkdir()
    for i in range(6):
        shutil.copy(src / f"{i:06d}.jpg", images)
    data = (src / "000006.jpg").read_bytes()
    (images / "000006.jpg").write_bytes(data[: int(0.85 * len(data))])
    job = tmp_path / "job"
    args = ["--images", str(images), "--out", str(job), "--max-image-size", "800"]

    code, messages, stderr = run_cli(args)
    assert code == protocol.EXIT_OK, stderr[-3000:]
    warnings = [m for m in messages if m["type"] == "warning"]
    assert any("000006.jpg" in m["message"] and "cut short" in m["message"] for m in warnings), warnings
    report = messages[-1]["report"]
    assert "000006.jpg" not in report["registered_images"] and report["registered"] == 6
    dropped = {d["name"]: d for d in report["dropped"]}
    assert dropped["000006.jpg"]["reason"] == "unreadable" and "truncated" in dropped["000006.jpg"]["detail"]
    for photo in (job / "poses" / "images").iterdir():  # what training reads decodes completely
        assert image_decode_problem(photo) is None
    assert json.loads((job / "neusblend-job.json").read_text())["kind"] == "poses"

    # the user (and training) add files; an interrupted run left temporary files
    (job / "poses" / "my_notes.txt").write_text("mine")
    (job / "meshes").mkdir()
    (job / "meshes" / "final.npz").write_bytes(b"training output")
    (job / ".report.json.1234.tmp").write_text("half")
    (job / ".poses.partial").mkdir()
    code, messages, stderr = run_cli(args)
    assert code == protocol.EXIT_OK, stderr[-3000:]
    assert any(m["type"] == "warning" and "already holds" in m["message"] and "replaced" in m["message"]
               for m in messages)
    report = messages[-1]["report"]
    assert report["job"]["replaced_earlier_results"] and report["job"]["kept_files"] == ["poses/my_notes.txt"]
    assert sorted(report["job"]["removed_leftovers"]) == [".poses.partial", ".report.json.1234.tmp"]
    assert (job / "poses" / "my_notes.txt").read_text() == "mine"
    assert (job / "meshes" / "final.npz").read_bytes() == b"training output"
    assert sorted(p.name for p in job.iterdir()) == ["colmap", "meshes", "neusblend-job.json", "poses"]
    assert pycolmap.Reconstruction(job / "poses" / "sparse").num_reg_images() == 6


# ------------------------------------------------------------------------------------------------ everyday captures

#: plush_dog photos at its second height, one ring all round the toy (about 17 degrees apart)
PLUSH_RING = ["IMG_3511.jpg", *(f"IMG_{n}.jpg" for n in range(3517, 3537))]


def orbit_metrics(job: Path) -> dict[str, float]:
    """How well the cameras of a poses job fit an orbit around one object (from cameras.json and roi.json).

    ``distance_spread``: std / mean of the camera distances to the region's centre; ``worst_axis_miss``: the
    largest distance (in region radii) by which an optical axis passes the centre; ``inside``: cameras inside the
    region; ``looking_away``: cameras with the centre behind them.
    """
    cams = json.loads((job / "poses" / "cameras.json").read_text())["images"]
    roi = json.loads((job / "poses" / "roi.json").read_text())
    c2w = np.array([c["c2w"] for c in cams])
    centers, axes = c2w[:, :3, 3], c2w[:, :3, 2]
    to_center = np.asarray(roi["center"]) - centers
    dist = np.linalg.norm(to_center, axis=1)
    along = (to_center * axes).sum(1)
    miss = np.linalg.norm(to_center - along[:, None] * axes, axis=1) / roi["radius"]
    return {"distance_spread": float(dist.std() / dist.mean()), "worst_axis_miss": float(miss.max()),
            "inside": int((dist < roi["radius"]).sum()), "looking_away": int((along <= 0).sum())}


def run_unposed(images: Path, job: Path) -> tuple[dict, dict[str, float]]:
    code, messages, stderr = run_cli(["--images", str(images), "--out", str(job)])
    assert code == protocol.EXIT_OK, stderr[-3000:]
    report = messages[-1]["report"]
    metrics = orbit_metrics(job)
    print(f"\n{images.name}: {report['registered']}/{report['total']} registered ({report['matching']}, "
          f"{report['mapper']}, {report['retries']} retries), {report['mean_reprojection_error_px']:.2f} px, "
          f"{report['num_points']} points, {metrics}, wall {report['timings_s']}, cpu {report['cpu_s']}")
    return report, metrics


@pytest.mark.slow
@pytest.mark.data
def test_plush_dog_everyday_photos_register(data_dir: Path, tmp_path: Path,
                                            record_property: pytest.RecordProperty) -> None:
    """84 unposed photos all round a furry toy: at least 80 registered, on one orbit, looking at the toy."""
    pytest.importorskip("pycolmap")
    images = data_dir / "plush_dog" / "images"
    report, metrics = run_unposed(images, tmp_path / "job")
    record_property("plush_dog_registered", report["registered"])
    assert report["total"] == 84 and report["registered"] >= 80
    assert report["matching"] == "exhaustive"
    assert report["mean_reprojection_error_px"] < 1.0 and report["num_points"] > 1000
    assert metrics["distance_spread"] < 0.2  # a hemisphere of photos at about one distance
    assert metrics["worst_axis_miss"] < 1.0 and metrics["looking_away"] == 0 and metrics["inside"] == 0
    assert not [s for s in report["suspicious"] if s["code"] != "few_points"]
    assert report["features"]["peak_threshold"] < 0.005  # few features at COLMAP's default: lowered
    attempts = report["mapping_attempts"]
    assert attempts[0]["mapper"] == "incremental" and sum(a["used"] for a in attempts) == 1
    assert report["retries"] == len(attempts) - 1


@pytest.mark.slow
@pytest.mark.data
def test_sparse_ring_of_21_photos_keeps_its_views(data_dir: Path, tmp_path: Path,
                                                  record_property: pytest.RecordProperty) -> None:
    """21 photos on one ring around the toy (about 17 degrees apart): no third of the views lost (here: all)."""
    pytest.importorskip("pycolmap")
    images = tmp_path / "ring"
    images.mkdir()
    for name in PLUSH_RING:
        shutil.copy(data_dir / "plush_dog" / "images" / name, images)
    report, metrics = run_unposed(images, tmp_path / "job")
    record_property("plush_ring_registered", report["registered"])
    assert report["total"] == 21 and report["registered"] >= 14
    assert metrics["distance_spread"] < 0.2 and metrics["worst_axis_miss"] < 1.0 and metrics["looking_away"] == 0
    dropped = {d["reason"] for d in report["dropped"]}
    assert dropped <= {"implausible", "not_registered", "separate_model", "no_matches"}


@pytest.mark.slow
@pytest.mark.data
def test_every_fourth_plush_dog_photo(data_dir: Path, tmp_path: Path, record_property: pytest.RecordProperty
                                      ) -> None:
    """Every 4th photo (21 frames over five heights, neighbours 15-30 degrees apart): what registers is plausible,
    or, where nothing plausible registers (SIFT and the mappers are not deterministic on so few matches: 0 to 5 of
    21 seen), a clear error that says what to do; the goal of 2/3 is out of SIFT's reach on this furry toy
    (docs/POSES.md, "Sparse captures")."""
    pytest.importorskip("pycolmap")
    images = tmp_path / "every4"
    images.mkdir()
    for name in sorted(p.name for p in (data_dir / "plush_dog" / "images").iterdir())[::4]:
        shutil.copy(data_dir / "plush_dog" / "images" / name, images)
    code, messages, stderr = run_cli(["--images", str(images), "--out", str(tmp_path / "job")])
    if code != protocol.EXIT_OK:
        assert code == protocol.EXIT_ERROR, stderr[-3000:]
        error = messages[-1]
        assert error["type"] == "error" and error["hint"] and error.get("file"), error
        record_property("plush_every4_registered", 0)
        pytest.xfail(f"nothing plausible registered: {error['message']} ({error['hint']})")
    report, metrics = messages[-1]["report"], orbit_metrics(tmp_path / "job")
    record_property("plush_every4_registered", report["registered"])
    assert report["total"] == 21 and report["registered"] >= 3
    assert metrics["looking_away"] == 0 and metrics["inside"] == 0
    assert report["retries"] >= 2 and any(a["guided_matching"] for a in report["mapping_attempts"])
    if report["registered"] < 14:
        pytest.xfail(f"{report['registered']}/21 registered: SIFT verifies only {report['pairs_verified']} pairs "
                     "of views this far apart (see docs/POSES.md)")
