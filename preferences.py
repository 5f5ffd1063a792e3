"""Add-on preferences: the backend Python, the device, where job folders go.

No ``from __future__ import annotations`` here: Blender reads the bpy.props annotations as objects.
"""

import os
from pathlib import Path

import bpy
from bpy.props import EnumProperty, FloatProperty, StringProperty

ADDON_ID = __package__

DEVICE_ITEMS = [
    ("auto", "Auto", "CUDA when the backend Python has it, else CPU"),
    ("cuda", "CUDA", "An NVIDIA GPU (fails when the backend Python has no CUDA)"),
    ("cpu", "CPU", "Slow; fine for the Preview preset on small captures"),
]


class NEUSBLEND_AP_preferences(bpy.types.AddonPreferences):
    """Preferences of the extension (Edit > Preferences > Add-ons > NeuS Blend)."""

    bl_idname = ADDON_ID

    python_path: StringProperty(
        name="Backend Python", subtype="FILE_PATH", default="",
        description="A Python 3.10+ with torch, numpy, pillow and PyMCubes that runs the reconstruction "
                    "(empty: detect one)")
    device: EnumProperty(name="Device", items=DEVICE_ITEMS, default="auto", description="Where to train")
    job_root: StringProperty(
        name="Job Folder", subtype="DIR_PATH", default="",
        description="Where job folders (checkpoints, meshes, logs) go (empty: the extension's user folder)")
    preview_interval: FloatProperty(
        name="Preview Interval", default=1.0, min=0.0, soft_max=30.0, subtype="TIME_ABSOLUTE",
        unit="TIME_ABSOLUTE",
        description="Least time between two live mesh updates in the viewport (the final mesh comes at once)")
    python_status: StringProperty(name="Status", default="", options={"HIDDEN"},
                                  description="What the last check said about the backend Python")

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        col = layout.column()
        row = col.row(align=True)
        row.prop(self, "python_path")
        row.operator("neusblend.detect_interpreter", text="", icon="VIEWZOOM")
        if self.python_status:
            col.label(text=self.python_status, icon="INFO")
        row = col.row()
        row.operator("neusblend.create_backend_env", icon="CONSOLE")
        if not bpy.app.online_access:
            row.enabled = False
            col.label(text="Allow Online Access (Preferences > System) to create the environment", icon="ERROR")
        col.separator()
        col.prop(self, "device")
        col.prop(self, "job_root")
        col.label(text=f"Jobs go to: {job_root(create=False)}", icon="FILE_FOLDER")
        col.prop(self, "preview_interval")


CLASSES = (NEUSBLEND_AP_preferences,)


def get() -> NEUSBLEND_AP_preferences | None:
    """The preferences, or None when the add-on is not enabled through Blender (e.g. a bare import)."""
    addon = bpy.context.preferences.addons.get(ADDON_ID)
    return addon.preferences if addon is not None else None


def user_folder(sub: str = "", create: bool = True) -> Path:
    """The extension's own writable folder (``bpy.utils.extension_path_user``), created on demand."""
    try:
        return Path(bpy.utils.extension_path_user(ADDON_ID, path=sub, create=create))
    except (ValueError, KeyError):  # not loaded as an extension: fall back to Blender's user scripts folder
        return Path(bpy.utils.user_resource("SCRIPTS", path=os.path.join("neusblend", sub), create=create))


def job_root(create: bool = True) -> Path:
    """Where new job folders go: the preference, else ``<extension user folder>/jobs``."""
    prefs = get()
    if prefs is not None and prefs.job_root.strip():
        path = Path(bpy.path.abspath(prefs.job_root.strip()))
        if create:
            path.mkdir(parents=True, exist_ok=True)
        return path
    return user_folder("jobs", create=create)


def managed_venv() -> Path:
    """The folder of the environment that Create Backend Environment makes."""
    return user_folder() / "venv"
