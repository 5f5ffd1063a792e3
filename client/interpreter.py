"""Finding and checking a Python that can run the backend, and the clean environment it runs in (no bpy).

Blender's own Python has numpy but no torch, so training runs in another interpreter: the one set in the add-on
preferences, or one found by :func:`detect` among well-known places (virtual environments, conda, ``python3`` on
PATH). An interpreter is checked by running ``python -m backend info --json`` in it, never by importing anything
into Blender.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .jobstate import ErrorInfo, explain_failure
from .process import BackendProcess, LaunchError

#: What ``Create Backend Environment`` installs (pip names).
BACKEND_REQUIREMENTS = ("torch", "numpy", "pillow", "PyMCubes", "pycolmap")

#: Modules the training backend needs, as ``info`` reports them (``has_<name>``), with their pip names.
TRAIN_MODULES = {"torch": "torch", "numpy": "numpy", "PIL": "pillow", "mcubes": "PyMCubes"}

#: Environment variables of Blender's process that must not leak into the backend's Python.
_STRIP_ENV = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONEXECUTABLE", "PYTHONSAFEPATH", "PYTHONUSERBASE",
              "PYTHONNOUSERSITE", "VIRTUAL_ENV", "__PYVENV_LAUNCHER__")

#: Environment variable naming an interpreter to prefer (studios set it for batch runs).
ENV_PYTHON = "NEUSBLEND_PYTHON"

IS_WINDOWS = sys.platform == "win32"


def extension_root() -> Path:
    """The folder that holds ``backend/`` (the extension itself, or the source checkout)."""
    return Path(__file__).resolve().parent.parent


def clean_environment(pythonpath: Sequence[str | os.PathLike[str]] = (), base: Mapping[str, str] | None = None
                      ) -> dict[str, str]:
    """The backend's environment: ours without Blender's Python settings, with the extension on PYTHONPATH.

    Args:
        pythonpath: more folders to put after the extension root (e.g. where Blender installed pycolmap).
        base: the environment to start from (default: this process's).
    """
    env = {k: v for k, v in (os.environ if base is None else base).items() if k not in _STRIP_ENV}
    paths = [str(extension_root()), *(str(p) for p in pythonpath)]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONIOENCODING"] = "utf-8"
    return env


def backend_argv(python: str, command: str, args: Sequence[str] = ()) -> list[str]:
    """``[python, -m, backend, command, --json, *args]``."""
    return [python, "-m", "backend", command, "--json", *[str(a) for a in args]]


# ---------------------------------------------------------------------------------------------------------------
# checking one interpreter


@dataclass
class InterpreterReport:
    """What ``python -m backend info`` said about an interpreter (or why it could not say anything)."""

    python: str
    ok: bool = False  # it can train: torch, numpy, pillow and PyMCubes are there
    info: dict[str, Any] = field(default_factory=dict)
    error: ErrorInfo | None = None
    seconds: float = 0.0

    @property
    def has_pycolmap(self) -> bool:
        return bool(self.info.get("has_pycolmap"))

    @property
    def cuda(self) -> bool:
        return bool(self.info.get("cuda"))

    def summary(self) -> str:
        """One line for the preferences: ``Python 3.11.7, torch 2.13.0 (CUDA: NVIDIA H100)`` or the problem."""
        if self.error is not None:
            return self.error.message
        text = f"Python {self.info.get('python', '?')}, torch {self.info.get('torch', '?')}"
        if self.info.get("cuda"):
            text += f" (CUDA: {self.info.get('cuda_device', 'yes')})"
        else:
            text += " (CPU only)"
        return text


def missing_modules(info: Mapping[str, Any]) -> list[str]:
    """The pip names of the training requirements that ``info`` reports missing."""
    return [pip for mod, pip in TRAIN_MODULES.items() if not info.get(f"has_{mod}")]


def report_from_run(python: str, messages: Iterable[Mapping[str, Any]], returncode: int | None,
                    log_tail: list[str]) -> InterpreterReport:
    """Judge an interpreter from the messages and exit of its ``info`` run."""
    report = InterpreterReport(python)
    done = next((m for m in messages if m.get("type") == "done"), None)
    error = next((m for m in messages if m.get("type") == "error"), None)
    if done is not None and isinstance(done.get("info"), dict):
        report.info = dict(done["info"])
        missing = missing_modules(report.info)
        if missing:
            report.error = ErrorInfo(
                f"the Python at {python} lacks {', '.join(missing)}",
                f"Install them into it ({python} -m pip install {' '.join(missing)}), choose another Python in "
                "the add-on preferences, or press Create Backend Environment.")
        else:
            report.ok = True
    elif error is not None:
        report.error = ErrorInfo(str(error["message"]), str(error.get("hint") or ""), str(error.get("file") or ""))
    else:
        report.error = explain_failure(returncode, log_tail, python)
    return report


def probe(python: str, timeout: float = 120.0) -> InterpreterReport:
    """Run ``python -m backend info --json`` and judge the interpreter (blocks up to ``timeout`` seconds)."""
    t0 = time.monotonic()
    proc = BackendProcess(backend_argv(python, "info"), env=clean_environment(), cwd=str(extension_root()))
    try:
        proc.start()
    except LaunchError as exc:
        return InterpreterReport(python, error=ErrorInfo(exc.message, exc.hint), seconds=time.monotonic() - t0)
    messages: list[dict[str, Any]] = []
    try:
        while not proc.finished:
            messages += proc.read()
            if time.monotonic() - t0 > timeout:
                proc.stop(2.0)
                return InterpreterReport(python, error=ErrorInfo(
                    f"the Python at {python} did not answer within {timeout:.0f} s",
                    "Check that it starts from a terminal; a first torch import can be slow, so try again."),
                    seconds=time.monotonic() - t0)
            time.sleep(0.05)
        messages += proc.read()
    finally:
        proc.close()
    report = report_from_run(python, messages, proc.returncode, proc.log_tail())
    report.seconds = time.monotonic() - t0
    return report


# ---------------------------------------------------------------------------------------------------------------
# finding interpreters


def venv_python(venv: str | os.PathLike[str]) -> Path:
    """The interpreter inside a virtual environment or conda environment folder."""
    venv = Path(venv)
    if IS_WINDOWS:
        for rel in ("Scripts/python.exe", "python.exe"):
            if (venv / rel).exists():
                return venv / rel
        return venv / "Scripts" / "python.exe"
    return venv / "bin" / "python"


def candidates(preferred: Iterable[str | os.PathLike[str]] = ()) -> list[str]:
    """Interpreters worth checking, most likely first, existing files only, without duplicates.

    Order: ``preferred`` (the preference and the add-on's own environment), ``$NEUSBLEND_PYTHON``, the active
    conda and virtual environments, environments in well-known folders of the home directory, ``python3`` and
    ``python`` on PATH, and this process's interpreter last.
    """
    home = Path.home()
    found: list[str] = [str(p) for p in preferred if str(p)]
    for var in (ENV_PYTHON,):
        if os.environ.get(var):
            found.append(os.environ[var])
    for var in ("CONDA_PREFIX", "VIRTUAL_ENV"):
        if os.environ.get(var):
            found.append(str(venv_python(os.environ[var])))
    for name in (".venv", "venv", ".virtualenvs/*", "venvs/*", ".venvs/*"):
        found += [str(venv_python(p)) for p in sorted(glob.glob(str(home / name)))]
    for conda in ("miniconda3", "anaconda3", "miniforge3", "mambaforge", "micromamba", ".conda", "opt/conda"):
        root = home / conda
        found.append(str(venv_python(root)))
        found += [str(venv_python(p)) for p in sorted(glob.glob(str(root / "envs" / "*")))]
    for exe in ("python3", "python"):
        which = shutil.which(exe)
        if which:
            found.append(which)
    if sys.executable:
        found.append(sys.executable)
    out: list[str] = []
    for path in found:
        path = os.path.abspath(os.path.expanduser(path))
        if path not in out and os.path.isfile(path) and os.access(path, os.X_OK):
            out.append(path)
    return out


def detect(paths: Iterable[str], budget_s: float = 90.0, timeout_each: float = 60.0
           ) -> tuple[InterpreterReport | None, list[InterpreterReport]]:
    """Check interpreters in order; the first that can train, and every report made (blocks, within budget)."""
    t0 = time.monotonic()
    reports: list[InterpreterReport] = []
    for path in paths:
        left = budget_s - (time.monotonic() - t0)
        if left <= 1.0:
            break
        report = probe(path, timeout=min(timeout_each, left))
        reports.append(report)
        if report.ok:
            return report, reports
    return None, reports


def base_python_for_venv() -> str:
    """A Python 3.10+ to create the backend environment with: ``python3`` on PATH, else this interpreter.

    Blender's bundled Python can make a virtual environment too (it ships venv and ensurepip).
    """
    for exe in ("python3", "python"):
        which = shutil.which(exe)
        if not which:
            continue
        try:
            out = subprocess.run([which, "-c", "import sys, venv, ensurepip; print(sys.version_info >= (3, 10))"],
                                 capture_output=True, text=True, timeout=20, check=False)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if out.returncode == 0 and out.stdout.strip() == "True":
            return which
    return sys.executable
