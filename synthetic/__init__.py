"""Synthetic captures: render posed datasets of Blender objects, with their ground-truth mesh.

- :mod:`.cameras`: camera layouts (ring, Fibonacci sphere, DTU-like cap) and the Blender <-> OpenCV camera
  conventions (numpy only; importable without Blender).
- :mod:`.capture`: the rendering itself (imports bpy, never torch); used by ``scripts/render_capture.py`` and the
  Render Capture operator (``operators/capture.py``).
- :mod:`.room` (numpy only) and :mod:`.room_scene` (bpy): the textured room of ``--background room`` captures, and
  the region their ground truth is cut to.
"""
