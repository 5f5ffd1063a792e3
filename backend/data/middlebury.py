"""Middlebury multi-view stereo (Seitz et al. 2006): ``<name>_par.txt`` beside the images.

The file's first line is the number of images; then one line per image:
``imgname.png k11 k12 k13 k21 k22 k23 k31 k32 k33 r11 r12 r13 r21 r22 r23 r31 r32 r33 t1 t2 t3`` with
``P = K [R | t]`` world-to-camera, OpenCV axes, pixel origin top-left. We read the principal point with the
OpenCV convention (top-left pixel centre at (0, 0)); the half pixel this could be off by is far below the
calibration's own accuracy. An optional ``masks/`` (or ``mask/``) folder beside the images is used.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import BackendError
from ..scene import Scene
from .cameras import c2w_from_w2c, orthonormalize
from .images import LoadedImages, find_subfolder, load_images, match_masks


def find_par_file(path: Path) -> Path | None:
    """The ``*_par.txt`` for ``path`` (the file itself or the only one in the folder)."""
    if path.is_file():
        return path if path.name.endswith("_par.txt") else None
    if not path.is_dir():
        return None
    found = sorted(path.glob("*_par.txt"))
    if len(found) > 1:
        raise BackendError(f"Several camera files here: {', '.join(p.name for p in found)}",
                           "Choose one of the *_par.txt files instead of the folder.", path)
    return found[0] if found else None


def read_par_file(par: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Parse a Middlebury ``*_par.txt``.

    Returns:
        names: N image names.
        K: (N, 3, 3).
        c2w: (N, 4, 4) camera-to-world, OpenCV axes.
    """
    try:
        text = par.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise BackendError(f"Cannot read the camera file: {exc}", "Check the file's permissions.", par) from exc
    # (line number in the file, its fields) of the lines that hold something
    lines = [(n, ln.split()) for n, ln in enumerate(text.splitlines(), start=1) if ln.strip()]
    if not lines:
        raise BackendError("The camera file is empty", "It must hold the image count and one line per image.",
                           par)
    declared = None
    if len(lines[0][1]) == 1:
        try:
            declared = int(lines[0][1][0])
        except ValueError as exc:
            raise BackendError(f"Line {lines[0][0]}: the first line is not the image count",
                               "Fix or re-export the file.", par) from exc
        lines = lines[1:]
    if declared is not None and declared != len(lines):
        raise BackendError(f"The camera file declares {declared} images but holds {len(lines)} camera lines",
                           "Fix the count on the first line or the camera lines.", par)
    names, Ks, c2ws = [], [], []
    for lineno, tok in lines:
        if len(tok) != 22:
            raise BackendError(f"Line {lineno} has {len(tok)} fields instead of 22 (name, K 9, R 9, t 3)",
                               "Fix or re-export the file.", par)
        try:
            v = np.array([float(x) for x in tok[1:]])
        except ValueError as exc:
            raise BackendError(f"Line {lineno} ({tok[0]}) holds a value that is not a number",
                               "Fix or re-export the file.", par) from exc
        if not np.all(np.isfinite(v)):
            bad = ", ".join(tok[1:][k] for k in np.flatnonzero(~np.isfinite(v))[:3])
            raise BackendError(f"Line {lineno} ({tok[0]}) holds a value that is not a finite number ({bad})",
                               "The calibration of that camera is broken: fix or re-export the file, or remove "
                               "the line (and lower the count on the first line).", par)
        if abs(v[8]) < 1e-12 or v[0] == 0 or v[4] == 0:
            raise BackendError(f"Line {lineno} ({tok[0]}): K is not a camera matrix (a zero focal length or "
                               "K[2][2])", "Fix or re-export the file.", par)
        names.append(tok[0])
        Ks.append(v[:9].reshape(3, 3) / v[8])
        c2ws.append(c2w_from_w2c(orthonormalize(v[9:18].reshape(3, 3)), v[18:21]))
    return names, np.stack(Ks), np.stack(c2ws)


def load_middlebury(path: str | os.PathLike[str], *, max_image_size: int = 0) -> Scene:
    """Load a Middlebury folder (or its ``*_par.txt``); images are listed by the camera file."""
    path = Path(path)
    if not path.exists():
        raise BackendError("The path does not exist", "Check the path you chose.", path)
    par = find_par_file(path)
    if par is None:
        raise BackendError("No *_par.txt camera file here", "Choose the Middlebury folder or its _par.txt.", path)
    root = par.parent
    names, K, c2w = read_par_file(par)
    image_paths = [root / n for n in names]
    for n, p in zip(names, image_paths, strict=True):
        if not p.is_file():
            raise BackendError(f"The camera file lists {n} but there is no such image",
                               "Put the image beside the camera file or remove its line.", par)
    mask_dir = find_subfolder(root, ("masks", "mask"))
    mask_paths = match_masks(image_paths, mask_dir, names) if mask_dir is not None else None
    loaded = load_images(image_paths, mask_paths, max_image_size=max_image_size)
    check_one_size(loaded, image_paths, par)
    idx = loaded.kept
    return Scene(names=loaded.pick(names), images=loaded.images, K=loaded.scale_K(K[idx]), c2w=c2w[idx],
                 masks=loaded.masks, source="middlebury", root=root, image_paths=loaded.pick(image_paths),
                 skipped=loaded.skipped)


def check_one_size(loaded: LoadedImages, image_paths: list[Path], par: Path) -> None:
    """Refuse images of different sizes: a Middlebury file gives K for the pixels of a calibrated camera, and
    nothing says which of several sizes that was (an image resized afterwards would train with a wrong K)."""
    sizes = {(int(w), int(h)) for w, h in loaded.full_sizes}
    if len(sizes) <= 1:
        return
    first = tuple(int(v) for v in loaded.full_sizes[0])
    i = next(k for k, s in enumerate(loaded.full_sizes) if (int(s[0]), int(s[1])) != first)
    a, b = loaded.pick(image_paths)[0], loaded.pick(image_paths)[i]
    raise BackendError(
        f"The images differ in size ({a.name} is {first[0]}x{first[1]}, {b.name} is "
        f"{int(loaded.full_sizes[i][0])}x{int(loaded.full_sizes[i][1])}), but the camera file gives each camera's "
        "intrinsics for the images as calibrated, without their size",
        "Use the images at the size they were calibrated at (all the same size), or, for cameras that really "
        "differ, describe them in a transforms.json with per-frame w and h.", b)
