"""The Blender side of the backend process: launching it, reading its messages, applying its meshes.

The package is split by dependency. The modules here never import bpy (nor torch), so they run and are tested in
any Python:

- :mod:`.process`: one ``python -m backend ...`` subprocess in its own process group, drained on threads.
- :mod:`.interpreter`: finding and checking a Python that can run the backend; its clean environment.
- :mod:`.jobstate`: what the messages of one run say (progress, errors, meshes), and why a process failed.
- :mod:`.pipeline`: several steps (check interpreter, estimate poses, train) run one after another.
- :mod:`.feed`: which mesh snapshot of a job is read and applied when (newest wins, previews throttled).
- :mod:`.datasets`: which input folders are posed captures and which are plain photos.
- :mod:`.jobs`: the pipelines the operators start (reconstruct, poses, backend environment), from plain settings.
- :mod:`.camera_math`: OpenCV cameras <-> Blender cameras, the upright frame of an imported capture, the region box
  as ``train --roi`` reads it.
- :mod:`.capture_data`: a posed capture's cameras, points and region of interest, read from a poses job or from
  what ``python -m backend export-capture`` wrote for any other layout.
- :mod:`.mesh_arrays`: mesh work on plain arrays for the refine tools (connected parts, fan triangles, the support
  plane, the bake's memory check).

The Blender-scene wing, :mod:`.scene` (runner, scene mesh, imported capture, mesh tools), is the only part that
imports bpy; nothing imports it from here.
"""
