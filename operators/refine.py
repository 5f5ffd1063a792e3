"""Refine a reconstruction: re-extract (cropped, finer), continue training, clean up, bake a texture, export.

Re-extract and Continue Training run the backend on the job folder that made the selected mesh (its
``neusblend_job`` property) and stream the result like Reconstruct does; nothing in the scene changes until a
mesh arrives, so a failure (no checkpoint, an empty box) leaves the existing mesh as it was. Clean Up and Bake
Texture run in Blender and can be undone, and so can Remove Support Plane (the table or ground under the object,
found by a robust plane fit in :mod:`backend.meshclean`).
"""

from pathlib import Path

import bpy
from bpy.props import BoolProperty, EnumProperty, FloatProperty, IntProperty, StringProperty

from ..backend.capture_files import write_region
from ..backend.protocol import JobLayout
from ..client.capture_data import trained_on
from ..client.jobs import continue_pipeline, extract_pipeline
from ..client.scene import capture as scene_capture
from ..client.scene import mesh_tools, runner
from ..client.scene.mesh import JOB_PROP, job_of
from ..properties import CLEANUP_ITEMS, CONTINUE_PRESET_ITEMS
from .common import backend_python, device, preview_interval, refuse_if_busy, report_start


def _mesh_poll(cls: type, context: bpy.types.Context, need_job: bool) -> bool:
    obj = context.active_object
    if obj is None or obj.type != "MESH":
        cls.poll_message_set("Select a mesh object")
        return False
    if need_job and job_of(obj) is None:
        cls.poll_message_set("Select a mesh made by Reconstruct (it remembers its job folder)")
        return False
    if obj.mode != "OBJECT":
        cls.poll_message_set("Switch to Object Mode")
        return False
    return True


def _job_to_refine(op: bpy.types.Operator, context: bpy.types.Context, obj: bpy.types.Object) -> JobLayout | None:
    """The job folder of ``obj`` when a backend job can start on it now; else None, after telling the user why
    (another job runs, the checkpoint is gone)."""
    if refuse_if_busy(op):
        return None
    layout = job_of(obj)
    assert layout is not None
    if layout.last_checkpoint.is_file():
        return layout
    message = f"no checkpoint in the job folder {layout.root} (was it deleted or moved?)"
    hint = "Reconstruct again, or select a mesh whose job folder still exists; the mesh itself is kept."
    context.window_manager.neusblend_status.set_error(message, hint, str(layout.last_checkpoint))
    op.report({"ERROR"}, f"No checkpoint: {layout.root} is gone; reconstruct again")
    return None


def crop_box_for(context: bpy.types.Context, obj: bpy.types.Object, layout: JobLayout) -> bpy.types.Object | None:
    """The box Re-extract crops to: the chosen crop box, else the imported capture's region box, else none."""
    settings = context.scene.neusblend
    if not settings.use_crop:
        return None
    if settings.crop_box is not None:
        return settings.crop_box
    source = trained_on(layout)
    return scene_capture.find_region(context.scene, source) if source else None


class NEUSBLEND_OT_add_crop_box(bpy.types.Operator):
    """Add a box around the selected reconstruction; move and scale it, then Re-extract inside it"""

    bl_idname = "neusblend.add_crop_box"
    bl_label = "Add Crop Box"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return _mesh_poll(cls, context, need_job=False)

    def execute(self, context: bpy.types.Context) -> set[str]:
        obj = context.active_object
        box = mesh_tools.add_crop_box(obj)
        context.scene.neusblend.crop_box = box
        context.scene.neusblend.use_crop = True
        self.report({"INFO"}, f"Added '{box.name}': move and scale it, then Re-extract")
        return {"FINISHED"}


class NEUSBLEND_OT_reextract(bpy.types.Operator):
    """Extract the selected reconstruction's surface again from its checkpoint: finer, and cropped to a box"""

    bl_idname = "neusblend.reextract"
    bl_label = "Re-extract Mesh"
    bl_options = {"REGISTER"}  # the mesh arrives later, from the backend

    resolution: IntProperty(name="Resolution", default=0, min=0, max=2048,
                            description="Samples along the crop box's longest side (0: the panel's setting)")
    target: EnumProperty(name="Result", items=[("PANEL", "Panel Setting", ""), ("NEW", "New Object", ""),
                                               ("REPLACE", "Replace", "")], default="PANEL")

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return _mesh_poll(cls, context, need_job=True)

    def execute(self, context: bpy.types.Context) -> set[str]:
        obj = context.active_object
        layout = _job_to_refine(self, context, obj)
        if layout is None:
            return {"CANCELLED"}
        settings = context.scene.neusblend
        resolution = self.resolution or settings.refine_resolution
        target = settings.refine_target if self.target == "PANEL" else self.target
        roi = ""
        box = crop_box_for(context, obj, layout)
        if box is not None:
            try:
                matrix = mesh_tools.crop_matrix(obj, box)
                roi = str(write_region(layout.root.parent / f"{layout.root.name}.crop.json", matrix,
                                       box=box.name))
            except (mesh_tools.MeshToolError, OSError, ValueError) as exc:
                self.report({"ERROR"}, f"Cannot use the crop box '{box.name}': {exc}")
                return {"CANCELLED"}
        python = backend_python(self, context)
        if python is None:
            return {"CANCELLED"}
        out = layout.meshes / (f"extract_{resolution}_crop.npz" if roi else f"extract_{resolution}.npz")
        pipeline = extract_pipeline(python, layout.root, resolution, roi=roi, out=out, device=device())
        name = obj.name
        if target == "NEW":
            name = _new_object_beside(obj, f"{obj.name} {resolution}{' crop' if roi else ''}").name
        job = runner.start(pipeline, layout.root, object_name=name, scene=context.scene,
                           preview_interval_s=preview_interval(), on_finish=_drop_if_empty(name))
        report_start(self, job, f"Extraction at {resolution}^3")
        return {"FINISHED"}


def _new_object_beside(obj: bpy.types.Object, name: str) -> bpy.types.Object:
    """An empty mesh object with ``obj``'s parent, transform and collections (the extraction fills it)."""
    new = bpy.data.objects.new(name, bpy.data.meshes.new(name))
    for coll in obj.users_collection:
        coll.objects.link(new)
    new.parent = obj.parent
    new.matrix_parent_inverse = obj.matrix_parent_inverse.copy()
    new.matrix_basis = obj.matrix_basis.copy()
    new[JOB_PROP] = obj.get(JOB_PROP, "")
    return new


def _drop_if_empty(name: str):  # noqa: ANN202 - a runner callback
    """After the job: remove the placeholder object again when no mesh reached it (the extraction failed)."""
    def on_finish(_job: runner.ActiveJob) -> None:
        obj = bpy.data.objects.get(name)
        if obj is not None and obj.type == "MESH" and len(obj.data.vertices) == 0:
            mesh = obj.data
            bpy.data.objects.remove(obj)
            if mesh.users == 0:
                bpy.data.meshes.remove(mesh)
    return on_finish


class NEUSBLEND_OT_continue_training(bpy.types.Operator):
    """Train the selected reconstruction's checkpoint for more steps; its mesh updates live"""

    bl_idname = "neusblend.continue_training"
    bl_label = "Continue Training"
    bl_options = {"REGISTER"}

    more_steps: IntProperty(name="More Steps", default=0, min=0,
                            description="Steps to add (0: the panel's setting)")
    preset: EnumProperty(name="Settings", items=[("PANEL", "Panel Setting", ""), *CONTINUE_PRESET_ITEMS],
                         default="PANEL")

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return _mesh_poll(cls, context, need_job=True)

    def execute(self, context: bpy.types.Context) -> set[str]:
        obj = context.active_object
        layout = _job_to_refine(self, context, obj)
        if layout is None:
            return {"CANCELLED"}
        python = backend_python(self, context)
        if python is None:
            return {"CANCELLED"}
        settings = context.scene.neusblend
        more = self.more_steps or settings.more_steps
        preset = settings.continue_preset if self.preset == "PANEL" else self.preset
        pipeline = continue_pipeline(python, layout.root, more, preset="" if preset == "SAME" else preset,
                                     device=device(), mesh_every_s=settings.mesh_every)
        job = runner.start(pipeline, layout.root, object_name=obj.name, scene=context.scene,
                           preview_interval_s=preview_interval())
        report_start(self, job, f"Training for {more} more steps")
        return {"FINISHED"}


class NEUSBLEND_OT_cleanup_mesh(bpy.types.Operator):
    """Remove floaters, smooth and decimate the selected mesh (its colours are kept)"""

    bl_idname = "neusblend.cleanup_mesh"
    bl_label = "Clean Up Mesh"
    bl_options = {"REGISTER", "UNDO"}

    parts: EnumProperty(name="Parts", items=CLEANUP_ITEMS, default="LARGEST")
    min_part: FloatProperty(name="Min Part", default=0.01, min=0.0, max=1.0, subtype="FACTOR")
    smooth: IntProperty(name="Smooth", default=0, min=0, soft_max=50)
    target_faces: IntProperty(name="Target Faces", default=0, min=0, description="0: no decimation")

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return _mesh_poll(cls, context, need_job=False)

    def execute(self, context: bpy.types.Context) -> set[str]:
        obj = context.active_object
        before = len(obj.data.polygons)
        try:
            parts, faces = (0, 0)
            if self.parts != "ALL":
                parts, faces = mesh_tools.remove_small_parts(obj, keep_largest=self.parts == "LARGEST",
                                                             min_fraction=self.min_part)
            mesh_tools.smooth(obj, self.smooth)
            after = mesh_tools.decimate(obj, self.target_faces)
        except mesh_tools.MeshToolError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        removed = f"removed {parts} parts ({faces} faces); " if self.parts != "ALL" else ""
        self.report({"INFO"}, f"'{obj.name}': {removed}{before} -> {after} faces")
        return {"FINISHED"}


class NEUSBLEND_OT_remove_support_plane(bpy.types.Operator):
    """Remove the table or ground the selected mesh stands on (a robust plane fit), what lies beyond it, and the
    floaters that leaves"""

    bl_idname = "neusblend.remove_support_plane"
    bl_label = "Remove Support Plane"
    bl_options = {"REGISTER", "UNDO"}

    tolerance: FloatProperty(name="Tolerance", default=0.01, min=0.0005, max=0.1, precision=4,
                             description="Plane fit's inlier distance, and the most that is removed beside the "
                                         "plane, as a fraction of the mesh's size")
    min_part: FloatProperty(name="Min Part", default=0.05, min=0.0, max=1.0, subtype="FACTOR",
                            description="Afterwards, drop parts smaller than this fraction of the largest (area)")
    use_up: BoolProperty(name="Up Is +Z", default=True,
                         description="Prefer planes facing the scene's +Z (an imported capture stands upright)")

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return _mesh_poll(cls, context, need_job=False)

    def execute(self, context: bpy.types.Context) -> set[str]:
        obj = context.active_object
        try:
            report = mesh_tools.remove_support_plane(obj, tolerance=self.tolerance, min_part=self.min_part,
                                                     up=(0.0, 0.0, 1.0) if self.use_up else None)
        except mesh_tools.MeshToolError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        plane = report["plane"]
        if not plane.get("found"):
            self.report({"WARNING"}, f"'{obj.name}': no plane found; the mesh is unchanged")
            return {"CANCELLED"}
        removed = report["removed"]
        self.report({"INFO"}, f"'{obj.name}': removed the support plane ({removed['support_plane']} faces, within "
                              f"{plane['tolerance']:.3g} of it or beyond) and {removed['floaters']} faces of "
                              "floaters")
        return {"FINISHED"}


class NEUSBLEND_OT_bake_texture(bpy.types.Operator):
    """Make a textured low-poly copy of the selected reconstruction: decimate, unwrap, bake its colours"""

    bl_idname = "neusblend.bake_texture"
    bl_label = "Bake Texture"
    bl_options = {"REGISTER", "UNDO"}

    size: IntProperty(name="Texture Size", default=2048, min=16, max=16384, subtype="PIXEL")
    target_faces: IntProperty(name="Low-Poly Faces", default=20000, min=0)
    image_path: StringProperty(name="Save Texture", subtype="FILE_PATH", default="",
                               description="PNG to save the texture to (empty: packed into the .blend file)")

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return _mesh_poll(cls, context, need_job=False)

    def execute(self, context: bpy.types.Context) -> set[str]:
        dense = context.active_object
        try:
            low = mesh_tools.bake_texture(dense, size=self.size, target_faces=self.target_faces,
                                          image_path=self.image_path)
        except mesh_tools.MeshToolError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        for other in context.view_layer.objects:
            other.select_set(False)
        low.select_set(True)
        context.view_layer.objects.active = low
        self.report({"INFO"}, f"Baked '{dense.name}' into '{low.name}' ({len(low.data.polygons)} faces, "
                              f"{self.size} px texture)")
        return {"FINISHED"}


class NEUSBLEND_OT_export_mesh(bpy.types.Operator):
    """Export the selected mesh with its texture or colours (glTF .glb/.gltf, .obj, .ply, .stl, .fbx)"""

    bl_idname = "neusblend.export_mesh"
    bl_label = "Export Mesh"
    bl_options = {"REGISTER"}

    filepath: StringProperty(name="File", subtype="FILE_PATH", default="")
    check_existing: BoolProperty(default=True, options={"HIDDEN"})

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return _mesh_poll(cls, context, need_job=False)

    def invoke(self, context: bpy.types.Context, event: bpy.types.Event) -> set[str]:
        if not self.filepath:
            self.filepath = bpy.path.ensure_ext(bpy.path.clean_name(context.active_object.name), ".glb")
        context.window_manager.fileselect_add(self)
        return {"RUNNING_MODAL"}

    def execute(self, context: bpy.types.Context) -> set[str]:
        obj = context.active_object
        path = Path(bpy.path.abspath(self.filepath))
        try:
            mesh_tools.export_object(obj, path)
        except (mesh_tools.MeshToolError, RuntimeError, OSError) as exc:
            self.report({"ERROR"}, f"Cannot export to {path}: {exc}")
            return {"CANCELLED"}
        self.report({"INFO"}, f"Exported '{obj.name}' to {path}")
        return {"FINISHED"}


CLASSES = (NEUSBLEND_OT_add_crop_box, NEUSBLEND_OT_reextract, NEUSBLEND_OT_continue_training,
           NEUSBLEND_OT_cleanup_mesh, NEUSBLEND_OT_remove_support_plane, NEUSBLEND_OT_bake_texture,
           NEUSBLEND_OT_export_mesh)
