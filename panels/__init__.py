"""Sidebar panels and the Add menu entry: each module has a CLASSES tuple."""

import bpy

from . import sidebar

CLASSES = (*sidebar.CLASSES,)


def register_menus() -> None:
    """Append the Add > Mesh from Photos entry (after the classes are registered)."""
    bpy.types.VIEW3D_MT_add.append(sidebar.draw_add_menu)


def unregister_menus() -> None:
    """Remove what :func:`register_menus` appended."""
    bpy.types.VIEW3D_MT_add.remove(sidebar.draw_add_menu)
