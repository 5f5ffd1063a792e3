"""What several operators share: the backend interpreter, the one-job rule, the preferences they read, how a start
is reported. Operators import these from here, never from each other."""

import os

import bpy

from .. import preferences
from ..client import interpreter
from ..client.scene import runner


def refuse_if_busy(op: bpy.types.Operator) -> bool:
    """True (after telling the user) while a job runs: a second one is refused."""
    job = runner.active()
    if job is None:
        return False
    op.report({"WARNING"}, f"A {job.pipeline.name} job is running ({job.state.stage}); cancel it first")
    return True


def configured_python() -> str:
    """The Backend Python set in the preferences (absolute), or ""."""
    prefs = preferences.get()
    return bpy.path.abspath(prefs.python_path.strip()) if prefs and prefs.python_path.strip() else ""


def backend_python(op: bpy.types.Operator, context: bpy.types.Context) -> str | None:
    """The backend interpreter: the preference, else ``$NEUSBLEND_PYTHON``, else one detected now (and remembered
    in the preferences); None (after telling the user) when none is found."""
    configured = configured_python()
    if configured:
        return configured  # the check step reports what is wrong with it
    env_python = os.environ.get(interpreter.ENV_PYTHON, "")
    if env_python:
        return env_python
    if context.window:
        context.window.cursor_set("WAIT")
    found, reports = interpreter.detect(
        interpreter.candidates([interpreter.venv_python(preferences.managed_venv())]), budget_s=45.0)
    if context.window:
        context.window.cursor_set("DEFAULT")
    prefs = preferences.get()
    if found is None:
        tried = ", ".join(r.python for r in reports) or "none found"
        status = context.window_manager.neusblend_status
        status.set_error("no Python with torch was found for the backend",
                         "Set one in the add-on preferences (Backend Python), or press Create Backend "
                         f"Environment there. Checked: {tried}")
        op.report({"ERROR"}, "No Python with torch was found; set one in the add-on preferences")
        return None
    if prefs is not None:
        prefs.python_path = found.python
        prefs.python_status = found.summary()
    return found.python


def device() -> str:
    """The Device preference ("auto", "cpu", "cuda")."""
    prefs = preferences.get()
    return prefs.device if prefs is not None else "auto"


def preview_interval() -> float:
    """The Preview Interval preference: the least seconds between two live mesh updates."""
    prefs = preferences.get()
    return float(prefs.preview_interval) if prefs is not None else 1.0


def report_start(op: bpy.types.Operator, job: runner.ActiveJob, what: str) -> None:
    """Tell the user that ``what`` started, or why it could not (a launch failure is also in the panel)."""
    if job.state.status == "failed" and job.state.error is not None:
        # a warning (not an error) so scripts are not interrupted
        op.report({"WARNING"}, f"{what} could not start: {job.state.error.message}")
    else:
        op.report({"INFO"}, f"{what} started (job folder {job.job_dir})")
