"""Finding a backend Python, and creating one for the user (after asking, and only with online access)."""

import bpy

from .. import preferences
from ..client import interpreter
from ..client.jobs import environment_pipeline
from ..client.scene import runner


class NEUSBLEND_OT_detect_interpreter(bpy.types.Operator):
    """Look for a Python with torch (virtual environments, conda, python3 on PATH) and use the first that works"""

    bl_idname = "neusblend.detect_interpreter"
    bl_label = "Detect Backend Python"
    bl_options = {"REGISTER"}

    def execute(self, context: bpy.types.Context) -> set[str]:
        prefs = preferences.get()
        preferred = [interpreter.venv_python(preferences.managed_venv())]
        if prefs is not None and prefs.python_path.strip():
            preferred.insert(0, bpy.path.abspath(prefs.python_path.strip()))
        if context.window:
            context.window.cursor_set("WAIT")
        try:
            found, reports = interpreter.detect(interpreter.candidates(preferred))
        finally:
            if context.window:
                context.window.cursor_set("DEFAULT")
        if found is None:
            msg = "No Python with torch found" + (f" (checked {len(reports)})" if reports else "")
            if prefs is not None:
                prefs.python_status = msg + "; press Create Backend Environment, or set the path by hand"
            self.report({"WARNING"}, msg)
            return {"CANCELLED"}
        if prefs is not None:
            prefs.python_path = found.python
            prefs.python_status = found.summary()
        self.report({"INFO"}, f"Backend Python: {found.python} ({found.summary()})")
        return {"FINISHED"}


class NEUSBLEND_OT_create_backend_env(bpy.types.Operator):
    """Create a Python environment for the backend and install torch, numpy, pillow, PyMCubes and pycolmap into
    it (a download of several GB)"""

    bl_idname = "neusblend.create_backend_env"
    bl_label = "Create Backend Environment"
    bl_options = {"REGISTER"}

    def invoke(self, context: bpy.types.Context, event: bpy.types.Event) -> set[str]:
        if not bpy.app.online_access:
            return self.execute(context)  # refuses with the reason
        return context.window_manager.invoke_confirm(
            self, event, title="Create Backend Environment",
            message=f"Download torch and the other requirements (several GB) into {preferences.managed_venv()}?",
            confirm_text="Download and Install")

    def execute(self, context: bpy.types.Context) -> set[str]:
        status = context.window_manager.neusblend_status
        if not bpy.app.online_access:
            hint = "Allow Online Access in Preferences > System, or create the environment yourself and set " \
                   "Backend Python."
            status.set_error("online access is disabled, so nothing can be downloaded", hint)
            self.report({"ERROR"}, "Online access is disabled in Blender's preferences; nothing was downloaded")
            return {"CANCELLED"}
        if runner.active() is not None:
            self.report({"WARNING"}, "A job is running; cancel it first")
            return {"CANCELLED"}
        venv = preferences.managed_venv()
        log_path = venv.with_suffix(".log")
        pipeline = environment_pipeline(interpreter.base_python_for_venv(), venv, log_path)

        def on_finish(job: runner.ActiveJob) -> None:
            prefs = preferences.get()
            if prefs is not None and job.state.status == "done":
                prefs.python_path = str(interpreter.venv_python(venv))
                prefs.python_status = "Created: " + str(venv)

        job = runner.start(pipeline, venv, on_finish=on_finish)
        if job.state.status == "failed":
            self.report({"WARNING"}, f"Could not start: {job.state.error.message if job.state.error else '?'}")
        else:
            self.report({"INFO"}, f"Creating the backend environment in {venv} (progress in the sidebar)")
        return {"FINISHED"}


CLASSES = (NEUSBLEND_OT_detect_interpreter, NEUSBLEND_OT_create_backend_env)
