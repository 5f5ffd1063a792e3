"""Build the extension zips with Blender's own tool, one per platform, with that platform's wheels.

    python scripts/build_extension.py                 # this machine's platform -> dist/neusblend-<ver>-<plat>.zip
    python scripts/build_extension.py --all           # every platform in the manifest
    python scripts/build_extension.py --platform windows-x64 --platform macos-arm64

Steps: download the manifest's wheels for the chosen platforms into ``vendor/`` (``pip download``, exact files;
``vendor/*.whl`` is git-ignored), copy the extension into a staging folder whose manifest lists only those
platforms and wheels, run ``blender_ext.py build --split-platforms`` and then ``blender_ext.py validate`` on every
zip. ``blender_ext.py`` is found inside the installed ``bpy`` wheel (``bpy/<version>/scripts/addons_core/bl_pkg/
cli/blender_ext.py``) or given with ``--blender-ext``; any Python 3.11+ runs it.
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
import tomllib
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MANIFEST = "blender_manifest.toml"
EXIT_DOWNLOAD = 4  # exit status when wheels could not be downloaded
#: Left out of the staging copy (the manifest's [build] excludes more from the zip itself).
STAGE_IGNORE = (".git", "__pycache__", "vendor", "dist", "build", ".ruff_cache", ".pytest_cache", "jobs", "out",
                "tests", "bench", "docs", "*.zip", "*.blend1")

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
    manifest = tomllib.loads(manifest_text)
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
    shutil.copytree(ROOT, stage, ignore=shutil.ignore_patterns(*STAGE_IGNORE))
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
    manifest = tomllib.loads((ROOT / MANIFEST).read_text(encoding="utf-8"))
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
