"""Vertex colours through the Blender side keep their saturation: a mesh of known colours (a job's final snapshot)
loaded with Load Result, exported as PLY and rendered by the headless script comes out as saturated as it went in.

The demo's washed-out colours (mean HSV saturation 0.085 against 0.237 in its photos) come from training (the field's
own renders are as pale); these tests guard the part after training: an sRGB/linear mix-up in the colour attribute
(``color`` instead of ``color_srgb``: (255, 51, 51) becomes (255, 124, 124)), a material that ignores the attribute,
or a view transform that desaturates the render (AgX, Filmic) would fail them.
"""

from __future__ import annotations

import colorsys
import importlib.util
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import blender_harness  # noqa: E402

pytestmark = [pytest.mark.blender,
              pytest.mark.skipif(importlib.util.find_spec("bpy") is None, reason="needs the bpy module")]


def saturation(rgb: np.ndarray) -> np.ndarray:
    """(N, 3) colours (uint8 or floats in [0, 1]) -> (N,) HSV saturation."""
    c = np.asarray(rgb, dtype=np.float64)
    c = c / 255.0 if np.asarray(rgb).dtype == np.uint8 else c
    hi, lo = c.max(-1), c.min(-1)
    return np.where(hi > 1e-6, (hi - lo) / np.maximum(hi, 1e-9), 0.0)


def known_sphere(n_lat: int = 16, n_lon: int = 32) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A unit UV sphere (V, 3) float32 with (F, 3) int32 outward triangles and (V, 3) uint8 sRGB colours: eight
    sectors of longitude, eight hues at HSV saturation 0.75 and value 0.85, greys at the poles."""
    verts, cols = [], []
    for i in range(1, n_lat):
        th = np.pi * i / n_lat
        for j in range(n_lon):
            ph = 2 * np.pi * j / n_lon
            verts.append((np.sin(th) * np.cos(ph), np.sin(th) * np.sin(ph), np.cos(th)))
            cols.append(colorsys.hsv_to_rgb((j * 8 // n_lon) / 8, 0.75, 0.85))
    top, bottom = len(verts), len(verts) + 1
    verts += [(0.0, 0.0, 1.0), (0.0, 0.0, -1.0)]
    cols += [(0.8, 0.8, 0.8)] * 2
    faces = []
    for i in range(n_lat - 2):
        for j in range(n_lon):
            a, b = i * n_lon + j, i * n_lon + (j + 1) % n_lon
            c, d = a + n_lon, b + n_lon
            faces += [(a, c, b), (b, c, d)]
    last = (n_lat - 2) * n_lon
    for j in range(n_lon):
        faces.append((top, j, (j + 1) % n_lon))
        faces.append((bottom, last + (j + 1) % n_lon, last + j))
    v = np.asarray(verts, dtype=np.float32)
    f = np.asarray(faces, dtype=np.int32)
    # outward: the normal of each triangle points away from the centre
    n = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    inward = (n * v[f].mean(1)).sum(-1) < 0
    f[inward] = f[inward][:, ::-1]
    return v, f, (np.asarray(cols) * 255 + 0.5).astype(np.uint8)


@pytest.fixture(scope="module")
def round_trip(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from backend import protocol
    from backend.meshing import read_ply

    tmp = tmp_path_factory.mktemp("colours")
    job = tmp / "job"
    verts, faces, colors = known_sphere()
    protocol.write_job_marker(job, "train")
    protocol.write_snapshot(protocol.JobLayout(job).final_mesh, verts, faces, colors)
    r = blender_harness.run_case(__file__, "load_export_render", tmp, job=str(job), ply=str(tmp / "known.ply"),
                                 png=str(tmp / "known.png"))
    from PIL import Image

    return {**r, "colors": colors, "ply": read_ply(str(tmp / "known.ply")),
            "render": np.asarray(Image.open(tmp / "known.png").convert("RGB"))}


def test_load_result_keeps_the_srgb_colours(round_trip: dict[str, Any]) -> None:
    r = round_trip
    assert (r["domain"], r["data_type"]) == ("POINT", "BYTE_COLOR")
    got = np.asarray(r["srgb"], dtype=np.int64)
    assert got.shape == r["colors"].shape
    assert np.array_equal(got, r["colors"]), "the colour attribute must hold the snapshot's sRGB bytes"
    assert r["material_reads"] == "Col"


def test_exported_ply_keeps_the_colours(round_trip: dict[str, Any]) -> None:
    ply = round_trip["ply"]
    colors = round_trip["colors"]
    assert len(ply["vertices"]) == len(colors)
    got = ply["colors"][:, :3]
    # the exporter may reorder vertices: compare colour by colour, matched by position
    verts, _, _ = known_sphere()
    order = np.argmin(((ply["vertices"][:, None, :] - verts[None]) ** 2).sum(-1), 1)
    # Blender's PLY exporter rounds its float colours down: most channels come out one level lower, never more
    assert np.abs(got.astype(np.int64) - colors[order]).max() <= 1
    assert abs(saturation(got).mean() - saturation(colors).mean()) < 0.01


def test_render_keeps_the_saturation(round_trip: dict[str, Any]) -> None:
    img = round_trip["render"].astype(np.int64)
    background = img[0, 0]
    obj = np.abs(img - background).max(-1) > 20  # the sphere (its edges blend with the sky)
    assert obj.sum() > 0.1 * obj.size, "the sphere must fill part of the render"
    sat_mesh = saturation(round_trip["colors"]).mean()
    sat_render = saturation(img[obj].astype(np.uint8)).mean()
    assert sat_render > 0.8 * sat_mesh, (sat_render, sat_mesh)  # Standard: 0.67 of 0.75; AgX: 0.53


# ---------------------------------------------------------------------------------------------------------------
# the case (runs inside the subprocess, with bpy)


def case_load_export_render(job: str, ply: str, png: str) -> dict[str, Any]:
    import bpy

    headless = blender_harness.headless()
    for obj in list(bpy.data.objects):  # the startup scene's cube would hide the sphere
        bpy.data.objects.remove(obj)
    ext = headless.enable_extension()
    headless._EXTENSION_MODULE = ext.module_name  # as run() sets it: export_mesh uses the extension's tools
    try:
        assert bpy.ops.neusblend.load_result(directory=job, object_name="Known") == {"FINISHED"}
        obj = bpy.data.objects["Known"]
        attr = obj.data.color_attributes["Col"]
        srgb = np.empty(len(attr.data) * 4, dtype=np.float32)
        attr.data.foreach_get("color_srgb", srgb)
        mat = obj.data.materials[0]
        reads = next((n.layer_name for n in mat.node_tree.nodes if n.type == "VERTEX_COLOR"), "")
        out = {"domain": attr.domain, "data_type": attr.data_type, "material_reads": reads,
               "srgb": np.round(srgb.reshape(-1, 4)[:, :3] * 255).astype(int).tolist()}
        headless.export_mesh(obj, Path(ply))
        headless.render_result(obj, Path(png), "160x120", 8)
    finally:
        ext.disable()
    return out


CASES = {"load_export_render": case_load_export_render}

if __name__ == "__main__":
    blender_harness.case_main(CASES)
