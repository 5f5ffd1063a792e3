"""An imported capture in the scene: one collection, one frame empty, cameras with photos, points, a region box.

Layout (everything under one collection named after the capture)::

    <name>                      collection (custom properties: neusblend_source, neusblend_capture_to_blender)
      <name> Frame              empty; matrix_world = blender_from_capture (the one 4x4 between the two frames)
        <name> Cameras          child collection: one camera per photo, parented to the frame
        <name> Points           sparse points (mesh vertices + a Geometry Nodes "Mesh to Points" modifier)
        <name> Region           the region of interest: a wire cube the user moves, rotates and scales
        <mesh of Reconstruct>   parented to the frame too, so it lines up with the cameras and points

Every child keeps capture coordinates in its local matrix (``matrix_parent_inverse`` is the identity), so the
frame empty alone carries the rotation (capture up -> +Z), the scale (region radius -> ``size`` Blender units) and
the offset (region centre -> origin); moving the empty moves the whole capture and nothing else changes. The frame
matrix at import time is also stored, row-major, in the custom property :data:`FRAME_PROP` of the empty and the
collection. Only this module creates objects; the maths is in :mod:`..camera_math`, the reading in
:mod:`..capture_data`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import bpy
import numpy as np
from mathutils import Matrix

from ..camera_math import (
    CV_TO_GL,
    blender_camera_params,
    box_matrix,
    capture_frame,
    region_box_in_frame,
    roi_in_capture,
    transform_points,
)
from ..capture_data import CameraView, CaptureData, capture_for_photos
from .mesh import principled_material

log = logging.getLogger(__name__)

#: Custom property naming an object's part in an import: "frame", "camera", "points", "region".
ROLE_PROP = "neusblend_role"
#: Custom property holding :func:`..capture_data.capture_key` of the capture (on the frame, region and collection).
SOURCE_PROP = "neusblend_source"
#: Custom property holding blender_from_capture, 16 floats, row-major.
FRAME_PROP = "neusblend_capture_to_blender"
#: The colour attribute of the points (sRGB bytes, point domain), as on reconstructed meshes.
COLOR_ATTRIBUTE = "Col"
POINTS_NODE_GROUP = "NeuS Points"
POINTS_MATERIAL = "NeuS Point Colors"
#: Opacity of the photo behind each camera's view.
BACKGROUND_ALPHA = 0.8


def _matrix(m: np.ndarray) -> Matrix:
    return Matrix(np.asarray(m, dtype=np.float64).reshape(4, 4).tolist())


def as_array(m: Matrix) -> np.ndarray:
    """A mathutils 4 x 4 as a float64 numpy array."""
    return np.array([list(row) for row in m], dtype=np.float64)


def _link_only(obj: bpy.types.Object, collection: bpy.types.Collection) -> None:
    if collection.objects.get(obj.name) is None:
        collection.objects.link(obj)


def _parent(obj: bpy.types.Object, parent: bpy.types.Object, local: np.ndarray) -> None:
    """Parent ``obj`` to ``parent`` with an identity parent inverse, so its local matrix is ``local``."""
    obj.parent = parent
    obj.matrix_parent_inverse = Matrix.Identity(4)
    obj.matrix_basis = _matrix(local)


# ---------------------------------------------------------------------------------------------------------------
# finding an import


def find_capture(scene: bpy.types.Scene | None, source: str) -> bpy.types.Object | None:
    """The frame empty of the import of ``source`` (a :func:`..capture_data.capture_key`) in ``scene``, if any."""
    if not source or scene is None:
        return None
    for obj in scene.objects:
        if obj.get(ROLE_PROP) == "frame" and obj.get(SOURCE_PROP) == source:
            return obj
    return None


def find_region(scene: bpy.types.Scene | None, source: str) -> bpy.types.Object | None:
    """The region box of the import of ``source`` in ``scene`` (parented to its frame or not), if any."""
    if not source or scene is None:
        return None
    for obj in scene.objects:
        if obj.get(ROLE_PROP) == "region" and obj.get(SOURCE_PROP) == source and obj.type == "MESH":
            return obj
    return None


def capture_collection(frame: bpy.types.Object) -> bpy.types.Collection | None:
    """The collection an import's frame empty lives in."""
    return frame.users_collection[0] if frame.users_collection else None


def settings_capture_path(settings: bpy.types.PropertyGroup) -> str:
    """The posed capture the panel's settings (``Scene.neusblend``) point at: the poses job estimated from the
    photo folder, or the photo folder itself when it is a posed capture; "" otherwise."""
    images = bpy.path.abspath(settings.images_dir) if settings.images_dir else ""
    return capture_for_photos(images, settings.poses_job, settings.poses_images)


def region_matrix(frame: bpy.types.Object, box: bpy.types.Object) -> np.ndarray:
    """The region box as ``train --roi`` wants it: the 4 x 4 from the cube [-1, 1]^3 to capture coordinates.

    Reads the box's own transform (the user may have moved, turned or scaled it) and its mesh's bounds (in case the
    vertices were edited rather than the object scaled). A box parented to the frame is in capture coordinates
    already; any other box goes through the world matrices (valid once the scene has been evaluated).
    """
    corners = np.array([tuple(c) for c in box.bound_box], dtype=np.float64)
    local = box_matrix(corners.min(0), corners.max(0))
    if box.parent == frame:
        return as_array(box.matrix_parent_inverse) @ as_array(box.matrix_basis) @ local
    return roi_in_capture(as_array(frame.matrix_world), as_array(box.matrix_world) @ local)


# ---------------------------------------------------------------------------------------------------------------
# importing


def import_capture(scene: bpy.types.Scene, data: CaptureData, *, size: float = 1.0, backgrounds: bool = True,
                   point_radius: float = 0.004, set_scene_camera: bool = True) -> bpy.types.Object:
    """Create (or replace) the import of ``data`` in ``scene``; returns the frame empty.

    Args:
        scene: where the collection goes.
        data: the capture (:func:`..capture_data.read_poses_job` or an export).
        size: the region of interest's radius in Blender units (0: keep the capture's own scale).
        backgrounds: show each photo behind its camera's view.
        point_radius: radius of the displayed points, as a fraction of ``size`` (of the region's radius).
        set_scene_camera: make the first camera of the most common photo size the scene camera, unless the scene
            has a camera of its own that is not part of an import.

    A second import of the same source reuses its collection and frame empty (so a reconstructed mesh parented to
    it stays) and replaces the cameras, points and region box.
    """
    roi = data.roi
    radius = float(roi["radius"])
    frame_m = capture_frame(roi["up"], data.cameras[0].c2w[:3, 2], roi["center"], radius, size or None)
    scale = float(np.cbrt(np.linalg.det(frame_m[:3, :3])))

    frame = find_capture(scene, data.source)
    if frame is not None and capture_collection(frame) is not None:
        collection = capture_collection(frame)
        assert collection is not None
        _remove_parts(collection)
    else:
        collection = bpy.data.collections.new(data.name)
        scene.collection.children.link(collection)
        frame = bpy.data.objects.new(f"{data.name} Frame", None)
        frame.empty_display_type = "ARROWS"
        collection.objects.link(frame)
    frame.matrix_parent_inverse = Matrix.Identity(4)
    frame.parent = None
    frame.matrix_world = _matrix(frame_m)
    frame.empty_display_size = 0.5 / scale
    frame_props = frame_m.ravel().tolist()
    for owner in (frame, collection):
        owner[SOURCE_PROP] = data.source
        owner[FRAME_PROP] = frame_props
    frame[ROLE_PROP] = "frame"
    frame["neusblend_layout"] = data.layout
    frame["neusblend_cameras"] = len(data.cameras)

    cams = _camera_collection(collection, data.name)
    centers = np.stack([c.c2w[:3, 3] for c in data.cameras])
    far = float(np.linalg.norm(transform_points(frame_m, centers), axis=1).max()) + scale * radius
    camera_objects = [_make_camera(cam, frame, cams, radius, scale, far, backgrounds) for cam in data.cameras]
    if len(data.points):
        _make_points(data, frame, collection, point_radius * (size or radius) / scale)
    _make_region(data, frame, collection, frame_m)

    width, height = data.common_size()
    render = scene.render
    render.resolution_x, render.resolution_y, render.resolution_percentage = width, height, 100
    first = next(o for o, c in zip(camera_objects, data.cameras) if (c.width, c.height) == (width, height))
    render.pixel_aspect_x = float(first["neusblend_pixel_aspect"][0])
    render.pixel_aspect_y = float(first["neusblend_pixel_aspect"][1])
    if set_scene_camera and (scene.camera is None or scene.camera.get(ROLE_PROP) == "camera"):
        scene.camera = first
    return frame


def _remove_parts(collection: bpy.types.Collection) -> None:
    """Remove what an earlier import made (cameras, points, region), keeping the frame and anything else."""
    for obj in list(collection.all_objects):
        if obj.get(ROLE_PROP) in ("camera", "points", "region"):
            data = obj.data
            bpy.data.objects.remove(obj)
            if data is not None and data.users == 0:
                if isinstance(data, bpy.types.Camera):
                    bpy.data.cameras.remove(data)
                elif isinstance(data, bpy.types.Mesh):
                    bpy.data.meshes.remove(data)


def _camera_collection(collection: bpy.types.Collection, name: str) -> bpy.types.Collection:
    for child in collection.children:
        if child.get(ROLE_PROP) == "cameras":
            return child
    cams = bpy.data.collections.new(f"{name} Cameras")
    cams[ROLE_PROP] = "cameras"
    collection.children.link(cams)
    return cams


def _make_camera(view: CameraView, frame: bpy.types.Object, collection: bpy.types.Collection, radius: float,
                 scale: float, far: float, backgrounds: bool) -> bpy.types.Object:
    """One camera object: intrinsics from K at the photo's size, the pose from c2w, the photo behind it."""
    p = blender_camera_params(view.K, view.width, view.height)
    name = Path(view.name).stem or view.name
    cam = bpy.data.cameras.new(name)
    cam.type = "PERSP"
    cam.lens_unit = "MILLIMETERS"
    cam.sensor_fit = p.sensor_fit
    cam.sensor_width, cam.sensor_height = p.sensor_width, p.sensor_height
    cam.lens = p.lens
    cam.shift_x, cam.shift_y = p.shift_x, p.shift_y
    cam.clip_start = max(1e-4, 0.01 * radius * scale)  # clipping distances are in world units
    cam.clip_end = max(10.0 * far, 100.0 * radius * scale)
    cam.display_size = 0.15 * radius  # local units: the frame's scale applies
    obj = bpy.data.objects.new(name, cam)
    collection.objects.link(obj)
    _parent(obj, frame, view.c2w @ CV_TO_GL)
    obj[ROLE_PROP] = "camera"
    obj["neusblend_image"] = view.name
    obj["neusblend_image_path"] = view.image_path
    obj["neusblend_width"] = view.width
    obj["neusblend_height"] = view.height
    obj["neusblend_pixel_aspect"] = [p.pixel_aspect_x, p.pixel_aspect_y]
    obj["neusblend_K"] = np.asarray(view.K, dtype=np.float64).ravel().tolist()
    if backgrounds and view.image_path and Path(view.image_path).is_file():
        try:
            image = bpy.data.images.load(view.image_path, check_existing=True)
        except RuntimeError as exc:  # an unreadable file: the camera is still useful
            log.warning("cannot load %s: %s", view.image_path, exc)
        else:
            bg = cam.background_images.new()
            bg.image = image
            bg.alpha = BACKGROUND_ALPHA
            bg.frame_method = "FIT"
            bg.display_depth = "BACK"
            cam.show_background_images = True
    return obj


def _make_points(data: CaptureData, frame: bpy.types.Object, collection: bpy.types.Collection,
                 radius_local: float) -> bpy.types.Object:
    """The sparse points: mesh vertices with their colours (and error, track length) shown as points."""
    name = f"{data.name} Points"
    mesh = bpy.data.meshes.new(name)
    pts = np.ascontiguousarray(data.points, dtype=np.float32)
    mesh.vertices.add(len(pts))
    mesh.vertices.foreach_set("co", pts.ravel())
    rgba = np.ones((len(pts), 4), dtype=np.float32)
    rgba[:, :3] = np.asarray(data.point_colors, dtype=np.float32)[:, :3] / 255.0
    color = mesh.color_attributes.new(COLOR_ATTRIBUTE, "BYTE_COLOR", "POINT")
    color.data.foreach_set("color_srgb", rgba.ravel())
    mesh.color_attributes.active_color = color
    mesh.color_attributes.render_color_index = mesh.color_attributes.active_color_index
    if data.point_errors is not None and len(data.point_errors) == len(pts):
        mesh.attributes.new("error", "FLOAT", "POINT").data.foreach_set(
            "value", np.ascontiguousarray(data.point_errors, dtype=np.float32))
    if data.track_lengths is not None and len(data.track_lengths) == len(pts):
        mesh.attributes.new("track_length", "INT", "POINT").data.foreach_set(
            "value", np.ascontiguousarray(data.track_lengths, dtype=np.int32))
    mesh.update()
    material = points_material()
    mesh.materials.append(material)
    obj = bpy.data.objects.new(name, mesh)
    collection.objects.link(obj)
    _parent(obj, frame, np.eye(4))
    obj[ROLE_PROP] = "points"
    mod = obj.modifiers.new("Points", "NODES")
    group = points_node_group()
    mod.node_group = group
    radius_socket = next(s for s in group.interface.items_tree
                         if getattr(s, "in_out", "") == "INPUT" and s.name == "Radius")
    mod[radius_socket.identifier] = float(radius_local)
    return obj


def _make_region(data: CaptureData, frame: bpy.types.Object, collection: bpy.types.Collection,
                 frame_m: np.ndarray) -> bpy.types.Object:
    """The region of interest: an upright wire cube (mesh [-1, 1]^3) the user moves, rotates and scales."""
    lo, hi = region_box_in_frame(frame_m, data.roi["box_min"], data.roi["box_max"], data.points)
    obj = wire_box(f"{data.name} Region", [collection])
    _parent(obj, frame, np.linalg.inv(frame_m) @ box_matrix(lo, hi))
    obj[ROLE_PROP] = "region"
    obj[SOURCE_PROP] = data.source
    return obj


def wire_box(name: str, collections: Sequence[bpy.types.Collection]) -> bpy.types.Object:
    """A box to move, turn and scale: a wire cube (mesh [-1, 1]^3) drawn in front, never rendered."""
    mesh = bpy.data.meshes.new(name)
    verts = [(x, y, z) for x in (-1.0, 1.0) for y in (-1.0, 1.0) for z in (-1.0, 1.0)]
    faces = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    mesh.from_pydata(verts, [], faces)
    mesh.update()
    obj = bpy.data.objects.new(name, mesh)
    for collection in collections:
        collection.objects.link(obj)
    obj.display_type = "WIRE"
    obj.show_in_front = True
    obj.hide_render = True
    obj.visible_shadow = False
    return obj


# ---------------------------------------------------------------------------------------------------------------
# shared datablocks


def points_material() -> bpy.types.Material:
    """The material that shows the points' :data:`COLOR_ATTRIBUTE` (made once per file)."""
    mat = bpy.data.materials.get(POINTS_MATERIAL)
    if mat is not None:
        return mat
    mat, bsdf = principled_material(POINTS_MATERIAL, roughness=1.0)
    nodes, links = mat.node_tree.nodes, mat.node_tree.links
    attr = nodes.new("ShaderNodeAttribute")  # reads point-cloud attributes too (a Color Attribute node does not)
    attr.attribute_name = COLOR_ATTRIBUTE
    attr.location = (bsdf.location.x - 300, bsdf.location.y)
    links.new(attr.outputs["Color"], bsdf.inputs["Base Color"])
    mat.diffuse_color = (0.9, 0.9, 0.9, 1.0)
    return mat


def points_node_group() -> bpy.types.NodeTree:
    """Geometry Nodes "Mesh to Points" with a Radius input and the points material (made once per file)."""
    group = bpy.data.node_groups.get(POINTS_NODE_GROUP)
    if group is not None and group.bl_idname == "GeometryNodeTree":
        return group
    group = bpy.data.node_groups.new(POINTS_NODE_GROUP, "GeometryNodeTree")
    if hasattr(group, "is_modifier"):
        group.is_modifier = True
    iface = group.interface
    iface.new_socket("Geometry", in_out="INPUT", socket_type="NodeSocketGeometry")
    radius = iface.new_socket("Radius", in_out="INPUT", socket_type="NodeSocketFloat")
    radius.default_value = 0.01
    radius.min_value = 0.0
    iface.new_socket("Geometry", in_out="OUTPUT", socket_type="NodeSocketGeometry")
    nodes, links = group.nodes, group.links
    gin, gout = nodes.new("NodeGroupInput"), nodes.new("NodeGroupOutput")
    to_points = nodes.new("GeometryNodeMeshToPoints")
    set_mat = nodes.new("GeometryNodeSetMaterial")
    set_mat.inputs["Material"].default_value = points_material()
    gin.location, to_points.location, set_mat.location, gout.location = (-400, 0), (-150, 0), (100, 0), (330, 0)
    links.new(gin.outputs["Geometry"], to_points.inputs["Mesh"])
    links.new(gin.outputs["Radius"], to_points.inputs["Radius"])
    links.new(to_points.outputs["Points"], set_mat.inputs["Geometry"])
    links.new(set_mat.outputs["Geometry"], gout.inputs["Geometry"])
    return group


# ---------------------------------------------------------------------------------------------------------------
# looking through a camera


def use_camera(scene: bpy.types.Scene, obj: bpy.types.Object) -> None:
    """Make ``obj`` (an imported camera) the scene camera at its photo's size and pixel aspect.

    Blender has one render resolution per scene, so a camera of a mixed capture lines up with its photo only at its
    own size: this sets it.
    """
    scene.camera = obj
    render = scene.render
    if "neusblend_width" in obj and "neusblend_height" in obj:
        render.resolution_x = int(obj["neusblend_width"])
        render.resolution_y = int(obj["neusblend_height"])
        render.resolution_percentage = 100
    if "neusblend_pixel_aspect" in obj:
        render.pixel_aspect_x = float(obj["neusblend_pixel_aspect"][0])
        render.pixel_aspect_y = float(obj["neusblend_pixel_aspect"][1])
