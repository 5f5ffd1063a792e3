"""Build the room of :mod:`synthetic.room` in Blender: textured table, floor, walls, ceiling, furniture and lights.

Every texture is procedural (Blender's wave, brick, checker, Voronoi and noise nodes; nothing to download), driven by
the world position measured in bounding radii from the anchor, so patterns have the same size relative to the
objects at any scale: wood grain on the table, parquet on the floor, a different pattern and colour on each wall
(so that views in different directions do not look alike), and small detail everywhere for photometric cues.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import bpy
import numpy as np

from . import cameras
from .room import RoomLayout, to_world

#: Light power at a bounding radius of 1 (scaled with its square, so the brightness is the same at any size), W.
CEILING_LIGHT_W = 450.0
WINDOW_LIGHT_W = 300.0


# ---------------------------------------------------------------------------------------------------------------
# materials


class _Nodes:
    """A material's node tree with small helpers (sockets found by name and type: Blender 4.2 and 5.0 differ)."""

    def __init__(self, mat: bpy.types.Material, anchor: np.ndarray, unit: float, plane: str = "xy") -> None:
        if mat.node_tree is None:  # Blender < 5.0: materials start without nodes
            mat.use_nodes = True
        self.nt = mat.node_tree
        self.nt.nodes.clear()
        geo = self.new("ShaderNodeNewGeometry")
        sub = self.new("ShaderNodeVectorMath", operation="SUBTRACT")
        sub.inputs[1].default_value = tuple(float(x) for x in anchor)
        self.link(geo.outputs["Position"], sub.inputs[0])
        scale = self.new("ShaderNodeVectorMath", operation="SCALE")
        scale.inputs["Scale"].default_value = 1.0 / unit
        self.link(sub.outputs["Vector"], scale.inputs[0])
        self.p = scale.outputs["Vector"]  # the position in bounding radii from the anchor
        if plane != "xy":  # 2-D textures (brick, wave bands) read x and y: put the surface's own axes there
            sep = self.new("ShaderNodeSeparateXYZ")
            comb = self.new("ShaderNodeCombineXYZ")
            self.link(self.p, sep.inputs[0])
            order = {"xz": "XZY", "yz": "YZX"}[plane]
            for dst, src in zip("XYZ", order, strict=True):
                self.link(sep.outputs[src], comb.inputs[dst])
            self.p = comb.outputs["Vector"]

    def new(self, kind: str, **attrs: Any) -> bpy.types.Node:  # noqa: ANN401 - node attributes
        node = self.nt.nodes.new(kind)
        for key, value in attrs.items():
            setattr(node, key, value)
        return node

    def link(self, a: bpy.types.NodeSocket, b: bpy.types.NodeSocket) -> None:
        self.nt.links.new(a, b)

    def tex(self, kind: str, vector: bpy.types.NodeSocket | None = None, **inputs: float) -> bpy.types.Node:
        node = self.new(kind)
        self.link(vector if vector is not None else self.p, node.inputs["Vector"])
        for key, value in inputs.items():
            node.inputs[key.replace("_", " ").title()].default_value = value
        return node

    def ramp(self, fac: bpy.types.NodeSocket, colors: Sequence[tuple[float, float, float]],
             positions: Sequence[float] | None = None) -> bpy.types.NodeSocket:
        node = self.new("ShaderNodeValToRGB")
        els = node.color_ramp.elements
        positions = positions or np.linspace(0.0, 1.0, len(colors)).tolist()
        while len(els) < len(colors):
            els.new(0.5)
        for el, pos, col in zip(els, positions, colors, strict=True):
            el.position = pos
            el.color = (*col, 1.0)
        self.link(fac, node.inputs["Fac"])
        return node.outputs["Color"]

    def mix(self, a: bpy.types.NodeSocket, b: bpy.types.NodeSocket, factor: float | bpy.types.NodeSocket,
            blend: str = "MIX") -> bpy.types.NodeSocket:
        node = self.new("ShaderNodeMix", data_type="RGBA", blend_type=blend)
        ins = [s for s in node.inputs if s.type == "RGBA"]
        fac = next(s for s in node.inputs if s.name == "Factor" and s.type == "VALUE")
        if isinstance(factor, float):
            fac.default_value = factor
        else:
            self.link(factor, fac)
        self.link(a, ins[0])
        self.link(b, ins[1])
        return next(s for s in node.outputs if s.type == "RGBA")

    def finish(self, color: bpy.types.NodeSocket, roughness: float = 0.6) -> None:
        bsdf = self.new("ShaderNodeBsdfPrincipled")
        bsdf.inputs["Roughness"].default_value = roughness
        out = self.new("ShaderNodeOutputMaterial")
        self.link(color, bsdf.inputs["Base Color"])
        self.link(bsdf.outputs["BSDF"], out.inputs["Surface"])


def _grain(n: _Nodes, scale: float, strength: float, base: bpy.types.NodeSocket) -> bpy.types.NodeSocket:
    """``base`` darkened and lightened by fine noise (detail a few pixels wide: photometric cues)."""
    noise = n.tex("ShaderNodeTexNoise", scale=scale, detail=3.0)
    return n.mix(base, noise.outputs["Color"], strength, blend="OVERLAY")


def _material(name: str, anchor: np.ndarray, unit: float, kind: str, plane: str = "xy") -> bpy.types.Material:
    """One of the room's procedural materials (``kind``: wood, dark_wood, parquet, stripes, checker, cells, brick,
    plaster, tiles, paint, picture) for a surface along ``plane`` (``xy``, ``xz`` or ``yz``: which world axes span
    it, so that 2-D patterns lie in it)."""
    mat = bpy.data.materials.new(name)
    n = _Nodes(mat, anchor, unit, plane)
    rough = 0.6
    if kind in ("wood", "dark_wood"):
        wave = n.tex("ShaderNodeTexWave", scale=2.2, distortion=7.0, detail=4.0, detail_scale=1.5)
        wave.bands_direction = "Y"
        cols = ([(0.30, 0.15, 0.06), (0.55, 0.33, 0.15), (0.42, 0.24, 0.10)] if kind == "wood"
                else [(0.10, 0.05, 0.02), (0.22, 0.12, 0.05), (0.16, 0.08, 0.03)])
        color = _grain(n, 45.0, 0.35, n.ramp(wave.outputs["Fac"], cols))
        knots = n.tex("ShaderNodeTexVoronoi", scale=6.0)
        color = n.mix(color, n.ramp(knots.outputs["Distance"], [(0.15, 0.08, 0.03), (1, 1, 1)], [0.0, 0.25]),
                      1.0, blend="MULTIPLY")
        rough = 0.45
    elif kind == "parquet":
        brick = n.tex("ShaderNodeTexBrick", scale=1.2, mortar_size=0.01)
        brick.inputs["Color1"].default_value = (0.45, 0.30, 0.16, 1.0)
        brick.inputs["Color2"].default_value = (0.28, 0.17, 0.08, 1.0)
        brick.inputs["Mortar"].default_value = (0.06, 0.04, 0.02, 1.0)
        brick.offset_frequency, brick.squash = 2, 1.0
        color = _grain(n, 30.0, 0.4, brick.outputs["Color"])
    elif kind == "stripes":
        wave = n.tex("ShaderNodeTexWave", scale=1.6, distortion=0.5, detail=2.0)
        wave.bands_direction = "X"  # vertical stripes on a wall
        color = n.ramp(wave.outputs["Fac"], [(0.80, 0.70, 0.50), (0.55, 0.22, 0.15)], [0.45, 0.55])
        spots = n.tex("ShaderNodeTexVoronoi", scale=4.0)
        color = n.mix(color, n.ramp(spots.outputs["Distance"], [(0.2, 0.3, 0.5), (1, 1, 1)], [0.08, 0.12]), 1.0,
                      blend="MULTIPLY")
        color = _grain(n, 25.0, 0.3, color)
    elif kind == "checker":
        checker = n.tex("ShaderNodeTexChecker", scale=1.4)
        checker.inputs["Color1"].default_value = (0.20, 0.35, 0.65, 1.0)
        checker.inputs["Color2"].default_value = (0.85, 0.85, 0.80, 1.0)
        noise = n.tex("ShaderNodeTexNoise", scale=3.0, detail=4.0)
        color = _grain(n, 30.0, 0.3, n.mix(checker.outputs["Color"], noise.outputs["Color"], 0.25))
    elif kind == "cells":
        cells = n.tex("ShaderNodeTexVoronoi", scale=2.5)
        color = n.mix(n.ramp(cells.outputs["Distance"], [(0.10, 0.35, 0.15), (0.70, 0.85, 0.55)]),
                      cells.outputs["Color"], 0.25)
        color = _grain(n, 30.0, 0.3, color)
    elif kind == "brick":
        brick = n.tex("ShaderNodeTexBrick", scale=1.5, mortar_size=0.02)
        brick.inputs["Color1"].default_value = (0.55, 0.18, 0.10, 1.0)
        brick.inputs["Color2"].default_value = (0.35, 0.12, 0.08, 1.0)
        brick.inputs["Mortar"].default_value = (0.75, 0.72, 0.68, 1.0)
        color = _grain(n, 35.0, 0.4, brick.outputs["Color"])
    elif kind == "plaster":
        noise = n.tex("ShaderNodeTexNoise", scale=2.0, detail=4.0)
        color = _grain(n, 40.0, 0.3, n.ramp(noise.outputs["Fac"], [(0.65, 0.65, 0.62), (0.90, 0.88, 0.85)]))
    elif kind == "tiles":
        checker = n.tex("ShaderNodeTexChecker", scale=4.0)
        checker.inputs["Color1"].default_value = (0.85, 0.55, 0.15, 1.0)
        checker.inputs["Color2"].default_value = (0.25, 0.20, 0.18, 1.0)
        color = _grain(n, 40.0, 0.35, checker.outputs["Color"])
    elif kind == "paint":
        wave = n.tex("ShaderNodeTexWave", scale=0.8, distortion=4.0, detail=3.0)
        wave.wave_type = "RINGS"
        color = _grain(n, 35.0, 0.35, n.ramp(wave.outputs["Fac"], [(0.45, 0.10, 0.40), (0.85, 0.70, 0.85)]))
    elif kind == "picture":
        cells = n.tex("ShaderNodeTexVoronoi", scale=3.0)
        noise = n.tex("ShaderNodeTexNoise", scale=1.5, detail=3.0)
        color = _grain(n, 40.0, 0.3, n.mix(cells.outputs["Color"], noise.outputs["Color"], 0.4))
        rough = 0.3
    else:
        raise ValueError(f"unknown room material {kind!r}")
    n.finish(color, rough)
    return mat


#: Which axes span each wall (walls at constant x span y and z; at constant y, x and z).
PART_PLANES = {"wall_x_neg": "yz", "wall_x_pos": "yz", "wall_y_neg": "xz", "wall_y_pos": "xz", "picture": "yz"}
#: Which material each part of the room gets.
PART_MATERIALS = {"table_top": "wood", "table_leg": "dark_wood", "floor": "parquet", "ceiling": "plaster",
                  "wall_x_neg": "stripes", "wall_x_pos": "checker", "wall_y_neg": "cells", "wall_y_pos": "brick",
                  "cabinet": "tiles", "tall_box": "paint", "picture": "picture"}


# ---------------------------------------------------------------------------------------------------------------
# objects


def _box_mesh(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, list[tuple[int, ...]]]:
    """(8, 3) corners and six outward quads of an axis-aligned box."""
    v = np.array([[x, y, z] for z in (lo[2], hi[2]) for y in (lo[1], hi[1]) for x in (lo[0], hi[0])])
    faces = [(0, 2, 3, 1), (4, 5, 7, 6), (0, 1, 5, 4), (2, 6, 7, 3), (0, 4, 6, 2), (1, 3, 7, 5)]
    return v, faces


def _mesh_object(name: str, verts: np.ndarray, faces: Sequence[Sequence[int]], mat: bpy.types.Material,
                 collection: bpy.types.Collection) -> bpy.types.Object:
    mesh = bpy.data.meshes.new(name)
    mesh.from_pydata(np.asarray(verts, dtype=np.float64).tolist(), [], [list(f) for f in faces])
    mesh.validate()
    mesh.materials.append(mat)
    ob = bpy.data.objects.new(name, mesh)
    collection.objects.link(ob)
    return ob


def build_room(scene: bpy.types.Scene, anchor: np.ndarray, unit: float, layout: RoomLayout | None = None
               ) -> tuple[list[bpy.types.Object], list[bpy.types.ID]]:
    """Add the room around ``anchor`` (world, (3,)) at bounding radius ``unit`` to ``scene``.

    Returns:
        the room's objects (to hide for the mask pass) and every data-block made (to remove afterwards:
        objects first, then meshes, materials, lights).
    """
    layout = layout or RoomLayout()
    objects: list[bpy.types.Object] = []
    data: list[bpy.types.ID] = []
    mats: dict[str, bpy.types.Material] = {}

    def material(part: str) -> bpy.types.Material:
        kind = PART_MATERIALS["table_leg" if part.startswith("table_leg") else part]
        if kind not in mats:
            mats[kind] = _material(f"NeuSBlend Room {kind}", anchor, unit, kind, PART_PLANES.get(part, "xy"))
        return mats[kind]

    coll = scene.collection
    for name, (lo, hi) in layout.boxes().items():
        v, f = _box_mesh(to_world(lo, anchor, unit), to_world(hi, anchor, unit))
        objects.append(_mesh_object(f"NeuSBlend Room {name}", v, f, material(name), coll))
    for name, quad in layout.walls().items():
        objects.append(_mesh_object(f"NeuSBlend Room {name}", to_world(quad, anchor, unit), [(0, 1, 2, 3)],
                                    material(name), coll))
    data += [ob.data for ob in objects]
    lights: list[bpy.types.Object] = []
    for name, (center, direction, size) in layout.lights().items():
        light = bpy.data.lights.new(f"NeuSBlend Room {name}", "AREA")
        light.shape = "RECTANGLE"
        light.size, light.size_y = size[0] * unit, size[1] * unit
        watts = CEILING_LIGHT_W if name == "ceiling_light" else WINDOW_LIGHT_W
        light.energy = watts * unit * unit
        light.color = (1.0, 0.95, 0.88) if name == "ceiling_light" else (0.85, 0.92, 1.0)
        ob = bpy.data.objects.new(f"NeuSBlend Room {name}", light)
        eye = to_world(center, anchor, unit)
        up = np.array([0.0, 1.0, 0.0]) if abs(direction[2]) > 0.5 else np.array([0.0, 0.0, 1.0])
        ob.matrix_world = _matrix(cameras.look_at_blender(eye, eye + direction, up))
        coll.objects.link(ob)
        lights.append(ob)
        data.append(light)
    return objects + lights, [*objects, *lights, *data, *mats.values()]


def _matrix(m: np.ndarray) -> Any:  # noqa: ANN401 - a mathutils.Matrix
    from mathutils import Matrix

    return Matrix(np.asarray(m, dtype=np.float64).tolist())


def remove_blocks(blocks: Sequence[bpy.types.ID]) -> None:
    """Remove data-blocks made by :func:`build_room` (objects before their data)."""
    import contextlib

    kinds = ((bpy.types.Object, bpy.data.objects), (bpy.types.Mesh, bpy.data.meshes),
             (bpy.types.Light, bpy.data.lights), (bpy.types.Material, bpy.data.materials))
    for block in blocks:
        for kind, coll in kinds:
            if isinstance(block, kind):
                with contextlib.suppress(ReferenceError, RuntimeError):
                    coll.remove(block)
                break


def room_world(unit: float, layout: RoomLayout | None = None) -> float:
    """Camera clip end that sees the whole room from anywhere in it (world units)."""
    layout = layout or RoomLayout()
    return float(unit * 2.0 * math.hypot(*layout.room_half, layout.table_height + layout.ceiling))
