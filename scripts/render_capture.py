"""Render a synthetic posed capture of a mesh file or a built-in object, with its ground-truth mesh.

    python scripts/render_capture.py --builtin suzanne --out CAPTURE [options]         (with the bpy module)
    python scripts/render_capture.py --mesh bunny.obj --layout dtu --size 200 --out CAPTURE
    blender -b --python scripts/render_capture.py -- --mesh bunny.obj --out CAPTURE    (Blender with Pillow)

The object is normalized first: its bounding box centred at the origin with half-diagonal ``--radius`` (1), so it
fits inside the unit sphere; capture.json records the transform (``source_to_world``: file coordinates to world,
including the Y-up to Z-up turn of ``--up y``). Then Cycles renders the views on the CPU and the folder gets the
NeuS layout (image/, mask/, cameras_sphere.npz), nerf/transforms.json, gt_mesh.ply and capture.json
(see synthetic/capture.py). Train on it with ``python -m backend train --data CAPTURE --out JOB``.

Blender is reset to an empty factory scene first. Exit status: 0 done, 2 bad input.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from synthetic.cameras import LAYOUTS  # noqa: E402


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Arguments after ``--`` (Blender) or all of them (plain Python)."""
    if argv is None:
        argv = sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else sys.argv[1:]
    from synthetic.capture import BACKDROPS, BUILTINS
    from synthetic.room import REGION_MARGIN

    p = argparse.ArgumentParser(prog="render_capture.py", description=__doc__.splitlines()[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--mesh", help="mesh file (.obj; .ply / .npz as the backend writes them)")
    src.add_argument("--builtin", choices=sorted(BUILTINS), help="a Blender primitive (nothing to download)")
    p.add_argument("--out", required=True, help="output folder (the dataset)")
    p.add_argument("--layout", default="dtu", choices=list(LAYOUTS),
                   help="camera layout: ring, sphere (Fibonacci) or dtu (cap above the object); default dtu")
    p.add_argument("--views", type=int, help="number of views (default: ring 24, sphere 48, dtu 49)")
    p.add_argument("--size", type=int, nargs="+", default=[200], metavar=("W", "H"),
                   help="image width [and height] in pixels (default 200)")
    p.add_argument("--samples", type=int, default=16, help="Cycles samples per pixel (default 16)")
    p.add_argument("--masks", action=argparse.BooleanOptionalAction, default=True,
                   help="write masks from the alpha (default: yes)")
    p.add_argument("--denoise", action=argparse.BooleanOptionalAction, default=True,
                   help="OpenImageDenoise when available (default: yes)")
    p.add_argument("--seed", type=int, default=0, help="Cycles seed (default 0)")
    p.add_argument("--up", default="y", choices=["y", "z"], help="the mesh file's up axis (default y, as OBJ)")
    p.add_argument("--radius", type=float, default=1.0, help="normalized bounding radius (default 1)")
    p.add_argument("--texture", default="auto", choices=["auto", "always", "never"],
                   help="procedural texture on untextured objects (auto), on all, or never")
    p.add_argument("--lens", type=float, help="focal length in mm on a 36 mm sensor (default 50; 28 in a room)")
    p.add_argument("--distance", type=float, help="camera distance in bounding radii (default: fill the view)")
    p.add_argument("--elevation", type=float, default=30.0, help="ring elevation in degrees (default 30)")
    p.add_argument("--cap", type=float, default=65.0, help="dtu cap half-angle in degrees (default 65)")
    p.add_argument("--threads", type=int, default=0, help="render threads (default: all cores)")
    p.add_argument("--no-nerf", action="store_true", help="skip nerf/transforms.json")
    p.add_argument("--background", default="none", choices=list(BACKDROPS),
                   help="none: the object alone, masks from the alpha (default); room: on a textured table in a "
                   "textured room, opaque images, masks in eval_masks/ (for evaluation only), gt_region.ply and "
                   "region.json")
    p.add_argument("--region-margin", type=float, default=REGION_MARGIN,
                   help=f"(room) the region box's margin around the object in bounding radii ({REGION_MARGIN:g})")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    args = p.parse_args(argv)
    if len(args.size) > 2:
        p.error("--size takes W or W H")
    return args


def default_lens(args: argparse.Namespace) -> float:
    """--lens, else 50 mm (28 mm, about a phone's main camera, in a room)."""
    from synthetic.room import ROOM_LENS_MM

    if args.lens is not None:
        return float(args.lens)
    return ROOM_LENS_MM if args.background == "room" else 50.0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    from synthetic import capture

    t0 = time.perf_counter()
    capture.reset_blender()
    width = args.size[0]
    height = args.size[1] if len(args.size) > 1 else width
    try:
        settings = capture.CaptureSettings(
            layout=args.layout, n_views=args.views, width=width, height=height, samples=args.samples,
            denoise=args.denoise, masks=args.masks, seed=args.seed, lens_mm=default_lens(args),
            distance=args.distance, elevation_deg=args.elevation, cap_deg=args.cap, texture=args.texture,
            threads=args.threads, nerf=not args.no_nerf, backdrop=args.background, region_margin=args.region_margin)
        if args.mesh:
            if not Path(args.mesh).is_file():
                raise ValueError(f"no such mesh file: {args.mesh}")
            ob = capture.import_mesh(args.mesh, up=args.up)
            source = {"mesh": str(Path(args.mesh).resolve()), "up": args.up}
        else:
            ob = capture.add_builtin(args.builtin)
            source = {"builtin": args.builtin}
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    local_to_world = np.array(ob.matrix_world, dtype=np.float64)  # file (or primitive) -> Blender world
    sim = capture.normalize_objects([ob], args.radius)
    where = "bounding box centred at the origin"
    if args.background == "room":  # the table top is the plane z = 0, the object stands on it over the origin
        lift = np.eye(4)
        lift[2, 3] = -float(capture.world_geometry([ob])[0][:, 2].min())
        ob.matrix_world = capture._matrix(lift @ np.array(ob.matrix_world, dtype=np.float64))
        sim = lift @ sim
        where = "bounding box centred over the origin, lowest point at z = 0 (the table top)"
    source["source_to_world"] = (sim @ local_to_world).tolist()
    source["normalization"] = (f"{where}, half-diagonal {args.radius:g}; "
                               "source_to_world maps the file's (or primitive's) coordinates to the world")

    def progress(i: int, n: int) -> None:
        if not args.quiet:
            print(f"rendered {i}/{n} ({time.perf_counter() - t0:.1f} s)", flush=True)

    try:
        result = capture.capture_objects([ob], args.out, settings, progress=progress,
                                         extra_metadata={"source": source})
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    meta = result.metadata
    print(f"capture: {meta['n_views']} views of {width}x{height} px, {settings.samples} samples, "
          f"denoiser {meta['denoiser'] or 'none'}; render {meta['render_s']:.1f} s, total "
          f"{time.perf_counter() - t0:.1f} s -> {Path(args.out).resolve()}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
