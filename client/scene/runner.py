"""The one active job of this Blender session and its ``poll()`` step (bpy glue).

``poll()`` is a plain function: in the UI a ``bpy.app.timers`` timer calls it; in ``blender -b`` and the bpy module
(where timers never fire) :func:`wait` calls it in a loop. Each call advances the job's processes, folds their
messages into the panel's status, and applies the newest mesh snapshot to the job's one mesh object. Which snapshot
is read and applied when is :class:`..feed.SnapshotFeed` (no bpy): read on a worker thread, applied here on the main
thread, previews never more often than every ``preview_interval_s`` seconds (the final mesh at once), snapshots that
a newer one has overtaken skipped.

Ending: :func:`cancel` sends SIGTERM to the backend's process group and the job kills it after a timeout;
disabling the add-on, loading another file and quitting Blender call :func:`shutdown`, which waits for that.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bpy

from ..feed import SnapshotFeed
from ..jobs import job_summary
from ..jobstate import ErrorInfo, JobState
from ..pipeline import Pipeline
from . import capture as scene_capture
from . import mesh as scene_mesh

log = logging.getLogger(__name__)

#: Seconds between timer calls while a job runs.
TIMER_INTERVAL_S = 0.2

#: Name of the WindowManager pointer property that mirrors the job for the panel (see properties.py).
STATUS_PROP = "neusblend_status"


class JobBusy(RuntimeError):
    """A job is running already; a second one is refused."""


@dataclass
class ActiveJob:
    """A running pipeline plus what the scene side needs: the mesh object and the snapshot feed
    (:class:`..feed.SnapshotFeed`, which decides what is read and applied when)."""

    pipeline: Pipeline
    job_dir: Path
    object_name: str = ""
    scene_name: str = ""
    preview_interval_s: float = 1.0
    on_finish: Callable[[ActiveJob], None] | None = None
    capture_source: str = ""  # an imported capture whose frame the mesh is parented to (capture coordinates)
    meshes_applied: int = 0
    last_step_applied: int = -1
    feed: SnapshotFeed = field(init=False)
    _finished: bool = False

    def __post_init__(self) -> None:
        self.feed = SnapshotFeed(self.job_dir, self.pipeline.state, self._apply, self._editable,
                                 preview_interval_s=self.preview_interval_s)

    @property
    def state(self) -> JobState:
        return self.pipeline.state

    @property
    def finished(self) -> bool:
        """True once the processes ended and every mesh they sent was applied."""
        return self._finished

    @property
    def final_applied(self) -> bool:
        return self.feed.final_applied

    @property
    def mesh_errors(self) -> list[str]:
        """Snapshots that could not be read (also warnings of the job)."""
        return self.feed.errors

    # ------------------------------------------------------------------ the scene side of the feed

    def _editable(self) -> bool:
        """The mesh can be replaced: its object is not in Edit or Sculpt Mode (that would lose or break edits)."""
        obj = bpy.data.objects.get(self.object_name) if self.object_name else None
        if obj is None or obj.mode == "OBJECT":
            return True
        self.state.log_line = f"Switch '{self.object_name}' to Object Mode to receive the new mesh"
        return False

    def _apply(self, msg: dict[str, Any], arrays: dict[str, Any]) -> bool:
        if len(arrays["faces"]) == 0:
            self.state.warnings.append(f"the mesh of step {msg.get('step')} is empty; keeping the last one")
            return False
        scene = bpy.data.scenes.get(self.scene_name) if self.scene_name else None
        frame = scene_capture.find_capture(scene or bpy.context.scene, self.capture_source)
        obj = scene_mesh.ensure_object(self.object_name or "Reconstruction", scene, parent=frame,
                                       collection=scene_capture.capture_collection(frame) if frame else None)
        first = self.meshes_applied == 0
        self.object_name = obj.name
        t0 = time.perf_counter()
        scene_mesh.apply_snapshot(obj, arrays["vertices"], arrays["faces"], arrays.get("colors"))
        self.meshes_applied += 1
        self.last_step_applied = int(msg.get("step") or 0)
        obj[scene_mesh.JOB_PROP] = str(self.job_dir)
        obj["neusblend_step"] = self.last_step_applied
        obj["neusblend_updates"] = int(obj.get("neusblend_updates", 0)) + 1
        obj["neusblend_final"] = self.final_applied or bool(msg.get("final"))
        log.debug("applied mesh of step %s (%d faces) in %.3f s", msg.get("step"), len(arrays["faces"]),
                  time.perf_counter() - t0)
        if first and not bpy.app.background:
            scene_mesh.frame_in_views(obj)
        return True

    # ------------------------------------------------------------------ driving

    def step(self) -> bool:
        """One poll of this job; returns True while it still needs polling."""
        if self._finished:
            return False
        now = time.monotonic()
        self.pipeline.advance()
        for msg in self.state.take_meshes():
            self.feed.offer(msg)
        self.feed.pump(now, producer_active=self.pipeline.active)
        if not self.pipeline.active and self.feed.idle:
            self._finished = True
            self.feed.close()
            if self.on_finish is not None:
                try:
                    self.on_finish(self)
                except Exception as exc:  # a callback must not break the poll loop
                    log.exception("job finish callback failed")
                    self.state.warnings.append(f"after the job: {exc}")
            return False
        return True


# ---------------------------------------------------------------------------------------------------------------
# module state: one active job, and the last one for the panel

_active: ActiveJob | None = None
_last: ActiveJob | None = None


def active() -> ActiveJob | None:
    """The running job, if any."""
    return _active


def last() -> ActiveJob | None:
    """The running job, or else the last finished one."""
    return _active or _last


def start(pipeline: Pipeline, job_dir: Path, *, object_name: str = "", scene: bpy.types.Scene | None = None,
          preview_interval_s: float = 1.0, on_finish: Callable[[ActiveJob], None] | None = None,
          capture_source: str = "") -> ActiveJob:
    """Make ``pipeline`` the active job and start it; raises :class:`JobBusy` while another one runs.

    With ``capture_source`` (the key of an imported capture) the mesh object is parented to that import's frame.
    """
    global _active, _last
    if _active is not None and not _active.finished:
        raise JobBusy(f"a {_active.pipeline.name} job is running already (stage: {_active.state.stage}); "
                      "cancel it first")
    job = ActiveJob(pipeline, Path(job_dir), object_name=object_name, scene_name=scene.name if scene else "",
                    preview_interval_s=preview_interval_s, on_finish=on_finish, capture_source=capture_source)
    _active, _last = job, None
    job.step()  # start the first process now, so a launch failure shows at once
    sync_status()
    if job.finished:
        _active, _last = None, job
    elif not bpy.app.background:
        _ensure_timer()
    return job


def poll() -> bool:
    """Advance the active job and mirror it into the panel; True while a job still runs. Never raises."""
    global _active, _last
    job = _active
    if job is None:
        return False
    try:
        running = job.step()
    except Exception as exc:  # never let an error escape into a timer or a batch loop
        log.exception("poll failed")
        job.state.error = ErrorInfo(f"internal error while following the job: {exc}",
                                    "Please report it with the system console's output.")
        job.pipeline.stop(2.0)
        job.state.status = "failed"
        job._finished = True
        running = False
    sync_status()
    if not running:
        _active, _last = None, job
    return running


def wait(timeout: float | None = None, interval: float = 0.1,
         callback: Callable[[ActiveJob], None] | None = None) -> ActiveJob | None:
    """Call :func:`poll` until the active job ends (batch runs and tests); returns that job.

    On ``timeout`` the job is cancelled and this keeps polling until it has ended. With no active job it returns
    the last one (a job whose start failed has ended already).
    """
    job = _active or _last
    t0 = time.monotonic()
    cancelled = False
    while poll():
        if callback is not None and job is not None:
            callback(job)
        if timeout is not None and not cancelled and time.monotonic() - t0 > timeout:
            cancel()
            cancelled = True
        time.sleep(interval)
    if callback is not None and job is not None:
        callback(job)
    return job


def cancel() -> bool:
    """Ask the active job to stop (non-blocking); False when nothing runs."""
    if _active is None:
        return False
    _active.pipeline.cancel()
    sync_status()
    return True


def shutdown(timeout: float = 3.0, apply_meshes: bool = True) -> None:
    """End the active job's processes now (blocks a few seconds at most); keeps the meshes applied so far.

    With ``apply_meshes`` the mesh the backend saved on its way out is applied too (not at quit).
    """
    global _active, _last
    job = _active
    if job is None:
        return
    job.feed.enabled = apply_meshes
    job.pipeline.stop(timeout)
    deadline = time.monotonic() + 5.0
    try:
        while job.step():  # apply what arrived before the end (not forever: the object may be in Edit Mode)
            if time.monotonic() > deadline:
                job.feed.enabled = False
            time.sleep(0.02)
    except Exception:
        log.exception("while finishing the job")
    _active, _last = None, job
    with contextlib.suppress(Exception):  # at interpreter exit bpy may be half gone
        sync_status()


# ---------------------------------------------------------------------------------------------------------------
# panel status


def sync_status() -> None:
    """Copy the job's state into ``WindowManager.neusblend_status`` and redraw the 3D views."""
    wm = getattr(bpy.context, "window_manager", None)
    status = getattr(wm, STATUS_PROP, None) if wm is not None else None
    job = last()
    if status is None or job is None:
        return
    s = job.state
    status.state = s.status.upper()
    status.stage = s.stage
    status.phase = s.phase
    status.progress = s.fraction
    status.progress_text = s.progress_text()
    status.metrics_text = s.metrics_text()
    status.step = s.step
    status.total = s.total
    status.eta_s = s.eta_s if s.eta_s is not None else -1.0
    status.samples_per_s = s.samples_per_s if s.samples_per_s is not None else -1.0
    status.loss = s.loss if s.loss is not None else -1.0
    status.psnr = s.psnr if s.psnr is not None else -1.0
    status.device = f"{s.device} ({s.compute_path})" if s.compute_path else s.device
    status.error_message = s.error.message if s.error else ""
    status.error_hint = s.error.hint if s.error else ""
    status.error_file = s.error.file if s.error else ""
    status.warning = s.warnings[-1] if s.warnings else ""
    status.skipped_photos = s.skipped_text()
    status.log_line = s.log_line
    status.meshes_applied = job.meshes_applied
    status.pid = job.pipeline.pid or 0
    status.job_dir = str(job.job_dir)
    status.object_name = job.object_name
    status.summary = job_summary(job.pipeline, job.object_name, job.meshes_applied, job.last_step_applied)
    global _last_signature
    signature = (s.status, s.stage, s.phase, s.step, s.log_line, job.meshes_applied, status.error_message,
                 status.warning)
    if signature != _last_signature:  # redraw only when something visible changed
        _last_signature = signature
        _redraw()


_last_signature: tuple[Any, ...] = ()


def _redraw() -> None:
    wm = bpy.context.window_manager
    if wm is None:
        return
    for window in wm.windows:
        screen = window.screen
        if screen is None:
            continue
        for area in screen.areas:
            if area.type in ("VIEW_3D", "PREFERENCES"):
                area.tag_redraw()


# ---------------------------------------------------------------------------------------------------------------
# timer, handlers, registration


def _timer() -> float | None:
    running = poll()
    return TIMER_INTERVAL_S if running else None


def _ensure_timer() -> None:
    if not bpy.app.timers.is_registered(_timer):
        bpy.app.timers.register(_timer, first_interval=TIMER_INTERVAL_S, persistent=True)


@bpy.app.handlers.persistent
def _on_load_pre(*_args: Any) -> None:
    # the scene the job writes into is about to go away: end the job with it
    shutdown()


def _on_exit() -> None:
    with contextlib.suppress(Exception):  # interpreter teardown: best effort
        shutdown(apply_meshes=False)


def register() -> None:
    """Install the file-load handler and the quit hook."""
    if _on_load_pre not in bpy.app.handlers.load_pre:
        bpy.app.handlers.load_pre.append(_on_load_pre)
    atexit.register(_on_exit)


def unregister() -> None:
    """End any job (its processes too), remove the timer, the handler and the quit hook."""
    global _last
    shutdown()
    _last = None
    if bpy.app.timers.is_registered(_timer):
        bpy.app.timers.unregister(_timer)
    while _on_load_pre in bpy.app.handlers.load_pre:
        bpy.app.handlers.load_pre.remove(_on_load_pre)
    atexit.unregister(_on_exit)
