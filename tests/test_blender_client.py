"""The add-on's client without Blender: real backend processes, real broken interpreters, real input folders.

The client package uses relative imports (``..backend``), as it does inside the installed extension, so these tests
load the repository root as a package under a private name instead of importing ``client`` top-level.
"""

from __future__ import annotations

import importlib
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
PKG = "neusblend_under_test"

posix_only = pytest.mark.skipif(sys.platform == "win32", reason="process groups and signals as on POSIX")


def client(module: str) -> types.ModuleType:
    """``client.<module>`` of this checkout, imported as part of a package (as Blender imports it)."""
    if PKG not in sys.modules:
        pkg = types.ModuleType(PKG)
        pkg.__path__ = [str(ROOT)]
        sys.modules[PKG] = pkg
    return importlib.import_module(f"{PKG}.client.{module}")


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
