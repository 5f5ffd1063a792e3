"""One backend subprocess: started in its own process group, its stdout and stderr drained on threads.

No bpy here. The owner calls :meth:`BackendProcess.read` from its main thread as often as it likes (it never
blocks) and ends the process with :meth:`BackendProcess.terminate` / :meth:`BackendProcess.kill` (the whole
group: the backend may have started workers of its own) or :meth:`BackendProcess.stop` (both, with a wait).
"""

from __future__ import annotations

import collections
import contextlib
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from ..backend.protocol import ProtocolError, decode_message

IS_WINDOWS = sys.platform == "win32"

#: How long the stdout/stderr readers may outlive the process before its group is killed (a worker that kept
#: the pipes open) and, twice that, before they are given up.
_READER_GRACE_S = 3.0


class LaunchError(Exception):
    """The process could not be started at all (missing or non-executable interpreter, bad folder)."""

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class BackendProcess:
    """A child process whose stdout carries protocol messages (or plain lines when ``protocol`` is False).

    Args:
        argv: the command as a list (no shell).
        env: the complete environment of the child (see :func:`.interpreter.clean_environment`).
        cwd: its working folder.
        protocol: decode stdout as JSON-line messages; otherwise every stdout line is a log line.
        max_log_lines: how many stderr (and stray stdout) lines to keep.
    """

    def __init__(self, argv: Sequence[str], *, env: Mapping[str, str] | None = None,
                 cwd: str | os.PathLike[str] | None = None, protocol: bool = True,
                 max_log_lines: int = 400) -> None:
        self.argv = [str(a) for a in argv]
        self.env = dict(env) if env is not None else None
        self.cwd = str(cwd) if cwd is not None else None
        self.protocol = protocol
        self._proc: subprocess.Popen[str] | None = None
        self._messages: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()
        self._log: collections.deque[str] = collections.deque(maxlen=max_log_lines)
        self._log_lock = threading.Lock()
        self._log_count = 0  # lines ever logged, so a reader can ask for the new ones
        self._readers: list[threading.Thread] = []
        self._exited_at: float | None = None
        self._group_killed_after_exit = False
        self.terminate_sent_at: float | None = None
        self.kill_sent = False

    # ------------------------------------------------------------------ start

    def start(self) -> None:
        """Start the process; raises :class:`LaunchError` with a message and a hint when that fails."""
        kwargs: dict[str, Any] = {}
        if IS_WINDOWS:
            kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP | getattr(subprocess, "CREATE_NO_WINDOW", 0)
        else:
            kwargs["start_new_session"] = True  # own session and process group: killpg reaches its workers too
        exe = self.argv[0]
        if self.cwd is not None and not os.path.isdir(self.cwd):
            raise LaunchError(f"working folder {self.cwd} does not exist", "Choose an existing job folder.")
        try:
            self._proc = subprocess.Popen(  # noqa: S603 - argv list, no shell
                self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                env=self.env, cwd=self.cwd, text=True, encoding="utf-8", errors="replace", bufsize=1, **kwargs)
        except FileNotFoundError as exc:
            raise LaunchError(f"the interpreter {exe} does not exist",
                              "Set the backend Python in the add-on preferences (Detect finds one with torch), "
                              "or press Create Backend Environment.") from exc
        except PermissionError as exc:
            raise LaunchError(f"the interpreter {exe} cannot be executed (permission denied)",
                              "Choose a Python executable, not a folder or a data file, in the add-on "
                              "preferences.") from exc
        except OSError as exc:
            raise LaunchError(f"the interpreter {exe} cannot be started: {exc.strerror or exc}",
                              "Choose a working Python (3.10 or newer) in the add-on preferences.") from exc
        self._readers = [
            threading.Thread(target=self._read_stdout, args=(self._proc.stdout,), daemon=True,
                             name=f"backend-stdout-{self._proc.pid}"),
            threading.Thread(target=self._read_stderr, args=(self._proc.stderr,), daemon=True,
                             name=f"backend-stderr-{self._proc.pid}"),
        ]
        for t in self._readers:
            t.start()

    def _read_stdout(self, stream: IO[str]) -> None:
        with contextlib.suppress(OSError, ValueError):  # the pipe was closed under us
            for line in stream:
                if not line.strip():
                    continue
                if not self.protocol:
                    self._add_log(line)
                    continue
                try:
                    self._messages.put(decode_message(line))
                except ProtocolError:
                    self._add_log("[stdout] " + line)

    def _read_stderr(self, stream: IO[str]) -> None:
        with contextlib.suppress(OSError, ValueError):
            for line in stream:
                self._add_log(line)

    def _add_log(self, line: str) -> None:
        with self._log_lock:
            self._log.append(line.rstrip("\r\n"))
            self._log_count += 1

    # ------------------------------------------------------------------ reading

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def started(self) -> bool:
        return self._proc is not None

    def read(self, limit: int = 10_000) -> list[dict[str, Any]]:
        """The messages that arrived since the last call (never blocks)."""
        out: list[dict[str, Any]] = []
        while len(out) < limit:
            try:
                out.append(self._messages.get_nowait())
            except queue.Empty:
                break
        return out

    def log_tail(self, n: int = 30) -> list[str]:
        """The last ``n`` stderr lines (and stdout lines that were not messages)."""
        with self._log_lock:
            return list(self._log)[-n:]

    def log_since(self, count: int) -> tuple[list[str], int]:
        """Lines logged after the first ``count`` ones (as far as they are still kept), and the new count."""
        with self._log_lock:
            new = min(self._log_count - count, len(self._log))
            return (list(self._log)[-new:] if new > 0 else []), self._log_count

    @property
    def returncode(self) -> int | None:
        """The exit status once the process has exited (negative: killed by that signal), else None."""
        if self._proc is None:
            return None
        code = self._proc.poll()
        if code is not None and self._exited_at is None:
            self._exited_at = time.monotonic()
        return code

    @property
    def finished(self) -> bool:
        """True once the process has exited and everything it printed has been read."""
        if self.returncode is None:
            return False
        if not any(t.is_alive() for t in self._readers):
            return True
        assert self._exited_at is not None
        waited = time.monotonic() - self._exited_at
        if waited > _READER_GRACE_S and not self._group_killed_after_exit:
            # a worker of the backend outlived it and holds the pipes open: end the group
            self._group_killed_after_exit = True
            self._signal_group(kill=True)
        return waited > 2 * _READER_GRACE_S

    # ------------------------------------------------------------------ ending

    def _signal_group(self, kill: bool) -> None:
        if self._proc is None:
            return
        pid = self._proc.pid
        if IS_WINDOWS:
            if kill:
                subprocess.run(["taskkill", "/F", "/T", "/PID", str(pid)], capture_output=True, check=False)
            elif self._proc.poll() is None:
                with contextlib.suppress(OSError):
                    self._proc.send_signal(signal.CTRL_BREAK_EVENT)  # type: ignore[attr-defined]
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):  # the group may be gone already
            os.killpg(pid, signal.SIGKILL if kill else signal.SIGTERM)

    def terminate(self) -> None:
        """Ask the whole process group to stop (SIGTERM): the backend saves a checkpoint and its last mesh."""
        if self._proc is None:
            return
        if self.terminate_sent_at is None:
            self.terminate_sent_at = time.monotonic()
        self._signal_group(kill=False)

    def kill(self) -> None:
        """Kill the whole process group (SIGKILL)."""
        if self._proc is None:
            return
        self.kill_sent = True
        self._signal_group(kill=True)

    def stop(self, timeout: float = 5.0) -> int | None:
        """Terminate, wait up to ``timeout`` seconds, then kill; returns the exit status (blocks)."""
        if self._proc is None:
            return None
        if self._proc.poll() is None:
            self.terminate()
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        # the leader may be gone while workers of its group linger
        if not IS_WINDOWS and group_alive(self._proc.pid):
            self.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._proc.wait(5.0)
        for t in self._readers:
            t.join(1.0)
        return self.returncode

    def close(self) -> None:
        """Close the pipes (after the process has finished)."""
        if self._proc is None:
            return
        for stream in (self._proc.stdin, self._proc.stdout, self._proc.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


def group_alive(pgid: int) -> bool:
    """Whether any process of the group ``pgid`` still exists (POSIX; zombies count as gone)."""
    proc = Path("/proc")
    if proc.is_dir():
        for entry in proc.iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            # fields after the command name in parentheses: state ppid pgrp ...
            fields = stat.rsplit(")", 1)[-1].split()
            if len(fields) >= 3 and int(fields[2]) == pgid and fields[0] != "Z":
                return True
        return False
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
