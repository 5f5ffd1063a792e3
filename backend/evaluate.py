"""``python -m backend eval``: compare a mesh with a reference, and score a trained model on held-out views.

Mesh metrics (:func:`mesh_metrics`), from ``N`` points sampled uniformly by area on each mesh, nearest neighbours
with ``scipy.spatial.cKDTree``:

- Chamfer distance: ``accuracy`` = mean distance from predicted points to the reference, ``completeness`` = mean
  distance from reference points to the prediction, ``chamfer`` = their mean. In scene units and, with the suffix
  ``_rel``, as a fraction of the reference's bounding radius (half the diagonal of its bounding box).
- Normal consistency: mean ``|cos|`` between each sampled point's face normal and that of its nearest neighbour on
  the other mesh, both directions averaged (orientation-blind, 1 is best); ``normal_consistency_signed`` keeps the
  sign (-1 for a mesh whose faces point inward).
- F-score at a distance threshold (default 1 % of the reference's bounding-box diagonal): precision = share of
  predicted points within it of the reference, recall = share of reference points within it of the prediction.

View metrics (:func:`evaluate_checkpoint`): every k-th view of the dataset (as ``train --holdout-every k`` holds
them out) rendered by the trained model: PSNR (whole image; with masks the reference is composited on black, as the
trainer renders it, and ``psnr_object`` is restricted to the mask), SSIM (:func:`ssim`, Gaussian window 11,
sigma 1.5, K1 0.01, K2 0.03) and mask IoU (rendered opacity > 0.5 against the mask).

numpy and scipy at import time of the metrics; torch only where a checkpoint is rendered.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from . import capture_files, protocol
from .checkpoint import load_checkpoint, resolve_checkpoint
from .errors import BackendError
from .meshclean import Region, region_from_frame
from .meshing.mesh_io import read_mesh

log = logging.getLogger(__name__)

DEFAULT_POINTS = 100_000
DEFAULT_THRESHOLD_FRACTION = 0.01  # of the reference's bounding-box diagonal
SHELL_BINS = 2000  # direction bins of the shell fraction
SHELL_THRESHOLD = 0.9  # a bin counts when surface lies beyond this share of the way to the region's boundary
SHELL_POINTS = 200_000  # points sampled on the mesh for it (100 a bin on a closed shell)
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03


# ---------------------------------------------------------------------------------------------------------------
# mesh metrics


def bounding_radius(vertices: np.ndarray) -> float:
    """Half the diagonal of the (V, 3) vertices' axis-aligned bounding box."""
    return float(0.5 * np.linalg.norm(vertices.max(0) - vertices.min(0)))


def face_areas_normals(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(F,) areas and (F, 3) unit normals (zero for degenerate faces; right-hand rule on the winding)."""
    v = np.asarray(vertices, dtype=np.float64)
    cross = np.cross(v[faces[:, 1]] - v[faces[:, 0]], v[faces[:, 2]] - v[faces[:, 0]])
    norm = np.linalg.norm(cross, axis=1)
    normals = cross / np.maximum(norm, 1e-300)[:, None]
    normals[norm == 0] = 0.0
    return 0.5 * norm, normals


def sample_surface(vertices: np.ndarray, faces: np.ndarray, n: int, rng: np.random.Generator
                   ) -> tuple[np.ndarray, np.ndarray]:
    """``n`` points uniformly distributed by area on a triangle mesh, with their faces' normals.

    Args:
        vertices: (V, 3); faces: (F, 3) int.

    Returns:
        points (n, 3) float64, normals (n, 3) float64 unit.
    """
    areas, normals = face_areas_normals(vertices, faces)
    total = areas.sum()
    if len(faces) == 0 or not total > 0:
        raise ValueError("the mesh has no surface area")
    tri = rng.choice(len(faces), size=n, p=areas / total)
    u, v = rng.random(n), rng.random(n)
    flip = u + v > 1.0  # reflect into the triangle: uniform over it
    u[flip], v[flip] = 1.0 - u[flip], 1.0 - v[flip]
    vv = np.asarray(vertices, dtype=np.float64)
    a, b, c = vv[faces[tri, 0]], vv[faces[tri, 1]], vv[faces[tri, 2]]
    pts = a + u[:, None] * (b - a) + v[:, None] * (c - a)
    return pts, normals[tri]


def nearest(query: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distance (Q,) and index (Q,) of the nearest of (P, 3) ``points`` to each of (Q, 3) ``query``."""
    try:
        from scipy.spatial import cKDTree
    except ImportError as exc:
        raise BackendError("mesh metrics need scipy", hint="pip install scipy (it is in "
                           "requirements-backend.txt).") from exc
    dist, idx = cKDTree(points).query(query, k=1, workers=-1)
    return np.asarray(dist, dtype=np.float64), np.asarray(idx, dtype=np.int64)


def fscore(d_pred_to_gt: np.ndarray, d_gt_to_pred: np.ndarray, threshold: float) -> tuple[float, float, float]:
    """F-score, precision and recall at a distance threshold, from (P,) and (G,) nearest distances."""
    precision = float(np.mean(d_pred_to_gt <= threshold))
    recall = float(np.mean(d_gt_to_pred <= threshold))
    f = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
    return f, precision, recall


def mesh_metrics(pred_vertices: np.ndarray, pred_faces: np.ndarray, gt_vertices: np.ndarray, gt_faces: np.ndarray,
                 *, n_points: int = DEFAULT_POINTS, threshold: float | None = None,
                 threshold_fraction: float = DEFAULT_THRESHOLD_FRACTION, seed: int = 0) -> dict[str, float]:
    """Chamfer distance, normal consistency and F-score of a predicted mesh against a reference (same frame).

    Args:
        pred_vertices, gt_vertices: (V, 3); pred_faces, gt_faces: (F, 3) int.
        n_points: points sampled on each mesh.
        threshold: F-score distance in scene units (default: ``threshold_fraction`` of the reference's
            bounding-box diagonal).
        seed: sampling seed.

    Returns:
        ``accuracy``, ``completeness``, ``chamfer`` (scene units) and the same with ``_rel`` (over the reference's
        bounding radius), ``normal_consistency``, ``normal_consistency_signed``, ``fscore``, ``precision``,
        ``recall``, ``threshold``, ``gt_radius``, ``n_points``.
    """
    rng = np.random.default_rng(seed)
    gt_pts, gt_n = sample_surface(gt_vertices, gt_faces, n_points, rng)
    pred_pts, pred_n = sample_surface(pred_vertices, pred_faces, n_points, rng)
    radius = bounding_radius(np.asarray(gt_vertices, dtype=np.float64))
    if threshold is None:
        threshold = threshold_fraction * 2.0 * radius
    d_pg, i_pg = nearest(pred_pts, gt_pts)
    d_gp, i_gp = nearest(gt_pts, pred_pts)
    cos_pg = np.einsum("ij,ij->i", pred_n, gt_n[i_pg])
    cos_gp = np.einsum("ij,ij->i", gt_n, pred_n[i_gp])
    acc, comp = float(d_pg.mean()), float(d_gp.mean())
    f, prec, rec = fscore(d_pg, d_gp, threshold)
    return {
        "accuracy": acc, "completeness": comp, "chamfer": 0.5 * (acc + comp),
        "accuracy_rel": acc / radius, "completeness_rel": comp / radius, "chamfer_rel": 0.5 * (acc + comp) / radius,
        "normal_consistency": 0.5 * float(np.abs(cos_pg).mean() + np.abs(cos_gp).mean()),
        "normal_consistency_signed": 0.5 * float(cos_pg.mean() + cos_gp.mean()),
        "fscore": f, "precision": prec, "recall": rec, "threshold": float(threshold), "gt_radius": radius,
        "n_points": int(n_points),
    }


# ---------------------------------------------------------------------------------------------------------------
# regions: cropped mesh metrics and the shell fraction


#: A job's region in world coordinates: its unit sphere (``to_world``) and its ``roi`` box, where it has one.
region_from_job = region_from_frame


def read_region(path: str | os.PathLike[str]) -> Region:
    """A region from a JSON file or a training job.

    - JSON with ``matrix`` (4 x 4, the cube [-1, 1]^3 to world, as ``train --roi`` reads it) or ``box_min`` /
      ``box_max`` (an axis-aligned box), e.g. a room capture's ``region.json``; or with ``center`` and ``radius``
      (a sphere).
    - A job folder or checkpoint file: the job's own region (:func:`region_from_job` of the checkpoint's
      ``to_world`` and ``roi``).

    Raises:
        BackendError: naming the file, when it is missing or holds no region.
    """
    p = Path(path).expanduser()
    if p.is_dir() or p.suffix == ".pt":
        ckpt = load_checkpoint(resolve_checkpoint(p))
        return region_from_frame(ckpt["to_world"], ckpt["roi"], source=str(p))
    if not p.is_file():
        raise BackendError("region file not found", hint="Give a region JSON (a capture's region.json) or a job "
                           "folder.", file=p)
    data = capture_files.read_region(p)
    if "matrix" in data or "box_min" in data:
        return Region(box=capture_files.region_matrix(p), source=str(p))
    try:
        return Region(sphere_center=np.asarray(data["center"], dtype=np.float64),
                      sphere_radius=float(data["radius"]), source=str(p))
    except (KeyError, TypeError, ValueError) as exc:
        raise BackendError(f"cannot read the region: {exc}", hint="Give a JSON file with a 4x4 'matrix', with "
                           "'box_min' and 'box_max', or with 'center' and 'radius'.", file=p) from exc


def _clip_half_space(tris: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Clip (T, 3, 3) triangles to where the affine function with vertex values (T, 3) ``s`` is >= 0.

    A triangle with one vertex inside becomes one triangle, with two inside a quad split into two; the winding
    is kept. Returns (T', 3, 3).
    """
    inside = s >= 0
    count = inside.sum(1)
    keep = [tris[count == 3]]
    for n_in in (1, 2):
        sel = count == n_in
        if not sel.any():
            continue
        t, v, ins = tris[sel], s[sel], inside[sel]
        # rotate each triangle (keeping its winding) so that the odd vertex out comes first
        first = np.argmax(ins if n_in == 1 else ~ins, axis=1)
        order = (first[:, None] + np.arange(3)[None]) % 3
        t = np.take_along_axis(t, order[:, :, None], axis=1)
        v = np.take_along_axis(v, order, axis=1)
        a, b, c = t[:, 0], t[:, 1], t[:, 2]
        ab = a + (b - a) * (v[:, 0] / (v[:, 0] - v[:, 1]))[:, None]
        ac = a + (c - a) * (v[:, 0] / (v[:, 0] - v[:, 2]))[:, None]
        if n_in == 1:  # a inside: the corner at a
            keep.append(np.stack([a, ab, ac], 1))
        else:  # a outside: the quad ab, b, c, ac
            keep += [np.stack([ab, b, c], 1), np.stack([ab, c, ac], 1)]
    return np.concatenate(keep) if keep else np.zeros((0, 3, 3))


def crop_mesh(vertices: np.ndarray, faces: np.ndarray, region: Region) -> tuple[np.ndarray, np.ndarray]:
    """The part of a triangle mesh inside a region.

    Against a box the triangles are clipped exactly (plane by plane, so a face crossing the boundary keeps its
    inside part); against a sphere, faces are kept whole when all three vertices lie inside it (triangles cannot
    follow a curved boundary; the error is at most a face's size).

    Args:
        vertices: (V, 3); faces: (F, 3) int.

    Returns:
        vertices (3 F', 3) float64 and faces (F', 3) int64: a triangle soup (shared vertices are not welded).
    """
    v = np.asarray(vertices, dtype=np.float64)
    tris = v[np.asarray(faces, dtype=np.int64).reshape(-1, 3)]
    if region.sphere_center is not None and len(tris):
        sphere_only = Region(sphere_center=region.sphere_center, sphere_radius=region.sphere_radius)
        inside = sphere_only.ratio(tris.reshape(-1, 3)).reshape(-1, 3) <= 1.0
        tris = tris[inside.all(1)]
    if region.box is not None and len(tris):
        inv = np.linalg.inv(region.box)
        for axis in range(3):
            for sign in (1.0, -1.0):
                local = tris @ inv[:3, :3].T + inv[:3, 3]
                tris = _clip_half_space(tris, 1.0 - sign * local[..., axis])
                if not len(tris):
                    break
    return tris.reshape(-1, 3), np.arange(3 * len(tris), dtype=np.int64).reshape(-1, 3)


def region_mesh_metrics(pred_vertices: np.ndarray, pred_faces: np.ndarray, gt_vertices: np.ndarray,
                        gt_faces: np.ndarray, region: Region, **kwargs: Any) -> dict[str, Any]:
    """:func:`mesh_metrics` of both meshes cropped to ``region`` (:func:`crop_mesh`).

    A prediction with nothing inside the region (a missing object) scores an infinite Chamfer distance and F-score
    0 (``None`` in JSON).

    Args:
        pred_vertices, gt_vertices: (V, 3); pred_faces, gt_faces: (F, 3) int.
        kwargs: passed to :func:`mesh_metrics` (``n_points``, ``threshold``, ``threshold_fraction``, ``seed``).

    Returns:
        :func:`mesh_metrics`' figures (``gt_radius`` and the default threshold from the cropped reference), and
        ``region_faces`` / ``region_faces_reference``: faces of each inside the region after cropping.

    Raises:
        ValueError: the reference has no surface inside the region.
    """
    pv, pf = crop_mesh(pred_vertices, pred_faces, region)
    gv, gf = crop_mesh(gt_vertices, gt_faces, region)
    if not len(gf) or not face_areas_normals(gv, gf)[0].sum() > 0:
        raise ValueError("the reference has no surface inside the region")
    counts = {"region_faces": int(len(pf)), "region_faces_reference": int(len(gf))}
    if len(pf) and face_areas_normals(pv, pf)[0].sum() > 0:
        return {**mesh_metrics(pv, pf, gv, gf, **kwargs), **counts}
    radius = bounding_radius(gv)
    fraction = kwargs.get("threshold_fraction", DEFAULT_THRESHOLD_FRACTION)
    threshold = kwargs.get("threshold") or fraction * 2.0 * radius
    inf = float("inf")
    return {"accuracy": inf, "completeness": inf, "chamfer": inf, "accuracy_rel": inf, "completeness_rel": inf,
            "chamfer_rel": inf, "normal_consistency": 0.0, "normal_consistency_signed": 0.0, "fscore": 0.0,
            "precision": 0.0, "recall": 0.0, "threshold": float(threshold), "gt_radius": radius,
            "n_points": int(kwargs.get("n_points", DEFAULT_POINTS)), **counts}


def direction_bins(n: int = SHELL_BINS) -> np.ndarray:
    """(n, 3) unit vectors spread evenly over the sphere (a Fibonacci lattice): centres of near-equal-area bins."""
    i = np.arange(n, dtype=np.float64)
    z = 1.0 - 2.0 * (i + 0.5) / n
    r = np.sqrt(np.clip(1.0 - z * z, 0.0, None))
    az = i * math.pi * (3.0 - math.sqrt(5.0))
    return np.stack([r * np.cos(az), r * np.sin(az), z], axis=1)


def shell_bins(vertices: np.ndarray, faces: np.ndarray, region: Region | np.ndarray, *, n_bins: int = SHELL_BINS,
               threshold: float = SHELL_THRESHOLD, n_points: int = SHELL_POINTS, seed: int = 0
               ) -> tuple[np.ndarray, np.ndarray]:
    """Which directions from the region's centre hold surface near (or beyond) the region's boundary.

    Points are sampled uniformly by area on the mesh and binned by their direction from :attr:`Region.center`
    into ``n_bins`` near-equal-area bins (nearest of :func:`direction_bins`); a bin counts when one of its points
    lies beyond ``threshold`` of the distance from the centre to the boundary in that direction
    (:meth:`Region.ratio`).

    Args:
        vertices: (V, 3); faces: (F, 3) int; region: a :class:`Region` or a (4, 4) box matrix.

    Returns:
        counted (n_bins,) bool, and the bins' centre directions (n_bins, 3).
    """
    if not isinstance(region, Region):
        region = Region(box=np.asarray(region, dtype=np.float64))
    dirs = direction_bins(n_bins)
    counted = np.zeros(n_bins, dtype=bool)
    faces = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    if not len(faces) or not face_areas_normals(vertices, faces)[0].sum() > 0:
        return counted, dirs
    pts, _ = sample_surface(vertices, faces, n_points, np.random.default_rng(seed))
    far = pts[region.ratio(pts) > threshold]
    v = far - region.center
    norm = np.linalg.norm(v, axis=1)
    v = v[norm > 0] / norm[norm > 0, None]
    if len(v):
        _, idx = nearest(v, dirs)
        counted[np.unique(idx)] = True
    return counted, dirs


def shell_fraction(vertices: np.ndarray, faces: np.ndarray, region: Region | np.ndarray, **kwargs: Any) -> float:
    """The share of directions from the region's centre in which the mesh has surface near the region's boundary
    (see :func:`shell_bins`): about 1 for a closed shell along the boundary (what a field that models the
    background as a surface makes), 0 for an object well inside, a band for a plane through the region.

    Args:
        vertices: (V, 3); faces: (F, 3) int; region: a :class:`Region` or a (4, 4) box matrix (cube [-1, 1]^3
            to world).
    """
    counted, _ = shell_bins(vertices, faces, region, **kwargs)
    return float(counted.mean())


# ---------------------------------------------------------------------------------------------------------------
# image metrics


def psnr(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None = None, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB of (H, W[, C]) images, optionally over the pixels where (H, W) ``mask``."""
    diff = (np.asarray(pred, dtype=np.float64) - np.asarray(gt, dtype=np.float64)) ** 2
    if mask is not None:
        diff = diff[np.asarray(mask, dtype=bool)]
    mse = float(diff.mean()) if diff.size else 0.0
    return float("inf") if mse == 0 else 10.0 * math.log10(data_range**2 / mse)


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> np.ndarray:
    """(size,) normalized 1-D Gaussian (the SSIM window is its outer product with itself)."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    w = np.exp(-0.5 * (x / sigma) ** 2)
    return w / w.sum()


def _filter_valid(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Separable 'valid' correlation of (H, W, C) with the window ``w`` (k,) along H and W: (H-k+1, W-k+1, C)."""
    k = len(w)
    h, wd = x.shape[:2]
    rows = sum(w[i] * x[i:h - k + 1 + i] for i in range(k))
    return sum(w[i] * rows[:, i:wd - k + 1 + i] for i in range(k))


def ssim(a: np.ndarray, b: np.ndarray, data_range: float = 1.0) -> float:
    """Structural similarity (Wang et al. 2004) of two (H, W) or (H, W, C) images, mean over the valid window
    positions and the channels; Gaussian window 11 x 11, sigma 1.5, ``C1 = (0.01 L)^2``, ``C2 = (0.03 L)^2``."""
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"images differ in shape: {x.shape} vs {y.shape}")
    if x.ndim == 2:
        x, y = x[..., None], y[..., None]
    if min(x.shape[:2]) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs images of at least {SSIM_WINDOW} x {SSIM_WINDOW} pixels")
    w = gaussian_window()
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    mx, my = _filter_valid(x, w), _filter_valid(y, w)
    sxx = _filter_valid(x * x, w) - mx * mx
    syy = _filter_valid(y * y, w) - my * my
    sxy = _filter_valid(x * y, w) - mx * my
    num = (2 * mx * my + c1) * (2 * sxy + c2)
    den = (mx * mx + my * my + c1) * (sxx + syy + c2)
    return float((num / den).mean())


def mask_iou(pred: np.ndarray, gt: np.ndarray) -> float:
    """Intersection over union of two (H, W) boolean masks (1 when both are empty)."""
    from .raster import mask_iou as iou

    return iou(pred, gt)


# ---------------------------------------------------------------------------------------------------------------
# held-out views of a checkpoint


def score_views(field: Any, grid: Any, held: Any, *, step_size: float, device: Any, trained_with_masks: bool,
                with_ssim: bool = True, renders_dir: str | os.PathLike[str] | None = None,
                progress: Callable[[int, int], None] | None = None) -> list[dict[str, Any]]:
    """Render each view of ``held`` (a :class:`~backend.scene.Scene` in the model's frame) and score it: the one
    held-out scorer of the trainer and of ``eval``.

    Per view: ``name``, ``psnr`` over the whole image, ``ssim`` (with ``with_ssim``), and with masks ``mask_iou``
    (rendered opacity > 0.5 against mask > 127) and ``psnr_object`` (inside the mask). A model trained with masks
    renders on black and is compared with the masked photo. The field is left in the mode it was in.
    """
    import torch

    from .neus import render_image

    c2w = held.normalized_c2w()
    was_training = field.training
    field.eval()
    views: list[dict[str, Any]] = []
    for i in range(len(held)):
        h, w = held.images[i].shape[:2]
        bg = torch.zeros(3, device=device) if trained_with_masks else None
        out = render_image(field, grid, torch.from_numpy(held.K[i]), torch.from_numpy(c2w[i]), w, h,
                           step_size=step_size, bg_color=bg)
        pred = out["rgb"].clamp(0, 1).float().cpu().numpy().astype(np.float64)
        gt = held.images[i].astype(np.float64) / 255.0
        view: dict[str, Any] = {"name": held.names[i]}
        if held.masks is not None:
            m = held.masks[i] > 127
            if trained_with_masks:
                gt = gt * m[..., None]
            pred_mask = out["opacity"].float().cpu().numpy() > 0.5
            view["mask_iou"] = mask_iou(pred_mask, m)
            view["psnr_object"] = psnr(pred, gt, mask=m)
        view["psnr"] = psnr(pred, gt)
        if with_ssim:
            view["ssim"] = ssim(pred, gt)
        views.append(view)
        if renders_dir is not None:
            _save_pair(Path(renders_dir) / f"{Path(held.names[i]).stem}.png", gt, pred)
        if progress is not None:
            progress(i + 1, len(held))
    field.train(was_training)
    return views


def evaluate_checkpoint(checkpoint: str | os.PathLike[str], data: str | os.PathLike[str] | None = None, *,
                        holdout_every: int | None = None, max_image_size: int | None = None, device: str = "auto",
                        renders_dir: str | os.PathLike[str] | None = None,
                        progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Render the held-out views of a capture with a trained model and score them.

    Args:
        checkpoint: checkpoint file or job folder.
        data: the capture (default: the one the checkpoint was trained on).
        holdout_every: views ``i`` with ``i % k == 0`` are scored (default: the run's own ``holdout_every``, else 8).
        max_image_size: longer image side (default: the run's ``max_image_size``; 0 = full size).
        renders_dir: where to write the renders (``<name>.png``: reference | render side by side), or None.
        progress: called as ``progress(i, n)`` after each view.

    Returns:
        ``psnr``, ``ssim`` (means over the views), ``mask_iou`` and ``psnr_object`` when the capture has masks,
        ``views`` (per-view figures), ``holdout_every``, ``image_size``, ``render_s``.
    """

    from .checkpoint import field_from_checkpoint, grid_from_checkpoint, resolve_device
    from .data import load_scene

    path = resolve_checkpoint(checkpoint)
    ckpt = load_checkpoint(path)
    dev = resolve_device(device)
    field, cfg = field_from_checkpoint(ckpt, dev, path)
    field.eval()
    grid = grid_from_checkpoint(ckpt, cfg, dev, path)
    data = data or ckpt.get("data")
    if not data:
        raise BackendError("the checkpoint does not say which capture it was trained on", hint="Pass --data DIR.")
    k = holdout_every or cfg.holdout_every or 8
    if cfg.holdout_every and k != cfg.holdout_every:
        log.warning("scoring every %d-th view, but the run held out every %d-th: some scored views were trained on",
                    k, cfg.holdout_every)
    elif not cfg.holdout_every:
        log.warning("the run trained on every view: the scored views are not held out")
    size = cfg.max_image_size if max_image_size is None else max_image_size
    scene = load_scene(data, max_image_size=size, normalize=False)
    # the model's frame, whatever the automatic normalization would choose today
    scene = replace(scene, to_world=np.asarray(ckpt["to_world"], dtype=np.float64))
    idx = [i for i in range(len(scene)) if i % k == 0]
    held = scene.subset(idx)
    t0 = time.perf_counter()
    views = score_views(field, grid, held, step_size=cfg.step_size, device=dev,
                        trained_with_masks=bool(ckpt.get("has_masks")), renders_dir=renders_dir, progress=progress)
    for view, i in zip(views, idx, strict=True):
        view["index"] = i
    metrics: dict[str, Any] = {
        "psnr": float(np.mean([v["psnr"] for v in views])),
        "ssim": float(np.mean([v["ssim"] for v in views])),
    }
    if held.masks is not None:
        metrics["mask_iou"] = float(np.mean([v["mask_iou"] for v in views]))
        metrics["psnr_object"] = float(np.mean([v["psnr_object"] for v in views]))
    sizes = held.sizes
    metrics.update({"views": views, "holdout_every": k, "n_views": len(views),
                    "image_size": [int(sizes[:, 0].max()), int(sizes[:, 1].max())],
                    "render_s": time.perf_counter() - t0, "step": int(ckpt["step"])})
    return metrics


def _save_pair(path: Path, gt: np.ndarray, pred: np.ndarray) -> None:
    from .capture_files import encode_image

    pair = np.concatenate([gt, pred], axis=1)
    protocol.atomic_write_bytes(path, encode_image((np.clip(pair, 0, 1) * 255 + 0.5).astype(np.uint8)))


# ---------------------------------------------------------------------------------------------------------------
# CLI


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("mesh against a reference")
    g.add_argument("--mesh", help="predicted mesh: .ply, .npz snapshot, .obj, or a job folder (its final mesh)")
    g.add_argument("--reference", help="reference mesh in the same coordinates (e.g. a capture's gt_mesh.ply)")
    g.add_argument("--points", type=int, default=DEFAULT_POINTS, help=f"points sampled per mesh ({DEFAULT_POINTS})")
    g.add_argument("--threshold", type=float, help="F-score distance in scene units (default: --threshold-fraction "
                   "of the reference's bounding-box diagonal)")
    g.add_argument("--threshold-fraction", type=float, default=DEFAULT_THRESHOLD_FRACTION,
                   help="F-score distance as a fraction of the reference's bounding-box diagonal (0.01)")
    g.add_argument("--seed", type=int, default=0, help="sampling seed")
    g.add_argument("--region", help="crop both meshes to this region before Chamfer / F-score, and report the "
                   "shell fraction: a region JSON (a room capture's region.json: 'matrix' or 'box_min'/'box_max'; "
                   "or 'center'/'radius'), or a job folder (its unit sphere and region box); with --mesh alone, "
                   "only the shell fraction")
    g = p.add_argument_group("held-out views of a trained model")
    g.add_argument("--checkpoint", help="job folder or checkpoint file")
    g.add_argument("--data", help="the capture (default: the one the checkpoint was trained on)")
    g.add_argument("--holdout-every", type=int, help="score views i with i %% k == 0 (default: the run's, else 8)")
    g.add_argument("--max-image-size", type=int, help="longer image side (default: the run's)")
    g.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    g.add_argument("--renders", help="folder for reference | render image pairs")
    p.add_argument("--out", help="also write the metrics to this JSON file")


def run(args: argparse.Namespace, emitter: protocol.Emitter) -> int:
    mesh = args.mesh
    if mesh is None and args.reference and args.checkpoint:
        mesh = str(resolve_checkpoint(args.checkpoint).parent.parent)  # the job's final mesh
    region = getattr(args, "region", None)
    if not args.checkpoint and not args.reference and mesh and region:
        return run_region(args, emitter)
    if not args.checkpoint and not (mesh and args.reference):
        raise BackendError("nothing to evaluate", hint="Give --mesh and --reference, and/or --checkpoint "
                           "(with --data); or --mesh and --region for the shell fraction alone.")
    if mesh and not args.reference:
        raise BackendError("--mesh needs --reference", hint="Give the reference mesh (e.g. a capture's gt_mesh.ply).")
    if args.points < 100:
        raise BackendError(f"--points {args.points} is too few", hint="Use at least 100 (default 100000).")
    t0 = time.perf_counter()
    emitter.emit("start", command="eval", device=args.device if args.checkpoint else "cpu", mesh=mesh,
                 reference=args.reference, checkpoint=args.checkpoint, data=args.data, region=region)
    metrics: dict[str, Any] = {}
    if mesh:
        emitter.emit("stage", name="mesh", detail=f"{args.points} points per mesh")
        pred = read_mesh(mesh)
        gt = read_mesh(args.reference)
        if len(pred["faces"]) == 0:
            raise BackendError("the predicted mesh has no faces", hint="Train longer or check the mesh.",
                               file=pred["path"])
        try:
            if region:
                metrics.update(region_metrics(pred, gt, read_region(region), args))
            else:
                metrics.update(mesh_metrics(pred["vertices"], pred["faces"], gt["vertices"], gt["faces"],
                                            n_points=args.points, threshold=args.threshold,
                                            threshold_fraction=args.threshold_fraction, seed=args.seed))
        except ValueError as exc:
            raise BackendError(f"cannot sample the meshes: {exc}", hint="Both meshes need faces with area.") from exc
        metrics["mesh"] = str(pred["path"])
        metrics["reference"] = str(gt["path"])
    if args.checkpoint:
        emitter.emit("stage", name="views", detail="rendering held-out views")

        def progress(i: int, n: int) -> None:
            emitter.emit("progress", step=i, total=n, phase="eval", elapsed_s=time.perf_counter() - t0)

        metrics.update(evaluate_checkpoint(args.checkpoint, args.data, holdout_every=args.holdout_every,
                                           max_image_size=args.max_image_size, device=args.device,
                                           renders_dir=args.renders, progress=progress))
    return _finish(args, emitter, metrics, t0)


def region_metrics(pred: dict[str, Any], gt: dict[str, Any], region: Region, args: argparse.Namespace
                   ) -> dict[str, Any]:
    """``eval --region``: region-cropped mesh metrics of ``pred`` against ``gt`` (:func:`read_mesh` results), the
    shell fraction of each (uncropped) mesh, and the region's description."""
    try:
        out = region_mesh_metrics(pred["vertices"], pred["faces"], gt["vertices"], gt["faces"], region,
                                  n_points=args.points, threshold=args.threshold,
                                  threshold_fraction=args.threshold_fraction, seed=args.seed)
    except ValueError as exc:
        if "reference" in str(exc):
            raise BackendError(f"{exc}", hint="Check that --region belongs to this reference (same coordinates).",
                               file=gt["path"]) from exc
        raise
    out["shell_fraction"] = shell_fraction(pred["vertices"], pred["faces"], region, seed=args.seed)
    out["shell_fraction_reference"] = shell_fraction(gt["vertices"], gt["faces"], region, seed=args.seed)
    out["region"] = region.describe()
    return out


def run_region(args: argparse.Namespace, emitter: protocol.Emitter) -> int:
    """``eval --mesh M --region R`` without a reference: the shell fraction of M alone."""
    t0 = time.perf_counter()
    emitter.emit("start", command="eval", device="cpu", mesh=args.mesh, reference=None, checkpoint=None,
                 data=None, region=args.region)
    mesh = read_mesh(args.mesh)
    region = read_region(args.region)
    metrics: dict[str, Any] = {"shell_fraction": shell_fraction(mesh["vertices"], mesh["faces"], region,
                                                                seed=args.seed),
                               "mesh": str(mesh["path"]), "region": region.describe()}
    return _finish(args, emitter, metrics, t0)


def _finish(args: argparse.Namespace, emitter: protocol.Emitter, metrics: dict[str, Any], t0: float) -> int:
    """Write the metrics (``--out``, the plain CLI's table) and the ``done`` message."""
    if args.out:
        protocol.atomic_write_text(args.out, json.dumps(protocol.clean_json(metrics), indent=1))
    if not emitter.json_mode:
        emitter.stream.write(format_metrics(metrics) + "\n")
    emitter.emit("done", metrics=metrics, elapsed_s=time.perf_counter() - t0, cancelled=False)
    return protocol.EXIT_OK


def format_metrics(metrics: dict[str, Any]) -> str:
    """A small human-readable table of the scalar metrics."""
    lines = []
    for key, value in metrics.items():
        if isinstance(value, float):
            lines.append(f"  {key:28s} {value:.6g}")
        elif isinstance(value, (int, str)):
            lines.append(f"  {key:28s} {value}")
    return "\n".join(lines)
