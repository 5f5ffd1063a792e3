"""Export a posed capture's cameras, points and region of interest in the poses-job layout (run in a subprocess).

    python -m client.export_capture --data CAPTURE --out DIR        (PYTHONPATH = the extension root)

The Blender import reads a poses job directly; every other layout the backend can load (NeuS, transforms.json,
COLMAP, Middlebury) goes through this script, which the client runs with an interpreter that has the backend's
loaders' needs (numpy, Pillow, and pycolmap for COLMAP models): Blender's own when the bundled wheels import, else
the backend Python. It never imports bpy or torch, and it is never imported by the add-on itself (it imports
``backend`` as a top-level package). It writes ``DIR/cameras.json``, ``DIR/points.npz`` (when the capture has
points), ``DIR/roi.json`` and ``DIR/capture.json``, the formats of docs/POSES.md plus an absolute ``path`` per
image, and prints one JSON line: ``{"ok": true, ...}`` or ``{"ok": false, "message", "hint", "file"}``.

The region of interest is the backend's own automatic normalization of the capture (a NeuS ``scale_mat``, the
visual hull of its masks, its sparse points, or what the cameras look at), so the box the user starts from is the
one training would use without ``--roi``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def export(data: str | Path, out: str | Path) -> dict[str, Any]:
    """Load the capture at ``data`` (full resolution) and write the files into ``out``; returns a summary."""
    from backend.data import detect_format, load_scene_with_info

    fmt = detect_format(data)
    scene, info = load_scene_with_info(data, normalize=True, prefer_given=True, fmt=fmt)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    sizes = scene.sizes
    paths = [str(p) for p in scene.image_paths] if len(scene.image_paths) == len(scene) else [""] * len(scene)
    images = [{"name": scene.names[i], "width": int(sizes[i, 0]), "height": int(sizes[i, 1]),
               "K": scene.K[i].tolist(), "c2w": scene.c2w[i].tolist(), "path": paths[i]} for i in range(len(scene))]
    (out / "cameras.json").write_text(json.dumps({
        "convention": "K: OpenCV pixels (top-left pixel centre at 0,0); c2w: camera-to-world 4x4, OpenCV camera "
                      "axes (x right, y down, z forward), input coordinates",
        "images": images}, indent=1), encoding="utf-8")
    n_points = 0
    if scene.points is not None and len(scene.points):
        pts = np.asarray(scene.points, dtype=np.float32).reshape(-1, 3)
        rgb = (np.asarray(scene.point_colors, dtype=np.uint8).reshape(-1, 3) if scene.point_colors is not None
               else np.full((len(pts), 3), 200, dtype=np.uint8))
        np.savez(out / "points.npz", xyz=pts, rgb=rgb)
        n_points = len(pts)
    to_world = np.asarray(scene.to_world, dtype=np.float64)
    roi = np.asarray(scene.roi if scene.roi is not None else [[-1.0] * 3, [1.0] * 3], dtype=np.float64)
    corners = np.array([[roi[i, 0], roi[j, 1], roi[k, 2], 1.0] for i in (0, 1) for j in (0, 1) for k in (0, 1)])
    world = (corners @ to_world.T)[:, :3]
    up = -scene.c2w[:, :3, 1].mean(0)
    up = up / max(float(np.linalg.norm(up)), 1e-12)
    center = to_world[:3, 3]
    radius = float(np.cbrt(abs(np.linalg.det(to_world[:3, :3]))))
    (out / "roi.json").write_text(json.dumps({
        "center": center.tolist(), "radius": radius, "box_min": world.min(0).tolist(),
        "box_max": world.max(0).tolist(), "up": up.tolist()}, indent=1), encoding="utf-8")
    root = Path(data).expanduser().resolve()
    name = (root.parent if root.is_file() else root).name or "Capture"
    (out / "capture.json").write_text(json.dumps({
        "name": name, "layout": fmt, "source": str(root),
        "normalization": {k: v for k, v in info.items() if k in ("method", "center", "radius")}}, indent=1),
        encoding="utf-8")
    return {"ok": True, "cameras": len(scene), "points": n_points, "layout": fmt}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m client.export_capture", description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="a posed capture the backend can load")
    p.add_argument("--out", required=True, help="folder to write cameras.json, points.npz, roi.json into")
    args = p.parse_args(argv)
    try:
        from backend.errors import BackendError
    except ImportError as exc:
        print(json.dumps({"ok": False, "message": f"the backend cannot be imported: {exc}",
                          "hint": "Reinstall the extension."}), flush=True)
        return 2
    try:
        result = export(args.data, args.out)
    except BackendError as exc:
        print(json.dumps({"ok": False, "message": exc.message, "hint": exc.hint, "file": exc.file or ""}),
              flush=True)
        return 2
    except ImportError as exc:
        print(json.dumps({"ok": False, "message": f"a module the loader needs is missing: {exc}",
                          "hint": "Set a backend Python with numpy, Pillow and pycolmap in the preferences."}),
              flush=True)
        return 2
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
