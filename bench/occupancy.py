"""Occupancy-grid ray marching and volume-rendering weights: our implementation against nerfacc's, in one run.

    python bench/occupancy.py [--device cuda] [--rays 16384] [--resolution 128] [--render-steps 1024] [--write]

The same binary grid drives both: it is built by :class:`backend.render.OccupancyGrid` from an analytic SDF (a
sphere of radius 0.5) at two NeuS sharpnesses (early training: a thick shell; late: a thin one), then copied into
``nerfacc.OccGridEstimator`` (when nerfacc imports; it compiles its CUDA code on first use). Rays start on a sphere
of radius 3 and aim at random points of the central region, like cameras around an object. Timed (median of
``--iters`` after warm-up, the GPU synchronised around each call):

- ``sample``: marching every ray through the grid at the training step size (stratified), returning packed samples
  (ours: :meth:`OccupancyGrid.sample`; nerfacc: ``OccGridEstimator.sampling`` without a density function);
- ``weights``: rendering weights from per-sample opacities and their backward pass (ours:
  :func:`backend.render.render_weights`; nerfacc: ``render_weight_from_alpha``), on the same samples.

Consistency is checked as well: the sample counts of the two marchers, and the weights of both on identical input.
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from backend.render import OccupancyGrid, render_weights  # noqa: E402
from bench.throughput import commit, device_name  # noqa: E402


def timed(fn: Callable[[], object], device: str, iters: int, warmup: int = 3) -> float:
    """Median milliseconds of ``fn()``."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(iters):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        out.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(out)


def make_rays(n: int, device: str, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, 3) origins on a sphere of radius 3 and unit directions towards points in [-0.6, 0.6]^3."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    o = torch.randn(n, 3, generator=g)
    o = 3.0 * o / o.norm(dim=-1, keepdim=True)
    target = (torch.rand(n, 3, generator=g) - 0.5) * 1.2
    d = target - o
    d = d / d.norm(dim=-1, keepdim=True)
    return o.to(device), d.to(device)


def build_grid(resolution: int, inv_s: float, step: float, device: str) -> OccupancyGrid:
    grid = OccupancyGrid(resolution).to(device)

    def sphere(p: torch.Tensor) -> torch.Tensor:
        return p.norm(dim=-1) - 0.5

    grid.update(sphere, inv_s, step)
    return grid


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--rays", type=int, default=16384)
    ap.add_argument("--resolution", type=int, default=128)
    ap.add_argument("--render-steps", type=int, default=1024, help="samples across the unit sphere's diameter")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--commit", default="", help="commit to record (default: git HEAD here)")
    ap.add_argument("--write", action="store_true", help="append the table to docs/BENCHMARKS.md")
    args = ap.parse_args()
    dev = args.device
    step = 2.0 / args.render_steps
    try:
        import nerfacc

        have_nerfacc = True
        nerfacc_version = nerfacc.__version__
    except Exception as exc:  # noqa: BLE001 - any failure to import or build means "not available"
        have_nerfacc, nerfacc_version = False, f"not available ({type(exc).__name__}: {exc})"
    o, d = make_rays(args.rays, dev)
    rows = []
    for label, inv_s in (("early (inv_s 8)", 8.0), ("late (inv_s 256)", 256.0)):
        grid = build_grid(args.resolution, inv_s, step, dev)
        occupied = grid.occupied_fraction()
        ours = grid.sample(o, d, step)
        t_ours = timed(lambda grid=grid: grid.sample(o, d, step), dev, args.iters)
        n_ours = len(ours)
        alpha = torch.rand(n_ours, device=dev) * 0.2

        def weights_ours(alpha: torch.Tensor = alpha, ray: torch.Tensor = ours.ray_indices) -> None:
            a = alpha.clone().requires_grad_(True)
            w, _ = render_weights(a, ray, args.rays)
            w.sum().backward()

        w_ours = timed(weights_ours, dev, args.iters)
        row = {"scene": label, "occupied": occupied, "n_ours": n_ours, "sample_ours_ms": t_ours,
               "weights_ours_ms": w_ours}
        if dev.startswith("cuda"):  # the trainer's fast path: the two-pass Triton march, the same samples
            grid.triton_march = True
            fast = grid.sample(o, d, step, perturb=False)
            t_fast = timed(lambda grid=grid: grid.sample(o, d, step), dev, args.iters)
            grid.triton_march = False
            same = torch.equal(fast.t_starts, grid.sample(o, d, step, perturb=False).t_starts)
            row.update(sample_triton_ms=t_fast, triton_same_samples=same)
        if have_nerfacc:
            est = nerfacc.OccGridEstimator(torch.tensor([-1.0, -1.0, -1.0, 1.0, 1.0, 1.0]),
                                           resolution=args.resolution, levels=1).to(dev)
            est.binaries.copy_(grid.binary[None])
            est.occs.copy_(grid.values.reshape(-1))

            def sample_nerfacc(est: nerfacc.OccGridEstimator = est) -> tuple[torch.Tensor, ...]:
                return est.sampling(o, d, render_step_size=step, stratified=True, near_plane=0.0)

            ray_n, t0_n, t1_n = sample_nerfacc()
            t_n = timed(sample_nerfacc, dev, args.iters)
            mids = (t0_n + t1_n) * 0.5
            pts = o[ray_n.long()] + d[ray_n.long()] * mids[:, None]
            inside = float(grid.occupied(pts).float().mean()) if len(pts) else 1.0

            def weights_nerfacc(alpha: torch.Tensor = alpha, ray: torch.Tensor = ours.ray_indices) -> None:
                a = alpha.clone().requires_grad_(True)
                w, _ = nerfacc.render_weight_from_alpha(a, ray_indices=ray, n_rays=args.rays)
                w.sum().backward()

            w_n = timed(weights_nerfacc, dev, args.iters)
            wa, _ = render_weights(alpha, ours.ray_indices, args.rays)
            wb, _ = nerfacc.render_weight_from_alpha(alpha, ray_indices=ours.ray_indices, n_rays=args.rays)
            row.update(n_nerfacc=len(ray_n), sample_nerfacc_ms=t_n, nerfacc_in_occupied=inside,
                       weights_nerfacc_ms=w_n, weights_max_diff=float((wa - wb).abs().max()) if n_ours else 0.0)
        rows.append(row)
        print(row, flush=True)

    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"### Occupancy marching, {dev}: {device_name(dev)}, {when}, commit {args.commit or commit()}",
             "",
             f"`python bench/occupancy.py --rays {args.rays} --resolution {args.resolution} --render-steps "
             f"{args.render_steps}`; torch {torch.__version__}, nerfacc {nerfacc_version}. Times are medians of "
             f"{args.iters} calls in ms (ratio: ours / nerfacc, above 1 means nerfacc is faster).",
             "",
             *[f"- {r['scene']}: our Triton march {r['sample_triton_ms']:.2f} ms (dense reference march "
               f"{r['sample_ours_ms']:.2f} ms), same samples: {r['triton_same_samples']}" for r in rows
               if "sample_triton_ms" in r],
             "",
             "| grid | occupied | samples ours / nerfacc | sample ms ours / nerfacc | ratio | weights+backward ms "
             "ours / nerfacc | ratio | nerfacc samples in occupied cells | max weight difference |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "n_nerfacc" in r:
            lines.append(
                f"| {r['scene']} | {r['occupied']:.3f} | {r['n_ours']:,} / {r['n_nerfacc']:,} | "
                f"{r['sample_ours_ms']:.2f} / {r['sample_nerfacc_ms']:.2f} | "
                f"{r['sample_ours_ms'] / r['sample_nerfacc_ms']:.2f} | "
                f"{r['weights_ours_ms']:.2f} / {r['weights_nerfacc_ms']:.2f} | "
                f"{r['weights_ours_ms'] / r['weights_nerfacc_ms']:.2f} | {r['nerfacc_in_occupied']:.3f} | "
                f"{r['weights_max_diff']:.1e} |")
        else:
            lines.append(f"| {r['scene']} | {r['occupied']:.3f} | {r['n_ours']:,} / - | "
                         f"{r['sample_ours_ms']:.2f} / - | - | {r['weights_ours_ms']:.2f} / - | - | - | - |")
    table = "\n".join(lines) + "\n"
    print(table)
    if args.write:
        path = ROOT / "docs" / "BENCHMARKS.md"
        path.write_text(path.read_text(encoding="utf-8").rstrip("\n") + "\n\n" + table, encoding="utf-8")
        print(f"appended to {path}")


if __name__ == "__main__":
    main()
