"""Where a training step's time goes on CUDA: the whole step, the CUDA-graph replay alone, and preparing one batch
(drawing rays, the march, the culling pre-pass) alone, fused in Triton kernels and as the PyTorch chain, after a
warm-up. Prints milliseconds.

Usage: ``python bench/step_split.py [--data DIR] [--warmup 3000] [--set KEY=VALUE ...]``
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from backend import protocol  # noqa: E402
from backend.data import load_scene  # noqa: E402
from backend.train import build_config  # noqa: E402
from backend.training.trainer import Trainer  # noqa: E402
from bench import shared_data  # noqa: E402


def timed(fn: Callable[[], object], n: int = 100) -> float:
    """Mean wall milliseconds of ``n`` calls, the device drained before and after."""
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / n * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(shared_data("dtu_scan65")))
    ap.add_argument("--preset", default="default")
    ap.add_argument("--warmup", type=int, default=3000)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a configuration key")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench/step_split.py measures the CUDA-graph step: it needs a CUDA device")
    cfg = build_config(argparse.Namespace(preset=args.preset, set=args.set, steps=5000))
    tr = Trainer(load_scene(args.data), cfg, device="cuda", job=protocol.JobLayout("/tmp/neusblend_step_split"),
                 emitter=protocol.Emitter(io.StringIO()))
    if tr.graph_step is None:
        raise SystemExit(f"the {tr.path} path does not replay a CUDA graph")
    for _ in range(args.warmup):
        tr.train_step()
    print(f"path {tr.path}, step {tr.step}, rays {tr.n_rays}, settings {args.set}")
    print(f"whole step {timed(tr.train_step):.2f} ms")
    print(f"graph replay alone {timed(tr.graph_step.graph.replay):.2f} ms")
    cull = tr.cfg.cull_transmittance
    batches = [("PyTorch chain", lambda: tr.batches.marched(tr.n_rays))]
    if tr.batches.uses_fused():
        batches.insert(0, ("fused Triton", lambda: tr.batches.fused(tr.n_rays)))
    for name, fn in batches:
        print(f"one batch alone, {name} {timed(fn):.2f} ms")
        tr.cfg.cull_transmittance = 0.0
        print(f"one batch alone, {name}, no culling {timed(fn):.2f} ms")
        tr.cfg.cull_transmittance = cull
    s = tr.sampler
    rays = s.rays(int(tr.n_rays))
    print(f"drawing rays, PyTorch {timed(lambda: s.rays(int(tr.n_rays))):.2f} ms")
    if tr.batches.uses_fused():
        from backend.kernels import batch_triton

        lo, hi = tr.grid.occupied_bounds()

        def draw() -> object:
            gid, u = s.draw(int(tr.n_rays))
            return batch_triton.draw_rays(gid, u, s.pix_offsets, s.widths, s.K_inv, s.c2w, s.pixels, s.masks,
                                          lo, hi, tr.cfg.step_size)

        print(f"drawing rays and their spans, Triton {timed(draw):.2f} ms")
    print(f"march {timed(lambda: tr.grid.sample(rays.origins, rays.dirs, tr.cfg.step_size)):.2f} ms")

if __name__ == "__main__":
    main()
