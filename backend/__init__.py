"""Reconstruction backend: data loading, pose estimation, NeuS training and mesh extraction.

Runs as its own process (``python -m backend <command>``); never imports bpy, imports torch lazily
so that ``poses`` and the protocol work in Blender's own Python.
"""

__version__ = "0.1.0"
