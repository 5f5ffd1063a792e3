"""Importing a posed capture into Blender: cameras, photos, points, region box, and the frame tying them to training.

Three layers:

- the maths and the readers without bpy (``client/camera_math.py``, ``client/capture_data.py``, and
  ``python -m backend export-capture`` for other layouts), on synthetic cameras and on real captures;
- the import in real Blender (the bpy module), each case in a fresh Python with its own Blender user folder, as in
  test_blender_addon.py: the round trip (a sparse point projected by the Blender camera at that camera's own
  resolution lands on the pixel the OpenCV camera (K, c2w) gives, within 0.5 px), the collection's contents, the
  frame matrix; on a poses job of sacre_coeur (mixed cameras, landscape and portrait) and on Middlebury
  templeSparseRing (a principal point 17 px off centre, fx != fy);
- the region box driving training: Reconstruct writes the box (moved and scaled by the test) as ``--roi`` and the
  backend's ``start`` message reports the matching normalization.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import blender_harness  # noqa: E402
from extension_package import PKG, client  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
HEADLESS = ROOT / "scripts" / "reconstruct_headless.py"
BACKEND_PYTHON = os.environ.get("NEUSBLEND_PYTHON") or sys.executable

needs_bpy = pytest.mark.skipif(importlib.util.find_spec("bpy") is None, reason="needs the bpy module (pip install bpy)")
needs_pycolmap = pytest.mark.skipif(importlib.util.find_spec("pycolmap") is None, reason="needs pycolmap")


def _has_torch(python: str) -> bool:
    probe = "import importlib.util, sys; sys.exit(importlib.util.find_spec('torch') is None)"
    return subprocess.run([python, "-c", probe], check=False).returncode == 0




def random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q * np.sign(np.linalg.det(q))


# ---------------------------------------------------------------------------------------------------------------
# without bpy: camera maths


@pytest.mark.parametrize("size", [(1000, 700), (700, 1000), (640, 480), (512, 512)])
def test_blender_camera_params_invert_exactly(size: tuple[int, int]) -> None:
    """K -> Blender settings -> K (Blender's viewplane formulas), for off-centre principal points and fx != fy."""
    cm = client("camera_math")
    w, h = size
    for fx, fy, cx, cy in [(900.0, 900.0, (w - 1) / 2, (h - 1) / 2), (900.0, 905.5, 0.3 * w, 0.6 * h),
                           (1520.4, 1525.9, 302.32, 246.87), (2000.0, 1990.0, 0.7 * w, 0.2 * h)]:
        K = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
        p = cm.blender_camera_params(K, w, h)
        assert p.sensor_fit == ("HORIZONTAL" if w >= h else "VERTICAL")
        assert max(p.sensor_width, p.sensor_height) == pytest.approx(cm.SENSOR_MM)
        assert min(p.pixel_aspect_x, p.pixel_aspect_y) == 1.0
        back = cm.intrinsics_from_blender(p.lens, p.sensor_fit, p.sensor_width, p.sensor_height, p.shift_x, p.shift_y,
                                          w, h, p.pixel_aspect_x, p.pixel_aspect_y)
        np.testing.assert_allclose(back, K, atol=1e-9)
    # the centred principal point gives no shift; one pixel right of centre shifts left by 1 / longer side
    centred = cm.blender_camera_params(np.array([[800.0, 0, (w - 1) / 2], [0, 800.0, (h - 1) / 2], [0, 0, 1]]), w, h)
    assert (centred.shift_x, centred.shift_y) == (0.0, 0.0)
    right = cm.blender_camera_params(np.array([[800.0, 0, (w + 1) / 2], [0, 800.0, (h + 1) / 2], [0, 0, 1]]), w, h)
    assert right.shift_x == pytest.approx(-1.0 / max(w, h)) and right.shift_y == pytest.approx(1.0 / max(w, h))
    # Auto fit, as Blender computes it for a default camera: sensor width along the longer side
    auto = cm.intrinsics_from_blender(50.0, "AUTO", 36.0, 24.0, 0.0, 0.0, w, h)
    assert auto[0, 0] == pytest.approx(50.0 / 36.0 * max(w, h))


def test_capture_frame_is_upright_and_maps_the_region_to_the_origin() -> None:
    cm = client("camera_math")
    rng = np.random.default_rng(3)
    up = rng.normal(size=3)
    up /= np.linalg.norm(up)
    forward = rng.normal(size=3)
    center, radius = rng.normal(size=3) * 10, 7.5
    M = cm.capture_frame(up, forward, center, radius, target_radius=1.0)
    s, R, t = cm.similarity_parts(M)
    assert s == pytest.approx(1.0 / radius)
    np.testing.assert_allclose(R @ up, [0, 0, 1], atol=1e-12)
    f = R @ forward
    assert abs(f[0]) < 1e-12 and f[1] > 0  # forward becomes +Y (once horizontal)
    np.testing.assert_allclose(cm.transform_points(M, center[None]), 0.0, atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(R), 1.0)
    keep = cm.capture_frame(up, forward, center, radius, target_radius=None)
    assert cm.similarity_parts(keep)[0] == pytest.approx(1.0)
    vertical = cm.capture_frame([0, 0, 1], [0, 0, 1], [0, 0, 0], 1.0)  # forward along up: any horizontal +Y
    np.testing.assert_allclose(vertical[:3, :3] @ vertical[:3, :3].T, np.eye(3), atol=1e-12)
    # mean camera up: cameras looking at the origin from a ring, rolled +-10 degrees
    c2w = []
    for k in range(12):
        a = 2 * np.pi * k / 12
        pos = np.array([np.cos(a), np.sin(a), 0.3]) * 3
        z = -pos / np.linalg.norm(pos)
        x = np.cross(z, [0, 0, 1.0])
        x /= np.linalg.norm(x)
        y = np.cross(z, x)
        m = np.eye(4)
        m[:3, :3] = np.stack([x, y, z], axis=1)
        m[:3, 3] = pos
        c2w.append(m)
    up_est = cm.mean_camera_up(np.stack(c2w))
    assert np.degrees(np.arccos(up_est @ [0, 0, 1.0])) < 1e-6


def test_region_box_and_roi_file(tmp_path: Path) -> None:
    """The upright box holds the points; the ROI file goes beside the job folder and reads back in the backend."""
    from backend.capture_files import region_matrix, write_region

    cm = client("camera_math")
    rng = np.random.default_rng(0)
    pts = rng.normal(size=(500, 3)) * [1.0, 2.0, 0.5] + [3.0, -1.0, 2.0]
    lo, hi = np.percentile(pts, 1, axis=0), np.percentile(pts, 99, axis=0)
    M = cm.capture_frame(rng.normal(size=3), rng.normal(size=3), (lo + hi) / 2, 2.0)
    blo, bhi = cm.region_box_in_frame(M, lo, hi, pts)
    q = cm.transform_points(M, pts[np.all((pts >= lo) & (pts <= hi), axis=1)])
    assert np.mean(np.all((q >= blo) & (q <= bhi), axis=1)) > 0.98
    corners = cm.transform_points(M, cm.box_corners(lo, hi))
    assert np.all(blo >= corners.min(0) - 1e-9) and np.all(bhi <= corners.max(0) + 1e-9)
    flo, fhi = cm.region_box_in_frame(M, lo, hi, None)  # no points: around the rotated corners
    np.testing.assert_allclose([flo, fhi], [corners.min(0), corners.max(0)])
    # a box placed in Blender, back in capture coordinates, written for train --roi
    box_world = cm.box_matrix(blo, bhi)
    in_capture = cm.roi_in_capture(M, box_world)
    np.testing.assert_allclose(M @ in_capture, box_world, atol=1e-12)
    job = tmp_path / "jobs" / "20250101-000000-photos.v2"
    path = write_region(cm.roi_file_for(job), in_capture, source="x")
    assert path.parent == job.parent and path.name == "20250101-000000-photos.v2.roi.json"
    assert not job.exists()  # never inside the job folder: only the backend writes there
    np.testing.assert_allclose(region_matrix(path), in_capture)
    center, radius = cm.box_sphere(in_capture)
    c_blender, r_blender = cm.box_sphere(box_world)
    np.testing.assert_allclose(cm.transform_points(M, center[None])[0], c_blender, atol=1e-9)
    assert radius * cm.similarity_parts(M)[0] == pytest.approx(r_blender)
    with pytest.raises(ValueError):
        write_region(tmp_path / "flat.json", np.diag([1.0, 1.0, 0.0, 1.0]))


# ---------------------------------------------------------------------------------------------------------------
# without bpy: readers


def _write_job(folder: Path, cameras: list[dict[str, Any]], n_points: int = 0, roi: dict[str, Any] | None = None
               ) -> Path:
    poses = folder / "poses"
    (poses / "sparse").mkdir(parents=True)
    (poses / "cameras.json").write_text(json.dumps({"images": cameras}))
    (poses / "report.json").write_text(json.dumps({"images_dir": "/somewhere/my_photos/"}))
    if n_points:
        rng = np.random.default_rng(1)
        np.savez(poses / "points.npz", xyz=rng.normal(size=(n_points, 3)).astype(np.float32),
                 rgb=rng.integers(0, 255, (n_points, 3), dtype=np.uint8),
                 error=rng.random(n_points).astype(np.float32), track_length=np.full(n_points, 3, dtype=np.int32))
    if roi is not None:
        (poses / "roi.json").write_text(json.dumps(roi))
    return folder


def test_read_poses_job_and_fill_missing_roi(tmp_path: Path) -> None:
    cd = client("capture_data")
    K = [[500.0, 0, 99.5], [0, 500.0, 74.5], [0, 0, 1]]
    cams = [{"name": f"{i}.jpg", "width": w, "height": h, "K": K, "c2w": np.eye(4).tolist()}
            for i, (w, h) in enumerate([(200, 150), (150, 200), (150, 200), (200, 150)])]
    job = _write_job(tmp_path / "job", cams, n_points=50)
    data = cd.read_poses_job(job)
    assert data.name == "my_photos" and data.layout == "job" and len(data.cameras) == 4
    assert data.source == cd.capture_key(job) == str((job / "poses").resolve())
    assert cd.capture_key(job / "poses") == data.source
    assert data.cameras[1].image_path == str(job / "poses" / "images" / "1.jpg")
    assert data.points.shape == (50, 3) and data.track_lengths is not None and data.point_errors is not None
    assert data.common_size() == (200, 150)  # two of each: the first photo's size wins
    assert set(data.roi) >= {"center", "radius", "box_min", "box_max", "up"}  # no roi.json: filled in
    np.testing.assert_allclose(data.roi["up"], [0, -1, 0])  # identity cameras: OpenCV -y is up
    with pytest.raises(cd.CaptureError):
        cd.read_poses_job(tmp_path)


@pytest.mark.data
def test_export_capture_command_speaks_the_protocol(data_dir: Path, tmp_path: Path) -> None:
    """``python -m backend export-capture``: start and done (exit 0) on a capture, error naming the folder and a hint
    (exit 2) on a folder that is none; stdout holds protocol messages only."""
    protocol = importlib.import_module(f"{PKG}.backend.protocol")
    temple = data_dir / "middlebury" / "templeSparseRing"
    env = dict(os.environ, PYTHONPATH=str(ROOT))

    def run(data: Path, out: Path) -> tuple[int, list[dict[str, Any]]]:
        proc = subprocess.run([sys.executable, "-m", "backend", "export-capture", "--json", "--data", str(data),
                               "--out", str(out)], env=env, cwd=tmp_path, capture_output=True, text=True,
                              timeout=120, check=False)
        return proc.returncode, [protocol.decode_message(line) for line in proc.stdout.splitlines()]

    code, msgs = run(temple, tmp_path / "out")
    assert code == protocol.EXIT_OK and [m["type"] for m in msgs] == ["start", "done"], msgs
    assert msgs[0]["command"] == "export-capture"
    assert (msgs[1]["cameras"], msgs[1]["points"], msgs[1]["layout"]) == (16, 0, "middlebury")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["cameras.json", "capture.json", "roi.json"]
    code, msgs = run(tmp_path / "out", tmp_path / "bad")
    assert code == protocol.EXIT_ERROR and [m["type"] for m in msgs] == ["start", "error"], msgs
    assert msgs[1]["file"] == str(tmp_path / "out") and msgs[1]["hint"]
    assert not (tmp_path / "bad").exists()


@pytest.mark.data
def test_export_capture_of_another_layout(data_dir: Path, tmp_path: Path) -> None:
    """Middlebury through the backend's loader (``export-capture`` run by the client's process path): the same
    files as a poses job, read by the same reader; a folder that is no capture fails with the backend's message."""
    cd = client("capture_data")
    from backend.data import load_scene

    temple = data_dir / "middlebury" / "templeSparseRing"
    before = set(Path(tempfile.gettempdir()).glob("neusblend-import-*"))
    data = cd.load_capture(temple, sys.executable)
    scene = load_scene(temple, normalize=False)
    assert (data.name, data.layout, data.source) == ("templeSparseRing", "middlebury", str(temple.resolve()))
    assert [c.name for c in data.cameras] == scene.names
    np.testing.assert_allclose(np.stack([c.K for c in data.cameras]), scene.K)
    np.testing.assert_allclose(np.stack([c.c2w for c in data.cameras]), scene.c2w)
    assert Path(data.cameras[0].image_path).is_file()
    assert data.roi["radius"] > 0 and len(data.roi["up"]) == 3
    with pytest.raises(cd.CaptureError) as err:
        cd.load_capture(tmp_path, sys.executable)
    assert "no capture" in err.value.message and err.value.hint and err.value.file == str(tmp_path)
    with pytest.raises(cd.CaptureError, match="does not exist"):
        cd.load_capture(tmp_path / "nope", sys.executable)
    assert set(Path(tempfile.gettempdir()).glob("neusblend-import-*")) == before  # the temporary folders are gone


def test_train_arguments_carry_masks_roi_and_stdin_watch(tmp_path: Path) -> None:
    """Masks go to train for a posed capture (to poses for plain photos); --roi and --exit-on-stdin-close."""
    jobs, datasets = client("jobs"), client("datasets")
    posed = datasets.FolderCheck(tmp_path / "capture", "posed", 5, layout="neus")
    job_posed = datasets.FolderCheck(tmp_path / "job", "posed", 5, layout="job")
    photos = datasets.FolderCheck(tmp_path / "photos", "photos", 5)
    options = jobs.TrainOptions(preset="preview", roi=str(tmp_path / "x.roi.json"))
    train = jobs.reconstruct_pipeline("/py", posed, tmp_path / "j", options, masks="/m").steps[-1].argv
    assert train[train.index("--masks") + 1] == "/m" and train[train.index("--roi") + 1].endswith("x.roi.json")
    assert "--exit-on-stdin-close" in train
    assert "--masks" not in jobs.reconstruct_pipeline("/py", job_posed, tmp_path / "j", options, masks="/m"
                                                      ).steps[-1].argv
    steps = jobs.reconstruct_pipeline("/py", photos, tmp_path / "j", options, masks="/m").steps
    assert "--masks" in steps[1].argv and "--masks" not in steps[2].argv
    assert "--roi" not in jobs.TrainOptions().args()
    assert "--exit-on-stdin-close" not in jobs.TrainOptions(exit_on_stdin_close=False).args()


# ---------------------------------------------------------------------------------------------------------------
# real Blender: harness (pytest side)


def run_case(case: str, tmp_path: Path, timeout: float = 600, **kwargs: Any) -> dict[str, Any]:
    """Run this module's ``CASES[case](**kwargs)`` in real Blender (see tests/blender_harness.py)."""
    return blender_harness.run_case(Path(__file__), case, tmp_path, timeout, **kwargs)


@pytest.fixture(scope="module")
def sacre_job(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """A poses job of sacre_coeur (10 photos of 10 cameras, landscape and portrait), estimated once (~20 s)."""
    photos = data_dir / "sacre_coeur"
    if importlib.util.find_spec("pycolmap") is None:
        pytest.skip("needs pycolmap")
    job = tmp_path_factory.mktemp("sacre") / "job"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-m", "backend", "poses", "--images", str(photos), "--out", str(job)],
                          env=env, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return job


# ---------------------------------------------------------------------------------------------------------------
# real Blender: tests


@pytest.mark.blender
@pytest.mark.slow
@pytest.mark.data
@needs_bpy
@needs_pycolmap
def test_import_poses_job_round_trip(tmp_path: Path, sacre_job: Path, record_property: pytest.RecordProperty
                                     ) -> None:
    """sacre_coeur poses: every sparse point a camera sees projects to its COLMAP pixel within 0.5 px through the
    Blender camera; the collection, frame matrix, photos, points and box are as documented."""
    r = run_case("import_job", tmp_path, job=str(sacre_job))
    cams = json.loads((sacre_job / "poses" / "cameras.json").read_text())["images"]
    n = len(cams)
    assert r["roles"] == {"frame": 1, "camera": n, "points": 1, "region": 1}, r["roles"]
    assert r["collections_with_source"] == 1 and r["after_reimport"]["camera"] == n  # reimport replaces
    # the stored double-precision matrix is the empty's matrix_world (Blender keeps single precision)
    assert r["frame_property_error"] < 1e-6 and r["collection_property_error"] < 1e-6
    assert r["capture_back_error"] < 1e-5
    assert r["camera_pose_error"] < 1e-5 and r["points_error"] < 1e-5
    assert r["up_to_z_deg"] < 1e-4 and r["region_inside"] > 0.9
    fits = {c["name"]: c["sensor_fit"] for c in r["cameras"]}
    assert {"HORIZONTAL", "VERTICAL"} <= set(fits.values())  # mixed orientations
    for c in r["cameras"]:
        assert c["visible"] >= 50, c
        assert c["max_px"] < 0.5 and c["max_px_matrix"] < 0.5, c
        assert c["sensor_fit"] == ("HORIZONTAL" if c["width"] >= c["height"] else "VERTICAL")
        assert c["background"].endswith(c["image"]) and c["background_exists"]
    assert tuple(r["resolution"]) == tuple(r["most_common_size"])
    assert r["points"]["instances"] == r["points"]["vertices"] == r["n_points"] > 500
    assert r["points"]["colors"] == r["n_points"] and r["points"]["material_reads_colors"]
    assert r["points"]["has_error"] and r["points"]["has_track_length"]
    assert r["region"]["display_type"] == "WIRE" and not r["region"]["renders"]
    for name, mesh in r["meshes"].items():  # the runner's live mesh and Load Result's: in the capture's frame
        assert mesh["parent"] == mesh["frame"] and mesh["error"] < 1e-5, (name, mesh)
        assert mesh["collection"] == [r["collection"]], (name, mesh)
    worst = max(c["max_px"] for c in r["cameras"])
    print(f"\nsacre_coeur round trip: worst {worst:.2e} px over {n} cameras ({sum(c['visible'] for c in r['cameras'])}"
          " projections)")
    record_property("round_trip_max_px", worst)


@pytest.mark.blender
@pytest.mark.data
@needs_bpy
def test_import_middlebury_off_centre_principal_point(tmp_path: Path, data_dir: Path,
                                                      record_property: pytest.RecordProperty) -> None:
    """A capture of another layout through the export subprocess: a principal point 17 px left of centre and
    fx != fy (scene pixel aspect) still project within 0.5 px."""
    r = run_case("import_other", tmp_path, data=str(data_dir / "middlebury" / "templeSparseRing"))
    assert r["roles"]["camera"] == 16 and r["roles"]["region"] == 1 and "points" not in r["roles"]
    assert r["result"] == ["FINISHED"]
    for c in r["cameras"]:
        assert c["shift_x"] > 0.02, c  # cx = 302.3 < 319.5: the frame moves right
        assert c["pixel_aspect_x"] > 1.0, c  # fy > fx
        assert c["max_px"] < 0.5 and c["max_px_matrix"] < 0.5, c
    worst = max(c["max_px"] for c in r["cameras"])
    print(f"\ntempleSparseRing round trip: worst {worst:.2e} px")
    record_property("round_trip_max_px", worst)


@pytest.mark.blender
@pytest.mark.slow
@pytest.mark.data
@needs_bpy
@needs_pycolmap
@pytest.mark.skipif(not _has_torch(BACKEND_PYTHON), reason="the backend Python has no torch")
def test_region_box_drives_training_normalization(tmp_path: Path, sacre_job: Path, data_dir: Path) -> None:
    """Reconstruct writes the region box (as imported, then moved, rotated and scaled in Blender) as --roi; the
    backend's start message normalizes to the box's circumscribed sphere, in capture coordinates."""
    cm = client("camera_math")
    r = run_case("region_training", tmp_path, job=str(sacre_job), photos=str(data_dir / "sacre_coeur"),
                 python=BACKEND_PYTHON, job_root=str(tmp_path / "jobs"))
    runs = r["runs"]
    assert len(runs) == 2
    for run in runs:
        argv = run["argv"]
        assert "--exit-on-stdin-close" in argv
        roi_file = Path(argv[argv.index("--roi") + 1])
        job_dir = Path(argv[argv.index("--out") + 1])
        assert roi_file.parent == job_dir.parent and roi_file.name == job_dir.name + ".roi.json"
        matrix = np.asarray(json.loads(roi_file.read_text())["matrix"])
        np.testing.assert_allclose(matrix, run["expected_matrix"], atol=1e-6)
        norm = run["normalization"]
        assert norm["method"] == "box" and norm["camera_distance"] > 1.0, norm
        center, radius = cm.box_sphere(matrix)
        np.testing.assert_allclose(norm["center"], center, atol=1e-6)
        assert norm["radius"] == pytest.approx(radius, rel=1e-6)
    first, second = runs
    # the box moved by `move` (Blender units) and shrank by `scale`: the same, seen in capture coordinates
    M = np.asarray(r["frame_matrix"])
    s, R, _ = cm.similarity_parts(M)
    expected_shift = R.T @ np.asarray(r["move"]) / s
    np.testing.assert_allclose(np.subtract(second["normalization"]["center"], first["normalization"]["center"]),
                               expected_shift, atol=1e-5)
    assert second["normalization"]["radius"] == pytest.approx(first["normalization"]["radius"] * r["scale"], rel=1e-5)


# ---------------------------------------------------------------------------------------------------------------
# cases (run inside the subprocess, with bpy)


_headless = blender_harness.headless


def _ext_module(ext: Any, name: str) -> types.ModuleType:
    return sys.modules[f"{ext.module_name}.client.{name}"]


def _array(m: Any) -> np.ndarray:
    return np.array([list(row) for row in m], dtype=np.float64)


def _roles(collection: Any, key: str = "neusblend_role") -> dict[str, int]:
    out: dict[str, int] = {}
    for obj in collection.all_objects:
        role = obj.get(key)
        if role:
            out[role] = out.get(role, 0) + 1
    return out


def _round_trip(scene: Any, cam_obj: Any, K: np.ndarray, c2w: np.ndarray, width: int, height: int,
                points_capture: np.ndarray, frame_world: np.ndarray) -> dict[str, Any]:
    """Project the points seen by one camera both ways: Blender (world_to_camera_view at the camera's own
    resolution, and the camera's projection matrix) against OpenCV (K, c2w)."""
    import bpy
    from bpy_extras.object_utils import world_to_camera_view
    from mathutils import Vector

    cm = client("camera_math")
    bpy.context.view_layer.objects.active = cam_obj
    assert bpy.ops.neusblend.use_capture_camera() == {"FINISHED"}
    assert scene.camera == cam_obj
    assert (scene.render.resolution_x, scene.render.resolution_y) == (width, height)
    uv, z = cm.project_opencv(K, c2w, points_capture)
    seen = (z > 0) & np.all((uv > -0.5) & (uv < [width - 0.5, height - 0.5]), axis=1)
    world = cm.transform_points(frame_world, points_capture[seen])
    blender = []
    for x in world:
        v = world_to_camera_view(scene, cam_obj, Vector(x.tolist()))
        blender.append((v.x * width - 0.5, (1.0 - v.y) * height - 0.5))  # frame [0, 1] -> OpenCV pixel centres
    err = np.abs(np.array(blender) - uv[seen]).max() if seen.any() else float("inf")
    depsgraph = bpy.context.evaluated_depsgraph_get()
    P = _array(cam_obj.calc_matrix_camera(depsgraph, x=width, y=height, scale_x=scene.render.pixel_aspect_x,
                                          scale_y=scene.render.pixel_aspect_y))
    V = _array(cam_obj.matrix_world.normalized().inverted())
    h = np.c_[world, np.ones(len(world))] @ (P @ V).T
    ndc = h[:, :2] / h[:, 3:]
    pix = np.c_[(ndc[:, 0] + 1) / 2 * width - 0.5, (1 - ndc[:, 1]) / 2 * height - 0.5]
    err_m = np.abs(pix - uv[seen]).max() if seen.any() else float("inf")
    data = cam_obj.data
    bg = data.background_images[0].image if len(data.background_images) else None
    return {"name": cam_obj.name, "width": width, "height": height, "sensor_fit": data.sensor_fit,
            "shift_x": data.shift_x, "shift_y": data.shift_y, "visible": int(seen.sum()), "max_px": float(err),
            "max_px_matrix": float(err_m), "pixel_aspect_x": scene.render.pixel_aspect_x,
            "background": bpy.path.abspath(bg.filepath) if bg else "", "background_exists": bool(
                bg and Path(bpy.path.abspath(bg.filepath)).is_file()), "image": cam_obj.get("neusblend_image", "")}


def _meshes_in_frame(ext: Any, scene: Any, frame: Any, data: Any, tmp: Path) -> dict[str, Any]:
    """A reconstruction of this capture, as the runner applies it (a process that sends a mesh message) and as Load
    Result loads it (a job folder whose config.json names the poses job): both must sit in the capture's frame."""
    import bpy

    protocol = importlib.import_module(f"{PKG}.backend.protocol")
    pipeline_mod, runner = _ext_module(ext, "pipeline"), _ext_module(ext, "scene.runner")
    vertices = np.asarray(data.points[:30], dtype=np.float32)  # capture coordinates, like the backend's meshes
    faces = np.arange(30, dtype=np.int32).reshape(10, 3)
    job = tmp / "fake-train-job"
    protocol.write_snapshot(job / "meshes" / "final.npz", vertices, faces)
    (job / "config.json").write_text(json.dumps({"data": str(Path(data.source))}))
    lines = tmp / "messages.jsonl"
    lines.write_text(protocol.encode_message(protocol.make_message(
        "mesh", step=1, path=str(job / "meshes" / "final.npz"), n_vertices=30, n_faces=10, final=True)) + "\n"
        + protocol.encode_message(protocol.make_message("done", steps=1)) + "\n")
    step = pipeline_mod.Step("train", "Training", [sys.executable, "-c", "import sys; print(open(sys.argv[1]).read())",
                                                   str(lines)], dict(os.environ), str(tmp))
    runner.start(pipeline_mod.Pipeline("reconstruct", [step]), job, object_name="Live NeuS", scene=scene,
                 capture_source=data.source)
    runner.wait(timeout=60)
    assert bpy.ops.neusblend.load_result(directory=str(job), object_name="Loaded NeuS") == {"FINISHED"}
    bpy.context.view_layer.update()
    M = _array(frame.matrix_world)
    out = {}
    for name in ("Live NeuS", "Loaded NeuS"):
        obj = bpy.data.objects[name]
        world = np.array([tuple(obj.matrix_world @ v.co) for v in obj.data.vertices])
        out[name] = {"parent": obj.parent.name if obj.parent else "", "frame": frame.name,
                     "collection": [c.name for c in obj.users_collection],
                     "error": float(np.abs(world - client("camera_math").transform_points(M, vertices)).max())}
    return out


def case_import_job(job: str) -> dict[str, Any]:
    import bpy

    ext = _headless().enable_extension()
    try:
        cd = client("capture_data")
        data = cd.read_poses_job(job)
        scene = bpy.context.scene
        assert bpy.ops.neusblend.import_capture(directory=job) == {"FINISHED"}
        sc = _ext_module(ext, "scene.capture")
        frame = sc.find_capture(scene, data.source)
        collection = sc.capture_collection(frame)
        bpy.context.view_layer.update()
        M = _array(frame.matrix_world)
        out: dict[str, Any] = {
            "roles": _roles(collection), "n_points": len(data.points), "collection": collection.name,
            "frame_property_error": float(np.abs(np.reshape(frame[sc.FRAME_PROP], (4, 4)) - M).max()),
            "collection_property_error": float(np.abs(np.reshape(collection[sc.FRAME_PROP], (4, 4)) - M).max())}
        cm = client("camera_math")
        _, R, _ = cm.similarity_parts(np.reshape(frame[sc.FRAME_PROP], (4, 4)))
        up = R @ np.asarray(data.roi["up"])
        out["up_to_z_deg"] = float(np.degrees(np.arctan2(np.linalg.norm(up[:2]), up[2])))
        by_image = {o.get("neusblend_image"): o for o in collection.all_objects if o.get("neusblend_role") == "camera"}
        out["camera_pose_error"] = float(max(np.abs(_array(by_image[c.name].matrix_world) - M @ c.c2w @ cm.CV_TO_GL
                                                    ).max() for c in data.cameras))
        pts_obj = next(o for o in collection.all_objects if o.get("neusblend_role") == "points")
        verts = np.array([tuple(pts_obj.matrix_world @ v.co) for v in pts_obj.data.vertices[:200]])
        out["points_error"] = float(np.abs(verts - cm.transform_points(M, data.points[:200])).max())
        stored = np.reshape(frame[sc.FRAME_PROP], (4, 4))  # world -> capture through the stored matrix
        out["capture_back_error"] = float(np.abs(cm.transform_points(np.linalg.inv(stored), verts)
                                                 - data.points[:200]).max())
        depsgraph = bpy.context.evaluated_depsgraph_get()
        # instances live only while iterating: count the evaluated point cloud's points there
        instances = [len(i.object.data.points) for i in depsgraph.object_instances
                     if i.object.type == "POINTCLOUD" and i.object.original == pts_obj]
        mat = pts_obj.data.materials[0]
        out["points"] = {
            "vertices": len(pts_obj.data.vertices),
            "instances": instances[0] if instances else 0,
            "colors": len(pts_obj.data.color_attributes["Col"].data),
            "material_reads_colors": any(n.type == "ATTRIBUTE" and n.attribute_name == "Col"
                                         for n in mat.node_tree.nodes),
            "has_error": "error" in pts_obj.data.attributes,
            "has_track_length": "track_length" in pts_obj.data.attributes}
        box = sc.find_region(scene, data.source)
        out["region"] = {"display_type": box.display_type, "renders": not box.hide_render}
        roi_m = sc.region_matrix(frame, box)
        inv = np.linalg.inv(roi_m)
        local = cm.transform_points(inv, data.points)
        roi = data.roi
        inside_roi = np.all((data.points >= roi["box_min"]) & (data.points <= roi["box_max"]), axis=1)
        out["region_inside"] = float(np.mean(np.all(np.abs(local[inside_roi]) <= 1.0, axis=1)))
        out["most_common_size"] = list(data.common_size())
        out["resolution"] = [scene.render.resolution_x, scene.render.resolution_y]
        out["cameras"] = [_round_trip(scene, by_image[c.name], c.K, c.c2w, c.width, c.height, data.points, M)
                          for c in data.cameras]
        out["meshes"] = _meshes_in_frame(ext, scene, frame, data, Path(job).parent)
        assert bpy.ops.neusblend.import_capture(directory=job) == {"FINISHED"}
        out["collections_with_source"] = sum(1 for c in bpy.data.collections if c.get(sc.SOURCE_PROP) == data.source)
        out["after_reimport"] = _roles(sc.capture_collection(sc.find_capture(scene, data.source)))
        return out
    finally:
        ext.disable()


def case_import_other(data: str) -> dict[str, Any]:
    import bpy

    ext = _headless().enable_extension()
    try:
        cm = client("camera_math")
        scene = bpy.context.scene
        result = bpy.ops.neusblend.import_capture(directory=data)
        sc = _ext_module(ext, "scene.capture")
        cd = client("capture_data")
        frame = sc.find_capture(scene, cd.capture_key(data))
        collection = sc.capture_collection(frame)
        bpy.context.view_layer.update()
        M = _array(frame.matrix_world)
        roi_m = sc.region_matrix(frame, sc.find_region(scene, cd.capture_key(data)))
        rng = np.random.default_rng(0)
        pts = cm.transform_points(roi_m, rng.uniform(-1, 1, (400, 3)))  # no sparse points: random ones in the box
        cams = []
        for obj in collection.all_objects:
            if obj.get("neusblend_role") != "camera":
                continue
            K = np.reshape(obj["neusblend_K"], (3, 3))
            c2w = np.linalg.inv(M) @ _array(obj.matrix_world)
            c2w[:3, :3] /= np.linalg.norm(c2w[:3, :3], axis=0)
            c2w = c2w @ cm.CV_TO_GL
            cams.append(_round_trip(scene, obj, K, c2w, obj["neusblend_width"], obj["neusblend_height"], pts, M))
        return {"result": sorted(result), "roles": _roles(collection), "cameras": cams}
    finally:
        ext.disable()


def case_region_training(job: str, photos: str, python: str, job_root: str) -> dict[str, Any]:
    import bpy
    from mathutils import Matrix

    ext = _headless().enable_extension()
    try:
        runner = _ext_module(ext, "scene.runner")
        prefs = bpy.context.preferences.addons[ext.module_name].preferences
        prefs.python_path, prefs.job_root, prefs.device, prefs.preview_interval = python, job_root, "cpu", 0.0
        settings = bpy.context.scene.neusblend
        # as after Estimate Poses on these photos
        settings.images_dir, settings.poses_job, settings.poses_images = photos, job, photos
        settings.preset, settings.max_image_size, settings.steps = "preview", 120, 200
        settings.mesh_every, settings.mesh_resolution, settings.final_resolution = 0.0, 16, 32
        assert bpy.ops.neusblend.import_capture(directory=job) == {"FINISHED"}
        sc = _ext_module(ext, "scene.capture")
        source = client("capture_data").capture_key(job)
        frame, box = sc.find_capture(bpy.context.scene, source), sc.find_region(bpy.context.scene, source)
        move, scale = (0.15, -0.1, 0.2), 0.8
        runs = []
        for attempt in range(2):
            if attempt == 1:  # the user moves (Blender units), turns and shrinks the box
                box.matrix_world = Matrix.Translation(move) @ box.matrix_world
                box.scale = box.scale * scale
                box.rotation_euler.rotate_axis("Z", 0.3)
            bpy.context.view_layer.update()
            expected = sc.region_matrix(frame, box)
            assert bpy.ops.neusblend.reconstruct() == {"FINISHED"}
            job_state = runner.active()
            t0 = time.monotonic()
            start = None
            while runner.poll():
                start = job_state.pipeline.state.start
                if start is not None and start.get("command") == "train":
                    break
                assert time.monotonic() - t0 < 300, "no start message"
                time.sleep(0.05)
            assert start is not None, job_state.state
            argv = job_state.pipeline.steps[-1].argv
            runner.cancel()
            runner.wait(timeout=60)
            runs.append({"argv": argv, "normalization": start["normalization"], "expected_matrix": expected.tolist()})
        return {"runs": runs, "frame": frame.name, "frame_matrix": _array(frame.matrix_world).tolist(),
                "move": list(move), "scale": scale}
    finally:
        ext.disable()


CASES: dict[str, Callable[..., dict[str, Any]]] = {
    "import_job": case_import_job,
    "import_other": case_import_other,
    "region_training": case_region_training,
}


if __name__ == "__main__":
    blender_harness.case_main(CASES)
