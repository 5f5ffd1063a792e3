"""The add-on in real Blender (the bpy module): registration, bad input, cancel, crashes, a full headless run.

Every case runs in its own Python process with its own Blender user folder (``BLENDER_USER_RESOURCES``), so no
Blender state or environment leaks between tests: the test function runs this very file as a script with the
case's name, and the case enables the extension from this source tree exactly as the headless script does.
Timers never fire in the bpy module, so the cases drive the client with its ``poll()`` loop (``runner.wait``).
"""

from __future__ import annotations

import importlib.util
import os
import signal
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import blender_harness  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
HEADLESS = ROOT / "scripts" / "reconstruct_headless.py"

#: The backend's interpreter: this one, or $NEUSBLEND_PYTHON (e.g. to test another bpy version against a torch venv).
BACKEND_PYTHON = os.environ.get("NEUSBLEND_PYTHON") or sys.executable


def _has_module(python: str, module: str) -> bool:
    probe = f"import importlib.util, sys; sys.exit(importlib.util.find_spec({module!r}) is None)"
    return subprocess.run([python, "-c", probe], check=False).returncode == 0


def _has_torch(python: str) -> bool:
    return _has_module(python, "torch")


needs_bpy = pytest.mark.skipif(importlib.util.find_spec("bpy") is None, reason="needs the bpy module (pip install bpy)")
needs_torch = pytest.mark.skipif(not _has_torch(BACKEND_PYTHON), reason="the backend Python has no torch")
needs_train = pytest.mark.skipif(not (ROOT / "backend" / "train.py").is_file(), reason="backend/train.py missing")
pytestmark = [pytest.mark.blender, needs_bpy]

#: A training run small enough for 2 CPU cores: it still streams meshes every second and ends with colours.
TINY_TRAIN = dict(preset="preview", max_image_size=120, mesh_every=1.0, mesh_resolution=32, final_resolution=64,
                  extra_args="--set target_samples=2048")


# ---------------------------------------------------------------------------------------------------------------
# harness (pytest side)


def run_case(case: str, tmp_path: Path, timeout: float = 600, **kwargs: Any) -> dict[str, Any]:
    """Run this module's ``CASES[case](**kwargs)`` in real Blender (see tests/blender_harness.py)."""
    return blender_harness.run_case(Path(__file__), case, tmp_path, timeout, **kwargs)


def write_png(path: Path, size: int = 8) -> None:
    """A small grey PNG (the folder check looks at names only; the backend never gets that far here)."""
    raw = b"".join(b"\x00" + bytes([128] * size * 3) for _ in range(size))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)) + \
        chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    path.write_bytes(png)


@pytest.fixture()
def photos(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(3):
        write_png(folder / f"img_{i:02d}.png")
    return folder


def broken_interpreters(base: Path) -> dict[str, str]:
    """Real interpreters that cannot run the backend, built like the client tests build them."""
    spec = importlib.util.spec_from_file_location("client_tests", ROOT / "tests" / "test_blender_client.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = {"missing": str(base / "missing" / "python"),
           "no_numpy": str(mod.make_bare_python(base / "bare", with_numpy=False)),
           "no_torch": str(mod.make_bare_python(base / "numpy_only", with_numpy=True))}
    if sys.platform != "win32":
        out["crash"] = str(mod.make_crashing_python(base))
    return out


# ---------------------------------------------------------------------------------------------------------------
# tests


def test_register_unregister_leaves_nothing(tmp_path: Path, photos: Path) -> None:
    r = run_case("register_unregister", tmp_path, photos=str(photos), python=BACKEND_PYTHON)
    assert r["after"] == r["before"], "unregister left something behind"
    assert r["second"] == r["before"]
    assert r["during_types"] >= 8
    assert r["pid_gone"], "disabling the add-on must end the backend's process group"
    assert not r["timer_registered"]


def test_temporary_extension_repository_is_removed_at_exit(tmp_path: Path) -> None:
    """The headless script enables the extension through a temporary repository folder; it goes when the process
    ends, also when the extension is still enabled then or the process fails (run_case checks a clean exit)."""
    r = run_case("enable_and_leave", tmp_path, fail=False)
    assert r["repo_dir"].startswith(str(tmp_path / "tmp")) and r["linked"], r
    assert not Path(r["repo_dir"]).exists()
    tmp = tmp_path / "failing"
    tmp.mkdir()
    env = dict(os.environ, BLENDER_USER_RESOURCES=str(tmp_path / "blender-user"), TMPDIR=str(tmp))
    proc = subprocess.run([sys.executable, __file__, "enable_and_leave", '{"fail": true}'], env=env,
                          capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert proc.returncode == 1 and "the case failed on purpose" in proc.stderr, proc.stdout + proc.stderr
    assert not list(tmp.glob("neusblend-repo-*"))


def test_bad_input_is_reported_in_the_panel(tmp_path: Path, photos: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    pythons = broken_interpreters(tmp_path / "pythons")
    r = run_case("bad_inputs", tmp_path, photos=str(photos), empty=str(empty), pythons=pythons)
    assert r["empty"]["raised"] and r["empty"]["state"] == "FAILED"
    assert "holds no photos" in r["empty"]["message"] and r["empty"]["hint"]
    expected = {"missing": "does not exist", "no_numpy": "lacks the module 'numpy'", "no_torch": "lacks torch",
                "crash": "SIGSEGV"}
    for key in pythons:
        got = r[key]
        assert got["result"] == ["FINISHED"], (key, got)  # reported in the panel, never raised
        assert got["state"] == "FAILED", (key, got)
        assert expected[key] in got["message"], (key, got)
        assert got["hint"], (key, got)
        assert got["pids_gone"], (key, got)
    assert r["offline"]["raised"] and "online access" in r["offline"]["message"]


@needs_torch
def test_second_reconstruct_is_refused_and_cancel_ends_the_process(tmp_path: Path, photos: Path) -> None:
    r = run_case("refuse_and_cancel", tmp_path, photos=str(photos), python=BACKEND_PYTHON)
    assert r["first"] == ["FINISHED"] and r["second"] == ["CANCELLED"]
    assert r["state"] == "CANCELLED"
    assert r["pids_gone"]


@pytest.mark.data
@needs_torch
@needs_train
def test_quitting_blender_ends_the_backend(tmp_path: Path, data_dir: Path) -> None:
    """Leaving the interpreter while training runs, with the add-on still enabled (as when Blender quits), ends
    the backend."""
    r = run_case("quit_with_job", tmp_path, data=str(data_dir / "middlebury" / "templeSparseRing"),
                 python=BACKEND_PYTHON, job_root=str(tmp_path / "jobs"))
    if r.get("skipped"):
        pytest.skip(r["skipped"])
    assert _pid_gone(r["pid"]), "the backend must not outlive Blender"
    # the client stopped the job itself (Blender disables every add-on at exit; atexit is the fallback), so the
    # job's log is finished; a backend merely orphaned would die later of a broken pipe, its log unfinished
    log = Path(r["log"]).read_text()
    assert "backend train" in log and log.rstrip().endswith("]") and "[exit status" in log.split("backend train")[-1]


@pytest.mark.slow
@pytest.mark.data
@needs_torch
@needs_train
def test_cancel_mid_training_keeps_mesh_and_leaves_no_process(tmp_path: Path, data_dir: Path) -> None:
    r = run_case("train_then", tmp_path, action="cancel", data=str(data_dir / "middlebury" / "templeSparseRing"),
                 python=BACKEND_PYTHON, job_root=str(tmp_path / "jobs"))
    assert r["state"] == "CANCELLED", r
    assert r["pid_gone"] and r["group_gone"], r
    assert r["seconds_to_end"] < 15, r
    assert r["vertices"] > 0, "the last good mesh must stay in the scene"


@pytest.mark.slow
@pytest.mark.data
@needs_torch
@needs_train
def test_backend_killed_mid_run_is_reported(tmp_path: Path, data_dir: Path) -> None:
    r = run_case("train_then", tmp_path, action="kill", data=str(data_dir / "middlebury" / "templeSparseRing"),
                 python=BACKEND_PYTHON, job_root=str(tmp_path / "jobs"))
    assert r["state"] == "FAILED", r
    assert "SIGKILL" in r["message"] and r["hint"], r
    assert r["pid_gone"], r
    assert r["vertices"] > 0, "the last good mesh must stay in the scene"


@pytest.mark.slow
@pytest.mark.data
@needs_torch
@needs_train
def test_estimate_poses_then_reconstruct_reuses_them(tmp_path: Path, data_dir: Path) -> None:
    """Estimate Poses on unposed photos; Reconstruct then trains on that job's poses without estimating again."""
    if importlib.util.find_spec("pycolmap") is None and not _has_module(BACKEND_PYTHON, "pycolmap"):
        pytest.skip("needs pycolmap")
    r = run_case("poses_then_train", tmp_path, photos=str(data_dir / "sacre_coeur"), python=BACKEND_PYTHON,
                 job_root=str(tmp_path / "jobs"))
    assert r["poses"]["state"] == "DONE", r
    assert "of 10 photos registered" in r["poses"]["summary"], r
    assert r["poses_job"] and Path(r["poses_job"], "poses").is_dir(), r
    assert r["poses_images"] == str(data_dir / "sacre_coeur")
    assert r["train"]["state"] == "DONE", r
    assert r["train_steps"] == ["check", "train"] and r["train_data"] == r["poses_job"], r
    assert r["updates"] >= 2 and r["has_colors"], r
    # the import after Estimate Poses: its region box drives training, its frame holds the mesh
    assert r["imported"].count("camera") == 10 and {"frame", "points", "region"} <= set(r["imported"]), r
    assert "--roi" in r["train_argv"] and "--exit-on-stdin-close" in r["train_argv"], r
    assert r["mesh_parent"] == "frame", r


@pytest.mark.slow
@pytest.mark.data
@needs_torch
@needs_train
def test_headless_full_run(tmp_path: Path, data_dir: Path) -> None:
    """The batch script through the bpy module: live meshes, final colours, .blend, .ply and a Cycles render."""
    out = tmp_path / "out"
    cmd = [sys.executable, str(HEADLESS), "--images", str(data_dir / "middlebury" / "templeSparseRing"),
           "--out", str(out / "temple.blend"), "--out", str(out / "temple.ply"), "--render", str(out / "temple.png"),
           "--render-size", "160x120", "--render-samples", "4", "--preset", "preview", "--steps", "12",
           "--max-image-size", "120", "--mesh-every", "1", "--mesh-resolution", "32", "--final-resolution", "64",
           "--set", "target_samples=2048", "--device", "cpu", "--python", BACKEND_PYTHON,
           "--job-root", str(tmp_path / "jobs"), "--object", "Temple"]
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = dict(os.environ, BLENDER_USER_RESOURCES=str(tmp_path / "blender-user"), TMPDIR=str(tmp))
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    assert "done:" in proc.stdout
    assert not list(tmp.glob("neusblend-repo-*")), "the temporary extension repository must go at exit"
    r = run_case("inspect_blend", tmp_path, blend=str(out / "temple.blend"), name="Temple")
    assert r["updates"] >= 2, r  # at least one live snapshot and the final mesh
    assert r["final"] and r["vertices"] > 100 and r["faces"] > 100, r
    assert r["colors"] == r["vertices"], r
    assert r["material"] == "NeuS Vertex Colors" and r["material_uses_colors"], r
    header = (out / "temple.ply").read_bytes()[:400].decode("ascii", "replace")
    assert "element vertex" in header and "property uchar red" in header
    png = (out / "temple.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", png[16:24]) == (160, 120)


# ---------------------------------------------------------------------------------------------------------------
# cases (run inside the subprocess, with bpy)


_headless = blender_harness.headless


_ATEXIT_LIVE: list[Callable[..., Any]] = []


def _watch_atexit() -> None:
    """Record what is registered with atexit from now on (atexit cannot list its callbacks, and in Python 3.11
    ``_ncallbacks`` still counts unregistered ones)."""
    import atexit

    register, unregister = atexit.register, atexit.unregister

    def watched_register(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Callable[..., Any]:
        _ATEXIT_LIVE.append(func)
        return register(func, *args, **kwargs)

    def watched_unregister(func: Callable[..., Any]) -> None:
        _ATEXIT_LIVE[:] = [f for f in _ATEXIT_LIVE if f != func]
        unregister(func)

    atexit.register, atexit.unregister = watched_register, watched_unregister


def _snapshot() -> dict[str, Any]:
    """Everything the add-on could leave behind in Blender."""
    import bpy

    handlers = {n: len(getattr(bpy.app.handlers, n)) for n in dir(bpy.app.handlers)
                if isinstance(getattr(bpy.app.handlers, n), list)}
    return {
        "types": sorted(n for n in dir(bpy.types) if "neusblend" in n.lower()),
        "ops": sorted(dir(bpy.ops.neusblend)),
        "scene_prop": hasattr(bpy.types.Scene, "neusblend"),
        "wm_prop": hasattr(bpy.types.WindowManager, "neusblend_status"),
        "handlers": handlers,
        "add_menu": len(bpy.types.VIEW3D_MT_add._dyn_ui_initialize()),
        "atexit": sorted(getattr(f, "__qualname__", repr(f)) for f in _ATEXIT_LIVE),
        "addons": sorted(k for k in bpy.context.preferences.addons.keys() if "neusblend" in k),  # noqa: SIM118
        "repos": sorted(r.module for r in bpy.context.preferences.extensions.repos),
    }


def _pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    return stat.is_file() and stat.read_text().rsplit(")", 1)[-1].split()[0] == "Z"


def _modules(ext: Any) -> tuple[ModuleType, ModuleType]:
    return sys.modules[ext.module_name + ".client.scene.runner"], sys.modules[ext.module_name + ".client.process"]


def _prefs(ext: Any) -> Any:
    import bpy

    return bpy.context.preferences.addons[ext.module_name].preferences


def case_register_unregister(photos: str, python: str) -> dict[str, Any]:
    import concurrent.futures  # noqa: F401 - stdlib modules that register their own exit hooks on first import
    import logging  # noqa: F401

    import bpy

    _watch_atexit()
    headless = _headless()
    before = _snapshot()
    ext = headless.enable_extension()
    runner, process = _modules(ext)
    during = _snapshot()
    assert during["atexit"], "the add-on ends its backend at quit through atexit"
    assert during["scene_prop"] and during["wm_prop"] and "reconstruct" in during["ops"]
    assert during["add_menu"] == before["add_menu"] + 1
    # a running job: disabling the add-on must end its process group
    _prefs(ext).python_path = python
    _prefs(ext).job_root = str(Path(photos).parent / "jobs")
    bpy.context.scene.neusblend.images_dir = photos
    assert bpy.ops.neusblend.reconstruct() == {"FINISHED"}
    job = runner.active()
    pid = job.pipeline.pid
    assert pid and process.group_alive(pid)
    timer = runner._timer
    ext.disable()
    pid_gone = _pid_gone(pid) and not process.group_alive(pid)
    after = _snapshot()
    ext = headless.enable_extension()
    ext.disable()
    second = _snapshot()
    return {"before": before, "after": after, "second": second, "during_types": len(during["types"]),
            "pid_gone": pid_gone, "timer_registered": bpy.app.timers.is_registered(timer)}


def case_enable_and_leave(fail: bool) -> dict[str, Any]:
    """Enable the extension as the headless script does and end without disabling it (or with an error)."""
    import bpy

    ext = _headless().enable_extension()
    assert ext.module_name in bpy.context.preferences.addons
    repo_dir = ext.repo_dir
    linked = (Path(repo_dir) / "neusblend").resolve() == ROOT
    if fail:
        raise RuntimeError("the case failed on purpose")
    return {"repo_dir": repo_dir, "linked": linked}


def case_quit_with_job(data: str, python: str, job_root: str) -> dict[str, Any]:
    import bpy

    ext = _headless().enable_extension()
    runner, process = _modules(ext)
    if bpy.app.version < (5, 0, 0):  # bpy 4.x hangs at exit while add-on classes are registered
        ext.disable()
        return {"skipped": f"bpy {bpy.app.version_string} hangs at exit with registered add-ons"}
    _prefs(ext).python_path = python
    _prefs(ext).job_root = job_root
    settings = bpy.context.scene.neusblend
    settings.images_dir = data
    for key, value in TINY_TRAIN.items():
        setattr(settings, key, value)
    assert bpy.ops.neusblend.reconstruct() == {"FINISHED"}
    job = runner.active()
    t0 = time.monotonic()
    while runner.poll() and job.state.stage != "Training":
        assert time.monotonic() - t0 < 120
        time.sleep(0.05)
    pid = job.pipeline.pid
    assert pid and process.group_alive(pid)
    # the harness exits now, with the add-on still enabled and the backend training
    return {"pid": pid, "log": str(job.pipeline.log_path)}


def _status_dict(status: Any) -> dict[str, Any]:
    return {"state": status.state, "message": status.error_message, "hint": status.error_hint}


def case_bad_inputs(photos: str, empty: str, pythons: dict[str, str]) -> dict[str, Any]:
    import bpy

    ext = _headless().enable_extension()
    try:
        runner, _process = _modules(ext)
        status = bpy.context.window_manager.neusblend_status
        settings = bpy.context.scene.neusblend
        prefs = _prefs(ext)
        prefs.job_root = str(Path(photos).parent / "jobs")
        out: dict[str, Any] = {}
        settings.images_dir = empty
        try:
            bpy.ops.neusblend.reconstruct()
            raised = False
        except RuntimeError:
            raised = True
        out["empty"] = {"raised": raised, **_status_dict(status)}
        settings.images_dir = photos
        for key, python in pythons.items():
            prefs.python_path = python
            result = bpy.ops.neusblend.reconstruct()
            job = runner.wait(timeout=120)
            out[key] = {"result": sorted(result), **_status_dict(status),
                        "pids_gone": all(_pid_gone(p) for p in job.pipeline.pids)}
        try:
            bpy.ops.neusblend.create_backend_env()
            raised = False
        except RuntimeError:
            raised = True
        out["offline"] = {"raised": raised, **_status_dict(status)}
        return out
    finally:
        ext.disable()


def case_refuse_and_cancel(photos: str, python: str) -> dict[str, Any]:
    import bpy

    ext = _headless().enable_extension()
    try:
        runner, process = _modules(ext)
        _prefs(ext).python_path = python
        _prefs(ext).job_root = str(Path(photos).parent / "jobs")
        bpy.context.scene.neusblend.images_dir = photos
        first = bpy.ops.neusblend.reconstruct()
        second = bpy.ops.neusblend.reconstruct()
        job = runner.active()
        assert job is not None and job.pipeline.pid
        assert bpy.ops.neusblend.cancel() == {"FINISHED"}
        runner.wait(timeout=60)
        status = bpy.context.window_manager.neusblend_status
        return {"first": sorted(first), "second": sorted(second), "state": status.state,
                "pids_gone": all(_pid_gone(p) and not process.group_alive(p) for p in job.pipeline.pids)}
    finally:
        ext.disable()


def case_train_then(action: str, data: str, python: str, job_root: str) -> dict[str, Any]:
    """Train on a real capture until the first live mesh is in the scene, then cancel or SIGKILL the backend."""
    import bpy

    ext = _headless().enable_extension()
    try:
        runner, process = _modules(ext)
        prefs = _prefs(ext)
        prefs.python_path = python
        prefs.job_root = job_root
        prefs.device = "cpu"
        prefs.preview_interval = 0.0
        settings = bpy.context.scene.neusblend
        settings.images_dir = data
        settings.steps = 5000  # never reached: the run is ended first
        for key, value in TINY_TRAIN.items():
            setattr(settings, key, value)
        settings.object_name = "Live"
        assert bpy.ops.neusblend.reconstruct() == {"FINISHED"}
        job = runner.active()
        t0 = time.monotonic()
        while runner.poll() and (job.meshes_applied < 1 or job.state.stage != "Training"):
            assert time.monotonic() - t0 < 400, "no live mesh within 400 s"
            time.sleep(0.1)
        assert job.meshes_applied >= 1, job.state
        pid = job.pipeline.pid
        assert pid is not None
        t_end = time.monotonic()
        if action == "cancel":
            bpy.ops.neusblend.cancel()
        else:
            os.kill(pid, signal.SIGKILL)
        runner.wait(timeout=60)
        seconds = time.monotonic() - t_end
        status = bpy.context.window_manager.neusblend_status
        obj = bpy.data.objects.get("Live")
        return {**_status_dict(status), "summary": status.summary, "seconds_to_end": seconds,
                "pid_gone": _pid_gone(pid), "group_gone": not process.group_alive(pid),
                "vertices": len(obj.data.vertices) if obj else 0, "meshes_applied": job.meshes_applied}
    finally:
        ext.disable()


def case_poses_then_train(photos: str, python: str, job_root: str) -> dict[str, Any]:
    import bpy

    ext = _headless().enable_extension()
    try:
        runner, _process = _modules(ext)
        prefs = _prefs(ext)
        prefs.python_path = python
        prefs.job_root = job_root
        prefs.device = "cpu"
        prefs.preview_interval = 0.0
        settings = bpy.context.scene.neusblend
        settings.images_dir = photos
        status = bpy.context.window_manager.neusblend_status
        assert bpy.ops.neusblend.estimate_poses() == {"FINISHED"}
        runner.wait(timeout=400)
        out: dict[str, Any] = {"poses": {**_status_dict(status), "summary": status.summary},
                               "poses_job": settings.poses_job, "poses_images": settings.poses_images}
        # Estimate Poses imported the cameras, points and region box (settings.import_cameras is on by default)
        imported = sorted(str(o.get("neusblend_role")) for o in bpy.context.scene.objects if o.get("neusblend_role"))
        settings.steps = 12
        for key, value in TINY_TRAIN.items():
            setattr(settings, key, value)
        settings.object_name = "Sacre"
        assert bpy.ops.neusblend.reconstruct() == {"FINISHED"}
        job = runner.wait(timeout=600)
        train = job.pipeline.steps[-1].argv
        obj = bpy.data.objects.get("Sacre")
        out.update(train={**_status_dict(status), "summary": status.summary},
                   train_steps=[st.key for st in job.pipeline.steps], train_data=train[train.index("--data") + 1],
                   updates=int(obj.get("neusblend_updates", 0)) if obj else 0,
                   has_colors=bool(obj and obj.data.color_attributes.get("Col")),
                   train_argv=train, imported=imported,
                   mesh_parent=obj.parent.get("neusblend_role", "") if obj and obj.parent else "")
        return out
    finally:
        ext.disable()


def case_inspect_blend(blend: str, name: str) -> dict[str, Any]:
    import bpy

    bpy.ops.wm.open_mainfile(filepath=blend)
    obj = bpy.data.objects[name]
    mesh = obj.data
    col = mesh.color_attributes.get("Col")
    mat = mesh.materials[0] if len(mesh.materials) else None
    uses = bool(mat and mat.node_tree and any(n.type == "VERTEX_COLOR" and n.layer_name == "Col"
                                              for n in mat.node_tree.nodes))
    return {"updates": int(obj.get("neusblend_updates", 0)), "final": bool(obj.get("neusblend_final")),
            "vertices": len(mesh.vertices), "faces": len(mesh.polygons), "colors": len(col.data) if col else 0,
            "material": mat.name if mat else "", "material_uses_colors": uses}


CASES: dict[str, Callable[..., dict[str, Any]]] = {
    "register_unregister": case_register_unregister,
    "bad_inputs": case_bad_inputs,
    "refuse_and_cancel": case_refuse_and_cancel,
    "train_then": case_train_then,
    "poses_then_train": case_poses_then_train,
    "quit_with_job": case_quit_with_job,
    "enable_and_leave": case_enable_and_leave,
    "inspect_blend": case_inspect_blend,
}


if __name__ == "__main__":
    blender_harness.case_main(CASES)
