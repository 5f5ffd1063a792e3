"""Camera poses from unposed photos with pycolmap 4.x, stage by stage.

Stages (each reports over the protocol through :class:`PoseEstimator`'s emitter):
``scan`` (list and check the files, group images into cameras), ``extract`` (SIFT on the CPU, in batches so
progress can be reported), ``match`` (pairs chosen by :mod:`.pairs`, matched in chunks), ``map``
(incremental or global mapping; the model with the most registered images wins), ``refine`` (one bundle
adjustment that also refines the principal point of shared cameras), ``undistort`` (to PINHOLE, masks warped
the same way) and ``report`` (statistics, suspicious cameras, region of interest).

Everything is written under the job folder (see :mod:`.jobdir`): ``<job>/colmap/`` holds the database and
the raw models, ``<job>/poses/`` the posed dataset (see :data:`POSES_LAYOUT`); both are built under temporary
names and renamed into place at the end, so a failed run leaves the previous results as they were. A folder
that is not empty and not a poses job is refused. The user's image folder is only read.

This module needs numpy and pycolmap only (it runs in Blender's own Python), never torch.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pycolmap

from .. import capture_files, protocol
from ..data.images import image_decode_problem
from ..errors import BackendError
from . import pairs as pairing
from .jobdir import DISK_FULL_BYTES, PosesJob, free_bytes, os_error, require_space
from .quality import (
    ModelArrays,
    implausible_cameras,
    model_arrays,
    model_statistics,
    region_of_interest,
    suspicious_cameras,
)

log = logging.getLogger("backend.poses")

#: Extensions tried as images (anything else in the folder is skipped and listed).
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jpe", ".png", ".tif", ".tiff", ".bmp", ".webp", ".jp2",
                              ".ppm", ".pgm", ".pnm"})
#: Photo formats pycolmap cannot read: skipped with a hint to convert them.
UNSUPPORTED_PHOTO_EXTENSIONS = frozenset({".heic", ".heif", ".avif", ".dng", ".cr2", ".cr3", ".nef", ".arw",
                                          ".orf", ".rw2", ".raf"})
MATCHING_CHOICES = ("auto", "exhaustive", "sequential", "retrieval", "vocab", "spatial")
MAPPER_CHOICES = ("auto", "incremental", "global")
CAMERA_MODE_CHOICES = ("auto", "single", "per_image")
CAMERA_MODEL_CHOICES = ("SIMPLE_RADIAL", "RADIAL", "OPENCV", "SIMPLE_PINHOLE", "PINHOLE")
#: Fewest images a camera needs before the final bundle adjustment refines its principal point.
MIN_IMAGES_FOR_PRINCIPAL_POINT = 3
#: Fewest features an image needs to be usable.
MIN_FEATURES = 16
#: SIFT peak thresholds tried in turn (COLMAP's default first) until a sample of the images gives at least
#: :data:`MIN_MEDIAN_FEATURES` features each (median): smooth, furry or small photos need a lower threshold.
PEAK_THRESHOLDS = (0.02 / 3, 0.002, 0.001)
MIN_MEDIAN_FEATURES = 2000
#: Checks whose cameras are dropped as implausible from the models of the retries (relaxed incremental and global
#: mapping place weakly attached images wrongly more often). The first, plain incremental model is trusted as it
#: is: its checks only warn (``suspicious`` in the report), as before.
IMPLAUSIBLE_CODES = ("looks_away", "axis_misses_region", "region_outside_image", "few_points", "inside_region")
#: Folder (under ``colmap/``) of each mapping attempt's models.
MAPPER_FOLDERS = {"incremental": "sparse", "incremental_relaxed": "sparse_relaxed", "global": "sparse_global"}
#: A guided re-match costs about this many times the plain matching (measured on plush_dog's ring: 2.5x).
GUIDED_COST_FACTOR = 3.0
#: Bytes the database, models and undistorted copies need at least: input bytes x this + per image + fixed.
SPACE_PER_INPUT_BYTE = 1.1
SPACE_PER_IMAGE = 100_000
SPACE_FIXED = 4_000_000

#: What ``<job>/poses`` holds (the training command reads it as a COLMAP dataset).
POSES_LAYOUT = {
    "images/": "undistorted images, same file names as the input",
    "masks/": "undistorted masks as <image name>.png, 8-bit grey, 255 = object (only with --masks)",
    "sparse/": "COLMAP binary model (cameras.bin: PINHOLE, images.bin, points3D.bin, rigs.bin, frames.bin)",
    "cameras.json": "per image: size, K (OpenCV pixel convention), camera-to-world (OpenCV axes)",
    "points.npz": "sparse points: xyz float32 (P, 3), rgb uint8 (P, 3), error float32, track_length int32",
    "roi.json": "region of interest: center, radius, box_min, box_max, up (reconstruction coordinates)",
    "report.json": "quality report (the `report` of the done message)",
}


@dataclass
class PoseOptions:
    """Settings of a pose-estimation run (defaults are what ``python -m backend poses`` uses).

    Attributes:
        matching: one of :data:`MATCHING_CHOICES`; ``auto`` matches every pair while that is affordable (see
            :func:`.pairs.choose_matching`), else neighbours for numbered sequences plus retrieval.
        max_image_size: longer image side for feature extraction (larger images are downscaled for SIFT only).
        max_features: most SIFT features per image.
        peak_threshold: SIFT peak threshold; None tries :data:`PEAK_THRESHOLDS` on a sample of the images and
            takes the first that gives enough features.
        mapper: ``incremental``, ``global`` or ``auto`` (incremental; when images stay unregistered, incremental
            with relaxed thresholds and global mapping too; the model with the most plausible cameras wins).
        camera_mode: ``auto`` groups images into cameras by size and EXIF focal length; ``single``; ``per_image``.
        camera_model: COLMAP model estimated during mapping (undistorted to PINHOLE at the end).
        refine_principal_point: final bundle adjustment also refines principal points (of cameras shared by
            at least :data:`MIN_IMAGES_FOR_PRINCIPAL_POINT` images).
        mask_features: ignore features outside the masks (turntable captures, where the background is static).
        sequential_overlap: neighbours matched in ``sequential`` mode (plus 2^k neighbours further away).
        vocab_tree: vocabulary-tree file for ``vocab`` matching.
        match_in_chunks: match exhaustive pairs through our own pair list, which reports (estimated) progress;
            else ``pycolmap.match_exhaustive`` in one silent call.
        num_threads: CPU threads (-1: all).
        seed: random seed for RANSAC and mapping (runs repeat exactly).
    """

    matching: str = "auto"
    max_image_size: int = 3200
    max_features: int = 8192
    peak_threshold: float | None = None
    mapper: str = "auto"
    camera_mode: str = "auto"
    camera_model: str = "SIMPLE_RADIAL"
    refine_principal_point: bool = True
    mask_features: bool = False
    sequential_overlap: int = 10
    vocab_tree: str | None = None
    match_in_chunks: bool = True
    num_threads: int = -1
    seed: int = 0

    def check(self) -> None:
        """Raise :class:`BackendError` for a setting outside its choices."""
        for name, value, choices in (("matching", self.matching, MATCHING_CHOICES),
                                     ("mapper", self.mapper, MAPPER_CHOICES),
                                     ("camera_mode", self.camera_mode, CAMERA_MODE_CHOICES),
                                     ("camera_model", self.camera_model, CAMERA_MODEL_CHOICES)):
            if value not in choices:
                raise BackendError(f"unknown {name} {value!r}", hint=f"Use one of: {', '.join(choices)}.")
        if self.matching == "vocab" and not (self.vocab_tree and Path(self.vocab_tree).is_file()):
            raise BackendError("vocab matching needs a vocabulary-tree file",
                               hint="Pass --vocab-tree FILE (from the COLMAP releases), or use --matching auto.")
        if self.max_image_size is not None and 0 < self.max_image_size < 64:
            raise BackendError(f"--max-image-size {self.max_image_size} is too small", hint="Use 64 or more.")
        if self.peak_threshold is not None and not 0 < self.peak_threshold < 1:
            raise BackendError(f"--peak-threshold {self.peak_threshold} is outside (0, 1)",
                               hint="Leave it out (chosen from the photos), or use e.g. 0.0067 (COLMAP's default) "
                                    "down to 0.001 for smooth objects.")


@dataclass
class ImageEntry:
    """One file of the input folder."""

    name: str
    path: Path
    mask: Path | None = None
    width: int = 0
    height: int = 0
    camera_key: tuple[Any, ...] = ()
    dropped: str | None = None  # reason code once the image is out
    detail: str = ""


@dataclass
class StageTimer:
    """Wall-clock seconds per stage, and CPU seconds of this process (all threads: on a busy machine the wall
    time says little, the CPU time much more)."""

    seconds: dict[str, float] = field(default_factory=dict)
    cpu_seconds: dict[str, float] = field(default_factory=dict)

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start, start_cpu = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.seconds[name] = round(self.seconds.get(name, 0.0) + time.perf_counter() - start, 3)
            self.cpu_seconds[name] = round(self.cpu_seconds.get(name, 0.0) + time.process_time() - start_cpu, 3)


class _NullEmitter:
    """Stands in for :class:`protocol.Emitter` when a caller wants no messages (they go to the log)."""

    def emit(self, msg_type: str, **fields: Any) -> dict[str, Any]:
        log.debug("%s %s", msg_type, fields)
        return {"type": msg_type, **fields}


def _natural_sorted(names: Sequence[str]) -> list[str]:
    return sorted(names, key=pairing.natural_key)


def _match_mask(image: Path, mask_dir: Path, masks: dict[str, Path]) -> Path | None:
    """The mask of an image: ``<name>.png`` (COLMAP), ``<stem>.<ext>``, or the same number (``000.png``)."""
    for key in (image.name + ".png", image.name):
        if key in masks:
            return masks[key]
    stem = image.stem
    by_stem = [p for n, p in masks.items() if Path(n).stem == stem]
    if by_stem:
        return by_stem[0]
    if stem.isdigit():
        by_number = [p for n, p in masks.items() if Path(n).stem.isdigit() and int(Path(n).stem) == int(stem)]
        if len(by_number) == 1:
            return by_number[0]
    return None


@contextlib.contextmanager
def protect_stdout(emitter: Any) -> Iterator[None]:
    """Send anything native code prints on file descriptor 1 to stderr, keeping stdout for protocol messages.

    The emitter keeps writing to the real stdout through a duplicate of the descriptor. A no-op unless the
    emitter writes to this process's descriptor 1.
    """
    stream = getattr(emitter, "stream", None)
    try:
        is_fd1 = stream is not None and stream.fileno() == 1
    except (AttributeError, OSError, ValueError):
        is_fd1 = False
    if not is_fd1:
        yield
        return
    stream.flush()
    saved = os.dup(1)
    replacement = os.fdopen(os.dup(saved), "w", buffering=1, encoding="utf-8")
    os.dup2(2, 1)
    emitter.stream = replacement
    try:
        yield
    finally:
        replacement.flush()
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
        emitter.stream = stream
        replacement.close()


class PoseEstimator:
    """Runs the stages for one image folder into one job folder.

    Usage: ``report = PoseEstimator(images, job, options, emitter).run()``; or call the stages in order
    (``scan``, ``extract``, ``match``, ``map``, ``refine``, ``undistort``, ``report``) to time them (then a
    failure leaves the temporary folders for the next run to remove).
    """

    def __init__(self, images: str | os.PathLike[str], job: str | os.PathLike[str],
                 options: PoseOptions | None = None, emitter: Any = None,
                 masks: str | os.PathLike[str] | None = None) -> None:
        self.image_dir = Path(images).expanduser().resolve()
        self.job = Path(job).expanduser().resolve()
        self.mask_dir = Path(masks).expanduser().resolve() if masks else None
        self.options = options or PoseOptions()
        self.emitter = emitter or _NullEmitter()
        self.timer = StageTimer()
        self.jobdir = PosesJob(self.job)
        self.work_dir = self.jobdir.work_partial  # ``<job>/colmap`` once the run is finished
        self.entries: list[ImageEntry] = []
        self.skipped: list[dict[str, str]] = []
        self.matching_used = ""
        self.mapper_used = ""
        self.features_info: dict[str, Any] = {}
        self.match_stats: dict[str, Any] = {}
        self.models_found: list[int] = []
        self.mapping_attempts: list[dict[str, Any]] = []
        self.match_rounds: list[dict[str, Any]] = []  # statistics of earlier matching rounds (before a retry)
        self.model_folder = "sparse"  # colmap/<folder> of the chosen model's mapping attempt
        self.implausible: dict[str, str] = {}  # cameras left out of the chosen model, with the reason
        self.refine_info: dict[str, Any] = {}
        self.reconstruction: Any = None  # the chosen pycolmap.Reconstruction (distorted cameras)
        self.final_report: dict[str, Any] | None = None

    # -------------------------------------------------------------------------------------------- paths

    @property
    def database(self) -> Path:
        return self.work_dir / "database.db"

    @property
    def output_dir(self) -> Path:
        """``<job>/poses``: the posed dataset (see :data:`POSES_LAYOUT`)."""
        return protocol.JobLayout(self.job).poses

    @property
    def staging_dir(self) -> Path:
        return self.jobdir.poses_partial

    @property
    def usable(self) -> list[ImageEntry]:
        return [e for e in self.entries if e.dropped is None]

    def _emit(self, msg_type: str, **fields: Any) -> None:
        self.emitter.emit(msg_type, **fields)

    def _stage(self, name: str, detail: str) -> None:
        log.info("%s: %s", name, detail)
        self._emit("stage", name=name, detail=detail)

    def _progress(self, phase: str, step: int, total: int, **extra: Any) -> None:
        self._emit("progress", step=int(step), total=int(total), phase=phase, **extra)

    # -------------------------------------------------------------------------------------------- stages

    def run(self) -> dict[str, Any]:
        """All stages; returns the report (also in ``<job>/poses/report.json``).

        On any failure the files this run wrote are removed (the previous results of the job stay) and the
        error is raised as a :class:`BackendError` naming the path and what to do.
        """
        self.options.check()
        quiet_pycolmap_log_files()
        try:
            with self.timer.stage("scan"):
                self.scan()
            with self.timer.stage("extract"):
                self.extract()
            with self.timer.stage("match"):
                self.match()
            with self.timer.stage("map"):
                self.map()
            if self._rematch_worthwhile():
                with self.timer.stage("match"):
                    self.match(guided=True)
                with self.timer.stage("map"):
                    self.map()
            with self.timer.stage("refine"):
                self.refine()
            with self.timer.stage("undistort"):
                self.undistort()
            with self.timer.stage("report"):
                return self.report()
        except BaseException as exc:
            free = free_bytes(self.job)  # before the partial files are removed again
            if self.jobdir.prepared:
                self.jobdir.abort()
            if isinstance(exc, OSError):
                raise os_error(exc, self.job, "write to the job folder") from exc
            if isinstance(exc, RuntimeError) and (_is_disk_full(exc) or (free is not None and free < DISK_FULL_BYTES)):
                raise BackendError(f"the disk is full: pycolmap could not write to the job folder ({exc})",
                                   file=self.job, hint="Free some space on that disk, or choose a job folder on "
                                                       "another disk (--out); the partial files of this run were "
                                                       "removed.") from exc
            if isinstance(exc, RuntimeError) and any(w in str(exc).lower() for w in ("database", "sqlite")):
                raise BackendError(f"pycolmap cannot open or write its database: {exc}", file=self.database,
                                   hint="Check the disk of the job folder (free space, permissions, errors), or "
                                        "choose another job folder (--out).") from exc
            raise

    def scan(self) -> None:
        """Check the folders, list the images, skip what is not one, group images into cameras, fill the database."""
        opts = self.options
        if not self.image_dir.is_dir():
            raise BackendError(f"image folder not found: {self.image_dir}", file=self.image_dir,
                               hint="Pass --images with the folder that holds the photos.")
        if self.job == self.image_dir:
            raise BackendError("the output folder is the image folder", file=self.job,
                               hint="Choose a separate job folder with --out; the photos are never written to.")
        if any(self.image_dir.is_relative_to(p) for p in (self.jobdir.poses_dir, self.jobdir.work_dir,
                                                           self.jobdir.poses_partial, self.jobdir.work_partial)):
            raise BackendError("the photos are inside the job folder's results, which this run replaces",
                               file=self.image_dir, hint="Copy the photos to a folder of their own, or choose "
                                                         "another job folder with --out.")
        try:
            files = _natural_sorted([p.name for p in self.image_dir.iterdir()
                                     if not p.name.startswith(".") and p.is_file()])
        except OSError as exc:
            raise os_error(exc, self.image_dir, "read the image folder") from exc
        self.jobdir.prepare(self.image_dir)
        if self.jobdir.reused:
            self._emit("warning", message=f"{self.job} already holds the results of a pose estimation: its "
                                          "poses/ and colmap/ folders are replaced when this run finishes (until "
                                          "then they stay as they are); other files in the folder are kept",
                       file=str(self.job))
        if self.jobdir.cleaned:
            log.info("removed what an interrupted run left in %s: %s", self.job, ", ".join(self.jobdir.cleaned))
        self._stage("scan", f"reading {self.image_dir}")
        candidates = []
        for name in files:
            ext = Path(name).suffix.lower()
            if ext in IMAGE_EXTENSIONS:
                candidates.append(name)
            elif ext in UNSUPPORTED_PHOTO_EXTENSIONS:
                self.skipped.append({"name": name, "reason": f"{ext} photos cannot be read; convert them to JPEG"})
            else:
                self.skipped.append({"name": name, "reason": "not an image file"})
        if self.skipped:
            listed = ", ".join(s["name"] for s in self.skipped[:20]) + (" ..." if len(self.skipped) > 20 else "")
            self._emit("warning", message=f"skipped {len(self.skipped)} file(s) that are not images: {listed}",
                       files=[s["name"] for s in self.skipped])
        self._require_enough(len(candidates), "image files")
        self.entries = [ImageEntry(name, self.image_dir / name) for name in candidates]
        input_bytes = sum(_file_size(e.path) for e in self.entries)
        require_space(self.job, int(SPACE_PER_INPUT_BYTE * input_bytes + SPACE_PER_IMAGE * len(self.entries)
                                    + SPACE_FIXED), f"the pose estimation of {len(self.entries)} photos")
        self.jobdir.start_work()
        self._probe_images()
        bad = [e for e in self.entries if e.dropped]
        if bad:
            self._emit("warning", message=f"{len(bad)} image(s) cannot be read completely and are skipped: "
                                          + "; ".join(f"{e.name} ({e.detail})" for e in bad[:20]),
                       files=[e.name for e in bad])
        self._require_enough(len(self.usable), "readable images")
        if self.mask_dir is not None:
            self._find_masks()
        groups = self._camera_groups()
        pycolmap.Database.open(self.database).close()
        reader = pycolmap.ImageReaderOptions()
        reader.camera_model = opts.camera_model
        for names in groups:
            pycolmap.import_images(self.database, self.image_dir, camera_mode=pycolmap.CameraMode.SINGLE,
                                   image_names=names, options=reader)
        log.info("%d images in %d camera group(s)", len(self.usable), len(groups))

    def _require_enough(self, n: int, what: str) -> None:
        if n < 3:
            raise BackendError(f"only {n} {what} in {self.image_dir}; pose estimation needs at least 3",
                               file=self.image_dir,
                               hint="Take 20-100 overlapping photos all around the object (each spot seen from "
                                    "at least 3 photos) and put them in one folder.")

    def _probe_images(self) -> None:
        """Find each image's size and focal length (headers, with pycolmap) and check that it decodes completely.

        An image pycolmap cannot open, or whose data ends early or is damaged (a JPEG cut short decodes with
        grey rows and would be copied that way into the dataset), is dropped as ``unreadable`` with the reason.
        """
        probe_db = self.work_dir / "probe.db"
        pycolmap.Database.open(probe_db).close()
        pycolmap.import_images(probe_db, self.image_dir, camera_mode=pycolmap.CameraMode.PER_IMAGE,
                               image_names=[e.name for e in self.entries])
        db = pycolmap.Database.open(probe_db)
        try:
            cams = {c.camera_id: c for c in db.read_all_cameras()}
            found = {im.name: cams[im.camera_id] for im in db.read_all_images()}
        finally:
            db.close()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{probe_db}{suffix}").unlink(missing_ok=True)
        for e in self.entries:
            cam = found.get(e.name)
            if cam is None:
                e.dropped, e.detail = "unreadable", "the file cannot be decoded as an image"
                continue
            problem = image_decode_problem(e.path)
            if problem is not None:
                e.dropped, e.detail = "unreadable", f"the image data is damaged or cut short: {problem}"
                continue
            e.width, e.height = int(cam.width), int(cam.height)
            focal = round(float(cam.focal_length), 1) if cam.has_prior_focal_length else None
            e.camera_key = (e.width, e.height, focal)

    def _camera_groups(self) -> list[list[str]]:
        """Images that share one camera (intrinsics), by ``camera_mode``."""
        mode = self.options.camera_mode
        usable = self.usable
        if mode == "per_image":
            return [[e.name] for e in usable]
        key_of = (lambda e: (e.width, e.height)) if mode == "single" else (lambda e: e.camera_key)
        groups: dict[Any, list[str]] = {}
        for e in usable:
            groups.setdefault(key_of(e), []).append(e.name)
        if mode == "single" and len(groups) > 1:
            self._emit("warning", message="--camera-mode single, but the images have different sizes: "
                                          f"using one camera per size ({len(groups)} cameras)")
        return list(groups.values())

    def _find_masks(self) -> None:
        assert self.mask_dir is not None
        if not self.mask_dir.is_dir():
            raise BackendError(f"mask folder not found: {self.mask_dir}", file=self.mask_dir,
                               hint="Pass --masks with a folder of masks (white = object), or leave it out.")
        masks = {p.name: p for p in self.mask_dir.iterdir() if p.is_file() and not p.name.startswith(".")}
        missing = []
        for e in self.usable:
            e.mask = _match_mask(e.path, self.mask_dir, masks)
            if e.mask is None:
                missing.append(e.name)
        if missing:
            self._emit("warning", message=f"no mask found for {len(missing)} image(s): "
                                          + ", ".join(missing[:20]) + "; those images get no mask",
                       files=missing)

    def _feature_masks(self) -> Path:
        """Masks renamed to COLMAP's ``<image name>.png`` convention (0 = ignore features) in the work folder."""
        out = self.work_dir / "feature_masks"
        out.mkdir(parents=True, exist_ok=True)
        for e in self.usable:
            if e.mask is None:
                continue
            bitmap = pycolmap.Bitmap.read(e.mask, False)
            if bitmap is None:
                continue
            if (bitmap.width, bitmap.height) != (e.width, e.height):
                bitmap.rescale(e.width, e.height)
            arr = np.asarray(bitmap.to_array())
            bitmap = pycolmap.Bitmap.from_array(np.ascontiguousarray(np.where(arr >= 128, 255, 0).astype(np.uint8)))
            bitmap.write(out / (e.name + ".png"))
        return out

    def extract(self) -> None:
        """SIFT features for every usable image, in batches so progress can be reported.

        The first batch is a sample spread over the set. With ``peak_threshold`` None, when its median feature
        count stays under :data:`MIN_MEDIAN_FEATURES` its features are dropped and it is extracted again with
        the next, lower threshold of :data:`PEAK_THRESHOLDS` (smooth or furry objects and small photos give few
        SIFT features at COLMAP's default, and too few to link views a few tens of degrees apart).
        """
        opts = self.options
        names = [e.name for e in self.usable]
        size = "full size" if opts.max_image_size <= 0 else f"longer side <= {opts.max_image_size}px"
        self._stage("extract", f"SIFT features of {len(names)} images ({size}, CPU)")
        ext = pycolmap.FeatureExtractionOptions()
        ext.max_image_size = int(opts.max_image_size) if opts.max_image_size > 0 else -1
        ext.num_threads = opts.num_threads
        ext.use_gpu = False
        ext.sift.max_num_features = int(opts.max_features)
        reader = pycolmap.ImageReaderOptions()
        reader.camera_model = opts.camera_model
        if opts.mask_features and self.mask_dir is not None:
            reader.mask_path = self._feature_masks()
        threads = opts.num_threads if opts.num_threads > 0 else (os.cpu_count() or 2)
        batch = max(2 * threads, math.ceil(len(names) / 20))
        sample = sorted({round(k * (len(names) - 1) / max(batch - 1, 1)) for k in range(batch)})
        order = [names[i] for i in sample] + [n for i, n in enumerate(names) if i not in set(sample)]

        def run_batch(batch_names: list[str]) -> None:
            # the images are already in the database with their cameras; PER_IMAGE skips the single-size check
            pycolmap.extract_features(self.database, self.image_dir, image_names=batch_names,
                                      camera_mode=pycolmap.CameraMode.PER_IMAGE, reader_options=reader,
                                      extraction_options=ext, device=pycolmap.Device.cpu)

        self._progress("extract", 0, len(names))
        thresholds = PEAK_THRESHOLDS if opts.peak_threshold is None else (opts.peak_threshold,)
        tried: list[dict[str, Any]] = []
        first = order[:batch]
        for k, threshold in enumerate(thresholds):
            ext.sift.peak_threshold = float(threshold)
            run_batch(first)
            counts = self._keypoint_counts()
            median = float(np.median([counts.get(n, 0) for n in first]))
            tried.append({"peak_threshold": float(threshold), "sample_median_features": median})
            if median >= MIN_MEDIAN_FEATURES or k == len(thresholds) - 1:
                break
            log.info("extract: %d features per image (median of %d) at peak threshold %.4f: trying %.4f",
                     median, len(first), threshold, thresholds[k + 1])
            db = pycolmap.Database.open(self.database)
            try:  # only the sample has features so far
                db.clear_keypoints()
                db.clear_descriptors()
            finally:
                db.close()
        self._progress("extract", len(first), len(names))
        for start in range(batch, len(order), batch):
            run_batch(order[start:start + batch])
            self._progress("extract", min(start + batch, len(names)), len(names))
        counts = self._keypoint_counts()
        self.features_info = {"peak_threshold": float(ext.sift.peak_threshold), "tried": tried,
                              "median_features": float(np.median([counts.get(n, 0) for n in names])),
                              "mean_features": float(np.mean([counts.get(n, 0) for n in names]))}
        if len(tried) > 1:
            self._emit("warning", message=f"few SIFT features at COLMAP's default threshold (median "
                                          f"{tried[0]['sample_median_features']:.0f} per photo of a sample): "
                                          f"extracted with peak threshold {ext.sift.peak_threshold:.4f} "
                                          f"instead ({self.features_info['median_features']:.0f} per photo)")
        failed = []
        for e in self.usable:
            n = counts.get(e.name, 0)
            if n < MIN_FEATURES:
                e.dropped = "no_features"
                e.detail = f"{n} features (blank, truncated or corrupt image?)"
                failed.append(e.name)
        if failed:
            self._emit("warning", message=f"{len(failed)} image(s) gave (almost) no features and are skipped: "
                                          + ", ".join(failed[:20]), files=failed)
        self._require_enough(len(self.usable), "images with features")

    def _keypoint_counts(self) -> dict[str, int]:
        db = pycolmap.Database.open(self.database)
        try:
            return {im.name: db.num_keypoints_for_image(im.image_id) for im in db.read_all_images()}
        finally:
            db.close()

    def _image_ids(self) -> dict[str, int]:
        db = pycolmap.Database.open(self.database)
        try:
            return {im.name: im.image_id for im in db.read_all_images()}
        finally:
            db.close()

    def match(self, guided: bool = False) -> None:
        """Match features between the chosen pairs and verify them geometrically.

        Args:
            guided: match again from scratch with guided matching (each verified pair is matched once more
                along its epipolar geometry, which finds the matches the ratio test rejected: more and longer
                tracks between views far apart). The retry when images stay unregistered (see :meth:`run`).
        """
        opts = self.options
        if guided:
            for e in self.entries:
                if e.dropped == "no_matches":
                    e.dropped, e.detail = None, ""
            db = pycolmap.Database.open(self.database)
            try:
                db.clear_matches()
                db.clear_two_view_geometries()
            finally:
                db.close()
        names = [e.name for e in self.usable]
        threads = opts.num_threads if opts.num_threads > 0 else (os.cpu_count() or 2)
        strategy = (pairing.choose_matching(names, self.features_info.get("mean_features"), threads)
                    if opts.matching == "auto" else opts.matching)
        self.matching_used = strategy + (" (guided)" if guided else "")
        matching = pycolmap.FeatureMatchingOptions()
        matching.num_threads = opts.num_threads
        matching.use_gpu = False
        matching.guided_matching = guided
        verification = pycolmap.TwoViewGeometryOptions()
        verification.ransac.random_seed = opts.seed
        kwargs: dict[str, Any] = {"matching_options": matching, "verification_options": verification,
                                  "device": pycolmap.Device.cpu}
        own_pairs = strategy in ("sequential", "retrieval") or (strategy == "exhaustive" and opts.match_in_chunks)
        if own_pairs and any(" " in n for n in names):
            # COLMAP's pair lists are space separated: names with spaces need its own pairing
            log.info("image names contain spaces: using pycolmap's own pairing instead of %s", strategy)
            strategy = "sequential" if strategy == "sequential" else "exhaustive"
            own_pairs = False
        pair_list: list[tuple[int, int]] | None = None
        if own_pairs and strategy == "exhaustive":
            pair_list = pairing.exhaustive_pairs(len(names))
        elif own_pairs:
            self._stage("match", f"choosing {strategy} pairs among {len(names)} images")
            pair_list = self._retrieval_pairs(names, k=pairing.retrieval_neighbours(len(names)))
            if strategy == "sequential":
                pair_list = sorted(set(pair_list) | set(pairing.sequential_pairs(len(names), opts.sequential_overlap)))
        n = len(names)
        known = len(pair_list) if pair_list is not None else (n * (n - 1) // 2 if strategy == "exhaustive" else None)
        if self.match_stats:
            self.match_rounds.append(self.match_stats)
        self.match_stats = {"pairs_matched": known, "guided": guided}
        if pair_list is not None:
            self._stage("match", f"{self.matching_used} matching: {len(pair_list)} pairs of {len(names)} images")
            self._match_pairs(names, pair_list, kwargs)
        else:
            self._stage("match", f"{self.matching_used} matching of {len(names)} images")
            if strategy == "exhaustive":
                pycolmap.match_exhaustive(self.database, **kwargs)
            elif strategy == "sequential":
                seq = pycolmap.SequentialPairingOptions()
                seq.overlap = opts.sequential_overlap
                pycolmap.match_sequential(self.database, pairing_options=seq, **kwargs)
            elif strategy == "vocab":
                voc = pycolmap.VocabTreePairingOptions()
                voc.vocab_tree_path = str(opts.vocab_tree)
                pycolmap.match_vocabtree(self.database, pairing_options=voc, **kwargs)
            elif strategy == "spatial":
                db = pycolmap.Database.open(self.database)
                try:
                    n_priors = db.num_pose_priors()
                finally:
                    db.close()
                if n_priors < 3:
                    raise BackendError("spatial matching needs GPS positions in the photos' EXIF data",
                                       hint="Use --matching auto (or exhaustive) for photos without GPS.")
                pycolmap.match_spatial(self.database, **kwargs)
        self._check_overlap()

    def _retrieval_pairs(self, names: list[str], k: int) -> list[tuple[int, int]]:
        ids = self._image_ids()
        db = pycolmap.Database.open(self.database)
        try:
            descriptors = [np.asarray(db.read_descriptors(ids[n]).data) for n in names]
        finally:
            db.close()
        return pairing.retrieval_pairs(descriptors, k=k, seed=self.options.seed)

    def _match_pairs(self, names: list[str], pair_list: list[tuple[int, int]], kwargs: dict[str, Any]) -> None:
        """Match ``pair_list`` (indices into ``names``) and report progress while pycolmap works.

        Each pycolmap call loads every image it touches (about as costly as matching one pair), so chopping the
        list into many calls costs much (measured: 20 chunks of DTU pairs, +56% CPU). Instead a small first
        call over the first images times the matching, then one call does the rest on a worker thread while
        this thread reports the estimated progress (``estimated: true``).
        """
        ordered = sorted(pair_list, key=lambda p: (max(p), min(p)))  # the first pairs involve the first images only
        total = len(ordered)
        n_first = min(total, max(1, total // 20))
        first, rest = ordered[:n_first], ordered[n_first:]
        self._progress("match", 0, total)
        start = time.perf_counter()
        self._match_list(names, first, kwargs, "pairs_first.txt")
        rate = len(first) / max(time.perf_counter() - start, 1e-3)
        self._progress("match", len(first), total)
        if rest:
            last = [len(first)]

            def tick(elapsed: float) -> None:
                step = len(first) + min(len(rest) - 1, int(elapsed * rate))
                if step > last[0]:
                    last[0] = step
                    self._progress("match", step, total, estimated=True)

            _run_with_ticks(lambda: self._match_list(names, rest, kwargs, "pairs.txt"), tick, interval=2.0)
        self._progress("match", total, total)

    def _match_list(self, names: list[str], pair_list: Sequence[tuple[int, int]], kwargs: dict[str, Any],
                    file_name: str) -> None:
        list_file = self.work_dir / file_name
        list_file.write_text("".join(f"{names[i]} {names[j]}\n" for i, j in pair_list), encoding="utf-8")
        imported = pycolmap.ImportedPairingOptions()
        imported.match_list_path = list_file
        pycolmap.match_image_pairs(self.database, pairing_options=imported, **kwargs)

    def _check_overlap(self) -> None:
        """Count verified pairs; drop images that overlap with none; fail when nothing overlaps."""
        db = pycolmap.Database.open(self.database)
        try:
            ids = {im.image_id: im.name for im in db.read_all_images()}
            pair_ids, geometries = db.read_two_view_geometries()
        finally:
            db.close()
        min_inliers = 15
        connected: set[str] = set()
        verified = 0
        for pid, geom in zip(pair_ids, geometries, strict=True):
            if len(geom.inlier_matches) >= min_inliers:
                verified += 1
                i, j = pycolmap.pair_id_to_image_pair(pid)
                connected.update((ids.get(i, ""), ids.get(j, "")))
        if self.match_stats.get("pairs_matched") is None:  # pycolmap chose the pairs: count those with matches
            self.match_stats["pairs_matched"] = len(pair_ids)
        self.match_stats["pairs_verified"] = verified
        if verified == 0:
            raise BackendError(
                "the images do not overlap: no two images share enough matching features",
                file=self.image_dir,
                hint="Photograph one object or scene with much overlap between neighbouring shots (about 60-80%), "
                     "avoid plain untextured surfaces, and keep the photos sharp.")
        for e in self.usable:
            if e.name not in connected:
                e.dropped, e.detail = "no_matches", "shares too few features with every other image"

    def map(self) -> None:
        """Mapping, retried while images stay unregistered; keeps the model with the most plausible cameras.

        With ``mapper`` ``auto``: incremental mapping with COLMAP's defaults; when it leaves usable images out,
        incremental mapping with relaxed registration thresholds, then global mapping (on sets over 200 images
        only while more than 5% are missing: each costs about as much as the first run). Each model's
        implausible cameras (:func:`implausible_cameras`) are counted out, and the model with the most plausible
        cameras wins (the earlier attempt on a tie): a larger model with a few misplaced cameras is kept without
        them rather than a smaller one (the first, plain incremental model is taken as it is). Every attempt is
        listed in the report (``mapping_attempts``).

        Called again after a guided re-match (see :meth:`run`), the model chosen before competes too.
        """
        opts = self.options
        n_usable = sum(1 for e in self.entries if e.dropped in (None, "no_matches"))
        attempts = {"auto": ["incremental", "incremental_relaxed", "global"], "incremental": ["incremental"],
                    "global": ["global"]}[opts.mapper]
        guided = bool(self.match_stats.get("guided"))
        best: tuple[dict[str, Any], Any] | None = None
        earlier = next((a for a in self.mapping_attempts if a.get("used")), None)
        if earlier is not None and self.reconstruction is not None:
            best = (earlier, self.reconstruction)
        for k, attempt in enumerate(attempts):
            if k > 0:
                have = best[0]["plausible"] if best else 0
                if have >= n_usable or (n_usable > 200 and have >= 0.95 * n_usable):
                    break
                self._emit("stage", name="map", detail=f"{self.mapping_attempts[-1]['mapper']} mapping kept "
                                                       f"{have}/{n_usable} images: retrying with {attempt} mapping")
            start = time.perf_counter()
            folder = MAPPER_FOLDERS[attempt] + ("_guided" if guided else "")
            models = self._run_mapper(attempt, folder)
            rec = self._best(models)
            info: dict[str, Any] = {"mapper": attempt, "guided_matching": guided, "folder": folder,
                                    "registered": rec.num_reg_images() if rec else 0,
                                    "models": sorted((m.num_reg_images() for m in models.values()), reverse=True),
                                    "implausible": [], "plausible": 0}
            if rec is not None:
                if attempt != "incremental":
                    info["implausible"] = implausible_cameras(model_arrays(rec), IMPLAUSIBLE_CODES)
                info["plausible"] = info["registered"] - len(info["implausible"])
            info["seconds"] = round(time.perf_counter() - start, 3)
            self.mapping_attempts.append(info)
            log.info("map: %s mapping registered %d images (%d implausible) in %.1f s", attempt,
                     info["registered"], len(info["implausible"]), info["seconds"])
            if rec is not None and (best is None or info["plausible"] > best[0]["plausible"]):
                best = (info, rec)
        if best is None or best[0]["plausible"] < 2:
            raise BackendError(
                "no images could be registered: the matches between the images do not fit one 3D scene",
                file=self.image_dir,
                hint="Use more photos with more overlap (move a little between shots, walk around the object), "
                     "avoid moving objects and reflections, or try --matching exhaustive.")
        info, rec = best
        for attempt in self.mapping_attempts:
            attempt["used"] = attempt is info
        if info["implausible"]:
            drop = set(info["implausible"])
            for iid in list(rec.reg_image_ids()):
                if rec.images[iid].name in drop:
                    rec.deregister_frame(rec.images[iid].frame_id)
            self._emit("warning", message=f"{info['mapper']} mapping placed {len(drop)} camera(s) implausibly; "
                                          f"they are left out: {', '.join(sorted(drop)[:20])}", files=sorted(drop))
        self.implausible = {name: "its pose does not fit the others (see suspicious checks)"
                            for name in info["implausible"]}
        self.mapper_used = info["mapper"]
        self.model_folder = info["folder"]
        self.models_found = info["models"]
        self.reconstruction = rec

    def _rematch_worthwhile(self) -> bool:
        """Whether to match again with guided matching: images stay out, and it is affordable (auto mode only)."""
        opts = self.options
        if opts.mapper != "auto" or self.match_stats.get("guided") or not self.mapping_attempts:
            return False
        n_candidates = sum(1 for e in self.entries if e.dropped in (None, "no_matches"))
        have = next(a["plausible"] for a in self.mapping_attempts if a.get("used"))
        if have >= n_candidates or (n_candidates > 200 and have >= 0.95 * n_candidates):
            return False
        threads = opts.num_threads if opts.num_threads > 0 else (os.cpu_count() or 2)
        pairs = self.match_stats.get("pairs_matched") or n_candidates * (n_candidates - 1) // 2
        cost = GUIDED_COST_FACTOR * pairing.estimated_match_seconds(pairs, self.features_info.get(
            "mean_features", opts.max_features), threads)
        if cost > pairing.EXHAUSTIVE_BUDGET_S:
            log.info("map: %d of %d images kept; a guided re-match (about %.0f s) is not tried", have,
                     n_candidates, cost)
            return False
        self._emit("stage", name="match", detail=f"{have} of {n_candidates} images kept: matching again with "
                                                 "guided matching (more matches between views far apart)")
        return True

    def _run_mapper(self, mapper: str, folder: str) -> dict[int, Any]:
        """Run one mapping attempt (``incremental``, ``incremental_relaxed``, ``global``) into ``colmap/<folder>``."""
        opts = self.options
        out = self.work_dir / folder
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        total = sum(1 for e in self.entries if e.dropped in (None, "no_matches"))
        if mapper == "global":
            self._stage("map", f"global mapping of {total} images")
            options = pycolmap.GlobalPipelineOptions()
            options.num_threads = opts.num_threads
            options.random_seed = opts.seed
            options.mapper.global_positioning.use_gpu = False
            options.mapper.bundle_adjustment.ceres.use_gpu = False
            return dict(pycolmap.global_mapping(self.database, self.image_dir, out, options=options))
        self._stage("map", f"{mapper.replace('_', ' ')} mapping of {total} images")
        options = pycolmap.IncrementalPipelineOptions()
        options.num_threads = opts.num_threads
        options.random_seed = opts.seed
        options.ba_use_gpu = False
        options.extract_colors = True
        options.min_model_size = 3  # pycolmap discards models under 10 images: small captures would get nothing
        if mapper == "incremental_relaxed":
            # register images on weaker evidence (COLMAP: 30 inliers, 25%; start pairs with 100 inliers); the
            # plausibility checks afterwards catch what this places wrongly
            options.mapper.abs_pose_min_num_inliers = 15
            options.mapper.abs_pose_min_inlier_ratio = 0.15
            options.mapper.init_min_num_inliers = 50
        counter = {"n": 0}

        def next_image() -> None:
            counter["n"] += 1
            self._progress("map", min(counter["n"], total), total)

        def first_pair() -> None:
            counter["n"] = 2
            self._progress("map", 2, total)

        return dict(pycolmap.incremental_mapping(self.database, self.image_dir, out, options=options,
                                                 initial_image_pair_callback=first_pair,
                                                 next_image_callback=next_image))

    @staticmethod
    def _best(models: dict[int, Any]) -> Any:
        if not models:
            return None
        return max(models.values(), key=lambda r: (r.num_reg_images(), r.num_points3D()))

    def refine(self) -> None:
        """A final bundle adjustment that also refines the principal point of shared cameras."""
        rec = self.reconstruction
        self._stage("refine", "bundle adjustment with principal points")
        before = pycolmap.Reconstruction(rec)
        image_count: dict[int, int] = {}
        for iid in rec.reg_image_ids():
            cid = rec.images[iid].camera_id
            image_count[cid] = image_count.get(cid, 0) + 1
        shared = {cid for cid, n in image_count.items() if n >= MIN_IMAGES_FOR_PRINCIPAL_POINT}
        refine_pp = self.options.refine_principal_point and bool(shared)
        error_before = rec.compute_mean_reprojection_error()
        options = pycolmap.BundleAdjustmentOptions()
        options.refine_principal_point = refine_pp
        options.print_summary = False
        options.ceres.loss_function_type = pycolmap.LossFunctionType.CAUCHY  # robust to the odd bad match
        options.ceres.solver_options.num_threads = self.options.num_threads
        options.ceres.solver_options.max_num_iterations = 100
        config = pycolmap.BundleAdjustmentConfig()
        for iid in rec.reg_image_ids():
            config.add_image(iid)
        if refine_pp:  # cameras of one or two images keep theirs: a principal point needs many views to pin down
            for cid in image_count:
                if cid not in shared:
                    config.set_constant_cam_intrinsics(cid)
        config.fix_gauge(pycolmap.BundleAdjustmentGauge.THREE_POINTS)
        pycolmap.create_default_bundle_adjuster(options, config, rec).solve()
        removed = pycolmap.ObservationManager(rec).filter_all_points3D(4.0, 1.5)
        moved = self._principal_point_shift(before, rec)
        reverted = False
        if refine_pp and moved > 0.1:  # more than 10% of the image size: diverged, keep the mapper's result
            self._emit("warning", message=f"bundle adjustment moved a principal point by {moved:.0%} of the image "
                                          "size; keeping the principal points from mapping")
            rec = before
            options.refine_principal_point = False
            pycolmap.create_default_bundle_adjuster(options, config, rec).solve()
            pycolmap.ObservationManager(rec).filter_all_points3D(4.0, 1.5)
            reverted = True
        self.reconstruction = rec
        refined_dir = self.work_dir / "refined"
        shutil.rmtree(refined_dir, ignore_errors=True)
        refined_dir.mkdir(parents=True)
        rec.write(refined_dir)
        self.refine_info = {
            "principal_point_refined": refine_pp and not reverted,
            "principal_point_cameras": sorted(int(c) for c in shared) if refine_pp and not reverted else [],
            "principal_point_max_shift": moved,
            "reprojection_error_before_px": error_before,
            "reprojection_error_after_px": rec.compute_mean_reprojection_error(),
            "observations_filtered": int(removed),
        }

    @staticmethod
    def _principal_point_shift(before: Any, after: Any) -> float:
        """Largest principal-point move between two reconstructions, as a fraction of the image size."""
        worst = 0.0
        for cid, cam in after.cameras.items():
            old = before.cameras[cid]
            dx = abs(cam.principal_point_x - old.principal_point_x) / max(cam.width, 1)
            dy = abs(cam.principal_point_y - old.principal_point_y) / max(cam.height, 1)
            worst = max(worst, dx, dy)
        return float(worst)

    def undistort(self) -> None:
        """Undistort the registered images (and masks) to PINHOLE cameras under a temporary folder."""
        staging = self.staging_dir
        shutil.rmtree(staging, ignore_errors=True)
        n = self.reconstruction.num_reg_images()
        by_name = {e.name: e for e in self.entries}
        names = [self.reconstruction.images[i].name for i in self.reconstruction.reg_image_ids()]
        require_space(self.job, int(SPACE_PER_INPUT_BYTE * sum(_file_size(by_name[k].path) for k in names)
                                    + SPACE_FIXED), f"the {n} undistorted photos")
        staging.mkdir(parents=True)
        self._stage("undistort", f"undistorting {n} images to PINHOLE cameras")
        images_dir = staging / "images"
        last = [-1]

        def tick(_elapsed: float) -> None:
            count = sum(1 for _ in images_dir.iterdir()) if images_dir.is_dir() else 0
            if count != last[0]:
                last[0] = count
                self._progress("undistort", min(count, n), n)

        _run_with_ticks(lambda: pycolmap.undistort_images(
            staging, self.work_dir / "refined", self.image_dir, output_type="COLMAP",
            copy_policy=pycolmap.FileCopyType.copy, num_threads=self.options.num_threads), tick, interval=0.5)
        for extra in ("stereo",):
            shutil.rmtree(staging / extra, ignore_errors=True)
        for script in staging.glob("run-colmap-*.sh"):
            script.unlink()
        self._progress("undistort", n, n)
        for name in names:  # what training will read: complete (a full disk can cut a copy short without an error)
            problem = image_decode_problem(images_dir / name) if (images_dir / name).is_file() else "missing"
            if problem is not None:
                require_space(self.job, SPACE_FIXED, "the undistorted photos")
                raise BackendError(f"the undistorted copy of {name} was not written completely ({problem})",
                                   file=images_dir / name, hint="Check the disk of the job folder (free space, "
                                                                "errors), or choose another job folder (--out).")
        if self.mask_dir is not None:
            self._undistort_masks(staging / "masks")

    def _undistort_masks(self, out: Path) -> None:
        """Warp each mask with its image's undistortion (same options as the images), ``<image name>.png``."""
        rec = self.reconstruction
        out.mkdir(parents=True, exist_ok=True)
        by_name = {e.name: e for e in self.entries}
        options = pycolmap.UndistortCameraOptions()
        for iid in rec.reg_image_ids():
            image = rec.images[iid]
            entry = by_name.get(image.name)
            if entry is None or entry.mask is None:
                continue
            cam = rec.cameras[image.camera_id]
            bitmap = pycolmap.Bitmap.read(entry.mask, False)
            if bitmap is None:
                self._emit("warning", message=f"mask {entry.mask.name} cannot be read; {image.name} gets no mask",
                           file=str(entry.mask))
                continue
            if (bitmap.width, bitmap.height) != (cam.width, cam.height):
                bitmap.rescale(cam.width, cam.height)
            warped, _ = pycolmap.undistort_image(options, bitmap, cam)
            warped.write(out / (image.name + ".png"))

    def report(self) -> dict[str, Any]:
        """Statistics, suspicious cameras and region of interest; moves the dataset into ``<job>/poses``."""
        staging = self.staging_dir
        self._stage("report", "checking the cameras and bounding the scene")
        undistorted = pycolmap.Reconstruction(staging / "sparse")
        arrays = model_arrays(undistorted)
        roi = region_of_interest(arrays)
        suspicious = suspicious_cameras(arrays, roi)
        registered = set(arrays.names)
        in_other_model = self._names_in_other_models(registered)
        for e in self.entries:
            if e.dropped is None and e.name not in registered:
                if e.name in self.implausible:
                    e.dropped, e.detail = "implausible", (f"{self.mapper_used.replace('_', ' ')} mapping placed it "
                                                          "where its view does not fit the others; left out")
                elif e.name in in_other_model:
                    e.dropped, e.detail = "separate_model", "registered only in a smaller, separate reconstruction"
                else:
                    e.dropped, e.detail = "not_registered", "its matches did not agree with the reconstruction"
            elif e.dropped == "no_matches" and e.name in registered:
                e.dropped = None
        stats = model_statistics(arrays)
        report: dict[str, Any] = {
            "registered": stats["registered"],
            "total": len(self.entries),
            "registered_images": arrays.names,
            "dropped": [{"name": e.name, "reason": e.dropped, "detail": e.detail} for e in self.entries if e.dropped],
            "skipped_files": self.skipped,
            "num_points": stats["num_points"],
            "num_observations": stats["num_observations"],
            "mean_track_length": stats["mean_track_length"],
            "mean_reprojection_error_px": stats["mean_reprojection_error_px"],
            "mean_points_per_image": stats["mean_points_per_image"],
            "suspicious": suspicious,
            "roi": {k: roi[k] for k in ("center", "radius", "box_min", "box_max", "up")},
            "roi_details": {k: v for k, v in roi.items() if k not in ("center", "radius", "box_min", "box_max", "up")},
            "cameras": self._camera_table(undistorted),
            "per_image": {name: {"num_points": int(arrays.image_num_points[i]),
                                 "reprojection_error_px": float(arrays.image_errors[i])}
                          for i, name in enumerate(arrays.names)},
            "matching": self.matching_used,
            "features": self.features_info,
            "mapper": self.mapper_used,
            "models": self.models_found,
            "mapping_attempts": self.mapping_attempts,
            "retries": max(0, len(self.mapping_attempts) - 1),
            **self.match_stats,
            "earlier_matching_rounds": self.match_rounds,
            **self.refine_info,
            "timings_s": dict(self.timer.seconds),
            "options": asdict(self.options),
            "images_dir": str(self.image_dir),
            "masks_dir": str(self.mask_dir) if self.mask_dir else None,
            "has_masks": bool(self.mask_dir and (staging / "masks").is_dir() and any((staging / "masks").iterdir())),
            "layout": POSES_LAYOUT,
            "pycolmap": getattr(pycolmap, "__version__", "?"),
            "job": {"folder": str(self.job), "replaced_earlier_results": self.jobdir.reused,
                    "kept_files": [], "removed_leftovers": self.jobdir.cleaned},
        }
        capture_files.write_region(staging / capture_files.REGION, **report["roi"])
        self._write_cameras_json(staging / capture_files.CAMERAS, arrays)
        capture_files.write_points(staging / capture_files.POINTS, arrays.points, arrays.colors, arrays.errors,
                                   arrays.track_lengths)
        report["timings_s"] = dict(self.timer.seconds)
        report["cpu_s"] = dict(self.timer.cpu_seconds)
        capture_files.write_pose_report(staging / capture_files.REPORT, report)
        self.jobdir.commit()  # colmap/ and poses/ renamed into place; the old ones' files that are not ours move over
        self.work_dir = self.jobdir.work_dir
        report["job"]["kept_files"] = self.jobdir.kept
        self._warn_about(report)
        self.final_report = report
        return report

    def _names_in_other_models(self, registered: set[str]) -> set[str]:
        names: set[str] = set()
        root = self.work_dir / self.model_folder
        if root.is_dir():  # the other models of the mapper whose model was kept
            for model_dir in root.iterdir():
                if (model_dir / "images.bin").is_file():
                    rec = pycolmap.Reconstruction(model_dir)
                    names.update(rec.images[i].name for i in rec.reg_image_ids())
        return names - registered

    @staticmethod
    def _camera_table(rec: Any) -> list[dict[str, Any]]:
        counts: dict[int, int] = {}
        for iid in rec.reg_image_ids():
            cid = rec.images[iid].camera_id
            counts[cid] = counts.get(cid, 0) + 1
        table = []
        for cid, cam in sorted(rec.cameras.items()):
            fx, fy, cx, cy = (float(v) for v in cam.params[:4])
            table.append({"camera_id": int(cid), "model": cam.model_name, "width": int(cam.width),
                          "height": int(cam.height), "fx": fx, "fy": fy, "cx": cx, "cy": cy,
                          "images": counts.get(cid, 0)})
        return table

    @staticmethod
    def _write_cameras_json(path: Path, arrays: ModelArrays) -> None:
        """Per-image cameras for readers without pycolmap (the Blender import)."""
        n = len(arrays.names)
        c2w = np.tile(np.eye(4), (n, 1, 1))
        c2w[:, :3, :3] = np.transpose(arrays.R, (0, 2, 1))
        c2w[:, :3, 3] = arrays.centers
        k_cv = np.array(arrays.K, dtype=np.float64)
        k_cv[:, :2, 2] -= 0.5  # COLMAP puts the centre of the top-left pixel at (0.5, 0.5), OpenCV at (0, 0)
        capture_files.write_cameras(path, arrays.names, arrays.sizes, k_cv, c2w, frame="reconstruction coordinates",
                                    camera_ids=arrays.camera_ids)

    def _warn_about(self, report: dict[str, Any]) -> None:
        if report["registered"] < 3:
            self._emit("warning", message=f"only {report['registered']} views registered: too few to reconstruct "
                                          "a surface (every part must be seen from at least 3 photos); take more, "
                                          "overlapping photos all around the object",
                       files=report["registered_images"])
        if report["num_points"] == 0:
            self._emit("warning", message="the reconstruction has no sparse points: the photos share too few "
                                          "features to triangulate, so the region of interest is only guessed "
                                          "from where the cameras look")
        lost = [d for d in report["dropped"] if d["reason"] in ("not_registered", "separate_model", "no_matches")]
        if lost:
            self._emit("warning", message=f"registered {report['registered']} of {report['total']} images; not "
                                          "registered: " + ", ".join(d["name"] for d in lost[:20]),
                       files=[d["name"] for d in lost])
        roi = report.get("roi_details") or {}
        if roi.get("converged") is False and report["registered"] >= 3:
            self._emit("warning", message="the cameras do not converge on one object (they look the same way), so "
                                          "the region box holds the bulk of the sparse points and may take in walls "
                                          "or floor: in Blender, move and scale the region box around the object "
                                          "before Reconstruct (or add masks)")
        if report["suspicious"]:
            names = sorted({s["name"] for s in report["suspicious"]})
            self._emit("warning", message=f"{len(names)} camera(s) look wrong: " + "; ".join(
                f"{s['name']}: {s['reason']}" for s in report["suspicious"][:10]), files=names)


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _is_disk_full(exc: BaseException) -> bool:
    """Whether an exception from pycolmap (SQLite, file writers) reports a full disk."""
    text = str(exc).lower()
    return any(s in text for s in ("disk is full", "no space left", "disk full", "quota exceeded"))


def quiet_pycolmap_log_files() -> None:
    """Keep pycolmap's (glog's) messages on stderr only: never log files (by default it writes them to /tmp)."""
    with contextlib.suppress(AttributeError):
        pycolmap.logging.logtostderr = True


def _run_with_ticks(work: Callable[[], Any], tick: Callable[[float], None], interval: float) -> None:
    """Run ``work`` on a worker thread, calling ``tick(seconds elapsed)`` here every ``interval`` until it ends.

    pycolmap releases the GIL while it works, so this thread can report progress meanwhile. An exception in
    ``work`` is raised here.
    """
    errors: list[BaseException] = []

    def target() -> None:
        try:
            work()
        except BaseException as exc:  # handed to the calling thread
            errors.append(exc)

    thread = threading.Thread(target=target, name="pycolmap-stage", daemon=True)
    start = time.perf_counter()
    thread.start()
    while thread.is_alive():
        thread.join(interval)
        if thread.is_alive():
            tick(time.perf_counter() - start)
    if errors:
        raise errors[0]


def estimate_poses(images: str | os.PathLike[str], job: str | os.PathLike[str], options: PoseOptions | None = None,
                   emitter: Any = None, masks: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Run every stage; returns the quality report (see :meth:`PoseEstimator.report`)."""
    return PoseEstimator(images, job, options, emitter, masks).run()


def configure_pycolmap_logging(verbose: bool) -> None:
    """pycolmap logs to stderr only (no log files); INFO lines only with ``verbose``."""
    quiet_pycolmap_log_files()
    with contextlib.suppress(AttributeError):
        pycolmap.logging.logtostdout = False
        pycolmap.logging.minloglevel = 0 if verbose else 1

