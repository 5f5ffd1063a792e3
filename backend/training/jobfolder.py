"""A training job's folder and what the trainer writes into it: the folder claimed (or refused) before anything
starts, the mesh snapshots and the final mesh (files and ``mesh`` messages), the configuration and checkpoints."""

from __future__ import annotations

import base64
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from .. import protocol
from ..checkpoint import save_checkpoint
from ..errors import BackendError, io_error
from ..protocol import JobLayout

log = logging.getLogger(__name__)


#: What ``train`` writes directly in its job folder, and what ``poses`` does (a Reconstruct job holds both).
TRAIN_ENTRIES = ("config.json", "meshes", "checkpoints", "previews", "mesh.ply")
POSES_ENTRIES = ("poses", "colmap")


def _earlier_job(root: Path, names: list[str]) -> bool:
    """A folder without a marker that is a job of an earlier version: only our entries, and our files in them."""
    if any(n not in (*TRAIN_ENTRIES, *POSES_ENTRIES, protocol.JOB_MARKER) for n in names):
        return False
    layout = JobLayout(root)
    try:
        config = json.loads(layout.config.read_text(encoding="utf-8")) if layout.config.is_file() else None
    except (OSError, ValueError):
        return False
    return ((isinstance(config, dict) and "config" in config) or layout.last_checkpoint.is_file()
            or (layout.poses / "report.json").is_file())


def prepare_job_folder(out: str | os.PathLike[str], emitter: protocol.Emitter | None = None, *,
                       resume: bool = False) -> JobLayout:
    """Create or claim the job folder (``--out``), mark it as a train job, and check it is writable.

    A new or empty folder becomes a job; a folder that is a job of ours (its ``neusblend-job.json``, or an earlier
    version's layout) is reused: training again replaces only our files there (a ``warning`` says so), and
    temporary files a killed run left behind are removed. Anything else is refused, untouched.

    Raises:
        BackendError: the folder holds files that are not ours, or cannot be written (naming it).
    """
    job = JobLayout(Path(out).expanduser())
    root = job.root
    if root.exists() and not root.is_dir():
        raise BackendError("the job folder is a file", hint="Give --out a new or empty folder.", file=root)
    names = sorted(p.name for p in root.iterdir() if not p.name.startswith(".")) if root.is_dir() else []
    marker = protocol.read_job_marker(root) if names else None
    ours = marker is not None or (bool(names) and _earlier_job(root, names))
    if names and not ours:
        raise BackendError(
            "the job folder is not empty and is not a NeuS Blend job folder, so nothing is written into it",
            hint="Give --out a new or empty folder (it is created); this one was left as it is.", file=root)
    trained = (marker is not None and "train" in marker["kinds"]) or (
        marker is None and ours and (job.config.is_file() or job.last_checkpoint.is_file()))
    try:
        root.mkdir(parents=True, exist_ok=True)
        protocol.write_job_marker(root, "train")  # before anything else: the folder is recognisably ours
    except OSError as exc:
        err = io_error(exc, exc.filename or root)
        raise BackendError(f"cannot write into the job folder: {exc.strerror or exc}",
                           hint=err.hint if err else "Choose a job folder you can write to (--out).",
                           file=root) from exc
    if ours:
        for tmp in protocol.stale_temporaries(root):  # left by a run killed while it wrote
            try:
                tmp.unlink()
                log.info("removed %s, left by an interrupted run", tmp)
            except OSError as exc:
                log.warning("cannot remove %s: %s", tmp, exc)
    if trained and not resume and emitter is not None:
        emitter.emit("warning", message=f"{root} holds an earlier training run: its configuration, meshes and "
                     "checkpoint are replaced by this run's (other files stay)", file=str(root))
    return job


def clear_snapshots(job: JobLayout) -> list[Path]:
    """Remove the mesh snapshots (``meshes/step_*.npz``) of an earlier run in a job folder we train into again."""
    removed = sorted(job.meshes.glob("step_*.npz")) if job.meshes.is_dir() else []
    for p in removed:
        p.unlink(missing_ok=True)
    return removed


class JobOutput:
    """Writes a training run's files into its job folder and announces its meshes.

    Args:
        inline_meshes: carry each mesh inside its ``mesh`` message (base64), for a client on another machine.
    """

    def __init__(self, job: JobLayout, emitter: protocol.Emitter, inline_meshes: bool = False) -> None:
        self.job = job
        self.emitter = emitter
        self.inline_meshes = inline_meshes
        self.last_snapshot: Path | None = None
        self.last_snapshot_step = -1

    def write_config(self, config: dict[str, Any], data_path: Path | None) -> None:
        """``config.json``: the run's settings and the capture it reads (the meshes folder is made too)."""
        self.job.meshes.mkdir(parents=True, exist_ok=True)
        protocol.atomic_write_text(self.job.config, json.dumps(
            {"config": config, "data": str(data_path) if data_path else None}, indent=1))

    def mesh(self, verts: np.ndarray, faces: np.ndarray, colors: np.ndarray | None, step: int, *,
             final: bool) -> Path:
        """Write a mesh (V, 3) / (F, 3) / (V, 3) uint8 or None as a snapshot (or the final mesh) and send its
        ``mesh`` message; returns the file."""
        path = self.job.final_mesh if final else self.job.snapshot(step)
        data = protocol.snapshot_bytes(verts, faces, colors)
        protocol.atomic_write_bytes(path, data)
        fields: dict[str, Any] = {"step": step, "path": str(path.resolve()), "n_vertices": len(verts),
                                  "n_faces": len(faces), "bounds": protocol.mesh_bounds(verts), "final": final,
                                  "has_colors": colors is not None}
        if self.inline_meshes:
            fields["npz_b64"] = base64.b64encode(data).decode("ascii")
        self.emitter.emit("mesh", **fields)
        self.last_snapshot, self.last_snapshot_step = path, step
        return path

    def latest_snapshot(self) -> dict[str, np.ndarray] | None:
        """The latest snapshot copied into place as the final mesh (a cancelled run's result), or None."""
        if self.last_snapshot is None or not self.last_snapshot.is_file():
            return None
        protocol.atomic_write_bytes(self.job.final_mesh, self.last_snapshot.read_bytes())
        return protocol.read_snapshot(self.job.final_mesh)

    def final_ply(self, verts: np.ndarray, faces: np.ndarray, colors: np.ndarray | None) -> Path:
        """``mesh.ply`` beside the final snapshot (for other programs)."""
        from ..meshing import write_ply

        write_ply(str(self.job.final_ply), verts, faces, colors)
        return self.job.final_ply

    def checkpoint(self, state: dict[str, Any]) -> Path:
        """``checkpoints/last.pt`` (see :mod:`backend.checkpoint`)."""
        return save_checkpoint(self.job.last_checkpoint, state)
