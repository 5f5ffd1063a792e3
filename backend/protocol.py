"""The one seam between Blender and the backend process.

Imported by both sides, so it uses only the standard library and numpy (never bpy, never torch).

Transport: the backend writes one JSON object per line on stdout and nothing else there; logs go to stderr.
Every message has a ``type`` (see :data:`MESSAGE_TYPES`) and the protocol ``version``.

Files: the client chooses a job folder; :class:`JobLayout` names every file in it. Files are written under a
temporary name and renamed into place (:func:`atomic_write_bytes`), so a reader never sees half a file.
Mesh snapshots are ``.npz`` files with ``vertices`` (float32, N x 3, input/world coordinates), ``faces``
(int32, M x 3) and optional ``colors`` (uint8, N x 3 or N x 4), loaded with ``allow_pickle=False``.
A ``mesh`` message carries either ``path`` (shared disk, the local fast path) or ``npz_b64`` (the snapshot
inline, for a backend on another machine behind ssh).
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import math
import os
import sys
import tempfile
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

PROTOCOL_VERSION = 1

#: Every message type the backend may print.
MESSAGE_TYPES = ("start", "progress", "mesh", "warning", "error", "done", "stage")

#: Fields each message type must carry (more are allowed).
REQUIRED_FIELDS: dict[str, tuple[str, ...]] = {
    "start": ("command",),
    "progress": ("step", "total"),
    "mesh": ("step", "n_vertices", "n_faces"),
    "warning": ("message",),
    "error": ("message", "hint"),
    "done": (),
    "stage": ("name",),
}

#: Exit codes of ``python -m backend``.
#: The training presets (``backend/presets/<name>.json``) and what each is for: the one list the CLI, the panel and
#: the headless script offer.
PRESETS: dict[str, str] = {
    "preview": "A rough mesh in minutes, also on a CPU",
    "default": "A detailed object in under a minute on a recent NVIDIA GPU (49 photos: 45 s on an H200); slow on a CPU",
    "quality": "Finest detail; the longest run",
}

EXIT_OK = 0
EXIT_ERROR = 2  # bad input or a failure reported through an ``error`` message
EXIT_CANCELLED = 3  # SIGTERM/SIGINT: checkpoint and last mesh saved, then exited


class ProtocolError(ValueError):
    """A line on the backend's stdout that is not a valid protocol message."""


def clean_json(value: Any) -> Any:
    """Make a value JSON-safe: numpy scalars/arrays to Python, NaN/inf to None, paths to str."""
    if isinstance(value, Mapping):
        return {str(k): clean_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean_json(v) for v in value]
    if isinstance(value, np.ndarray):
        return clean_json(value.tolist())
    if isinstance(value, np.generic):
        return clean_json(value.item())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Path):
        return str(value)
    return value


def make_message(msg_type: str, **fields: Any) -> dict[str, Any]:
    """Build a message dict, checking its type and required fields."""
    if msg_type not in MESSAGE_TYPES:
        raise ProtocolError(f"unknown message type {msg_type!r}")
    missing = [f for f in REQUIRED_FIELDS[msg_type] if f not in fields]
    if missing:
        raise ProtocolError(f"message {msg_type!r} lacks {', '.join(missing)}")
    msg = {"type": msg_type, "version": PROTOCOL_VERSION}
    msg.update(clean_json(fields))
    return msg


def encode_message(msg: Mapping[str, Any]) -> str:
    """One message as one line of JSON (no trailing newline, no NaN)."""
    return json.dumps(clean_json(dict(msg)), allow_nan=False, separators=(",", ":"))


def decode_message(line: str) -> dict[str, Any]:
    """Parse one stdout line; raises :class:`ProtocolError` for anything that is not a message."""
    line = line.strip()
    if not line:
        raise ProtocolError("empty line")
    try:
        msg = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ProtocolError(f"not JSON: {line[:200]!r}") from exc
    if not isinstance(msg, dict) or msg.get("type") not in MESSAGE_TYPES:
        raise ProtocolError(f"not a protocol message: {line[:200]!r}")
    missing = [f for f in REQUIRED_FIELDS[msg["type"]] if f not in msg]
    if missing:
        raise ProtocolError(f"message {msg['type']!r} lacks {', '.join(missing)}")
    return msg


class Emitter:
    """Writes messages to a stream, one JSON line each (``json_mode``) or as short human-readable lines.

    Thread-safe; flushes after every message so a reader sees it at once. When the reader went away (a broken
    pipe: the client, or the ssh connection to it, is gone) and ``on_reader_gone`` is set, that is called once and
    later messages are dropped, so the command can still save its work; without it the error propagates.
    """

    def __init__(self, stream: IO[str] | None = None, json_mode: bool = True) -> None:
        self.stream = stream if stream is not None else sys.stdout
        self.json_mode = json_mode
        self._lock = threading.Lock()
        self.on_reader_gone: Callable[[], None] | None = None
        self.reader_gone = False

    def emit(self, msg_type: str, **fields: Any) -> dict[str, Any]:
        msg = make_message(msg_type, **fields)
        text = encode_message(msg) if self.json_mode else format_human(msg)
        with self._lock:
            if text and not self.reader_gone:
                try:
                    self.stream.write(text + "\n")
                    self.stream.flush()
                except BrokenPipeError:
                    if self.on_reader_gone is None:
                        raise
                    self.reader_gone = True
                    self.on_reader_gone()
        return msg


def format_human(msg: Mapping[str, Any]) -> str:
    """A one-line human-readable rendering of a message (for the plain CLI)."""
    t = msg["type"]
    if t == "progress":
        parts = [f"step {msg['step']}/{msg['total']}"]
        for key, fmt in (("loss", "loss {:.4f}"), ("psnr", "psnr {:.2f}"), ("samples_per_s", "{:,.0f} samples/s"),
                         ("eta_s", "eta {:.0f}s")):
            if msg.get(key) is not None:
                parts.append(fmt.format(msg[key]))
        return "  ".join(parts)
    if t == "mesh":
        where = msg.get("path") or "(inline)"
        return f"mesh at step {msg['step']}: {msg['n_vertices']} vertices, {msg['n_faces']} faces -> {where}"
    if t == "error":
        where = f" [{msg['file']}]" if msg.get("file") else ""
        return f"ERROR: {msg['message']}{where}\n  hint: {msg['hint']}"
    if t == "warning":
        return f"warning: {msg['message']}"
    if t == "stage":
        return f"== {msg['name']}" + (f": {msg['detail']}" if msg.get("detail") else "")
    if t == "start":
        return f"{msg['command']} on {msg.get('device', '?')} ({msg.get('path', '')})"
    if t == "done":
        keys = ("mesh", "checkpoint", "cancelled")
        return "done: " + ", ".join(f"{k}={msg[k]}" for k in keys if k in msg)
    return encode_message(msg)


# ---------------------------------------------------------------------------------------------------------------
# files


def file_mode() -> int:
    """The permission bits a new file gets from this process's umask (``0o666 & ~umask``), as ``open`` gives."""
    try:  # Linux: read it without changing it (os.umask would race with other threads)
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to a temporary file beside ``path`` (``.<name>.<random>.tmp``) and rename it into place.

    The file gets the permissions the umask gives a new file (not the 0600 of a temporary file). On failure the
    temporary file is removed and ``path`` is untouched; an :class:`OSError` (full disk, no permission, I/O error)
    names ``path`` in its ``filename``.
    """
    path = Path(path)
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            if hasattr(os, "fchmod"):
                os.fchmod(f.fileno(), file_mode())
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.errno is not None and (exc.filename is None or (
                str(exc.filename).endswith(".tmp") and Path(exc.filename).parent == path.parent)):
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc  # name the file, not its temp
        raise
    return path


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def snapshot_bytes(vertices: np.ndarray, faces: np.ndarray, colors: np.ndarray | None = None) -> bytes:
    """Serialize a mesh snapshot as npz bytes.

    Args:
        vertices: (N, 3) float, world coordinates of the input.
        faces: (M, 3) int, indices into ``vertices``.
        colors: optional (N, 3) or (N, 4) uint8 vertex colours.
    """
    arrays = _validated_snapshot(vertices, faces, colors)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _validated_snapshot(vertices: Any, faces: Any, colors: Any) -> dict[str, np.ndarray]:
    v = np.ascontiguousarray(vertices, dtype=np.float32)
    f = np.ascontiguousarray(faces, dtype=np.int32)
    if v.ndim != 2 or v.shape[1] != 3:
        raise ProtocolError(f"vertices must be N x 3, got {v.shape}")
    if f.ndim != 2 or f.shape[1] != 3:
        raise ProtocolError(f"faces must be M x 3, got {f.shape}")
    if f.size and (f.min() < 0 or f.max() >= len(v)):
        raise ProtocolError("faces index outside the vertex array")
    out = {"vertices": v, "faces": f}
    if colors is not None:
        c = np.ascontiguousarray(colors)
        if c.dtype != np.uint8 or c.ndim != 2 or c.shape[0] != len(v) or c.shape[1] not in (3, 4):
            raise ProtocolError(f"colors must be uint8 N x 3 or N x 4, got {c.dtype} {c.shape}")
        out["colors"] = c
    return out


def write_snapshot(path: str | os.PathLike[str], vertices: np.ndarray, faces: np.ndarray,
                   colors: np.ndarray | None = None) -> Path:
    """Write a mesh snapshot atomically (see :func:`snapshot_bytes` for shapes)."""
    return atomic_write_bytes(path, snapshot_bytes(vertices, faces, colors))


def read_snapshot(source: str | os.PathLike[str] | bytes) -> dict[str, np.ndarray]:
    """Load a snapshot from a path or npz bytes; returns ``vertices``, ``faces`` and maybe ``colors``."""
    data = io.BytesIO(source) if isinstance(source, bytes) else source
    with np.load(data, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    if "vertices" not in arrays or "faces" not in arrays:
        raise ProtocolError(f"snapshot {source if not isinstance(source, bytes) else '(inline)'} "
                            "lacks vertices or faces")
    return _validated_snapshot(arrays["vertices"], arrays["faces"], arrays.get("colors"))


def snapshot_from_message(msg: Mapping[str, Any], base: str | os.PathLike[str] | None = None
                          ) -> dict[str, np.ndarray]:
    """The mesh of a ``mesh`` or ``done`` message: inline (``npz_b64``) or from its path."""
    if msg.get("npz_b64"):
        return read_snapshot(base64.b64decode(msg["npz_b64"]))
    path = msg.get("path") or msg.get("mesh")
    if not path:
        raise ProtocolError("mesh message carries neither path nor npz_b64")
    p = Path(path)
    if base is not None and not p.is_absolute():
        p = Path(base) / p
    return read_snapshot(p)


def mesh_bounds(vertices: np.ndarray) -> list[list[float]]:
    """[[xmin, ymin, zmin], [xmax, ymax, zmax]] of (N, 3) vertices (zeros when empty)."""
    if len(vertices) == 0:
        return [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]
    return [vertices.min(0).astype(float).tolist(), vertices.max(0).astype(float).tolist()]


@dataclass(frozen=True)
class JobLayout:
    """Names of the files in a job folder. Only the backend writes into it; the client only reads."""

    root: Path

    def __init__(self, root: str | os.PathLike[str]) -> None:
        object.__setattr__(self, "root", Path(root))

    @property
    def meshes(self) -> Path:
        return self.root / "meshes"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def config(self) -> Path:
        return self.root / "config.json"

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoints / "last.pt"

    @property
    def final_mesh(self) -> Path:
        return self.meshes / "final.npz"

    @property
    def final_ply(self) -> Path:
        return self.root / "mesh.ply"

    @property
    def poses(self) -> Path:
        """Posed dataset written by ``python -m backend poses`` (COLMAP layout: images/, sparse/)."""
        return self.root / "poses"

    def snapshot(self, step: int) -> Path:
        return self.meshes / f"step_{step:07d}.npz"

    def extracted(self, resolution: int, tag: str = "") -> Path:
        return self.meshes / f"extract_{resolution}{('_' + tag) if tag else ''}.npz"

    @property
    def marker(self) -> Path:
        """``neusblend-job.json``: says the folder is one of our jobs (see :func:`read_job_marker`)."""
        return self.root / JOB_MARKER


# ---------------------------------------------------------------------------------------------------------------
# job folders: whose they are

#: The file that marks a folder as a job of ours: ``{"kind": ..., "kinds": [...], "version": 1}``.
JOB_MARKER = "neusblend-job.json"
JOB_MARKER_VERSION = 1
#: Kinds of job: ``poses`` (``python -m backend poses``), ``train`` (``python -m backend train``).
JOB_KINDS = ("poses", "train")


def read_job_marker(root: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The marker of a job folder, or None when there is none (or it is not ours: unreadable, another format).

    Returns:
        ``{"kind": str, "kinds": [str, ...], "version": int}``: ``kind`` is what made the folder first,
        ``kinds`` everything that has written into it since (a Reconstruct job is ``poses`` then ``train``).
    """
    try:
        doc = json.loads((Path(root) / JOB_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or doc.get("kind") not in JOB_KINDS:
        return None
    kinds = [k for k in doc.get("kinds") or [doc["kind"]] if k in JOB_KINDS]
    return {"kind": doc["kind"], "kinds": kinds or [doc["kind"]], "version": doc.get("version", 1)}


def write_job_marker(root: str | os.PathLike[str], kind: str, **notes: Any) -> Path:
    """Mark ``root`` as a job of ours that ``kind`` writes into (kept: the kinds already recorded, and the notes
    earlier writers left, such as which photos a poses job read; ``notes`` adds or replaces some)."""
    if kind not in JOB_KINDS:
        raise ValueError(f"unknown job kind {kind!r}")
    old = read_job_marker(root)
    earlier: dict[str, Any] = {}
    if old is not None:
        with contextlib.suppress(OSError, ValueError):
            earlier = json.loads((Path(root) / JOB_MARKER).read_text(encoding="utf-8"))
    doc = {**earlier, **notes, "kind": old["kind"] if old else kind,
           "kinds": sorted({*(old["kinds"] if old else ()), kind}), "version": JOB_MARKER_VERSION}
    return atomic_write_text(Path(root) / JOB_MARKER, json.dumps(clean_json(doc), indent=1) + "\n")


def stale_temporaries(root: str | os.PathLike[str],
                      subdirs: tuple[str, ...] = ("", "meshes", "checkpoints")) -> list[Path]:
    """Temporary files (``.<name>.<random>.tmp``, from :func:`atomic_write_bytes`) that a killed writer left in a
    job folder and the given sub-folders."""
    found = []
    for sub in subdirs:
        folder = Path(root) / sub
        if folder.is_dir():
            found += [p for p in folder.iterdir() if p.name.startswith(".") and p.name.endswith(".tmp")
                      and p.is_file()]
    return sorted(found)
