"""The sidebar panels, the Add menu and the preferences draw without errors, in real Blender (the bpy module).

Background Blender has no UI to draw into, so each ``draw`` runs against a recording layout that checks every
call against Blender's own definitions: the property shown exists on its data block, the operator exists and only
its real properties are set, every icon is one Blender knows. A renamed property or operator, or a typo in an icon,
fails here instead of printing an error in the user's sidebar.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from blender_harness import case_main, headless, run_case  # noqa: E402

THIS = Path(__file__)

pytestmark = [pytest.mark.blender, pytest.mark.skipif(importlib.util.find_spec("bpy") is None,
                                                      reason="needs the bpy module")]


def test_every_panel_draws_with_valid_properties_operators_and_icons(tmp_path: Path) -> None:
    r = run_case(THIS, "draw_all", tmp_path)
    assert not r["problems"], r["problems"]
    # every panel drew in every state, and the refine panel offered its operators for a reconstructed mesh
    assert r["drawn"] >= 6 * 3, r
    for op in ("neusblend.reextract", "neusblend.continue_training", "neusblend.cleanup_mesh",
               "neusblend.bake_texture", "neusblend.export_mesh", "neusblend.add_crop_box"):
        assert op in r["operators"], (op, r["operators"])
    for prop in ("refine_resolution", "crop_box", "more_steps", "bake_size", "decimate_faces", "images_dir"):
        assert prop in r["props"], (prop, r["props"])


# ---------------------------------------------------------------------------------------------------------------
# case (run inside the subprocess, with bpy)


class Recorder:
    """Stands in for ``bpy.types.UILayout`` and checks each call against Blender's RNA definitions."""

    def __init__(self, log: dict[str, Any]) -> None:
        object.__setattr__(self, "_log", log)

    def __setattr__(self, name: str, value: Any) -> None:  # enabled, active, scale_y, alert, ...
        import bpy

        if name not in bpy.types.UILayout.bl_rna.properties:
            self._log["problems"].append(f"layout has no attribute {name!r}")

    def _child(self, *_args: Any, **_kwargs: Any) -> Recorder:
        return Recorder(self._log)

    row = column = box = split = column_flow = grid_flow = _child

    def _icon(self, icon: str) -> None:
        import bpy

        icons = bpy.types.UILayout.bl_rna.functions["label"].parameters["icon"].enum_items.keys()
        if icon not in icons:
            self._log["problems"].append(f"unknown icon {icon!r}")

    def label(self, text: str = "", icon: str = "NONE", **_kwargs: Any) -> None:
        self._icon(icon)

    def separator(self, **_kwargs: Any) -> None:
        pass

    def progress(self, factor: float = 0.0, type: str = "BAR", text: str = "") -> None:  # noqa: A002
        if not 0.0 <= factor <= 1.0:
            self._log["problems"].append(f"progress factor {factor}")

    def prop(self, data: Any, name: str, text: str | None = None, icon: str = "NONE", **_kwargs: Any) -> None:
        self._icon(icon)
        if name not in data.bl_rna.properties:
            self._log["problems"].append(f"{type(data).__name__} has no property {name!r}")
        self._log["props"].add(name)

    def menu(self, idname: str, text: str = "", icon: str = "NONE", **_kwargs: Any) -> None:
        import bpy

        self._icon(icon)
        if not hasattr(bpy.types, idname):
            self._log["problems"].append(f"unknown menu {idname!r}")

    def operator(self, idname: str, text: str = "", icon: str = "NONE", **_kwargs: Any) -> OperatorProps:
        import bpy

        self._icon(icon)
        self._log["operators"].add(idname)
        category, name = idname.split(".")
        try:
            rna = getattr(getattr(bpy.ops, category), name).get_rna_type()
        except (AttributeError, KeyError):
            self._log["problems"].append(f"unknown operator {idname!r}")
            rna = None
        return OperatorProps(idname, rna, self._log)


class OperatorProps:
    """The operator properties a button sets: only the operator's own."""

    def __init__(self, idname: str, rna: Any, log: dict[str, Any]) -> None:
        object.__setattr__(self, "_where", (idname, rna, log))

    def __setattr__(self, name: str, value: Any) -> None:
        idname, rna, log = self._where
        if rna is not None and name not in rna.properties:
            log["problems"].append(f"operator {idname} has no property {name!r}")


class PanelSelf:
    """``self`` for a draw function: a layout, and (for preferences) the real property group's attributes."""

    def __init__(self, layout: Recorder, data: Any = None) -> None:
        self.layout = layout
        self._data = data

    def __getattr__(self, name: str) -> Any:
        return getattr(self._data, name)


def case_draw_all() -> dict[str, Any]:
    import bpy
    import numpy as np

    log: dict[str, Any] = {"problems": [], "operators": set(), "props": set()}
    for obj in list(bpy.data.objects):
        bpy.data.objects.remove(obj)
    ext = headless().enable_extension()
    try:
        module = sys.modules[ext.module_name]
        panels = [c for c in module.CLASSES if issubclass(c, (bpy.types.Panel, bpy.types.Menu))]
        prefs = bpy.context.preferences.addons[ext.module_name].preferences
        scene_mesh = sys.modules[ext.module_name + ".client.scene.mesh"]
        status = bpy.context.window_manager.neusblend_status
        drawn = 0

        def draw_everything() -> None:
            nonlocal drawn
            for cls in panels:
                cls.draw(PanelSelf(Recorder(log)), bpy.context)
                drawn += 1
            type(prefs).draw(PanelSelf(Recorder(log), prefs), bpy.context)

        # 1. an empty scene, idle
        draw_everything()
        # 2. a reconstructed mesh selected (vertex colours, its job folder), a finished job
        mesh = bpy.data.meshes.new("Recon")
        mesh.from_pydata([(0, 0, 0), (1, 0, 0), (0, 1, 0)], [], [(0, 1, 2)])
        obj = bpy.data.objects.new("Recon", mesh)
        bpy.context.scene.collection.objects.link(obj)
        scene_mesh.set_vertex_colors(obj, np.full((3, 3), 128, dtype=np.uint8))
        obj["neusblend_job"] = "/nonexistent/job"
        obj["neusblend_step"] = 100
        bpy.context.view_layer.objects.active = obj
        status.state, status.summary, status.job_dir = "DONE", "Finished 100 steps", "/nonexistent/job"
        bpy.context.scene.neusblend.cleanup_mode = "SMALL"
        draw_everything()
        # 3. a failed job with an error, a hint and a file
        status.set_error("the photo folder is empty", "Choose a folder with photos.", "/nonexistent/photos")
        status.warning = "a warning"
        draw_everything()
        return {"problems": sorted(set(log["problems"])), "operators": sorted(log["operators"]),
                "props": sorted(log["props"]), "drawn": drawn}
    finally:
        ext.disable()


CASES = {"draw_all": case_draw_all}


if __name__ == "__main__":
    case_main(CASES)
