"""``python -m backend train``: learn a NeuS field from a posed capture and stream meshes while it learns.

The :class:`Trainer` owns the scene on the device (images as uint8), the field, the occupancy grid and the
optimiser. It reports over the protocol (``start``, ``progress``, ``mesh``, ``done``), writes snapshots and
checkpoints into the job folder, and on SIGTERM/SIGINT saves a checkpoint and the latest mesh and exits.
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import math
import os
import signal
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from . import protocol
from .checkpoint import load_checkpoint, load_module_state, save_checkpoint
from .config import ARCHITECTURE_KEYS, PRESETS, TrainConfig, load_preset
from .errors import BackendError, io_error
from .protocol import JobLayout

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


def resolve_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise BackendError("--device cuda was asked for, but this torch has no CUDA device",
                           hint="Use --device cpu, or point the add-on at a Python whose torch sees a GPU.")
    return name


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
    roi_matrix = read_roi(args.roi) if args.roi else (checkpoint or {}).get("roi_matrix")
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
    report = data_path / "report.json"
    if report.is_file():
        try:
            flagged = json.loads(report.read_text(encoding="utf-8")).get("suspicious") or []
        except (OSError, ValueError, AttributeError):
            flagged = []
        names = sorted({str(f.get("name")) for f in flagged if isinstance(f, dict) and f.get("name")})
        if names:
            emitter.emit("warning", message=f"the pose report flags {len(names)} camera(s) as suspect: "
                         f"{', '.join(names[:10])}{' ...' if len(names) > 10 else ''}; if the mesh looks wrong, "
                         "remove those photos and estimate the poses again", files=names, file=str(report))


def read_roi(path: str) -> np.ndarray:
    """(4, 4) box-to-world matrix from a region-of-interest JSON file (see ``--roi``)."""
    p = Path(path).expanduser()
    try:
        data = json.loads(p.read_text())
        if "matrix" in data:
            m = np.asarray(data["matrix"], dtype=np.float64).reshape(4, 4)
        else:
            m = protocol.box_matrix(data["box_min"], data["box_max"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BackendError(f"cannot read the region of interest: {exc}", hint="Give a JSON file with a 4x4 "
                           "'matrix' or with 'box_min' and 'box_max'.", file=p) from exc
    if not np.all(np.isfinite(m)) or abs(np.linalg.det(m[:3, :3])) < 1e-12:
        raise BackendError("the region-of-interest box is empty or flat", hint="Give the box a size on every axis.",
                           file=p)
    return m


def watch_stdin(trainer: Trainer) -> None:
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


# ----------------------------------------------------------------------------------------------- training


class Trainer:
    """NeuS training on one device. See the module docstring."""

    def __init__(self, scene, cfg: TrainConfig, *, device: str, job: JobLayout,  # noqa: ANN001
                 emitter: protocol.Emitter, data_path: Path | None = None, inline_meshes: bool = False,
                 normalization_info: dict[str, Any] | None = None) -> None:
        import torch

        from .field import FieldConfig, NeuSField
        from .render import OccupancyGrid

        self.torch = torch
        self.cfg = cfg
        self.device = torch.device(device)
        self.job = job
        self.emitter = emitter
        self.data_path = data_path
        self.inline_meshes = inline_meshes
        self.normalization_info = normalization_info or {}
        self.stop_requested = False
        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed)

        if cfg.holdout_every and cfg.holdout_every > 1:
            idx = np.arange(len(scene))
            self.holdout = idx[idx % cfg.holdout_every == 0]
            train_idx = idx[idx % cfg.holdout_every != 0]
        else:
            self.holdout = np.zeros(0, dtype=np.int64)
            train_idx = np.arange(len(scene))
        self.scene = scene
        self.train_scene = scene.subset(train_idx) if len(self.holdout) else scene
        self.has_masks = scene.has_masks

        self.field = NeuSField(FieldConfig.from_train(cfg, self.has_masks)).to(self.device)
        from .kernels import path_reason, select_path, use_fast_path
        from .optim import Adam

        self.path = select_path(self.device, self.field)  # NEUSBLEND_PATH=reference|triton forces one
        self.path_reason = path_reason()
        if self.path != "reference":
            use_fast_path(self.field, self.path)
        self.grid = OccupancyGrid(cfg.grid_resolution, cfg.grid_threshold).to(self.device)
        self.grid.triton_march = self.path != "reference"  # the fast path marches with its kernels too
        tables = ("encoding.embeddings", "bg_field.encoding.embeddings")  # hash tables: the encoding's rate
        enc_params = [p for n, p in self.field.named_parameters() if n in tables]
        var_params = [self.field.variance]
        other = [p for n, p in self.field.named_parameters() if n not in tables and n != "variance"]
        self.optimizer = Adam(
            [{"params": enc_params, "lr": cfg.lr, "base_lr": cfg.lr},
             {"params": other, "lr": cfg.lr_mlp, "base_lr": cfg.lr_mlp},
             {"params": var_params, "lr": cfg.lr_variance, "base_lr": cfg.lr_variance}],
            betas=(0.9, 0.99), eps=1e-15, triton=self.path != "reference")  # not torch.optim's: backend/optim.py
        self.params = [p for p in self.field.parameters() if p.requires_grad]
        self.graph_step = None
        if cfg.cuda_graph and self.device.type == "cuda" and self.path != "reference":
            from .step import GraphStep

            for group in self.optimizer.param_groups:  # a captured optimiser reads its rates from the device
                group["lr"] = torch.tensor(float(group["lr"]), device=self.device)
                group["capturable"] = True
            cap = int(math.ceil(cfg.target_samples * max(cfg.sample_headroom, 1.0) / 1024) * 1024)
            self.graph_step = GraphStep(self.field, self.optimizer, self.params, max_rays=cfg.max_rays,
                                        sample_capacity=cap, eik_points=cap // 8, has_masks=self.has_masks,
                                        eikonal_weight=cfg.eikonal_weight, mask_weight=cfg.mask_weight,
                                        rgb_loss=cfg.rgb_loss, distortion_weight=cfg.bg_distortion_weight,
                                        opacity_entropy_weight=cfg.opacity_entropy_weight)
        self._side = torch.cuda.Stream(self.device) if self.graph_step is not None else None
        self._pending: dict[str, Any] | None = None  # the next step's batch, marched on the side stream
        self._staging = None  # the fused batch's StepInputs (see _batch_fused)
        self.step = 0
        self.n_rays = cfg.init_rays
        self._upload(self.train_scene)
        self.roi_matrix: np.ndarray | None = None
        self.masks_path: str | None = None  # a --masks folder, kept in checkpoints for --resume
        self.t_load = time.perf_counter()  # when loading began (set by `run`): the start of time-to-mesh
        self.last_snapshot: Path | None = None
        self.last_snapshot_step = -1

    # ------------------------------------------------------------------ data

    def _upload(self, scene) -> None:  # noqa: ANN001
        """Pixels (and masks) of all training images as flat uint8 tensors on the device."""
        torch = self.torch
        sizes = scene.sizes  # (N, 2) w, h
        counts = sizes[:, 0] * sizes[:, 1]
        self.pix_offsets = torch.tensor(np.concatenate([[0], np.cumsum(counts)]), device=self.device)
        self.widths = torch.tensor(sizes[:, 0], device=self.device)
        self.pixels = torch.cat([torch.from_numpy(np.require(im, requirements="CW").reshape(-1, 3))
                                 for im in scene.images]).to(self.device)
        if scene.masks is not None:
            self.masks = torch.cat([torch.from_numpy(np.require(m, requirements="CW").reshape(-1))
                                    for m in scene.masks]).to(self.device)
        else:
            self.masks = None
        self.K_inv = torch.from_numpy(np.linalg.inv(scene.K)).float().to(self.device)
        self.c2w = torch.from_numpy(scene.normalized_c2w()).float().to(self.device)
        self.n_pixels = int(counts.sum())

    def draw(self, n: int) -> tuple[Any, Any]:
        """Random draws of a batch of ``n`` rays: pixels (n,) int64 in the flat pixel list, and (n, 6) uniform
        numbers: row and column jitter, march offset, background colour (see :meth:`sample_rays`, :meth:`_batch`)."""
        torch = self.torch
        return (torch.randint(0, self.n_pixels, (n,), device=self.device), torch.rand(n, 6, device=self.device))

    def sample_rays(self, n: int, draws: tuple[Any, Any] | None = None) -> dict[str, Any]:
        """A random batch of ``n`` training rays (or the rays of ``draws``, see :meth:`draw`): origins, dirs (n, 3),
        rgb (n, 3) in [0, 1], mask (n,) or None, and the draws' uniform numbers ``u`` (n, 6)."""
        from .render import rays_from_pixels

        gid, u = draws if draws is not None else self.draw(n)
        img = self.torch.searchsorted(self.pix_offsets[1:], gid, right=True)
        local = gid - self.pix_offsets[img]
        w = self.widths[img]
        rows = (local // w).float() + u[:, 0] - 0.5
        cols = (local % w).float() + u[:, 1] - 0.5
        o, d = rays_from_pixels(self.K_inv[img], self.c2w[img], cols, rows)
        rgb = self.pixels[gid].float() / 255.0
        mask = self.masks[gid].float() / 255.0 if self.masks is not None else None
        return {"origins": o, "dirs": d, "rgb": rgb, "mask": mask, "u": u}

    # ------------------------------------------------------------------ schedules

    def lr_factor(self, step: int) -> float:
        cfg = self.cfg
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        progress = (step - cfg.warmup_steps) / max(cfg.steps - cfg.warmup_steps, 1)
        progress = min(max(progress, 0.0), 1.0)
        return cfg.min_lr_factor + (1 - cfg.min_lr_factor) * 0.5 * (1 + math.cos(math.pi * progress))

    def active_levels(self, step: int) -> int:
        """Hash levels in use at ``step``: one more every ``level_every`` steps, all of them by half the run."""
        cfg = self.cfg
        to_add = max(cfg.n_levels - cfg.start_levels, 1)
        every = max(1, min(cfg.level_every, cfg.steps // (2 * to_add)))
        return min(cfg.n_levels, cfg.start_levels + step // every)

    def cos_anneal_ratio(self, step: int) -> float:
        return 1.0 if self.cfg.cos_anneal_steps <= 0 else min(1.0, step / self.cfg.cos_anneal_steps)

    # ------------------------------------------------------------------ one step

    def sdf_fn_torch(self, x):  # noqa: ANN001, ANN201
        """SDF used outside training (grid updates, meshing): intersected with the unit ball."""
        sdf = self.field.sdf(x)
        return torch_max(sdf, x.norm(dim=-1) - 1.0)

    def update_grid(self, step: int) -> None:
        cfg = self.cfg
        if step == 0 or step % cfg.grid_update_every != 0:  # the first step starts at once (a cancel stays quick)
            return
        inv_s = self.field.inv_s().detach()  # a tensor: no host synchronisation
        n_cells = None if step < cfg.grid_warmup_steps else self.grid.resolution**3 // 4
        self.grid.update(self.sdf_fn_torch, inv_s, cfg.step_size, n_cells=n_cells)

    def _batch(self, draws: tuple[Any, Any] | None = None) -> dict[str, Any]:
        """Rays of one step (random, or those of ``draws``: see :meth:`draw`), their samples marched through the
        occupancy grid, and random eikonal points.

        Synchronises the current stream with the host (the number of samples is data-dependent). With a CUDA graph,
        rays whose samples would not fit its capacity are left out (the leading rays whose samples all fit stay).
        """
        torch = self.torch
        cfg = self.cfg
        batch = self.sample_rays(int(self.n_rays), draws)
        origins, dirs, gt, mask, u = batch["origins"], batch["dirs"], batch["rgb"], batch["mask"], batch["u"]
        bg = None
        if mask is not None:
            bg = u[:, 3:6]  # a random background forces the opacity to follow the mask
            gt = gt * mask[:, None] + bg * (1 - mask[:, None])
        samples = self.grid.sample(origins, dirs, cfg.step_size, offset=u[:, 2])
        n_marched = n_samples = len(samples)
        ridx, t = samples.ray_indices, samples.t_mid
        n_rays = origins.shape[0]
        if cfg.cull_transmittance > 0 and n_samples:
            # Samples behind opaque surfaces get no weight: leave them out, so the sample budget buys more rays.
            # With a CUDA graph this runs on the side stream while the graph updates the parameters: the SDF then
            # mixes this step's and the last step's values, an estimate as good as either for culling.
            from .render import cull_hidden

            with torch.no_grad():
                keep = cull_hidden(self.field.sdf, origins, dirs, ridx, t, self.field.inv_s(), cfg.cull_transmittance,
                                   cfg.cull_stride)
            ridx, t = ridx[keep], t[keep]
            n_samples = len(t)
        gs = self.graph_step
        if gs is not None and n_samples > gs.S:  # over capacity: keep the leading rays whose samples all fit
            counts = torch.zeros(n_rays, dtype=torch.long, device=self.device)
            counts.index_add_(0, ridx, torch.ones_like(ridx))
            keep_rays = int(torch.searchsorted(torch.cumsum(counts, 0), gs.S, right=True))
            keep = ridx < keep_rays
            ridx, t, n_rays = ridx[keep], t[keep], keep_rays
            origins, dirs, gt = origins[:n_rays], dirs[:n_rays], gt[:n_rays]
            bg = None if bg is None else bg[:n_rays]
            mask = None if mask is None else mask[:n_rays]
        d = dirs[ridx]
        n_eik = gs.E if gs is not None else max(256, n_samples // 8)
        # without masks, the draws' background columns place the background field's samples instead
        bg_jitter = u[:n_rays, 3] if self.field.bg_field is not None else None
        return {"pts": origins[ridx] + d * t[:, None], "dirs": d, "deltas": torch.full_like(t, cfg.step_size),
                "ray_indices": ridx, "ray_dirs": dirs, "gt": gt, "bg": bg, "mask": mask,
                "rand_pts": torch.rand(n_eik, 3, device=self.device) * 2 - 1, "n_samples": n_samples,
                "n_marched": n_marched, "n_rays": n_rays, "ray_origins": origins if bg_jitter is not None else None,
                "bg_jitter": bg_jitter}

    def fused_batch(self) -> bool:
        """Whether batches come from :meth:`_batch_fused`: with the CUDA graph and the Triton march, unless
        ``NEUSBLEND_BATCH=torch`` (or ``NEUSBLEND_MARCH=torch``) asks for the PyTorch chain of :meth:`_batch`, or
        the culling pre-pass is strided (a CPU option)."""
        return (self.graph_step is not None and self.grid.triton_march and self.cfg.cull_stride <= 1
                and os.environ.get("NEUSBLEND_BATCH", "triton") != "torch"
                and os.environ.get("NEUSBLEND_MARCH", "triton") != "torch")

    def _batch_fused(self) -> dict[str, Any]:
        """:meth:`_batch` in a few Triton kernels and one host synchronisation (:mod:`backend.kernels.batch_triton`),
        written into a staging copy of the CUDA graph's inputs (padded as the graph needs). Its counts reach the
        host through pinned memory: read them after ``done``."""
        if self._staging is None:
            self._staging = self.graph_step.new_inputs()
        return self._batch_fused_from(self.draw(int(self.n_rays)), self._staging)

    def _batch_fused_from(self, draws: tuple[Any, Any], out) -> dict[str, Any]:  # noqa: ANN001
        """:meth:`_batch_fused` for given ``draws`` (see :meth:`draw`) into ``out``, step inputs of the graph's
        shapes. Runs on the CPU too, in Triton's interpreter (for tests)."""
        from .kernels import batch_triton, march_triton

        torch, cfg = self.torch, self.cfg
        gid, u = draws
        lo, hi = self.grid.occupied_bounds()
        rays = batch_triton.draw_rays(gid, u, self.pix_offsets, self.widths, self.K_inv, self.c2w, self.pixels,
                                      self.masks, lo, hi, cfg.step_size)
        m = march_triton.Marcher(rays.origins, rays.dirs, rays.start, rays.far, rays.n_steps, rays.offset,
                                 self.grid.binary, cfg.step_size, self.grid.coarse_occupancy())
        lane_counts = m.counts()
        ends = torch.cumsum(lane_counts, 0, dtype=torch.long)
        total = int(ends[-1])  # the batch's one host synchronisation: how many samples the march writes
        lane_first = ends - lane_counts
        ridx, _, pts = m.write(lane_first, total, want_pts=True)
        counts, first = m.per_ray(lane_counts, lane_first)
        kept = counts
        if cfg.cull_transmittance > 0 and total:
            with torch.no_grad():
                sdf = self.field.sdf(pts)
                kept = batch_triton.visible_counts(sdf, first, counts, self.field.inv_s(), cfg.cull_transmittance)
        stats = batch_triton.pack(out, rays, ridx, pts, first, kept, cfg.step_size)
        if out.ray_origins is not None:  # the background field's rows (rays past those that fit are not valid)
            n = rays.origins.shape[0]
            out.ray_origins[:n].copy_(rays.origins)
            out.bg_jitter[:n].copy_(u[:, 3])
        out.rand_pts.uniform_(-1.0, 1.0)
        if self.device.type != "cuda":
            return {"inputs": out, "stats": stats, "done": None, "n_marched": total, "drawn": gid.shape[0]}
        host = torch.empty(3, dtype=torch.long, pin_memory=True)
        host.copy_(stats, non_blocking=True)
        done = torch.cuda.Event()
        done.record()
        return {"inputs": out, "stats": host, "done": done, "n_marched": total, "drawn": gid.shape[0]}

    def _next_batch(self) -> dict[str, Any]:
        return self._batch_fused() if self.fused_batch() else self._batch()

    def train_step(self) -> dict[str, Any]:
        """One optimisation step on a fresh random batch of rays (see :mod:`backend.step`).

        With a CUDA graph the next step's rays are marched on a side stream while this step's graph runs (the march
        waits for the host; the graph need not): each batch is marched through the grid as it was one step
        earlier, which only matters on the steps that update the grid.
        """
        torch = self.torch
        from .step import StepInputs, step_losses

        cfg = self.cfg
        step = self.step
        levels = self.active_levels(step)
        self.field.encoding.active_levels = levels
        for group in self.optimizer.param_groups:
            lr = group["base_lr"] * self.lr_factor(step)
            if isinstance(group["lr"], torch.Tensor):
                group["lr"].fill_(lr)
            else:
                group["lr"] = lr
        gs = self.graph_step
        cos = self.cos_anneal_ratio(step)
        if gs is not None:
            main = torch.cuda.current_stream(self.device)
            b, self._pending = self._pending or self._next_batch(), None
            main.wait_stream(self._side)  # the batch is marched; the grid may change now
            self.update_grid(step)
            if "inputs" in b:  # fused: already in the graph's layout
                gs.load_inputs(b["inputs"], cos)
            else:
                gs.load(b["pts"], b["dirs"], b["deltas"], b["ray_indices"], b["ray_dirs"], b["gt"], b["bg"],
                        b["mask"], b["rand_pts"], cos, ray_origins=b["ray_origins"], bg_jitter=b["bg_jitter"])
            loaded = torch.cuda.Event()
            loaded.record(main)
            out = gs.run(key=levels, bg_rows=gs.background_rows(b["drawn"] if "inputs" in b else b["n_rays"]))
            if "inputs" in b:
                b["done"].synchronize()  # its counts (long done by now: the graph is already queued)
                _, n_rays, n_samples = (int(v) for v in b["stats"])  # rays that fit; samples kept before the cut
                n_marched, has_mask = b["n_marched"], gs.has_masks
            else:
                n_samples, n_marched, n_rays = b["n_samples"], b["n_marched"], b["n_rays"]
                has_mask = b["mask"] is not None
            del b
        else:
            self.update_grid(step)
            b = self._batch()
            n_samples, n_marched, n_rays = b["n_samples"], b["n_marched"], b["n_rays"]
            has_mask = b["mask"] is not None

            def spare(v: torch.Tensor | None) -> torch.Tensor | None:  # one spare row past the last ray
                return None if v is None else torch.cat([v, torch.zeros_like(v[:1])])

            ray_valid = torch.ones(n_rays + 1, device=self.device)
            ray_valid[-1] = 0
            x = StepInputs(pts=b["pts"], dirs=b["dirs"], deltas=b["deltas"], ray_indices=b["ray_indices"],
                           sample_valid=torch.ones_like(b["deltas"]), ray_dirs=spare(b["ray_dirs"]),
                           gt=spare(b["gt"]), bg=spare(b["bg"]), mask=spare(b["mask"]), ray_valid=ray_valid,
                           inv_n_rays=torch.tensor(1.0 / max(n_rays, 1), device=self.device),
                           rand_pts=b["rand_pts"], cos_anneal=torch.tensor(cos, device=self.device),
                           ray_origins=spare(b["ray_origins"]), bg_jitter=spare(b["bg_jitter"]))
            out = step_losses(self.field, x, eikonal_weight=cfg.eikonal_weight,
                              mask_weight=cfg.mask_weight if has_mask else 0.0, rgb_loss=cfg.rgb_loss,
                              distortion_weight=cfg.bg_distortion_weight,
                              opacity_entropy_weight=cfg.opacity_entropy_weight)
            self.optimizer.zero_grad(set_to_none=True)
            out["loss"].backward(inputs=self.params)  # no gradient for the sample positions
            self.optimizer.step()
            out = {k: v.detach() for k, v in out.items()}

        # aim the next batch at the sample budget
        target = self.n_rays * cfg.target_samples / max(n_samples, 1)
        self.n_rays = int(min(max(0.9 * self.n_rays + 0.1 * target if step > 0 else target, 64), cfg.max_rays))
        self.step += 1
        if gs is not None:  # march the next batch while the graph runs (after the copies that read this one)
            self._side.wait_event(loaded)
            with torch.cuda.stream(self._side):
                self._pending = self._next_batch()
        # tensors stay on the device: reading them would stall the pipeline; see `report_stats`
        return {"loss": out["loss"], "mse": out["mse"], "n_samples": n_samples, "n_marched": n_marched,
                "n_rays": n_rays, "eikonal": out["eikonal"], "mask": out["mask"] if has_mask else None,
                "inv_s": self.field.inv_s().detach()}

    @staticmethod
    def report_stats(stats: dict[str, Any]) -> dict[str, Any]:
        """Plain numbers of a :meth:`train_step` result (synchronises with the device)."""
        out = {k: (float(v) if hasattr(v, "item") else v) for k, v in stats.items()}
        out["psnr"] = -10 * math.log10(max(out.pop("mse"), 1e-10))
        return out

    # ------------------------------------------------------------------ meshes

    def extraction_box(self) -> np.ndarray:
        """(2, 3) normalized-frame box for marching cubes: the scene's ROI, tightened to occupied cells."""
        roi = np.array([[-1.0] * 3, [1.0] * 3]) if self.scene.roi is None else np.asarray(self.scene.roi, float)
        if self.step > self.cfg.grid_warmup_steps:
            occ = self.grid.occupied_box().numpy().astype(np.float64)
            pad = 2 * self.grid.cell_size
            lo = np.maximum(roi[0] - pad, occ[0] - pad)
            hi = np.minimum(roi[1] + pad, occ[1] + pad)
            if np.all(hi > lo):
                roi = np.stack([lo, hi])
        return np.clip(roi, -1.0, 1.0)

    def extract(self, resolution: int, box: np.ndarray | None = None, colors: bool = True
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Mesh of the current field in input coordinates.

        Returns:
            vertices (V, 3) float32 (input coordinates), faces (F, 3) int32, colours (V, 3) uint8 or None.
        """
        from .extract import extract_mesh

        return extract_mesh(self.field, self.scene, resolution, box=self.extraction_box() if box is None else box,
                            device=self.device, colors=colors)

    def emit_mesh(self, verts: np.ndarray, faces: np.ndarray, colors: np.ndarray | None, path: Path,
                  final: bool) -> None:
        data = protocol.snapshot_bytes(verts, faces, colors)
        protocol.atomic_write_bytes(path, data)
        fields: dict[str, Any] = {"step": self.step, "path": str(path.resolve()), "n_vertices": len(verts),
                                  "n_faces": len(faces), "bounds": protocol.mesh_bounds(verts), "final": final,
                                  "has_colors": colors is not None}
        if self.inline_meshes:
            fields["npz_b64"] = base64.b64encode(data).decode("ascii")
        self.emitter.emit("mesh", **fields)
        self.last_snapshot, self.last_snapshot_step = path, self.step

    def snapshot(self) -> None:
        verts, faces, colors = self.extract(self.cfg.snapshot_resolution, colors=True)
        if len(faces) == 0:
            self.emitter.emit("warning", message=f"no surface yet at step {self.step}")
            return
        self.emit_mesh(verts, faces, colors, self.job.snapshot(self.step), final=False)

    # ------------------------------------------------------------------ checkpoints

    def state(self) -> dict[str, Any]:
        """What a checkpoint holds (tensors and plain data; see :mod:`backend.checkpoint`)."""
        return {"step": self.step, "config": self.cfg.to_dict(), "field": self.field.state_dict(),
                "grid": self.grid.state_dict(), "optimizer": self.optimizer.state_dict(), "n_rays": int(self.n_rays),
                "to_world": self.scene.to_world, "roi": self.scene.roi,
                "data": str(self.data_path) if self.data_path else None, "roi_matrix": self.roi_matrix,
                "has_masks": bool(self.has_masks), "masks": self.masks_path,
                # the cameras in input coordinates, for the mesh clean-up of a later extraction
                "cameras": {"K": self.scene.K, "c2w": self.scene.c2w, "sizes": self.scene.sizes}}

    def save_checkpoint(self) -> Path:
        return save_checkpoint(self.job.last_checkpoint, self.state())

    def load_state(self, ckpt: dict[str, Any], path: Path | None = None) -> None:
        """Restore a checkpoint read by :func:`backend.checkpoint.load_checkpoint` (``path``: its file, for
        errors)."""
        where = path or self.job.last_checkpoint
        load_module_state(self.field, ckpt["field"], "network", where)
        load_module_state(self.grid, ckpt["grid"], "occupancy grid", where)
        load_module_state(self.optimizer, ckpt["optimizer"], "optimiser state", where)
        self.step = int(ckpt["step"])
        self._pending = None  # a batch marched through the grid before it was restored
        self.n_rays = int(ckpt.get("n_rays", self.cfg.init_rays))
        for group, base in zip(self.optimizer.param_groups, (self.cfg.lr, self.cfg.lr_mlp, self.cfg.lr_variance)):
            group["base_lr"] = base

    # ------------------------------------------------------------------ loop

    def handle_signals(self):  # noqa: ANN201 - context manager
        import contextlib

        trainer = self

        @contextlib.contextmanager
        def ctx():  # noqa: ANN202
            def on_signal(signum, frame):  # noqa: ANN001, ARG001
                trainer.stop_requested = True

            old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
            try:
                yield
            finally:
                for s, h in old.items():
                    signal.signal(s, h)

        return ctx()

    def start_message(self) -> None:
        torch = self.torch
        dev = str(self.device)
        if self.device.type == "cuda":
            dev = f"cuda ({torch.cuda.get_device_name(self.device)})"
        self.emitter.emit("start", command="train", device=dev, path=self.path, path_reason=self.path_reason,
                          config=self.cfg.to_dict(),
                          dataset=self.scene.summary(), n_train=len(self.train_scene), n_holdout=len(self.holdout),
                          normalization={"to_world": self.scene.to_world, "roi": self.scene.roi,
                                         "scale": self.scene.scale, **self.normalization_info},
                          job_dir=str(self.job.root.resolve()), resumed_from=self.step or None,
                          parameters=sum(p.numel() for p in self.field.parameters()))

    def train(self) -> int:
        cfg = self.cfg
        self.job.meshes.mkdir(parents=True, exist_ok=True)
        protocol.atomic_write_text(self.job.config, json.dumps(
            {"config": cfg.to_dict(), "data": str(self.data_path) if self.data_path else None}, indent=1))
        self.start_message()
        t0 = time.perf_counter()
        train_time = 0.0
        last_report = last_mesh = time.perf_counter()
        samples_acc = 0
        t_acc = 0.0
        start_step = self.step
        mesh_interval = cfg.mesh_every_s
        stats: dict[str, Any] = {}
        while self.step < cfg.steps and not self.stop_requested:
            ts = time.perf_counter()
            stats = self.train_step()
            dt = time.perf_counter() - ts
            train_time += dt
            t_acc += dt
            samples_acc += stats["n_samples"]
            now = time.perf_counter()
            if now - last_report >= 1.0 or self.step == cfg.steps or self.step == start_step + 1:
                stats = self.report_stats(stats)
                rate = samples_acc / max(t_acc, 1e-9)
                per_step = train_time / max(self.step - start_step, 1)
                self.emitter.emit("progress", step=self.step, total=cfg.steps, loss=stats["loss"], psnr=stats["psnr"],
                                  samples_per_s=rate, rays=stats["n_rays"], samples=stats["n_samples"],
                                  marched=stats["n_marched"],
                                  eta_s=per_step * (cfg.steps - self.step), phase="train",
                                  elapsed_s=now - t0, inv_s=stats["inv_s"], eikonal=stats["eikonal"],
                                  mask_loss=stats["mask"], occupied=self.grid.occupied_fraction(),
                                  levels=self.field.encoding.active_levels)
                last_report, samples_acc, t_acc = now, 0, 0.0
            if cfg.mesh_every_s > 0 and now - last_mesh >= mesh_interval and self.step < cfg.steps:
                self.snapshot()
                self.save_checkpoint()
                last_mesh = time.perf_counter()
                # snapshots never take more than about a quarter of the time, however slow the machine
                mesh_interval = max(cfg.mesh_every_s, 3.0 * (last_mesh - now))
        return self.finish(cancelled=self.stop_requested, t0=t0, train_time=train_time)

    def finish(self, cancelled: bool, t0: float, train_time: float) -> int:
        ckpt = self.save_checkpoint()
        final_path = self.job.final_mesh
        if cancelled and self.last_snapshot is not None and self.last_snapshot.is_file():
            # be quick: the latest snapshot becomes the result
            protocol.atomic_write_bytes(final_path, self.last_snapshot.read_bytes())
            snap = protocol.read_snapshot(final_path)
            verts, faces, colors = snap["vertices"], snap["faces"], snap.get("colors")
        else:
            # cancelled before any snapshot: a coarse mesh, quick enough to keep the 2-second promise
            res = 32 if cancelled else self.cfg.final_resolution
            self.emitter.emit("stage", name="extract", detail=f"final mesh at {res}^3")
            verts, faces, colors = self.extract(res, colors=not cancelled)
        removed = None
        if not cancelled and not self.has_masks and len(faces):  # photos without masks: a clean object by default
            self.emitter.emit("stage", name="clean", detail="cut to the region; shell, unseen parts and floaters")
            from .meshclean import clean_final_mesh

            sc = self.scene
            verts, faces, colors, report = clean_final_mesh(verts, faces, colors, K=sc.K, c2w=sc.c2w, sizes=sc.sizes,
                                                            to_world=sc.to_world, roi=sc.roi,
                                                            roi_matrix=self.roi_matrix)
            removed = report["removed"]
        from .meshing import write_ply

        self.emit_mesh(verts, faces, colors, final_path, final=True)
        metrics: dict[str, Any] = {"train_time_s": train_time,
                                   "mesh_ready_s": time.perf_counter() - self.t_load,
                                   "setup_s": t0 - self.t_load}
        write_ply(str(self.job.final_ply), verts, faces, colors)
        if self.graph_step is not None:
            metrics["graph_captures"] = self.graph_step.captures
        if len(self.holdout) and not cancelled:
            self.emitter.emit("stage", name="evaluate", detail=f"{len(self.holdout)} held-out views")
            t_eval = time.perf_counter()
            metrics.update(self.evaluate_holdout(self.cfg.eval_max_size))
            metrics["eval_s"] = time.perf_counter() - t_eval
        self.emitter.emit("done", mesh=str(final_path.resolve()), ply=str(self.job.final_ply.resolve()),
                          checkpoint=str(ckpt.resolve()), steps=self.step, elapsed_s=time.perf_counter() - t0,
                          cancelled=cancelled, metrics=metrics, n_vertices=len(verts), n_faces=len(faces),
                          removed=removed)
        return protocol.EXIT_CANCELLED if cancelled else protocol.EXIT_OK

    # ------------------------------------------------------------------ evaluation

    def evaluate_holdout(self, max_size: int = 0) -> dict[str, Any]:
        """PSNR (and mask IoU when masks exist) of the held-out views rendered by the field."""
        torch = self.torch
        from .neus import render_image

        held = self.scene.subset(self.holdout)
        if max_size:
            held = held.downscaled(max_size)
        c2w = held.normalized_c2w()
        psnrs, ious = [], []
        self.field.eval()
        for i in range(len(held)):
            h, w = held.images[i].shape[:2]
            bg = torch.zeros(3, device=self.device) if self.has_masks else None
            out = render_image(self.field, self.grid, torch.from_numpy(held.K[i]), torch.from_numpy(c2w[i]), w, h,
                               step_size=self.cfg.step_size, bg_color=bg)
            pred = out["rgb"].clamp(0, 1).cpu().numpy()
            gt = held.images[i].astype(np.float32) / 255.0
            if held.masks is not None:
                m = held.masks[i].astype(np.float32)[..., None] / 255.0
                gt = gt * m
                pred_mask = out["opacity"].cpu().numpy() > 0.5
                true_mask = held.masks[i] > 127
                ious.append(float((pred_mask & true_mask).sum() / max((pred_mask | true_mask).sum(), 1)))
            mse = float(((pred - gt) ** 2).mean())
            psnrs.append(-10 * math.log10(max(mse, 1e-10)))
        self.field.train()
        out_metrics: dict[str, Any] = {"holdout_psnr": float(np.mean(psnrs)), "holdout_views": held.names}
        if ious:
            out_metrics["holdout_mask_iou"] = float(np.mean(ious))
        return out_metrics


def torch_max(a, b):  # noqa: ANN001, ANN201
    import torch

    return torch.maximum(a, b)
