"""The colour network's forward and forward + backward: reference (cuBLAS, autograd) against the fused Triton kernels
(:mod:`backend.kernels.fused_color`) in each launch configuration, on the training field's shapes, in one run.

Usage: ``python bench/color_net.py [--points 262144]`` (GPU machine). Prints median milliseconds of device time
(each variant captured as a CUDA graph and replayed by ``triton.testing.do_bench``) and the float32-accurate
configuration that was fastest for forward + backward.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from backend.field import FieldConfig, HashGridConfig, NeuSField  # noqa: E402
from backend.kernels import use_fast_path  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=2**18)
    args = ap.parse_args()
    import triton.testing

    from backend.kernels import fused_color

    dev = "cuda"
    n = args.points
    field = use_fast_path(NeuSField(FieldConfig(grid=HashGridConfig())).to(dev), "triton")
    gen = torch.Generator(device=dev).manual_seed(0)
    x = torch.rand(n, 3, device=dev, generator=gen) * 2 - 1
    nrm = torch.nn.functional.normalize(torch.randn(n, 3, device=dev, generator=gen), dim=-1)
    d = torch.nn.functional.normalize(torch.randn(n, 3, device=dev, generator=gen), dim=-1)
    head = torch.randn(n, 16, device=dev, generator=gen)
    g = torch.randn(n, 3, device=dev, generator=gen)

    def fwd() -> None:
        with torch.no_grad():
            field.color(x, nrm, d, head[:, 1:])

    f = head[:, 1:].detach().requires_grad_(True)
    nr = nrm.detach().requires_grad_(True)
    params = list(field.color_layers.parameters())

    def fwd_bwd() -> None:
        torch.autograd.grad(field.color(x, nr, d, f), [f, nr, *params], g)

    def graphed(fn: Callable[[], None]) -> Callable[[], None]:
        """``fn`` captured as a CUDA graph (device time only, as the trainer replays its step)."""
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            fn()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            fn()
        return graph.replay

    def timed() -> tuple[float, float]:
        return triton.testing.do_bench(graphed(fwd)), triton.testing.do_bench(graphed(fwd_bwd))

    rows = []
    os.environ["NEUSBLEND_FUSED_COLOR"] = "0"
    ref = timed()
    rows.append(("reference (cuBLAS + autograd)", *ref))
    os.environ["NEUSBLEND_FUSED_COLOR"] = "1"
    best = None
    configs = [(t, 1, r, "tf32x3") for t in (1, 2, 4) for r in ("atomic", "partial") if (t, r) != (1, "partial")]
    configs.append((1, 1, "atomic", "tf32"))
    for tiles, stages, reduce, prec in configs:
        fused_color.COLOR_TILES_PER_PROGRAM, fused_color.COLOR_STAGES, fused_color.COLOR_REDUCE = tiles, stages, reduce
        field.cfg.precision = "tf32" if prec == "tf32" else "float32"
        try:
            t = timed()
        except Exception as exc:  # noqa: BLE001 - a configuration that does not compile is reported, not fatal
            print(f"tiles {tiles} stages {stages} {reduce} {prec}: {type(exc).__name__}: {str(exc)[:200]}")
            continue
        rows.append((f"fused, {tiles} tiles/program, {reduce}, {prec}", *t))
        if prec == "tf32x3" and (best is None or t[1] < best[1]):  # tf32: reported, not chosen (another accuracy)
            best = (f"NEUSBLEND_COLOR_TILES={tiles} NEUSBLEND_COLOR_REDUCE={reduce}", t[1])
    print(f"colour network, {n:,} points, {torch.cuda.get_device_name()}, torch {torch.__version__}")
    print("| path | forward ms | forward + backward ms | vs reference (fwd + bwd) |")
    print("|---|---|---|---|")
    for name, f, fb in rows:
        print(f"| {name} | {f:.3f} | {fb:.3f} | {ref[1] / fb:.2f}x |")
    if best is not None:
        print(f"best: {best[0]} ({best[1]:.3f} ms)")


if __name__ == "__main__":
    main()
