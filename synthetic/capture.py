"""Render a posed capture of Blender objects, with its ground-truth mesh, as a dataset the backend reads.

What :func:`capture_objects` writes into its output folder (all cameras and the mesh in Blender world coordinates):

- ``image/000000.png ...``, ``mask/000000.png ...`` (with ``masks``) and ``cameras_sphere.npz``: the NeuS/IDR
  layout, ``world_mat_i = K [R | t]`` (OpenCV), ``scale_mat_i`` = the sphere of 1.1 bounding radii around the
  objects' bounding-box centre. ``python -m backend train --data DIR`` reads this.
- ``nerf/transforms.json`` with ``nerf/images/`` and ``nerf/masks/``: the same capture for NeRF-style tools
  (OpenGL camera-to-world, instant-ngp pixel convention).
- ``gt_mesh.ply``: the evaluated (modifiers applied) triangles of the objects, in world coordinates.
- ``capture.json``: how it was made: layout, size, samples, denoiser, seed, the objects' centre and bounding radius
  (half the diagonal of their world bounding box), camera distance, timings.

With ``backdrop="room"`` (:mod:`synthetic.room`) the objects stand on a textured table in a textured room: the images
are opaque, ``scale_mat`` is the identity (no normalization given), there is no ``mask/`` and no ``nerf/masks/``;
the masks, from a second pass of the objects alone, go to ``eval_masks/`` (for evaluation and ``train --masks``
only), and ``gt_region.ply`` (objects + the table top inside the region box) and ``region.json`` (that box) are
written beside ``gt_mesh.ply``.

Rendering happens in a temporary scene that links the objects (the user's scene, its camera, world and render
settings are left alone): Cycles on the CPU, a small sample count, OpenImageDenoise when the build has it, a sun and a
grey world for shading cues, transparent film so the alpha gives the masks. Objects without a texture get a
procedural colour texture for the duration of the render, so that photometric cues exist.

Headless facts: ``bpy.app.timers`` never fire in the bpy module or ``blender -b``; this module never relies on them.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import bpy
import numpy as np

if __package__ and "." in __package__:  # a subpackage of the installed extension, beside its backend
    from ..backend import capture_files, protocol
    from ..backend.meshing import mesh_io
else:  # scripts and tests import it top-level, with the repository root on sys.path
    from backend import capture_files, protocol
    from backend.meshing import mesh_io

from . import cameras, room

#: Object types that have a surface to render and to measure against.
GEOMETRY_TYPES = ("MESH", "CURVE", "SURFACE", "META", "FONT")

#: Built-in objects for captures that need no file: name -> (primitive operator, keyword arguments, subdivision).
BUILTINS: dict[str, tuple[str, dict[str, Any], int]] = {
    "suzanne": ("primitive_monkey_add", {}, 2),
    "torus": ("primitive_torus_add", {"major_segments": 64, "minor_segments": 24}, 0),
    "sphere": ("primitive_uv_sphere_add", {"segments": 64, "ring_count": 32}, 0),
    "cube": ("primitive_cube_add", {}, 0),
    "cylinder": ("primitive_cylinder_add", {"vertices": 64}, 0),
    "cone": ("primitive_cone_add", {"vertices": 64}, 0),
}

#: Node types that count as "this material has a texture" (image or procedural textures, vertex colours).
_TEXTURE_NODE_PREFIXES = ("ShaderNodeTex",)
_TEXTURE_NODE_TYPES = ("ShaderNodeAttribute", "ShaderNodeVertexColor")

#: Backgrounds a capture can have: none (the objects alone on a transparent film) or a textured room.
BACKDROPS = ("none", "room")
ROOM_MAX_BOUNCES = 3  # light bounces in the room (4 costs 10 % more and looks the same after denoising)
EVAL_MASKS = "eval_masks"  # room captures' masks: not a folder any loader picks up by itself

PROCEDURAL_MATERIAL = "NeuSBlend Procedural Texture"
SCALE_MAT_MARGIN = 1.1  # the NeuS sphere's radius over the objects' bounding radius
ProgressFn = Callable[[int, int], None]


@dataclass
class CaptureSettings:
    """How to render a capture. Sizes in pixels, angles in degrees, distances in bounding radii.

    Attributes:
        layout: ``ring``, ``sphere`` or ``dtu`` (see :func:`synthetic.cameras.layout_directions`).
        n_views: number of views (None: the layout's default: 24, 48, 49).
        width, height: image size.
        samples: Cycles samples per pixel.
        denoise: OpenImageDenoise when the build has it (falls back silently, noted in capture.json).
        masks: write ``mask/`` from the alpha.
        seed: Cycles seed (view i uses ``seed + i``).
        lens_mm, sensor_mm: the camera (``AUTO`` sensor fit: the sensor width spans the longer image side).
        distance: camera distance from the centre in bounding radii (None: the bounding sphere fills the view).
        elevation_deg: the ring's elevation; cap_deg: the DTU-like cap's half-angle.
        texture: ``auto`` (procedural texture on objects whose materials have no texture), ``always``, ``never``.
        background: RGB in [0, 1] the transparent background is composited onto in the images.
        sun_strength, world_strength: lighting (sun from the upper front left, uniform grey world).
        threads: render threads (0: all cores).
        nerf: also write ``nerf/transforms.json``.
        backdrop: ``none`` (the objects alone, masks from the alpha) or ``room`` (the objects on a textured table in
            a textured room, see :mod:`synthetic.room`: opaque images, masks from a second pass of the objects alone
            written to ``eval_masks/`` only, ``gt_region.ply`` and ``region.json``). In a room the default camera
            distance frames the bounding sphere with :data:`synthetic.room.ROOM_FIT_MARGIN` and the ``sphere``
            layout keeps to a cap of :data:`synthetic.room.ROOM_SPHERE_CAP_DEG` above the table.
        region_margin: (room) how far the region box reaches beyond the objects, in bounding radii.
        mask_samples: (room) samples of the mask pass (its alpha; box filter one pixel wide).
    """

    layout: str = "dtu"
    n_views: int | None = None
    width: int = 200
    height: int = 200
    samples: int = 16
    denoise: bool = True
    masks: bool = True
    seed: int = 0
    lens_mm: float = 50.0
    sensor_mm: float = 36.0
    distance: float | None = None
    elevation_deg: float = 30.0
    cap_deg: float = 65.0
    texture: str = "auto"
    background: tuple[float, float, float] = (0.0, 0.0, 0.0)
    sun_strength: float = 3.0
    world_strength: float = 0.35
    threads: int = 0
    nerf: bool = True
    backdrop: str = "none"
    region_margin: float = room.REGION_MARGIN
    mask_samples: int = 16

    def __post_init__(self) -> None:
        if self.backdrop not in BACKDROPS:
            raise ValueError(f"unknown background {self.backdrop!r}; use one of {', '.join(BACKDROPS)}")
        if self.region_margin < 0:
            raise ValueError("the region margin must not be negative")
        if self.layout not in cameras.LAYOUTS:
            raise ValueError(f"unknown layout {self.layout!r}; use one of {', '.join(cameras.LAYOUTS)}")
        if self.texture not in ("auto", "always", "never"):
            raise ValueError(f"texture must be auto, always or never, not {self.texture!r}")
        if self.width < 8 or self.height < 8:
            raise ValueError("images must be at least 8 x 8 pixels")
        if self.samples < 1:
            raise ValueError("samples must be at least 1")


@dataclass
class CaptureResult:
    """What :func:`capture_objects` wrote.

    Attributes:
        out_dir: the dataset folder (NeuS layout at its root).
        metadata: the contents of ``capture.json``.
        K: (3, 3) intrinsics shared by all views (OpenCV pixel centres).
        c2w: (N, 4, 4) camera-to-world, OpenCV axes, world coordinates.
        gt_vertices: (V, 3) float64 world coordinates; gt_faces: (F, 3) int64.
        masks: N bool arrays (H, W) (alpha > 0.5), also when no mask files were written.
    """

    out_dir: Path
    metadata: dict[str, Any]
    K: np.ndarray
    c2w: np.ndarray
    gt_vertices: np.ndarray
    gt_faces: np.ndarray
    masks: list[np.ndarray] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------------------------
# scene content: objects, geometry, materials


def reset_blender() -> None:
    """An empty factory scene (drops everything: use it in scripts and tests, never in the UI)."""
    bpy.ops.wm.read_factory_settings(use_empty=True)


def geometry_objects(objects: Sequence[bpy.types.Object]) -> list[bpy.types.Object]:
    """The objects that have a surface (meshes, curves, text, ...)."""
    return [ob for ob in objects if ob.type in GEOMETRY_TYPES]


def world_geometry(objects: Sequence[bpy.types.Object], depsgraph: bpy.types.Depsgraph | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
    """The evaluated (modifiers applied) triangles of the objects, joined, in world coordinates.

    Returns:
        vertices (V, 3) float64, faces (F, 3) int64.
    """
    depsgraph = depsgraph or bpy.context.evaluated_depsgraph_get()
    verts: list[np.ndarray] = []
    faces: list[np.ndarray] = []
    offset = 0
    for ob in geometry_objects(objects):
        ev = ob.evaluated_get(depsgraph)
        mesh = ev.to_mesh()
        try:
            mesh.calc_loop_triangles()
            n_v, n_t = len(mesh.vertices), len(mesh.loop_triangles)
            co = np.empty(n_v * 3, dtype=np.float32)
            mesh.vertices.foreach_get("co", co)
            tri = np.empty(n_t * 3, dtype=np.int32)
            mesh.loop_triangles.foreach_get("vertices", tri)
            m = np.array(ev.matrix_world, dtype=np.float64)
        finally:
            ev.to_mesh_clear()
        v = co.reshape(-1, 3).astype(np.float64) @ m[:3, :3].T + m[:3, 3]
        verts.append(v)
        faces.append(tri.reshape(-1, 3).astype(np.int64) + offset)
        offset += n_v
    if not verts:
        return np.zeros((0, 3)), np.zeros((0, 3), dtype=np.int64)
    return np.concatenate(verts), np.concatenate(faces)


def bounding_sphere(vertices: np.ndarray) -> tuple[np.ndarray, float]:
    """Centre (3,) and radius of the sphere around (V, 3) vertices' bounding box: its centre, half its diagonal."""
    lo, hi = vertices.min(0), vertices.max(0)
    return 0.5 * (lo + hi), float(0.5 * np.linalg.norm(hi - lo))


def has_texture(ob: bpy.types.Object) -> bool:
    """Whether any material of the object uses a texture node or vertex colours."""
    for slot in ob.material_slots:
        mat = slot.material
        if mat is None or mat.node_tree is None:
            continue
        for node in mat.node_tree.nodes:
            if node.bl_idname.startswith(_TEXTURE_NODE_PREFIXES) or node.bl_idname in _TEXTURE_NODE_TYPES:
                return True
    return False


def procedural_material(name: str = PROCEDURAL_MATERIAL) -> bpy.types.Material:
    """A colourful procedural material (Voronoi cells mixed with noise, on generated coordinates).

    Generated coordinates span the object's bounding box, so the pattern has the same number of cells across any
    object whatever its size: about ten, i.e. features of a few pixels at the capture sizes used here.
    """
    mat = bpy.data.materials.get(name)
    if mat is not None:
        return mat
    mat = bpy.data.materials.new(name)
    if mat.node_tree is None:  # Blender < 5.0: materials start without nodes
        mat.use_nodes = True
    nt = mat.node_tree
    nt.nodes.clear()
    coords = nt.nodes.new("ShaderNodeTexCoord")
    voronoi = nt.nodes.new("ShaderNodeTexVoronoi")
    voronoi.inputs["Scale"].default_value = 9.0
    noise = nt.nodes.new("ShaderNodeTexNoise")
    noise.inputs["Scale"].default_value = 24.0
    noise.inputs["Detail"].default_value = 4.0
    mix = nt.nodes.new("ShaderNodeMix")
    mix.data_type = "RGBA"
    bsdf = nt.nodes.new("ShaderNodeBsdfPrincipled")
    bsdf.inputs["Roughness"].default_value = 0.6
    out = nt.nodes.new("ShaderNodeOutputMaterial")
    a = next(s for s in mix.inputs if s.name == "A" and s.type == "RGBA")
    b = next(s for s in mix.inputs if s.name == "B" and s.type == "RGBA")
    fac = next(s for s in mix.inputs if s.name == "Factor" and s.type == "VALUE")
    result = next(s for s in mix.outputs if s.type == "RGBA")
    fac.default_value = 0.35
    nt.links.new(coords.outputs["Generated"], voronoi.inputs["Vector"])
    nt.links.new(coords.outputs["Generated"], noise.inputs["Vector"])
    nt.links.new(voronoi.outputs["Color"], a)
    nt.links.new(noise.outputs["Color"], b)
    nt.links.new(result, bsdf.inputs["Base Color"])
    nt.links.new(bsdf.outputs["BSDF"], out.inputs["Surface"])
    return mat


@contextlib.contextmanager
def temporary_textures(objects: Sequence[bpy.types.Object], mode: str = "auto") -> Iterator[list[str]]:
    """Give objects without a texture the procedural material for the duration of the block, then restore.

    Args:
        mode: ``auto`` (only objects whose materials use no texture), ``always`` (every object), ``never``.

    Yields:
        the names of the objects that got the procedural material.
    """
    if mode == "never":
        yield []
        return
    mat = procedural_material()
    slot_undo: list[tuple[bpy.types.MaterialSlot, bpy.types.Material | None]] = []
    appended: list[bpy.types.ID] = []  # object data that got one appended slot
    seen_data: set[int] = set()
    changed: list[str] = []
    try:
        for ob in geometry_objects(objects):
            if mode == "auto" and has_texture(ob):
                continue
            changed.append(ob.name)
            if len(ob.material_slots) == 0:
                key = ob.data.as_pointer()
                if key not in seen_data:
                    seen_data.add(key)
                    ob.data.materials.append(mat)
                    appended.append(ob.data)
                continue
            for slot in ob.material_slots:
                slot_undo.append((slot, slot.material))
                slot.material = mat
        yield changed
    finally:
        for slot, old in reversed(slot_undo):
            slot.material = old
        for data in appended:
            data.materials.pop()
        if mat.users == 0:
            bpy.data.materials.remove(mat)


# ---------------------------------------------------------------------------------------------------------------
# objects for the headless script: a mesh file or a built-in primitive, normalized


def mesh_object(name: str, vertices: np.ndarray, faces: Sequence[Sequence[int]], smooth: bool = True
                ) -> bpy.types.Object:
    """A new object in the current scene from (V, 3) vertices and polygons (lists of vertex indices)."""
    mesh = bpy.data.meshes.new(name)
    mesh.from_pydata(np.asarray(vertices, dtype=np.float64).tolist(), [], [list(map(int, f)) for f in faces])
    mesh.validate()
    if smooth:
        mesh.polygons.foreach_set("use_smooth", np.ones(len(mesh.polygons), dtype=bool))
    ob = bpy.data.objects.new(name, mesh)
    bpy.context.scene.collection.objects.link(ob)
    return ob


def y_up_to_z_up() -> np.ndarray:
    """(4, 4) rotation from a Y-up file (OBJ, glTF, most PLY) to Blender's Z-up: (x, y, z) -> (x, -z, y)."""
    m = np.eye(4)
    m[:3, :3] = [[1, 0, 0], [0, 0, -1], [0, 1, 0]]
    return m


def import_mesh(path: str | os.PathLike[str], up: str = "y", smooth: bool = True) -> bpy.types.Object:
    """A mesh file (.obj, or .ply / .npz written by the backend) as an object; the file's own coordinates are the
    object's local coordinates, and ``matrix_world`` takes a Y-up file to Blender's Z-up (``up="y"``)."""
    mesh = mesh_io.read_mesh(path, polygons=True)
    ob = mesh_object(Path(path).stem, mesh["vertices"], mesh["polygons"], smooth=smooth)
    if up == "y":
        ob.matrix_world = _matrix(y_up_to_z_up())
    elif up != "z":
        raise ValueError("up must be y or z")
    return ob


def add_builtin(name: str) -> bpy.types.Object:
    """A built-in primitive (see :data:`BUILTINS`), smooth shaded, with its subdivision modifier."""
    if name not in BUILTINS:
        raise ValueError(f"unknown built-in {name!r}; use one of {', '.join(BUILTINS)}")
    op, kwargs, levels = BUILTINS[name]
    getattr(bpy.ops.mesh, op)(**kwargs)
    ob = bpy.context.active_object
    ob.name = name
    if name in ("suzanne", "torus", "sphere"):
        ob.data.polygons.foreach_set("use_smooth", np.ones(len(ob.data.polygons), dtype=bool))
    if levels:
        mod = ob.modifiers.new("Subdivision", "SUBSURF")
        mod.levels = mod.render_levels = levels
    return ob


def normalize_objects(objects: Sequence[bpy.types.Object], radius: float = 1.0) -> np.ndarray:
    """Move and scale the objects together so that their bounding box is centred at the origin with half-diagonal
    ``radius`` (so they fit inside the sphere of that radius).

    Returns:
        (4, 4) the similarity applied on top of each object's previous ``matrix_world``.
    """
    bpy.context.view_layer.update()
    verts, _ = world_geometry(objects)
    if len(verts) == 0:
        raise ValueError("the objects have no vertices")
    center, r = bounding_sphere(verts)
    s = radius / max(r, 1e-12)
    sim = np.eye(4)
    sim[:3, :3] *= s
    sim[:3, 3] = -s * center
    for ob in objects:
        ob.matrix_world = _matrix(sim @ np.array(ob.matrix_world, dtype=np.float64))
    bpy.context.view_layer.update()
    return sim


def _matrix(m: np.ndarray) -> Any:  # noqa: ANN401 - a mathutils.Matrix
    from mathutils import Matrix

    return Matrix(np.asarray(m, dtype=np.float64).tolist())


# ---------------------------------------------------------------------------------------------------------------
# rendering


def denoiser_available() -> bool:
    """Whether this Blender's Cycles was built with OpenImageDenoise (and this CPU can run it)."""
    try:
        import _cycles

        return bool(getattr(_cycles, "with_openimagedenoise", False))
    except ImportError:
        return False


def _setup_render(scene: bpy.types.Scene, settings: CaptureSettings) -> str | None:
    """Cycles CPU, samples, seed, denoising, transparent film, Standard view transform. Returns the denoiser."""
    scene.render.engine = "CYCLES"
    cyc = scene.cycles
    cyc.device = "CPU"
    cyc.samples = settings.samples
    cyc.seed = settings.seed
    cyc.use_animated_seed = False
    cyc.max_bounces = 4
    cyc.transparent_max_bounces = 4
    denoiser = None
    if settings.denoise and denoiser_available():
        cyc.use_denoising = True
        cyc.denoiser = "OPENIMAGEDENOISE"
        # the "accurate" prefilter of the albedo/normal passes costs about 1.5 s an image at 200 px, for nothing
        # visible at these sizes; "fast" costs 0.1 s
        cyc.denoising_prefilter = "FAST"
        with contextlib.suppress(AttributeError, TypeError):  # Blender >= 4.4
            cyc.denoising_quality = "BALANCED"
        denoiser = "OPENIMAGEDENOISE"
    else:
        cyc.use_denoising = False
    r = scene.render
    r.resolution_x, r.resolution_y, r.resolution_percentage = settings.width, settings.height, 100
    r.pixel_aspect_x = r.pixel_aspect_y = 1.0
    r.film_transparent = True
    r.use_persistent_data = True  # keep the BVH between views: only the camera moves
    if settings.threads > 0:
        r.threads_mode, r.threads = "FIXED", settings.threads
    r.image_settings.file_format = "PNG"
    r.image_settings.color_mode = "RGBA"
    r.image_settings.color_depth = "8"
    scene.display_settings.display_device = "sRGB"
    scene.view_settings.view_transform = "Standard"  # colours as the material says, no filmic curve
    scene.view_settings.look = "None"
    scene.view_settings.exposure = 0.0
    scene.view_settings.gamma = 1.0
    return denoiser


def _setup_lights(scene: bpy.types.Scene, settings: CaptureSettings, center: np.ndarray, radius: float
                  ) -> list[bpy.types.ID]:
    """A sun from the upper front left and a uniform grey world. Returns the data-blocks made (to remove later)."""
    world = bpy.data.worlds.new("NeuSBlend Capture World")
    if world.node_tree is None:  # Blender < 5.0
        world.use_nodes = True
    bg = next(n for n in world.node_tree.nodes if n.bl_idname == "ShaderNodeBackground")
    bg.inputs["Color"].default_value = (0.5, 0.5, 0.5, 1.0)
    bg.inputs["Strength"].default_value = settings.world_strength * 2.0
    scene.world = world
    sun_data = bpy.data.lights.new("NeuSBlend Capture Sun", "SUN")
    sun_data.energy = settings.sun_strength
    sun_data.angle = math.radians(5.0)  # slightly soft shadows
    sun = bpy.data.objects.new("NeuSBlend Capture Sun", sun_data)
    to_light = np.array([-0.5, -0.7, 1.0])
    sun.matrix_world = _matrix(cameras.look_at_blender(center + 4 * radius * to_light / np.linalg.norm(to_light),
                                                        center))
    scene.collection.objects.link(sun)
    return [world, sun, sun_data]


def render_views(scene: bpy.types.Scene, camera: bpy.types.Object, c2w_blender: np.ndarray, work_dir: Path,
                 progress: ProgressFn | None = None) -> list[np.ndarray]:
    """Render one image per pose.

    Args:
        c2w_blender: (N, 4, 4) Blender camera-to-world of each view.

    Returns:
        N uint8 arrays (H, W, 4): straight (not premultiplied) RGBA as Blender writes it.
    """
    from PIL import Image

    base_seed = scene.cycles.seed
    out: list[np.ndarray] = []
    for i, pose in enumerate(c2w_blender):
        camera.matrix_world = _matrix(pose)
        scene.cycles.seed = base_seed + i
        path = work_dir / f"view_{i:04d}.png"
        scene.render.filepath = str(path)
        bpy.ops.render.render(write_still=True, scene=scene.name)
        with Image.open(path) as im:
            out.append(np.asarray(im.convert("RGBA")).copy())
        path.unlink()
        if progress is not None:
            progress(i + 1, len(c2w_blender))
    scene.cycles.seed = base_seed
    return out


def composite(rgba: np.ndarray, background: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, 4) straight-alpha uint8 -> (H, W, 3) uint8 over ``background`` (RGB in [0, 1]) and (H, W) uint8 mask
    (255 where alpha > 0.5)."""
    a = rgba[..., 3:4].astype(np.float32) / 255.0
    bg = np.asarray(background, dtype=np.float32).reshape(1, 1, 3) * 255.0
    rgb = rgba[..., :3].astype(np.float32) * a + bg * (1.0 - a)
    mask = np.where(rgba[..., 3] >= 128, 255, 0).astype(np.uint8)
    return np.clip(rgb + 0.5, 0, 255).astype(np.uint8), mask


def capture_objects(objects: Sequence[bpy.types.Object], out_dir: str | os.PathLike[str],
                    settings: CaptureSettings | None = None, *, progress: ProgressFn | None = None,
                    extra_metadata: dict[str, Any] | None = None) -> CaptureResult:
    """Render a posed capture of ``objects`` into ``out_dir`` (see the module docstring for what it writes).

    The objects stay where they are; the cameras are placed around the centre of their world bounding box. With
    ``settings.backdrop == "room"`` a room is built around them for the render and removed afterwards.

    Raises:
        ValueError: no object with a surface, or (room) a camera below the table top or outside the room.
    """
    settings = settings or CaptureSettings()
    objects = geometry_objects(objects)
    if not objects:
        raise ValueError("no object with a surface to render (select meshes, curves or text)")
    in_room = settings.backdrop == "room"
    out = Path(out_dir)
    t0 = time.perf_counter()

    bpy.context.view_layer.update()
    gt_v, gt_f = world_geometry(objects)
    if len(gt_f) == 0:
        raise ValueError("the objects have no faces")
    center, radius = bounding_sphere(gt_v)

    K = cameras.intrinsics_from_blender(settings.lens_mm, settings.sensor_mm, settings.sensor_mm, "AUTO",
                                        settings.width, settings.height)
    # the tightest sphere around the box centre: the object fills the view as much as possible from any side
    fit_radius = float(np.linalg.norm(gt_v - center, axis=1).max())
    distance = (settings.distance * radius if settings.distance
                else cameras.fit_distance(fit_radius, K, settings.width, settings.height,
                                          margin=room.ROOM_FIT_MARGIN if in_room else 1.05))
    cap_deg = settings.cap_deg
    layout = settings.layout
    if in_room and layout == "sphere":  # the table hides the lower half: keep to the directions above it
        layout, cap_deg = "dtu", room.ROOM_SPHERE_CAP_DEG
    dirs = cameras.layout_directions(layout, settings.n_views, elevation_deg=settings.elevation_deg,
                                     cap_deg=cap_deg)
    c2w_bl = cameras.layout_poses(dirs, center, distance)
    anchor, unit = room.anchor_of(gt_v)
    room_layout = room.RoomLayout()
    if in_room:
        room_layout.check_cameras((c2w_bl[:, :3, 3] - anchor) / unit)
    out.mkdir(parents=True, exist_ok=True)

    scene = bpy.data.scenes.new("NeuSBlend Capture")
    made: list[bpy.types.ID] = []
    room_blocks: list[bpy.types.ID] = []
    masks_rgba: list[np.ndarray] | None = None
    try:
        for ob in objects:
            scene.collection.objects.link(ob)
        denoiser = _setup_render(scene, settings)
        if in_room:
            from . import room_scene

            room_objects, room_blocks = room_scene.build_room(scene, anchor, unit, room_layout)
            scene.render.film_transparent = False
            scene.cycles.max_bounces = ROOM_MAX_BOUNCES
            made += _setup_room_world(scene)
        else:
            made += _setup_lights(scene, settings, center, radius)
        cam_data = bpy.data.cameras.new("NeuSBlend Capture Camera")
        cam_data.lens, cam_data.sensor_width, cam_data.sensor_height = settings.lens_mm, settings.sensor_mm, \
            settings.sensor_mm
        cam_data.sensor_fit = "AUTO"
        cam_data.shift_x = cam_data.shift_y = 0.0
        cam_data.clip_start = max(1e-4, 0.01 * (distance - radius))
        cam_data.clip_end = room_scene.room_world(unit, room_layout) if in_room else distance + 10.0 * radius
        cam = bpy.data.objects.new("NeuSBlend Capture Camera", cam_data)
        scene.collection.objects.link(cam)
        scene.camera = cam
        made += [cam, cam_data]
        t_render = time.perf_counter()
        n_passes = 2 if in_room and settings.masks else 1
        with temporary_textures(objects, settings.texture) as textured, \
                tempfile.TemporaryDirectory(prefix="neusblend-capture-") as tmp:
            def pass_progress(i: int, n: int, k: int = 0) -> None:
                if progress is not None:
                    progress(k * n + i, n_passes * n)

            rgba = render_views(scene, cam, c2w_bl, Path(tmp), pass_progress)
            if n_passes == 2:
                with _mask_pass(scene, room_objects, settings):
                    masks_rgba = render_views(scene, cam, c2w_bl, Path(tmp),
                                              lambda i, n: pass_progress(i, n, 1))
        render_s = time.perf_counter() - t_render
    finally:
        bpy.data.scenes.remove(scene)
        for block in made:
            _remove_id(block)
        if room_blocks:
            from . import room_scene

            room_scene.remove_blocks(room_blocks)

    if in_room:
        images = [np.ascontiguousarray(im[..., :3]) for im in rgba]  # an opaque film: no alpha to use
        masks = [composite(m, (0.0, 0.0, 0.0))[1] for m in masks_rgba] if masks_rgba is not None else []
    else:
        images, masks = (list(x) for x in zip(*(composite(im, settings.background) for im in rgba), strict=True))
    c2w_cv = cameras.opencv_from_blender(c2w_bl)
    n = len(images)
    # a room capture gives no normalization (identity: the loaders then find the region themselves); the object
    # capture's scale_mat is the sphere of 1.1 bounding radii around the objects
    to_world = np.eye(4)
    if not in_room:
        to_world[:3, :3] *= SCALE_MAT_MARGIN * radius
        to_world[:3, 3] = center
    K_all = np.repeat(K[None], n, 0)
    saved_masks = masks if settings.masks and not in_room else None
    capture_files.write_neus(out, images, K_all, c2w_cv, to_world, saved_masks)
    if settings.nerf:
        capture_files.write_transforms(out / "nerf", images, K_all, c2w_cv, [f"{i:06d}" for i in range(n)],
                                       saved_masks)
    if in_room and masks:
        export_masks(masks, out / EVAL_MASKS)
    mesh_io.write_ply(str(out / "gt_mesh.ply"), gt_v.astype(np.float32), gt_f.astype(np.int32))

    meta: dict[str, Any] = {
        "generator": "neusblend synthetic capture",
        "blender": bpy.app.version_string,
        "settings": asdict(settings),
        "n_views": n,
        "image_size": [settings.width, settings.height],
        "denoiser": denoiser,
        "objects": [ob.name for ob in objects],
        "procedural_texture_on": textured,
        "coordinates": "Blender world (Z up); cameras in cameras_sphere.npz and nerf/transforms.json, and "
                       "gt_mesh.ply, are all in these coordinates",
        "center": center.tolist(),
        "radius": radius,
        "radius_definition": "half the diagonal of the objects' world bounding box",
        "scale_mat": to_world.tolist(),
        "camera_distance": distance,
        "fit_radius": fit_radius,
        "K": K.tolist(),
        "gt_mesh": "gt_mesh.ply",
        "gt_vertices": len(gt_v),
        "gt_faces": len(gt_f),
        "render_s": render_s,
        "total_s": time.perf_counter() - t0,
        "files": {"neus": ".", "transforms": "nerf/transforms.json" if settings.nerf else None},
    }
    if in_room:
        meta["room"] = write_region_truth(out, gt_v, gt_f, anchor, unit, room_layout, settings.region_margin)
        meta["room"].update(masks=f"{EVAL_MASKS}/" if masks else None, layout_used=layout, cap_deg_used=cap_deg)
        meta["scale_mat_note"] = ("identity: a room capture gives no normalization, so training finds the region "
                                  "itself; region.json is for evaluation only")
    meta["total_s"] = time.perf_counter() - t0
    if settings.denoise and denoiser is None:
        meta["note"] = "OpenImageDenoise is not available in this Blender; rendered without denoising"
    meta.update(extra_metadata or {})
    protocol.atomic_write_text(out / "capture.json", json.dumps(meta, indent=1))
    return CaptureResult(out_dir=out, metadata=meta, K=K, c2w=c2w_cv, gt_vertices=gt_v, gt_faces=gt_f,
                         masks=[m > 127 for m in masks])


def _setup_room_world(scene: bpy.types.Scene) -> list[bpy.types.ID]:
    """A black world: the room is closed, its lights are its own."""
    world = bpy.data.worlds.new("NeuSBlend Capture World")
    if world.node_tree is None:  # Blender < 5.0
        world.use_nodes = True
    bg = next(n for n in world.node_tree.nodes if n.bl_idname == "ShaderNodeBackground")
    bg.inputs["Color"].default_value = (0.0, 0.0, 0.0, 1.0)
    scene.world = world
    return [world]


@contextlib.contextmanager
def _mask_pass(scene: bpy.types.Scene, hide: Sequence[bpy.types.Object], settings: CaptureSettings
               ) -> Iterator[None]:
    """Render settings for the masks of a room capture: the room hidden, a transparent film, no bounces, no
    denoising, a box filter one pixel wide (the alpha is the share of each pixel the objects cover)."""
    cyc, r = scene.cycles, scene.render
    saved = (cyc.samples, cyc.use_denoising, cyc.max_bounces, cyc.pixel_filter_type, cyc.filter_width,
             r.film_transparent)
    for ob in hide:
        ob.hide_render = True
    cyc.samples, cyc.use_denoising, cyc.max_bounces = settings.mask_samples, False, 0
    cyc.pixel_filter_type, cyc.filter_width = "BOX", 1.0
    r.film_transparent = True
    try:
        yield
    finally:
        (cyc.samples, cyc.use_denoising, cyc.max_bounces, cyc.pixel_filter_type, cyc.filter_width,
         r.film_transparent) = saved
        for ob in hide:
            ob.hide_render = False


def export_masks(masks: Sequence[np.ndarray], folder: Path) -> None:
    """Write (H, W) uint8 masks as ``folder/000000.png ...`` (the images' names, so ``train --masks`` matches
    them)."""
    folder.mkdir(parents=True, exist_ok=True)
    capture_files.write_images([(folder / f"{i:06d}.png", np.asarray(m, dtype=np.uint8), ".png")
                                for i, m in enumerate(masks)])


def write_region_truth(out: Path, gt_v: np.ndarray, gt_f: np.ndarray, anchor: np.ndarray, unit: float,
                       layout: room.RoomLayout, margin: float) -> dict[str, Any]:
    """Write ``region.json`` (the box the ground truth is cut to) and ``gt_region.ply`` (the objects and the piece
    of table top inside that box), in world coordinates. Returns their description for capture.json."""
    lo, hi = room.region_box(gt_v, margin)
    table_lo = anchor[:2] - unit * np.asarray(layout.table_half)
    table_hi = anchor[:2] + unit * np.asarray(layout.table_half)
    tv, tf = room.table_piece((lo, hi), float(anchor[2]), table_lo, table_hi)
    verts = np.concatenate([gt_v, tv])
    faces = np.concatenate([gt_f, tf + len(gt_v)])
    mesh_io.write_ply(str(out / "gt_region.ply"), verts.astype(np.float32), faces.astype(np.int32))
    capture_files.write_region(out / "region.json", capture_files.box_matrix(lo, hi), box_min=lo, box_max=hi,
                               coordinates="the capture's world (as gt_mesh.ply and the cameras)",
                               what="the region the ground truth (gt_region.ply) is cut to: the objects' bounding "
                                    f"box grown by {margin:g} bounding radii on every side, reaching below the "
                                    "table top; for evaluation only (`backend eval --region`), never for training "
                                    "the unmasked benchmark run")
    return {"region": "region.json", "gt_region": "gt_region.ply", "box_min": lo.tolist(), "box_max": hi.tolist(),
            "table_top_z": float(anchor[2]), "table_xy": [table_lo.tolist(), table_hi.tolist()],
            "anchor": anchor.tolist(), "unit": unit, "table_piece_faces": len(tf),
            "layout": asdict(layout)}


def _remove_id(block: bpy.types.ID) -> None:
    """Remove a data-block made for the capture (objects before their data)."""
    collections = {bpy.types.Object: bpy.data.objects, bpy.types.Camera: bpy.data.cameras,
                   bpy.types.Light: bpy.data.lights, bpy.types.World: bpy.data.worlds}
    for kind, coll in collections.items():
        if isinstance(block, kind):
            with contextlib.suppress(ReferenceError, RuntimeError):
                coll.remove(block)
            return
