"""The View3D sidebar tab "NeuS": photos, preset, Estimate Poses / Reconstruct / Cancel, progress, errors."""

import textwrap
import time

import bpy

from .. import preferences
from ..client.capture_data import capture_key
from ..client.scene import capture as scene_capture
from ..client.scene import runner
from ..client.scene.mesh import job_of, vertex_colored

CATEGORY = "NeuS"


def _wrapped(layout: bpy.types.UILayout, text: str, width_px: int, icon: str = "NONE") -> None:
    """Labels for ``text`` wrapped to the region width (the first line carries the icon)."""
    chars = max(20, int(width_px / 7))
    lines = [ln for para in text.splitlines() for ln in (textwrap.wrap(para, chars) or [""])]
    col = layout.column(align=True)
    for i, line in enumerate(lines):
        col.label(text=line, icon=icon if i == 0 else "BLANK1")


class VIEW3D_PT_neusblend(bpy.types.Panel):
    """Photos to mesh: the main panel."""

    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = CATEGORY
    bl_label = "Photos to Mesh"

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        settings = context.scene.neusblend
        running = runner.active() is not None

        col = layout.column()
        col.enabled = not running
        col.prop(settings, "images_dir")
        col.prop(settings, "masks_dir")
        col.prop(settings, "preset")
        col.prop(settings, "object_name")

        row = layout.row(align=True)
        row.scale_y = 1.4
        if running:
            row.operator("neusblend.cancel", text="Cancel", icon="CANCEL")
        else:
            row.operator("neusblend.estimate_poses", text="Estimate Poses", icon="CAMERA_DATA")
            row.operator("neusblend.reconstruct", text="Reconstruct", icon="MESH_ICOSPHERE")


class VIEW3D_PT_neusblend_advanced(bpy.types.Panel):
    """Training knobs that override the preset."""

    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = CATEGORY
    bl_label = "Advanced"
    bl_parent_id = "VIEW3D_PT_neusblend"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context: bpy.types.Context) -> None:
        settings = context.scene.neusblend
        col = self.layout.column()
        col.enabled = runner.active() is None
        col.prop(settings, "steps")
        col.prop(settings, "max_image_size")
        col.prop(settings, "mesh_every")
        col.prop(settings, "mesh_resolution")
        col.prop(settings, "final_resolution")
        col.prop(settings, "extra_args")
        if settings.poses_job:
            col.label(text=f"Reusing poses: {bpy.path.basename(settings.poses_job.rstrip('/'))}", icon="CAMERA_DATA")


_capture_path_cache: dict[tuple[str, str, str], tuple[float, str]] = {}


def _capture_path(settings: bpy.types.PropertyGroup) -> str:
    """:func:`..client.scene.capture.settings_capture_path`, remembered for a second (it lists the photo folder;
    panels redraw often)."""
    key = (settings.images_dir, settings.poses_job, settings.poses_images)
    now = time.monotonic()
    hit = _capture_path_cache.get(key)
    if hit is None or now - hit[0] > 1.0:
        _capture_path_cache.clear()
        hit = _capture_path_cache[key] = (now, scene_capture.settings_capture_path(settings))
    return hit[1]


class VIEW3D_PT_neusblend_capture(bpy.types.Panel):
    """The imported capture: cameras, points, the region box that Reconstruct trains inside."""

    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = CATEGORY
    bl_label = "Cameras and Region"
    bl_parent_id = "VIEW3D_PT_neusblend"

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        settings = context.scene.neusblend
        path = _capture_path(settings)
        source = capture_key(path) if path else ""
        frame = scene_capture.find_capture(context.scene, source)
        col = layout.column()
        col.enabled = runner.active() is None
        if frame is not None:
            collection = scene_capture.capture_collection(frame)
            col.label(text=f"{collection.name if collection else frame.name}: "
                           f"{frame.get('neusblend_cameras', 0)} cameras", icon="OUTLINER_COLLECTION")
        elif path:
            col.label(text="Cameras not imported yet", icon="INFO")
        else:
            col.label(text="Estimate poses (or choose a posed capture) first", icon="INFO")
        row = col.row()
        row.enabled = bool(path)
        op = row.operator("neusblend.import_capture", text="Reimport Cameras" if frame else "Import Cameras",
                          icon="OUTLINER_OB_CAMERA")
        op.directory = path
        col.prop(settings, "import_cameras", text="Import after Estimate Poses")
        box = scene_capture.find_region(context.scene, source) if frame is not None else None
        row = col.row()
        row.active = box is not None
        row.prop(settings, "use_region")
        if box is not None and settings.use_region:
            col.label(text=f"Region: {box.name} (move, rotate, scale it)", icon="CUBE")
        col.operator("neusblend.use_capture_camera", icon="VIEW_CAMERA")


class VIEW3D_PT_neusblend_status(bpy.types.Panel):
    """Progress, metrics, the latest error with its hint."""

    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = CATEGORY
    bl_label = "Status"
    bl_parent_id = "VIEW3D_PT_neusblend"

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        status = context.window_manager.neusblend_status
        width = context.region.width if context.region else 300
        if status.state == "IDLE":
            layout.label(text="Ready", icon="CHECKMARK")
        else:
            layout.progress(factor=status.progress, type="BAR", text=status.progress_text or status.state.title())
            if status.phase:
                layout.label(text=status.phase, icon="TIME")
            if status.metrics_text:
                layout.label(text=status.metrics_text, icon="SORTTIME")
            if status.device:
                layout.label(text=f"Device: {status.device}", icon="DESKTOP")
            if status.meshes_applied:
                layout.label(text=f"Mesh updates: {status.meshes_applied} ({status.object_name})", icon="MESH_DATA")
            if status.log_line and status.state in ("STARTING", "RUNNING"):
                _wrapped(layout, status.log_line, width, icon="CONSOLE")
            if status.summary:
                _wrapped(layout, status.summary, width, icon="INFO")
        if status.error_message:
            box = layout.box()
            _wrapped(box, status.error_message[:1].upper() + status.error_message[1:], width, icon="ERROR")
            if status.error_file:
                _wrapped(box, status.error_file, width, icon="FILE")
            if status.error_hint:
                _wrapped(box, status.error_hint, width, icon="QUESTION")
            box.operator("preferences.addon_show", text="Backend Preferences",
                         icon="PREFERENCES").module = preferences.ADDON_ID
        elif status.warning:
            _wrapped(layout, status.warning, width, icon="ERROR")
        if status.skipped_photos:
            box = layout.box()
            lines = status.skipped_photos.splitlines()
            box.label(text=f"Left out {len(lines)} damaged photo(s):", icon="IMAGE_DATA")
            for line in lines[:12]:
                _wrapped(box, line, width, icon="BLANK1")
            if len(lines) > 12:
                box.label(text=f"... and {len(lines) - 12} more", icon="BLANK1")
        if status.job_dir and status.state in ("DONE", "CANCELLED", "FAILED"):
            row = layout.row()
            row.operator("neusblend.load_result", text="Load Result", icon="IMPORT").directory = status.job_dir


class VIEW3D_PT_neusblend_refine(bpy.types.Panel):
    """Refine the selected reconstruction: re-extract, continue training, clean up, bake, export."""

    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = CATEGORY
    bl_label = "Refine"
    bl_parent_id = "VIEW3D_PT_neusblend"

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        settings = context.scene.neusblend
        obj = context.active_object
        job = job_of(obj)
        if obj is None or obj.type != "MESH":
            layout.label(text="Select a reconstructed mesh", icon="INFO")
            return
        idle = runner.active() is None
        if job is not None:
            step = obj.get("neusblend_step")
            layout.label(text=f"{bpy.path.basename(str(job.root))}" + (f", step {step}" if step else ""),
                         icon="FILE_FOLDER")
            box = layout.box()
            box.enabled = idle
            box.label(text="Re-extract", icon="MESH_GRID")
            row = box.row(align=True)
            row.prop(settings, "refine_resolution")
            row.prop(settings, "refine_target", text="")
            row = box.row(align=True)
            row.prop(settings, "use_crop")
            sub = row.row(align=True)
            sub.active = settings.use_crop
            sub.prop(settings, "crop_box", text="")
            sub.operator("neusblend.add_crop_box", text="", icon="ADD")
            box.operator("neusblend.reextract", icon="FILE_REFRESH")
            box = layout.box()
            box.enabled = idle
            box.label(text="Continue Training", icon="PLAY")
            row = box.row(align=True)
            row.prop(settings, "more_steps")
            row.prop(settings, "continue_preset", text="")
            box.operator("neusblend.continue_training", icon="PLAY")
        box = layout.box()
        box.label(text="Clean Up", icon="BRUSH_DATA")
        box.prop(settings, "cleanup_mode")
        if settings.cleanup_mode == "SMALL":
            box.prop(settings, "min_part")
        row = box.row(align=True)
        row.prop(settings, "smooth_iterations")
        row.prop(settings, "decimate_faces")
        op = box.operator("neusblend.cleanup_mesh", icon="BRUSH_DATA")
        op.parts, op.min_part = settings.cleanup_mode, settings.min_part
        op.smooth, op.target_faces = settings.smooth_iterations, settings.decimate_faces
        box.operator("neusblend.remove_support_plane", icon="MESH_PLANE")
        box = layout.box()
        box.label(text="Texture", icon="TEXTURE")
        row = box.row(align=True)
        row.prop(settings, "bake_size")
        row.prop(settings, "bake_faces")
        row = box.row()
        row.enabled = vertex_colored(obj)
        op = row.operator("neusblend.bake_texture", icon="RENDER_STILL")
        op.size, op.target_faces = settings.bake_size, settings.bake_faces
        layout.operator("neusblend.export_mesh", icon="EXPORT")


class NEUSBLEND_MT_add(bpy.types.Menu):
    """Add > Mesh from Photos: makes the operators findable in F3 search."""

    bl_idname = "NEUSBLEND_MT_add"
    bl_label = "Mesh from Photos"

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        layout.operator("neusblend.reconstruct", icon="MESH_ICOSPHERE")
        layout.operator("neusblend.estimate_poses", icon="CAMERA_DATA")
        layout.operator("neusblend.import_capture", icon="OUTLINER_OB_CAMERA")
        layout.operator("neusblend.cancel", icon="CANCEL")
        layout.operator("neusblend.load_result", icon="IMPORT")
        layout.separator()
        layout.operator("neusblend.reextract", icon="FILE_REFRESH")
        layout.operator("neusblend.add_crop_box", icon="CUBE")
        layout.operator("neusblend.continue_training", icon="PLAY")
        layout.operator("neusblend.cleanup_mesh", icon="BRUSH_DATA")
        layout.operator("neusblend.remove_support_plane", icon="MESH_PLANE")
        layout.operator("neusblend.bake_texture", icon="RENDER_STILL")
        layout.operator("neusblend.export_mesh", icon="EXPORT")


def draw_add_menu(self: bpy.types.Menu, context: bpy.types.Context) -> None:
    """Entry in View3D's Add menu."""
    self.layout.menu(NEUSBLEND_MT_add.bl_idname, icon="OUTLINER_OB_CAMERA")


def draw_import_menu(self: bpy.types.Menu, context: bpy.types.Context) -> None:
    """Entry in File > Import."""
    self.layout.operator("neusblend.import_capture", text="Posed Capture (NeuS Blend)")


CLASSES = (VIEW3D_PT_neusblend, VIEW3D_PT_neusblend_advanced, VIEW3D_PT_neusblend_capture,
           VIEW3D_PT_neusblend_refine, VIEW3D_PT_neusblend_status, NEUSBLEND_MT_add)
