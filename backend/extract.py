"""Mesh extraction from a trained field, and ``python -m backend extract`` (any resolution, cropped)."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from . import capture_files, protocol
from .errors import BackendError
from .protocol import JobLayout

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="checkpoint file, or a job folder (uses its last checkpoint)")
    p.add_argument("--resolution", type=int, default=512, help="samples along the box's longest side")
    p.add_argument("--box", type=float, nargs=6, metavar=("XMIN", "YMIN", "ZMIN", "XMAX", "YMAX", "ZMAX"),
                   help="crop box in input (world) coordinates (default: the scene's region of interest)")
    p.add_argument("--roi", metavar="FILE.json",
                   help="crop to an oriented box: a JSON file with a 4x4 `matrix` mapping the cube [-1, 1]^3 to "
                        "input coordinates (what the Blender crop box writes), or `box_min`/`box_max`")
    p.add_argument("--out", help="output .npz or .ply (default: JOB/meshes/extract_<res>.npz)")
    p.add_argument("--no-colors", action="store_true", help="skip vertex colours")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--block", type=int, default=128, help="marching-cubes block size (memory ~ block^3 floats)")
    p.add_argument("--clean", action=argparse.BooleanOptionalAction, default=None,
                   help="clean the mesh: cut to the region, remove the shell on its boundary, parts seen by fewer "
                        "than two cameras and floaters (default: on when the job was trained without masks)")
    p.add_argument("--remove-plane", action="store_true",
                   help="also remove the supporting plane (table, ground) and what lies beyond it")


def extract_mesh(field, scene, resolution: int, *, box: np.ndarray, device: Any,  # noqa: ANN001
                 colors: bool = True, block: int = 128, chunk: int = 2**17, method: str = "auto",
                 progress: Callable[[float], None] | None = None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Marching cubes of ``field``'s SDF inside ``box`` (normalized frame), output in input coordinates.

    Args:
        field: a :class:`backend.field.NeuSField`.
        scene: anything with ``world_from_normalized`` (a :class:`backend.scene.Scene` or :class:`Frame`).
        resolution: samples along the box's longest side.
        box: (2, 3) normalized-frame box (clipped to the unit cube).
        method: marching-cubes path (:func:`backend.meshing.marching_cubes_blocks`): "auto" is the fast
            PyTorch path on CUDA and the reference (PyMCubes) elsewhere.

    Returns:
        vertices (V, 3) float32 input coordinates, faces (F, 3) int32, colours (V, 3) uint8 or None.
    """
    from .meshing import TorchSdf, marching_cubes_blocks

    box = np.clip(np.asarray(box, dtype=np.float64).reshape(2, 3), -1.0, 1.0)
    was_training = field.training
    field.eval()

    verts, faces = marching_cubes_blocks(TorchSdf(field.bounded_sdf, device), box, resolution, block=block,
                                         chunk=chunk, method=method, progress=progress)
    cols = None
    if colors and len(verts):
        cols = vertex_colors(field, verts, device, chunk=chunk // 2)
    field.train(was_training)
    return scene.world_from_normalized(verts.astype(np.float64)).astype(np.float32), faces, cols


def vertex_colors(field, verts: np.ndarray, device: Any, chunk: int = 2**16) -> np.ndarray:  # noqa: ANN001
    """(V, 3) uint8 colour seen head-on (view direction = -normal) at normalized-frame vertices."""
    import torch

    out = np.empty((len(verts), 3), dtype=np.uint8)
    for s in range(0, len(verts), chunk):
        x = torch.from_numpy(verts[s:s + chunk]).float().to(device)
        _, feat, grad = field.sdf_with_gradient(x, create_graph=False)
        with torch.no_grad():
            n = grad / grad.norm(dim=-1, keepdim=True).clamp_min(1e-6)
            rgb = field.color(x, n, -n, feat)
        out[s:s + chunk] = (rgb.clamp(0, 1) * 255 + 0.5).to(torch.uint8).cpu().numpy()
    return out


def _progress_reporter(emitter: protocol.Emitter, t0: float, every_s: float = 1.0) -> Callable[[float], None]:
    """``progress`` messages (step = percent of the grid done, with an ETA), at most one every ``every_s``."""
    last = [0.0]

    def report(fraction: float) -> None:
        now = time.perf_counter()
        if now - last[0] < every_s and fraction < 1.0:
            return
        last[0] = now
        elapsed = now - t0
        eta = elapsed * (1.0 - fraction) / fraction if fraction > 0 else None
        emitter.emit("progress", step=int(round(100 * fraction)), total=100, phase="marching cubes",
                     elapsed_s=elapsed, eta_s=eta)
    return report


def box_corners(matrix: np.ndarray) -> np.ndarray:
    """(8, 3) corners of the cube [-1, 1]^3 mapped by a (4, 4) matrix."""
    cube = np.array([[x, y, z] for x in (-1.0, 1.0) for y in (-1.0, 1.0) for z in (-1.0, 1.0)])
    return cube @ matrix[:3, :3].T + matrix[:3, 3]


def crop_mesh(verts: np.ndarray, faces: np.ndarray, colors: np.ndarray | None, box: np.ndarray,
              eps: float = 1e-6) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Keep the triangles whose three corners lie inside an oriented box; drop the vertices left unused.

    Args:
        verts: (V, 3) positions, faces: (F, 3) indices, colors: (V, C) or None.
        box: (4, 4) matrix mapping the cube [-1, 1]^3 to the vertices' coordinates.

    Returns:
        the cropped (V', 3) vertices, (F', 3) int32 faces and (V', C) colours (or None).
    """
    inv = np.linalg.inv(box)
    local = verts.astype(np.float64) @ inv[:3, :3].T + inv[:3, 3]
    inside = np.all(np.abs(local) <= 1.0 + eps, axis=1)
    faces = faces[inside[faces].all(axis=1)]
    used = np.zeros(len(verts), dtype=bool)
    used[faces.ravel()] = True
    remap = np.cumsum(used) - 1
    return (verts[used], remap[faces].astype(np.int32), None if colors is None else colors[used])


def peak_rss_mb() -> float | None:
    """Peak resident memory of this process in MiB (None where the platform does not tell)."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0


class Frame:
    """The normalized frame of a checkpoint (``to_world`` similarity), without the images."""

    def __init__(self, to_world: np.ndarray) -> None:
        self.to_world = np.asarray(to_world, dtype=np.float64)

    def world_from_normalized(self, pts: np.ndarray) -> np.ndarray:
        return pts @ self.to_world[:3, :3].T + self.to_world[:3, 3]

    def normalized_from_world(self, pts: np.ndarray) -> np.ndarray:
        inv = np.linalg.inv(self.to_world)
        return pts @ inv[:3, :3].T + inv[:3, 3]


def run(args: argparse.Namespace, emitter: protocol.Emitter) -> int:
    from .checkpoint import field_from_checkpoint, load_checkpoint, resolve_checkpoint, resolve_device

    path = resolve_checkpoint(args.checkpoint)
    job = JobLayout(path.parent.parent)
    if args.resolution < 8 or args.resolution > 4096:
        raise BackendError(f"resolution {args.resolution} is out of range", hint="Use 8 to 4096.")
    device = resolve_device(args.device)
    ckpt = load_checkpoint(path)
    field, cfg = field_from_checkpoint(ckpt, device, path)
    frame = Frame(ckpt["to_world"])
    emitter.emit("start", command="extract", device=device, checkpoint=str(path),
                 step=int(ckpt["step"]), resolution=args.resolution)
    if args.box and args.roi:
        raise BackendError("--box and --roi both crop", hint="Give one of them.")
    crop = None  # (4, 4) cube-to-input matrix of the crop box
    if args.roi:
        crop = capture_files.region_matrix(args.roi)
    elif args.box:
        world_box = np.array(args.box, dtype=np.float64).reshape(2, 3)
        if np.any(world_box[1] <= world_box[0]):
            raise BackendError("the crop box is empty (a min is not below its max)", hint="Give XMIN YMIN ZMIN "
                               "XMAX YMAX ZMAX with each min below its max.")
        crop = capture_files.box_matrix(world_box[0], world_box[1])
    if crop is not None:
        norm = frame.normalized_from_world(box_corners(crop))
        box = np.stack([norm.min(0), norm.max(0)])
        if np.any(box[1] <= -1) or np.any(box[0] >= 1):
            raise BackendError("the crop box lies outside the reconstructed region",
                               hint="Move the box over the object and try again.", file=args.roi)
    else:
        roi = ckpt.get("roi")
        box = np.array([[-1.0] * 3, [1.0] * 3]) if roi is None else np.asarray(roi, dtype=np.float64)
    t0 = time.perf_counter()
    emitter.emit("stage", name="extract", detail=f"{args.resolution}^3 in blocks of {args.block}")
    verts, faces, colors = extract_mesh(field, frame, args.resolution, box=box, device=device,
                                        colors=not args.no_colors, block=args.block,
                                        progress=_progress_reporter(emitter, t0))
    if crop is not None and len(faces):
        verts, faces, colors = crop_mesh(verts, faces, colors, crop)
    if len(faces) == 0:
        raise BackendError("no surface inside the box", hint="Enlarge or move the crop box, or train longer.")
    verts, faces, colors, removed = clean_extracted(args, ckpt, verts, faces, colors, emitter)
    out = Path(args.out) if args.out else job.extracted(args.resolution)
    if out.suffix.lower() == ".ply":
        from .meshing import write_ply

        write_ply(str(out), verts, faces, colors)
    else:
        protocol.write_snapshot(out, verts, faces, colors)
    emitter.emit("mesh", step=int(ckpt["step"]), path=str(out.resolve()), n_vertices=len(verts), n_faces=len(faces),
                 bounds=protocol.mesh_bounds(verts), final=True, has_colors=colors is not None)
    emitter.emit("done", mesh=str(out.resolve()), elapsed_s=time.perf_counter() - t0, n_vertices=len(verts),
                 n_faces=len(faces), cancelled=False, resolution=args.resolution, step=int(ckpt["step"]),
                 peak_rss_mb=peak_rss_mb(), removed=removed)
    return protocol.EXIT_OK


def checkpoint_cameras(ckpt: dict[str, Any], emitter: protocol.Emitter):  # noqa: ANN201 - meshclean.Cameras
    """The cameras a checkpoint was trained with, in input coordinates (its ``cameras`` entry: K, c2w, sizes), or
    None after a warning when it has none."""
    from .meshclean import Cameras

    cams = ckpt.get("cameras")
    if isinstance(cams, dict):
        return Cameras(cams["K"], cams["c2w"], cams["sizes"])
    emitter.emit("warning", message="the checkpoint does not hold its cameras; the clean-up keeps parts seen by "
                 "fewer than two cameras")
    return None


def clean_extracted(args: argparse.Namespace, ckpt: dict[str, Any], verts: np.ndarray, faces: np.ndarray,
                    colors: np.ndarray | None, emitter: protocol.Emitter
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, dict[str, int]]:
    """``--clean`` / ``--remove-plane``: :func:`backend.meshclean.clean_mesh` with the training region (sphere and
    region box; a crop box has cut the mesh already) and cameras. Returns the mesh and {reason: faces removed}."""
    from . import meshclean

    clean = not ckpt.get("has_masks") if args.clean is None else args.clean
    if not (clean or args.remove_plane):
        return verts, faces, colors, {}
    options = meshclean.CleanOptions(remove_plane=bool(args.remove_plane))
    if not clean:  # the plane alone, and the floaters it leaves
        options = dataclasses.replace(options, crop=False, shell=False, min_views=0)
    detail = "cut to the region, boundary shell, unseen parts, floaters" if clean else "floaters"
    emitter.emit("stage", name="clean", detail=detail + (", support plane" if args.remove_plane else ""))
    roi_matrix = ckpt.get("roi_matrix")
    region = meshclean.region_from_frame(ckpt["to_world"], ckpt.get("roi"),
                                         None if roi_matrix is None else np.asarray(roi_matrix, dtype=np.float64))
    cameras = checkpoint_cameras(ckpt, emitter)
    verts, faces, colors, report = meshclean.clean_mesh(verts, faces, colors, region=region if clean else None,
                                                        cameras=cameras, options=options)
    if report.get("kept_whole"):
        emitter.emit("warning", message=report["kept_whole"])
    elif args.remove_plane and not report.get("plane", {}).get("found"):
        emitter.emit("warning", message="no plane found: the mesh keeps everything the plane step would remove")
    log.info("clean-up: %s", meshclean.removed_summary(report))
    return verts, faces, colors, report["removed"]
