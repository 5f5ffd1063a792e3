"""The colour network's forward and forward + backward: reference (cuBLAS, autograd) against the fused Triton kernels
(:mod:`backend.kernels.fused_color`) in each launch configuration, on the training field's shapes, in one run.

Usage: ``python bench/color_net.py [--points 262144]`` (GPU machine). Prints median milliseconds
(``triton.testing.do_bench``) and the configuration that was fastest for forward + backward.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
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

    def fwd_bwd() -> None:
        f = head[:, 1:].detach().requires_grad_(True)
        nr = nrm.detach().requires_grad_(True)
        field.color(x, nr, d, f).backward(g)

    rows = []
    os.environ["NEUSBLEND_FUSED_COLOR"] = "0"
    ref = (triton.testing.do_bench(fwd), triton.testing.do_bench(fwd_bwd))
    rows.append(("reference (cuBLAS + autograd)", *ref))
    os.environ["NEUSBLEND_FUSED_COLOR"] = "1"
    best = None
    for tiles, stages, reduce in itertools.product((1, 2, 4, 8), (1, 3), ("atomic", "partial")):
        if (reduce == "partial" or stages > 1) and tiles == 1:
            continue  # one row per tile: a buffer of 34 KB a tile; no loop to pipeline
        fused_color.COLOR_TILES_PER_PROGRAM, fused_color.COLOR_STAGES, fused_color.COLOR_REDUCE = tiles, stages, reduce
        try:
            t = (triton.testing.do_bench(fwd), triton.testing.do_bench(fwd_bwd))
        except Exception as exc:  # noqa: BLE001 - a configuration that does not compile is reported, not fatal
            print(f"tiles {tiles} stages {stages} {reduce}: {type(exc).__name__}: {str(exc)[:200]}")
            continue
        rows.append((f"fused, {tiles} tiles/program, {stages} stages, {reduce}", *t))
        if best is None or t[1] < best[1]:
            best = (f"NEUSBLEND_COLOR_TILES={tiles} NEUSBLEND_COLOR_STAGES={stages} NEUSBLEND_COLOR_REDUCE={reduce}",
                    t[1])
    print(f"colour network, {n:,} points, {torch.cuda.get_device_name()}, torch {torch.__version__}")
    print("| path | forward ms | forward + backward ms | vs reference (fwd + bwd) |")
    print("|---|---|---|---|")
    for name, f, fb in rows:
        print(f"| {name} | {f:.3f} | {fb:.3f} | {ref[1] / fb:.2f}x |")
    if best is not None:
        print(f"best: {best[0]} ({best[1]:.3f} ms)")


if __name__ == "__main__":
    main()
