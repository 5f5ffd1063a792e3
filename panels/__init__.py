"""Sidebar panels and the Add and File > Import menu entries: each module has a CLASSES tuple.

Panels never import operators: they name them by ``bl_idname``; the helpers they share with the operators live in
the client's scene wing (:mod:`..client.scene`)."""

import bpy

from . import sidebar

CLASSES = (*sidebar.CLASSES,)


def register_menus() -> None:
    """Append the Add > Mesh from Photos and File > Import entries (after the classes are registered)."""
    bpy.types.VIEW3D_MT_add.append(sidebar.draw_add_menu)
    bpy.types.TOPBAR_MT_file_import.append(sidebar.draw_import_menu)


def unregister_menus() -> None:
    """Remove what :func:`register_menus` appended."""
    bpy.types.TOPBAR_MT_file_import.remove(sidebar.draw_import_menu)
    bpy.types.VIEW3D_MT_add.remove(sidebar.draw_add_menu)
