"""Which mesh snapshot of a running job is read and applied, and when (no bpy).

The backend announces meshes faster than Blender should rebuild one: :class:`SnapshotFeed` keeps only the newest
announced snapshot, reads it from disk (or from its inline npz) on a worker thread, and hands the arrays to the
owner's ``apply`` on the main thread, never more often than every ``preview_interval_s`` seconds for previews. The
final mesh is read at once and never overtaken by a preview; the final mesh that a ``done`` message repeats is
dropped when it came as a ``mesh`` message already. The owner (:mod:`.scene.runner`) supplies ``editable`` (may the
mesh be replaced now?) and ``apply`` (put the arrays into the scene).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ..backend.protocol import snapshot_from_message
from .jobstate import JobState

#: ``apply(message, arrays)``: put a snapshot into the scene; True when it was applied (False: left out, e.g. empty).
ApplyFn = Callable[[dict[str, Any], dict[str, Any]], bool]


class SnapshotFeed:
    """The snapshot pipeline of one job: announced -> reading (worker thread) -> read -> applied.

    Args:
        base: the job folder; a message's relative ``path`` is taken from there.
        state: the job's state; a snapshot that cannot be read becomes a warning there, and ``log_line`` says when
            a read mesh waits for the object to become editable.
        apply: puts a read snapshot into the scene (main thread).
        editable: whether the mesh may be replaced now (False while its object is in Edit Mode); asked on every
            :meth:`pump` while a read snapshot waits.
        preview_interval_s: the least time between the end of one applied preview and the next.
    """

    def __init__(self, base: str | Path, state: JobState, apply: ApplyFn, editable: Callable[[], bool] = lambda: True,
                 *, preview_interval_s: float = 1.0) -> None:
        self.base = Path(base)
        self.state = state
        self.apply = apply
        self.editable = editable
        self.preview_interval_s = preview_interval_s
        self.enabled = True  # False while shutting down at quit: snapshots are then dropped unread
        self.final_applied = False
        self.errors: list[str] = []
        self._executor: ThreadPoolExecutor | None = None
        self._loading: Future[dict[str, Any]] | None = None
        self._loading_msg: dict[str, Any] | None = None
        self._loaded: tuple[dict[str, Any], dict[str, Any]] | None = None  # read, waiting for ``editable``
        self._pending: dict[str, Any] | None = None
        self._last_apply = 0.0

    def offer(self, msg: dict[str, Any]) -> None:
        """A new ``mesh`` message: it replaces any snapshot still waiting to be read (the newest wins)."""
        if self._pending is not None and self._pending.get("final") and not msg.get("final"):
            return  # never let a preview overtake the final mesh
        if msg.get("from_done") and (self.final_applied or self._final_in_flight()):
            return  # the final mesh came as a mesh message already
        self._pending = msg

    def _final_in_flight(self) -> bool:
        return any(m is not None and m.get("final") for m in (
            self._loading_msg, self._loaded[0] if self._loaded else None, self._pending))

    def pump(self, now: float, producer_active: bool = True) -> None:
        """Apply a finished read, start the next one (never blocks). ``now`` is ``time.monotonic()`` at the start
        of this poll; once the producer (the job's processes) has ended, a waiting preview is read at once."""
        if self._loading is not None and self._loading.done():
            msg, future = self._loading_msg, self._loading
            self._loading = self._loading_msg = None
            assert msg is not None
            try:
                self._loaded = (msg, future.result())
            except Exception as exc:  # a missing or broken snapshot must not end the job
                self.errors.append(f"snapshot at step {msg.get('step')}: {exc}")
                self.state.warnings.append(self.errors[-1])
        if self._loaded is not None:
            if not self.enabled:
                self._loaded = None
            elif self.editable():
                msg, arrays = self._loaded
                self._loaded = None
                if self.apply(msg, arrays):
                    self.final_applied = self.final_applied or bool(msg.get("final"))
                self._last_apply = time.monotonic()
        if not self.enabled:
            self._pending = None
        if self._loading is None and self._loaded is None and self._pending is not None:
            final = bool(self._pending.get("final"))
            due = now - self._last_apply >= self.preview_interval_s
            if final or due or not producer_active:
                msg, self._pending = self._pending, None
                if self._executor is None:
                    self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="neusblend-snapshot")
                self._loading_msg = msg
                self._loading = self._executor.submit(snapshot_from_message, msg, self.base)

    @property
    def idle(self) -> bool:
        """Nothing announced, being read, or read and waiting."""
        return self._loading is None and self._loaded is None and self._pending is None

    def close(self) -> None:
        """Let the worker thread go (a read in flight finishes on its own)."""
        if self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None
