"""Estimate Poses, Reconstruct, Cancel, Load Result.

The operators only collect settings, check what can be checked at once (the photo folder, a running job) and
hand a pipeline to :mod:`..client.scene.runner`; everything that happens in the backend process is reported through the
panel's status, never raised. A second job while one runs is refused with a message.
"""

import contextlib
import shlex
import sys
from collections.abc import Callable
from pathlib import Path

import bpy
from bpy.props import StringProperty

from .. import preferences
from ..backend.capture_files import write_region
from ..backend.protocol import JobLayout, ProtocolError, read_snapshot
from ..client.camera_math import roi_file_for
from ..client.capture_data import capture_key, poses_folder, read_poses_job, trained_on
from ..client.datasets import FolderCheck, check_input_folder
from ..client.jobs import TrainOptions, new_job_dir, poses_pipeline, reconstruct_pipeline
from ..client.scene import capture as scene_capture
from ..client.scene import mesh as scene_mesh
from ..client.scene import runner
from .common import backend_python, configured_python, device, preview_interval, refuse_if_busy, report_start


def _photo_folder(op: bpy.types.Operator, context: bpy.types.Context) -> FolderCheck | None:
    settings = context.scene.neusblend
    folder = check_input_folder(bpy.path.abspath(settings.images_dir) if settings.images_dir else "")
    if folder.kind:
        return folder
    context.window_manager.neusblend_status.set_error(folder.problem, folder.hint, str(folder.path))
    op.report({"ERROR"}, f"{folder.problem[:1].upper()}{folder.problem[1:]}. {folder.hint}")
    return None


class NEUSBLEND_OT_reconstruct(bpy.types.Operator):
    """Reconstruct a mesh from the photos; the mesh appears and sharpens while you keep working"""

    bl_idname = "neusblend.reconstruct"
    bl_label = "Reconstruct Mesh from Photos"
    bl_options = {"REGISTER"}  # no undo: the mesh arrives later, outside this operator

    def execute(self, context: bpy.types.Context) -> set[str]:
        if refuse_if_busy(self):
            return {"CANCELLED"}
        folder = _photo_folder(self, context)
        if folder is None:
            return {"CANCELLED"}
        python = backend_python(self, context)
        if python is None:
            return {"CANCELLED"}
        settings = context.scene.neusblend
        options = TrainOptions(preset=settings.preset, steps=settings.steps, max_image_size=settings.max_image_size,
                               mesh_every_s=settings.mesh_every, mesh_resolution=settings.mesh_resolution,
                               final_resolution=settings.final_resolution,
                               device=device(), extra=tuple(shlex.split(settings.extra_args)))
        job_dir = new_job_dir(preferences.job_root(), folder.path)
        posed_job = ""
        if (folder.kind == "photos" and settings.poses_job and settings.poses_images == str(folder.path)
                and (Path(settings.poses_job) / "poses").is_dir()):
            posed_job = settings.poses_job
        masks = bpy.path.abspath(settings.masks_dir) if settings.masks_dir else ""
        if masks and (posed_job or folder.layout == "job"):
            job = posed_job or str(folder.path)
            if not (Path(job) / "poses" / "masks").is_dir():
                self.report({"WARNING"}, "The masks are not used: these poses were estimated without them (masks "
                                         "must be undistorted with the photos); press Estimate Poses again")
        # an imported capture of the data training reads: its region box drives the normalization, its frame
        # carries the mesh (which arrives in capture coordinates)
        trained_on = folder.path if folder.kind == "posed" else posed_job
        source = capture_key(trained_on) if trained_on else ""
        frame = scene_capture.find_capture(context.scene, source)
        if frame is not None and settings.use_region:
            box = scene_capture.find_region(context.scene, source)
            if box is not None:
                try:
                    options.roi = str(write_region(roi_file_for(job_dir), scene_capture.region_matrix(frame, box),
                                                   source=source, box=box.name))
                except (OSError, ValueError) as exc:
                    self.report({"ERROR"}, f"Cannot use the region box '{box.name}': {exc}")
                    return {"CANCELLED"}
        pipeline = reconstruct_pipeline(python, folder, job_dir, options, masks=masks, posed_job=posed_job)
        name = settings.object_name.strip() or f"{folder.path.name or 'Photos'} NeuS"
        job = runner.start(pipeline, job_dir, object_name=name, scene=context.scene,
                           preview_interval_s=preview_interval(), capture_source=source if frame else "")
        report_start(self, job, "Reconstruction")
        return {"FINISHED"}


def _remember_poses(scene_name: str, images: str) -> Callable[[runner.ActiveJob], None]:
    def on_finish(job: runner.ActiveJob) -> None:
        scene = bpy.data.scenes.get(scene_name)
        if scene is not None and job.state.status == "done":
            scene.neusblend.poses_job = str(job.job_dir)
            scene.neusblend.poses_images = images
            if scene.neusblend.import_cameras and poses_folder(job.job_dir) is not None:
                scene_capture.import_capture(scene, read_poses_job(job.job_dir))
    return on_finish


class NEUSBLEND_OT_estimate_poses(bpy.types.Operator):
    """Estimate the camera poses of the photos (pycolmap); Reconstruct then reuses them"""

    bl_idname = "neusblend.estimate_poses"
    bl_label = "Estimate Camera Poses"
    bl_options = {"REGISTER"}

    def execute(self, context: bpy.types.Context) -> set[str]:
        if refuse_if_busy(self):
            return {"CANCELLED"}
        folder = _photo_folder(self, context)
        if folder is None:
            return {"CANCELLED"}
        if folder.kind == "posed":
            self.report({"INFO"}, f"{folder.path} is a posed capture ({folder.layout}); no estimation needed")
            return {"CANCELLED"}
        python = configured_python()
        job_dir = new_job_dir(preferences.job_root(), folder.path)
        masks = bpy.path.abspath(context.scene.neusblend.masks_dir) if context.scene.neusblend.masks_dir else ""
        pipeline = poses_pipeline(python or sys.executable, folder, job_dir, masks)
        job = runner.start(pipeline, job_dir, scene=context.scene,
                           on_finish=_remember_poses(context.scene.name, str(folder.path)))
        report_start(self, job, "Pose estimation")
        return {"FINISHED"}


class NEUSBLEND_OT_cancel(bpy.types.Operator):
    """Stop the running job; the last mesh stays in the scene and training can resume later"""

    bl_idname = "neusblend.cancel"
    bl_label = "Cancel Reconstruction"
    bl_options = {"REGISTER"}

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        if runner.active() is None:
            cls.poll_message_set("Nothing is running")
            return False
        return True

    def execute(self, context: bpy.types.Context) -> set[str]:
        runner.cancel()
        self.report({"INFO"}, "Cancelling: the backend saves its checkpoint and last mesh")
        return {"FINISHED"}


class NEUSBLEND_OT_load_result(bpy.types.Operator):
    """Load the final (or latest) mesh of a job folder into the scene"""

    bl_idname = "neusblend.load_result"
    bl_label = "Load Reconstruction Result"
    bl_options = {"REGISTER", "UNDO"}

    directory: StringProperty(name="Job Folder", subtype="DIR_PATH")
    object_name: StringProperty(name="Object", default="")

    def invoke(self, context: bpy.types.Context, event: bpy.types.Event) -> set[str]:
        status = context.window_manager.neusblend_status
        if not self.directory and status.job_dir:
            self.directory = status.job_dir
        context.window_manager.fileselect_add(self)
        return {"RUNNING_MODAL"}

    def execute(self, context: bpy.types.Context) -> set[str]:
        layout = JobLayout(bpy.path.abspath(self.directory))
        path = layout.final_mesh
        if not path.is_file():
            steps = sorted(layout.meshes.glob("step_*.npz")) if layout.meshes.is_dir() else []
            if not steps:
                self.report({"ERROR"}, f"No mesh in {layout.meshes}")
                return {"CANCELLED"}
            path = steps[-1]
        try:
            arrays = read_snapshot(path)
        except (OSError, ValueError, ProtocolError) as exc:
            self.report({"ERROR"}, f"Cannot read {path}: {exc}")
            return {"CANCELLED"}
        frame = scene_capture.find_capture(context.scene, trained_on(layout))
        obj = scene_mesh.ensure_object(self.object_name or f"{layout.root.name} NeuS", context.scene, parent=frame,
                                       collection=scene_capture.capture_collection(frame) if frame else None)
        scene_mesh.apply_snapshot(obj, arrays["vertices"], arrays["faces"], arrays.get("colors"))
        obj[scene_mesh.JOB_PROP] = str(layout.root)
        with contextlib.suppress(RuntimeError):  # selected and active, ready to refine (if in this view layer)
            for other in context.view_layer.objects:
                other.select_set(False)
            obj.select_set(True)
            context.view_layer.objects.active = obj
        self.report({"INFO"}, f"Loaded {path.name}: {len(arrays['vertices'])} vertices into '{obj.name}'")
        return {"FINISHED"}


CLASSES = (NEUSBLEND_OT_reconstruct, NEUSBLEND_OT_estimate_poses, NEUSBLEND_OT_cancel, NEUSBLEND_OT_load_result)
