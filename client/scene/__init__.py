"""The client's Blender-scene wing: everything of the client that imports bpy.

- :mod:`.runner`: the one active job of the session, its ``poll()`` step, the UI timer, quit and file-load handling;
  the snapshot scheduling it drives is :mod:`..feed` (no bpy).
- :mod:`.mesh`: one mesh object rebuilt in place from each snapshot, its vertex colours and material, and the job
  folder a mesh object came from.
- :mod:`.capture`: an imported capture in the scene (collection, frame empty, cameras, points, region box); the
  maths is :mod:`..camera_math`, the reading :mod:`..capture_data` (no bpy).
- :mod:`.mesh_tools`: refining a mesh object with Blender's own tools (crop box, clean-up, support plane,
  texture baking, export); the array work is :mod:`..mesh_arrays` (no bpy).

Nothing outside this package in ``client/`` imports bpy, and nothing here imports torch. Importing ``client`` does
not import this package.
"""
