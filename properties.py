"""Scene settings (saved with the file) and the live job status (on the window manager, never saved).

No ``from __future__ import annotations`` here: Blender reads the bpy.props annotations as objects.
"""

import bpy
from bpy.props import (
    BoolProperty,
    EnumProperty,
    FloatProperty,
    IntProperty,
    PointerProperty,
    StringProperty,
)

from .backend.protocol import PRESETS
from .client.jobstate import STATUSES

PRESET_ITEMS = [(name, name.title(), description) for name, description in PRESETS.items()]


REFINE_TARGET_ITEMS = [
    ("NEW", "New Object", "Put the new mesh beside the old one"),
    ("REPLACE", "Replace", "Replace the mesh of the selected object (its modifiers and materials stay)"),
]
CONTINUE_PRESET_ITEMS = [("SAME", "Same", "The settings the job trained with"), *PRESET_ITEMS]
CLEANUP_ITEMS = [
    ("LARGEST", "Largest Part", "Keep only the largest connected part"),
    ("SMALL", "Drop Small Parts", "Remove parts smaller than Min Part"),
    ("ALL", "Keep All", "Keep every part"),
]


def _is_mesh(_self: bpy.types.PropertyGroup, obj: bpy.types.Object) -> bool:
    return obj.type == "MESH"


class NEUSBLEND_PG_settings(bpy.types.PropertyGroup):
    """What to reconstruct and how (Scene.neusblend)."""

    images_dir: StringProperty(
        name="Photos", subtype="DIR_PATH",
        description="Folder of photos (or a posed capture: NeuS, transforms.json, COLMAP, Middlebury)")
    masks_dir: StringProperty(
        name="Masks", subtype="DIR_PATH",
        description="Optional folder of object masks, one per photo with the same name (white = object)")
    preset: EnumProperty(name="Quality", items=PRESET_ITEMS, default="default",
                         description="Training preset")
    steps: IntProperty(name="Steps", default=0, min=0, soft_max=100000,
                       description="Training steps (0: the preset's)")
    max_image_size: IntProperty(name="Max Image Size", default=0, min=0, soft_max=4096, subtype="PIXEL",
                                description="Downscale photos so the longer side is at most this (0: the preset's)")
    mesh_every: FloatProperty(name="Mesh Every", default=0.0, min=0.0, soft_max=600.0, subtype="TIME_ABSOLUTE",
                              unit="TIME_ABSOLUTE",
                              description="Seconds between live mesh updates (0: the preset's)")
    mesh_resolution: IntProperty(name="Preview Resolution", default=0, min=0, soft_max=512,
                                 description="Marching-cubes resolution of the live meshes (0: the preset's)")
    final_resolution: IntProperty(name="Final Resolution", default=0, min=0, soft_max=2048,
                                  description="Marching-cubes resolution of the final mesh (0: the preset's)")
    extra_args: StringProperty(name="Extra Arguments", default="",
                               description="More arguments for the backend's train command, e.g. "
                                           "--set target_samples=65536 (for experts)")
    object_name: StringProperty(name="Object", default="",
                                description="Mesh object to create or update (empty: named after the photos)")
    poses_job: StringProperty(name="Poses Job", default="", subtype="DIR_PATH",
                              description="Job folder of the last Estimate Poses run (reused by Reconstruct)")
    poses_images: StringProperty(default="", options={"HIDDEN"},
                                 description="The photo folder that poses_job was estimated from")
    import_cameras: BoolProperty(name="Import Cameras", default=True,
                                 description="After Estimate Poses, import the cameras with their photos, the sparse "
                                             "points and the region box into the scene")
    use_region: BoolProperty(name="Use Region Box", default=True,
                             description="Reconstruct inside the imported capture's region box, as you placed, "
                                         "rotated and scaled it (off: the backend chooses the region)")
    show_advanced: BoolProperty(name="Advanced", default=False)

    # refining a reconstruction (the Refine panel; operators take these as their defaults)
    refine_resolution: IntProperty(name="Resolution", default=512, min=32, max=2048, soft_max=1024,
                                   description="Marching-cubes samples along the longest side of the crop box "
                                               "(memory stays bounded: the grid is processed in blocks)")
    refine_target: EnumProperty(name="Result", items=REFINE_TARGET_ITEMS, default="NEW",
                                description="Where the re-extracted mesh goes")
    use_crop: BoolProperty(name="Crop", default=True,
                           description="Extract only inside the crop box (or the capture's region box)")
    crop_box: PointerProperty(name="Crop Box", type=bpy.types.Object, poll=_is_mesh,
                              description="Box object to extract inside (empty: the imported capture's region "
                                          "box, else the whole reconstructed region)")
    more_steps: IntProperty(name="More Steps", default=2000, min=1, soft_max=50000,
                            description="Training steps to add to the checkpoint")
    continue_preset: EnumProperty(name="Settings", items=CONTINUE_PRESET_ITEMS, default="SAME",
                                  description="Training settings for the added steps (the network stays)")
    cleanup_mode: EnumProperty(name="Parts", items=CLEANUP_ITEMS, default="LARGEST",
                               description="Which connected parts to keep")
    min_part: FloatProperty(name="Min Part", default=0.01, min=0.0, max=1.0, subtype="FACTOR",
                            description="Drop parts with fewer than this fraction of the faces")
    smooth_iterations: IntProperty(name="Smooth", default=0, min=0, soft_max=50,
                                   description="Smoothing passes (Blender's Smooth modifier, applied)")
    decimate_faces: IntProperty(name="Target Faces", default=0, min=0, soft_max=2000000,
                                description="Decimate to about this many faces (0: keep all)")
    bake_size: IntProperty(name="Texture Size", default=2048, min=64, max=16384, soft_max=8192, subtype="PIXEL",
                           description="Width and height of the baked colour texture")
    bake_faces: IntProperty(name="Low-Poly Faces", default=20000, min=0, soft_max=500000,
                            description="Faces of the textured low-poly copy (0: as many as the source)")


_STATUS_ITEMS = [(s.upper(), s.capitalize(), "") for s in STATUSES]


class NEUSBLEND_PG_status(bpy.types.PropertyGroup):
    """The active (or last) job as the panel shows it (WindowManager.neusblend_status); written by poll()."""

    state: EnumProperty(name="State", items=_STATUS_ITEMS, default="IDLE")
    stage: StringProperty(name="Stage")
    phase: StringProperty(name="Phase")
    progress: FloatProperty(name="Progress", min=0.0, max=1.0, subtype="FACTOR")
    progress_text: StringProperty(name="Progress Text")
    metrics_text: StringProperty(name="Metrics")
    step: IntProperty(name="Step")
    total: IntProperty(name="Total Steps")
    eta_s: FloatProperty(name="ETA", default=-1.0)
    samples_per_s: FloatProperty(name="Samples/s", default=-1.0)
    loss: FloatProperty(name="Loss", default=-1.0)
    psnr: FloatProperty(name="PSNR", default=-1.0)
    device: StringProperty(name="Device")
    error_message: StringProperty(name="Error")
    error_hint: StringProperty(name="Hint")
    error_file: StringProperty(name="File")
    warning: StringProperty(name="Warning")
    skipped_photos: StringProperty(name="Skipped Photos", description="Damaged photos the last job left out, "
                                   "one a line (name: reason)")
    log_line: StringProperty(name="Log")
    summary: StringProperty(name="Summary")
    meshes_applied: IntProperty(name="Mesh Updates")
    pid: IntProperty(name="Process ID")
    job_dir: StringProperty(name="Job Folder", subtype="DIR_PATH")
    object_name: StringProperty(name="Object")

    def set_error(self, message: str, hint: str = "", file: str = "") -> None:
        """Show a failure that happened before any job started (bad folder, no interpreter)."""
        self.state = "FAILED"
        self.error_message = message
        self.error_hint = hint
        self.error_file = file
        self.summary = ""
        self.progress = 0.0
        self.progress_text = ""


CLASSES = (NEUSBLEND_PG_settings, NEUSBLEND_PG_status)


def register_properties() -> None:
    """Attach the groups to Scene and WindowManager (after the classes are registered)."""
    bpy.types.Scene.neusblend = PointerProperty(type=NEUSBLEND_PG_settings)
    bpy.types.WindowManager.neusblend_status = PointerProperty(type=NEUSBLEND_PG_status)


def unregister_properties() -> None:
    """Remove what :func:`register_properties` attached."""
    for owner, name in ((bpy.types.WindowManager, "neusblend_status"), (bpy.types.Scene, "neusblend")):
        if hasattr(owner, name):
            delattr(owner, name)
