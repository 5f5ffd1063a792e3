"""The add-on's client without Blender: real backend processes, real broken interpreters, real input folders.

The client package uses relative imports (``..backend``), as it does inside the installed extension, so these tests
load the repository root as a package under a private name instead of importing ``client`` top-level.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from extension_package import PKG, client  # noqa: E402

posix_only = pytest.mark.skipif(sys.platform == "win32", reason="process groups and signals as on POSIX")




# ---------------------------------------------------------------------------------------------------------------
# interpreters that fail in real ways


def make_bare_python(folder: Path, with_numpy: bool) -> Path:
    """A real virtual environment without torch; with numpy (linked from this Python's) or without it."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True)
    python = folder / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")
    if with_numpy:
        import numpy

        site = Path(numpy.__file__).resolve().parent.parent
        only = folder / "numpy_only"
        only.mkdir()
        for name in ("numpy", "numpy.libs"):
            if (site / name).exists():
                os.symlink(site / name, only / name, target_is_directory=True)
        purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                 capture_output=True, text=True, check=True).stdout.strip()
        Path(purelib, "numpy_only.pth").write_text(str(only) + "\n")
    return python


def make_crashing_python(folder: Path) -> Path:
    """An executable that dies of SIGSEGV as soon as it starts (as a broken interpreter build does)."""
    exe = folder / "python-crash"
    exe.write_text("#!/bin/sh\nkill -SEGV $$\n")
    exe.chmod(0o755)
    return exe


@pytest.fixture(scope="module")
def broken_pythons(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    base = tmp_path_factory.mktemp("pythons")
    return {
        "missing": str(base / "no-such-dir" / "python"),
        "no_numpy": str(make_bare_python(base / "bare", with_numpy=False)),
        "no_torch": str(make_bare_python(base / "numpy_only_env", with_numpy=True)),
        "crash": str(make_crashing_python(base)),
    }


def has_torch() -> bool:
    return importlib.util.find_spec("torch") is not None


# ---------------------------------------------------------------------------------------------------------------
# probing interpreters


@pytest.mark.skipif(not has_torch(), reason="this Python has no torch")
def test_probe_accepts_this_python() -> None:
    report = client("interpreter").probe(sys.executable)
    assert report.ok, report.error
    assert report.info["has_torch"] and report.info["python"]
    assert "torch" in report.summary()


def test_probe_missing_interpreter(broken_pythons: dict[str, str]) -> None:
    report = client("interpreter").probe(broken_pythons["missing"])
    assert not report.ok
    assert "does not exist" in report.error.message
    assert "preferences" in report.error.hint


def test_probe_python_without_numpy(broken_pythons: dict[str, str]) -> None:
    report = client("interpreter").probe(broken_pythons["no_numpy"])
    assert not report.ok
    assert "lacks the module 'numpy'" in report.error.message
    assert "Create Backend Environment" in report.error.hint


def test_probe_python_without_torch(broken_pythons: dict[str, str]) -> None:
    report = client("interpreter").probe(broken_pythons["no_torch"])
    assert not report.ok
    assert report.info["has_numpy"] and not report.info["has_torch"]
    assert "lacks torch" in report.error.message
    assert "pip install torch" in report.error.hint


@posix_only
def test_probe_crashing_interpreter(broken_pythons: dict[str, str]) -> None:
    report = client("interpreter").probe(broken_pythons["crash"])
    assert not report.ok
    assert "SIGSEGV" in report.error.message
    assert "crashed" in report.error.hint


def test_detect_skips_broken_and_finds_torch(broken_pythons: dict[str, str]) -> None:
    interp = client("interpreter")
    paths = [broken_pythons["no_numpy"], broken_pythons["no_torch"], sys.executable]
    found, reports = interp.detect(paths)
    if not has_torch():
        assert found is None
        return
    assert found is not None and found.python == sys.executable
    assert [r.ok for r in reports] == [False, False, True]


def test_candidates_are_existing_executables(tmp_path: Path) -> None:
    interp = client("interpreter")
    found = interp.candidates([tmp_path / "nothing-here", sys.executable])
    assert sys.executable in found or os.path.abspath(sys.executable) in found
    assert all(os.access(p, os.X_OK) for p in found)
    assert str(tmp_path / "nothing-here") not in found


def test_clean_environment_drops_blender_python_settings() -> None:
    interp = client("interpreter")
    env = interp.clean_environment(["/extra"], base={"PYTHONHOME": "/blender/python", "PYTHONPATH": "/blender/lib",
                                                     "PATH": "/usr/bin", "VIRTUAL_ENV": "/v"})
    assert "PYTHONHOME" not in env and "VIRTUAL_ENV" not in env
    assert env["PYTHONPATH"].split(os.pathsep) == [str(ROOT), "/extra"]
    assert env["PYTHONUNBUFFERED"] == "1" and env["PATH"] == "/usr/bin"


# ---------------------------------------------------------------------------------------------------------------
# processes


def test_info_process_messages_and_exit() -> None:
    process, interp = client("process"), client("interpreter")
    proc = process.BackendProcess(interp.backend_argv(sys.executable, "info"), env=interp.clean_environment(),
                                  cwd=str(ROOT))
    proc.start()
    messages: list[dict] = []
    t0 = time.monotonic()
    while not proc.finished and time.monotonic() - t0 < 120:
        messages += proc.read()
        time.sleep(0.02)
    messages += proc.read()
    proc.close()
    assert proc.returncode == 0
    assert [m["type"] for m in messages] == ["start", "done"]
    state = client("jobstate").JobState()
    for m in messages:
        state.handle(m)
    assert state.command == "info" and state.done is not None


def test_backend_argument_error_is_explained() -> None:
    """A real argparse rejection from the backend becomes a message about mismatched versions."""
    process, interp, jobstate = client("process"), client("interpreter"), client("jobstate")
    proc = process.BackendProcess(interp.backend_argv(sys.executable, "info", ["--no-such-option"]),
                                  env=interp.clean_environment(), cwd=str(ROOT))
    proc.start()
    while not proc.finished:
        time.sleep(0.02)
    state = jobstate.JobState(status="running")
    for m in proc.read():
        state.handle(m)
    state.finish(proc.returncode, proc.log_tail(), sys.executable)
    assert state.status == "failed"
    assert "rejected its arguments" in state.error.message and "--no-such-option" in state.error.message


@posix_only
def test_stop_ends_the_whole_process_group() -> None:
    """terminate/kill reach the children the process started, not only the process itself."""
    process = client("process")
    code = textwrap.dedent("""
        import subprocess, sys, time, signal
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a child that ignores SIGTERM needs the SIGKILL
        child = subprocess.Popen([sys.executable, "-c", "import signal, time; "
                                  "signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"])
        print(child.pid, flush=True)
        time.sleep(600)
    """)
    proc = process.BackendProcess([sys.executable, "-c", code], protocol=False)
    proc.start()
    t0 = time.monotonic()
    while not proc.log_tail() and time.monotonic() - t0 < 30:
        time.sleep(0.05)
    child = int(proc.log_tail()[-1])
    assert process.group_alive(proc.pid)
    t0 = time.monotonic()
    proc.stop(timeout=1.0)
    assert time.monotonic() - t0 < 10
    assert proc.returncode == -signal.SIGKILL
    time.sleep(0.2)
    assert not process.group_alive(proc.pid)
    assert pid_gone(child)  # the grandchild too


def pid_gone(pid: int) -> bool:
    """No such process, or only a zombie left (killed, waiting for a parent that may never reap it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    return stat.is_file() and stat.read_text().rsplit(")", 1)[-1].split()[0] == "Z"


# ---------------------------------------------------------------------------------------------------------------
# failure explanations and state


def test_explain_failure_by_signal() -> None:
    jobstate = client("jobstate")
    killed = jobstate.explain_failure(-9, ["step 3"], "/py")
    assert "SIGKILL" in killed.message and "memory" in killed.hint
    stopped = jobstate.explain_failure(-15, [], "/py", cancel_requested=True)
    assert "stopped" in stopped.message


def test_state_cancel_and_done() -> None:
    jobstate = client("jobstate")
    s = jobstate.JobState(status="running")
    s.handle({"type": "progress", "step": 5, "total": 10, "loss": 0.1, "psnr": 20.0, "samples_per_s": 2e6,
              "eta_s": 65})
    assert s.fraction == 0.5 and "ETA 1:05" in s.progress_text() and "2.0M samples/s" in s.metrics_text()
    s.handle({"type": "done", "mesh": "/j/meshes/final.npz", "cancelled": True, "steps": 5})
    s.finish(0, [])
    assert s.status == "cancelled"
    meshes = s.take_meshes()
    assert meshes[-1]["final"] and meshes[-1]["path"] == "/j/meshes/final.npz"


# ---------------------------------------------------------------------------------------------------------------
# input folders


def test_input_folders(data_dir: Path, tmp_path: Path) -> None:
    check = client("datasets").check_input_folder
    dtu = check(data_dir / "dtu_scan65")
    assert (dtu.kind, dtu.layout) == ("posed", "neus")
    temple = check(data_dir / "middlebury" / "templeSparseRing")
    assert (temple.kind, temple.layout) == ("posed", "middlebury")
    photos = check(data_dir / "sacre_coeur")
    assert photos.kind == "photos" and photos.n_images == 10
    empty = check(tmp_path)
    assert empty.kind == "" and "no photos" in empty.problem and empty.hint
    missing = check(tmp_path / "nope")
    assert "does not exist" in missing.problem
    unset = check("")
    assert "no photo folder" in unset.problem


def test_photos_pipeline_estimates_poses_then_trains_on_the_job(data_dir: Path, tmp_path: Path) -> None:
    """Plain photos: check, poses (into the job folder), then train with that job folder as its data."""
    jobs, datasets = client("jobs"), client("datasets")
    job_dir = jobs.new_job_dir(tmp_path, data_dir / "sacre_coeur")
    assert job_dir.parent == tmp_path and job_dir.name.endswith("-sacre_coeur")
    options = jobs.TrainOptions(preset="preview", steps=10, device="cpu", extra=("--set", "seed=1"))
    photos = datasets.check_input_folder(data_dir / "sacre_coeur")
    pipe = jobs.reconstruct_pipeline("/py", photos, job_dir, options, masks=str(tmp_path / "masks"))
    assert [s.key for s in pipe.steps] == ["check", "poses", "train"]
    poses, train = pipe.steps[1].argv, pipe.steps[2].argv
    assert poses[poses.index("--out") + 1] == str(job_dir) and poses[poses.index("--masks") + 1].endswith("masks")
    assert train[:5] == ["/py", "-m", "backend", "train", "--json"]
    assert train[train.index("--data") + 1] == str(job_dir) and train[-2:] == ["--set", "seed=1"]
    posed = datasets.check_input_folder(data_dir / "dtu_scan65")
    pipe = jobs.reconstruct_pipeline("/py", posed, job_dir, options)
    assert [s.key for s in pipe.steps] == ["check", "train"]
    assert pipe.steps[1].argv[pipe.steps[1].argv.index("--data") + 1] == str(data_dir / "dtu_scan65")


# ---------------------------------------------------------------------------------------------------------------
# the split by dependency: client (no bpy), its scene wing (bpy), operators, panels


def _relative_imports(path: Path) -> list[tuple[int, str, list[str]]]:
    """(level, module, names) of every ``from . import`` / ``from ..x import`` in a file."""
    import ast

    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [(n.level, n.module or "", [a.name for a in n.names]) for n in ast.walk(tree)
            if isinstance(n, ast.ImportFrom) and n.level > 0]


def test_client_modules_import_without_bpy_or_torch() -> None:
    """Every module of ``client/`` outside its scene wing imports in a plain Python, and pulls in neither bpy nor
    torch (this Python has both, so an import of either would succeed and show up)."""
    modules = sorted(p.stem for p in (ROOT / "client").glob("*.py") if p.stem != "__init__")
    code = textwrap.dedent(f"""
        import importlib, sys, types
        pkg = types.ModuleType("nbcheck"); pkg.__path__ = [{str(ROOT)!r}]; sys.modules["nbcheck"] = pkg
        for name in {modules!r}:
            importlib.import_module("nbcheck.client." + name)
        print(sorted(m for m in ("bpy", "mathutils", "bmesh", "torch") if m in sys.modules))
        print(sorted(m for m in sys.modules if m.startswith("nbcheck.client.scene")))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:2] == ["[]", "[]"], out.stdout
    assert len(modules) >= 10  # process, pipeline, jobstate, jobs, interpreter, feed, camera_math, ...


def test_panels_never_import_operators_and_operators_share_one_helper_module() -> None:
    """Panels name operators by ``bl_idname`` only; an operator module imports no other operator module than
    ``operators/common.py``; the scene wing imports no operators or panels."""
    for path in (ROOT / "panels").glob("*.py"):
        for level, module, _ in _relative_imports(path):
            assert not (level == 2 and module.startswith("operators")), (path.name, module)
    for path in (ROOT / "operators").glob("*.py"):
        if path.name == "__init__.py":
            continue
        for level, module, names in _relative_imports(path):
            if level == 1:
                assert module == "common", (path.name, module, names)
    for path in (ROOT / "client" / "scene").glob("*.py"):
        for level, module, _ in _relative_imports(path):
            assert not (level == 3 and module.split(".")[0] in ("operators", "panels")), (path.name, module)


# ---------------------------------------------------------------------------------------------------------------
# the snapshot feed (what the runner reads and applies when)


def _snapshot(path: Path, n: int) -> Path:
    import numpy as np

    protocol = importlib.import_module(f"{PKG}.backend.protocol")
    v = np.random.default_rng(n).random((n + 3, 3)).astype(np.float32)
    f = np.array([[0, 1, 2]] * n, dtype=np.int32).reshape(-1, 3)
    return protocol.write_snapshot(path, v, f)


def _drain(feed: types.SimpleNamespace | object, active: bool = True, timeout: float = 10.0) -> None:
    """Pump until nothing is being read (the reads run on the feed's worker thread)."""
    deadline = time.monotonic() + timeout
    while not feed.idle and time.monotonic() < deadline:  # type: ignore[attr-defined]
        feed.pump(time.monotonic(), producer_active=active)  # type: ignore[attr-defined]
        time.sleep(0.01)


def test_feed_applies_the_newest_snapshot_and_throttles_previews(tmp_path: Path) -> None:
    feed_mod, jobstate = client("feed"), client("jobstate")
    applied: list[tuple[int, int]] = []
    state = jobstate.JobState()
    feed = feed_mod.SnapshotFeed(tmp_path, state, lambda m, a: applied.append((m["step"], len(a["faces"]))) or True,
                                 preview_interval_s=60.0)
    for step in (1, 2, 3):  # announced faster than read: only the newest is read
        feed.offer({"type": "mesh", "step": step, "path": str(_snapshot(tmp_path / f"s{step}.npz", step))})
    _drain(feed)
    assert applied == [(3, 3)]
    feed.offer({"type": "mesh", "step": 4, "path": "s4.npz"})  # relative to the job folder
    _snapshot(tmp_path / "s4.npz", 4)
    for _ in range(20):  # a preview within the interval waits while the job runs ...
        feed.pump(time.monotonic())
        time.sleep(0.01)
    assert applied == [(3, 3)] and not feed.idle
    _drain(feed, active=False)  # ... and is read at once when the job has ended
    assert applied == [(3, 3), (4, 4)] and feed.idle and not feed.final_applied


def test_feed_keeps_the_final_mesh_first_and_once(tmp_path: Path) -> None:
    feed_mod, jobstate = client("feed"), client("jobstate")
    applied: list[int] = []
    editable = [False]
    state = jobstate.JobState()
    feed = feed_mod.SnapshotFeed(tmp_path, state, lambda m, a: applied.append(m["step"]) or True,
                                 lambda: editable[0], preview_interval_s=0.0)
    final = str(_snapshot(tmp_path / "final.npz", 5))
    feed.offer({"type": "mesh", "step": 9, "path": final, "final": True})
    feed.offer({"type": "mesh", "step": 8, "path": str(_snapshot(tmp_path / "late.npz", 2))})  # never overtakes
    for _ in range(50):  # read, but the object is not editable (Edit Mode): it waits
        feed.pump(time.monotonic())
        time.sleep(0.01)
    assert applied == [] and not feed.idle
    feed.offer({"type": "mesh", "step": 9, "path": final, "final": True, "from_done": True})  # the same, from done
    editable[0] = True
    _drain(feed)
    assert applied == [9] and feed.final_applied
    feed.offer({"type": "mesh", "step": 9, "path": final, "final": True, "from_done": True})
    _drain(feed)
    assert applied == [9] and feed.idle


def test_feed_survives_a_missing_snapshot_and_an_empty_one(tmp_path: Path) -> None:
    feed_mod, jobstate = client("feed"), client("jobstate")
    state = jobstate.JobState()
    feed = feed_mod.SnapshotFeed(tmp_path, state, lambda m, a: len(a["faces"]) > 0, preview_interval_s=0.0)
    feed.offer({"type": "mesh", "step": 1, "path": str(tmp_path / "gone.npz"), "final": True})
    _drain(feed)
    assert len(feed.errors) == 1 and "step 1" in state.warnings[-1] and not feed.final_applied
    _snapshot(tmp_path / "empty.npz", 0)
    feed.offer({"type": "mesh", "step": 2, "path": str(tmp_path / "empty.npz"), "final": True})
    _drain(feed)
    assert not feed.final_applied  # apply declined it: a later final mesh still counts
    feed.enabled = False  # shutting down at quit: announced snapshots are dropped unread
    feed.offer({"type": "mesh", "step": 3, "path": str(_snapshot(tmp_path / "s3.npz", 3))})
    feed.pump(time.monotonic())
    assert feed.idle
    feed.close()


def test_job_summary_of_each_ending(tmp_path: Path) -> None:
    jobs, pipeline, jobstate = client("jobs"), client("pipeline"), client("jobstate")
    p = pipeline.Pipeline("reconstruct", [])
    p.state.status = "done"
    p.state.results["train"] = {"steps": 800, "elapsed_s": 224.0}
    assert jobs.job_summary(p, "Dog NeuS", 3, 800) == "Finished 800 steps in 3:44; mesh in 'Dog NeuS'"
    p = pipeline.Pipeline("poses", [], state=jobstate.JobState(status="done"))
    p.state.results["poses"] = {"report": {"registered": 80, "total": 84}}
    assert jobs.job_summary(p) == "Poses: 80 of 84 photos registered"
    p = pipeline.Pipeline("extract", [], state=jobstate.JobState(status="done"))
    p.state.results["extract"] = {"n_faces": 1200, "resolution": 256}
    assert jobs.job_summary(p, "Crop") == "Extracted 1200 faces at 256^3 into 'Crop'"
    p = pipeline.Pipeline("continue", [], state=jobstate.JobState(status="cancelled"))
    assert jobs.job_summary(p, "M", 2, 120) == "Cancelled; the mesh of step 120 stays"
    assert jobs.job_summary(p, "M", 0) == "Cancelled"
    p = pipeline.Pipeline("reconstruct", [], state=jobstate.JobState(status="failed", stage="Estimating poses"))
    assert jobs.job_summary(p) == "Failed during: Estimating poses"
    p.state.status = "running"
    assert jobs.job_summary(p) == ""


# ---------------------------------------------------------------------------------------------------------------
# the panel's capture and a job's training data, without bpy


def test_capture_for_photos_and_trained_on(tmp_path: Path) -> None:
    cd = client("capture_data")
    protocol = importlib.import_module(f"{PKG}.backend.protocol")
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(3):
        (photos / f"{i}.jpg").write_bytes(b"\xff\xd8")
    job = tmp_path / "job"
    (job / "poses" / "sparse").mkdir(parents=True)
    (job / "poses" / "cameras.json").write_text('{"images": []}')
    assert cd.capture_for_photos(str(photos), str(job), str(photos)) == str(job)  # estimated from these photos
    assert cd.capture_for_photos(str(photos), str(job), str(tmp_path / "other")) == ""  # from other photos
    assert cd.capture_for_photos(str(photos), str(tmp_path / "gone"), str(photos)) == ""  # deleted since
    assert cd.capture_for_photos(str(job), "", "") == str(job)  # a posed capture is its own
    assert cd.capture_for_photos("", str(job), str(photos)) == ""
    layout = protocol.JobLayout(tmp_path / "trained")
    assert cd.trained_on(layout) == ""  # no config.json
    layout.root.mkdir()
    layout.config.write_text(json.dumps({"data": str(job)}))
    assert cd.trained_on(layout) == cd.capture_key(job) == str((job / "poses").resolve())
    layout.config.write_text("{not json")
    assert cd.trained_on(layout) == ""


# ---------------------------------------------------------------------------------------------------------------
# the refine tools' array work, without bpy


def test_part_labels_and_fan_triangles() -> None:
    import numpy as np

    ma = client("mesh_arrays")
    # a quad (0 1 2 3), a triangle sharing its edge 2-3 (2 3 4), and a lone triangle (5 6 7); vertex 8 is unused
    corner = np.array([0, 1, 2, 3, 2, 3, 4, 5, 6, 7])
    start, total = np.array([0, 4, 7]), np.array([4, 3, 3])
    labels = ma.part_labels(9, corner, np.repeat(np.arange(3), total))
    assert labels[0] == labels[4] != labels[5] == labels[7] and len(set(labels.tolist())) == 3
    tris, poly = ma.fan_triangles(corner, start, total)
    assert tris.tolist() == [[0, 1, 2], [0, 2, 3], [2, 3, 4], [5, 6, 7]] and poly.tolist() == [0, 0, 1, 2]


def test_support_plane_polygons_drop_the_table_only() -> None:
    """A closed box standing on a large grid of quads: the grid's polygons go, the box's stay."""
    import numpy as np

    ma = client("mesh_arrays")
    n = 20
    g = np.linspace(-2.0, 2.0, n + 1)
    gx, gy = np.meshgrid(g, g, indexing="ij")
    grid_v = np.stack([gx.ravel(), gy.ravel(), np.zeros(gx.size)], 1)
    idx = np.arange(gx.size).reshape(n + 1, n + 1)
    quads = np.stack([idx[:-1, :-1], idx[1:, :-1], idx[1:, 1:], idx[:-1, 1:]], -1).reshape(-1, 4)
    cube_v = np.array([[x, y, z] for x in (-0.5, 0.5) for y in (-0.5, 0.5) for z in (0.2, 1.2)])
    cube_q = np.array([[0, 1, 3, 2], [4, 6, 7, 5], [0, 2, 6, 4], [1, 5, 7, 3], [0, 4, 5, 1], [2, 3, 7, 6]])
    vertices = np.concatenate([grid_v, cube_v])
    polys = np.concatenate([quads, cube_q + len(grid_v)])
    corner = polys.ravel()
    tris, poly = ma.fan_triangles(corner, np.arange(0, corner.size, 4), np.full(len(polys), 4))
    drop, report = ma.support_plane_polygons(vertices, tris, poly, len(polys), up=(0.0, 0.0, 1.0))
    assert report["plane"]["found"] and abs(abs(report["plane"]["normal"][2]) - 1.0) < 1e-6
    assert sorted(drop.tolist()) == list(range(len(quads)))


def test_check_bake_memory_names_a_size_that_fits() -> None:
    ma = client("mesh_arrays")
    with pytest.raises(ma.MeshToolError, match=r"choose (\d+) px or less") as err:
        ma.check_bake_memory(16384, available=2 * 1024**3)
    fits = int(str(err.value).rsplit("choose ", 1)[1].split(" ")[0])
    ma.check_bake_memory(fits, available=2 * 1024**3)  # the size it names passes
    ma.check_bake_memory(2048, available=None if ma.available_memory() is None else 1 << 40)


def test_export_capture_runs_with_blenders_python_or_else_the_backend_python(
        tmp_path: Path, broken_pythons: dict[str, str]) -> None:
    """``export-capture`` goes through the pose interpreter choice: this Python (Blender's, in the add-on) when
    pycolmap, Pillow and numpy import here, with their folders on PYTHONPATH; the backend Python in a Python that
    has numpy but neither Pillow nor pycolmap (a real one)."""
    jobs = client("jobs")
    step = jobs.export_capture_pipeline("/backend/python", tmp_path / "capture", tmp_path).steps[0]
    assert step.argv == [sys.executable, "-m", "backend", "export-capture", "--json", "--data",
                         str(tmp_path / "capture"), "--out", str(tmp_path)] and step.cwd == str(tmp_path)
    import PIL

    assert str(Path(PIL.__file__).parent.parent) in step.env["PYTHONPATH"].split(os.pathsep)
    code = textwrap.dedent(f"""
        import importlib, sys, types
        pkg = types.ModuleType("nbcheck"); pkg.__path__ = [{str(ROOT)!r}]; sys.modules["nbcheck"] = pkg
        jobs = importlib.import_module("nbcheck.client.jobs")
        print(jobs.export_capture_pipeline("/backend/python", "cap", {str(tmp_path)!r}).steps[0].argv[0])
    """)
    out = subprocess.run([broken_pythons["no_torch"], "-c", code], capture_output=True, text=True, timeout=120,
                         check=False)
    assert out.returncode == 0 and out.stdout.strip() == "/backend/python", out.stderr
