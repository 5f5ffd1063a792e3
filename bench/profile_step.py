"""Profile whole training steps (torch.profiler): where device and host time go. Prints the top operators.

Usage: ``python bench/profile_step.py [--data DIR] [--preset default] [--steps 20]``
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from backend import protocol  # noqa: E402
from backend.data import load_scene  # noqa: E402
from backend.train import build_config  # noqa: E402
from backend.training.trainer import Trainer  # noqa: E402
from bench import shared_data  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(shared_data("dtu_scan65")))
    ap.add_argument("--preset", default="default")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=600)
    ap.add_argument("--max-image-size", type=int, default=0)
    ap.add_argument("--shapes", action="store_true", help="also group device time by operator and input shape")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a configuration key")
    args = ap.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    cfg = build_config(argparse.Namespace(preset=args.preset, set=args.set, steps=5000))  # as `train --set`
    scene = load_scene(args.data, max_image_size=args.max_image_size)
    tr = Trainer(scene, cfg, device=device, job=protocol.JobLayout("/tmp/neusblend_profile"),
                 emitter=protocol.Emitter(io.StringIO()))
    for _ in range(args.warmup):
        tr.train_step()
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    n = 0
    for _ in range(args.steps):
        n += tr.train_step()["n_samples"]
    if device == "cuda":
        torch.cuda.synchronize()
    dt = (time.perf_counter() - t0) / args.steps
    print(f"path {tr.path}: {dt * 1e3:.1f} ms/step, {n / args.steps:,.0f} samples/step, "
          f"{n / args.steps / dt / 1e6:.1f} M samples/s, rays {tr.n_rays}")
    acts = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if device == "cuda" else [])
    with torch.profiler.profile(activities=acts, record_shapes=args.shapes) as prof:
        for _ in range(5):
            tr.train_step()
        if device == "cuda":
            torch.cuda.synchronize()
    key = "self_cuda_time_total" if device == "cuda" else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=key, row_limit=30))
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))
    if args.shapes:
        print(prof.key_averages(group_by_input_shape=True).table(sort_by=key, row_limit=40, max_name_column_width=40,
                                                                 max_shapes_column_width=60))


if __name__ == "__main__":
    main()
