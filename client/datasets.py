"""What an input folder holds, judged from file names only (no bpy, no image decoding).

A *posed* capture (cameras known) goes straight to training; a folder of plain photos first goes through pose
estimation. The backend's loaders make the final decision and report problems with a hint; this only picks the
pipeline and catches an empty or missing folder before any process starts.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

#: Photo extensions (lower case), as the backend's image loader accepts them.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")


@dataclass(frozen=True)
class FolderCheck:
    """The verdict on an input folder: ``kind`` is "posed", "photos", or "" with ``problem`` and ``hint`` set."""

    path: Path
    kind: str
    n_images: int = 0
    layout: str = ""  # which posed layout was recognised
    problem: str = ""
    hint: str = ""


def list_images(folder: str | os.PathLike[str]) -> list[Path]:
    """Image files directly in ``folder`` (not in sub-folders), sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def posed_layout(folder: str | os.PathLike[str]) -> str:
    """The posed layout ``folder`` holds ("neus", "transforms", "colmap", "middlebury", "job"), or ""."""
    f = Path(folder)
    if f.is_file() and f.suffix == ".json":
        return "transforms"
    if not f.is_dir():
        return ""
    if (f / "cameras_sphere.npz").is_file() or (f / "cameras.npz").is_file():
        return "neus"
    if any(f.glob("transforms*.json")):
        return "transforms"
    if (f / "poses" / "sparse").is_dir() or (f / "poses" / "report.json").is_file():
        return "job"
    if (f / "sparse").is_dir() or (f / "cameras.bin").is_file() or (f / "cameras.txt").is_file():
        return "colmap"
    if any(f.glob("*_par.txt")):
        return "middlebury"
    return ""


def check_input_folder(folder: str | os.PathLike[str]) -> FolderCheck:
    """Classify an input folder, or say what is wrong with it and what to do."""
    raw = str(folder).strip()
    if not raw:
        return FolderCheck(Path(), "", problem="no photo folder is set",
                           hint="Choose the folder that holds your photos in the sidebar (Photos).")
    path = Path(raw).expanduser()
    if not path.exists():
        return FolderCheck(path, "", problem=f"the folder {path} does not exist", hint="Choose an existing folder.")
    layout = posed_layout(path)
    if layout:
        n = len(list_images(path)) or len(list_images(path / "image")) or len(list_images(path / "images"))
        return FolderCheck(path, "posed", n_images=n, layout=layout)
    images = list_images(path)
    if not images:
        sub = next((p for p in (path / "images", path / "image") if list_images(p)), None)
        if sub is not None:
            return FolderCheck(sub, "photos", n_images=len(list_images(sub)))
        return FolderCheck(path, "", problem=f"the folder {path} holds no photos",
                           hint=f"Choose a folder with {', '.join(e[1:] for e in IMAGE_EXTENSIONS[:3])} photos "
                                "(at least 3 views of the object, overlapping).")
    if len(images) < 3:
        return FolderCheck(path, "", n_images=len(images), problem=f"only {len(images)} photo(s) in {path}",
                           hint="Take at least 3 overlapping photos (20 or more around the object work best).")
    return FolderCheck(path, "photos", n_images=len(images))
