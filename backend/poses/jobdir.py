"""The job folder of ``python -m backend poses``: what is ours, what is not, and how it is replaced.

Rules (docs/POSES.md, "The output folder"):

- A poses job folder carries the shared job marker, :data:`MARKER` (:func:`backend.protocol.read_job_marker`; kind
  ``poses``), written before anything else.
- ``--out`` may name a new folder, an empty one, or one of our poses jobs. Any other non-empty folder is refused
  before anything is written (nothing the user made is touched). An older job without the marker is accepted when
  its top level holds only ``poses/`` and ``colmap/`` and ``poses/report.json`` is one of ours (it lists our
  ``layout``).
- A run builds everything under temporary names (:data:`WORK_PARTIAL`, :data:`POSES_PARTIAL`) and only at the end
  renames them over ``colmap/`` and ``poses/``; entries of the old folders that a poses run does not write are moved
  into the new ones, never deleted. Whatever else lies in the job folder (training's meshes, checkpoints, ...) is
  left alone. A failed run removes its temporary folders; the previous results stay as they were.
- Temporary files of an interrupted run (``.*.tmp``, the partial folders) are removed at the start of the next.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from ..capture_files import REPORT, read_pose_report
from ..errors import BackendError
from ..protocol import JOB_MARKER, write_job_marker
from ..protocol import read_job_marker as read_marker

#: Marker file that makes a folder recognisable as a poses job.
MARKER = JOB_MARKER
MARKER_KIND = "poses"
#: The finished outputs (renamed into place at the end of a run).
WORK_DIR = "colmap"
POSES_DIR = "poses"
#: Where a run builds them.
WORK_PARTIAL = ".colmap.partial"
POSES_PARTIAL = ".poses.partial"
#: Entries a poses run writes inside ``colmap/`` and ``poses/`` (anything else there is kept across runs).
WORK_ENTRIES = frozenset({"database.db", "database.db-wal", "database.db-shm", "database.db-journal", "probe.db",
                          "probe.db-wal", "probe.db-shm", "probe.db-journal", "pairs.txt",
                          "pairs_first.txt", "sparse", "sparse_relaxed", "sparse_global", "sparse_guided",
                          "sparse_relaxed_guided", "sparse_global_guided", "refined", "feature_masks"})
POSES_ENTRIES = frozenset({"images", "masks", "sparse", "stereo", "cameras.json", "points.npz", "roi.json",
                           "report.json"})
#: Top-level names of a poses job (older jobs without a marker are recognised by these alone).
JOB_ENTRIES = frozenset({WORK_DIR, POSES_DIR, MARKER})
#: Below this many free bytes after a failure, the disk is taken to be what ran out.
DISK_FULL_BYTES = 1_000_000
#: Files operating systems drop into folders by themselves: a folder holding only these counts as empty.
SYSTEM_FILES = frozenset({".DS_Store", "Thumbs.db", "desktop.ini", ".directory"})


def _is_ours_by_name(name: str) -> bool:
    """Temporary entries a poses run (or the protocol's atomic writes) leaves behind when interrupted."""
    return (name in (WORK_PARTIAL, POSES_PARTIAL) or name.startswith((".colmap.old-", ".poses.old-"))
            or (name.startswith(".") and name.endswith(".tmp")))


def _looks_like_old_job(job: Path, names: Iterable[str]) -> bool:
    """A poses job written before the marker existed: only our top-level names, and our own ``report.json``.

    A COLMAP project of the user's (``colmap/database.db``, ``poses/...``) has no such report, so it is refused.
    """
    rest = {n for n in names if not _is_ours_by_name(n) and n not in SYSTEM_FILES}
    if not rest or not rest <= JOB_ENTRIES:
        return False
    try:
        report = read_pose_report(job / POSES_DIR / REPORT)
    except BackendError:
        return False
    return isinstance(report, dict) and "registered" in report and "layout" in report


def os_error(exc: OSError, path: str | os.PathLike[str] | None, doing: str) -> BackendError:
    """A :class:`BackendError` for an operating-system error: which path, and what the user can do about it.

    Args:
        doing: what failed, as a verb phrase ("write to the output folder").
    """
    where = exc.filename or path
    code = exc.errno
    if code in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
        return BackendError(f"the disk is full: cannot {doing}", file=where,
                            hint="Free some space on that disk, or choose a job folder on another disk (--out); "
                                 "the partial files of this run were removed.")
    if code in (errno.EACCES, errno.EPERM, errno.EROFS):
        return BackendError(f"permission denied: cannot {doing}", file=where,
                            hint="Choose a folder you can write to (--out), or fix the folder's permissions.")
    if code == errno.EIO:
        return BackendError(f"input/output error: cannot {doing}", file=where,
                            hint="The disk or network share reported a read/write failure: check it, or choose "
                                 "a job folder on another disk (--out).")
    return BackendError(f"cannot {doing}: {exc.strerror or exc}", file=where,
                        hint="Check the path, or choose another job folder (--out).")


def free_bytes(path: Path) -> int | None:
    """Free bytes on the file system holding ``path`` (or its nearest existing parent); None when unknown."""
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return int(shutil.disk_usage(p).free)
    except OSError:
        return None


def require_space(path: Path, needed: int, what: str) -> None:
    """Raise a disk-full :class:`BackendError` naming ``path`` when fewer than ``needed`` bytes are free there."""
    free = free_bytes(path)
    if free is not None and free < needed:
        raise BackendError(
            f"not enough free space for {what}: {_mb(free)} free, about {_mb(needed)} needed", file=path,
            hint="Free some space on that disk, or choose a job folder on another disk (--out).")


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


class PosesJob:
    """One job folder: checks it may be written, marks it, cleans leftovers, swaps the results into place.

    Usage: ``job = PosesJob(path)``; ``job.prepare()`` (raises :class:`BackendError` for a folder that is not
    ours); build ``job.work_partial`` and ``job.poses_partial``; ``job.commit()``; on failure ``job.abort()``.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.created = False  # this run made the folder (an aborted run removes it again)
        self.reused = False  # an earlier poses job's results will be replaced
        self.kept: list[str] = []  # entries of the old colmap/ and poses/ that are not ours, moved over
        self.cleaned: list[str] = []  # leftovers of an interrupted run, removed
        self.prepared = False  # prepare() accepted the folder (only then does abort() touch anything)

    @property
    def work_partial(self) -> Path:
        return self.root / WORK_PARTIAL

    @property
    def poses_partial(self) -> Path:
        return self.root / POSES_PARTIAL

    @property
    def work_dir(self) -> Path:
        return self.root / WORK_DIR

    @property
    def poses_dir(self) -> Path:
        return self.root / POSES_DIR

    def prepare(self, images: Path | None = None) -> None:
        """Check the folder, write the marker first, clean what an interrupted run left; nothing else is written.

        Raises:
            BackendError: the path is a file, the folder is not empty and not a poses job, or it cannot be written.
        """
        root = self.root
        try:
            if root.exists() and not root.is_dir():
                raise BackendError("the output path is a file, not a folder", file=root,
                                   hint="Choose a new or empty folder for --out.")
            if root.is_dir():
                names = [p.name for p in root.iterdir()]
                marker = read_marker(root)
                if marker is not None and marker.get("kind") != MARKER_KIND:
                    raise BackendError(f"the output folder holds a {marker.get('kind')!r} job, not a poses job",
                                       file=root, hint="Choose a new or empty folder for --out; nothing in this "
                                                       "folder was changed.")
                visible = [n for n in names if n not in SYSTEM_FILES and not _is_ours_by_name(n)]
                if marker is None and visible and not _looks_like_old_job(root, names):
                    shown = ", ".join(sorted(visible)[:5]) + (" ..." if len(visible) > 5 else "")
                    raise BackendError(
                        f"the output folder is not empty and is not a poses job folder (it holds {shown})",
                        file=root, hint="Choose a new or empty folder for --out (pose estimation never writes "
                                        "into a folder it did not make); nothing in this folder was changed.")
                self.reused = (root / POSES_DIR).exists() or (root / WORK_DIR).exists()
            else:
                root.mkdir(parents=True)
                self.created = True
            self._write_marker(images)
            self.prepared = True
            self._clean_leftovers()
        except OSError as exc:
            raise os_error(exc, root, "write to the output folder") from exc

    def _write_marker(self, images: Path | None) -> None:
        """The shared marker (:func:`backend.protocol.write_job_marker`): ``kind`` is what made the folder first,
        ``kinds`` all that wrote into it (training writes into a poses job: ``["poses", "train"]``)."""
        write_job_marker(self.root, MARKER_KIND, images=str(images) if images else None)

    def _clean_leftovers(self) -> None:
        """Remove temporary files and folders an interrupted run left (ours by name) in the job, colmap/, poses/."""
        for folder in (self.root, self.work_dir, self.poses_dir):
            if not folder.is_dir():
                continue
            for entry in folder.iterdir():
                if folder != self.root and not (entry.name.startswith(".") and entry.name.endswith(".tmp")):
                    continue
                if not _is_ours_by_name(entry.name):
                    continue
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
                self.cleaned.append(str(entry.relative_to(self.root)))

    def start_work(self) -> None:
        """Fresh temporary folders for this run's database, models and dataset."""
        for p in (self.work_partial, self.poses_partial):
            shutil.rmtree(p, ignore_errors=True)
        self.work_partial.mkdir()

    def commit(self) -> None:
        """Rename the new ``colmap/`` and ``poses/`` into place; entries of the old ones that are not ours move over."""
        pid = os.getpid()
        for partial, final, ours in ((self.work_partial, self.work_dir, WORK_ENTRIES),
                                     (self.poses_partial, self.poses_dir, POSES_ENTRIES)):
            if not partial.is_dir():
                continue
            old = self.root / f".{final.name}.old-{pid}"
            if final.exists():
                os.replace(final, old)
                for entry in list(old.iterdir()):
                    theirs = entry.name not in ours and not _is_ours_by_name(entry.name)
                    if theirs and not (partial / entry.name).exists():
                        os.replace(entry, partial / entry.name)
                        self.kept.append(str(Path(final.name) / entry.name))
            os.replace(partial, final)
            shutil.rmtree(old, ignore_errors=True)

    def abort(self) -> None:
        """Remove what this run wrote: its temporary folders, and the job folder itself if this run made it."""
        for p in (self.work_partial, self.poses_partial):
            shutil.rmtree(p, ignore_errors=True)
        for p in self.root.glob(".*.tmp") if self.root.is_dir() else ():
            with contextlib.suppress(OSError):
                p.unlink()
        if self.created and self.root.is_dir() and {p.name for p in self.root.iterdir()} <= {MARKER}:
            with contextlib.suppress(OSError):  # nothing but our marker is left: the folder goes too
                (self.root / MARKER).unlink(missing_ok=True)
                self.root.rmdir()
