"""The one active job of this Blender session and its ``poll()`` step (bpy glue).

``poll()`` is a plain function: in the UI a ``bpy.app.timers`` timer calls it; in ``blender -b`` and the bpy module
(where timers never fire) :func:`wait` calls it in a loop. Each call advances the job's processes, folds their
messages into the panel's status, and applies the newest mesh snapshot to the job's one mesh object. Snapshots
are read from disk on a worker thread; the main thread only copies arrays into the mesh, and never more often
than every ``preview_interval_s`` seconds for previews (the final mesh is applied at once), skipping snapshots
that a newer one has overtaken.

Ending: :func:`cancel` sends SIGTERM to the backend's process group and the job kills it after a timeout;
disabling the add-on, loading another file and quitting Blender call :func:`shutdown`, which waits for that.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bpy

from ..backend.protocol import snapshot_from_message
from . import scene_capture, scene_mesh
from .jobstate import ErrorInfo, JobState, format_duration
from .pipeline import Pipeline

log = logging.getLogger(__name__)

#: Seconds between timer calls while a job runs.
TIMER_INTERVAL_S = 0.2

#: Name of the WindowManager pointer property that mirrors the job for the panel (see properties.py).
STATUS_PROP = "neusblend_status"


class JobBusy(RuntimeError):
    """A job is running already; a second one is refused."""


@dataclass
class ActiveJob:
    """A running pipeline plus what the scene side needs: the mesh object and the snapshot feed."""

    pipeline: Pipeline
    job_dir: Path
    object_name: str = ""
    scene_name: str = ""
    preview_interval_s: float = 1.0
    on_finish: Callable[[ActiveJob], None] | None = None
    capture_source: str = ""  # an imported capture whose frame the mesh is parented to (capture coordinates)
    meshes_applied: int = 0
    last_step_applied: int = -1
    final_applied: bool = False
    mesh_errors: list[str] = field(default_factory=list)
    apply_meshes: bool = True  # False while shutting down at quit: only the processes matter then
    _executor: ThreadPoolExecutor | None = None
    _loading: Future[dict[str, Any]] | None = None
    _loading_msg: dict[str, Any] | None = None
    _loaded: tuple[dict[str, Any], dict[str, Any]] | None = None  # read, waiting for the object to be editable
    _pending: dict[str, Any] | None = None
    _last_apply: float = 0.0
    _finished: bool = False

    @property
    def state(self) -> JobState:
        return self.pipeline.state

    @property
    def finished(self) -> bool:
        """True once the processes ended and every mesh they sent was applied."""
        return self._finished

    # ------------------------------------------------------------------ mesh feed

    def offer(self, msg: dict[str, Any]) -> None:
        """A new mesh message: it replaces any snapshot still waiting (the newest wins)."""
        if self._pending is not None and self._pending.get("final") and not msg.get("final"):
            return  # never let a preview overtake the final mesh
        if msg.get("from_done") and (self.final_applied or self._final_in_flight()):
            return  # the final mesh came as a mesh message already
        self._pending = msg

    def _final_in_flight(self) -> bool:
        return any(m is not None and m.get("final") for m in (
            self._loading_msg, self._loaded[0] if self._loaded else None, self._pending))

    def _pump(self, now: float) -> None:
        """Apply a finished load, start the next one."""
        if self._loading is not None and self._loading.done():
            msg, future = self._loading_msg, self._loading
            self._loading = self._loading_msg = None
            assert msg is not None
            try:
                self._loaded = (msg, future.result())
            except Exception as exc:  # a missing or broken snapshot must not end the job
                self.mesh_errors.append(f"snapshot at step {msg.get('step')}: {exc}")
                self.state.warnings.append(self.mesh_errors[-1])
        if self._loaded is not None:
            if not self.apply_meshes:
                self._loaded = None
            elif self._editable():
                msg, arrays = self._loaded
                self._loaded = None
                self._apply(msg, arrays)
                self._last_apply = time.monotonic()
            else:
                self.state.log_line = f"Switch '{self.object_name}' to Object Mode to receive the new mesh"
        if not self.apply_meshes:
            self._pending = None
        if self._loading is None and self._loaded is None and self._pending is not None:
            final = bool(self._pending.get("final"))
            due = now - self._last_apply >= self.preview_interval_s
            if final or due or not self.pipeline.active:
                msg, self._pending = self._pending, None
                if self._executor is None:
                    self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="neusblend-snapshot")
                self._loading_msg = msg
                self._loading = self._executor.submit(snapshot_from_message, msg, self.job_dir)

    def _editable(self) -> bool:
        """The mesh can be replaced: its object is not in Edit or Sculpt Mode (that would lose or break edits)."""
        obj = bpy.data.objects.get(self.object_name) if self.object_name else None
        return obj is None or obj.mode == "OBJECT"

    def _apply(self, msg: dict[str, Any], arrays: dict[str, Any]) -> None:
        if len(arrays["faces"]) == 0:
            self.state.warnings.append(f"the mesh of step {msg.get('step')} is empty; keeping the last one")
            return
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
        self.final_applied = self.final_applied or bool(msg.get("final"))
        obj["neusblend_job"] = str(self.job_dir)
        obj["neusblend_step"] = self.last_step_applied
        obj["neusblend_updates"] = int(obj.get("neusblend_updates", 0)) + 1
        obj["neusblend_final"] = self.final_applied
        log.debug("applied mesh of step %s (%d faces) in %.3f s", msg.get("step"), len(arrays["faces"]),
                  time.perf_counter() - t0)
        if first and not bpy.app.background:
            scene_mesh.frame_in_views(obj)

    @property
    def feed_idle(self) -> bool:
        return self._loading is None and self._loaded is None and self._pending is None

    # ------------------------------------------------------------------ driving

    def step(self) -> bool:
        """One poll of this job; returns True while it still needs polling."""
        if self._finished:
            return False
        now = time.monotonic()
        self.pipeline.advance()
        for msg in self.state.take_meshes():
            self.offer(msg)
        self._pump(now)
        if not self.pipeline.active and self.feed_idle:
            self._finished = True
            if self._executor is not None:
                self._executor.shutdown(wait=False)
                self._executor = None
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
    job.apply_meshes = apply_meshes
    job.pipeline.stop(timeout)
    deadline = time.monotonic() + 5.0
    try:
        while job.step():  # apply what arrived before the end (not forever: the object may be in Edit Mode)
            if time.monotonic() > deadline:
                job.apply_meshes = False
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
    status.summary = _summary(job)
    global _last_signature
    signature = (s.status, s.stage, s.phase, s.step, s.log_line, job.meshes_applied, status.error_message,
                 status.warning)
    if signature != _last_signature:  # redraw only when something visible changed
        _last_signature = signature
        _redraw()


_last_signature: tuple[Any, ...] = ()


def _summary(job: ActiveJob) -> str:
    s = job.state
    if s.status == "done":
        if job.pipeline.name == "reconstruct":
            done = job.pipeline.result("train") or {}
            took = format_duration(done.get("elapsed_s"))
            return f"Finished {done.get('steps', s.step)} steps" + (f" in {took}" if took else "") + \
                f"; mesh in '{job.object_name}'"
        if job.pipeline.name == "extract":
            done = job.pipeline.result("extract") or {}
            return f"Extracted {done.get('n_faces', '?')} faces at {done.get('resolution', '?')}^3 into " \
                f"'{job.object_name}'"
        if job.pipeline.name == "continue":
            done = job.pipeline.result("train") or {}
            return f"Trained on to step {done.get('steps', s.step)}; mesh in '{job.object_name}'"
        if job.pipeline.name == "poses":
            done = job.pipeline.result("poses") or {}
            report = done.get("report") if isinstance(done.get("report"), dict) else {}
            reg = report.get("registered", done.get("n_registered"))
            n = report.get("total", done.get("n_images"))
            return f"Poses: {reg} of {n} photos registered" if reg is not None else "Poses estimated"
        return "Finished"
    if s.status == "cancelled":
        return "Cancelled" + (f"; the mesh of step {job.last_step_applied} stays" if job.meshes_applied else "")
    if s.status == "failed":
        return f"Failed during: {s.stage}" if s.stage else "Failed"
    return ""


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
