"""Import Posed Capture (cameras with their photos, sparse points, region box) and Look Through Capture Camera.

The operator reads a poses job directly (:mod:`..client.capture_data`); any other posed capture the backend can
load is first exported by a short subprocess (:mod:`..client.export_capture`, Blender waits for it: about a second
for 50 photos). :mod:`..client.scene_capture` creates the objects.
"""

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import bpy
from bpy.props import BoolProperty, FloatProperty, StringProperty

from .. import preferences
from ..client import interpreter, scene_capture
from ..client.capture_data import (
    CaptureData,
    CaptureError,
    export_command,
    poses_folder,
    read_capture_folder,
    read_export_result,
    read_poses_job,
)
from ..client.datasets import check_input_folder
from ..client.jobs import pose_interpreter

#: Seconds the export of a non-job capture may take.
EXPORT_TIMEOUT_S = 600.0


def settings_capture_path(settings: bpy.types.PropertyGroup) -> str:
    """The posed capture the panel's settings point at: the poses job estimated from the photo folder, or the
    photo folder itself when it is a posed capture; "" otherwise."""
    images = bpy.path.abspath(settings.images_dir) if settings.images_dir else ""
    folder = check_input_folder(images) if images else None
    if folder is None or not folder.kind:
        return ""
    if folder.kind == "posed":
        return str(folder.path)
    job = settings.poses_job
    if job and settings.poses_images == str(folder.path) and poses_folder(job) is not None:
        return job
    return ""


def _export_python() -> tuple[str, list[str]]:
    prefs = preferences.get()
    configured = bpy.path.abspath(prefs.python_path.strip()) if prefs and prefs.python_path.strip() else ""
    return pose_interpreter(configured or os.environ.get(interpreter.ENV_PYTHON, "") or sys.executable)


def load_capture(path: str) -> CaptureData:
    """The capture at ``path``: a poses job read directly, anything else exported by the backend's loaders.

    Raises:
        CaptureError: with a message and a hint.
    """
    if poses_folder(path) is not None:
        return read_poses_job(path)
    if not Path(path).exists():
        raise CaptureError(f"{path} does not exist", "Choose a poses job folder or a posed capture.", path)
    python, paths = _export_python()
    out = tempfile.mkdtemp(prefix="neusblend-import-")
    try:
        try:
            proc = subprocess.run(  # noqa: S603 - argv list, no shell
                export_command(python, path, out), env=interpreter.clean_environment(paths), cwd=out,
                capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=EXPORT_TIMEOUT_S,
                check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise CaptureError(f"cannot read the capture with {python}: {exc}",
                               "Set a backend Python with numpy and Pillow in the add-on preferences.", path) from exc
        result = read_export_result(proc.stdout)
        if not result.get("ok"):
            tail = proc.stderr.strip().splitlines()[-1:] if proc.stderr.strip() else []
            raise CaptureError(str(result.get("message") or (tail[0] if tail else "the export failed")),
                               str(result.get("hint") or "Choose a poses job folder or a posed capture."),
                               str(result.get("file") or path))
        return read_capture_folder(out)
    finally:
        shutil.rmtree(out, ignore_errors=True)


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
        current = settings_capture_path(context.scene.neusblend)
        if current:
            self.directory = current
        context.window_manager.fileselect_add(self)
        return {"RUNNING_MODAL"}

    def execute(self, context: bpy.types.Context) -> set[str]:
        path = bpy.path.abspath(self.directory) if self.directory else settings_capture_path(context.scene.neusblend)
        if not path:
            self.report({"ERROR"}, "No posed capture: estimate poses first, or choose a capture folder")
            return {"CANCELLED"}
        if context.window:
            context.window.cursor_set("WAIT")
        try:
            data = load_capture(path.rstrip("/\\") or path)
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


def draw_import_menu(self: bpy.types.Menu, context: bpy.types.Context) -> None:
    """Entry in File > Import."""
    self.layout.operator(NEUSBLEND_OT_import_capture.bl_idname, text="Posed Capture (NeuS Blend)")


CLASSES = (NEUSBLEND_OT_import_capture, NEUSBLEND_OT_use_capture_camera)
