"""End-to-end training through the CLI on real data: streaming, silhouettes, cancel, resume, extract, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from backend import protocol
from backend.raster import mask_iou, silhouette

ROOT = Path(__file__).resolve().parents[1]


def backend_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "backend", *args, "--json"]


def run_backend(*args: str, timeout: float = 1800) -> tuple[int, list[dict], str]:
    proc = subprocess.run(backend_cmd(*args), cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdin=subprocess.DEVNULL)
    msgs = [protocol.decode_message(line) for line in proc.stdout.splitlines() if line.strip()]
    return proc.returncode, msgs, proc.stderr


@pytest.fixture(scope="module")
def dtu_run(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One short preview training on DTU scan 65 at 160 px, holding out every 8th view."""
    job = tmp_path_factory.mktemp("dtu_job")
    t0 = time.time()
    code, msgs, err = run_backend("train", "--data", str(data_dir / "dtu_scan65"), "--out", str(job),
                                  "--preset", "preview", "--steps", "400", "--max-image-size", "160",
                                  "--mesh-every", "5", "--holdout-every", "8", "--set", "eval_max_size=64")
    assert code == 0, err[-3000:]
    return {"job": job, "msgs": msgs, "seconds": time.time() - t0}


@pytest.mark.slow
def test_preview_run_streams_snapshots_and_a_final_mesh(dtu_run: dict) -> None:
    msgs = dtu_run["msgs"]
    types = [m["type"] for m in msgs]
    assert types.count("start") == 1 and types[-1] == "done"
    start = next(m for m in msgs if m["type"] == "start")
    assert start["path"] == "reference" and start["dataset"]["has_masks"] and start["n_holdout"] == 7
    progress = [m for m in msgs if m["type"] == "progress"]
    assert progress[-1]["step"] == 400 and all(m["samples_per_s"] > 0 for m in progress)
    assert all(m.get("eta_s") is not None for m in progress)
    # samples behind the surface are left out once it is opaque (cull_transmittance): fewer trained than marched
    assert all(m["marched"] >= m["samples"] for m in progress) and progress[-1]["marched"] > progress[-1]["samples"]
    meshes = [m for m in msgs if m["type"] == "mesh"]
    snapshots = [m for m in meshes if not m["final"]]
    assert len(snapshots) >= 2, f"only {len(snapshots)} snapshots streamed in {dtu_run['seconds']:.0f} s"
    assert [m["step"] for m in snapshots] == sorted(m["step"] for m in snapshots)
    for m in meshes:
        snap = protocol.read_snapshot(m["path"])
        assert len(snap["vertices"]) == m["n_vertices"] and len(snap["faces"]) == m["n_faces"] > 100
        assert snap["colors"].shape == (m["n_vertices"], 3)
    assert meshes[-1]["final"] and Path(msgs[-1]["mesh"]) == Path(meshes[-1]["path"])
    assert Path(msgs[-1]["ply"]).is_file() and Path(msgs[-1]["checkpoint"]).is_file()
    assert msgs[-1]["cancelled"] is False


@pytest.mark.slow
def test_final_mesh_matches_held_out_masks(dtu_run: dict, data_dir: Path) -> None:
    """The mesh is in DTU's own coordinates (millimetres) and its silhouette matches held-out masks."""
    from backend.data import load_scene

    done = dtu_run["msgs"][-1]
    snap = protocol.read_snapshot(done["mesh"])
    scene = load_scene(data_dir / "dtu_scan65", max_image_size=160)
    held = [i for i in range(len(scene)) if i % 8 == 0]
    ious = []
    for i in held:
        h, w = scene.masks[i].shape
        sil = silhouette(snap["vertices"], snap["faces"], scene.K[i], scene.c2w[i], w, h)
        ious.append(mask_iou(sil, scene.masks[i] > 127))
    # measured 0.90 mean on 2 cores after 400 steps; a mesh in the normalized frame or a broken field scores < 0.1
    assert float(np.mean(ious)) > 0.8, ious
    assert done["metrics"]["holdout_mask_iou"] > 0.8
    assert done["metrics"]["holdout_psnr"] > 15


@pytest.mark.slow
def test_sigterm_saves_checkpoint_and_mesh_then_resume_and_extract(data_dir: Path, tmp_path: Path) -> None:
    job = tmp_path / "job"
    proc = subprocess.Popen(backend_cmd("train", "--data", str(data_dir / "middlebury" / "templeSparseRing"),
                                        "--out", str(job), "--preset", "preview", "--steps", "100000",
                                        "--max-image-size", "160", "--mesh-every", "2"),
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            start_new_session=True, stdin=subprocess.DEVNULL)
    msgs: list[dict] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            msgs.append(protocol.decode_message(line))
            if msgs[-1]["type"] == "mesh":
                break
        t0 = time.time()
        os.killpg(proc.pid, signal.SIGTERM)
        rest, _ = proc.communicate(timeout=30)
        elapsed = time.time() - t0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    msgs += [protocol.decode_message(line) for line in rest.splitlines() if line.strip()]
    assert proc.returncode == protocol.EXIT_CANCELLED
    assert elapsed < 10, f"took {elapsed:.1f} s to stop"  # the design asks for 2 s; CI machines are slow
    done = msgs[-1]
    assert done["type"] == "done" and done["cancelled"] is True
    assert Path(done["checkpoint"]).is_file() and protocol.read_snapshot(done["mesh"])["faces"].shape[0] > 0
    stopped_at = done["steps"]

    code, msgs2, err = run_backend("train", "--out", str(job), "--resume", "--more-steps", "3", "--mesh-every", "0")
    assert code == 0, err[-2000:]
    start = next(m for m in msgs2 if m["type"] == "start")
    assert start["resumed_from"] == stopped_at
    assert msgs2[-1]["steps"] == stopped_at + 3

    # crop: the temple's README box in its own coordinates, cut in half along x
    lo, hi = np.array([-0.073568, 0.021728, -0.012445]), np.array([0.028855, 0.181892, 0.062736])
    mid = 0.5 * (lo[0] + hi[0])
    box = [lo[0], lo[1], lo[2], mid, hi[1], hi[2]]
    out = tmp_path / "crop.ply"
    code, msgs3, err = run_backend("extract", "--checkpoint", str(job), "--resolution", "64",
                                   "--box", *map(str, box), "--out", str(out))
    assert code == 0, err[-2000:]
    from backend.meshing import read_ply

    mesh = read_ply(str(out))
    assert len(mesh["faces"]) > 0
    tol = 2 * (hi - lo).max() / 63
    assert float(mesh["vertices"][:, 0].max()) <= mid + tol
    assert np.all(mesh["vertices"].min(0) >= lo - tol) and np.all(mesh["vertices"].max(0) <= hi + tol)


def error_of(msgs: list[dict]) -> dict:
    errors = [m for m in msgs if m["type"] == "error"]
    assert len(errors) == 1, msgs
    return errors[0]


def test_empty_folder_is_a_clear_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    code, msgs, _ = run_backend("train", "--data", str(empty), "--out", str(tmp_path / "job"))
    assert code == protocol.EXIT_ERROR
    err = error_of(msgs)
    assert str(empty) in (err.get("file") or "") and err["hint"]
    assert not (tmp_path / "job" / "meshes").exists()


def test_unwritable_job_folder_is_a_clear_error(tmp_path: Path, data_dir: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    code, msgs, _ = run_backend("train", "--data", str(data_dir / "middlebury" / "templeSparseRing"),
                                "--out", str(blocker / "job"))
    assert code == protocol.EXIT_ERROR
    assert "job" in error_of(msgs)["file"]
    assert blocker.read_text() == "not a folder"


def test_resume_without_checkpoint_and_unknown_preset(tmp_path: Path) -> None:
    code, msgs, _ = run_backend("train", "--out", str(tmp_path / "job"), "--resume")
    assert code == protocol.EXIT_ERROR and "checkpoint" in error_of(msgs)["message"]
    code, msgs, _ = run_backend("train", "--data", str(tmp_path), "--out", str(tmp_path / "j2"), "--preset", "fast")
    assert code == protocol.EXIT_ERROR and "preset" in error_of(msgs)["message"]


def test_extract_without_checkpoint(tmp_path: Path) -> None:
    code, msgs, _ = run_backend("extract", "--checkpoint", str(tmp_path), "--resolution", "64")
    assert code == protocol.EXIT_ERROR and error_of(msgs)["file"].endswith("last.pt")


def test_info_reports_torch() -> None:
    code, msgs, _ = run_backend("info")
    assert code == 0 and msgs[-1]["info"]["has_torch"] is True


def test_human_output_without_json(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "backend", "train", "--data", str(tmp_path), "--out",
                           str(tmp_path / "job")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == protocol.EXIT_ERROR
    assert "ERROR: The folder holds no capture" in proc.stdout and "hint:" in proc.stdout
    for line in proc.stdout.splitlines():
        with pytest.raises(json.JSONDecodeError):
            json.loads(line)


@pytest.fixture(scope="module")
def small_dtu(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Eight DTU views at 96 px as a NeuS folder without masks, and their masks in a folder of their own."""
    from dataclasses import replace

    from backend.data import load_scene
    from backend.data.export import write_neus

    root = tmp_path_factory.mktemp("small_dtu")
    scene = load_scene(data_dir / "dtu_scan65", max_image_size=96, normalize=False).subset(range(0, 48, 6))
    masks = scene.masks
    write_neus(replace(scene, masks=None), root / "capture")
    (root / "masks").mkdir()
    from PIL import Image

    for i, m in enumerate(masks):
        Image.fromarray(m).save(root / "masks" / f"{i:06d}.png")
    return root / "capture", root / "masks"


def test_masks_folder_and_roi_box_for_a_posed_capture(small_dtu: tuple[Path, Path], tmp_path: Path) -> None:
    capture, masks = small_dtu
    roi = tmp_path / "roi.json"
    # a box of 200 mm around the skull, in DTU millimetres, turned 30 degrees about z
    c, s = np.cos(np.pi / 6), np.sin(np.pi / 6)
    m = np.eye(4)
    m[:3, :3] = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ np.diag([100.0, 90.0, 80.0])
    m[:3, 3] = [-40.0, -30.0, 660.0]
    roi.write_text(json.dumps({"matrix": m.tolist()}))
    code, msgs, err = run_backend("train", "--data", str(capture), "--out", str(tmp_path / "job"), "--preset",
                                  "preview", "--steps", "2", "--mesh-every", "0", "--final-resolution", "32",
                                  "--masks", str(masks), "--roi", str(roi))
    assert code == 0, err[-2000:]
    start = next(msg for msg in msgs if msg["type"] == "start")
    assert start["dataset"]["has_masks"] is True
    norm = start["normalization"]
    assert norm["method"] == "box"
    np.testing.assert_allclose(norm["center"], m[:3, 3], atol=1e-6)
    assert norm["radius"] == pytest.approx(np.linalg.norm([100.0, 90.0, 80.0]), rel=1e-6)
    # a mask folder that lacks one mask is refused, naming the photo
    (masks.parent / "few").mkdir(exist_ok=True)
    code, msgs, _ = run_backend("train", "--data", str(capture), "--out", str(tmp_path / "job2"), "--masks",
                                str(masks.parent / "few"))
    assert code == protocol.EXIT_ERROR and error_of(msgs)["hint"]


def test_closing_stdin_stops_training_cleanly(small_dtu: tuple[Path, Path], tmp_path: Path) -> None:
    capture, _ = small_dtu
    proc = subprocess.Popen(backend_cmd("train", "--data", str(capture), "--out", str(tmp_path / "job"),
                                        "--preset", "preview", "--steps", "100000", "--mesh-every", "0",
                                        "--exit-on-stdin-close"),
                            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True, start_new_session=True)
    try:
        assert proc.stdout is not None and proc.stdin is not None
        for line in proc.stdout:
            if protocol.decode_message(line)["type"] == "progress":
                break
        proc.stdin.close()
        rest = proc.stdout.read()
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == protocol.EXIT_CANCELLED
    done = [protocol.decode_message(s) for s in rest.splitlines() if s.strip()][-1]
    assert done["type"] == "done" and done["cancelled"] and Path(done["checkpoint"]).is_file()


def test_training_with_difference_normals_fits_the_views(data_dir: Path, tmp_path: Path) -> None:
    """``--set normals=finite_difference``: the trainer (here on the CPU, reference path) lowers the photometric
    error on six small DTU 65 views with central-difference normals, and the eikonal term stays bounded."""
    import argparse
    import io

    from backend.data import load_scene
    from backend.train import build_config
    from backend.training.trainer import Trainer

    scene = load_scene(data_dir / "dtu_scan65", max_image_size=48).subset(range(0, 48, 8))
    cfg = build_config(argparse.Namespace(preset="preview", steps=200, set=[
        "normals=finite_difference", "target_samples=2048", "grid_resolution=32", "render_steps=128"]))
    assert cfg.normals == "finite_difference"
    tr = Trainer(scene, cfg, device="cpu", job=protocol.JobLayout(tmp_path / "job"),
                 emitter=protocol.Emitter(io.StringIO()))
    assert tr.field.cfg.normals == "finite_difference"
    out = [tr.train_step() for _ in range(50)]
    mse = [float(o["mse"]) for o in out]
    # measured: 0.041 -> 0.032 mean over the first and last ten of 60 steps
    assert np.mean(mse[-10:]) < 0.9 * np.mean(mse[:10]), (mse[:10], mse[-10:])
    assert all(np.isfinite(float(o["loss"])) for o in out)
