"""Render Synthetic Capture: a posed dataset (NeuS layout, transforms.json, ground-truth mesh) of the selected objects.

The operator only collects settings; :mod:`..synthetic.capture` does the work, in a temporary scene, so the user's
scene, camera, world, render settings and materials are left as they were. It renders in the foreground (Blender
waits, with a progress counter on the cursor): a DTU-like capture of 49 views at 200 px takes about half a minute
on two cores. With *Background: Room* the objects are rendered on a textured table in a textured room that is built
for the render and removed afterwards (see synthetic/room.py).
"""

from pathlib import Path

import bpy
from bpy.props import BoolProperty, EnumProperty, FloatProperty, IntProperty, StringProperty

_LAYOUT_ITEMS = [
    ("dtu", "DTU-like", "49 views spread over a cap above the objects, like the DTU rig"),
    ("sphere", "Sphere", "Views spread evenly over the whole sphere (Fibonacci)"),
    ("ring", "Ring", "One ring of views at 30 degrees elevation"),
]
_BACKGROUND_ITEMS = [
    ("none", "None", "The objects alone on a transparent film; masks from the alpha"),
    ("room", "Room", "The objects on a textured table in a textured room (a benchmark for captures without masks): "
     "opaque images, masks in eval_masks/ for evaluation only, gt_region.ply and region.json"),
]
_TEXTURE_ITEMS = [
    ("auto", "Where Missing", "A procedural colour texture on objects whose materials have no texture"),
    ("always", "Always", "The procedural texture on every object"),
    ("never", "Never", "Keep the materials as they are"),
]


class NEUSBLEND_OT_render_capture(bpy.types.Operator):
    """Render a posed capture of the selected objects (images, masks, cameras and the ground-truth mesh), to train
    and evaluate a reconstruction on"""

    bl_idname = "neusblend.render_capture"
    bl_label = "Render Synthetic Capture"
    bl_options = {"REGISTER"}  # the scene is left unchanged: nothing to undo

    directory: StringProperty(name="Output Folder", subtype="DIR_PATH")
    camera_layout: EnumProperty(name="Layout", items=_LAYOUT_ITEMS, default="dtu")  # not "layout": UI
    views: IntProperty(name="Views", default=0, min=0, max=1000, description="0: the layout's default")
    width: IntProperty(name="Width", default=200, min=8, max=4096)
    height: IntProperty(name="Height", default=200, min=8, max=4096)
    samples: IntProperty(name="Samples", default=16, min=1, max=4096)
    masks: BoolProperty(name="Masks", default=True, description="Write masks from the alpha")
    denoise: BoolProperty(name="Denoise", default=True, description="OpenImageDenoise when Blender has it")
    seed: IntProperty(name="Seed", default=0, min=0)
    texture: EnumProperty(name="Procedural Texture", items=_TEXTURE_ITEMS, default="auto")
    background: EnumProperty(name="Background", items=_BACKGROUND_ITEMS, default="none")
    lens: FloatProperty(name="Lens", default=0.0, min=0.0, max=500.0, unit="CAMERA",
                        description="Focal length in mm on a 36 mm sensor; 0: 50 mm, or 28 mm in a room")
    region_margin: FloatProperty(name="Region Margin", default=0.1, min=0.0, max=10.0,
                                 description="Room: how far the evaluation region box reaches beyond the objects, "
                                 "in bounding radii")
    use_as_input: BoolProperty(name="Use for Reconstruction", default=True,
                               description="Set the capture as the photo folder of the Reconstruct panel")

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        from ..synthetic.capture import GEOMETRY_TYPES

        return any(ob.type in GEOMETRY_TYPES for ob in context.selected_objects)

    def invoke(self, context: bpy.types.Context, event: bpy.types.Event) -> set[str]:
        context.window_manager.fileselect_add(self)
        return {"RUNNING_MODAL"}

    def draw(self, context: bpy.types.Context) -> None:
        col = self.layout.column()
        for name in ("camera_layout", "views", "width", "height", "samples", "masks", "denoise", "seed", "texture",
                     "lens", "background"):
            col.prop(self, name)
        if self.background == "room":
            col.prop(self, "region_margin")
        col.prop(self, "use_as_input")

    def execute(self, context: bpy.types.Context) -> set[str]:
        from ..synthetic import capture
        from ..synthetic.room import ROOM_LENS_MM

        if not self.directory:
            self.report({"ERROR"}, "Choose an output folder")
            return {"CANCELLED"}
        out = Path(bpy.path.abspath(self.directory))
        try:
            settings = capture.CaptureSettings(
                layout=self.camera_layout, n_views=self.views or None, width=self.width, height=self.height,
                samples=self.samples, masks=self.masks, denoise=self.denoise, seed=self.seed, texture=self.texture,
                lens_mm=self.lens or (ROOM_LENS_MM if self.background == "room" else 50.0),
                backdrop=self.background, region_margin=self.region_margin)
        except ValueError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        objects = capture.geometry_objects(context.selected_objects)
        wm = context.window_manager
        wm.progress_begin(0, 1000)

        def progress(i: int, n: int) -> None:
            wm.progress_update(int(1000 * i / max(n, 1)))

        try:
            result = capture.capture_objects(objects, out, settings, progress=progress)
        except (ValueError, OSError, RuntimeError) as exc:
            self.report({"ERROR"}, f"Capture failed: {exc}")
            return {"CANCELLED"}
        finally:
            wm.progress_end()
        meta = result.metadata
        settings_group = getattr(context.scene, "neusblend", None)
        if self.use_as_input and settings_group is not None and hasattr(settings_group, "images_dir"):
            settings_group.images_dir = str(out)
        self.report({"INFO"}, f"Rendered {meta['n_views']} views in {meta['render_s']:.0f} s into {out}")
        return {"FINISHED"}


CLASSES = (NEUSBLEND_OT_render_capture,)
