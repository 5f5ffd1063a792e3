"""What a new user meets with bad inputs and faults: foreign checkpoints, existing output folders, damaged photos,
full disks, broken camera files, moved captures, captures that cannot train well, the headless script's outputs.

Every case runs the real backend as a subprocess (``python -m backend ... --json``) on real files (a copy of the
Middlebury temple, trained for a few steps at 48 px) and checks its JSON lines and exit status; the Blender cases use
the real bpy module.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # also when a Blender case runs this file as a script
from blender_harness import case_main, headless, run_case  # noqa: E402

from backend import protocol  # noqa: E402

THIS = Path(__file__)
TEMPLE = "middlebury/templeSparseRing"
#: A short CPU training: 48 px images, a small sample budget and grid, a 32^3 final mesh.
TINY = ("--preset", "preview", "--max-image-size", "48", "--mesh-every", "0", "--final-resolution", "32",
        "--device", "cpu", "--set", "target_samples=2048", "--set", "grid_resolution=32")

needs_bpy = pytest.mark.skipif(importlib.util.find_spec("bpy") is None, reason="needs the bpy module")


def run_backend(*args: str, timeout: float = 600, umask: int | None = None) -> tuple[int, list[dict], str]:
    """``python -m backend ARGS --json``: (exit status, its messages, its stderr)."""
    proc = subprocess.run([sys.executable, "-m", "backend", *args, "--json"], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                          preexec_fn=(lambda: os.umask(umask)) if umask is not None else None)
    msgs = [protocol.decode_message(line) for line in proc.stdout.splitlines() if line.strip()]
    return proc.returncode, msgs, proc.stderr


def the_error(msgs: list[dict]) -> dict:
    errors = [m for m in msgs if m["type"] == "error"]
    assert len(errors) == 1, msgs
    assert "bug in the backend" not in errors[0]["hint"], errors[0]
    return errors[0]


def warnings_of(msgs: list[dict]) -> list[str]:
    return [m["message"] for m in msgs if m["type"] == "warning"]


def copy_capture(data_dir: Path, dest: Path, *, jpeg: bool = False, keep: int | None = None) -> Path:
    """A private copy of the Middlebury temple (``jpeg``: its photos as JPEG files; ``keep``: only the first
    cameras)."""
    src = data_dir / TEMPLE
    dest.mkdir(parents=True)
    par = next(src.glob("*_par.txt"))
    lines = [ln for ln in par.read_text().splitlines() if ln.strip()][1:]
    lines = lines[:keep] if keep else lines
    out_lines = []
    for ln in lines:
        name = ln.split()[0]
        if jpeg:
            new = Path(name).with_suffix(".jpg").name
            Image.open(src / name).convert("RGB").save(dest / new, quality=92)
            ln = ln.replace(name, new, 1)
        else:
            shutil.copyfile(src / name, dest / name)
        out_lines.append(ln)
    (dest / par.name).write_text(f"{len(out_lines)}\n" + "\n".join(out_lines) + "\n")
    return dest


@pytest.fixture(scope="module")
def capture(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_capture(data_dir, tmp_path_factory.mktemp("trust") / "temple")


@pytest.fixture(scope="module")
def trained_job(capture: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three training steps on the temple copy: a job folder with a checkpoint and a mesh."""
    job = tmp_path_factory.mktemp("trust_job") / "job"
    code, msgs, err = run_backend("train", "--data", str(capture), "--out", str(job), "--steps", "3", *TINY)
    assert code == 0, err[-3000:]
    return job


def copy_job(job: Path, dest: Path) -> Path:
    shutil.copytree(job, dest)
    return dest


# ---------------------------------------------------------------------------------------------------------------
# checkpoints


class _Trap:
    """Pickles into "call open(marker, 'w')": unpickling it creates the marker file (a stand-in for any code)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.marker, "w"))


def write_trap_checkpoint(path: Path, marker: Path) -> None:
    """A checkpoint-looking file whose unpickling would run code; checked to do so when loaded unsafely."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format": "neusblend-checkpoint", "version": 2, "step": 1, "config": {}, "field": {},
                "trap": _Trap(str(marker))}, path)
    torch.load(path, weights_only=False)  # what the backend used to do: the marker appears
    assert marker.exists()
    marker.unlink()


def test_checkpoints_hold_only_tensors_and_plain_data(trained_job: Path) -> None:
    import torch

    ckpt = torch.load(trained_job / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
    assert ckpt["format"] == "neusblend-checkpoint" and ckpt["version"] == 2 and ckpt["step"] == 3
    assert np.asarray(ckpt["to_world"]).shape == (4, 4) and isinstance(ckpt["to_world"], list)
    assert isinstance(ckpt["data"], str) and isinstance(ckpt["config"], dict)


def test_a_checkpoint_that_would_run_code_is_refused_everywhere(trained_job: Path, capture: Path,
                                                                tmp_path: Path) -> None:
    """extract, train --resume and eval refuse it (exit 2, naming the file) and the code never runs."""
    job = copy_job(trained_job, tmp_path / "job")
    marker = tmp_path / "code-ran"
    ckpt = job / "checkpoints" / "last.pt"
    write_trap_checkpoint(ckpt, marker)
    for args in (("extract", "--checkpoint", str(job), "--resolution", "16", "--device", "cpu"),
                 ("train", "--out", str(job), "--resume", "--more-steps", "1", "--device", "cpu"),
                 ("eval", "--checkpoint", str(job), "--data", str(capture), "--device", "cpu")):
        code, msgs, _ = run_backend(*args)
        assert code == protocol.EXIT_ERROR, (args[0], msgs)
        err = the_error(msgs)
        assert err["file"] == str(ckpt) and "Python objects" in err["message"], err
        assert "--out NEW_JOB" in err["hint"], err
        assert not marker.exists(), f"{args[0]} ran the checkpoint's code"


def test_old_foreign_and_damaged_checkpoints_are_refused_clearly(trained_job: Path, tmp_path: Path) -> None:
    import torch

    from backend.checkpoint import load_checkpoint

    job = copy_job(trained_job, tmp_path / "job")
    ckpt_path = job / "checkpoints" / "last.pt"
    good = load_checkpoint(ckpt_path)
    plain = torch.load(ckpt_path, weights_only=True)
    cases = {
        # what this project wrote before: numpy arrays inside, no marker
        "old": ({**{k: v for k, v in plain.items() if k != "format"}, "version": 1,
                 "to_world": np.asarray(good["to_world"])}, "Python objects"),
        "foreign": ({"state_dict": {"w": torch.zeros(2)}}, "not a NeuS Blend checkpoint"),
        "incomplete": ({k: v for k, v in plain.items() if k != "config"}, "lacks config"),
        "newer": ({**plain, "version": 99}, "version 99"),
        "wrong shapes": ({**plain, "field": {k: torch.zeros(1) for k in plain["field"]}}, "does not fit"),
    }
    for name, (doc, expected) in cases.items():
        torch.save(doc, ckpt_path)
        code, msgs, _ = run_backend("extract", "--checkpoint", str(job), "--resolution", "16", "--device", "cpu")
        assert code == protocol.EXIT_ERROR, name
        err = the_error(msgs)
        assert expected in err["message"] and err["file"] == str(ckpt_path), (name, err)
    ckpt_path.write_bytes(b"PK\x03\x04 cut short by a full disk")
    code, msgs, _ = run_backend("train", "--out", str(job), "--resume", "--device", "cpu")
    assert code == protocol.EXIT_ERROR and "damaged" in the_error(msgs)["message"]


# ---------------------------------------------------------------------------------------------------------------
# output folders


def test_train_refuses_a_folder_that_is_not_a_job(capture: Path, tmp_path: Path) -> None:
    mine = tmp_path / "my documents"
    mine.mkdir()
    (mine / "thesis.txt").write_text("years of work")
    (mine / "config.json").write_text('{"mine": true}')
    code, msgs, _ = run_backend("train", "--data", str(capture), "--out", str(mine), "--steps", "1", *TINY)
    assert code == protocol.EXIT_ERROR
    err = the_error(msgs)
    assert err["file"] == str(mine) and "not a NeuS Blend job folder" in err["message"], err
    assert sorted(p.name for p in mine.iterdir()) == ["config.json", "thesis.txt"]
    assert (mine / "config.json").read_text() == '{"mine": true}'


def test_training_again_into_our_job_replaces_only_our_files(trained_job: Path, capture: Path,
                                                             tmp_path: Path) -> None:
    job = copy_job(trained_job, tmp_path / "job")
    (job / "notes.txt").write_text("the user's")
    old_snapshot = job / "meshes" / "step_0000099.npz"
    shutil.copyfile(job / "meshes" / "final.npz", old_snapshot)
    before = {p: p.stat().st_mtime_ns for p in (job / "config.json", job / "mesh.ply",
                                                 job / "checkpoints" / "last.pt")}
    time.sleep(0.01)
    code, msgs, err = run_backend("train", "--data", str(capture), "--out", str(job), "--steps", "2", *TINY,
                                  umask=0o027)
    assert code == 0, err[-3000:]
    assert any("earlier training run" in w and "replaced" in w for w in warnings_of(msgs)), msgs
    assert (job / "notes.txt").read_text() == "the user's" and not old_snapshot.exists()
    for p, t in before.items():
        assert p.stat().st_mtime_ns > t, p
    # our files get the umask's permissions (0o666 & ~0o027), not a temporary file's 0600
    for p in (job / "config.json", job / "mesh.ply", job / "checkpoints" / "last.pt", job / "meshes" / "final.npz",
              job / protocol.JOB_MARKER):
        assert p.stat().st_mode & 0o777 == 0o640, (p, oct(p.stat().st_mode))
    assert protocol.read_job_marker(job)["kinds"] == ["train"]


def test_job_folders_of_earlier_versions_and_poses_jobs_are_ours(trained_job: Path, tmp_path: Path) -> None:
    import io

    from backend.errors import BackendError
    from backend.training.jobfolder import prepare_job_folder

    legacy = copy_job(trained_job, tmp_path / "legacy")
    (legacy / protocol.JOB_MARKER).unlink()
    out = io.StringIO()
    prepare_job_folder(legacy, protocol.Emitter(out))
    assert "earlier training run" in out.getvalue()
    assert protocol.read_job_marker(legacy)["kind"] == "train"
    poses_job = tmp_path / "poses_job"
    (poses_job / "poses").mkdir(parents=True)
    protocol.write_job_marker(poses_job, "poses")
    out = io.StringIO()
    prepare_job_folder(poses_job, protocol.Emitter(out))
    assert out.getvalue() == ""  # training into a poses job for the first time: nothing is replaced
    assert protocol.read_job_marker(poses_job) == {"kind": "poses", "kinds": ["poses", "train"], "version": 1}
    # our layout's names, but not our files: not ours
    (tmp_path / "lookalike" / "meshes").mkdir(parents=True)
    (tmp_path / "lookalike" / "config.json").write_text("not json")
    with pytest.raises(BackendError, match="not a NeuS Blend job folder"):
        prepare_job_folder(tmp_path / "lookalike")
    # a marker that is not ours is ignored
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / protocol.JOB_MARKER).write_text('{"kind": "something else"}')
    assert protocol.read_job_marker(tmp_path / "other") is None


def test_resume_after_the_capture_moved_names_data_and_cleans_stale_temporaries(trained_job: Path, capture: Path,
                                                                                 tmp_path: Path) -> None:
    from backend.checkpoint import load_checkpoint, save_checkpoint

    job = copy_job(trained_job, tmp_path / "job")
    ckpt = load_checkpoint(job / "checkpoints" / "last.pt")
    ckpt["data"] = str(tmp_path / "moved away")
    save_checkpoint(job / "checkpoints" / "last.pt", ckpt)
    code, msgs, _ = run_backend("train", "--out", str(job), "--resume", "--more-steps", "1", "--device", "cpu")
    assert code == protocol.EXIT_ERROR
    err = the_error(msgs)
    assert "--data NEW_PATH" in err["hint"] and "moved away" in err["file"], err
    # what a kill during a write leaves behind: removed when training starts in the job again
    stale = [job / "checkpoints" / ".last.pt.k1ll3d.tmp", job / "meshes" / ".final.npz.x7.tmp"]
    for p in stale:
        p.write_bytes(b"half a file")
    code, msgs, err = run_backend("train", "--out", str(job), "--resume", "--more-steps", "1", "--device", "cpu",
                                  "--mesh-every", "0", "--data", str(capture))
    assert code == 0, err[-3000:]
    assert msgs[-1]["steps"] == 4
    assert not any(p.exists() for p in stale)
    assert not protocol.stale_temporaries(job)


# ---------------------------------------------------------------------------------------------------------------
# photos and camera files


def test_a_truncated_jpeg_is_left_out_not_half_used(data_dir: Path, tmp_path: Path) -> None:
    cap = copy_capture(data_dir, tmp_path / "jpeg", jpeg=True)
    bad = cap / "templeSR0005.jpg"
    data = bad.read_bytes()
    bad.write_bytes(data[:int(len(data) * 0.85)])
    code, msgs, err = run_backend("train", "--data", str(cap), "--out", str(tmp_path / "job"), "--steps", "2", *TINY)
    assert code == 0, err[-3000:]
    start = next(m for m in msgs if m["type"] == "start")
    assert start["dataset"]["n_images"] == 15
    assert [s["name"] for s in start["dataset"]["skipped"]] == [bad.name]
    assert "truncated" in start["dataset"]["skipped"][0]["reason"]
    assert any(bad.name in w and "damaged" in w for w in warnings_of(msgs)), msgs


def test_middlebury_non_finite_camera_and_mixed_sizes(capture: Path, tmp_path: Path) -> None:
    cap = tmp_path / "cap"
    shutil.copytree(capture, cap)
    par = next(cap.glob("*_par.txt"))
    text = par.read_text()
    lines = text.splitlines()
    fields = lines[3].split()
    fields[12] = "nan"
    lines[3] = " ".join(fields)
    par.write_text("\n".join(lines) + "\n")
    code, msgs, _ = run_backend("train", "--data", str(cap), "--out", str(tmp_path / "job"), "--steps", "1", *TINY)
    assert code == protocol.EXIT_ERROR
    err = the_error(msgs)
    assert err["file"] == str(par) and "Line 4" in err["message"] and "nan" in err["message"], err
    par.write_text(text)
    # one photo resized after calibration: its K in the file no longer fits; refused, naming it
    small = cap / "templeSR0007.png"
    Image.open(small).resize((320, 240)).save(small)
    code, msgs, _ = run_backend("train", "--data", str(cap), "--out", str(tmp_path / "job2"), "--steps", "1", *TINY)
    assert code == protocol.EXIT_ERROR
    err = the_error(msgs)
    assert err["file"] == str(small) and "differ in size" in err["message"] and "320x240" in err["message"], err


def test_photos_without_poses_hint_at_commands_that_run(tmp_path: Path) -> None:
    from backend.cli import build_parser

    photos = tmp_path / "my photos"
    photos.mkdir()
    for i in range(3):
        Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(photos / f"{i}.jpg")
    code, msgs, _ = run_backend("train", "--data", str(photos), "--out", str(tmp_path / "job"))
    assert code == protocol.EXIT_ERROR
    hint = the_error(msgs)["hint"]
    commands = [shlex.split(part) for part in hint.split("`")[1::2]]
    poses, train = commands[0], commands[1]
    assert poses[:4] == ["python", "-m", "backend", "poses"] and train[:4] == ["python", "-m", "backend", "train"]
    args = build_parser(["poses"]).parse_args(poses[3:])  # argparse exits (a failure here) on a wrong command
    assert Path(args.images) == photos and args.out
    assert build_parser(["train"]).parse_args(train[3:]).data == args.out


def test_captures_that_cannot_train_well_are_warned_about(capture: Path, tmp_path: Path) -> None:
    """A poses job with two views, no sparse points and a camera its report flags: three warnings."""
    from backend.data import load_scene
    from backend.data.export import write_colmap

    scene = load_scene(capture, max_image_size=48, normalize=False).subset([0, 4])
    job = tmp_path / "poses_job"
    write_colmap(scene, job / "poses")
    (job / "poses" / "report.json").write_text(json.dumps({"suspicious": [
        {"name": "templeSR0005.png", "reason": "looks away from the others", "code": "off_axis"}]}))
    code, msgs, err = run_backend("train", "--data", str(job), "--out", str(tmp_path / "job"), "--steps", "1", *TINY)
    assert code == 0, err[-3000:]
    text = " | ".join(warnings_of(msgs))
    assert "only 2 view(s)" in text and "no sparse points" in text and "templeSR0005.png" in text, text


# ---------------------------------------------------------------------------------------------------------------
# full disk


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs; skipped where mounting is not allowed (no root, a container without the capability)."""
    mnt = tmp_path / "small_disk"
    mnt.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount command: cannot make a small disk to fill")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], capture_output=True,
                          text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN): {proc.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def fill(disk: Path, leave: int) -> None:
    """Fill ``disk`` up to ``leave`` free bytes."""
    stat = os.statvfs(disk)
    free = stat.f_bavail * stat.f_frsize
    with open(disk / f"filler{len(list(disk.glob('filler*')))}", "wb") as fh:
        fh.write(b"\0" * max(free - leave, 0))


def no_temporaries(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.endswith(".tmp")]


def test_a_full_disk_is_a_clear_error_in_train_extract_and_eval(trained_job: Path, capture: Path,
                                                                small_disk: Path) -> None:
    job = small_disk / "job"
    code, msgs, _ = run_backend("train", "--data", str(capture), "--out", str(job), "--steps", "2", *TINY)
    assert code == protocol.EXIT_ERROR
    err = the_error(msgs)
    assert "disk is full" in err["hint"] and err["file"] == str(job / "checkpoints" / "last.pt"), err
    assert not no_temporaries(job) and not (job / "checkpoints" / "last.pt").exists()
    shutil.rmtree(job)
    fill(small_disk, 16 * 1024)
    out = small_disk / "mesh.ply"  # about 55 kB: does not fit
    code, msgs, _ = run_backend("extract", "--checkpoint", str(trained_job), "--resolution", "32", "--device", "cpu",
                                "--out", str(out))
    assert code == protocol.EXIT_ERROR
    err = the_error(msgs)
    assert err["file"] == str(out) and "disk is full" in err["hint"], err
    assert not out.exists() and not no_temporaries(small_disk)
    fill(small_disk, 0)
    metrics = small_disk / "metrics.json"
    code, msgs, _ = run_backend("eval", "--mesh", str(trained_job), "--reference", str(trained_job / "mesh.ply"),
                                "--points", "1000", "--out", str(metrics))
    assert code == protocol.EXIT_ERROR
    err = the_error(msgs)
    assert err["file"] == str(metrics) and "disk is full" in err["hint"], err
    assert not metrics.exists() and not no_temporaries(small_disk)


# ---------------------------------------------------------------------------------------------------------------
# the headless script and the Blender client


def run_headless(*args: str, tmp_path: Path, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, BLENDER_USER_RESOURCES=str(tmp_path / "blender-user"))
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "reconstruct_headless.py"), *args,
                           "--job-root", str(tmp_path / "jobs"), "--python", sys.executable], env=env,
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


@needs_bpy
@pytest.mark.blender
def test_headless_checks_its_outputs_before_it_starts(capture: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "a file"
    blocker.write_text("not a folder")
    t0 = time.monotonic()
    proc = run_headless("--images", str(capture), "--out", str(tmp_path / "ok.blend"), "--out",
                        str(blocker / "mesh.ply"), "--render", str(tmp_path / "render.png"), "--preset", "preview",
                        "--steps", "2", "--max-image-size", "48", "--final-resolution", "32", "--device", "cpu",
                        tmp_path=tmp_path)  # (a short run: the script used to train first and fail at the end)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert f"error: cannot write --out {blocker / 'mesh.ply'}" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and time.monotonic() - t0 < 60
    assert not (tmp_path / "jobs").exists()  # nothing was started


@needs_bpy
@pytest.mark.blender
@pytest.mark.slow
def test_headless_lists_skipped_photos_and_names_the_file_of_an_error(data_dir: Path, tmp_path: Path) -> None:
    cap = copy_capture(data_dir, tmp_path / "jpeg", jpeg=True)
    bad = cap / "templeSR0003.jpg"
    bad.write_bytes(bad.read_bytes()[:4000])
    proc = run_headless("--images", str(cap), "--out", str(tmp_path / "out" / "mesh.ply"), "--preset", "preview",
                        "--steps", "2", "--max-image-size", "48", "--final-resolution", "32", "--device", "cpu",
                        "--set", "target_samples=2048", "--set", "grid_resolution=32", tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "skipped 1 damaged photo(s):" in proc.stderr and f"  {bad.name}: " in proc.stderr, proc.stderr
    assert (tmp_path / "out" / "mesh.ply").is_file()
    par = next(cap.glob("*_par.txt"))
    par.write_text(par.read_text().replace("0.000000 1.000000", "0.000000 inf", 1))
    proc = run_headless("--images", str(cap), "--out", str(tmp_path / "out" / "again.ply"), "--preset", "preview",
                        "--device", "cpu", tmp_path=tmp_path)
    assert proc.returncode == 2, proc.stderr[-3000:]
    line = next(ln for ln in proc.stderr.splitlines() if ln.startswith("error:"))
    assert str(par) in line and "Line 2" in line, proc.stderr


@needs_bpy
@pytest.mark.blender
def test_reextract_and_continue_in_blender_refuse_a_checkpoint_that_would_run_code(tmp_path: Path) -> None:
    job = tmp_path / "job"
    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], np.float32)
    protocol.write_snapshot(job / "meshes" / "final.npz", v, np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]]))
    protocol.write_job_marker(job, "train")
    marker = tmp_path / "code-ran"
    write_trap_checkpoint(job / "checkpoints" / "last.pt", marker)
    r = run_case(THIS, "refuse_trap", tmp_path, job=str(job), python=sys.executable)
    for key in ("reextract", "continue"):
        assert r[key]["status"] == "failed", r
        assert "Python objects" in r[key]["message"] and r[key]["file"].endswith("last.pt"), r
        assert r[key]["vertices_after"] == 4, r
    assert not marker.exists()


def case_refuse_trap(job: str, python: str) -> dict[str, Any]:
    import bpy

    for obj in list(bpy.data.objects):
        bpy.data.objects.remove(obj)
    ext = headless().enable_extension()
    runner = sys.modules[ext.module_name + ".client.scene.runner"]
    try:
        prefs = bpy.context.preferences.addons[ext.module_name].preferences
        prefs.python_path, prefs.device = python, "cpu"
        assert bpy.ops.neusblend.load_result(directory=job, object_name="Mesh") == {"FINISHED"}
        obj = bpy.data.objects["Mesh"]
        result = {}
        for key, start in (("reextract", lambda: bpy.ops.neusblend.reextract(resolution=16, target="REPLACE")),
                           ("continue", lambda: bpy.ops.neusblend.continue_training(more_steps=1))):
            bpy.context.view_layer.objects.active = obj
            assert start() == {"FINISHED"}
            done = runner.wait(timeout=300)
            status = bpy.context.window_manager.neusblend_status
            result[key] = {"status": done.state.status, "message": status.error_message,
                           "file": status.error_file, "vertices_after": len(obj.data.vertices)}
        return result
    finally:
        ext.disable()


CASES = {"refuse_trap": case_refuse_trap}


if __name__ == "__main__":
    case_main(CASES)
