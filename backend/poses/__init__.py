"""``python -m backend poses``: camera poses from unposed photos with pycolmap.

Writes ``<out>/poses`` (undistorted ``images/``, PINHOLE ``sparse/``, optional ``masks/``, ``cameras.json``,
``points.npz``, ``roi.json``, ``report.json``), which the training command reads as a COLMAP dataset.
Runs with numpy, Pillow and pycolmap only (Blender's own Python with the vendored wheels); never imports torch.

The command runs the work in a child process (the same command with ``NEUSBLEND_POSES_WORKER=1``) and watches
it: a native failure inside pycolmap (SQLite on a full disk aborts the process with a C++ stack trace) becomes
an ``error`` message naming the job folder, the partial files are removed and the exit code is 2, like any other
error.

Public API: :func:`estimate_poses`, :class:`PoseEstimator`, :class:`PoseOptions`, :func:`region_of_interest`,
:func:`suspicious_cameras`, :func:`model_arrays`.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import platform
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from .. import debug, protocol
from .jobdir import DISK_FULL_BYTES, MARKER_KIND, PosesJob, free_bytes, read_marker
from .pipeline import (
    CAMERA_MODE_CHOICES,
    CAMERA_MODEL_CHOICES,
    MAPPER_CHOICES,
    MATCHING_CHOICES,
    POSES_LAYOUT,
    PoseEstimator,
    PoseOptions,
    configure_pycolmap_logging,
    estimate_poses,
    protect_stdout,
)
from .quality import ModelArrays, model_arrays, model_statistics, region_of_interest, suspicious_cameras

log = logging.getLogger("backend.poses")

__all__ = [
    "POSES_LAYOUT", "ModelArrays", "PoseEstimator", "PoseOptions", "add_arguments", "estimate_poses",
    "model_arrays", "model_statistics", "region_of_interest", "run", "suspicious_cameras",
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``python -m backend poses``."""
    d = PoseOptions()
    parser.add_argument("--images", required=True, metavar="DIR", help="folder of photos (only read, never written)")
    parser.add_argument("--out", required=True, metavar="JOB_DIR",
                        help="job folder; the posed dataset goes to JOB_DIR/poses, the COLMAP database and raw "
                             "models to JOB_DIR/colmap")
    parser.add_argument("--masks", metavar="DIR",
                        help="object masks (white = object) named like the images (<name>.png, <stem>.png or the "
                             "same number); undistorted with the images into JOB_DIR/poses/masks")
    parser.add_argument("--mask-features", action="store_true",
                        help="also ignore features outside the masks (turntable captures with a static background)")
    parser.add_argument("--matching", choices=MATCHING_CHOICES, default=d.matching,
                        help="image pairs to match: auto = every pair up to 60 images, else neighbours in file-name "
                             "order for numbered sequences plus visual retrieval (default: %(default)s)")
    parser.add_argument("--max-image-size", type=int, default=d.max_image_size, metavar="N",
                        help="longer image side for feature extraction; smaller is faster (default: %(default)s)")
    parser.add_argument("--max-features", type=int, default=d.max_features, metavar="N",
                        help="most SIFT features per image (default: %(default)s)")
    parser.add_argument("--peak-threshold", type=float, default=d.peak_threshold, metavar="T",
                        help="SIFT peak threshold (default: chosen from a sample of the photos, 0.0067 down to "
                             "0.001 for smooth objects)")
    parser.add_argument("--mapper", choices=MAPPER_CHOICES, default=d.mapper,
                        help="auto = incremental, then relaxed incremental and global while images stay "
                             "unregistered; the model with the most plausible cameras wins (default: %(default)s)")
    parser.add_argument("--camera-mode", choices=CAMERA_MODE_CHOICES, default=d.camera_mode,
                        help="auto = one camera per image size and EXIF focal length (default: %(default)s)")
    parser.add_argument("--camera-model", choices=CAMERA_MODEL_CHOICES, default=d.camera_model,
                        help="lens model estimated before undistortion (default: %(default)s)")
    parser.add_argument("--no-refine-principal-point", dest="refine_principal_point", action="store_false",
                        help="keep principal points at the image centres in the final bundle adjustment")
    parser.add_argument("--vocab-tree", metavar="FILE", help="vocabulary tree for --matching vocab")
    parser.add_argument("--threads", type=int, default=d.num_threads, help="CPU threads (-1: all)")
    parser.add_argument("--seed", type=int, default=d.seed, help="random seed (default: %(default)s)")


def options_from_args(args: argparse.Namespace) -> PoseOptions:
    """:class:`PoseOptions` from parsed command-line arguments."""
    return PoseOptions(
        matching=args.matching, max_image_size=args.max_image_size, max_features=args.max_features,
        peak_threshold=args.peak_threshold, mapper=args.mapper, camera_mode=args.camera_mode,
        camera_model=args.camera_model,
        refine_principal_point=args.refine_principal_point, mask_features=args.mask_features,
        vocab_tree=args.vocab_tree, num_threads=args.threads, seed=args.seed,
    )


#: Set in the child process that does the work (see :func:`run`).
WORKER_ENV = "NEUSBLEND_POSES_WORKER"


def run(args: argparse.Namespace, emitter: protocol.Emitter) -> int:
    """Estimate poses; ``done`` carries ``poses`` (the dataset folder), ``report`` and ``roi``.

    Runs :func:`run_here` in a child process and reports a crash of it as an ``error``.
    """
    if debug.text(WORKER_ENV) == "1":
        return run_here(args, emitter)
    return _run_watched(args, emitter)


def _worker_argv(args: argparse.Namespace) -> list[str]:
    """The command line of this very command, for the child process."""
    package = __name__.rsplit(".", 1)[0]  # "backend", or the extension's "bl_ext....backend"
    argv = [sys.executable, "-m", package, "poses", "--images", str(args.images), "--out", str(args.out)]
    if args.json:
        argv.append("--json")
    if getattr(args, "verbose", False):
        argv.append("--verbose")
    if args.masks:
        argv += ["--masks", str(args.masks)]
    if args.mask_features:
        argv.append("--mask-features")
    if not args.refine_principal_point:
        argv.append("--no-refine-principal-point")
    for flag, value in (("--matching", args.matching), ("--max-image-size", args.max_image_size),
                        ("--max-features", args.max_features), ("--peak-threshold", args.peak_threshold),
                        ("--mapper", args.mapper), ("--camera-mode", args.camera_mode),
                        ("--camera-model", args.camera_model), ("--vocab-tree", args.vocab_tree),
                        ("--threads", args.threads), ("--seed", args.seed)):
        if value is not None:
            argv += [flag, str(value)]
    return argv


def _run_watched(args: argparse.Namespace, emitter: protocol.Emitter) -> int:
    """Run the work in a child process; turn a native crash of it into an ``error`` and clean up after it."""
    job = Path(args.out).expanduser().resolve()
    existed = job.exists()
    env = dict(os.environ, **{WORKER_ENV: "1"})
    # the child must import this package the way this process did (also as a subpackage of the extension)
    top = Path(__file__).resolve().parents[len(__name__.split("."))]
    env["PYTHONPATH"] = os.pathsep.join([str(top), *filter(None, [os.environ.get("PYTHONPATH")])])
    stream = getattr(emitter, "stream", None) or sys.stdout
    stream.flush()
    # the child's messages are relayed line by line (if this process dies, the child's next write ends it too)
    child = subprocess.Popen(_worker_argv(args), env=env, stdout=subprocess.PIPE, text=True, encoding="utf-8",
                             errors="replace", bufsize=1)
    stopped: list[int] = []

    def forward(signum: int, _frame: Any) -> None:
        stopped.append(signum)
        child.send_signal(signum)

    handlers = {}
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(ValueError):  # not the main thread: the child gets what the process group gets
            handlers[sig] = signal.signal(sig, forward)
    try:
        assert child.stdout is not None
        for line in child.stdout:
            stream.write(line)
            stream.flush()
        code = child.wait()
    finally:
        for sig, old in handlers.items():
            signal.signal(sig, old)
    if code in (protocol.EXIT_OK, protocol.EXIT_ERROR, protocol.EXIT_CANCELLED):
        return code
    # the child died without a word (a native abort or crash, or killed): the protocol still gets its error
    free = free_bytes(job)
    leftover = PosesJob(job)
    marker = read_marker(job) if job.is_dir() else None
    # clean up only in a folder the child accepted as ours (never in one it may have refused or not reached)
    leftover.prepared = marker is not None and marker.get("kind") == MARKER_KIND
    leftover.created = not existed
    leftover.abort()
    if stopped:
        emitter.emit("error", message="pose estimation was cancelled", file=str(job),
                     hint="Run it again; the partial files were removed and earlier results kept.")
        return protocol.EXIT_CANCELLED
    how = (f"signal {signal.Signals(-code).name}" if code < 0 and -code in signal.valid_signals()
           else f"exit status {code}")
    if free is not None and free < DISK_FULL_BYTES:
        emitter.emit("error", message=f"the disk is full ({free // 1000} kB free): pycolmap could not write to "
                                      f"the job folder and stopped ({how})", file=str(job),
                     hint="Free some space on that disk, or choose a job folder on another disk (--out); the "
                          "partial files of this run were removed.")
    else:
        emitter.emit("error", message=f"pose estimation stopped unexpectedly inside pycolmap ({how})",
                     file=str(job), hint="The log (stderr) ends with pycolmap's own message. Check the photos and "
                                         "the job folder's disk, then run it again; partial files were removed.")
    return protocol.EXIT_ERROR


def run_here(args: argparse.Namespace, emitter: protocol.Emitter) -> int:
    """Estimate poses in this process (the child of :func:`run`)."""
    import pycolmap

    options = options_from_args(args)
    configure_pycolmap_logging(bool(getattr(args, "verbose", False)))
    config: dict[str, Any] = {"images": args.images, "masks": args.masks, **vars(options)}
    emitter.emit("start", command="poses", device=f"cpu ({platform.processor() or platform.machine()})",
                 path=str(args.out), config=config, pycolmap=getattr(pycolmap, "__version__", "?"))
    estimator = PoseEstimator(args.images, args.out, options, emitter, masks=args.masks)
    with protect_stdout(emitter):
        report = estimator.run()
    emitter.emit("done", poses=str(estimator.output_dir), report=report, roi=report["roi"],
                 registered=report["registered"], total=report["total"])
    err = report["mean_reprojection_error_px"]
    log.info("registered %d of %d images, %d points, mean reprojection error %s px, %d suspicious camera(s); "
             "dataset in %s", report["registered"], report["total"], report["num_points"],
             f"{err:.2f}" if err is not None else "-", len({s["name"] for s in report["suspicious"]}),
             estimator.output_dir)
    return protocol.EXIT_OK
