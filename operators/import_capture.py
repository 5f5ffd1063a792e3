"""Import Posed Capture (cameras with their photos, sparse points, region box) and Look Through Capture Camera.

The operator reads a poses job directly (:mod:`..client.capture_data`); any other posed capture the backend can
load is first exported by a short subprocess (``python -m backend export-capture``, Blender waits for it: about a
second for 50 photos). :mod:`..client.scene.capture` creates the objects.
"""

import os
import sys

import bpy
from bpy.props import BoolProperty, FloatProperty, StringProperty

from ..client import interpreter
from ..client.capture_data import CaptureError, load_capture
from ..client.scene import capture as scene_capture
from .common import configured_python


def _export_python() -> str:
    """The backend Python the export falls back on when Blender's own cannot load the capture."""
    return configured_python() or os.environ.get(interpreter.ENV_PYTHON, "") or sys.executable


class NEUSBLEND_OT_import_capture(bpy.types.Operator):
    """Import the cameras (with their photos as backgrounds), the sparse points and the region of interest of a
    posed capture, upright, under one collection"""

    bl_idname = "neusblend.import_capture"
    bl_label = "Import Posed Capture"
    bl_options = {"REGISTER", "UNDO"}

    directory: StringProperty(name="Capture", subtype="DIR_PATH", options={"SKIP_SAVE"},
                              description="A poses job folder (Estimate Poses), or a posed capture: NeuS, "
                                          "transforms.json folder, COLMAP, Middlebury")
    size: FloatProperty(name="Size", default=1.0, min=0.0, soft_max=100.0, unit="LENGTH",
                        description="Radius of the region of interest in the scene (0: keep the capture's own "
                                    "scale)")
    backgrounds: BoolProperty(name="Photos as Backgrounds", default=True,
                              description="Show each photo behind its camera's view")

    def invoke(self, context: bpy.types.Context, event: bpy.types.Event) -> set[str]:
        if self.directory:
            return self.execute(context)
        current = scene_capture.settings_capture_path(context.scene.neusblend)
        if current:
            self.directory = current
        context.window_manager.fileselect_add(self)
        return {"RUNNING_MODAL"}

    def execute(self, context: bpy.types.Context) -> set[str]:
        settings = context.scene.neusblend
        path = bpy.path.abspath(self.directory) if self.directory else scene_capture.settings_capture_path(settings)
        if not path:
            self.report({"ERROR"}, "No posed capture: estimate poses first, or choose a capture folder")
            return {"CANCELLED"}
        if context.window:
            context.window.cursor_set("WAIT")
        try:
            data = load_capture(path.rstrip("/\\") or path, _export_python())
            frame = scene_capture.import_capture(context.scene, data, size=self.size, backgrounds=self.backgrounds)
        except CaptureError as exc:
            self.report({"ERROR"}, f"{exc.message}. {exc.hint}")
            return {"CANCELLED"}
        finally:
            if context.window:
                context.window.cursor_set("DEFAULT")
        collection = scene_capture.capture_collection(frame)
        self.report({"INFO"}, f"Imported {len(data.cameras)} cameras and {len(data.points)} points into "
                              f"'{collection.name if collection else data.name}'")
        return {"FINISHED"}


class NEUSBLEND_OT_use_capture_camera(bpy.types.Operator):
    """Look through the active imported camera: make it the scene camera at its photo's size"""

    bl_idname = "neusblend.use_capture_camera"
    bl_label = "Look Through Capture Camera"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        obj = context.active_object
        if obj is None or obj.type != "CAMERA" or obj.get(scene_capture.ROLE_PROP) != "camera":
            cls.poll_message_set("Select a camera of an imported capture")
            return False
        return True

    def execute(self, context: bpy.types.Context) -> set[str]:
        obj = context.active_object
        scene_capture.use_camera(context.scene, obj)
        space = context.space_data
        if space is not None and space.type == "VIEW_3D" and space.region_3d is not None:
            space.region_3d.view_perspective = "CAMERA"
        self.report({"INFO"}, f"Looking through {obj.name} at {obj.get('neusblend_width')}x"
                              f"{obj.get('neusblend_height')}")
        return {"FINISHED"}


CLASSES = (NEUSBLEND_OT_import_capture, NEUSBLEND_OT_use_capture_camera)
