"""Throughput of the training step: samples per second, on CPU or CUDA, for each available compute path.

Two figures per path:
- ``field``: the field step alone on random points (hash grid 16 levels x 2 features, 2^19 table, 64-wide SDF
  MLP, and with ``--heads sdf+color``, the default, the colour MLP): forward, analytic normals, eikonal loss and
  backward, i.e. the double backward, and Adam. ``--heads sdf`` is the issue's definition (no colour network: SDF and
  eikonal losses);
- ``train``: whole training steps of the trainer (ray sampling, occupancy culling, NeuS rendering, losses,
  optimiser) on a real capture (DTU scan 65 with masks when ../shared/data is present).

Usage: ``python bench/throughput.py [--device cpu|cuda] [--points N] [--heads sdf|sdf+color]
[--precision float32|tf32] [--profile] [--write]``; ``--write`` appends the table to docs/BENCHMARKS.md with
device, commit and date; ``--profile`` prints the device time of each fast path's field step by kernel. Compare paths
only within one run (same machine, same load).
"""

from __future__ import annotations

import argparse
import datetime
import io
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from backend.config import TrainConfig  # noqa: E402
from backend.field import FieldConfig, HashGridConfig, NeuSField  # noqa: E402
from backend.optim import Adam  # noqa: E402
from bench import shared_data  # noqa: E402
from bench.gitinfo import commit  # noqa: E402


def device_name(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name(0)
    cpu = platform.processor() or "cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {torch.get_num_threads()} threads"


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


PATH_HELP = ("reference (PyTorch), triton (Triton hash grid + the SDF MLP and its analytic gradient as one node), "
             "triton-autograd (Triton hash grid, the MLP's double backward by autograd)")


def make_field(device: str, path: str, normals: str = "analytic", precision: str = "float32") -> NeuSField:
    """The issue's field (hash grid 16 levels x 2 features, 2^19 table, 64-wide SDF MLP) on ``path`` (both triton
    paths use the Triton encoding; which geometry node runs is :func:`field_step_rate`'s environment)."""
    torch.manual_seed(0)
    grid = HashGridConfig(n_levels=16, n_features=2, log2_table_size=19, base_resolution=16, finest_resolution=2048)
    field = NeuSField(FieldConfig(grid=grid, sdf_hidden=64, sdf_layers=1, background="none",
                                  normals=normals, precision=precision)).to(device)
    if path != "reference":
        from backend.kernels import use_fast_path

        use_fast_path(field, "triton")
    return field


def field_step_rate(device: str, n_points: int, iters: int, path: str = "reference", graph: bool = False,
                    normals: str = "analytic", color: bool = True, precision: str = "float32") -> float:
    """Samples/s of forward + normals + eikonal + backward + Adam (the trainer's, :class:`backend.optim.Adam`) on
    random points.

    ``graph``: the step (inputs drawn on the device included) captured once as a CUDA graph and replayed, i.e.
    device time without the host's launch overhead, as the trainer runs it on CUDA (``GraphStep``). ``color``:
    the colour network and a loss on its output are part of the step.
    """
    os.environ["NEUSBLEND_FUSED_GEOMETRY"] = "0" if path == "triton-autograd" else "1"  # read at every call
    try:
        return _field_step_rate(device, n_points, iters, path, graph, normals, color, precision)
    finally:
        os.environ.pop("NEUSBLEND_FUSED_GEOMETRY", None)


def _field_step(device: str, n_points: int, path: str, graph: bool, normals: str, color: bool, precision: str
                ) -> tuple[Callable[[], None], Adam]:
    """One field step (forward, normals, losses, backward, Adam) as a closure, and its optimiser."""
    field = make_field(device, path, normals, precision)
    params = list(field.parameters())
    # the trainer's optimiser (on the fast path the table's update in Triton), with a device-tensor rate for the graph
    opt = Adam([{"params": params, "lr": torch.tensor(1e-3, device=device) if graph else 1e-3}],
               triton=path != "reference")

    def step() -> None:
        x = torch.rand(n_points, 3, device=device) * 1.6 - 0.8
        sdf, feat, grad = field.sdf_with_gradient(x, create_graph=True)
        loss = sdf.abs().mean() + (0.1 / n_points) * field.eikonal_sum(grad)  # eikonal: the trainer's sum
        if color:
            d = torch.nn.functional.normalize(torch.randn(n_points, 3, device=device), dim=-1)
            n = grad / grad.norm(dim=-1, keepdim=True).clamp_min(1e-6)
            loss = loss + field.color(x, n, d, feat).mean()
        if not graph:
            opt.zero_grad(set_to_none=True)
        loss.backward(inputs=params)
        opt.step()

    return step, opt


def _field_step_rate(device: str, n_points: int, iters: int, path: str, graph: bool, normals: str, color: bool,
                     precision: str) -> float:
    step, opt = _field_step(device, n_points, path, graph, normals, color, precision)
    run = step
    if graph:
        from backend.step import capture_graph

        run = capture_graph(step, opt, warmup=3)[0].replay
    for _ in range(3):
        run()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(iters):
        run()
    sync(device)
    return n_points * iters / (time.perf_counter() - t0)


def profile_field_step(n_points: int, path: str, normals: str, color: bool, precision: str, top: int = 15
                       ) -> None:
    """Print the device time of eager field steps on CUDA by operator and kernel (torch.profiler over 10 steps,
    as ``bench/profile_step.py`` does for whole training steps)."""
    from torch.profiler import ProfilerActivity, profile

    os.environ["NEUSBLEND_FUSED_GEOMETRY"] = "0" if path == "triton-autograd" else "1"
    try:
        step, _ = _field_step("cuda", n_points, path, False, normals, color, precision)
        for _ in range(5):
            step()
        sync("cuda")
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for _ in range(10):
                step()
            sync("cuda")
    finally:
        os.environ.pop("NEUSBLEND_FUSED_GEOMETRY", None)
    print(f"\n{path}: 10 eager field steps of {n_points:,} points")
    print(prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=top))


def train_step_rate(device: str, steps: int, preset: str, max_image_size: int, normals: str = "analytic",
                    precision: str = "float32") -> tuple[float, str] | None:
    """Samples/s of whole trainer steps on DTU scan 65 (None when the data is absent)."""
    data = shared_data("dtu_scan65")
    if not data.is_dir():
        return None
    from backend import protocol
    from backend.config import load_preset
    from backend.data import load_scene
    from backend.training.trainer import Trainer

    scene = load_scene(data, max_image_size=max_image_size)
    cfg = load_preset(preset)
    cfg.steps = 10**9
    cfg.normals = normals
    cfg.precision = precision
    trainer = Trainer(scene, cfg, device=device, job=protocol.JobLayout("/tmp/neusblend_bench_job"),
                      emitter=protocol.Emitter(io.StringIO()))
    for _ in range(cfg.grid_warmup_steps + 20):  # past the warm-up, so the grid culls as in a real run
        trainer.train_step()
    sync(device)
    t0 = time.perf_counter()
    n = 0
    for _ in range(steps):
        n += trainer.train_step()["n_samples"]
    sync(device)
    return n / (time.perf_counter() - t0), f"DTU scan 65 at {max_image_size or 'full'} px, preset {preset}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--points", type=int, help="points per field step (default: 2^14 on CPU, 2^18 on CUDA)")
    ap.add_argument("--iters", type=int, help="timed field steps")
    ap.add_argument("--train-steps", type=int, help="timed trainer steps")
    ap.add_argument("--paths", default="reference", help="comma-separated compute paths to compare: " + PATH_HELP)
    ap.add_argument("--no-graph", action="store_true", help="skip the CUDA-graph replays of the field step")
    ap.add_argument("--no-train", action="store_true", help="skip the trainer steps")
    ap.add_argument("--normals", default="analytic", choices=("analytic", "finite_difference"),
                    help="how the field's normals are computed (every row)")
    ap.add_argument("--heads", default="sdf+color", choices=("sdf", "sdf+color"),
                    help="networks in the field step: sdf (the issue's definition) or sdf and colour")
    ap.add_argument("--precision", default=TrainConfig().precision, choices=("float32", "mixed", "tf32"),
                    help="products of the fused networks on the fast paths (every row; the reference is float32)")
    ap.add_argument("--profile", action="store_true",
                    help="also print each fast path's eager field step by kernel (CUDA, torch.profiler)")
    ap.add_argument("--write", action="store_true", help="append the table to docs/BENCHMARKS.md")
    args = ap.parse_args()
    dev = args.device
    cuda = dev == "cuda"
    n_points = args.points or (2**18 if cuda else 2**14)
    iters = args.iters or (20 if cuda else 5)
    rows = []
    ref_rate: dict[bool, float] = {}
    paths = args.paths.split(",")
    notes = ", finite-difference normals" if args.normals == "finite_difference" else ""
    prec_note = {"tf32": ", TF32 products", "mixed": ", TF32 backward products"}.get(args.precision, "")

    def note(path: str) -> str:  # the reference computes in float32 whatever --precision says
        return notes + ("" if path == "reference" else prec_note)

    heads_note = "SDF" if args.heads == "sdf" else "SDF + colour"
    for path in paths:
        for graph in ([False, True] if cuda and not args.no_graph else [False]):
            rate = field_step_rate(dev, n_points, iters * (5 if graph else 1), path, graph, args.normals,
                                   args.heads == "sdf+color", args.precision)
            if path == "reference":
                ref_rate[graph] = rate
            ratio = f"{rate / ref_rate[graph]:.1f}x" if graph in ref_rate else "-"
            what = f"field step ({heads_note}, random points, eikonal{note(path)})" + (", CUDA graph" if graph else "")
            rows.append((path, what, f"{n_points:,} points", rate, ratio))
            print(f"{path:16s} field{' graph' if graph else '      '} {rate / 1e6:9.3f} M samples/s  {ratio}",
                  flush=True)
    if args.profile and cuda:
        for path in [p for p in paths if p != "reference"]:
            profile_field_step(n_points, path, args.normals, args.heads == "sdf+color", args.precision)
    ref_train = None
    for path in [p for p in paths if p != "triton-autograd" and not args.no_train]:
        os.environ["NEUSBLEND_PATH"] = path  # also for the reference: the trainer would pick triton on CUDA
        res = train_step_rate(dev, args.train_steps or (30 if cuda else 10), "default" if cuda else "preview",
                              0 if cuda else 200, args.normals, args.precision)
        os.environ.pop("NEUSBLEND_PATH", None)
        if res is None:
            print("(no ../shared/data: skipping the trainer step)")
            break
        rate, what = res
        ref_train = rate if path == "reference" else ref_train
        ratio = f"{rate / ref_train:.1f}x" if ref_train else "-"
        rows.append((path, "training step" + note(path), what, rate, ratio))
        print(f"{path:10s} train  {rate / 1e6:9.3f} M samples/s  {ratio}", flush=True)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"### Throughput, {dev}: {device_name(dev)}", "",
             f"commit {commit()}, {stamp}, torch {torch.__version__}", "",
             "vs reference: against the reference path's row of the same kind (eager or CUDA graph)", "",
             "| path | what | size | samples/s | vs reference |", "|---|---|---|---|---|"]
    lines += [f"| {p} | {w} | {s} | {r / 1e6:.3f} M | {x} |" for p, w, s, r, x in rows]
    table = "\n".join(lines) + "\n"
    print()
    print(table)
    if args.write:
        bench = ROOT / "docs" / "BENCHMARKS.md"
        text = bench.read_text() if bench.exists() else "# Benchmarks\n"
        if "## Training throughput" not in text:
            text += "\n## Training throughput\n\nFigures from `python bench/throughput.py --write`.\n"
        text += "\n" + table
        bench.write_text(text)


if __name__ == "__main__":
    main()
