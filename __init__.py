"""NeuS Blend: photos to meshes inside Blender, with a live NeuS reconstruction in a backend process.

Only registration lives here. The operators and panels are thin; the client (``client/``, bpy-free, with its
Blender-scene wing ``client/scene/``) runs the backend (``backend/``, a separate Python with torch) and applies its
meshes.
"""

import contextlib

import bpy

from . import operators, panels, preferences, properties
from .client.scene import runner

CLASSES = (*properties.CLASSES, *preferences.CLASSES, *operators.CLASSES, *panels.CLASSES)

_registered: list[type] = []


def register() -> None:
    """Register every class, then the properties, menu entries, handlers; undo it all if anything fails."""
    try:
        for cls in CLASSES:
            bpy.utils.register_class(cls)
            _registered.append(cls)
        properties.register_properties()
        panels.register_menus()
        runner.register()
    except Exception:
        unregister()
        raise


def unregister() -> None:
    """End any running job (its process group too), then remove everything :func:`register` added."""
    runner.unregister()
    with contextlib.suppress(AttributeError, ValueError):
        panels.unregister_menus()
    properties.unregister_properties()
    while _registered:
        cls = _registered.pop()
        with contextlib.suppress(RuntimeError):
            bpy.utils.unregister_class(cls)
