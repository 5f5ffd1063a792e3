"""The pipelines the operators start, built from plain settings (no bpy).

- reconstruct: check the backend Python, estimate poses when the folder holds plain photos, train.
- poses: estimate poses only (with Blender's own Python and the bundled pycolmap when it imports).
- environment: create a virtual environment, install the backend's requirements into it, check it.
- extract, continue: refining a finished job from its checkpoint.

:func:`job_summary` is the panel's line about a job that has ended.
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..backend import protocol
from .datasets import FolderCheck
from .interpreter import (
    BACKEND_REQUIREMENTS,
    backend_argv,
    clean_environment,
    extension_root,
    report_from_run,
    venv_python,
)
from .jobstate import ErrorInfo, JobState, format_duration
from .pipeline import Pipeline, Step
from .process import BackendProcess

PRESETS = tuple(protocol.PRESETS)
DEVICES = ("auto", "cpu", "cuda")


@dataclass
class TrainOptions:
    """The training knobs the panel exposes; 0 means "the preset's value"."""

    preset: str = "default"
    steps: int = 0
    max_image_size: int = 0
    mesh_every_s: float = 0.0
    mesh_resolution: int = 0
    final_resolution: int = 0
    device: str = "auto"
    inline_meshes: bool = False
    roi: str = ""  # a region-of-interest JSON file (``train --roi``), written by the client beside the job folder
    exit_on_stdin_close: bool = True  # the backend stops when our end of its stdin closes (a crashed Blender)
    extra: tuple[str, ...] = ()  # more ``train`` arguments, e.g. ("--set", "target_samples=4096")

    def args(self) -> list[str]:
        """The ``train`` arguments for these options."""
        out = ["--preset", self.preset, "--device", self.device]
        if self.exit_on_stdin_close:
            out.append("--exit-on-stdin-close")
        if self.roi:
            out += ["--roi", self.roi]
        if self.steps > 0:
            out += ["--steps", str(self.steps)]
        if self.max_image_size > 0:
            out += ["--max-image-size", str(self.max_image_size)]
        if self.mesh_every_s > 0:
            out += ["--mesh-every", f"{self.mesh_every_s:g}"]
        if self.mesh_resolution > 0:
            out += ["--mesh-resolution", str(self.mesh_resolution)]
        if self.final_resolution > 0:
            out += ["--final-resolution", str(self.final_resolution)]
        if self.inline_meshes:
            out.append("--inline-meshes")
        return out + list(self.extra)


def new_job_dir(root: str | os.PathLike[str], images: str | os.PathLike[str]) -> Path:
    """A fresh job folder name under ``root``: ``20250131-142501-<photo folder name>`` (not created)."""
    stem = re.sub(r"[^\w.-]+", "_", Path(str(images).rstrip("/\\")).name or "job")[:40]
    base = Path(root) / f"{time.strftime('%Y%m%d-%H%M%S')}-{stem}"
    path, i = base, 1
    while path.exists() or path.with_suffix(".log").exists():
        i += 1
        path = base.with_name(f"{base.name}-{i}")
    return path


# ---------------------------------------------------------------------------------------------------------------
# steps


def _verify_interpreter(state: JobState, proc: BackendProcess) -> ErrorInfo | None:
    report = report_from_run(proc.argv[0], [state.done] if state.done else [], proc.returncode, proc.log_tail())
    return None if report.ok else report.error


def check_step(python: str, cwd: str) -> Step:
    """``python -m backend info``: fails the job (with a hint) unless the interpreter can train."""
    return Step("check", "Checking the backend Python", backend_argv(python, "info"), clean_environment(), cwd,
                python=python, verify=_verify_interpreter)


def pose_interpreter(backend_python: str) -> tuple[str, list[str]]:
    """The interpreter for ``poses`` and the folders it needs on PYTHONPATH.

    Blender's own Python (``sys.executable``) when pycolmap and Pillow import here (the extension's wheels), so
    poses work before any torch environment exists; else the backend interpreter.
    """
    paths: list[str] = []
    for module in ("pycolmap", "PIL", "numpy"):
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.submodule_search_locations:
            return backend_python, []
        paths.append(str(Path(list(spec.submodule_search_locations)[0]).parent))
    return sys.executable, list(dict.fromkeys(paths))


def poses_step(python: str, pythonpath: list[str], images: Path, job_dir: Path, cwd: str,
               masks: str = "") -> Step:
    """``python -m backend poses --images DIR --out JOB_DIR [--masks DIR]``."""
    args = ["--images", str(images), "--out", str(job_dir)]
    if masks:
        args += ["--masks", masks]
    return Step("poses", "Estimating poses", backend_argv(python, "poses", args), clean_environment(pythonpath), cwd,
                python=python)


def train_step(python: str, data: Path, job_dir: Path, options: TrainOptions, cwd: str, masks: str = "") -> Step:
    """``python -m backend train --data DIR --out JOB_DIR [--masks DIR] ...``."""
    args = ["--data", str(data), "--out", str(job_dir), *(["--masks", masks] if masks else []), *options.args()]
    return Step("train", "Training", backend_argv(python, "train", args), clean_environment(), cwd, python=python)


def reconstruct_pipeline(python: str, folder: FolderCheck, job_dir: Path, options: TrainOptions, *,
                         masks: str = "", posed_job: str = "", check: bool = True) -> Pipeline:
    """Check, (poses,) train. ``posed_job`` reuses the poses of an earlier Estimate Poses run.

    ``masks`` go to ``poses`` for plain photos (which undistorts them into the poses job, where training finds
    them) and to ``train --masks`` for a posed capture; a reused poses job keeps the masks it was estimated with.
    """
    cwd = str(job_dir.parent)
    steps = [check_step(python, cwd)] if check else []
    train_masks = ""
    if folder.kind == "posed":
        data = folder.path
        train_masks = masks if folder.layout != "job" else ""  # a job's photos are undistorted: its own masks
    elif posed_job:
        data = Path(posed_job)
    else:
        pose_python, paths = pose_interpreter(python)
        steps.append(poses_step(pose_python, paths, folder.path, job_dir, cwd, masks))
        data = job_dir
    steps.append(train_step(python, data, job_dir, options, cwd, train_masks))
    return Pipeline("reconstruct", steps, log_path=job_dir.with_suffix(".log"))


def poses_pipeline(backend_python: str, folder: FolderCheck, job_dir: Path, masks: str = "") -> Pipeline:
    """Estimate poses only."""
    pose_python, paths = pose_interpreter(backend_python)
    step = poses_step(pose_python, paths, folder.path, job_dir, str(job_dir.parent), masks)
    return Pipeline("poses", [step], log_path=job_dir.with_suffix(".log"))


def export_capture_pipeline(backend_python: str, data: str | os.PathLike[str], out_dir: Path) -> Pipeline:
    """``python -m backend export-capture --data CAPTURE --out DIR``: any posed capture the backend can load,
    written as a poses job's files for the Blender import, with the interpreter :func:`pose_interpreter` chooses
    (Blender's own Python when its wheels import, else ``backend_python``). ``out_dir`` must exist."""
    python, paths = pose_interpreter(backend_python)
    argv = backend_argv(python, "export-capture", ["--data", str(data), "--out", str(out_dir)])
    step = Step("export", "Reading the capture", argv, clean_environment(paths), str(out_dir), python=python)
    return Pipeline("export", [step])


def environment_pipeline(base_python: str, venv_dir: Path, log_path: Path | None = None) -> Pipeline:
    """Create ``venv_dir`` with ``base_python``, install :data:`BACKEND_REQUIREMENTS`, check the result."""
    py = str(venv_python(venv_dir))
    cwd = str(venv_dir.parent)
    env = clean_environment()
    env.pop("PYTHONPATH", None)  # venv and pip need nothing of ours
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    steps = [
        Step("venv", "Creating the environment", [base_python, "-m", "venv", str(venv_dir)], env, cwd,
             protocol=False, python=base_python),
        Step("pip", "Installing torch and friends (large download)",
             [py, "-m", "pip", "install", "--progress-bar", "off", *BACKEND_REQUIREMENTS], env, cwd,
             protocol=False, python=py),
        check_step(py, str(extension_root())),
    ]
    return Pipeline("environment", steps, log_path=log_path)


# ---------------------------------------------------------------------------------------------------------------
# refining a finished job (its checkpoint)


def side_log(job_dir: Path, what: str) -> Path:
    """A log beside the job folder for a later command on it (``<job>.<what>.log``; only the backend writes
    inside the job folder)."""
    return job_dir.parent / f"{job_dir.name}.{what}.log"


def extract_pipeline(python: str, job_dir: Path, resolution: int, *, roi: str = "", device: str = "auto",
                     out: Path | None = None) -> Pipeline:
    """``python -m backend extract --checkpoint JOB --resolution R [--roi FILE]``: one mesh, streamed as final."""
    args = ["--checkpoint", str(job_dir), "--resolution", str(resolution), "--device", device]
    if roi:
        args += ["--roi", roi]
    if out is not None:
        args += ["--out", str(out)]
    step = Step("extract", f"Extracting at {resolution}^3", backend_argv(python, "extract", args),
                clean_environment(), str(job_dir.parent), python=python)
    return Pipeline("extract", [step], log_path=side_log(job_dir, f"extract-{resolution}"))


def continue_pipeline(python: str, job_dir: Path, more_steps: int, *, preset: str = "", device: str = "auto",
                      mesh_every_s: float = 0.0, check: bool = True) -> Pipeline:
    """``train --resume --out JOB --more-steps N [--preset P]``: the job's checkpoint trains on, streaming meshes.

    ``preset`` (optional) brings that preset's schedule, sampling and mesh settings; the network stays the
    checkpoint's.
    """
    args = ["--out", str(job_dir), "--resume", "--more-steps", str(more_steps), "--device", device,
            "--exit-on-stdin-close"]
    if preset:
        args += ["--preset", preset]
    if mesh_every_s > 0:
        args += ["--mesh-every", f"{mesh_every_s:g}"]
    cwd = str(job_dir.parent)
    steps = [check_step(python, cwd)] if check else []
    steps.append(Step("train", "Training on", backend_argv(python, "train", args), clean_environment(), cwd,
                      python=python))
    return Pipeline("continue", steps, log_path=side_log(job_dir, time.strftime("continue-%Y%m%d-%H%M%S")))


# ---------------------------------------------------------------------------------------------------------------
# what a finished job says


def job_summary(pipeline: Pipeline, object_name: str = "", meshes_applied: int = 0, last_step_applied: int = -1
                ) -> str:
    """The panel's one-line summary of a job that has ended ("" while it runs).

    Args:
        pipeline: the job (its name says which pipeline of this module it is).
        object_name: the mesh object the job's meshes went into.
        meshes_applied: how many meshes reached that object.
        last_step_applied: the training step of the last one.
    """
    s = pipeline.state
    if s.status == "done":
        if pipeline.name == "reconstruct":
            done = pipeline.result("train") or {}
            took = format_duration(done.get("elapsed_s"))
            return f"Finished {done.get('steps', s.step)} steps" + (f" in {took}" if took else "") + \
                f"; mesh in '{object_name}'"
        if pipeline.name == "extract":
            done = pipeline.result("extract") or {}
            return f"Extracted {done.get('n_faces', '?')} faces at {done.get('resolution', '?')}^3 into " \
                f"'{object_name}'"
        if pipeline.name == "continue":
            done = pipeline.result("train") or {}
            return f"Trained on to step {done.get('steps', s.step)}; mesh in '{object_name}'"
        if pipeline.name == "poses":
            done = pipeline.result("poses") or {}
            report = done.get("report") if isinstance(done.get("report"), dict) else {}
            reg = report.get("registered", done.get("n_registered"))
            n = report.get("total", done.get("n_images"))
            return f"Poses: {reg} of {n} photos registered" if reg is not None else "Poses estimated"
        return "Finished"
    if s.status == "cancelled":
        return "Cancelled" + (f"; the mesh of step {last_step_applied} stays" if meshes_applied else "")
    if s.status == "failed":
        return f"Failed during: {s.stage}" if s.stage else "Failed"
    return ""
