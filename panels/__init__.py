"""Sidebar panels and the Add menu entry: each module has a CLASSES tuple."""

import bpy

from ..operators.import_capture import draw_import_menu
from . import sidebar

CLASSES = (*sidebar.CLASSES,)


def register_menus() -> None:
    """Append the Add > Mesh from Photos and File > Import entries (after the classes are registered)."""
    bpy.types.VIEW3D_MT_add.append(sidebar.draw_add_menu)
    bpy.types.TOPBAR_MT_file_import.append(draw_import_menu)


def unregister_menus() -> None:
    """Remove what :func:`register_menus` appended."""
    bpy.types.TOPBAR_MT_file_import.remove(draw_import_menu)
    bpy.types.VIEW3D_MT_add.remove(sidebar.draw_add_menu)
