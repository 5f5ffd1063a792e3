"""Time from a posed capture to the final mesh, and the quality reached, for each compute path.

Runs ``python -m backend train`` (the real CLI, a fresh process per run) on DTU scan 65 (with masks, or without them
given ``-- --no-masks``), holding out every 8th view, at equal steps for every path, and reads the ``done`` message:
wall-clock time to the final mesh (loading, training, final extraction and, without masks, its clean-up), training
time, held-out PSNR (over the whole image without masks) and mask IoU; and the final mesh's shell fraction against the
job's region (:func:`backend.evaluate.shell_fraction`: near 0 for an object, near 1 for a shell of background).

Usage: ``python bench/time_to_mesh.py [--data DIR] [--steps 2000,5000,20000] [--paths triton,reference]
[--preset NAME] [--warmup 300] [--json FILE] [--write] [-- more train arguments]``

Before the timed runs, an untimed run per path of ``--warmup`` steps with the same arguments (final mesh at 128^3)
fills the Triton kernel cache: a cold cache adds the kernels' compilation (several seconds, more for a configuration
whose kernels differ, such as another ``precision``) to the first timed run. ``--warmup 0`` times a cold first run (the
default without CUDA).

``--json`` appends one line per finished run (so a run cut short keeps what it finished), with the median rays and
marched samples a step over the second half of training; ``--write`` adds the table at the end of the "Time to mesh"
section of ``docs/BENCHMARKS.md``. Each run's messages are kept as ``WORK/PATH_STEPS.messages.jsonl``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from bench import shared_data  # noqa: E402
from bench.throughput import commit, device_name  # noqa: E402


def run_once(data: Path, job: Path, steps: int, path: str, preset: str, extra: list[str]) -> dict:
    env = {**os.environ, "NEUSBLEND_PATH": path, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "backend", "train", "--data", str(data), "--out", str(job), "--preset", preset,
           "--steps", str(steps), "--holdout-every", "8", "--mesh-every", "0", "--json", *extra]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = proc.communicate()
    finally:  # interrupted (Ctrl-C, SIGTERM): the training process goes too
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    wall = time.perf_counter() - t0
    msgs = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not msgs or msgs[-1]["type"] != "done":
        sys.stderr.write(stderr[-4000:])
        raise SystemExit(f"training failed with {proc.returncode}: {msgs[-1] if msgs else 'no output'}")
    start = next(m for m in msgs if m["type"] == "start")
    progress = [m for m in msgs if m["type"] == "progress"][1:]
    rates = [m["samples_per_s"] for m in progress]
    late = progress[len(progress) // 2:]  # the second half of training: rays per step once the surface is sharp
    job.parent.mkdir(parents=True, exist_ok=True)
    (job.parent / f"{job.name}.messages.jsonl").write_text(stdout)
    done = msgs[-1]
    return {"path": start["path"], "preset": preset, "steps": steps, "wall_s": wall, "shell": shell_of(job),
            "masks": bool(start["dataset"].get("has_masks")),
            "train_s": done["metrics"]["train_time_s"], "mesh_s": done["metrics"]["mesh_ready_s"],
            "setup_s": done["metrics"].get("setup_s"), "eval_s": done["metrics"].get("eval_s"),
            "psnr": done["metrics"].get("holdout_psnr"), "iou": done["metrics"].get("holdout_mask_iou"),
            "samples_per_s": sorted(rates)[len(rates) // 2] if rates else None, "faces": done["n_faces"],
            "rays_late": sorted(m["rays"] for m in late)[len(late) // 2] if late else None,
            "marched_late": sorted(m.get("marched", 0) for m in late)[len(late) // 2] if late else None,
            "device": start["device"]}


def shell_fraction_of(job: Path) -> float:
    """The final mesh's shell fraction against the job's own region (its unit sphere and box): the share of
    directions from the region's centre in which the mesh has surface near the region's boundary."""
    from backend.evaluate import read_mesh, read_region, shell_fraction

    mesh = read_mesh(job / "meshes" / "final.npz")
    return shell_fraction(mesh["vertices"], mesh["faces"], read_region(job))


def shell_of(job: Path) -> float | None:
    """:func:`shell_fraction_of`, or None (with the reason on stderr) when it cannot be measured."""
    try:
        return shell_fraction_of(job)
    except Exception as exc:  # noqa: BLE001 - a benchmark row without this column is still a row
        print(f"shell fraction of {job}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return None


def insert_in_section(text: str, heading: str, block: str) -> str:
    """``text`` with ``block`` added at the end of the section under ``heading`` (the section made if missing)."""
    if heading not in text:
        return text.rstrip("\n") + f"\n\n{heading}\n\nFigures from `python bench/time_to_mesh.py --write`.\n\n" + block
    start = text.index(heading) + len(heading)
    nxt = text.find("\n## ", start)
    end = len(text) if nxt < 0 else nxt + 1
    return text[:end].rstrip("\n") + "\n\n" + block + ("\n" + text[end:] if nxt >= 0 else "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(shared_data("dtu_scan65")))
    ap.add_argument("--steps", default="2000")
    ap.add_argument("--paths", default="triton,reference")
    ap.add_argument("--preset", default="default")
    ap.add_argument("--work", default="/tmp/neusblend_time_to_mesh")
    ap.add_argument("--warmup", type=int,
                    help="untimed steps per path before its timed runs, with the same arguments (0: none; default "
                    "300 with CUDA, 0 without: the CPU compiles no kernels)")
    ap.add_argument("--json", help="append each finished run to this file as one JSON line")
    ap.add_argument("--write", action="store_true")
    ap.add_argument("extra", nargs="*", help="more train arguments after --")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that run_once's cleanup runs
    rows = []
    sha = commit()
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    warmup = args.warmup if args.warmup is not None else (300 if dev == "cuda" else 0)
    paths = args.paths.split(",")
    for path in paths if warmup > 0 else []:
        run_once(Path(args.data), Path(args.work) / f"warmup_{path}", warmup, path, args.preset,
                 [*args.extra, "--final-resolution", "128"])
    for steps in [int(s) for s in args.steps.split(",")]:
        for path in paths:
            r = run_once(Path(args.data), Path(args.work) / f"{path}_{steps}", steps, path, args.preset, args.extra)
            r.update(commit=sha, date=datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"))
            rows.append(r)
            print(json.dumps(r), flush=True)
            if args.json:
                with open(args.json, "a") as f:
                    f.write(json.dumps(r) + "\n")
    stamp = rows[-1]["date"]
    masks = "masks" if rows[-1]["masks"] else "without masks"
    lines = [f"### Time to mesh, {Path(args.data).name} ({masks}, every 8th view held out), {device_name(dev)}", "",
             f"commit {sha}, {stamp}, preset {args.preset}" + (f", `{' '.join(args.extra)}`" if args.extra else ""), "",
             "| path | steps | load to final mesh | training | process wall | median samples/s | held-out PSNR "
             "| mask IoU | shell fraction |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        iou = f"{r['iou']:.3f}" if r["iou"] is not None else "-"
        shell = f"{100 * r['shell']:.1f} %" if r["shell"] is not None else "-"
        lines.append(f"| {r['path']} | {r['steps']} | {r['mesh_s']:.1f} s | {r['train_s']:.1f} s | "
                     f"{r['wall_s']:.1f} s | "
                     f"{(r['samples_per_s'] or 0) / 1e6:.1f} M | {r['psnr']:.2f} dB | {iou} | {shell} |")
    table = "\n".join(lines) + "\n"
    print("\n" + table)
    if args.write:
        bench = ROOT / "docs" / "BENCHMARKS.md"
        text = bench.read_text() if bench.exists() else "# Benchmarks\n"
        bench.write_text(insert_in_section(text, "## Time to mesh", table))


if __name__ == "__main__":
    main()
