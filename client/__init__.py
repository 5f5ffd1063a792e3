"""The Blender side of the backend process: launching it, reading its messages, applying its meshes.

Modules without bpy (usable and testable in any Python):

- :mod:`.process`: one ``python -m backend ...`` subprocess in its own process group, drained on threads.
- :mod:`.interpreter`: finding and checking a Python that can run the backend; its clean environment.
- :mod:`.jobstate`: what the messages of one run say (progress, errors, meshes), and why a process failed.
- :mod:`.pipeline`: several steps (check interpreter, estimate poses, train) run one after another.
- :mod:`.datasets`: which input folders are posed captures and which are plain photos.
- :mod:`.jobs`: the pipelines the operators start (reconstruct, poses, backend environment), from plain settings.
- :mod:`.camera_math`: OpenCV cameras <-> Blender cameras, the upright frame of an imported capture, the region box
  as ``train --roi`` reads it.
- :mod:`.capture_data`: a posed capture's cameras, points and region of interest, read from a poses job (or from
  what :mod:`.export_capture` wrote: that one is a script the backend's interpreter runs for other layouts).

Modules with bpy: :mod:`.scene_mesh` (one mesh object updated in place), :mod:`.scene_capture` (an imported
capture: collection, frame empty, cameras, points, region box) and :mod:`.runner` (the one active job, its
``poll()`` step, the UI timer, quit and file-load handling).
Nothing here imports torch.
"""
