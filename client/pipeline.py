"""Several processes run one after another as one job: check the interpreter, estimate poses, train (no bpy).

:meth:`Pipeline.advance` is the whole event loop: it starts the next step, folds new messages into
:attr:`Pipeline.state`, enforces the kill timeout after a cancel, and finishes. It never blocks, so the UI calls it
from a timer and batch runs call it in a loop.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .jobstate import ErrorInfo, JobState
from .process import BackendProcess, LaunchError

#: Seconds between SIGTERM and SIGKILL after a cancel (the backend promises to exit within about 2 s).
KILL_AFTER_S = 6.0

Verifier = Callable[[JobState, BackendProcess], "ErrorInfo | None"]


@dataclass
class Step:
    """One process of a job.

    Attributes:
        key: short name ("check", "poses", "train", "venv", "pip"); the step's ``done`` message is kept under it.
        label: what the panel shows while it runs ("Training").
        argv: the command (no shell).
        env: its complete environment.
        cwd: its working folder (must exist).
        protocol: stdout carries protocol messages (else plain lines, e.g. pip).
        python: the interpreter, named in failure messages.
        verify: called after a clean exit; returns an error to fail the job anyway (e.g. torch missing).
    """

    key: str
    label: str
    argv: list[str]
    env: dict[str, str]
    cwd: str
    protocol: bool = True
    python: str = ""
    verify: Verifier | None = None


@dataclass
class Pipeline:
    """Runs :class:`Step` s in order; stops at the first failure or at a cancel."""

    name: str
    steps: list[Step]
    log_path: Path | None = None
    state: JobState = field(default_factory=lambda: JobState(status="starting"))
    index: int = -1
    process: BackendProcess | None = None
    cancel_requested: bool = False
    finished_at: float | None = None
    pids: list[int] = field(default_factory=list)  # every process started, for tests and the log
    _log_count: int = 0
    _log: list[str] = field(default_factory=list)

    @property
    def active(self) -> bool:
        """True until the job has finished (done, cancelled or failed)."""
        return self.finished_at is None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def current(self) -> Step | None:
        return self.steps[self.index] if 0 <= self.index < len(self.steps) else None

    # ------------------------------------------------------------------ driving

    def advance(self) -> bool:
        """One non-blocking step of the job; returns :attr:`active`."""
        if not self.active:
            return False
        if self.process is None:
            if self.cancel_requested:
                self._finish("cancelled")
                return False
            self._start_next()
            if not self.active:
                return False
        proc = self.process
        assert proc is not None
        for msg in proc.read():
            self.state.handle(msg)
        lines, self._log_count = proc.log_since(self._log_count)
        if lines:
            self._log += lines
            del self._log[:-2000]
            self.state.log_line = lines[-1][-200:]
        if (self.cancel_requested and proc.terminate_sent_at is not None and not proc.kill_sent
                and time.monotonic() - proc.terminate_sent_at > KILL_AFTER_S):
            proc.kill()
        if proc.finished:
            for msg in proc.read():
                self.state.handle(msg)
            self._step_exited(proc)
        return self.active

    def _start_next(self) -> None:
        self.index += 1
        step = self.steps[self.index]
        self.state.reset_progress()
        self.state.stage = step.label
        self.state.status = "running" if self.index > 0 else "starting"
        self._log.append(f"$ {' '.join(step.argv)}")
        proc = BackendProcess(step.argv, env=step.env, cwd=step.cwd, protocol=step.protocol)
        try:
            proc.start()
        except LaunchError as exc:
            self.state.error = ErrorInfo(exc.message, exc.hint)
            self._finish("failed")
            return
        self.process = proc
        self._log_count = 0
        if proc.pid is not None:
            self.pids.append(proc.pid)

    def _step_exited(self, proc: BackendProcess) -> None:
        step = self.current
        assert step is not None
        code = proc.returncode
        proc.close()
        self.process = None
        self._log.append(f"[exit status {code}]")
        if self.state.done is not None:
            self.state.results[step.key] = self.state.done
        clean = code == 0 and not self.cancel_requested and self.state.error is None and not (
            self.state.done and self.state.done.get("cancelled"))
        if clean and step.verify is not None:
            problem = step.verify(self.state, proc)
            if problem is not None:
                self.state.error = problem
                self._finish("failed")
                return
        if clean and self.index + 1 < len(self.steps):
            return  # the next advance() starts the next step
        self.state.finish(code, proc.log_tail(), step.python, cancel_requested=self.cancel_requested)
        self._finish(self.state.status)

    def _finish(self, status: str) -> None:
        self.state.status = status
        self.finished_at = time.monotonic()
        self.write_log()

    # ------------------------------------------------------------------ ending

    def cancel(self) -> None:
        """Ask the running step to stop (SIGTERM to its group); :meth:`advance` kills it after a timeout."""
        self.cancel_requested = True
        if not self.active:
            return
        self.state.status = "cancelling"
        if self.process is not None:
            self.process.terminate()

    def stop(self, timeout: float = 5.0) -> None:
        """Cancel and wait for the process group to end (blocks up to about ``timeout`` + 5 s)."""
        self.cancel_requested = True
        if self.process is not None:
            self.process.stop(timeout)
        deadline = time.monotonic() + timeout + 5.0
        while self.active and time.monotonic() < deadline:
            self.advance()
            time.sleep(0.02)
        if self.active:  # the readers never ended; give up on them
            self.process = None
            self._finish("cancelled")

    def write_log(self) -> None:
        """Write the commands and their stderr to :attr:`log_path` (when set)."""
        if self.log_path is None:
            return
        try:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.log_path, "a", encoding="utf-8") as f:
                f.write("\n".join(self._log) + "\n")
            self._log.clear()
        except OSError:
            pass

    def result(self, key: str) -> dict[str, Any] | None:
        """The ``done`` message of step ``key`` (None if it did not finish cleanly)."""
        return self.state.results.get(key)

