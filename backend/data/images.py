"""Reading images and masks from disk: formats, bit depths, resizing at load time, threaded loading.

Choices (kept in one place so every loader behaves the same):

- Accepted extensions: :data:`IMAGE_EXTENSIONS`, case-insensitive; files are listed in natural order
  (``img2`` before ``img10``).
- EXIF orientation is **not** applied. Calibrated cameras (COLMAP, NeuS, transforms.json, Middlebury) describe the
  pixel array as it is stored in the file; rotating it silently would break every K and pose. COLMAP itself ignores
  the tag too. (The pose estimator, which makes its own cameras, may choose to bake the rotation into new files.)
- 16-bit images are mapped to 8 bits (``v >> 8``), grayscale and palette images become RGB, alpha is returned
  separately (transforms.json captures use it as the mask), CMYK and the like go through Pillow's RGB conversion.
- Masks: any image; the brightest of its colour channels (or its alpha, for a cut-out whose colour is constant)
  thresholded at half range to 0/255.
- Arrays come back writable and C-contiguous (Pillow's own are read-only views of bytes).
- ``max_image_size`` resizes during loading (so a full-size copy never lives in memory). JPEGs are decoded at
  1/2, 1/4 or 1/8 size by libjpeg when that divides the image exactly, then finished with a Lanczos filter.
  Intrinsics follow with :func:`scale_intrinsics`, which respects the OpenCV pixel-centre convention.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from ..errors import BackendError
from ..threads import default_workers
from .cameras import scale_intrinsics

log = logging.getLogger(__name__)

#: Image file extensions the loaders accept (compared lower-case).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")

_EXIF_ORIENTATION = 0x0112

T = TypeVar("T")


def natural_key(text: str) -> list[object]:
    """Sort key that orders embedded numbers by value: ``img2 < img10``."""
    return [int(tok) if tok.isdigit() else tok.lower() for tok in re.split(r"(\d+)", text)]


def is_image_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def list_images(folder: str | os.PathLike[str], what: str = "images") -> list[Path]:
    """The image files directly in ``folder``, in natural order.

    Raises:
        BackendError: the folder is missing or holds no image file.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise BackendError(f"The {what} folder does not exist", "Check the path you chose.", folder)
    files = sorted((p for p in folder.iterdir() if is_image_file(p)), key=lambda p: natural_key(p.name))
    if not files:
        raise BackendError(f"No {what} found in the folder",
                           f"Put the {what} there as {', '.join(IMAGE_EXTENSIONS)} files.", folder)
    return files


# ---------------------------------------------------------------------------------------------------------------
# single files


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    """Any integer or float array -> uint8 (16-bit by its high byte, floats in [0, 1] scaled)."""
    if arr.dtype.kind == "u" and arr.dtype.itemsize == 2:  # I;16, I;16B, ...
        return (arr >> 8).astype(np.uint8)
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * 255
    if np.issubdtype(arr.dtype, np.floating):
        scale = 255.0 if float(np.nanmax(arr, initial=0.0)) <= 1.0 else 1.0
        return np.clip(np.nan_to_num(arr) * scale + 0.5, 0, 255).astype(np.uint8)
    # Pillow may open 16-bit grayscale as mode I (int32, 0..65535): its range tells 8 from 16 bits.
    top = int(arr.max(initial=0))
    if top > 255:
        return (np.clip(arr, 0, 65535).astype(np.uint32) >> 8).astype(np.uint8)
    return np.clip(arr, 0, 255).astype(np.uint8)


class DamagedImageError(BackendError):
    """An image file that cannot be decoded completely (truncated, corrupt, not an image)."""


def _open(path: Path) -> Image.Image:
    return _open_for_size(path, 0)[0]


def _open_for_size(path: Path, max_size: int) -> tuple[Image.Image, tuple[int, int]]:
    """Open ``path``, decoding a JPEG at a reduced size when that is exact; returns (image, full (w, h))."""
    try:
        im = Image.open(path)
        full = im.size
        if max_size > 0 and im.format == "JPEG":
            w, h = full
            target = target_size(w, h, max_size)
            scale = 1
            for s in (8, 4, 2):  # libjpeg's scaled IDCT keeps pixel centres aligned when the size divides exactly
                if w % s == 0 and h % s == 0 and w // s >= target[0] and h // s >= target[1]:
                    scale = s
                    break
            if scale > 1:
                im.draft(im.mode, (w // scale, h // scale))
                if im.size != (w // scale, h // scale):  # libjpeg chose differently: decode at full size
                    im = Image.open(path)
        im.load()
    except FileNotFoundError as exc:
        raise BackendError("Image file not found", "Check that the file exists and is readable.", path) from exc
    except PermissionError as exc:
        raise BackendError("No permission to read the image", "Make the file readable for you.", path) from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise DamagedImageError(f"Cannot read the image: {exc}",
                                "The file is corrupt or not an image; replace it or remove it (and its camera).",
                                path) from exc
    return im, full


def image_decode_problem(path: str | os.PathLike[str]) -> str | None:
    """Why the image at ``path`` does not decode completely, or None when every pixel decodes.

    Decodes the whole file with truncated images refused (a JPEG cut short would otherwise load with its missing
    rows filled grey, and a re-encoded copy would carry them on). JPEGs are decoded at 1/8 scale: libjpeg still
    reads every byte of the compressed data, so truncation and broken data are found at a fraction of the cost.
    Files Pillow does not know as images are not judged here (None; another reader may handle them).
    """
    path = Path(path)
    refuse = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False  # a process-wide switch: make sure it refuses while we check
    try:
        with Image.open(path) as im:
            if im.format == "JPEG":
                im.draft(im.mode, (max(1, im.width // 8), max(1, im.height // 8)))
            im.load()
    except UnidentifiedImageError:
        return None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        return str(exc) or type(exc).__name__
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = refuse
    return None


def _pil_to_rgb_alpha(im: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    """(H, W, 3) uint8 RGB and (H, W) uint8 alpha or None."""
    mode = im.mode
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        mode = im.mode
    if mode in ("1", "L", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        g = _to_uint8(np.asarray(im))
        return np.repeat(g[..., None], 3, axis=2), None
    if mode in ("LA", "La", "PA"):
        a = np.asarray(im.convert("LA"))
        return np.repeat(a[..., :1], 3, axis=2).copy(), a[..., 1].copy()
    if mode in ("RGBA", "RGBa"):
        a = np.asarray(im.convert("RGBA") if mode == "RGBa" else im)
        return np.ascontiguousarray(a[..., :3]), a[..., 3].copy()
    if mode == "RGB":
        return np.asarray(im), None
    arr = np.asarray(im)
    if arr.ndim == 3 and arr.shape[2] in (3, 4) and arr.dtype != np.uint8:  # e.g. 16-bit RGB(A) TIFF
        arr = _to_uint8(arr)
        return np.ascontiguousarray(arr[..., :3]), (arr[..., 3].copy() if arr.shape[2] == 4 else None)
    return np.asarray(im.convert("RGB")), None


def _warn_orientation(im: Image.Image, path: Path) -> None:
    try:
        orientation = im.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception:  # noqa: BLE001 - broken EXIF must not stop loading
        return
    if orientation not in (None, 1):
        log.warning("%s has EXIF orientation %s; it is ignored (cameras refer to the stored pixels)",
                    path.name, orientation)


def read_image(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray | None]:
    """Read one image as it is stored (no EXIF rotation).

    Returns:
        rgb: (H, W, 3) uint8.
        alpha: (H, W) uint8, or None when the file has no alpha channel.
    """
    path = Path(path)
    im = _open(path)
    _warn_orientation(im, path)
    rgb, alpha = _pil_to_rgb_alpha(im)
    return _writable(rgb), None if alpha is None else _writable(alpha)


def _writable(a: np.ndarray) -> np.ndarray:
    return np.require(a, requirements=["C", "W"])


def _binary(a: np.ndarray) -> np.ndarray:
    """uint8 -> 0/255 at the half-range threshold."""
    return (a >> 7) * np.uint8(255)


def mask_from_array(arr: np.ndarray) -> np.ndarray:
    """A mask image array (H, W), (H, W, C) of any depth -> (H, W) uint8 with values 0 or 255.

    Colour masks count a pixel as object when any channel is at least half range; a cut-out (constant colour,
    shape in the alpha channel) is described by its alpha.
    """
    a = np.asarray(arr)
    if a.ndim == 3:
        c = a.shape[2]
        if c in (2, 4):
            colour = a[..., : c - 1]
            if bool((colour == colour[:1, :1]).all()):
                a = a[..., -1]
                c = 0
            else:
                c -= 1
        if c:
            m = a[..., 0]
            for k in range(1, c):
                m = np.maximum(m, a[..., k])
            a = m
    return _binary(_to_uint8(a))


def read_mask(path: str | os.PathLike[str]) -> np.ndarray:
    """Read one mask file as (H, W) uint8, 0 = background, 255 = object."""
    path = Path(path)
    im = _open(path)
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    return mask_from_array(np.asarray(im))


# ---------------------------------------------------------------------------------------------------------------
# resizing


def target_size(width: int, height: int, max_size: int) -> tuple[int, int]:
    """(w, h) after shrinking so that the longer side is at most ``max_size`` (unchanged when already smaller)."""
    if max_size <= 0 or max(width, height) <= max_size:
        return width, height
    f = max_size / max(width, height)
    return max(1, round(width * f)), max(1, round(height * f))


def resize_image(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W, C) uint8 -> (h, w, C) uint8 with a Lanczos filter; ``size`` is (w, h)."""
    if (rgb.shape[1], rgb.shape[0]) == tuple(size):
        return rgb
    return np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.LANCZOS))


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W) 0/255 -> (h, w) 0/255: area-weighted (box filter) then thresholded at half coverage."""
    if (mask.shape[1], mask.shape[0]) == tuple(size):
        return mask
    return _binary(np.asarray(Image.fromarray(mask).resize(size, Image.Resampling.BOX)))


# ---------------------------------------------------------------------------------------------------------------
# many files


@dataclass
class LoadedImages:
    """The result of :func:`load_images`: the images that decoded completely, and which were left out.

    Attributes:
        images: K (h, w, 3) uint8 arrays (after any resize), one per kept image.
        masks: None or K (h, w) uint8 0/255 arrays.
        full_sizes: (K, 2) int, (w, h) of each kept file as stored.
        scales: (K, 2) float, (new_w / w, new_h / h) per kept image; use with :func:`scale_intrinsics`.
        kept: (K,) int indices of the kept images among the N paths given.
        skipped: ``{"name", "reason", "file"}`` for each damaged image left out (in order).
    """

    images: list[np.ndarray]
    masks: list[np.ndarray] | None
    full_sizes: np.ndarray
    scales: np.ndarray
    kept: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    skipped: list[dict[str, str]] = field(default_factory=list)

    def pick(self, items: Sequence[T]) -> list[T]:
        """The entries of a per-image list (N long) that belong to the kept images."""
        return [items[int(i)] for i in self.kept]

    def scale_K(self, K: np.ndarray) -> np.ndarray:
        """(K, 3, 3) full-resolution intrinsics of the kept images -> intrinsics of the loaded images."""
        K = np.asarray(K, dtype=np.float64).reshape(-1, 3, 3)
        return np.stack([scale_intrinsics(k, sx, sy) for k, (sx, sy) in zip(K, self.scales, strict=True)])


def _load_one(path: Path, mask_path: Path | None, max_size: int, alpha_as_mask: bool
              ) -> tuple[np.ndarray, np.ndarray | None, tuple[int, int], tuple[float, float]]:
    im, (w, h) = _open_for_size(path, max_size)
    _warn_orientation(im, path)
    rgb, alpha = _pil_to_rgb_alpha(im)
    size = target_size(w, h, max_size)
    rgb = resize_image(rgb, size)
    mask = None
    if mask_path is not None:
        mask = read_mask(mask_path)
        if mask.shape != (h, w):
            raise BackendError(f"The mask is {mask.shape[1]}x{mask.shape[0]} but its image {path.name} is {w}x{h}",
                               "Masks must have the same size as their images; re-export them at full size.",
                               mask_path)
        mask = resize_mask(mask, size)
    elif alpha_as_mask and alpha is not None:
        if alpha.shape != rgb.shape[:2]:
            alpha = np.asarray(Image.fromarray(alpha).resize(size, Image.Resampling.BOX))
        mask = _binary(alpha)
    return _writable(rgb), None if mask is None else _writable(mask), (w, h), (size[0] / w, size[1] / h)


def load_images(paths: Sequence[Path], mask_paths: Sequence[Path] | None = None, *, max_image_size: int = 0,
                alpha_as_mask: bool = False, workers: int | None = None, skip_damaged: bool = True) -> LoadedImages:
    """Load images (and masks) in parallel threads (Pillow decodes without holding the GIL).

    Every image is decoded completely (a truncated or corrupt file raises, never comes back half grey). A damaged
    image is left out (``skipped``, with the reason; the loaders drop its camera too) unless ``skip_damaged`` is
    False; a damaged mask is always an error.

    Args:
        paths: N image files.
        mask_paths: None or N mask files (same size as their images, checked).
        max_image_size: longer side after loading; 0 keeps the full size.
        alpha_as_mask: without ``mask_paths``, use the images' alpha channel as masks when every image has one
            and at least one of them is not fully opaque.
        workers: threads; default min(8, cores).
        skip_damaged: leave damaged images out instead of raising.

    Raises:
        BackendError: naming the first file that cannot be read (an image when none of them can be, or
            ``skip_damaged`` is False) or whose mask does not fit.
    """
    paths = [Path(p) for p in paths]
    if mask_paths is not None and len(mask_paths) != len(paths):
        raise ValueError("one mask path per image")
    masks_in = [Path(m) for m in mask_paths] if mask_paths is not None else [None] * len(paths)
    n_workers = workers or default_workers()
    args = [(p, m, max_image_size, alpha_as_mask and mask_paths is None) for p, m in zip(paths, masks_in, strict=True)]

    def one(a: tuple[Path, Path | None, int, bool]) -> tuple[np.ndarray, np.ndarray | None, tuple[int, int],
                                                              tuple[float, float]] | DamagedImageError:
        try:
            return _load_one(*a)
        except DamagedImageError as exc:
            if not skip_damaged or exc.file != str(a[0]):  # a damaged mask is the user's to fix
                raise
            return exc

    if n_workers <= 1 or len(paths) <= 1:
        outcomes = [one(a) for a in args]
    else:
        with ThreadPoolExecutor(max_workers=n_workers) as pool:
            outcomes = list(pool.map(one, args))
    damaged = [(i, r) for i, r in enumerate(outcomes) if isinstance(r, DamagedImageError)]
    if paths and len(damaged) == len(paths):
        first = damaged[0][1]
        raise BackendError(f"None of the {len(paths)} images can be read ({first.message})",
                           "The files are corrupt or not images; replace them.", first.file)
    skipped = [{"name": paths[i].name, "reason": r.message.removeprefix("Cannot read the image: "),
                "file": str(paths[i])} for i, r in damaged]
    for s in skipped:
        log.warning("left out the damaged image %s: %s", s["file"], s["reason"])
    kept = np.array([i for i, r in enumerate(outcomes) if not isinstance(r, DamagedImageError)], dtype=np.int64)
    results = [outcomes[i] for i in kept]
    images = [r[0] for r in results]
    found = [r[1] for r in results]
    masks: list[np.ndarray] | None = None
    if found and all(m is not None for m in found):
        checked = [m for m in found if m is not None]
        # alpha becomes the masks only when every image has alpha and it actually cuts something out
        if mask_paths is not None or any(int(m.min()) < 255 for m in checked):
            masks = checked
    return LoadedImages(images=images, masks=masks,
                        full_sizes=np.array([r[2] for r in results], dtype=np.int64).reshape(-1, 2),
                        scales=np.array([r[3] for r in results], dtype=np.float64).reshape(-1, 2),
                        kept=kept, skipped=skipped)


# ---------------------------------------------------------------------------------------------------------------
# pairing masks with images


def _match_keys(rel: str) -> list[str]:
    """Keys under which a file ``rel`` (relative to its folder) may be matched: folder/stem, folder/number."""
    p = Path(rel)
    parent = p.parent.as_posix()
    keys = [f"{parent}/{p.stem}"]
    if p.stem.isdigit():
        keys.append(f"{parent}/#{int(p.stem)}")
    return keys


def find_subfolder(root: Path, names: Sequence[str] = ("mask", "masks")) -> Path | None:
    """The first of ``root/<name>`` that is a folder, or None."""
    for n in names:
        if (root / n).is_dir():
            return root / n
    return None


def match_masks(image_paths: Sequence[Path], mask_dir: Path, image_names: Sequence[str] | None = None
                ) -> list[Path]:
    """One mask file per image from ``mask_dir``.

    A mask matches its image by (in this order) the same relative name, the name plus ``.png``, the same stem
    with any image extension, or the same number (``000.png`` for ``000000.jpg``, the DTU/IDR layout). When nothing
    matches by name but the folder holds exactly as many masks as there are images, they are paired in natural
    order (what NeuS does).

    Args:
        image_paths: N image files.
        mask_dir: the mask folder.
        image_names: N names relative to the image folder (may contain sub-folders); default the file names.

    Raises:
        BackendError: an image without a mask.
    """
    names = list(image_names) if image_names is not None else [p.name for p in image_paths]
    files = sorted((p for p in mask_dir.rglob("*") if is_image_file(p)),
                   key=lambda q: natural_key(q.relative_to(mask_dir).as_posix()))
    by_rel = {p.relative_to(mask_dir).as_posix(): p for p in files}
    by_key: dict[str, Path] = {}
    for p in files:
        for key in _match_keys(p.relative_to(mask_dir).as_posix()):
            by_key.setdefault(key, p)
    out: list[Path | None] = []
    for name in names:
        rel = Path(name).as_posix()
        hit = by_rel.get(rel) or by_rel.get(rel + ".png")
        if hit is None:
            hit = next((by_key[k] for k in _match_keys(rel) if k in by_key), None)
        out.append(hit)
    if all(p is not None for p in out):
        return out  # type: ignore[return-value]
    if not any(p is not None for p in out) and len(files) == len(names):
        return files
    missing = names[next(i for i, p in enumerate(out) if p is None)]
    raise BackendError(f"No mask for image {missing} in the mask folder "
                       f"({sum(p is not None for p in out)} of {len(names)} images have one)",
                       "Give every image a mask with the same name (or name + .png), or remove the mask folder.",
                       mask_dir)
