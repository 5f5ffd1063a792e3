"""Mesh extraction speed: the reference path (blocks, PyMCubes on the CPU) vs the fast path (PyTorch on the GPU).

    python bench/extract_speed.py --checkpoint JOB [--resolutions 256,512,1024] [--methods reference,fast]
        [--device cuda] [--repeat 3] [--json OUT.json] [--write]

Both paths run ``backend.extract.extract_mesh`` (no vertex colours) on the same field in one process: the field of
a training checkpoint (``--checkpoint``, a job folder or ``.pt``), or without one the real ``NeuSField`` of the
``default`` preset, sphere-initialised, with random hash-grid features switched on so the surface is bumpy. The
box is the checkpoint's region of interest (or the unit cube). Times are wall-clock seconds from the call to the
mesh in host memory, after one warm-up extraction at the lowest resolution; the fast path's figure is the median of
``--repeat`` calls. For each resolution it also reports how far the two meshes are apart (largest distance from a
vertex of one to the nearest vertex of the other, in voxels). ``--write`` appends a section to docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.throughput import commit, device_name  # noqa: E402

SECTION = "## Mesh extraction speed"


def load_field(checkpoint: str | None, device: str) -> tuple[Any, np.ndarray, str]:
    """(field, (2, 3) normalized-frame box, description) from a checkpoint, or a random-init NeuSField."""
    import torch

    from backend.checkpoint import field_from_checkpoint

    if checkpoint:
        from backend.checkpoint import load_checkpoint
        from backend.protocol import JobLayout

        path = Path(checkpoint)
        if path.is_dir():
            path = JobLayout(path).last_checkpoint
        ckpt = load_checkpoint(path)
        field, _ = field_from_checkpoint(ckpt, device)
        roi = ckpt.get("roi")
        box = np.array([[-1.0] * 3, [1.0] * 3]) if roi is None else np.asarray(roi, dtype=np.float64)
        return field, box, f"trained field, {path} (step {int(ckpt['step'])})"
    from backend.config import load_preset
    from backend.field import FieldConfig, HashGridConfig, NeuSField
    from backend.kernels import select_path, use_fast_path

    cfg = load_preset("default")
    torch.manual_seed(0)
    grid = HashGridConfig(n_levels=cfg.n_levels, n_features=cfg.n_features, log2_table_size=cfg.log2_table_size,
                          base_resolution=cfg.base_resolution, finest_resolution=cfg.finest_resolution)
    field = NeuSField(FieldConfig(grid=grid, sdf_hidden=cfg.sdf_hidden, sdf_layers=cfg.sdf_layers,
                                  feature_dim=cfg.feature_dim, color_hidden=cfg.color_hidden,
                                  color_layers=cfg.color_layers, activation=cfg.activation,
                                  sphere_init_radius=cfg.sphere_init_radius))
    with torch.no_grad():
        field.encoding.embeddings.normal_(0.0, 0.3)
        field.sdf_layers[0].weight[:, 3:].normal_(0.0, 0.02)
    field = field.to(device)
    path = select_path(device, field)
    if path != "reference":
        use_fast_path(field, path)
    return field, np.array([[-1.0] * 3, [1.0] * 3]), "NeuSField (preset default), sphere init + random grid features"


def extract(field: Any, box: np.ndarray, res: int, device: str,  # noqa: ANN401
            method: str) -> tuple[float, np.ndarray, np.ndarray, float]:
    """(seconds, vertices (V, 3), faces (F, 3), peak GPU memory in GiB above the resident field) of one extraction."""
    import torch

    from backend.extract import Frame, extract_mesh

    base = 0
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    t0 = time.perf_counter()
    v, f, _ = extract_mesh(field, Frame(np.eye(4)), res, box=box, device=device, colors=False, method=method)
    peak = 0.0
    if device == "cuda":
        torch.cuda.synchronize()
        peak = (torch.cuda.max_memory_allocated() - base) / 2**30
    return time.perf_counter() - t0, v, f, peak


def mesh_gap(va: np.ndarray, vb: np.ndarray) -> float:
    """Largest distance from a vertex of either mesh to the other's nearest vertex."""
    from scipy.spatial import cKDTree

    if len(va) == 0 or len(vb) == 0:
        return float("inf") if len(va) != len(vb) else 0.0
    return float(max(cKDTree(vb).query(va)[0].max(), cKDTree(va).query(vb)[0].max()))


def watertight(f: np.ndarray) -> bool:
    """Every undirected edge used by exactly two faces."""
    e = np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]).astype(np.int64), 1)
    key = e[:, 0] * (int(f.max()) + 1) + e[:, 1] if len(f) else e[:, 0]
    return bool(len(f)) and bool(np.all(np.unique(key, return_counts=True)[1] == 2))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", help="job folder or checkpoint .pt (default: a random-init NeuSField)")
    ap.add_argument("--resolutions", default="256,512,1024")
    ap.add_argument("--methods", default="reference,fast")
    ap.add_argument("--max-reference", type=int, default=1024, help="skip the reference above this resolution")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--repeat", type=int, default=3, help="fast-path calls per resolution (median)")
    ap.add_argument("--json", help="write the rows as JSON here (after every measurement)")
    ap.add_argument("--write", action="store_true", help="append a section to docs/BENCHMARKS.md")
    args = ap.parse_args(argv)
    import torch

    field, box, what = load_field(args.checkpoint, args.device)
    field.eval()
    resolutions = [int(r) for r in args.resolutions.split(",")]
    methods = args.methods.split(",")
    for m in methods:  # warm-up: kernels, the case table, allocator
        extract(field, box, min(resolutions), args.device, m)
    print(f"field: {what}", flush=True)
    rows: list[dict[str, Any]] = []
    for res in resolutions:
        row: dict[str, Any] = {"resolution": res}
        meshes = {}
        for m in methods:
            if m == "reference" and res > args.max_reference:
                continue
            times = []
            for _ in range(args.repeat if m == "fast" else 1):
                dt, v, f, peak = extract(field, box, res, args.device, m)
                times.append(dt)
            meshes[m] = v
            row[m] = {"s": statistics.median(times), "times": times, "vertices": len(v), "faces": len(f),
                      "peak_gib": peak, "watertight": watertight(f)}
            print(f"{res}^3 {m}: {row[m]['s']:.3f} s, {len(v)} vertices, {len(f)} faces, peak GPU memory "
                  f"{peak:.2f} GiB, watertight {row[m]['watertight']}", flush=True)
        if "reference" in meshes and "fast" in meshes:
            voxel = float((box[1] - box[0]).max() / (res - 1))
            row["gap_voxels"] = mesh_gap(meshes["reference"], meshes["fast"]) / voxel
            row["speedup"] = row["reference"]["s"] / row["fast"]["s"]
        rows.append(row)
        if args.json:
            Path(args.json).write_text(json.dumps({"rows": rows, "field": what}, indent=1))
    dev = device_name(args.device)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"### Extraction, {dev}, commit {commit()}, {stamp}", "",
             f"Field: {what}; torch {torch.__version__}; no vertex colours; fast path: median of {args.repeat}.", "",
             "| resolution | reference s | fast s | fast vs reference | vertices (reference / fast) | faces (fast) "
             "| largest vertex gap | watertight (reference / fast) | fast peak GPU memory |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ref, fast = r.get("reference"), r.get("fast")
        lines.append(
            f"| {r['resolution']}^3 | {ref['s']:.2f} |" if ref else f"| {r['resolution']}^3 | - |")
        lines[-1] += f" {fast['s']:.3f} |" if fast else " - |"
        lines[-1] += f" {r['speedup']:.1f}x |" if "speedup" in r else " - |"
        lines[-1] += (f" {ref['vertices'] if ref else '-'} / {fast['vertices'] if fast else '-'} |"
                      f" {fast['faces'] if fast else '-'} |")
        lines[-1] += f" {r['gap_voxels']:.1e} voxel |" if "gap_voxels" in r else " - |"
        lines[-1] += (f" {'yes' if ref and ref['watertight'] else 'no' if ref else '-'} /"
                      f" {'yes' if fast and fast['watertight'] else 'no' if fast else '-'} |")
        lines[-1] += f" {fast['peak_gib']:.2f} GiB |" if fast else " - |"
    table = "\n".join(lines) + "\n"
    print("\n" + table)
    if args.write:
        doc_path = ROOT / "docs" / "BENCHMARKS.md"
        doc = doc_path.read_text(encoding="utf-8") if doc_path.exists() else "# Benchmarks\n"
        if SECTION not in doc:
            doc = (doc.rstrip("\n") + f"\n\n{SECTION}\n\nWritten by `python bench/extract_speed.py --write` (newest "
                   "run last): `extract_mesh` through the reference path (blocks of 128^3, SDF on the device, "
                   "PyMCubes on the CPU, weld) and the fast path (`backend/meshing/torch_mc.py`: marching cubes in "
                   "PyTorch over the surface cells only), same field, same process.\n")
        doc_path.write_text(doc.rstrip("\n") + "\n\n" + table, encoding="utf-8")
        print(f"appended to {doc_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
