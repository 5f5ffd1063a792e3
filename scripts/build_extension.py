"""Build the extension zips with Blender's own tool, one per platform, with that platform's wheels.

    python scripts/build_extension.py                 # this machine's platform -> dist/neusblend-<ver>-<plat>.zip
    python scripts/build_extension.py --all           # every platform in the manifest
    python scripts/build_extension.py --platform windows-x64 --platform macos-arm64

Steps: download the manifest's wheels for the chosen platforms into ``vendor/`` (``pip download``, exact files;
``vendor/*.whl`` is git-ignored), copy what goes into the zip into a staging folder (``build/stage/neusblend``)
whose manifest lists only those platforms and wheels, run ``blender_ext.py build --split-platforms`` and then
``blender_ext.py validate`` on every zip. The staging copy applies the manifest's ``[build] paths_exclude_pattern``
(the zip's own filter) while it walks the tree, never enters environments, build outputs, job folders or caches
(``.venv``, ``venv``, ``build``, ``dist``, ``out``, ``jobs``, dot-folders, ``__pycache__``) and skips symbolic
links, as ``blender_ext.py`` does: about 1 MB of files, not the project's 3 GB environment.

``blender_ext.py`` is found inside the installed ``bpy`` wheel (``bpy/<version>/scripts/addons_core/bl_pkg/
cli/blender_ext.py``) or given with ``--blender-ext``; any Python 3.11+ runs it. Run with a Python that lacks
``bpy`` (a plain ``python``), the script runs itself again with the project's environment, ``.venv`` (made by
``scripts/test.sh`` or ``scripts/demo.sh``), when there is one, and otherwise says what to do (exit status 2).
"""

from __future__ import annotations

import argparse
import glob
import importlib.util
import os
import platform
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from fnmatch import fnmatchcase
from pathlib import Path, PurePosixPath
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MANIFEST = "blender_manifest.toml"
EXIT_ERROR = 2  # exit status when this Python cannot build (no bpy, no project environment)
EXIT_DOWNLOAD = 4  # exit status when wheels could not be downloaded
#: Never staged, whatever the manifest says (patterns as in its [build] paths_exclude_pattern): environments, build
#: outputs, job folders, caches, dot-files (``.venv``, ``.git``, ``.data``, ``.whl``, ``.pytest_cache``, ...).
NEVER_STAGE = (".*", "__pycache__/", "*.pyc", "/venv/", "/build/", "/dist/", "/out/", "/jobs/", "/vendor/")
#: Set in the environment when the script runs itself again with the project's Python (so it never loops).
REEXEC_MARK = "NEUSBLEND_BUILD_REEXEC"

_SYSTEMS = {"manylinux": "linux", "musllinux": "linux", "linux": "linux", "win": "windows", "macosx": "macos"}
_MACHINES = {"x86_64": "x64", "amd64": "x64", "aarch64": "arm64", "arm64": "arm64", "universal2": "universal2"}


def this_platform() -> str:
    """Blender's name for this machine's platform (``linux-x64``, ``windows-x64``, ``macos-arm64``)."""
    system = {"darwin": "macos"}.get(platform.system().lower(), platform.system().lower())
    return f"{system}-{_MACHINES.get(platform.machine().lower(), platform.machine().lower())}"


def wheel_platforms(wheel: str) -> set[str]:
    """Blender platforms a wheel file serves, from its platform tag(s)."""
    tags = Path(wheel).name[: -len(".whl")].split("-")[-1]
    out: set[str] = set()
    for tag in tags.split("."):
        if tag == "any":
            return {"any"}
        head, _, tail = tag.partition("_")
        system = next((v for k, v in _SYSTEMS.items() if head == k or (head.startswith(k) and head[len(k):].isdigit())),
                      head)
        machine = next((v for k, v in _MACHINES.items() if tail == k or tail.endswith("_" + k)), tail)
        out |= {f"{system}-x64", f"{system}-arm64"} if machine == "universal2" else {f"{system}-{machine}"}
    return out


def find_blender_ext() -> Path:
    """``blender_ext.py`` from the installed bpy wheel (without importing bpy)."""
    if os.environ.get("BLENDER_EXT"):
        return Path(os.environ["BLENDER_EXT"])
    spec = importlib.util.find_spec("bpy")
    roots = list(spec.submodule_search_locations or []) if spec else []
    if spec and spec.origin and not roots:
        roots = [str(Path(spec.origin).parent)]
    for root in roots:
        hits = sorted(glob.glob(os.path.join(root, "*", "scripts", "addons_core", "bl_pkg", "cli", "blender_ext.py")))
        if hits:
            return Path(hits[-1])
    raise SystemExit("blender_ext.py not found: install the bpy wheel (pip install bpy) or pass --blender-ext")


def _toml(text: str) -> dict[str, Any]:
    import tomllib  # Python 3.11+: imported here so that an older Python still reaches the message of main()

    return tomllib.loads(text)


def project_python(root: Path = ROOT) -> Path | None:
    """The Python of the project's environment (``root/.venv``), if there is one."""
    for rel in (".venv/bin/python", ".venv/Scripts/python.exe"):
        if (root / rel).is_file():
            return root / rel
    return None


def needs_project_python() -> str:
    """Why this Python cannot run Blender's ``blender_ext.py`` from the bpy wheel, or "" when it can."""
    if sys.version_info < (3, 11):  # noqa: UP036 - a plain `python` may be older than the project needs
        return f"Python {sys.version_info[0]}.{sys.version_info[1]} is too old (Blender's tool needs 3.11+)"
    if importlib.util.find_spec("bpy") is None:
        return "it has no bpy module (the bpy wheel brings Blender's blender_ext.py)"
    return ""


def exec_project_python(argv: Sequence[str], why: str) -> int:
    """Run this script again with the project's ``.venv`` Python (replacing this process where the system allows),
    or print what to do; returns the exit status when it cannot."""
    venv = project_python()
    if venv is not None and not os.environ.get(REEXEC_MARK):
        print(f"{sys.executable} cannot build: {why}; running with the project's environment, {venv}",
              file=sys.stderr, flush=True)
        env = dict(os.environ, **{REEXEC_MARK: "1"})
        cmd = [str(venv), str(Path(__file__).resolve()), *argv]
        if os.name == "posix":
            os.execve(cmd[0], cmd, env)
        return subprocess.run(cmd, env=env, check=False).returncode
    print(f"error: {sys.executable} cannot build the extension: {why}.", file=sys.stderr)
    where = f"{venv} lacks it too" if venv is not None else f"{ROOT / '.venv'} does not exist"
    print(f"hint: use the project's environment ({where}): `bash scripts/test.sh` makes it, then run "
          "`.venv/bin/python scripts/build_extension.py`; or `pip install bpy==5.0.1` into a Python 3.11, "
          "or pass --blender-ext PATH/TO/blender_ext.py.", file=sys.stderr)
    return EXIT_ERROR


def exclude_matcher(patterns: Sequence[str]) -> Callable[[str, bool], bool]:
    """A test ``(relative POSIX path, is_dir) -> excluded`` for gitignore-style patterns, the subset Blender's
    manifests use: ``/x`` is anchored at the root (so is a pattern with ``/`` inside), ``x/`` matches folders only,
    ``!x`` takes a path back in, globs (``*``, ``?``, ``[...]``) match within one path component; the last matching
    pattern decides. A folder's exclusion covers everything below it (the walk never enters it)."""
    rules = []
    for raw in patterns:
        pat = raw.strip()
        if not pat or pat.startswith("#"):
            continue
        negate = pat.startswith("!")
        pat = pat[1:] if negate else pat
        dir_only = pat.endswith("/")
        pat = pat.rstrip("/")
        anchored = "/" in pat
        rules.append((negate, dir_only, anchored, pat.lstrip("/").split("/")))

    def excluded(rel: str, is_dir: bool) -> bool:
        parts = PurePosixPath(rel).parts
        out = False
        for negate, dir_only, anchored, pat in rules:
            if dir_only and not is_dir:
                continue
            if anchored:
                hit = len(parts) == len(pat) and all(fnmatchcase(a, b) for a, b in zip(parts, pat, strict=True))
            else:
                hit = len(pat) == 1 and fnmatchcase(parts[-1], pat[0])
            if hit:
                out = not negate
        return out

    return excluded


def stage_tree(src: Path, dest: Path, patterns: Sequence[str] = ()) -> tuple[int, int]:
    """Copy the files of ``src`` that go into the zip to ``dest``: neither what ``patterns`` (the manifest's
    ``paths_exclude_pattern``) nor :data:`NEVER_STAGE` excludes, and no symbolic link (``blender_ext.py`` skips
    them; a linked ``.venv`` is never followed). Returns (files, bytes) copied."""
    excluded = exclude_matcher([*NEVER_STAGE, *patterns])
    files = size = 0
    todo = [""]
    while todo:
        rel_dir = todo.pop()
        with os.scandir(src / rel_dir) as entries:
            for entry in entries:
                rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
                if entry.is_symlink():
                    continue
                is_dir = entry.is_dir(follow_symlinks=False)
                if excluded(rel, is_dir):
                    continue
                if is_dir:
                    todo.append(rel)
                elif entry.is_file(follow_symlinks=False):
                    target = dest / rel
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(entry.path, target)
                    files += 1
                    size += entry.stat(follow_symlinks=False).st_size
    return files, size


class DownloadError(RuntimeError):
    """pip could not fetch a wheel (offline, or the index lacks it)."""


def download_wheels(wheels: Sequence[str], vendor: Path, python: str = sys.executable) -> None:
    """``pip download`` each wheel file named in the manifest that is not in ``vendor`` yet."""
    vendor.mkdir(parents=True, exist_ok=True)
    for rel in wheels:
        target = ROOT / rel
        if target.is_file():
            continue
        name, version, py_tag, abi, plat = Path(rel).name[: -len(".whl")].split("-")[-5:]
        cmd = [python, "-m", "pip", "download", f"{name}=={version}", "--no-deps", "--only-binary=:all:",
               "--implementation", py_tag[:2], "--python-version", py_tag[2:], "--abi", abi, "--dest", str(vendor)]
        for tag in plat.split("."):
            cmd += ["--platform", tag]
        print("$", " ".join(cmd), flush=True)
        if subprocess.run(cmd, check=False).returncode != 0:
            raise DownloadError(f"pip could not download {target.name} (offline?)")
        if not target.is_file():
            got = sorted(p.name for p in vendor.glob(f"{name}-{version}-*.whl"))
            raise DownloadError(f"pip did not fetch {target.name} (got {got}); update the manifest's wheels list")


def _toml_list(key: str, values: Sequence[str]) -> str:
    if len(values) <= 1:
        return f"{key} = [{', '.join(repr_toml(v) for v in values)}]"
    return f"{key} = [\n" + "".join(f"  {repr_toml(v)},\n" for v in values) + "]"


def repr_toml(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def staged_manifest(text: str, platforms: Sequence[str], wheels: Sequence[str]) -> str:
    """The manifest with only the chosen platforms and their wheels."""
    for key, values in (("platforms", platforms), ("wheels", wheels)):
        pattern = re.compile(rf"^{key}\s*=\s*\[.*?\]", re.S | re.M)
        if not pattern.search(text):
            raise SystemExit(f"{MANIFEST} has no {key} list")
        text = pattern.sub(lambda _m, k=key, v=values: _toml_list(k, v), text, count=1)
    return text


def build(platforms: Sequence[str], out_dir: Path, blender_ext: Path, download: bool = True,
          python: str = sys.executable) -> list[Path]:
    """Build and validate one zip per platform; returns their paths."""
    manifest_text = (ROOT / MANIFEST).read_text(encoding="utf-8")
    manifest = _toml(manifest_text)
    unknown = sorted(set(platforms) - set(manifest["platforms"]))
    if unknown:
        raise SystemExit(f"platforms {unknown} are not in the manifest ({manifest['platforms']})")
    wheels = [w for w in manifest.get("wheels", []) if wheel_platforms(w) & ({*platforms, "any"})]
    if download:
        download_wheels(wheels, ROOT / "vendor", python)
    missing = [w for w in wheels if not (ROOT / w).is_file()]
    if missing:
        raise SystemExit(f"missing wheels (run without --no-download): {missing}")

    stage = ROOT / "build" / "stage" / manifest["id"]
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    files, size = stage_tree(ROOT, stage, manifest.get("build", {}).get("paths_exclude_pattern", []))
    print(f"staged {files} files ({size / 2**20:.1f} MiB) in {stage}", flush=True)
    (stage / "vendor").mkdir()
    for w in wheels:
        shutil.copy2(ROOT / w, stage / w)
    (stage / MANIFEST).write_text(staged_manifest(manifest_text, platforms, wheels), encoding="utf-8")

    out_dir.mkdir(parents=True, exist_ok=True)
    version = manifest["version"]
    expected = [out_dir / f"{manifest['id']}-{version}-{p.replace('-', '_')}.zip" for p in platforms]
    for z in expected:
        z.unlink(missing_ok=True)
    run = [python, str(blender_ext)]
    subprocess.run([*run, "validate", str(stage)], check=True)
    subprocess.run([*run, "build", "--source-dir", str(stage), "--output-dir", str(out_dir), "--split-platforms"],
                   check=True)
    for z in expected:
        if not z.is_file():
            raise SystemExit(f"the build did not produce {z}")
        subprocess.run([*run, "validate", str(z)], check=True)
    return expected


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--platform", action="append", default=[], help="Blender platform (repeatable); default: this one")
    p.add_argument("--all", action="store_true", help="every platform in the manifest")
    p.add_argument("--output-dir", type=Path, default=ROOT / "dist")
    p.add_argument("--blender-ext", type=Path, help="path of blender_ext.py (default: from the bpy wheel)")
    p.add_argument("--no-download", action="store_true", help="use the wheels already in vendor/")
    args = p.parse_args(argv)
    why = "" if args.blender_ext or os.environ.get("BLENDER_EXT") else needs_project_python()
    if why:
        return exec_project_python(sys.argv[1:] if argv is None else argv, why)
    manifest = _toml((ROOT / MANIFEST).read_text(encoding="utf-8"))
    platforms = list(manifest["platforms"]) if args.all else (args.platform or [this_platform()])
    try:
        zips = build(platforms, args.output_dir.resolve(), args.blender_ext or find_blender_ext(),
                     download=not args.no_download)
    except DownloadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_DOWNLOAD
    for z in zips:
        print(f"built {z} ({z.stat().st_size / 2**20:.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
