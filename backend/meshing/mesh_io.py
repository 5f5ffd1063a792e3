"""Triangle meshes on disk and small mesh helpers (numpy only: Blender's Python can import it).

The PLY files here are what the backend writes (the final mesh, ground truth of synthetic captures) and what
``eval`` reads; :func:`write_ply` writes atomically. :func:`read_mesh` reads any mesh file the project meets (the
backend's PLY, a snapshot ``.npz``, a Wavefront OBJ), for ``eval`` and for synthetic captures in Blender.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from .. import protocol
from ..errors import BackendError
from ..protocol import atomic_write_bytes


def weld(verts: np.ndarray, faces: np.ndarray, decimals: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Merge vertices at the same position (in sample-index units) and drop degenerate faces."""
    key = np.round(verts * 10**decimals).astype(np.int64)
    _, first, inverse = np.unique(key, axis=0, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    new_faces = inverse[faces]
    a, b, c = new_faces[:, 0], new_faces[:, 1], new_faces[:, 2]
    ok = (a != b) & (b != c) & (a != c)
    return verts[first], new_faces[ok]


def vertex_normals(verts: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(V, 3) area-weighted unit vertex normals of a triangle mesh."""
    v = verts.astype(np.float64)
    fn = np.cross(v[faces[:, 1]] - v[faces[:, 0]], v[faces[:, 2]] - v[faces[:, 0]])
    out = np.zeros_like(v)
    for k in range(3):
        np.add.at(out, faces[:, k], fn)
    norm = np.linalg.norm(out, axis=1, keepdims=True)
    return (out / np.maximum(norm, 1e-12)).astype(np.float32)


def signed_volume(verts: np.ndarray, faces: np.ndarray) -> float:
    """Signed volume enclosed by a closed mesh: positive when its triangles face outward."""
    v = verts.astype(np.float64)
    a, b, c = v[faces[:, 0]], v[faces[:, 1]], v[faces[:, 2]]
    return float(np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6.0)


def write_ply(path: str, verts: np.ndarray, faces: np.ndarray, colors: np.ndarray | None = None) -> None:
    """Binary little-endian PLY with optional uint8 RGB(A) vertex colours, written atomically."""
    v = np.asarray(verts, dtype="<f4")
    f = np.asarray(faces, dtype="<i4")
    props = ["property float x", "property float y", "property float z"]
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    if colors is not None:
        names = ["red", "green", "blue", "alpha"][: colors.shape[1]]
        props += [f"property uchar {n}" for n in names]
        fields += [(n, "u1") for n in names]
    header = "\n".join(["ply", "format binary_little_endian 1.0", f"element vertex {len(v)}", *props,
                        f"element face {len(f)}", "property list uchar int vertex_indices", "end_header"]) + "\n"
    vrec = np.empty(len(v), dtype=fields)
    vrec["x"], vrec["y"], vrec["z"] = v[:, 0], v[:, 1], v[:, 2]
    if colors is not None:
        for i, name in enumerate(names):
            vrec[name] = colors[:, i]
    frec = np.empty(len(f), dtype=[("n", "u1"), ("i", "<i4", (3,))])
    frec["n"] = 3
    frec["i"] = f
    atomic_write_bytes(path, header.encode("ascii") + vrec.tobytes() + frec.tobytes())


def read_ply(path: str) -> dict[str, np.ndarray]:
    """Read a binary little-endian PLY written by :func:`write_ply` (triangles only)."""
    with open(path, "rb") as fh:
        data = fh.read()
    end = data.index(b"end_header\n") + len(b"end_header\n")
    header = data[:end].decode("ascii").splitlines()
    n_v = n_f = 0
    fields: list[tuple[str, str]] = []
    current = None
    for line in header:
        parts = line.split()
        if parts[:2] == ["element", "vertex"]:
            n_v, current = int(parts[2]), "vertex"
        elif parts[:2] == ["element", "face"]:
            n_f, current = int(parts[2]), "face"
        elif parts[0] == "property" and current == "vertex":
            fields.append((parts[2], "<f4" if parts[1] == "float" else "u1"))
    vrec = np.frombuffer(data, dtype=fields, count=n_v, offset=end)
    frec = np.frombuffer(data, dtype=[("n", "u1"), ("i", "<i4", (3,))], count=n_f, offset=end + vrec.nbytes)
    out = {"vertices": np.stack([vrec["x"], vrec["y"], vrec["z"]], 1), "faces": frec["i"].copy()}
    cnames = [n for n in ("red", "green", "blue", "alpha") if n in vrec.dtype.names]
    if cnames:
        out["colors"] = np.stack([vrec[n] for n in cnames], 1)
    return out


# ---------------------------------------------------------------------------------------------------------------
# reading any mesh file: OBJ, the backend's PLY, a snapshot


def read_obj(path: str | os.PathLike[str]) -> tuple[np.ndarray, list[list[int]]]:
    """Vertices and polygons of a Wavefront OBJ (``v`` and ``f`` lines; texture/normal indices ignored).

    Returns:
        vertices (V, 3) float64, polygons: lists of 0-based vertex indices (negative OBJ indices resolved).
    """
    verts: list[list[float]] = []
    polys: list[list[int]] = []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if line.startswith("v "):
                parts = line.split()
                verts.append([float(parts[1]), float(parts[2]), float(parts[3])])
            elif line.startswith("f "):
                idx = []
                for tok in line.split()[1:]:
                    i = int(tok.split("/", 1)[0])
                    idx.append(i - 1 if i > 0 else len(verts) + i)
                if len(idx) >= 3:
                    polys.append(idx)
    return np.asarray(verts, dtype=np.float64).reshape(-1, 3), polys


def triangulate(polygons: list[list[int]]) -> np.ndarray:
    """(F, 3) int64 fan triangulation of polygons (each a list of at least 3 vertex indices)."""
    tris = [(p[0], p[k], p[k + 1]) for p in polygons for k in range(1, len(p) - 1)]
    return np.asarray(tris, dtype=np.int64).reshape(-1, 3)


def read_mesh(path: str | os.PathLike[str], polygons: bool = False) -> dict[str, Any]:
    """A triangle mesh from ``.ply`` (binary, as the backend writes it), ``.npz`` (a snapshot) or ``.obj``.

    A job folder means its final mesh. Returns ``vertices`` (V, 3) float64 and ``faces`` (F, 3) int64; with
    ``polygons`` also ``polygons`` (the file's own polygons for OBJ, else the triangles as lists).

    Raises:
        BackendError: missing or unreadable file.
    """
    p = Path(path)
    if p.is_dir():
        job = protocol.JobLayout(p)
        p = job.final_ply if job.final_ply.is_file() else job.final_mesh
    if not p.is_file():
        raise BackendError("mesh file not found", hint="Give a .ply, .obj or .npz file, or a job folder.", file=p)
    suffix = p.suffix.lower()
    try:
        if suffix == ".obj":
            verts, polys = read_obj(p)
            faces = triangulate(polys)
        elif suffix == ".npz":
            snap = protocol.read_snapshot(p)
            verts, faces, polys = snap["vertices"], snap["faces"], None
        elif suffix == ".ply":
            with open(p, "rb") as fh:
                head = fh.read(200)
            if b"binary_little_endian" not in head:
                raise BackendError("only binary little-endian PLY files are read",
                                   hint="Convert the mesh (e.g. save it from Blender as binary PLY) or use OBJ.",
                                   file=p)
            mesh = read_ply(str(p))
            verts, faces, polys = mesh["vertices"], mesh["faces"], None
        else:
            raise BackendError(f"unknown mesh format {suffix or '(none)'}", hint="Use .ply, .obj or .npz.", file=p)
    except (OSError, ValueError, KeyError, IndexError, protocol.ProtocolError) as exc:
        raise BackendError(f"cannot read the mesh: {exc}", hint="Check the file; re-export it.", file=p) from exc
    verts = np.asarray(verts, dtype=np.float64).reshape(-1, 3)
    faces = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    if len(faces) and (faces.min() < 0 or faces.max() >= len(verts)):
        raise BackendError("the mesh's faces index outside its vertices", hint="Re-export the mesh.", file=p)
    out: dict[str, Any] = {"vertices": verts, "faces": faces, "path": p}
    if polygons:
        out["polygons"] = polys if polys is not None else faces.tolist()
    return out
