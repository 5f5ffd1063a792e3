"""``python -m backend export-capture --data CAPTURE --out DIR``: a posed capture's cameras, points and region of
interest in the poses-job layout, for the Blender import.

The Blender import reads a poses job directly; every other layout the backend can load (NeuS, transforms.json,
COLMAP, Middlebury) goes through this command, which the client runs with an interpreter that has the loaders'
needs (numpy, Pillow, and pycolmap for COLMAP models): Blender's own when the extension's wheels import there, else
the backend Python. It never imports torch. It writes ``DIR/cameras.json``, ``DIR/points.npz`` (when the capture
has points), ``DIR/roi.json`` and ``DIR/capture.json`` with the seam's writers (:mod:`backend.capture_files`; the
formats of docs/POSES.md, plus an absolute ``path`` per image) and speaks the protocol like every command:
``start``, then ``done`` (``cameras``, ``points``, ``layout``, ``out``) or ``error`` (``message``, ``hint``,
``file``); exit status 0 or 2.

The region of interest is the backend's own automatic normalization of the capture (a NeuS ``scale_mat``, the
visual hull of its masks, its sparse points, or what the cameras look at), so the box the user starts from is the
one training would use without ``--roi``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

from . import capture_files, protocol
from .errors import BackendError


def export(data: str | Path, out: str | Path) -> dict[str, Any]:
    """Load the capture at ``data`` (full resolution) and write the files into ``out``; returns a summary:
    ``cameras`` and ``points`` (counts) and ``layout`` (the loader's format name)."""
    from .data import detect_format, load_scene_with_info

    fmt = detect_format(data)
    scene, info = load_scene_with_info(data, normalize=True, prefer_given=True, fmt=fmt)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = [str(p) for p in scene.image_paths] if len(scene.image_paths) == len(scene) else [""] * len(scene)
    capture_files.write_cameras(out / capture_files.CAMERAS, scene.names, scene.sizes, scene.K, scene.c2w,
                                frame="input coordinates", paths=paths)
    n_points = 0
    if scene.points is not None and len(scene.points):
        capture_files.write_points(out / capture_files.POINTS, scene.points, scene.point_colors)
        n_points = len(np.asarray(scene.points).reshape(-1, 3))
    to_world = np.asarray(scene.to_world, dtype=np.float64)
    roi = np.asarray(scene.roi if scene.roi is not None else [[-1.0] * 3, [1.0] * 3], dtype=np.float64)
    corners = np.array([[roi[i, 0], roi[j, 1], roi[k, 2], 1.0] for i in (0, 1) for j in (0, 1) for k in (0, 1)])
    world = (corners @ to_world.T)[:, :3]
    up = -scene.c2w[:, :3, 1].mean(0)
    up = up / max(float(np.linalg.norm(up)), 1e-12)
    capture_files.write_region(out / capture_files.REGION, center=to_world[:3, 3],
                               radius=float(np.cbrt(abs(np.linalg.det(to_world[:3, :3])))),
                               box_min=world.min(0), box_max=world.max(0), up=up)
    root = Path(data).expanduser().resolve()
    capture_files.write_capture_info(out / capture_files.CAPTURE, (root.parent if root.is_file() else root).name
                                     or "Capture", fmt, str(root),
                                     normalization={k: v for k, v in info.items()
                                                    if k in ("method", "center", "radius")})
    return {"cameras": len(scene), "points": n_points, "layout": fmt}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="a posed capture the backend can load (NeuS, transforms.json, "
                                                 "COLMAP, Middlebury)")
    p.add_argument("--out", required=True, help="folder to write cameras.json, points.npz, roi.json, capture.json "
                                                "into")


def run(args: argparse.Namespace, emitter: protocol.Emitter) -> int:
    t0 = time.perf_counter()
    emitter.emit("start", command="export-capture", device="cpu", data=str(args.data), out=str(args.out))
    try:
        summary = export(args.data, args.out)
    except ImportError as exc:  # pycolmap for a COLMAP model, Pillow for the photos' sizes
        raise BackendError(f"a module the loader needs is missing: {exc}",
                           "Set a backend Python with numpy, Pillow and pycolmap in the add-on preferences.",
                           args.data) from exc
    emitter.emit("done", **summary, out=str(Path(args.out).resolve()), elapsed_s=time.perf_counter() - t0)
    return protocol.EXIT_OK
