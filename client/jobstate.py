"""What the messages of a backend run say, kept as plain data the panel can show (no bpy).

:class:`JobState` folds protocol messages (see ``backend/protocol.py``) into the latest progress, the newest mesh,
warnings and the error; :func:`explain_failure` turns the exit of a process that said nothing useful (a crash,
a missing module, a kill) into a message and a hint a user can act on.
"""

from __future__ import annotations

import re
import signal
from dataclasses import dataclass, field
from typing import Any

from ..backend.protocol import EXIT_CANCELLED, EXIT_ERROR, EXIT_OK

#: Job status values, in the order a job goes through them.
STATUSES = ("idle", "starting", "running", "cancelling", "done", "cancelled", "failed")
FINAL_STATUSES = ("done", "cancelled", "failed")


@dataclass
class ErrorInfo:
    """A failure as the panel shows it: what happened, what to do, and which file if one is to blame."""

    message: str
    hint: str = ""
    file: str = ""

    def as_text(self) -> str:
        where = f" ({self.file})" if self.file else ""
        return f"{self.message}{where}" + (f"\nWhat to do: {self.hint}" if self.hint else "")


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


_MISSING_MODULE = re.compile(r"(?:ModuleNotFoundError|ImportError): No module named '([\w.]+)'")


def explain_failure(returncode: int | None, log_tail: list[str], python: str = "", *,
                    cancel_requested: bool = False) -> ErrorInfo:
    """Message and hint for a process that ended without an ``error`` message of its own.

    Args:
        returncode: its exit status (negative: killed by that signal on POSIX).
        log_tail: its last stderr lines.
        python: the interpreter that ran it, named in the hint.
        cancel_requested: the user asked it to stop (then a signal death is expected).
    """
    text = "\n".join(log_tail)
    last = next((ln.strip() for ln in reversed(log_tail) if ln.strip()), "")
    who = f"The Python at {python}" if python else "The backend's Python"
    missing = _MISSING_MODULE.findall(text)
    if missing:
        module = missing[-1].split(".")[0]
        if module == "backend":
            return ErrorInfo(f"the backend package was not found by {python or 'the interpreter'}",
                             "Reinstall the extension; the backend folder must sit beside its __init__.py.")
        return ErrorInfo(f"{who} lacks the module '{module}' the backend needs",
                         "Choose a Python with the backend's requirements (torch, numpy, pillow, PyMCubes) in the "
                         "add-on preferences, install them into it, or press Create Backend Environment.")
    if "SyntaxError" in text and "backend" in text:
        return ErrorInfo(f"{who} is too old to run the backend ({last})",
                         "Use Python 3.10 or newer in the add-on preferences.")
    if returncode is not None and returncode < 0:
        name = _signal_name(-returncode)
        if cancel_requested:
            return ErrorInfo(f"the backend was stopped ({name})", "")
        hint = ("It was killed from outside, often by the system when memory runs out: try a smaller preset, "
                "a smaller --max-image-size, or the CPU device.")
        if name in ("SIGSEGV", "SIGBUS", "SIGILL", "SIGABRT", "SIGFPE"):
            hint = ("The interpreter crashed. Check that its torch build matches your GPU driver, or choose "
                    "another Python in the add-on preferences.")
        return ErrorInfo(f"the backend process died ({name})" + (f": {last}" if last else ""), hint)
    if "error: unrecognized arguments" in text or "error: argument" in text or (
            returncode == EXIT_ERROR and "usage:" in text):
        arg_err = next((ln for ln in reversed(log_tail) if "error:" in ln), last)
        return ErrorInfo(f"the backend rejected its arguments: {arg_err.strip()}",
                         "The add-on and its backend folder come from different versions: reinstall the extension.")
    code = "no exit status" if returncode is None else f"exit status {returncode}"
    return ErrorInfo(f"the backend stopped unexpectedly ({code})" + (f": {last}" if last else ""),
                     "The backend's log is in the .log file beside the job folder; if the interpreter is wrong, "
                     "set another in the add-on preferences.")


def format_duration(seconds: float | None) -> str:
    """``1:05:09`` / ``5:09`` / ``9s`` (empty for None)."""
    if seconds is None or seconds < 0:
        return ""
    s = int(round(seconds))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    if h:
        return f"{h}:{m:02d}:{sec:02d}"
    if m:
        return f"{m}:{sec:02d}"
    return f"{sec}s"


def format_rate(value: float | None) -> str:
    """``1.2M`` / ``350k`` / ``12`` (empty for None)."""
    if value is None:
        return ""
    if value >= 1e6:
        return f"{value / 1e6:.1f}M"
    if value >= 1e3:
        return f"{value / 1e3:.0f}k"
    return f"{value:.0f}"


@dataclass
class JobState:
    """The state of one run (one pipeline step at a time), folded from its messages.

    ``mesh_messages`` collects ``mesh`` messages (and the final mesh of ``done``) until the owner takes them with
    :meth:`take_meshes`; everything else is the latest value.
    """

    status: str = "idle"
    stage: str = ""  # the pipeline step ("Training", "Estimating poses", ...)
    phase: str = ""  # the backend's own phase or stage name
    command: str = ""
    device: str = ""
    compute_path: str = ""
    step: int = 0
    total: int = 0
    loss: float | None = None
    psnr: float | None = None
    samples_per_s: float | None = None
    eta_s: float | None = None
    elapsed_s: float | None = None
    dataset: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    skipped_photos: list[dict[str, str]] = field(default_factory=list)  # damaged photos training left out
    error: ErrorInfo | None = None
    start: dict[str, Any] | None = None
    done: dict[str, Any] | None = None
    results: dict[str, dict[str, Any]] = field(default_factory=dict)  # step key -> its done message
    log_line: str = ""  # the latest plain log line (for steps that are not backend commands, such as pip)
    mesh_messages: list[dict[str, Any]] = field(default_factory=list)
    meshes_seen: int = 0

    # ------------------------------------------------------------------ messages

    def handle(self, msg: dict[str, Any]) -> None:
        """Fold one protocol message into the state."""
        t = msg.get("type")
        if t == "start":
            self.start = msg
            self.command = str(msg.get("command", ""))
            self.device = str(msg.get("device") or "")
            self.compute_path = str(msg.get("path") or "")
            self.dataset = dict(msg.get("dataset") or {})
            skipped = self.dataset.get("skipped")
            if isinstance(skipped, list) and skipped:
                self.skipped_photos = [{"name": str(s.get("name", "?")), "reason": str(s.get("reason", ""))}
                                       for s in skipped if isinstance(s, dict)]
            if self.status in ("idle", "starting"):
                self.status = "running"
        elif t == "progress":
            self.step = int(msg.get("step") or 0)
            self.total = int(msg.get("total") or 0)
            for key in ("loss", "psnr", "samples_per_s", "eta_s", "elapsed_s"):
                value = msg.get(key)
                setattr(self, key, float(value) if isinstance(value, (int, float)) else None)
            if msg.get("phase"):
                self.phase = str(msg["phase"])
            if self.status in ("idle", "starting"):
                self.status = "running"
        elif t == "stage":
            detail = msg.get("detail")
            self.phase = str(msg["name"]) + (f": {detail}" if detail else "")
        elif t == "mesh":
            self.meshes_seen += 1
            self.mesh_messages.append(msg)
        elif t == "warning":
            self.warnings.append(str(msg["message"]))
            del self.warnings[:-20]
        elif t == "error":
            self.error = ErrorInfo(str(msg["message"]), str(msg.get("hint") or ""), str(msg.get("file") or ""))
        elif t == "done":
            self.done = msg
            if msg.get("mesh") or msg.get("npz_b64"):
                final = {"type": "mesh", "step": msg.get("steps", self.step), "final": True,
                         "path": msg.get("mesh"), "from_done": True}
                if msg.get("npz_b64"):
                    final["npz_b64"] = msg["npz_b64"]
                self.mesh_messages.append(final)

    def take_meshes(self) -> list[dict[str, Any]]:
        """The mesh messages that arrived since the last call, oldest first."""
        out, self.mesh_messages = self.mesh_messages, []
        return out

    def finish(self, returncode: int | None, log_tail: list[str], python: str = "", *,
               cancel_requested: bool = False) -> None:
        """Set the final status from the exit status and what the process said."""
        cancelled_by_backend = bool(self.done and self.done.get("cancelled"))
        if returncode == EXIT_OK and not cancelled_by_backend:
            self.status = "done"
        elif returncode == EXIT_CANCELLED or cancelled_by_backend or (
                cancel_requested and (returncode is None or returncode < 0 or returncode == EXIT_OK)):
            self.status = "cancelled"
        else:
            self.status = "failed"
            if self.error is None:
                self.error = explain_failure(returncode, log_tail, python, cancel_requested=cancel_requested)

    def reset_progress(self) -> None:
        """Forget the numbers of the previous step when the next one starts."""
        self.step = self.total = 0
        self.loss = self.psnr = self.samples_per_s = self.eta_s = self.elapsed_s = None
        self.phase = ""
        self.done = None
        self.start = None
        self.log_line = ""

    # ------------------------------------------------------------------ display

    @property
    def running(self) -> bool:
        return self.status in ("starting", "running", "cancelling")

    @property
    def fraction(self) -> float:
        """Progress of the current step in [0, 1]."""
        if self.status == "done":
            return 1.0
        return min(max(self.step / self.total, 0.0), 1.0) if self.total > 0 else 0.0

    def progress_text(self) -> str:
        """The text on the progress bar: ``Training 120/1500 · ETA 1:20``."""
        parts = [self.stage or self.status.capitalize()]
        if self.total:
            parts.append(f"{self.step}/{self.total}")
        eta = format_duration(self.eta_s) if self.running else ""
        text = " ".join(parts)
        return f"{text} · ETA {eta}" if eta else text

    def skipped_text(self) -> str:
        """``photo.jpg: reason`` for each damaged photo left out, one a line (empty when none)."""
        return "\n".join(f"{s['name']}: {s['reason']}" if s.get("reason") else s["name"]
                         for s in self.skipped_photos)

    def metrics_text(self) -> str:
        """``1.2M samples/s · loss 0.0213 · PSNR 24.1`` for whatever is known."""
        parts = []
        if self.samples_per_s is not None:
            parts.append(f"{format_rate(self.samples_per_s)} samples/s")
        if self.loss is not None:
            parts.append(f"loss {self.loss:.4f}")
        if self.psnr is not None:
            parts.append(f"PSNR {self.psnr:.1f}")
        return " · ".join(parts)
