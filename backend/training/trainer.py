"""The training loop: one NeuS field on one device, from a loaded capture to the final mesh.

:class:`Trainer` owns the field, the occupancy grid and the optimiser; it takes its batches from
:mod:`.batches`, its schedules from :mod:`.schedules` and writes through :class:`.jobfolder.JobOutput`. It reports
over the protocol (``start``, ``progress``, ``mesh``, ``done``) and on SIGTERM/SIGINT saves a checkpoint and the
latest mesh and exits.
"""

from __future__ import annotations

import contextlib
import math
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import protocol
from ..checkpoint import load_module_state
from ..config import TrainConfig
from ..field import FieldConfig, NeuSField
from ..kernels import path_reason, select_path, use_fast_path
from ..optim import Adam
from ..protocol import JobLayout
from ..render import OccupancyGrid
from ..step import GraphStep, LossWeights, StepInputs, step_losses
from . import schedules
from .batches import BatchBuilder, FusedBatch, MarchedBatch, RaySampler
from .jobfolder import JobOutput


class Trainer:
    """NeuS training on one device. See the module docstring."""

    def __init__(self, scene, cfg: TrainConfig, *, device: str, job: JobLayout,  # noqa: ANN001
                 emitter: protocol.Emitter, data_path: Path | None = None, inline_meshes: bool = False,
                 normalization_info: dict[str, Any] | None = None) -> None:
        self.cfg = cfg
        self.device = torch.device(device)
        self.job = job
        self.emitter = emitter
        self.data_path = data_path
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
        self.losses = LossWeights.from_train(cfg)
        self.graph_step = None
        if cfg.cuda_graph and self.device.type == "cuda" and self.path != "reference":
            for group in self.optimizer.param_groups:  # a captured optimiser reads its rates from the device
                group["lr"] = torch.tensor(float(group["lr"]), device=self.device)
                group["capturable"] = True
            cap = int(math.ceil(cfg.target_samples * max(cfg.sample_headroom, 1.0) / 1024) * 1024)
            self.graph_step = GraphStep(self.field, self.optimizer, self.params, max_rays=cfg.max_rays,
                                        sample_capacity=cap, eik_points=cap // 8, has_masks=self.has_masks,
                                        losses=self.losses)
        self._side = torch.cuda.Stream(self.device) if self.graph_step is not None else None
        self._pending: MarchedBatch | FusedBatch | None = None  # the next step's batch, marched on the side stream
        self.step = 0
        self.n_rays = cfg.init_rays
        self.sampler = RaySampler(self.train_scene, self.device)
        self.batches = BatchBuilder(self.sampler, self.field, self.grid, cfg, self.graph_step)
        self.output = JobOutput(job, emitter, inline_meshes)
        self.roi_matrix: np.ndarray | None = None
        self.masks_path: str | None = None  # a --masks folder, kept in checkpoints for --resume
        self.t_load = time.perf_counter()  # when loading began (set by `run`): the start of time-to-mesh

    # ------------------------------------------------------------------ one step

    def update_grid(self, step: int) -> None:
        cfg = self.cfg
        if step == 0 or step % cfg.grid_update_every != 0:  # the first step starts at once (a cancel stays quick)
            return
        inv_s = self.field.inv_s().detach()  # a tensor: no host synchronisation
        n_cells = None if step < cfg.grid_warmup_steps else self.grid.resolution**3 // 4
        self.grid.update(self.field.bounded_sdf, inv_s, cfg.step_size, n_cells=n_cells)

    def train_step(self) -> dict[str, Any]:
        """One optimisation step on a fresh random batch of rays (see :mod:`backend.step`).

        With a CUDA graph the next step's rays are marched on a side stream while this step's graph runs (the march
        waits for the host; the graph need not): each batch is marched through the grid as it was one step
        earlier, which only matters on the steps that update the grid.
        """
        cfg = self.cfg
        step = self.step
        levels = schedules.active_levels(cfg, step)
        self.field.encoding.active_levels = levels
        for group in self.optimizer.param_groups:
            lr = group["base_lr"] * schedules.lr_factor(cfg, step)
            if isinstance(group["lr"], torch.Tensor):
                group["lr"].fill_(lr)
            else:
                group["lr"] = lr
        gs = self.graph_step
        cos = schedules.cos_anneal_ratio(cfg, step)
        if gs is not None:
            main = torch.cuda.current_stream(self.device)
            b, self._pending = self._pending or self.batches.next(self.n_rays), None
            main.wait_stream(self._side)  # the batch is marched; the grid may change now
            self.update_grid(step)
            if isinstance(b, FusedBatch):  # already in the graph's layout
                gs.load_inputs(b.inputs, cos)
            else:
                gs.load(b.pts, b.dirs, b.deltas, b.ray_indices, b.ray_dirs, b.gt, b.bg, b.mask, b.rand_pts, cos,
                        ray_origins=b.ray_origins, bg_jitter=b.bg_jitter)
            loaded = torch.cuda.Event()
            loaded.record(main)
            out = gs.run(key=levels, bg_rows=gs.background_rows(b.drawn if isinstance(b, FusedBatch) else b.n_rays))
            if isinstance(b, FusedBatch):
                b.done.synchronize()  # its counts (long done by now: the graph is already queued)
                _, n_rays, n_samples = (int(v) for v in b.stats)  # rays that fit; samples kept before the cut
                n_marched, has_mask = b.n_marched, gs.has_masks
            else:
                n_samples, n_marched, n_rays = b.n_samples, b.n_marched, b.n_rays
                has_mask = b.mask is not None
            del b
        else:
            self.update_grid(step)
            b = self.batches.marched(self.n_rays)
            n_samples, n_marched, n_rays = b.n_samples, b.n_marched, b.n_rays
            has_mask = b.mask is not None

            def spare(v: torch.Tensor | None) -> torch.Tensor | None:  # one spare row past the last ray
                return None if v is None else torch.cat([v, torch.zeros_like(v[:1])])

            ray_valid = torch.ones(n_rays + 1, device=self.device)
            ray_valid[-1] = 0
            x = StepInputs(pts=b.pts, dirs=b.dirs, deltas=b.deltas, ray_indices=b.ray_indices,
                           sample_valid=torch.ones_like(b.deltas), ray_dirs=spare(b.ray_dirs), gt=spare(b.gt),
                           bg=spare(b.bg), mask=spare(b.mask), ray_valid=ray_valid,
                           inv_n_rays=torch.tensor(1.0 / max(n_rays, 1), device=self.device),
                           rand_pts=b.rand_pts, cos_anneal=torch.tensor(cos, device=self.device),
                           ray_origins=spare(b.ray_origins), bg_jitter=spare(b.bg_jitter))
            out = step_losses(self.field, x, self.losses)
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
                self._pending = self.batches.next(self.n_rays)
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
        from ..extract import extract_mesh

        return extract_mesh(self.field, self.scene, resolution, box=self.extraction_box() if box is None else box,
                            device=self.device, colors=colors)

    def snapshot(self) -> None:
        verts, faces, colors = self.extract(self.cfg.snapshot_resolution, colors=True)
        if len(faces) == 0:
            self.emitter.emit("warning", message=f"no surface yet at step {self.step}")
            return
        self.output.mesh(verts, faces, colors, self.step, final=False)

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
        return self.output.checkpoint(self.state())

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

    @contextlib.contextmanager
    def handle_signals(self) -> Iterator[None]:
        """SIGTERM and SIGINT ask the loop to stop (a checkpoint and the latest mesh are saved) while inside."""
        def on_signal(signum, frame):  # noqa: ANN001, ARG001
            self.stop_requested = True

        old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for s, h in old.items():
                signal.signal(s, h)

    def start_message(self) -> None:
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
        self.output.write_config(cfg.to_dict(), self.data_path)
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
        snap = self.output.latest_snapshot() if cancelled else None  # be quick: the latest snapshot is the result
        if snap is not None:
            verts, faces, colors = snap["vertices"], snap["faces"], snap.get("colors")
        else:
            # cancelled before any snapshot: a coarse mesh, quick enough to keep the 2-second promise
            res = 32 if cancelled else self.cfg.final_resolution
            self.emitter.emit("stage", name="extract", detail=f"final mesh at {res}^3")
            verts, faces, colors = self.extract(res, colors=not cancelled)
        removed = None
        if not cancelled and not self.has_masks and len(faces):  # photos without masks: a clean object by default
            self.emitter.emit("stage", name="clean", detail="cut to the region; shell, unseen parts and floaters")
            from ..meshclean import clean_final_mesh

            sc = self.scene
            verts, faces, colors, report = clean_final_mesh(verts, faces, colors, K=sc.K, c2w=sc.c2w, sizes=sc.sizes,
                                                            to_world=sc.to_world, roi=sc.roi,
                                                            roi_matrix=self.roi_matrix)
            removed = report["removed"]
        final_path = self.output.mesh(verts, faces, colors, self.step, final=True)
        metrics: dict[str, Any] = {"train_time_s": train_time,
                                   "mesh_ready_s": time.perf_counter() - self.t_load,
                                   "setup_s": t0 - self.t_load}
        ply = self.output.final_ply(verts, faces, colors)
        if self.graph_step is not None:
            metrics["graph_captures"] = self.graph_step.captures
        if len(self.holdout) and not cancelled:
            self.emitter.emit("stage", name="evaluate", detail=f"{len(self.holdout)} held-out views")
            t_eval = time.perf_counter()
            metrics.update(self.evaluate_holdout(self.cfg.eval_max_size))
            metrics["eval_s"] = time.perf_counter() - t_eval
        self.emitter.emit("done", mesh=str(final_path.resolve()), ply=str(ply.resolve()),
                          checkpoint=str(ckpt.resolve()), steps=self.step, elapsed_s=time.perf_counter() - t0,
                          cancelled=cancelled, metrics=metrics, n_vertices=len(verts), n_faces=len(faces),
                          removed=removed)
        return protocol.EXIT_CANCELLED if cancelled else protocol.EXIT_OK

    # ------------------------------------------------------------------ evaluation

    def evaluate_holdout(self, max_size: int = 0) -> dict[str, Any]:
        """PSNR (and mask IoU when masks exist) of the held-out views rendered by the field."""
        from ..evaluate import score_views

        held = self.scene.subset(self.holdout)
        if max_size:
            held = held.downscaled(max_size)
        views = score_views(self.field, self.grid, held, step_size=self.cfg.step_size, device=self.device,
                            trained_with_masks=self.has_masks, with_ssim=False)
        out_metrics: dict[str, Any] = {"holdout_psnr": float(np.mean([v["psnr"] for v in views])),
                                       "holdout_views": held.names}
        if held.masks is not None:
            out_metrics["holdout_mask_iou"] = float(np.mean([v["mask_iou"] for v in views]))
        return out_metrics
