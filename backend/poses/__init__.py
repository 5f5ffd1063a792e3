"""``python -m backend poses``: camera poses from unposed photos with pycolmap.

Writes ``<out>/poses`` (undistorted ``images/``, PINHOLE ``sparse/``, optional ``masks/``, ``cameras.json``,
``points.npz``, ``roi.json``, ``report.json``), which the training command reads as a COLMAP dataset.
Runs with numpy and pycolmap only (Blender's own Python with the vendored wheel); never imports torch.

Public API: :func:`estimate_poses`, :class:`PoseEstimator`, :class:`PoseOptions`, :func:`region_of_interest`,
:func:`suspicious_cameras`, :func:`model_arrays`.
"""

from __future__ import annotations

import argparse
import logging
import platform
from typing import Any

from .. import protocol
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
    parser.add_argument("--mapper", choices=MAPPER_CHOICES, default=d.mapper,
                        help="auto = incremental, then global if images stay unregistered (default: %(default)s)")
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
        mapper=args.mapper, camera_mode=args.camera_mode, camera_model=args.camera_model,
        refine_principal_point=args.refine_principal_point, mask_features=args.mask_features,
        vocab_tree=args.vocab_tree, num_threads=args.threads, seed=args.seed,
    )


def run(args: argparse.Namespace, emitter: protocol.Emitter) -> int:
    """Estimate poses; ``done`` carries ``poses`` (the dataset folder), ``report`` and ``roi``."""
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
