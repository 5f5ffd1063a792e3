"""Timings of the hash-grid kernels and of the field step, for docs/KERNELS.md (run on the GPU machine).

``python -m backend.kernels.bench_hashgrid [--points N] [--sweep] [--profile]``

Prints, for the benchmark field (16 levels x 2 features, 2^19 table, 64-wide SDF MLP, eikonal):
- the device's copy bandwidth (bytes read + written), the ceiling for the memory-bound terms;
- each kernel's median time (``triton.testing.do_bench``) for several block shapes (``--sweep``);
- encoding forward, field forward and whole field step rates for the reference and the Triton modes;
- where the time of a Triton field step goes (phases by CUDA events; kernels by torch.profiler, ``--profile``).
"""

from __future__ import annotations

import argparse
import os
import time
from collections import defaultdict
from collections.abc import Callable

import torch
import triton
import triton.language as tl

from ..field import FieldConfig, HashGridConfig, HashGridEncoding, NeuSField
from . import use_fast_path
from .hashgrid_triton import _red_add2

FULL = HashGridConfig(n_levels=16, n_features=2, log2_table_size=19, base_resolution=16, finest_resolution=2048)
DEV = "cuda"  # "cpu" (with TRITON_INTERPRET=1 and a tiny --points) only to smoke-test this script


def bench(fn: Callable[[], object], rep_ms: int = 200) -> float:
    """Median milliseconds of ``fn`` (CUDA events, after warm-up)."""
    import triton.testing  # noqa: F811 - the submodule

    if DEV != "cuda":
        fn()
        t0 = time.perf_counter()
        fn()
        return (time.perf_counter() - t0) * 1e3

    return float(triton.testing.do_bench(fn, warmup=50, rep=rep_ms, return_mode="median"))


def copy_bandwidth() -> float:
    """Device-to-device copy, bytes read + written per second."""
    a = torch.empty(2**28, dtype=torch.float32, device=DEV)  # 1 GiB
    b = torch.empty_like(a)
    ms = bench(lambda: b.copy_(a))
    return 2 * a.numel() * 4 / (ms * 1e-3)


@triton.jit
def _probe_kernel(t_ptr, out_ptr, rows_mask, N, PER: tl.constexpr, BLOCK: tl.constexpr, RED: tl.constexpr):
    """PER random accesses per point into a table of rows_mask + 1 rows: RED 0, 8-byte gathers (int64 rows);
    1, 8-byte vector reductions (two float32); 2, 4-byte f16x2 reductions (two float16)."""
    n = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = n < N
    h = n.to(tl.uint32) * 2654435761
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    for _ in range(PER):
        h = h * 1664525 + 1013904223
        row = ((h >> 5) & rows_mask).to(tl.int64)
        if RED == 1:
            _red_add2(out_ptr + row * 2, acc + 1.0, acc + 2.0, mask, True)
        elif RED == 2:
            tl.inline_asm_elementwise(
                asm="{ .reg .pred p; setp.ne.s32 p, $3, 0; @p red.global.add.noftz.f16x2 [$1], $2; mov.u32 $0, 0; }",
                constraints="=r,l,r,r", args=[(out_ptr + row * 2).to(tl.int64), (acc + 1.0).to(tl.int32) * 0x3C003C00,
                                              mask.to(tl.int32)], dtype=tl.int32, is_pure=False, pack=1)
        else:
            acc += tl.load(t_ptr + row, mask=mask, other=0).to(tl.int32).to(tl.float32, bitcast=True)
    if RED == 0:
        tl.store(out_ptr + n, acc, mask=mask)


def _probe(tab: torch.Tensor, dst: torch.Tensor, rows_mask: int, n: int, red: int) -> Callable[[], object]:
    grid = (triton.cdiv(n, 512),)
    return lambda: _probe_kernel[grid](tab, dst, rows_mask, n, PER=128, BLOCK=512, RED=red, num_warps=4)


def ceilings(n: int, sizes: tuple[int, ...] = (22, 23, 25)) -> None:
    """The L2 ceilings the hash-grid kernels live under: random 8-byte gathers, 8-byte (two float32) and 4-byte
    (two float16) reductions per second, 128 per point (a level-free stand-in for one pass over 16 levels x 8
    corners), for tables of 2^size 8-byte rows."""
    print(f"\nceilings: 128 random accesses per point, N = {n:,} (no hashing, no interpolation)")
    for log2_rows in sizes:  # default: 32 MiB (fits L2), 64 MiB (about the 48.8 MB table), 256 MiB (DRAM)
        tab = torch.randint(0, 2**30, (2**log2_rows,), device=DEV, dtype=torch.int64)
        out = torch.empty(n, device=DEV)
        acc = torch.zeros(2**log2_rows, 2, device=DEV)
        acc16 = torch.zeros(2**log2_rows, 2, device=DEV, dtype=torch.float16)
        g_ms = bench(_probe(tab, out, 2**log2_rows - 1, n, 0))
        r_ms = bench(_probe(tab, acc, 2**log2_rows - 1, n, 1))
        h_ms = bench(_probe(tab, acc16, 2**log2_rows - 1, n, 2))
        k = n * 128
        print(f"  table {8 * 2**log2_rows / 2**20:5.0f} MiB: gathers {g_ms:.3f} ms = {k / g_ms / 1e6:6.1f} G/s; "
              f"v2.f32 reductions {r_ms:.3f} ms = {k / r_ms / 1e6:6.1f} G/s; "
              f"f16x2 reductions {h_ms:.3f} ms = {k / h_ms / 1e6:6.1f} G/s", flush=True)


def kernel_table(n: int, sweep: bool) -> None:
    from . import hashgrid_triton as H

    enc = HashGridEncoding(FULL).to(DEV)
    with torch.no_grad():
        enc.embeddings.normal_(0, 0.1)
    meta = H.LevelMeta.from_encoding(enc, torch.device(DEV))
    tab = enc.embeddings.detach()
    x = torch.rand(n, 3, device=DEV)
    g = torch.randn(n, 32, device=DEV)
    g2 = torch.randn(n, 32, device=DEV)
    u = torch.randn(n, 3, device=DEV)
    out = torch.empty(n, 32, device=DEV)
    jac = torch.empty(16, 3, n, 2, device=DEV)
    gx = torch.empty(n, 3, device=DEV)
    gt = torch.zeros_like(tab)
    dg = torch.empty(n, 32, device=DEV)

    def scalar_atomics(fn: Callable[[], object]) -> Callable[[], object]:
        def run() -> object:
            old, H.VEC_RED = H.VEC_RED, False
            try:
                return fn()
            finally:
                H.VEC_RED = old
        return run

    bwd_t = lambda: H.encode_backward(g, x, tab, meta, 16, False, True, grad_table=gt)  # noqa: E731
    fused = lambda: H.encode_backward(g, x, tab, meta, 16, False, True, grad_table=gt, u=u, g2=g2)  # noqa: E731
    cases = {
        "fwd": lambda: H.encode(x, tab, meta, 16, out=out),
        "fwd + jacobian": lambda: H.encode(x, tab, meta, 16, out=out, jac=jac),
        "jac^T g": lambda: H.jac_t_vec(jac, g, 16, out=gx),
        "jac u": lambda: H.jac_vec(jac, u, 16, out=dg),
        "bwd table (v2 red)": bwd_t,
        "bwd table (scalar atomics)": scalar_atomics(bwd_t),
        "bwd table + eikonal (fused)": fused,
        "bwd table + eikonal, scalar": scalar_atomics(fused),
        "bwd2 d/dtable (v2 red)": lambda: H.encode_backward2(u, g, x, tab, meta, 16, False, True, grad_table=gt),
        "bwd grad_x (gather)": lambda: H.encode_backward(g, x, tab, meta, 16, True, False, grad_x=gx),
        "bwd2 d/dg (gather)": lambda: H.encode_backward2(u, g, x, tab, meta, 16, True, False, grad_g=dg),
    }
    shapes = [(H.BLOCK, H.NUM_WARPS)]
    if sweep:
        shapes = [(256, 4), (512, 4), (512, 8)]
    default = (H.BLOCK, H.NUM_WARPS)
    print(f"\nkernels, N = {n:,} points, 16 levels x 2 features, 2^19 table (median ms; M points/s)")
    print(f"{'kernel':28s}" + "".join(f"  B{b:<4d}w{w:<2d}" for b, w in shapes))
    results: dict[str, list[float]] = {}
    for name, fn in cases.items():
        row = []
        for b, w in shapes:
            H.BLOCK, H.NUM_WARPS = b, w
            try:
                row.append(bench(fn))
            except Exception as exc:  # noqa: BLE001 - report and go on
                print(f"  {name} B{b} w{w}: {type(exc).__name__}: {exc}")
                row.append(float("nan"))
        results[name] = row
        print(f"{name:28s}" + "".join(f"  {ms:8.4f}ms" for ms in row), flush=True)
    H.BLOCK, H.NUM_WARPS = default
    print("rates at the default shape:")
    for name, row in results.items():
        ms = row[shapes.index(default)] if default in shapes else row[0]
        print(f"  {name:28s} {ms:8.4f} ms  {n / (ms * 1e-3) / 1e6:10.1f} M points/s")


def make_field(path: str, mode: str = "jac", fuse: bool = True) -> NeuSField:
    torch.manual_seed(0)
    field = NeuSField(FieldConfig(grid=FULL, sdf_hidden=64, sdf_layers=1, background="none")).to(DEV)
    os.environ["NEUSBLEND_HASHGRID_MODE"] = mode
    os.environ["NEUSBLEND_HASHGRID_FUSE"] = "1" if fuse else "0"
    if path != "reference":
        use_fast_path(field, path)
    return field


def step_fn(field: NeuSField, n: int, inputs_only: bool, fused_adam: bool = False) -> Callable[[], None]:
    opt = torch.optim.Adam(field.parameters(), lr=1e-3, fused=fused_adam or None)
    params = list(field.parameters())

    def step() -> None:
        x = torch.rand(n, 3, device=DEV) * 1.6 - 0.8
        d = torch.nn.functional.normalize(torch.randn(n, 3, device=DEV), dim=-1)
        sdf, feat, grad = field.sdf_with_gradient(x, create_graph=True)
        nrm = grad / grad.norm(dim=-1, keepdim=True).clamp_min(1e-6)
        rgb = field.color(x, nrm, d, feat)
        loss = rgb.mean() + sdf.abs().mean() + 0.1 * ((grad.norm(dim=-1) - 1) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward(inputs=params if inputs_only else None)
        opt.step()

    return step


def rates(n: int, with_reference: bool) -> None:
    print(f"\nrates, N = {n:,} points (M samples/s; median of timed repeats)")
    variants = ([("reference", "jac", True)] if with_reference else []) + [
        ("triton", "jac", True), ("triton", "gather", True), ("triton", "jac", False)]
    x = torch.rand(n, 3, device=DEV) * 1.6 - 0.8
    base = {}
    for path, mode, fuse in variants:
        field = make_field(path, mode, fuse)
        label = path if path == "reference" else f"triton/{mode}" + ("" if fuse else "/unfused")
        with torch.no_grad():
            enc_ms = bench(lambda f=field: f.encoding((x + 1) * 0.5), 100 if path == "reference" else 300)
            fwd_ms = bench(lambda f=field: f.sdf(x), 100 if path == "reference" else 300)
        rows = [("encoding forward", enc_ms), ("field forward (sdf)", fwd_ms)]
        extra = [(True, False)] if path == "reference" or not fuse else [(True, False), (False, True), (True, True)]
        for inputs_only, fused_adam in [(False, False)] + extra:
            step = step_fn(field, n, inputs_only, fused_adam)
            ms = bench(step, 300 if path == "reference" else 600)
            what = "field step" + (" backward(inputs=params)" if inputs_only else "") + (
                " Adam(fused)" if fused_adam else "")
            rows.append((what, ms))
        for what, ms in rows:
            rate = n / (ms * 1e-3) / 1e6
            if path == "reference":
                base[what] = rate
            if what in base:
                ratio = f"{rate / base[what]:7.1f}x"
            else:
                ratio = f"{rate / base['field step']:7.1f}x*" if "field step" in base else "      -"
            print(f"  {label:22s} {what:46s} {ms:9.3f} ms {rate:9.2f} M/s {ratio}", flush=True)
        del field
        torch.cuda.empty_cache()
    print("  (x: vs the reference's same row; x*: vs the reference's plain field step)")


def host_and_graph(n: int) -> None:
    """Host time to enqueue one triton/jac step vs its wall time, and the step replayed as one CUDA graph."""
    import time as _time

    field = make_field("triton", "jac")
    step = step_fn(field, n, False)
    host, wall = [], []
    for it in range(25):
        torch.cuda.synchronize()
        t0 = _time.perf_counter()
        step()
        t1 = _time.perf_counter()
        torch.cuda.synchronize()
        t2 = _time.perf_counter()
        if it >= 5:
            host.append(t1 - t0)
            wall.append(t2 - t0)
    host.sort()
    wall.sort()
    print(f"\ntriton/jac field step, N = {n:,}: host enqueue {host[10] * 1e3:.3f} ms, wall (with sync) "
          f"{wall[10] * 1e3:.3f} ms (medians)")
    try:
        params = list(field.parameters())
        opt = torch.optim.Adam(params, lr=1e-3, capturable=True)

        def body() -> None:
            x = torch.rand(n, 3, device=DEV) * 1.6 - 0.8
            d = torch.nn.functional.normalize(torch.randn(n, 3, device=DEV), dim=-1)
            sdf, feat, grad = field.sdf_with_gradient(x, create_graph=True)
            nrm = grad / grad.norm(dim=-1, keepdim=True).clamp_min(1e-6)
            rgb = field.color(x, nrm, d, feat)
            loss = rgb.mean() + sdf.abs().mean() + 0.1 * ((grad.norm(dim=-1) - 1) ** 2).mean()
            loss.backward(inputs=params)
            opt.step()

        from ..step import capture_graph

        graph, _ = capture_graph(body, opt, warmup=3)
        ms = bench(graph.replay, 600)
        print(f"triton/jac field step as one CUDA graph (Adam capturable, backward(inputs=params)): {ms:.3f} ms "
              f"= {n / (ms * 1e-3) / 1e6:.2f} M samples/s")
    except Exception as exc:  # noqa: BLE001 - an experiment for the lead: report and go on
        print(f"CUDA graph capture failed: {type(exc).__name__}: {exc}")


def phases(n: int, mode: str) -> None:
    """Time of each phase of a Triton field step, by CUDA events (median of 20 steps)."""
    field = make_field("triton", mode)
    opt = torch.optim.Adam(field.parameters(), lr=1e-3)
    names = ["inputs", "geometry fwd", "eikonal grad (create_graph)", "colour + loss", "backward", "adam"]
    times: dict[str, list[float]] = defaultdict(list)
    for it in range(30):
        ev = [torch.cuda.Event(enable_timing=True) for _ in range(len(names) + 1)]
        ev[0].record()
        x = torch.rand(n, 3, device=DEV) * 1.6 - 0.8
        d = torch.nn.functional.normalize(torch.randn(n, 3, device=DEV), dim=-1)
        ev[1].record()
        with torch.enable_grad():
            xx = x.detach().requires_grad_(True)
            sdf, feat = field.geometry(xx)
            ev[2].record()
            (grad,) = torch.autograd.grad(sdf.sum(), xx, create_graph=True)
        ev[3].record()
        nrm = grad / grad.norm(dim=-1, keepdim=True).clamp_min(1e-6)
        rgb = field.color(x, nrm, d, feat)
        loss = rgb.mean() + sdf.abs().mean() + 0.1 * ((grad.norm(dim=-1) - 1) ** 2).mean()
        ev[4].record()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        ev[5].record()
        opt.step()
        ev[6].record()
        torch.cuda.synchronize()
        if it >= 10:
            for i, name in enumerate(names):
                times[name].append(ev[i].elapsed_time(ev[i + 1]))
    total = sum(sorted(v)[len(v) // 2] for v in times.values())
    print(f"\nphases of a triton/{mode} field step, N = {n:,} (median ms of 20 steps; total {total:.3f} ms)")
    for name in names:
        v = sorted(times[name])[len(times[name]) // 2]
        print(f"  {name:30s} {v:8.3f} ms  {100 * v / total:5.1f}%")


def profile(n: int, mode: str) -> None:
    """Device time by kernel over 10 field steps (torch.profiler), grouped: hash-grid kernels vs the rest."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as tprofile

    field = make_field("triton", mode)
    step = step_fn(field, n, False)
    for _ in range(5):
        step()
    torch.cuda.synchronize()
    with tprofile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(10):
            step()
        torch.cuda.synchronize()
    per: dict[str, float] = defaultdict(float)
    count: dict[str, int] = defaultdict(int)
    for e in prof.events():
        if e.device_type == DeviceType.CUDA:
            per[e.name] += e.time_range.elapsed_us() / 10
            count[e.name] += 1

    def group(name: str) -> str:
        if any(k in name for k in ("_fwd_kernel", "_bwd_kernel", "_bwd2_kernel", "_jac_t_kernel", "_jac_u_kernel")):
            return "hash grid (triton)"
        if any(k in name.lower() for k in ("gemm", "cutlass", "sm90_xmma", "gemv", "cublas", "nvjet")):
            return "MLP matrix products (cuBLAS)"
        if any(k in name.lower() for k in ("adam", "multi_tensor", "foreach")):
            return "optimiser"
        if "reduce" in name.lower():
            return "reductions"
        if "fill" in name.lower() or "zero" in name.lower():
            return "fills"
        return "elementwise (activations, their derivatives, losses)"

    groups: dict[str, float] = defaultdict(float)
    for k, v in per.items():
        groups[group(k)] += v
    total = sum(per.values())
    print(f"\ndevice time per triton/{mode} field step by kernel group, N = {n:,} (total {total / 1e3:.3f} ms)")
    for k, v in sorted(groups.items(), key=lambda kv: -kv[1]):
        print(f"  {k:55s} {v / 1e3:8.3f} ms  {100 * v / total:5.1f}%")
    print("top kernels:")
    for k, v in sorted(per.items(), key=lambda kv: -kv[1])[:25]:
        print(f"  {v / 1e3:8.3f} ms  x{count[k] // 10:<3d} {k[:110]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=2**18)
    ap.add_argument("--sweep", action="store_true", help="time each kernel for several block shapes")
    ap.add_argument("--profile", action="store_true", help="split a field step's device time by kernel")
    ap.add_argument("--no-reference", action="store_true", help="skip the (slow) reference rates")
    ap.add_argument("--device", default="cuda")
    args = ap.parse_args()

    global DEV
    DEV = args.device
    if DEV != "cuda":  # smoke test of this script: no CUDA clocks
        torch.cuda.get_device_name = lambda *a: "cpu (interpreter)"
        torch.cuda.synchronize = lambda *a: None
        torch.cuda.empty_cache = lambda *a: None

        class _Event:
            def __init__(self, **kw: object) -> None:
                self.t = 0.0

            def record(self) -> None:
                self.t = time.perf_counter()

            def elapsed_time(self, other: _Event) -> float:
                return (other.t - self.t) * 1e3

        torch.cuda.Event = _Event

    t0 = time.time()
    print(f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}, triton {triton.__version__}")
    if DEV == "cuda":
        print(f"copy bandwidth (read + write): {copy_bandwidth() / 1e12:.2f} TB/s")
    if DEV == "cuda":
        try:
            ceilings(args.points)
        except Exception as exc:  # noqa: BLE001 - report and go on
            print(f"ceilings failed: {type(exc).__name__}: {exc}")
    kernel_table(args.points, args.sweep)
    rates(args.points, not args.no_reference)
    if DEV == "cuda":
        host_and_graph(args.points)
    phases(args.points, "jac")
    if args.profile:
        for mode in ("jac", "gather"):
            try:
                profile(args.points, mode)
            except Exception as exc:  # noqa: BLE001 - the profiler is a nice-to-have
                print(f"profiler failed: {type(exc).__name__}: {exc}")
    print(f"\n(bench took {time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
