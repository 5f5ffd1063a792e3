"""``python -m backend train``: learn a NeuS field from a posed capture and stream meshes while it learns.

This module is the command: its options, the configuration they make, the job folder, loading the capture (masks,
region, a checkpoint to resume) and the warnings about it. The training itself is :mod:`backend.training`
(:class:`~backend.training.trainer.Trainer`, its batches, schedules and job output).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from . import capture_files, protocol
from .checkpoint import load_checkpoint, resolve_device
from .config import ARCHITECTURE_KEYS, PRESETS, TrainConfig, load_preset
from .errors import BackendError
from .protocol import JobLayout
from .training.jobfolder import clear_snapshots, prepare_job_folder

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------- CLI


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", help="posed capture: NeuS folder, transforms.json, COLMAP folder, Middlebury "
                   "folder, or a job folder written by `poses`")
    p.add_argument("--out", required=True, help="job folder (created; only the backend writes into it)")
    p.add_argument("--preset", help=f"{' | '.join(PRESETS)} or a JSON file (default: default; with --resume: the "
                   "checkpoint's settings, or this preset's schedule, sampling and mesh settings on the checkpoint's "
                   "network)")
    p.add_argument("--steps", type=int, help="total training steps (overrides the preset)")
    p.add_argument("--more-steps", type=int, help="with --resume: train this many steps beyond the checkpoint")
    p.add_argument("--mesh-every", type=float, help="seconds between mesh snapshots (0: no snapshots)")
    p.add_argument("--mesh-resolution", type=int, help="marching-cubes resolution of snapshots")
    p.add_argument("--final-resolution", type=int, help="marching-cubes resolution of the final mesh")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="where to train")
    p.add_argument("--max-image-size", type=int, help="downscale images so the longer side is at most this")
    p.add_argument("--holdout-every", type=int, help="hold out every k-th image and report its PSNR at the end")
    p.add_argument("--resume", action="store_true", help="continue from the job folder's last checkpoint")
    p.add_argument("--inline-meshes", action="store_true",
                   help="carry snapshots inside mesh messages (base64) for a backend on another machine")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a configuration key")
    p.add_argument("--seed", type=int, help="random seed")
    p.add_argument("--masks", help="folder of object masks for a posed capture (one per photo, 255 = object)")
    p.add_argument("--no-masks", action="store_true",
                   help="ignore the masks the capture carries (train as on photos without masks: the background "
                   "field explains what lies outside the region)")
    p.add_argument("--roi", help="region of interest: a JSON file with a 4x4 `matrix` mapping the cube [-1, 1]^3 "
                   "to input coordinates, or `box_min`/`box_max` (e.g. the roi.json of `poses`)")
    p.add_argument("--exit-on-stdin-close", action="store_true",
                   help="stop (saving a checkpoint) when standard input closes: the client holds it open, so a "
                   "crashed client never leaves training running")


def _set_value(text: str) -> Any:
    """A ``--set`` value: JSON where it reads as JSON (numbers, true/false, lists), else the text itself
    (``normals=finite_difference``, ``rgb_loss=huber``)."""
    if text[:1] in "-0123456789[{tf" and text != "":
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            pass
    return text


def build_config(args: argparse.Namespace, base: TrainConfig | None = None) -> TrainConfig:
    cfg = base if base is not None else load_preset(args.preset or "default")
    overrides: dict[str, Any] = {}
    for item in args.set:
        if "=" not in item:
            raise BackendError(f"--set expects KEY=VALUE, got {item!r}", hint="Example: --set eikonal_weight=0.05")
        key, value = item.split("=", 1)
        overrides[key.strip()] = _set_value(value)
    for key, attr in (("steps", "steps"), ("mesh_every", "mesh_every_s"), ("mesh_resolution", "snapshot_resolution"),
                      ("final_resolution", "final_resolution"), ("max_image_size", "max_image_size"),
                      ("holdout_every", "holdout_every"), ("seed", "seed")):
        value = getattr(args, key, None)
        if value is not None:
            overrides[attr] = value
    merged = cfg.to_dict()
    merged.update(overrides)
    return TrainConfig.from_dict(merged, source="command line")


def resumed_config(saved: TrainConfig, preset: str) -> TrainConfig:
    """Continue a checkpoint with another preset: the preset's schedule, sampling and mesh settings on the saved
    network (its architecture keys, :data:`ARCHITECTURE_KEYS`, cannot change without starting over)."""
    merged = load_preset(preset).to_dict()
    kept = saved.to_dict()
    for key in ARCHITECTURE_KEYS:
        merged[key] = kept[key]
    return TrainConfig.from_dict(merged, source=f"preset {preset} on the checkpoint's network")


def resolve_data_path(data: str | None) -> Path:
    if not data:
        raise BackendError("no training data given", hint="Pass --data DIR (or --resume with an existing job).")
    path = Path(data).expanduser().resolve()  # absolute: checkpoints remember it for --resume from anywhere
    poses = JobLayout(path).poses
    if (poses / "sparse").exists():
        return poses
    return path


def run(args: argparse.Namespace, emitter: protocol.Emitter) -> int:
    job = prepare_job_folder(args.out, emitter, resume=args.resume)
    checkpoint = None
    if args.resume:
        if not job.last_checkpoint.is_file():
            raise BackendError("no checkpoint to resume from", hint="Train once without --resume first, or give the "
                               "job folder of an earlier run as --out.", file=job.last_checkpoint)
        checkpoint = load_checkpoint(job.last_checkpoint)
        saved = TrainConfig.from_dict(checkpoint["config"], source=str(job.last_checkpoint))
        cfg = build_config(args, resumed_config(saved, args.preset) if args.preset else saved)
        if args.more_steps:
            cfg.steps = int(checkpoint["step"]) + int(args.more_steps)
        data = args.data or checkpoint["data"]
        if not args.data and data and not Path(data).exists():
            raise BackendError(f"the capture this job was trained on is no longer at {data}",
                               hint="If you moved or renamed it, say where it is now: python -m backend train "
                               f"--out {job.root} --resume --data NEW_PATH", file=data)
        if not args.masks and checkpoint["masks"] and not Path(checkpoint["masks"]).is_dir():
            raise BackendError(f"the mask folder this job was trained with is no longer at {checkpoint['masks']}",
                               hint="If you moved it, say where it is now: add --masks NEW_PATH to the command.",
                               file=checkpoint["masks"])
    else:
        cfg = build_config(args)
        data = args.data
    data_path = resolve_data_path(data)
    device = resolve_device(args.device)
    if device.startswith("cuda"):  # where set-up time shows beside a minute of training
        from .kernels import start_self_check

        start_self_check(device)  # the kernels' check runs while the capture loads

    from .data import load_scene_with_info

    emitter.emit("stage", name="load", detail=str(data_path))
    t_load = time.perf_counter()
    roi_matrix = capture_files.region_matrix(args.roi) if args.roi else (checkpoint or {}).get("roi_matrix")
    masks = args.masks or (checkpoint or {}).get("masks")  # a resumed run keeps the masks it was trained with
    # a resumed run keeps what it was trained with: with masks or without them
    no_masks = bool(getattr(args, "no_masks", False)) or (checkpoint is not None and not checkpoint.get("has_masks"))
    if no_masks and masks:
        raise BackendError("--masks and --no-masks contradict each other", hint="Pass one of them.")
    scene, info = load_scene_with_info(data_path, max_image_size=cfg.max_image_size,
                                       normalize=not (masks or no_masks or roi_matrix is not None))
    if no_masks:
        scene = replace(scene, masks=None)
    if masks or no_masks or roi_matrix is not None:
        from .normalize import normalization_from_box, normalize_scene

        if masks:
            from .data import attach_masks

            scene = attach_masks(scene, masks)
        if roi_matrix is not None:
            scene, info = normalization_from_box(scene, roi_matrix)
        else:
            scene, info = normalize_scene(scene)
    if checkpoint is None:  # what the region finding noticed (cameras that do not converge, an empty box)
        for w in (info or {}).get("warnings", []):
            emitter.emit("warning", message=f"region of interest: {w}")
    if checkpoint is not None:  # the field lives in the checkpoint's frame, whatever the data says now
        scene.to_world = np.asarray(checkpoint["to_world"], dtype=np.float64)
        scene.roi = None if checkpoint.get("roi") is None else np.asarray(checkpoint["roi"], dtype=np.float64)
    from .training.trainer import Trainer

    trainer = Trainer(scene, cfg, device=device, job=job, emitter=emitter, data_path=data_path,
                      inline_meshes=args.inline_meshes, normalization_info=info)
    trainer.roi_matrix = roi_matrix
    trainer.masks_path = str(Path(masks).resolve()) if masks else None
    trainer.t_load = t_load
    if checkpoint is not None:
        trainer.load_state(checkpoint, job.last_checkpoint)
    else:
        clear_snapshots(job)  # an earlier run's snapshots would mix with this run's
    warn_about_capture(emitter, scene, len(trainer.train_scene), data_path)
    if args.exit_on_stdin_close:
        watch_stdin(trainer)
        # stdout broken before stdin's end was seen (an ssh connection dropped): stop the same way, saving
        emitter.on_reader_gone = lambda: setattr(trainer, "stop_requested", True)
    with trainer.handle_signals():
        return trainer.train()


def warn_about_capture(emitter: protocol.Emitter, scene, n_train: int, data_path: Path) -> None:  # noqa: ANN001
    """``warning`` messages for a capture that cannot train well: damaged photos left out, fewer than 3 views to
    train on, a COLMAP model (a poses job) without sparse points, cameras the pose report flagged."""
    skipped = list(getattr(scene, "skipped", None) or [])
    if skipped:
        emitter.emit("warning", message=f"left out {len(skipped)} damaged photo(s): " + "; ".join(
            f"{s['name']} ({s['reason']})" for s in skipped[:10]) + (" ..." if len(skipped) > 10 else ""),
            files=[s["name"] for s in skipped])
    if n_train < 3:
        emitter.emit("warning", message=f"only {n_train} view(s) to train on: a surface needs at least 3 photos "
                     "from different directions (20 or more all round the object work well); expect a poor mesh",
                     file=str(data_path))
    if scene.source == "colmap" and (scene.points is None or len(scene.points) == 0):
        emitter.emit("warning", message="the camera model has no sparse points: the poses may be unreliable, and "
                     "the region to reconstruct is guessed from where the cameras look (give a region box with "
                     "--roi to be sure)", file=str(data_path))
    report = data_path / capture_files.REPORT
    if report.is_file():
        try:
            flagged = capture_files.read_pose_report(report).get("suspicious") or []
        except BackendError:
            flagged = []
        names = sorted({str(f.get("name")) for f in flagged if isinstance(f, dict) and f.get("name")})
        if names:
            emitter.emit("warning", message=f"the pose report flags {len(names)} camera(s) as suspect: "
                         f"{', '.join(names[:10])}{' ...' if len(names) > 10 else ''}; if the mesh looks wrong, "
                         "remove those photos and estimate the poses again", files=names, file=str(report))


def watch_stdin(trainer: Any) -> None:
    """Ask the trainer to stop once standard input reaches end of file (the client went away)."""
    import sys
    import threading

    def watch() -> None:
        try:
            # the raw descriptor: a buffered read would hold stdin's lock and abort the interpreter at exit
            while os.read(sys.stdin.fileno(), 4096):
                pass
        except (OSError, ValueError):
            pass
        trainer.stop_requested = True

    threading.Thread(target=watch, name="stdin-watch", daemon=True).start()
