"""Refining a reconstructed mesh in Blender: crop boxes, clean-up, decimation, UV texture baking, export (bpy).

Everything here works on the mesh datablock with Blender's own tools (modifiers evaluated into a new mesh, bmesh,
Cycles baking), so colour attributes, materials and the object's place in the scene survive; the work on plain
arrays (connected parts, the support plane fit, the bake's memory check) is :mod:`..mesh_arrays` (no bpy).
Functions raise :class:`MeshToolError` with a message for the user; the operators turn it into a report.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from pathlib import Path

import bmesh
import bpy
import numpy as np
from mathutils import Matrix

from ..camera_math import box_matrix
from ..mesh_arrays import MeshToolError, check_bake_memory, fan_triangles, part_labels, support_plane_polygons
from .capture import region_matrix, wire_box
from .mesh import COLOR_ATTRIBUTE, has_vertex_colors, principled_material

#: Custom property that marks a crop box and names the mesh object it was made for.
CROP_PROP = "neusblend_crop_for"
#: Name of the image texture node that receives the bake.
BAKE_NODE = "NeuS Baked Color"


# ---------------------------------------------------------------------------------------------------------------
# crop box


def add_crop_box(obj: bpy.types.Object, pad: float = 0.02) -> bpy.types.Object:
    """A wire cube (mesh [-1, 1]^3) around ``obj``'s bounds, in the same parent and collections, to move and scale.

    Args:
        obj: the reconstructed mesh object.
        pad: margin as a fraction of the bounds' size.
    """
    corners = np.array([tuple(c) for c in obj.bound_box], dtype=np.float64)
    lo, hi = corners.min(0), corners.max(0)
    margin = (hi - lo).max() * pad
    box = wire_box(f"{obj.name} Crop", obj.users_collection)
    box.parent = obj.parent
    box.matrix_parent_inverse = obj.matrix_parent_inverse.copy()
    local = box_matrix(lo - margin, hi + margin)
    box.matrix_basis = obj.matrix_basis @ Matrix(local.tolist())
    box[CROP_PROP] = obj.name
    return box


def crop_matrix(obj: bpy.types.Object, box: bpy.types.Object) -> np.ndarray:
    """(4, 4) matrix from the cube [-1, 1]^3 to ``obj``'s mesh coordinates (the reconstruction's input
    coordinates) for the box as the user placed it: the same reading as a capture's region box, with the mesh
    object as the frame."""
    m = region_matrix(obj, box)
    if not np.all(np.isfinite(m)) or abs(np.linalg.det(m[:3, :3])) < 1e-12:
        raise MeshToolError(f"the crop box '{box.name}' is flat; give it a size on every axis")
    return m


# ---------------------------------------------------------------------------------------------------------------
# connected parts


def face_vertex_lists(mesh: bpy.types.Mesh) -> tuple[np.ndarray, np.ndarray]:
    """Corner vertices (L,) int64 and the polygon index of each corner (L,) of any polygon mesh."""
    n_loops, n_polys = len(mesh.loops), len(mesh.polygons)
    corner = np.empty(n_loops, dtype=np.int32)
    mesh.loops.foreach_get("vertex_index", corner)
    totals = np.empty(n_polys, dtype=np.int32)
    mesh.polygons.foreach_get("loop_total", totals)
    return corner.astype(np.int64), np.repeat(np.arange(n_polys), totals)


def remove_small_parts(obj: bpy.types.Object, *, keep_largest: bool = False, min_fraction: float = 0.0
                       ) -> tuple[int, int]:
    """Delete floaters: keep only the largest connected part, or drop parts with fewer than ``min_fraction`` of
    the faces. Returns (parts removed, faces removed)."""
    mesh: bpy.types.Mesh = obj.data
    if len(mesh.polygons) == 0:
        raise MeshToolError(f"'{obj.name}' has no faces")
    corner_vertex, corner_poly = face_vertex_lists(mesh)
    labels = part_labels(len(mesh.vertices), corner_vertex, corner_poly)
    poly_part = np.full(len(mesh.polygons), -1, dtype=np.int64)
    poly_part[corner_poly] = labels[corner_vertex]
    sizes = np.bincount(poly_part, minlength=int(labels.max()) + 1)
    if keep_largest:
        keep = np.zeros(len(sizes), dtype=bool)
        keep[np.argmax(sizes)] = True
    else:
        keep = sizes >= min_fraction * len(mesh.polygons)
    drop_vertex = ~keep[labels]
    if not drop_vertex.any():
        return 0, 0
    removed_parts = int((~keep & (sizes > 0)).sum())
    removed_faces = int(sizes[~keep].sum())
    bm = bmesh.new()
    try:
        bm.from_mesh(mesh)
        bm.verts.ensure_lookup_table()
        bmesh.ops.delete(bm, geom=[bm.verts[i] for i in np.flatnonzero(drop_vertex)], context="VERTS")
        bm.to_mesh(mesh)
    finally:
        bm.free()
    mesh.update()
    return removed_parts, removed_faces


# ---------------------------------------------------------------------------------------------------------------
# support plane


def triangles(mesh: bpy.types.Mesh) -> tuple[np.ndarray, np.ndarray]:
    """Fan triangulation of any polygon mesh: (T, 3) vertex indices and the (T,) polygon of each triangle."""
    corner_vertex, _ = face_vertex_lists(mesh)
    n_polys = len(mesh.polygons)
    start = np.empty(n_polys, dtype=np.int64)
    total = np.empty(n_polys, dtype=np.int64)
    mesh.polygons.foreach_get("loop_start", start)
    mesh.polygons.foreach_get("loop_total", total)
    return fan_triangles(corner_vertex, start, total)


def delete_polygons(obj: bpy.types.Object, drop: np.ndarray) -> None:
    """Delete the polygons ``drop`` (indices) with bmesh, and the edges and vertices only they used; every
    attribute of what stays (colours, UVs) stays."""
    mesh: bpy.types.Mesh = obj.data
    bm = bmesh.new()
    try:
        bm.from_mesh(mesh)
        bm.faces.ensure_lookup_table()
        bmesh.ops.delete(bm, geom=[bm.faces[int(i)] for i in drop], context="FACES")
        bm.to_mesh(mesh)
    finally:
        bm.free()
    mesh.update()


def remove_support_plane(obj: bpy.types.Object, *, tolerance: float = 0.01, min_part: float = 0.05,
                         up: tuple[float, float, float] | None = (0.0, 0.0, 1.0)) -> dict[str, object]:
    """Remove the plane the object stands on (table, ground) with :func:`backend.meshclean.remove_support_plane`:
    RANSAC and least squares, planes facing ``up`` first, then the faces on it and beyond it, then the floaters
    that leaves. The mesh is untouched when no plane qualifies.

    Args:
        obj: a mesh object (any polygons; they are fan-triangulated for the fit, and a polygon goes only when
            all its triangles go).
        tolerance: inlier distance of the fit and upper bound of the band removed beside the plane, as a fraction
            of the mesh's bounding diagonal.
        min_part: afterwards, drop parts with less area than this fraction of the largest (0: keep them).
        up: the up direction in world coordinates (an imported capture is upright: +Z), or None.

    Returns:
        the report: ``removed`` {"support_plane": triangles, "floaters": triangles} (polygons, for a mesh of
        triangles like a reconstruction), ``polygons_removed``, and ``plane`` (``found``, ``normal`` and ``point``
        in the mesh's coordinates, ``tolerance``; or ``why``).
    """
    mesh: bpy.types.Mesh = obj.data
    if len(mesh.polygons) == 0:
        raise MeshToolError(f"'{obj.name}' has no faces")
    co = np.empty(len(mesh.vertices) * 3, dtype=np.float64)
    mesh.vertices.foreach_get("co", co)
    tris, poly = triangles(mesh)
    up_local = None
    if up is not None:  # a direction normal to the ground: local = M^T world for the object's 3x3 M
        m = np.array(obj.matrix_world.to_3x3(), dtype=np.float64)
        up_local = m.T @ np.asarray(up, dtype=np.float64)
        up_local = tuple(up_local / np.linalg.norm(up_local))
    drop, report = support_plane_polygons(co.reshape(-1, 3), tris, poly, len(mesh.polygons), tolerance=tolerance,
                                          min_part=min_part, up=up_local)
    if len(drop):
        delete_polygons(obj, drop)
    return {"removed": report["removed"], "polygons_removed": int(len(drop)), "plane": report["plane"]}


# ---------------------------------------------------------------------------------------------------------------
# modifiers applied into the mesh


def apply_modifier(obj: bpy.types.Object, kind: str, **settings: object) -> None:
    """Add a modifier of ``kind`` with ``settings`` at the end of the stack and bake it (alone) into the mesh.

    The other modifiers of the object stay as they were (they are disabled while this one is applied).
    """
    others = [(m, m.show_viewport) for m in obj.modifiers]
    mod = obj.modifiers.new(name=f"NeuS {kind.title()}", type=kind)
    try:
        for key, value in settings.items():
            setattr(mod, key, value)
        for m, _ in others:
            m.show_viewport = False
        depsgraph = bpy.context.evaluated_depsgraph_get()
        evaluated = obj.evaluated_get(depsgraph)
        new_mesh = bpy.data.meshes.new_from_object(evaluated, preserve_all_data_layers=True, depsgraph=depsgraph)
    finally:
        obj.modifiers.remove(mod)
        for m, shown in others:
            m.show_viewport = shown
    old = obj.data
    new_mesh.name = old.name
    for material in old.materials:
        if material is not None and material.name not in new_mesh.materials:
            new_mesh.materials.append(material)
    obj.data = new_mesh
    if old.users == 0:
        bpy.data.meshes.remove(old)


def smooth(obj: bpy.types.Object, iterations: int, factor: float = 0.5) -> None:
    """Laplacian-style smoothing with Blender's Smooth modifier (``iterations`` passes of ``factor``)."""
    if iterations > 0:
        apply_modifier(obj, "SMOOTH", iterations=int(iterations), factor=float(factor))


def decimate(obj: bpy.types.Object, target_faces: int) -> int:
    """Collapse-decimate to about ``target_faces`` triangles (nothing when it has fewer); returns the face count."""
    faces = len(obj.data.polygons)
    if target_faces <= 0 or faces <= target_faces:
        return faces
    apply_modifier(obj, "DECIMATE", decimate_type="COLLAPSE", ratio=float(target_faces) / faces,
                   use_collapse_triangulate=True)
    return len(obj.data.polygons)


# ---------------------------------------------------------------------------------------------------------------
# texture baking


@contextlib.contextmanager
def _selection(active: bpy.types.Object, selected: list[bpy.types.Object]) -> Iterator[None]:
    """Select exactly ``selected`` with ``active`` active, and restore the user's selection afterwards."""
    layer = bpy.context.view_layer
    before = [o for o in layer.objects if o.select_get()]
    before_active = layer.objects.active
    hidden = [(o, o.hide_get(), o.hide_viewport) for o in selected]
    try:
        for o in before:
            o.select_set(False)
        for o, _, _ in hidden:
            o.hide_viewport = False
            o.hide_set(False)
            o.select_set(True)
        layer.objects.active = active
        yield
    finally:
        for o in layer.objects:
            o.select_set(False)
        for o, hide, hide_vp in hidden:
            o.hide_set(hide)
            o.hide_viewport = hide_vp
        for o in before:
            if layer.objects.get(o.name) is not None:
                o.select_set(True)
        layer.objects.active = before_active


def unwrap(obj: bpy.types.Object, island_margin: float = 0.003) -> None:
    """Smart UV Project of the whole mesh into a fresh UV map (islands packed into [0, 1]^2)."""
    mesh: bpy.types.Mesh = obj.data
    while mesh.uv_layers:
        mesh.uv_layers.remove(mesh.uv_layers[0])
    mesh.uv_layers.new(name="UVMap")
    with _selection(obj, [obj]), bpy.context.temp_override(active_object=obj, object=obj, selected_objects=[obj],
                                                           selected_editable_objects=[obj]):
        bpy.ops.object.mode_set(mode="EDIT")
        try:
            bpy.ops.mesh.select_all(action="SELECT")
            bpy.ops.uv.smart_project(angle_limit=math.radians(66.0), island_margin=island_margin,
                                     area_weight=0.0, correct_aspect=True, scale_to_bounds=False)
        finally:
            bpy.ops.object.mode_set(mode="OBJECT")


def texture_material(name: str, image: bpy.types.Image) -> bpy.types.Material:
    """A material that shows ``image`` as base colour through the mesh's UV map (its texture node is the bake
    target)."""
    mat, bsdf = principled_material(name)
    nodes, links = mat.node_tree.nodes, mat.node_tree.links
    tex = nodes.new("ShaderNodeTexImage")
    tex.name = tex.label = BAKE_NODE
    tex.image = image
    tex.location = (bsdf.location.x - 320, bsdf.location.y)
    links.new(tex.outputs["Color"], bsdf.inputs["Base Color"])
    nodes.active = tex
    tex.select = True
    return mat


def new_image(name: str, size: int) -> bpy.types.Image:
    """A square sRGB image for the bake; a clear error for a size out of range, one whose bake would not fit in
    memory (:func:`check_bake_memory`), or one Blender cannot allocate."""
    if size < 16 or size > 16384:
        raise MeshToolError(f"texture size {size} is out of range; use 16 to 16384 pixels")
    check_bake_memory(size)
    try:
        image = bpy.data.images.new(name, size, size, alpha=False)
    except (RuntimeError, MemoryError) as exc:
        raise MeshToolError(f"Blender could not allocate a {size} x {size} texture ({exc}); choose a smaller "
                            "size") from exc
    if tuple(image.size) != (size, size):
        bpy.data.images.remove(image)
        raise MeshToolError(f"Blender could not allocate a {size} x {size} texture; choose a smaller size")
    return image


def bake_texture(dense: bpy.types.Object, *, size: int = 2048, target_faces: int = 20000, margin: int = 8,
                 name: str = "", image_path: str = "", samples: int = 1) -> bpy.types.Object:
    """A textured low-poly copy of a vertex-coloured mesh: decimate, unwrap, bake the colours with Cycles.

    The dense object is left as it was; the new object sits beside it (same parent, transform and collections).
    Colours go from the dense mesh's colour attribute to the texture with Cycles' "selected to active" diffuse
    colour bake (no lighting), the cage pushed out by a small fraction of the object's size.

    Args:
        dense: the reconstruction, with its vertex colours (:data:`COLOR_ATTRIBUTE`).
        size: texture width = height in pixels.
        target_faces: faces of the low-poly copy (0: keep the dense mesh's).
        margin: pixels the bake extends past UV island borders.
        name: the new object's name (default "<dense> Textured").
        image_path: where to save the texture as PNG (default: packed into the .blend).
        samples: Cycles samples per texel.

    Returns:
        the low-poly object with a UV map and a material that shows the baked image.
    """
    if dense.type != "MESH" or len(dense.data.polygons) == 0:
        raise MeshToolError(f"'{dense.name}' is not a mesh with faces")
    if not has_vertex_colors(dense):
        raise MeshToolError(f"'{dense.name}' has no reconstruction colours (attribute '{COLOR_ATTRIBUTE}'); bake "
                            "from the mesh the reconstruction produced, or re-extract it with colours")
    name = name or f"{dense.name} Textured"
    image = new_image(f"{name} Color", size)
    low = dense.copy()
    low.data = dense.data.copy()
    low.name = low.data.name = name
    low.modifiers.clear()
    for coll in dense.users_collection:
        coll.objects.link(low)
    try:
        decimate(low, target_faces)
        unwrap(low)
        mat = texture_material(f"{name} Material", image)
        low.data.materials.clear()
        low.data.materials.append(mat)
        _bake(dense, low, margin=margin, samples=samples)
    except Exception:
        mesh = low.data
        bpy.data.objects.remove(low)
        if mesh.users == 0:
            bpy.data.meshes.remove(mesh)
        bpy.data.images.remove(image)
        raise
    if image_path:
        path = Path(bpy.path.abspath(image_path))
        path.parent.mkdir(parents=True, exist_ok=True)
        image.filepath_raw = str(path)
        image.file_format = "PNG"
        image.save()
    else:
        image.pack()
    low["neusblend_baked_from"] = dense.name
    return low


def _bake(dense: bpy.types.Object, low: bpy.types.Object, *, margin: int, samples: int) -> None:
    scene = bpy.context.scene
    render, cycles, bake = scene.render, scene.cycles, scene.render.bake
    saved = (render.engine, cycles.device, cycles.samples, bake.use_selected_to_active, bake.cage_extrusion,
             bake.max_ray_distance, bake.margin, bake.use_pass_direct, bake.use_pass_indirect, bake.use_pass_color,
             bake.target)
    extent = max(low.dimensions) or 1.0
    try:
        render.engine = "CYCLES"
        cycles.device = "CPU"
        cycles.samples = max(1, samples)
        bake.use_selected_to_active = True
        bake.cage_extrusion = 0.01 * extent
        bake.max_ray_distance = 0.03 * extent
        bake.margin = margin
        bake.use_pass_direct = bake.use_pass_indirect = False
        bake.use_pass_color = True
        bake.target = "IMAGE_TEXTURES"
        with _selection(low, [dense, low]), bpy.context.temp_override(
                active_object=low, object=low, selected_objects=[dense, low],
                selected_editable_objects=[dense, low]):
            result = bpy.ops.object.bake(type="DIFFUSE", pass_filter={"COLOR"}, use_selected_to_active=True,
                                         cage_extrusion=bake.cage_extrusion, max_ray_distance=bake.max_ray_distance,
                                         margin=margin, target="IMAGE_TEXTURES", use_clear=True)
        if "FINISHED" not in result:
            raise MeshToolError("Cycles did not bake the texture")
    except RuntimeError as exc:
        raise MeshToolError(f"baking failed: {exc}") from exc
    finally:
        (render.engine, cycles.device, cycles.samples, bake.use_selected_to_active, bake.cage_extrusion,
         bake.max_ray_distance, bake.margin, bake.use_pass_direct, bake.use_pass_indirect, bake.use_pass_color,
         bake.target) = saved


# ---------------------------------------------------------------------------------------------------------------
# export


EXPORT_SUFFIXES = (".glb", ".gltf", ".obj", ".ply", ".stl", ".fbx")


def export_object(obj: bpy.types.Object, path: str | Path) -> Path:
    """Write ``obj`` with Blender's exporters: glTF (with its texture), OBJ (+ MTL and texture), PLY (vertex
    colours), STL or FBX. Coordinates are the object's world coordinates, Z up as in Blender for OBJ/PLY/STL;
    glTF converts to its Y-up convention."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in EXPORT_SUFFIXES:
        raise MeshToolError(f"cannot export to {path.name}: use one of {', '.join(EXPORT_SUFFIXES)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    textured = bool(obj.data.uv_layers)
    with _selection(obj, [obj]), bpy.context.temp_override(active_object=obj, object=obj, selected_objects=[obj]):
        if suffix in (".glb", ".gltf"):
            _ensure_addon("io_scene_gltf2")
            bpy.ops.export_scene.gltf(filepath=str(path), check_existing=False, use_selection=True,
                                      export_format="GLB" if suffix == ".glb" else "GLTF_SEPARATE",
                                      export_apply=True, export_texcoords=textured, export_normals=True)
        elif suffix == ".obj":
            bpy.ops.wm.obj_export(filepath=str(path), check_existing=False, export_selected_objects=True,
                                  export_uv=textured, export_materials=True, path_mode="COPY",
                                  export_colors=has_vertex_colors(obj), forward_axis="Y", up_axis="Z")
            if textured:
                _obj_textures(obj, path)
        elif suffix == ".ply":
            bpy.ops.wm.ply_export(filepath=str(path), check_existing=False, export_selected_objects=True,
                                  export_colors="SRGB", export_uv=textured, ascii_format=False,
                                  forward_axis="Y", up_axis="Z")
        elif suffix == ".stl":
            bpy.ops.wm.stl_export(filepath=str(path), check_existing=False, export_selected_objects=True,
                                  forward_axis="Y", up_axis="Z")
        else:
            _ensure_addon("io_scene_fbx")
            bpy.ops.export_scene.fbx(filepath=str(path), check_existing=False, use_selection=True,
                                     path_mode="COPY", embed_textures=True)
    return path


def _base_color_image(material: bpy.types.Material | None) -> bpy.types.Image | None:
    if material is None or material.node_tree is None:
        return None
    node = material.node_tree.nodes.get(BAKE_NODE)
    return node.image if node is not None and node.type == "TEX_IMAGE" else None


def _obj_textures(obj: bpy.types.Object, path: Path) -> None:
    """Give the OBJ's MTL a ``map_Kd`` for each baked texture the exporter could not reference (a texture packed
    into the .blend has no file): the image is saved beside the OBJ as PNG, the image itself stays as it is."""
    mtl = path.with_suffix(".mtl")
    if not mtl.is_file():
        return
    lines = mtl.read_text(encoding="utf-8").splitlines()
    for material in obj.data.materials:
        image = _base_color_image(material)
        if image is None:
            continue
        name = "".join("_" if c.isspace() else c for c in material.name)
        try:
            start = lines.index(f"newmtl {name}")
        except ValueError:
            continue
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("newmtl ")), len(lines))
        if any(ln.startswith("map_Kd") for ln in lines[start:end]):
            continue
        png = path.with_name(f"{path.stem}_{name}.png")
        try:
            image.save(filepath=str(png), save_copy=True)
        except TypeError:  # Blender before 4.3: no save_copy
            copy = image.copy()
            copy.filepath_raw = str(png)
            copy.file_format = "PNG"
            copy.save()
            bpy.data.images.remove(copy)
        lines.insert(end, f"map_Kd {png.name}")
    mtl.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _ensure_addon(module: str) -> None:
    import addon_utils

    if module not in bpy.context.preferences.addons and addon_utils.enable(module, default_set=False) is None:
        raise MeshToolError(f"Blender's exporter add-on {module} is not available")
