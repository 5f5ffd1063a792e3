"""Reconstruct a capture without the UI, through the add-on's own operators and client.

    blender -b --python scripts/reconstruct_headless.py -- --images DIR --out FILE.blend [--out FILE.ply] [options]
    python scripts/reconstruct_headless.py --images DIR --out FILE.blend ...      (with the bpy module installed)
    python scripts/reconstruct_headless.py --job JOB_DIR --extract-resolution 1024 --texture-size 2048 --out a.glb

The extension is enabled from this source tree (through a temporary local extension repository, so it loads
exactly as an installed extension does), or with ``--use-installed`` the one installed in Blender. The script then
sets the scene's settings, runs ``bpy.ops.neusblend.reconstruct()`` and calls the client's ``poll()`` in a loop
(timers never fire in background mode), prints progress, and writes the outputs: ``.blend`` (the scene with the
mesh), ``.ply`` / ``.obj`` / ``.stl`` (the mesh), and with ``--render`` one Cycles CPU image of the result.
With ``--cameras`` it first imports the capture's cameras, photos, sparse points and region box (estimating the
poses first for plain photos, through Estimate Poses), so the mesh lands in that upright frame and training uses the
region box; mesh files are still written in capture coordinates.
Refining (after training, or with ``--job`` on an earlier job folder): ``--more-steps`` continues training,
``--extract-resolution`` / ``--crop`` re-extract from the checkpoint, ``--remove-plane`` removes the table or
ground, ``--keep-largest`` / ``--min-part`` /
``--smooth`` / ``--decimate`` clean up, ``--texture-size`` bakes the colours into a texture on a low-poly copy
(which is then what ``--out`` writes; ``.glb`` carries the texture).
At the end it disables the extension again (Blender 4.5 hangs at exit when add-on classes stay registered).

Exit status: 0 done, 2 failed (the message, the file to blame and the hint are printed; outputs that cannot be
written are found before anything starts), 3 cancelled (Ctrl+C, SIGTERM or --timeout; the outputs still hold the
last mesh when there was one). Warnings (damaged photos left out, too few views, ...) go to stderr as they come.
"""

from __future__ import annotations

import argparse
import atexit
import importlib.util
import math
import os
import shlex
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import bpy

EXTENSION_ID = "neusblend"
SOURCE_REPO_MODULE = "neusblend_source"
SOURCE_ROOT = Path(__file__).resolve().parent.parent
MESH_SUFFIXES = (".ply", ".obj", ".stl", ".glb", ".gltf", ".fbx")
EXIT_OK, EXIT_ERROR, EXIT_CANCELLED = 0, 2, 3


def preset_names() -> list[str]:
    """The training presets the backend offers: ``PRESETS`` of this checkout's ``backend/protocol.py`` (the one list
    the CLI and the panel use too; the module needs only numpy)."""
    spec = importlib.util.spec_from_file_location("neusblend_headless_protocol",
                                                  SOURCE_ROOT / "backend" / "protocol.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return list(module.PRESETS)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Arguments after ``--`` (Blender) or all of them (plain Python)."""
    if argv is None:
        argv = sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else sys.argv[1:]
    p = argparse.ArgumentParser(prog="reconstruct_headless.py", description=__doc__.splitlines()[0])
    p.add_argument("--images", help="photo folder, or a posed capture (NeuS, COLMAP, ...)")
    p.add_argument("--job", help="refine an earlier reconstruction (its job folder) instead of training anew")
    p.add_argument("--out", action="append", default=[], metavar="FILE",
                   help="output: .blend, or the mesh as .ply, .obj, .stl, .glb, .gltf or .fbx (repeat for several; "
                        "a baked texture goes with .glb/.gltf/.obj/.fbx)")
    p.add_argument("--masks", default="", help="optional mask folder")
    presets = preset_names()
    p.add_argument("--preset", default="default", choices=presets)
    p.add_argument("--steps", type=int, default=0, help="training steps (0: the preset's)")
    p.add_argument("--max-image-size", type=int, default=0, help="longer image side (0: the preset's)")
    p.add_argument("--mesh-every", type=float, default=0.0, help="seconds between live meshes (0: the preset's)")
    p.add_argument("--mesh-resolution", type=int, default=0, help="live mesh resolution (0: the preset's)")
    p.add_argument("--final-resolution", type=int, default=0, help="final mesh resolution (0: the preset's)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a backend configuration key (repeatable)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--python", default="", help="backend interpreter (default: preferences, $NEUSBLEND_PYTHON, "
                                                "or detected)")
    p.add_argument("--job-root", default="", help="folder for job folders (default: the extension's user folder)")
    p.add_argument("--object", default="", help="name of the mesh object")
    p.add_argument("--render", default="", metavar="FILE.png", help="render the result with Cycles (CPU)")
    p.add_argument("--render-size", default="480x360", help="WIDTHxHEIGHT of the render")
    p.add_argument("--render-samples", type=int, default=16)
    p.add_argument("--timeout", type=float, default=0.0, help="cancel after this many seconds (0: never)")
    p.add_argument("--cameras", action="store_true",
                   help="import cameras, points and region box first (estimating poses for plain photos)")
    p.add_argument("--use-installed", action="store_true", help="use the extension installed in Blender")
    r = p.add_argument_group("refine (in this order, after training or on --job)")
    r.add_argument("--more-steps", type=int, default=0, help="continue training the checkpoint for N more steps")
    r.add_argument("--more-preset", default="", choices=["", *presets],
                   help="settings for the added steps (default: the job's own)")
    r.add_argument("--extract-resolution", type=int, default=0,
                   help="re-extract the mesh from the checkpoint at this resolution (up to 2048)")
    r.add_argument("--crop", type=float, nargs=6, metavar=("XMIN", "YMIN", "ZMIN", "XMAX", "YMAX", "ZMAX"),
                   help="re-extract only inside this box (the mesh's input coordinates)")
    r.add_argument("--extract-into", default="replace", choices=["replace", "new"],
                   help="the re-extracted mesh replaces the mesh or goes into a new object")
    r.add_argument("--remove-plane", action="store_true",
                   help="remove the table or ground the object stands on (Remove Support Plane)")
    r.add_argument("--keep-largest", action="store_true", help="keep only the largest connected part")
    r.add_argument("--min-part", type=float, default=0.0, help="drop parts with fewer than this fraction of faces")
    r.add_argument("--smooth", type=int, default=0, help="smoothing passes")
    r.add_argument("--decimate", type=int, default=0, help="decimate to about this many faces")
    r.add_argument("--texture-size", type=int, default=0,
                   help="bake the colours into a texture of this size on a low-poly UV-mapped copy")
    r.add_argument("--texture-faces", type=int, default=20000, help="faces of the textured low-poly copy")
    p.add_argument("--quiet", action="store_true", help="print only the result")
    args = p.parse_args(list(argv))
    if not args.images and not args.job:
        p.error("give --images (a new reconstruction) or --job (refine an earlier one)")
    for out in args.out:
        if Path(out).suffix.lower() not in (".blend", *MESH_SUFFIXES):
            p.error(f"--out {out}: use .blend or one of {', '.join(MESH_SUFFIXES)}")
    if args.crop and not args.extract_resolution:
        args.extract_resolution = 512
    return args


# ---------------------------------------------------------------------------------------------------------------
# enabling the extension


class Extension:
    """The enabled extension module and how to disable it again."""

    def __init__(self, module_name: str, module: ModuleType, repo: Any = None,
                 remove_repo_dir: Callable[[], None] | None = None, repo_dir: str = "") -> None:
        self.module_name = module_name
        self.module = module
        self._repo = repo
        self._remove_repo_dir = remove_repo_dir  # also registered with atexit
        self.repo_dir = repo_dir

    def disable(self) -> None:
        """Unregister the extension and remove the temporary repository, if one was made."""
        import addon_utils

        if self._repo is not None:  # removing the repository disables (unregisters) its add-ons
            bpy.context.preferences.extensions.repos.remove(self._repo)
            self._repo = None
        if self.module_name in bpy.context.preferences.addons:
            addon_utils.disable(self.module_name, default_set=True)
        if self._remove_repo_dir is not None:
            self._remove_repo_dir()
            atexit.unregister(self._remove_repo_dir)
            self._remove_repo_dir = None


def _enable(module_name: str) -> ModuleType:
    import addon_utils

    errors: list[BaseException] = []
    module = addon_utils.enable(module_name, default_set=True, handle_error=errors.append)
    if module is None or errors:
        raise RuntimeError(f"cannot enable {module_name}: {errors[0] if errors else 'unknown reason'}")
    return module


def installed_module_name() -> str | None:
    """``bl_ext.<repo>.neusblend`` of an installed copy, if Blender has one."""
    for repo in bpy.context.preferences.extensions.repos:
        if repo.enabled and (Path(repo.directory) / EXTENSION_ID / "blender_manifest.toml").is_file():
            return f"bl_ext.{repo.module}.{EXTENSION_ID}"
    return None


def enable_extension(source_root: Path | None = SOURCE_ROOT, use_installed: bool = False) -> Extension:
    """Enable the extension from ``source_root`` (a checkout) or the installed one; see the module docstring."""
    if use_installed or source_root is None or not (source_root / "blender_manifest.toml").is_file():
        name = installed_module_name()
        if name is None:
            raise RuntimeError("the extension is not installed in this Blender and no source tree was given")
        return Extension(name, _enable(name))
    repo_dir = tempfile.mkdtemp(prefix="neusblend-repo-")

    def remove_repo_dir() -> None:  # the link inside is removed, never followed
        shutil.rmtree(repo_dir, ignore_errors=True)

    # Extension.disable() removes the folder; at exit it goes too when that never ran (an error, a caller that
    # leaves the extension enabled)
    atexit.register(remove_repo_dir)
    link = Path(repo_dir) / EXTENSION_ID
    try:
        os.symlink(source_root, link, target_is_directory=True)
    except OSError:  # no symlinks (Windows without the privilege): copy the package instead
        shutil.copytree(source_root, link, ignore=shutil.ignore_patterns(
            ".git", "tests", "bench", "vendor", "dist", "build", "jobs", "out", "__pycache__"))
    repos = bpy.context.preferences.extensions.repos
    stale = repos.get(SOURCE_REPO_MODULE) if hasattr(repos, "get") else None
    if stale is not None:
        repos.remove(stale)
    try:
        repo = repos.new(name="NeuS Blend (source)", module=SOURCE_REPO_MODULE, custom_directory=repo_dir,
                         source="USER")
    except TypeError:  # an older Blender without the source argument
        repo = repos.new(name="NeuS Blend (source)", module=SOURCE_REPO_MODULE, custom_directory=repo_dir)
    name = f"bl_ext.{repo.module}.{EXTENSION_ID}"
    try:
        module = _enable(name)
    except Exception:
        repos.remove(repo)
        remove_repo_dir()
        atexit.unregister(remove_repo_dir)
        raise
    return Extension(name, module, repo, remove_repo_dir, repo_dir)


# ---------------------------------------------------------------------------------------------------------------
# outputs


def unwritable_output(path: Path) -> str:
    """Why ``path`` (an output file) cannot be written, or "" when it can: the file is not a folder, and the nearest
    existing folder above it takes a new file (tried with an empty probe file, removed again)."""
    if path.is_dir():
        return "it is a folder, not a file"
    if path.exists() and not os.access(path, os.W_OK):
        return "the file exists and is read-only"
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        return f"{parent} is a file, not a folder"
    try:
        fd, probe = tempfile.mkstemp(prefix=".neusblend-probe-", dir=parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        return f"cannot create files in {parent}: {exc.strerror or exc}"
    return ""


def check_outputs(args: argparse.Namespace) -> int:
    """Before anything runs: every ``--out`` and ``--render`` file can be written (exit status; errors on stderr)."""
    code = EXIT_OK
    for flag, out in [*(("--out", o) for o in args.out), *((("--render", args.render),) if args.render else ())]:
        path = Path(out).expanduser().resolve()
        why = unwritable_output(path)
        if why:
            print(f"error: cannot write {flag} {path}: {why}", file=sys.stderr)
            print("hint: choose a file in a folder you can write to; nothing was started.", file=sys.stderr)
            code = EXIT_ERROR
    return code



def export_mesh(obj: bpy.types.Object, path: Path) -> None:
    """Write the object's mesh (with its texture or colours) in input coordinates: without the frame of an
    imported capture, which is lifted for the export (exporters write world coordinates)."""
    tools = sys.modules[_tools_module()]
    parent, parent_inverse = obj.parent, obj.matrix_parent_inverse.copy()
    if parent is not None:
        obj.parent = None
        bpy.context.view_layer.update()
    try:
        tools.export_object(obj, path)
    finally:
        if parent is not None:
            obj.parent = parent
            obj.matrix_parent_inverse = parent_inverse
            bpy.context.view_layer.update()


_EXTENSION_MODULE = ""


def _tools_module() -> str:
    return f"{_EXTENSION_MODULE}.client.scene.mesh_tools"


def render_result(obj: bpy.types.Object, path: Path, size: str = "480x360", samples: int = 16) -> None:
    """One Cycles CPU image of ``obj`` from a camera framing its bounding box, with a sun and a grey sky."""
    from mathutils import Vector

    scene = bpy.context.scene
    corners = [obj.matrix_world @ Vector(c) for c in obj.bound_box]
    center = sum(corners, Vector()) / 8.0
    radius = max((c - center).length for c in corners) or 1.0
    cam_data = bpy.data.cameras.new("Render Camera")
    cam_data.lens = 50.0
    cam_data.clip_start = radius * 0.01
    cam_data.clip_end = radius * 100.0
    cam = bpy.data.objects.new("Render Camera", cam_data)
    scene.collection.objects.link(cam)
    direction = Vector((0.55, -1.0, 0.65)).normalized()
    fov = 2.0 * math.atan(cam_data.sensor_width / (2.0 * cam_data.lens))
    cam.location = center + direction * (radius / math.sin(fov / 2.0)) * 1.05
    cam.rotation_euler = (center - cam.location).to_track_quat("-Z", "Y").to_euler()
    scene.camera = cam
    sun_data = bpy.data.lights.new("Render Sun", "SUN")
    sun_data.energy = 2.0
    sun = bpy.data.objects.new("Render Sun", sun_data)
    sun.rotation_euler = (direction * -1.0 + Vector((0.3, 0.2, -0.4))).to_track_quat("-Z", "Y").to_euler()
    scene.collection.objects.link(sun)
    world = scene.world or bpy.data.worlds.new("World")
    scene.world = world
    if bpy.app.version < (5, 0, 0):  # node trees are always on from 5.0 (use_nodes is deprecated there)
        world.use_nodes = True
    bg = next((n for n in world.node_tree.nodes if n.type == "BACKGROUND"), None)
    if bg is not None:
        bg.inputs["Color"].default_value = (0.6, 0.6, 0.65, 1.0)
        bg.inputs["Strength"].default_value = 0.6
    width, height = (int(v) for v in size.lower().split("x"))
    scene.render.engine = "CYCLES"
    scene.view_settings.view_transform = "Standard"  # show the reconstructed colours as they are
    scene.cycles.device = "CPU"
    scene.cycles.samples = samples
    scene.cycles.use_denoising = False
    scene.render.resolution_x, scene.render.resolution_y = width, height
    scene.render.resolution_percentage = 100
    scene.render.image_settings.file_format = "PNG"
    scene.render.filepath = str(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    bpy.ops.render.render(write_still=True)


# ---------------------------------------------------------------------------------------------------------------
# main


def _configure(ext: Extension, args: argparse.Namespace) -> None:
    prefs = bpy.context.preferences.addons[ext.module_name].preferences
    if args.python:
        prefs.python_path = args.python
    prefs.device = args.device
    if args.job_root:
        prefs.job_root = str(Path(args.job_root).resolve())
    prefs.preview_interval = 0.0  # apply every snapshot: nobody is waiting on a UI
    s = bpy.context.scene.neusblend
    s.images_dir = str(Path(args.images).resolve()) if args.images else ""
    s.masks_dir = str(Path(args.masks).resolve()) if args.masks else ""
    s.preset = args.preset
    s.steps = args.steps
    s.max_image_size = args.max_image_size
    s.mesh_every = args.mesh_every
    s.mesh_resolution = args.mesh_resolution
    s.final_resolution = args.final_resolution
    s.extra_args = " ".join(f"--set {shlex.quote(kv)}" for kv in args.set)
    s.object_name = args.object


class _Printer:
    """Prints a progress line when something changed, at most every ``every`` seconds."""

    def __init__(self, quiet: bool, every: float = 2.0) -> None:
        self.quiet, self.every = quiet, every
        self._last_text, self._last_time, self._stage = "", 0.0, ""
        self._warned: set[str] = set()

    def __call__(self, job: Any) -> None:
        for warning in job.state.warnings:  # always, on stderr: what may spoil the result
            if warning not in self._warned:
                self._warned.add(warning)
                print(f"warning: {warning}", file=sys.stderr, flush=True)
        if self.quiet:
            return
        s = job.state
        if s.stage != self._stage:
            self._stage = s.stage
            print(f"== {s.stage}", flush=True)
        text = " | ".join(t for t in (s.progress_text(), s.metrics_text(), f"meshes {job.meshes_applied}") if t)
        now = time.monotonic()
        if text != self._last_text and now - self._last_time >= self.every:
            print(text, flush=True)
            self._last_text, self._last_time = text, now


def import_cameras(runner: ModuleType, args: argparse.Namespace) -> int:
    """``--cameras``: Estimate Poses (which imports its result) for plain photos, else Import Posed Capture."""
    status = bpy.context.window_manager.neusblend_status
    images = str(Path(args.images).resolve())
    try:
        if bpy.ops.neusblend.estimate_poses() == {"FINISHED"}:
            job = runner.wait(timeout=args.timeout or None, interval=0.1, callback=_Printer(args.quiet))
            if job is None or job.state.status != "done":
                where = f" ({status.error_file})" if status.error_file else ""
                print(f"error: pose estimation failed: {status.error_message}{where}", file=sys.stderr)
                if status.error_hint:
                    print(f"hint: {status.error_hint}", file=sys.stderr)
                return EXIT_ERROR if job is None or job.state.status == "failed" else EXIT_CANCELLED
            if not args.quiet:
                print(status.summary, flush=True)
        else:  # a posed capture: nothing to estimate
            bpy.ops.neusblend.import_capture(directory=images)
    except RuntimeError as exc:  # the operator reported an error
        print(f"error: {status.error_message or exc}", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_OK


def _fail(status: Any, what: str = "") -> int:
    where = f" ({status.error_file})" if status.error_file else ""
    print(f"error: {what}{status.error_message}{where}", file=sys.stderr)
    if status.error_hint:
        print(f"hint: {status.error_hint}", file=sys.stderr)
    return EXIT_ERROR


def _print_skipped(status: Any) -> None:
    """The damaged photos the job left out, one a line (stderr)."""
    lines = status.skipped_photos.splitlines() if status.skipped_photos else []
    if lines:
        print(f"skipped {len(lines)} damaged photo(s):", file=sys.stderr)
        for line in lines:
            print(f"  {line}", file=sys.stderr)


def _run_job(runner: ModuleType, op: Any, args: argparse.Namespace, **kwargs: Any) -> tuple[int, Any]:
    """Start an operator that starts a backend job, follow it to its end; (exit status, the job)."""
    status = bpy.context.window_manager.neusblend_status
    try:
        result = op(**kwargs)
    except RuntimeError as exc:  # the operator reported an error (bad folder, no interpreter, no checkpoint)
        where = f" ({status.error_file})" if status.error_message and status.error_file else ""
        print(f"error: {status.error_message or exc}{where}", file=sys.stderr)
        if status.error_hint:
            print(f"hint: {status.error_hint}", file=sys.stderr)
        return EXIT_ERROR, None
    if "FINISHED" not in result:
        print("error: the job did not start", file=sys.stderr)
        return EXIT_ERROR, None
    job = runner.wait(timeout=args.timeout or None, interval=0.1, callback=_Printer(args.quiet))
    state = job.state if job is not None else None
    _print_skipped(status)
    if state is None or state.status == "failed":
        code = _fail(status)
        print(f"log: {job.pipeline.log_path if job else '?'}", file=sys.stderr)
        return code, job
    return (EXIT_OK if state.status == "done" else EXIT_CANCELLED), job


def _activate(obj: bpy.types.Object) -> None:
    layer = bpy.context.view_layer
    for other in layer.objects:
        other.select_set(False)
    obj.select_set(True)
    layer.objects.active = obj


def refine(runner: ModuleType, obj: bpy.types.Object, args: argparse.Namespace
           ) -> tuple[int, bpy.types.Object]:
    """The refine options, in order: more steps, re-extract (cropped), support plane, clean up, bake. (exit status,
    object)."""
    tools = sys.modules[_tools_module()]
    ops = bpy.ops.neusblend
    if args.more_steps:
        _activate(obj)
        code, job = _run_job(runner, ops.continue_training, args, more_steps=args.more_steps,
                             preset=args.more_preset.lower() if args.more_preset else "SAME")
        if code != EXIT_OK:
            return code, obj
    if args.extract_resolution:
        settings = bpy.context.scene.neusblend
        settings.use_crop = bool(args.crop)
        if args.crop:
            from mathutils import Matrix

            lo, hi = args.crop[:3], args.crop[3:]
            box = tools.add_crop_box(obj)
            box.matrix_basis = obj.matrix_basis @ Matrix(tools.box_matrix(lo, hi).tolist())
            bpy.context.view_layer.update()
            settings.crop_box = box
        _activate(obj)
        code, job = _run_job(runner, ops.reextract, args, resolution=args.extract_resolution,
                             target=args.extract_into.upper())
        if code != EXIT_OK:
            return code, obj
        obj = bpy.data.objects.get(job.object_name) or obj
    if args.remove_plane:
        _activate(obj)
        before = len(obj.data.polygons)
        found = "FINISHED" in ops.remove_support_plane()
        if not args.quiet:
            print(f"removed the support plane of '{obj.name}': {before} -> {len(obj.data.polygons)} faces" if found
                  else f"no support plane found under '{obj.name}'; the mesh is unchanged", flush=True)
    if args.keep_largest or args.min_part or args.smooth or args.decimate:
        _activate(obj)
        ops.cleanup_mesh(parts="LARGEST" if args.keep_largest else "SMALL" if args.min_part else "ALL",
                         min_part=args.min_part, smooth=args.smooth, target_faces=args.decimate)
        if not args.quiet:
            print(f"cleaned up '{obj.name}': {len(obj.data.polygons)} faces", flush=True)
    if args.texture_size:
        _activate(obj)
        try:
            ops.bake_texture(size=args.texture_size, target_faces=args.texture_faces)
        except RuntimeError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_ERROR, obj
        obj = bpy.context.view_layer.objects.active
        if not args.quiet:
            print(f"baked a {args.texture_size} px texture onto '{obj.name}' ({len(obj.data.polygons)} faces)",
                  flush=True)
    return EXIT_OK, obj


def run(args: argparse.Namespace) -> int:
    """The whole headless run; returns the exit status."""
    global _EXTENSION_MODULE
    if not bpy.data.filepath:  # Blender's startup scene: its cube, camera and light would hide a small object
        for obj in list(bpy.data.objects):
            bpy.data.objects.remove(obj)
    ext = enable_extension(None if args.use_installed else SOURCE_ROOT, use_installed=args.use_installed)
    _EXTENSION_MODULE = ext.module_name
    runner = sys.modules[ext.module_name + ".client.scene.runner"]
    previous = {}

    def on_signal(signum: int, _frame: Any) -> None:
        print(f"signal {signum}: cancelling (the backend saves its last mesh)", file=sys.stderr, flush=True)
        runner.cancel()

    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, on_signal)
        _configure(ext, args)
        status = bpy.context.window_manager.neusblend_status
        if args.cameras and args.images:
            code = import_cameras(runner, args)
            if code != EXIT_OK:
                return code
        if args.job:
            try:
                bpy.ops.neusblend.load_result(directory=str(Path(args.job).resolve()), object_name=args.object)
            except RuntimeError as exc:
                print(f"error: cannot load the job's mesh: {exc}", file=sys.stderr)
                return EXIT_ERROR
            job_dir = str(Path(args.job).resolve())
            obj = next((o for o in bpy.data.objects if o.get("neusblend_job") == job_dir), None)
            if obj is None:
                print(f"error: no mesh was loaded from {job_dir}", file=sys.stderr)
                return EXIT_ERROR
            summary = f"loaded '{obj.name}' from {job_dir}"
            code = EXIT_OK
        else:
            code, job = _run_job(runner, bpy.ops.neusblend.reconstruct, args)
            if job is None or job.state.status == "failed":
                return code
            obj = bpy.data.objects.get(job.object_name) if job.object_name else None
            summary = f"{job.state.status}: {status.summary} (job folder {job.job_dir})"
        if obj is not None and code == EXIT_OK:
            code, obj = refine(runner, obj, args)
            if code == EXIT_ERROR:
                return code
        for out in args.out:
            path = Path(out).resolve()
            if path.suffix.lower() == ".blend":
                path.parent.mkdir(parents=True, exist_ok=True)
                bpy.ops.wm.save_as_mainfile(filepath=str(path), check_existing=False, copy=True)
            elif obj is not None:
                export_mesh(obj, path)
            else:
                print(f"warning: no mesh to write to {path}", file=sys.stderr)
                continue
            print(f"wrote {path}")
        if args.render and obj is not None:
            render_result(obj, Path(args.render).resolve(), args.render_size, args.render_samples)
            print(f"rendered {Path(args.render).resolve()}")
        print(summary)
        return code
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        ext.disable()


def main(argv: Sequence[str] | None = None) -> int:
    """Parse, check the outputs, run; the exit status is always 0, 2 or 3 (argparse's usage errors are 2 too)."""
    args = parse_args(argv)
    code = check_outputs(args)
    if code != EXIT_OK:
        return code
    try:
        return run(args)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return EXIT_CANCELLED
    except OSError as exc:  # writing an output failed after all (a full disk, a folder removed meanwhile)
        where = f" {exc.filename}" if exc.filename else ""
        print(f"error: cannot write{where}: {exc.strerror or exc}", file=sys.stderr)
        print("hint: free some space or choose another output folder.", file=sys.stderr)
        return EXIT_ERROR
    except Exception as exc:  # noqa: BLE001 - never exit 1 with a bare traceback
        import traceback

        traceback.print_exc(file=sys.stderr)
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        print("hint: if this is not about your input, it is a bug: please report it with the lines above.",
              file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
