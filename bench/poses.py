"""Benchmark pose estimation on DTU scan 65 against its calibrated cameras, and on unposed everyday photos.

    python bench/poses.py                      # every configuration below, appended to docs/BENCHMARKS.md
    python bench/poses.py --configs default size1000 --no-write
    python bench/poses.py --unposed plush_dog plush_ring plush_every4   # stage times and plausibility only

Runs the stages of ``python -m backend poses`` one by one (so each is timed) for each configuration, then
compares the cameras with ``cameras_sphere.npz`` (``world_mat_i = K [R | t]`` in DTU millimetres) after a
similarity alignment on the camera centres: centre error in mm, rotation error in degrees, both before and after
the final bundle adjustment that refines the principal point. Prints a markdown table and appends it to
docs/BENCHMARKS.md under "## Pose estimation" with the device, the git commit and the date.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from backend.poses import PoseEstimator, PoseOptions  # noqa: E402
from backend.poses.evaluate import compare_with_calibration, read_neus_cameras  # noqa: E402
from backend.poses.quality import model_arrays  # noqa: E402
from bench import shared_data  # noqa: E402
from bench.gitinfo import commit  # noqa: E402

#: name -> (what it changes, options)
CONFIGS: dict[str, tuple[str, dict[str, Any]]] = {
    "default": ("defaults: exhaustive, full size (1600 px), 8192 features, incremental", {}),
    "size1000": ("max_image_size 1000", {"max_image_size": 1000}),
    "size800": ("max_image_size 800", {"max_image_size": 800}),
    "feat4096": ("max_features 4096", {"max_features": 4096}),
    "size1000_feat4096": ("max_image_size 1000, max_features 4096", {"max_image_size": 1000, "max_features": 4096}),
    "retrieval": ("retrieval pairing (visual words, about 4 log2(n) neighbours each) instead of exhaustive",
                  {"matching": "retrieval"}),
    "global": ("global mapper", {"mapper": "global"}),
    "one_call": ("pycolmap.match_exhaustive in one silent call instead of our pair list with progress",
                 {"match_in_chunks": False}),
}
STAGES = ("scan", "extract", "match", "map", "refine", "undistort", "report")
#: Unposed captures (no calibration): name -> (what, which plush_dog photos; None = all)
UNPOSED: dict[str, tuple[str, Any]] = {
    "plush_dog": ("84 photos all round a plush toy, 750x500, no masks", None),
    "plush_ring": ("the 21 plush_dog photos of its second height (IMG_3511, IMG_3517-3536), ~17 deg apart",
                   lambda names: [n for n in names if n == "IMG_3511.jpg" or 3517 <= int(n[4:8]) <= 3536]),
    "plush_every4": ("every 4th plush_dog photo (21 frames over five heights, neighbours 15-30 deg apart)",
                     lambda names: names[::4]),
}


def cpu_model() -> str:
    """The CPU's model name (Linux /proc/cpuinfo), else what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_seconds() -> float:
    """CPU time of this process, all threads (user + system): unlike wall time, barely moved by other load."""
    try:
        import resource

        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime
    except ImportError:  # not on Windows
        return time.process_time()


def errors_of(rec: Any, calibrated: dict) -> dict[str, float]:
    m = model_arrays(rec)
    _, err = compare_with_calibration(m.names, m.R, m.t, calibrated)
    return err.summary()


def run_config(name: str, images: Path, calibrated: dict, sphere: tuple[np.ndarray, float], work: Path
               ) -> dict[str, Any]:
    """All stages of one configuration, each timed; errors before and after the final bundle adjustment."""
    import pycolmap

    options = PoseOptions(**CONFIGS[name][1])
    if options.matching == "auto":
        options.matching = "exhaustive"
    job = work / name
    shutil.rmtree(job, ignore_errors=True)
    est = PoseEstimator(images, job, options)
    times: dict[str, float] = {}
    cpu: dict[str, float] = {}
    raw: dict[str, float] = {}
    for stage in STAGES:
        start, start_cpu = time.perf_counter(), cpu_seconds()
        getattr(est, stage)()
        if stage == "map" and est._rematch_worthwhile():  # what run() does when views stay out
            est.match(guided=True)
            est.map()
        times[stage] = time.perf_counter() - start
        cpu[stage] = cpu_seconds() - start_cpu
        if stage == "map":  # before the final bundle adjustment mutates it
            raw = errors_of(pycolmap.Reconstruction(est.reconstruction), calibrated)
    report = est.final_report or {}
    m = model_arrays(pycolmap.Reconstruction(est.output_dir / "sparse"))
    _, err = compare_with_calibration(m.names, m.R, m.t, calibrated)
    final = err.summary()
    # the region of interest in DTU millimetres, against the sphere that scale_mat_0 maps the unit sphere to
    roi = report["roi"]
    roi_center = err.scale * err.R @ np.asarray(roi["center"]) + err.t
    roi_radius = err.scale * roi["radius"]
    row = {"config": name, "what": CONFIGS[name][0], "times": times, "total": sum(times.values()), "cpu": cpu,
           "registered": report.get("registered"), "total_images": report.get("total"),
           "reproj": report.get("mean_reprojection_error_px"), "points": report.get("num_points"),
           "raw": raw, "final": final, "roi_offset": float(np.linalg.norm(roi_center - sphere[0])),
           "roi_radius_ratio": float(roi_radius / sphere[1]), "mapper": report.get("mapper"),
           "pairs": report.get("pairs_matched"),
           "pp": [(c["cx"], c["cy"]) for c in report.get("cameras", [])]}
    shutil.rmtree(job, ignore_errors=True)
    return row


def orbit_metrics(rec: Any) -> dict[str, float]:
    """Camera distance spread (std / mean) around the region's centre, worst optical-axis miss (region radii)."""
    from backend.poses.quality import region_of_interest

    m = model_arrays(rec)
    roi = region_of_interest(m)
    to_center = np.asarray(roi["center"]) - m.centers
    dist = np.linalg.norm(to_center, axis=1)
    along = (to_center * m.axes).sum(1)
    miss = np.linalg.norm(to_center - along[:, None] * m.axes, axis=1) / roi["radius"]
    return {"spread": float(dist.std() / dist.mean()), "miss": float(miss.max()), "away": int((along <= 0).sum())}


def run_unposed(name: str, work: Path) -> dict[str, Any]:
    """``PoseEstimator.run()`` on an unposed capture: wall and CPU seconds per stage, what registered."""
    import pycolmap

    source = shared_data("plush_dog") / "images"
    names = sorted(p.name for p in source.iterdir())
    pick = UNPOSED[name][1]
    images = source
    if pick is not None:
        images = work / f"{name}_images"
        shutil.rmtree(images, ignore_errors=True)
        images.mkdir(parents=True)
        for n in pick(names):
            shutil.copy(source / n, images / n)
    job = work / f"{name}_job"
    shutil.rmtree(job, ignore_errors=True)
    est = PoseEstimator(images, job, PoseOptions())
    report = est.run()
    row = {"capture": name, "what": UNPOSED[name][0], "report": report,
           "orbit": orbit_metrics(pycolmap.Reconstruction(job / "poses" / "sparse"))}
    shutil.rmtree(job, ignore_errors=True)
    return row


def unposed_table(rows: list[dict[str, Any]]) -> str:
    """Markdown table of :func:`run_unposed` rows: wall seconds (CPU seconds of all threads) per stage."""
    head = ("| capture | extract s | match s | map s | other s | total s | registered | reproj px | points "
            "| matching / mapper (retries) | peak threshold | pairs verified | distance spread / worst axis miss |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        rep, o = r["report"], r["orbit"]
        t, c = rep["timings_s"], rep["cpu_s"]

        def cell(*stages: str, t: dict = t, c: dict = c) -> str:
            return f"{sum(t.get(s, 0) for s in stages):.1f} ({sum(c.get(s, 0) for s in stages):.0f})"

        lines.append(
            f"| {r['capture']} | {cell('extract')} | {cell('match')} | {cell('map')} "
            f"| {cell('scan', 'refine', 'undistort', 'report')} | {cell(*STAGES)} "
            f"| {rep['registered']}/{rep['total']} | {rep['mean_reprojection_error_px']:.2f} | {rep['num_points']} "
            f"| {rep['matching']} / {rep['mapper']} ({rep['retries']}) | {rep['features']['peak_threshold']:.4f} "
            f"| {rep['pairs_verified']} | {o['spread']:.3f} / {o['miss']:.2f} |")
    return "\n".join(lines)


def table(rows: list[dict[str, Any]]) -> str:
    """Markdown table: wall seconds with CPU seconds (all threads) in brackets, accuracy, region of interest."""
    head = ("| config | extract s | match s | map s | refine s | other s | total s | registered | reproj px "
            "| points | centre err mm (median / max) | rotation err deg (mean / max) | before final BA: centre mm "
            "/ rotation deg (median / mean) | ROI centre offset mm / radius ratio |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        t, c = r["times"], r["cpu"]

        def cell(*stages: str, t: dict = t, c: dict = c) -> str:
            return f"{sum(t[s] for s in stages):.1f} ({sum(c[s] for s in stages):.0f})"

        f, w = r["final"], r["raw"]
        lines.append(
            f"| {r['config']} | {cell('extract')} | {cell('match')} | {cell('map')} | {cell('refine')} "
            f"| {cell('scan', 'undistort', 'report')} | {cell(*STAGES)} | {r['registered']}/{r['total_images']} "
            f"| {r['reproj']:.3f} | {r['points']} | {f['center_median']:.2f} / {f['center_max']:.2f} "
            f"| {f['rotation_mean_deg']:.3f} / {f['rotation_max_deg']:.3f} "
            f"| {w['center_median']:.2f} / {w['rotation_mean_deg']:.3f} "
            f"| {r['roi_offset']:.1f} / {r['roi_radius_ratio']:.2f} |")
    return "\n".join(lines)


def append_to_benchmarks(text: str) -> Path:
    path = ROOT / "docs" / "BENCHMARKS.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    section = "## Pose estimation"
    if section not in doc:
        doc = doc.rstrip("\n") + f"\n\n{section}\n\nWritten by `python bench/poses.py` (newest run last).\n"
    head, _, rest = doc.partition(section)
    # append at the end of the pose-estimation section (before the next "## " heading, if any)
    nxt = rest.find("\n## ", 1)
    body, tail = (rest, "") if nxt < 0 else (rest[:nxt], rest[nxt:])
    doc = head + section + body.rstrip("\n") + "\n\n" + text.strip("\n") + "\n" + tail
    path.write_text(doc, encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=shared_data("dtu_scan65"))
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/BENCHMARKS.md alone")
    parser.add_argument("--limit", type=int, default=0, help="only the first N images (a quick smoke run)")
    parser.add_argument("--unposed", nargs="+", choices=list(UNPOSED), default=None,
                        help="time unposed captures instead (printed only: stage times, registered, plausibility)")
    args = parser.parse_args(argv)
    if args.unposed:
        work = args.work or Path(tempfile.mkdtemp(prefix="bench_poses_"))
        load = os.getloadavg() if hasattr(os, "getloadavg") else None
        rows = []
        for name in args.unposed:
            print(f"== {name}: {UNPOSED[name][0]}", file=sys.stderr, flush=True)
            rows.append(run_unposed(name, work))
            print(unposed_table(rows[-1:]), file=sys.stderr, flush=True)
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
        after = os.getloadavg() if hasattr(os, "getloadavg") else None
        print(f"Device: {cpu_model()}, {os.cpu_count()} cores; load average "
              f"{load[0] if load else float('nan'):.1f} before, {after[0] if after else float('nan'):.1f} after. "
              f"Commit {commit()}, {datetime.date.today().isoformat()}.\n")
        print(unposed_table(rows))
        return 0

    images = args.data / "image"
    if not images.is_dir():
        print(f"DTU scan 65 not found at {args.data}", file=sys.stderr)
        return 1
    calibrated = read_neus_cameras(args.data / "cameras_sphere.npz", [p.name for p in images.glob("*.jpg")])
    with np.load(args.data / "cameras_sphere.npz", allow_pickle=False) as z:
        scale_mat = z["scale_mat_0"]
    sphere = (scale_mat[:3, 3].astype(np.float64), float(scale_mat[0, 0]))
    import pycolmap

    work = args.work or Path(tempfile.mkdtemp(prefix="bench_poses_"))
    if args.limit:
        subset = work / "images"
        subset.mkdir(parents=True, exist_ok=True)
        for p in sorted(images.glob("*.jpg"))[: args.limit]:
            shutil.copy(p, subset / p.name)
        images = subset
        calibrated = {k: v for k, v in calibrated.items() if (subset / k).exists()}
    load_before = os.getloadavg() if hasattr(os, "getloadavg") else None
    rows = []
    for name in args.configs:
        print(f"== {name}: {CONFIGS[name][0]}", file=sys.stderr, flush=True)
        rows.append(run_config(name, images, calibrated, sphere, work))
        print(table(rows[-1:]), file=sys.stderr, flush=True)
    load_after = os.getloadavg() if hasattr(os, "getloadavg") else None
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)

    load = (f"; load average {load_before[0]:.1f} before, {load_after[0]:.1f} after"
            if load_before and load_after else "")
    text = "\n".join([
        f"### DTU scan 65, {len(calibrated)} images, {datetime.date.today().isoformat()}",
        "",
        f"Device: {cpu_model()}, {os.cpu_count()} cores (CPU SIFT){load}. Commit {commit()}. "
        f"pycolmap {getattr(pycolmap, '__version__', '?')}, Python {platform.python_version()}.",
        "Errors after a similarity alignment on the camera centres against `cameras_sphere.npz` (DTU mm). "
        "Times: wall seconds (CPU seconds of all threads in brackets; on an idle machine wall is about CPU / cores "
        "for extraction and matching). 'other' = scan + undistort + report. ROI: the automatic region of "
        "interest against the object sphere of `scale_mat_0` (centre offset in mm, radius ratio).",
        "",
        table(rows),
        "",
        *[f"- {r['config']}: {r['what']} ({r['pairs']} pairs, mapper {r['mapper']}, undistorted principal point "
          + ", ".join(f"({x:.1f}, {y:.1f})" for x, y in r["pp"]) + ")" for r in rows],
    ])
    print(text)
    if not args.no_write:
        print(f"appended to {append_to_benchmarks(text)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
