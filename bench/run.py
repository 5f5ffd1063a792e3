"""Reconstruction-quality benchmarks: capture -> train -> extract -> eval, through the command lines.

    python bench/run.py bunny [--device cpu|cuda] [--steps N] [--write]
    python bench/run.py dtu65 --device cuda --write
    python bench/run.py bunny --device cuda --capture CAPTURE --paths triton,reference --steps 5000 --write
    python bench/run.py --list

Each benchmark runs the real commands as subprocesses (``scripts/render_capture.py``, ``python -m backend train``,
``extract``, ``eval``, all with ``--json``), prints one table row and, with ``--write``, appends it to the
"Reconstruction quality" table of docs/BENCHMARKS.md with the device, the commit and the date.

- ``bunny``, ``spot``: the mesh from ../shared/data/meshes, normalized (bounding radius 1) and rendered DTU-like
  (49 views on a 65-degree cap above it, masks); every 8th view held out. Chamfer, F-score and normal consistency of
  the extracted mesh against the ground truth, and PSNR / SSIM / mask IoU of the held-out views.
- ``suzanne``: the same with Blender's built-in monkey (needs no data folder).
- ``dtu65``: DTU scan 65 (../shared/data/dtu_scan65), every 8th view held out: PSNR / SSIM / mask IoU (no reference
  mesh here).
- ``bunny-room``, ``suzanne-room``: the object on a textured table in a textured room (``render_capture.py
  --background room``, 72 DTU-like views, 4:3), trained twice with the same settings: with ``--masks
  CAPTURE/eval_masks`` and with nothing (no masks, no region). Each mesh is cropped to ``region.json`` and scored
  (the unmasked one against ``gt_region.ply``, the masked one against ``gt_mesh.ply``), with the shell fraction
  against the region box and against the job's own region, the trainer's held-out PSNR, and the ratio of the two
  runs' Chamfer; the rows go to "Captures with a background (room)". A tiny CPU run: ``--steps 50 --size 64
  --views 12 --resolution 64``.

With ``--paths`` (e.g. ``triton,reference``) the same capture is trained once per compute path (``NEUSBLEND_PATH``)
at equal steps and evaluated the same way; those rows go to the "Fast path vs reference at equal steps" table.
``--capture DIR`` takes an already rendered capture (e.g. rendered on a machine with Blender, then copied to one
with a GPU that has no ``bpy``) instead of rendering one.

Defaults by device: CPU: preset ``preview``, 400 steps, 200 px images, marching cubes at 256; CUDA: preset
``default`` (10000 steps), 400 px synthetic captures (room captures 400 x 300) and full-size DTU images, marching
cubes at 512. Cycles samples: 16, 8 (denoised) in a room. Captures are
rendered on the CPU (Cycles) and kept in the work folder, so a second run with the same settings reuses them.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from backend import protocol  # noqa: E402
from bench.gitinfo import commit  # noqa: E402

SECTION = "## Reconstruction quality"
TABLE_HEADER = ("| benchmark | date | commit | device | preset | steps | px | capture s | train s | Chamfer "
                "| Chamfer / r | F-score | NC | PSNR | SSIM | mask IoU |\n"
                "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
SECTION_TEXT = f"""{SECTION}

Written by `python bench/run.py NAME --write` (newest run last). Chamfer: mean of accuracy (extracted mesh to ground
truth) and completeness (ground truth to mesh), from 100k points sampled on each, in scene units (the synthetic
objects are normalized to bounding radius r = 1: half their bounding-box diagonal) and over r. F-score at 1 % of
the ground truth's bounding-box diagonal. NC: normal consistency (mean |cos| of nearest neighbours' normals).
PSNR (whole image, background black), SSIM and mask IoU (opacity > 0.5) on every 8th view, held out from
training. px: image size (longer side) for training. Times are wall-clock seconds on the machine named.

{TABLE_HEADER}
"""

PATHS_SECTION = "## Fast path vs reference at equal steps"
PATHS_HEADER = ("| benchmark | date | commit | device | path | preset | steps | px | train s | Chamfer | Chamfer / r "
                "| F-score | NC | PSNR | SSIM | mask IoU |\n"
                "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
PATHS_TEXT = f"""{PATHS_SECTION}

Written by `python bench/run.py NAME --paths triton,reference --write` (newest run last): one capture, trained once
per compute path (`NEUSBLEND_PATH`) with the same preset, steps and seed, extracted and evaluated the same way as in
"Reconstruction quality". train s: wall-clock training time reported by the backend (loading and extraction not
included).

{PATHS_HEADER}
"""


@dataclass(frozen=True)
class Benchmark:
    """A named benchmark: a mesh to capture (``mesh`` under the data folder, or a ``builtin``), or a real capture."""

    description: str
    mesh: str | None = None
    builtin: str | None = None
    capture: str | None = None
    layout: str = "dtu"
    views: int = 49
    up: str = "y"
    backdrop: str = "none"

    @property
    def synthetic(self) -> bool:
        return self.capture is None


BENCHMARKS: dict[str, Benchmark] = {
    "bunny": Benchmark("Stanford bunny, DTU-like capture", mesh="meshes/stanford-bunny.obj"),
    "spot": Benchmark("Spot, DTU-like capture", mesh="meshes/spot.obj"),
    "suzanne": Benchmark("Blender's Suzanne (built in), DTU-like capture", builtin="suzanne"),
    "dtu65": Benchmark("DTU scan 65, held-out views", capture="dtu_scan65"),
    "bunny-room": Benchmark("Stanford bunny on a table in a textured room: trained with and without masks",
                            mesh="meshes/stanford-bunny.obj", views=72, backdrop="room"),
    "suzanne-room": Benchmark("Suzanne (built in) on a table in a textured room: with and without masks",
                              builtin="suzanne", views=72, backdrop="room"),
}


def data_dir() -> Path:
    env = os.environ.get("NEUSBLEND_DATA")
    return Path(env) if env else ROOT.parent / "shared" / "data"


def run_json(cmd: list[str], log_path: Path, label: str, env: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Run a backend command with ``--json``; its messages (stderr goes to ``log_path``). Prints progress."""
    print(f"[{label}] {' '.join(cmd)}", file=sys.stderr, flush=True)
    msgs: list[dict[str, Any]] = []
    last_print = 0.0
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=log, text=True,
                                stdin=subprocess.DEVNULL, env=env)
        assert proc.stdout is not None
        for line in proc.stdout:
            if not line.strip():
                continue
            try:
                msg = protocol.decode_message(line)
            except protocol.ProtocolError:
                print(f"[{label}] {line.rstrip()}", file=sys.stderr)
                continue
            msgs.append(msg)
            if msg["type"] == "progress" and time.time() - last_print > 30:
                last_print = time.time()
                extra = f" psnr {msg['psnr']:.2f}" if msg.get("psnr") is not None else ""
                print(f"[{label}] step {msg['step']}/{msg['total']}{extra}", file=sys.stderr, flush=True)
            elif msg["type"] == "error":
                print(f"[{label}] ERROR {msg['message']} ({msg.get('hint')})", file=sys.stderr, flush=True)
        code = proc.wait()
    if code != 0 or not msgs or msgs[-1]["type"] != "done":
        raise SystemExit(f"{label} failed (exit {code}); see {log_path}")
    return msgs


def render_capture(bench: Benchmark, out: Path, size: int, samples: int, work: Path, views: int | None = None
                   ) -> float:
    """Render (or reuse) the benchmark's capture; returns the render time in seconds. Room captures are 4:3
    (``size`` wide), the others square."""
    views = views or bench.views
    height = size * 3 // 4 if bench.backdrop == "room" else size
    meta_path = out / "capture.json"
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        s = meta.get("settings", {})
        if (s.get("width") == size and s.get("height") == height and s.get("samples") == samples
                and meta.get("n_views") == views and s.get("backdrop", "none") == bench.backdrop):
            print(f"[capture] reusing {out}", file=sys.stderr)
            return float(meta["render_s"])
    cmd = [sys.executable, str(ROOT / "scripts" / "render_capture.py"), "--layout", bench.layout, "--views",
           str(views), "--size", str(size), str(height), "--samples", str(samples), "--out", str(out), "-q",
           "--background", bench.backdrop]
    if bench.mesh:
        mesh = data_dir() / bench.mesh
        if not mesh.is_file():
            raise SystemExit(f"{mesh} not found (set NEUSBLEND_DATA or put shared/data beside the project)")
        cmd += ["--mesh", str(mesh), "--up", bench.up]
    else:
        cmd += ["--builtin", str(bench.builtin)]
    env = dict(os.environ, BLENDER_USER_RESOURCES=str(work / "blender-user"))
    print(f"[capture] {' '.join(cmd)}", file=sys.stderr, flush=True)
    with open(work / "capture.log", "w") as log:
        code = subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env,
                              stdin=subprocess.DEVNULL).returncode
    if code != 0:
        raise SystemExit(f"capture failed (exit {code}); see {work / 'capture.log'}")
    return float(json.loads(meta_path.read_text())["render_s"])


def _settings(name: str, args: argparse.Namespace) -> tuple[dict[str, Any], bool, str, int, int, Path]:
    """A benchmark's table entry and the run's settings: on CUDA, whether the preset, image size and mesh resolution
    default to the GPU's, and the work folder (made, and said on stderr)."""
    bench = BENCHMARKS[name]
    cuda = args.device == "cuda"
    preset = args.preset or ("default" if cuda else "preview")
    size = args.size or (400 if cuda else 200)
    resolution = args.resolution or (512 if cuda else 256)
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix=f"neusblend-bench-{name}-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"[{name}] work folder {work}", file=sys.stderr, flush=True)
    return bench, cuda, preset, size, resolution, work


def _train_command(py: list[str], data: Path, job: Path, preset: str, max_size: int, args: argparse.Namespace,
                   row: dict[str, Any]) -> list[str]:
    """The benchmark's ``train`` command (no live meshes, every 8th view held out, ``--steps``, ``--seed`` and
    ``--set`` from the arguments; the seed is noted in ``row``)."""
    train = [*py, "train", "--data", str(data), "--out", str(job), "--preset", preset, "--device", args.device,
             "--mesh-every", "0", "--holdout-every", "8", "--max-image-size", str(max_size), "--json"]
    if args.steps:
        train += ["--steps", str(args.steps)]
    if args.seed is not None:
        train += ["--seed", str(args.seed)]
        row["seed"] = args.seed
    for kv in args.set:
        train += ["--set", kv]
    return train


def run_benchmark(name: str, args: argparse.Namespace, path: str | None = None) -> dict[str, Any]:
    """Capture (or reuse), train, extract and evaluate one benchmark; ``path`` sets ``NEUSBLEND_PATH``."""
    bench, cuda, preset, size, resolution, work = _settings(name, args)
    row: dict[str, Any] = {"benchmark": name, "preset": preset, "commit": commit(),
                           "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")}
    py = [sys.executable, "-m", "backend"]
    if bench.synthetic and args.capture:
        data = Path(args.capture)
        meta = json.loads((data / "capture.json").read_text())
        row["capture_s"] = meta.get("render_s")
        size = args.size or int(meta.get("settings", {}).get("width", size))
        max_size = size
    elif bench.synthetic:
        data = work / f"capture_{size}px"
        row["capture_s"] = render_capture(bench, data, size, args.samples or 16, work, args.views)
        max_size = size
    else:
        data = data_dir() / str(bench.capture)
        if not data.is_dir():
            raise SystemExit(f"{data} not found (set NEUSBLEND_DATA or put shared/data beside the project)")
        max_size = args.size or (0 if cuda else 200)
    job = work / (f"job_{preset}_{args.device}" + (f"_{path}" if path else ""))
    env = dict(os.environ, NEUSBLEND_PATH=path) if path else None
    train = _train_command(py, data, job, preset, max_size, args, row)
    t0 = time.perf_counter()
    tag = f"_{path}" if path else ""
    msgs = run_json(train, work / f"train{tag}.log", f"train{tag}", env=env)
    start = next(m for m in msgs if m["type"] == "start")
    done = msgs[-1]
    row.update(device=start.get("device", args.device), steps=done["steps"], path=start.get("path"),
               train_s=done["metrics"].get("train_time_s"), train_wall_s=time.perf_counter() - t0,
               px=start["dataset"]["image_size"][0] if max_size == 0 else max_size)
    if args.device == "cpu":
        row["device"] = f"cpu ({os.cpu_count()} cores)"
    if args.device == "cuda":
        import torch

        name = torch.cuda.get_device_name(0)
        if name not in str(row["device"]):
            row["device"] = f"{row['device']} ({name})"
    ev = [*py, "eval", "--checkpoint", str(job), "--data", str(data), "--holdout-every", "8", "--device",
          args.device, "--out", str(work / f"metrics{tag}.json"), "--json"]
    if bench.synthetic:
        mesh = job / f"extract_{resolution}.ply"
        run_json([*py, "extract", "--checkpoint", str(job), "--resolution", str(resolution), "--out", str(mesh),
                  "--device", args.device, "--no-colors", "--json"], work / f"extract{tag}.log", f"extract{tag}",
                 env=env)
        ev += ["--mesh", str(mesh), "--reference", str(data / "gt_mesh.ply")]
    metrics = run_json(ev, work / f"eval{tag}.log", f"eval{tag}", env=env)[-1]["metrics"]
    row.update({k: v for k, v in metrics.items() if not isinstance(v, (list, dict))})
    row["work"] = str(work)
    return row


ROOM_SECTION = "## Captures with a background (room)"
ROOM_HEADER = ("| benchmark | date | commit | device | run | reference | preset | steps | px | train s | Chamfer / r "
               "| F-score | NC | Chamfer / r (object) | shell | shell (job) | PSNR | unmasked / masked |\n"
               "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
ROOM_TEXT = f"""{ROOM_SECTION}

Written by `python bench/run.py bunny-room --write` (newest runs last): the object on a textured table in a textured
room (`scripts/render_capture.py --background room`: opaque images, masks only in `eval_masks/`), trained twice
with the same preset and steps: `masked` with `train --masks CAPTURE/eval_masks`, `unmasked` with nothing but the
photos and cameras (no masks, no region: the automatic region must find the object). Each extracted mesh is cropped
to the capture's `region.json` (the object's bounding box grown by 0.1 r, reaching below the table top) with the
reference, then scored (`backend eval --region`): the unmasked run against `gt_region.ply` (the object and the table
top inside the box), the masked run against `gt_mesh.ply` (the object alone: its masks exclude the table).
Chamfer / r: mean of accuracy and completeness over the object's bounding radius r; F-score at 1 % of the cropped
reference's bounding-box diagonal; NC: normal consistency. Chamfer / r (object): the same crop scored against
`gt_mesh.ply` (the object alone) for both runs, the figure that counts for a mesh whose support plane was dropped
(for `masked` it repeats Chamfer / r). shell: share of ~2000 directions from the region box's
centre in which the whole (uncropped) mesh has surface beyond 90 % of the way to the box's boundary (the
reference's own figure is in the JSON, about the band where the table leaves the box); shell (job): the same
against the job's own region (its unit sphere and region box). PSNR: the trainer's held-out views (every 8th):
object on black for `masked`, the whole photo for `unmasked`, so not comparable between rows. unmasked / masked:
the ratio of the two runs' Chamfer.

{ROOM_HEADER}
"""


def run_room_benchmark(name: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    """A room capture trained with its evaluation masks and without: one row per run (see ROOM_TEXT)."""
    bench, cuda, preset, size, resolution, work = _settings(name, args)
    if args.capture:
        data = Path(args.capture)
        capture_s = json.loads((data / "capture.json").read_text()).get("render_s")
    else:
        data = work / f"capture_{size}px"
        capture_s = render_capture(bench, data, size, args.samples or 8, work, args.views)
    meta = json.loads((data / "capture.json").read_text())
    if "room" not in meta:
        raise SystemExit(f"{data} is not a room capture (render it with --background room)")
    max_size = int(meta["settings"]["width"])
    radius = float(meta["radius"])
    py = [sys.executable, "-m", "backend"]
    rows: list[dict[str, Any]] = []
    for run in ("masked", "unmasked"):
        row: dict[str, Any] = {"benchmark": name, "run": run, "preset": preset, "commit": commit(),
                               "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
                               "capture_s": capture_s, "px": max_size}
        job = work / f"job_{run}_{preset}_{args.device}"
        train = _train_command(py, data, job, preset, max_size, args, row)
        if run == "masked":
            train += ["--masks", str(data / meta["room"]["masks"])]
        if args.set:
            row["set"] = " ".join(args.set)
        t0 = time.perf_counter()
        msgs = run_json(train, work / f"train_{run}.log", f"train {run}")
        start = next(m for m in msgs if m["type"] == "start")
        done = msgs[-1]["metrics"]
        row.update(device=start.get("device", args.device), steps=msgs[-1]["steps"], path=start.get("path"),
                   train_s=done.get("train_time_s"), train_wall_s=time.perf_counter() - t0,
                   psnr=done.get("holdout_psnr"), mask_iou=done.get("holdout_mask_iou"),
                   normalization=start.get("normalization", {}).get("method"))
        if args.device == "cpu":
            row["device"] = f"cpu ({os.cpu_count()} cores)"
        mesh = job / f"extract_{resolution}.ply"
        run_json([*py, "extract", "--checkpoint", str(job), "--resolution", str(resolution), "--out", str(mesh),
                  "--device", args.device, "--no-colors", "--json"], work / f"extract_{run}.log", f"extract {run}")
        reference = "gt_region.ply" if run == "unmasked" else "gt_mesh.ply"
        ev = run_json([*py, "eval", "--mesh", str(mesh), "--reference", str(data / reference), "--region",
                       str(data / meta["room"]["region"]), "--out", str(work / f"metrics_{run}.json"), "--json"],
                      work / f"eval_{run}.log", f"eval {run}")[-1]["metrics"]
        row.update({k: v for k, v in ev.items() if not isinstance(v, (list, dict))})
        row["reference"] = reference
        row["chamfer_r"] = None if ev.get("chamfer") is None else ev["chamfer"] / radius
        job_ev = run_json([*py, "eval", "--mesh", str(mesh), "--region", str(job), "--json"],
                          work / f"eval_job_{run}.log", f"shell {run}")[-1]["metrics"]
        row["shell_job"] = job_ev["shell_fraction"]
        if run == "unmasked":  # also against the object alone: for meshes whose support plane was dropped
            obj = run_json([*py, "eval", "--mesh", str(mesh), "--reference", str(data / "gt_mesh.ply"), "--region",
                            str(data / meta["room"]["region"]), "--json"], work / f"eval_object_{run}.log",
                           f"eval {run} vs object")[-1]["metrics"]
            row["chamfer_object_r"] = None if obj.get("chamfer") is None else obj["chamfer"] / radius
            row["fscore_object"] = obj.get("fscore")
        else:
            row["chamfer_object_r"], row["fscore_object"] = row["chamfer_r"], row.get("fscore")
        row["work"] = str(work)
        rows.append(row)
    masked, unmasked = rows
    if masked.get("chamfer") and unmasked.get("chamfer") is not None:
        unmasked["ratio"] = unmasked["chamfer"] / masked["chamfer"]
    return rows


def room_row(r: dict[str, Any]) -> str:
    cells = [r["benchmark"], r["date"], r["commit"], r["device"], r["run"], r["reference"], r["preset"],
             _fmt(r.get("steps"), "d"), _fmt(r.get("px"), "d"), _fmt(r.get("train_s"), ".0f"),
             _fmt(r.get("chamfer_r"), ".4f"), _fmt(r.get("fscore"), ".3f"), _fmt(r.get("normal_consistency"), ".3f"),
             _fmt(r.get("chamfer_object_r"), ".4f"), _fmt(r.get("shell_fraction"), ".3f"),
             _fmt(r.get("shell_job"), ".3f"), _fmt(r.get("psnr"), ".2f"), _fmt(r.get("ratio"), ".2f")]
    return "| " + " | ".join(cells) + " |"


def _fmt(value: Any, spec: str) -> str:  # noqa: ANN401 - any JSON value
    if value is None:
        return "-"
    return format(value, spec) if isinstance(value, (int, float)) else str(value)


def table_row(r: dict[str, Any]) -> str:
    cells = [r["benchmark"], r["date"], r["commit"], r["device"], r["preset"], _fmt(r.get("steps"), "d"),
             _fmt(r.get("px"), "d"), _fmt(r.get("capture_s"), ".0f"), _fmt(r.get("train_s"), ".0f"),
             _fmt(r.get("chamfer"), ".4f"), _fmt(r.get("chamfer_rel"), ".4f"), _fmt(r.get("fscore"), ".3f"),
             _fmt(r.get("normal_consistency"), ".3f"), _fmt(r.get("psnr"), ".2f"), _fmt(r.get("ssim"), ".3f"),
             _fmt(r.get("mask_iou"), ".3f")]
    return "| " + " | ".join(cells) + " |"


def paths_row(r: dict[str, Any]) -> str:
    path = str(r.get("path")) + (f", seed {r['seed']}" if r.get("seed") is not None else "")
    cells = [r["benchmark"], r["date"], r["commit"], r["device"], path, r["preset"],
             _fmt(r.get("steps"), "d"), _fmt(r.get("px"), "d"), _fmt(r.get("train_s"), ".1f"),
             _fmt(r.get("chamfer"), ".4f"), _fmt(r.get("chamfer_rel"), ".4f"), _fmt(r.get("fscore"), ".3f"),
             _fmt(r.get("normal_consistency"), ".3f"), _fmt(r.get("psnr"), ".2f"), _fmt(r.get("ssim"), ".3f"),
             _fmt(r.get("mask_iou"), ".3f")]
    return "| " + " | ".join(cells) + " |"


def append_rows(rows: list[str], path: Path | None = None, section: str = SECTION,
                section_text: str = SECTION_TEXT) -> Path:
    """Append table rows at the end of a section's table (``section_text`` made when missing)."""
    path = path or ROOT / "docs" / "BENCHMARKS.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    if section not in doc:
        doc = doc.rstrip("\n") + "\n\n" + section_text
    head, _, rest = doc.partition(section)
    nxt = rest.find("\n## ", 1)
    body, tail = (rest, "") if nxt < 0 else (rest[:nxt], rest[nxt:])
    body = body.rstrip("\n") + "\n" + "\n".join(rows) + "\n"
    path.write_text(head + section + body + tail, encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("names", nargs="*", help=f"benchmarks to run: {', '.join(BENCHMARKS)}")
    p.add_argument("--list", action="store_true", help="list the benchmarks")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--steps", type=int, help="training steps (default: 400 on CPU, the preset's on CUDA)")
    p.add_argument("--preset", help="training preset (default: preview on CPU, default on CUDA)")
    p.add_argument("--size", type=int, help="image size in px: synthetic renders and training (default 200 CPU, "
                   "400 CUDA; DTU full size on CUDA)")
    p.add_argument("--samples", type=int, help="Cycles samples of synthetic captures (16; 8 in a room, denoised)")
    p.add_argument("--views", type=int, help="views of synthetic captures (default: the benchmark's)")
    p.add_argument("--resolution", type=int, help="marching cubes resolution (256 CPU, 512 CUDA)")
    p.add_argument("--workdir", help="work folder (default: a new temporary one; a capture in it is reused)")
    p.add_argument("--capture", help="use this rendered capture (synthetic benchmarks) instead of rendering one")
    p.add_argument("--paths", help="compute paths to compare at equal steps, e.g. triton,reference "
                   "(NEUSBLEND_PATH; rows go to the equal-steps table)")
    p.add_argument("--json", help="also write the result rows as JSON here")
    p.add_argument("--seed", type=int, help="training seed (default: the preset's)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="training setting passed on to `train --set` (repeatable)")
    p.add_argument("--write", action="store_true", help="append the rows to docs/BENCHMARKS.md")
    args = p.parse_args(argv)
    if args.list or not args.names:
        for name, b in BENCHMARKS.items():
            print(f"{name:8s} {b.description}")
        return 0
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        p.error(f"unknown benchmark {', '.join(unknown)}; use one of {', '.join(BENCHMARKS)}")
    if args.steps is None and args.device == "cpu":
        args.steps = 400
    if args.capture and len(args.names) > 1:
        p.error("--capture takes one benchmark")
    base_workdir = args.workdir
    paths: list[str | None] = list(args.paths.split(",")) if args.paths else [None]
    results: list[dict[str, Any]] = []
    for name in args.names:
        if base_workdir and len(args.names) > 1:
            args.workdir = str(Path(base_workdir) / name)
        if args.paths and not args.workdir:  # one work folder for all paths: the capture is rendered once
            args.workdir = tempfile.mkdtemp(prefix=f"neusblend-bench-{name}-")
        if BENCHMARKS[name].backdrop == "room":
            if args.paths:
                p.error(f"--paths does not apply to {name}")
            results += run_room_benchmark(name, args)
            print(json.dumps(results[-2:], indent=1), file=sys.stderr)
            if args.json:
                Path(args.json).write_text(json.dumps(results, indent=1))
            continue
        for path in paths:
            r = run_benchmark(name, args, path)
            results.append(r)
            print(json.dumps(r, indent=1), file=sys.stderr)
            if args.json:
                Path(args.json).write_text(json.dumps(results, indent=1))
    room = [r for r in results if "run" in r]
    results = [r for r in results if "run" not in r]
    if room:
        print(ROOM_HEADER)
        print("\n".join(room_row(r) for r in room))
        if args.write:
            where = append_rows([room_row(r) for r in room], section=ROOM_SECTION, section_text=ROOM_TEXT)
            print(f"appended to {where}")
    if not results:
        return 0
    if args.paths:
        rows = [paths_row(r) for r in results]
        print(PATHS_HEADER)
    else:
        rows = [table_row(r) for r in results]
        print(TABLE_HEADER)
    print("\n".join(rows))
    if args.write:
        where = (append_rows(rows, section=PATHS_SECTION, section_text=PATHS_TEXT) if args.paths
                 else append_rows(rows))
        print(f"appended to {where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
