"""The extension package: Blender's own tool validates and builds it, and Blender installs and removes it.

The build downloads this platform's wheels into vendor/ once (pip download; vendor/*.whl is git-ignored).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "scripts" / "build_extension.py"

pytestmark = [pytest.mark.blender,
              pytest.mark.skipif(importlib.util.find_spec("bpy") is None, reason="needs the bpy module")]


def _build_module():  # noqa: ANN202 - a module
    spec = importlib.util.spec_from_file_location("build_extension", BUILD)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def built_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    proc = subprocess.run([sys.executable, str(BUILD), "--output-dir", str(out)], capture_output=True, text=True,
                          timeout=900)
    if proc.returncode == _build_module().EXIT_DOWNLOAD:
        pytest.skip(f"the wheels could not be downloaded: {proc.stderr.strip()[-300:]}")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    zips = sorted(out.glob("neusblend-*.zip"))
    assert len(zips) == 1, zips
    return zips[0]


def test_manifest_validates_with_blenders_tool() -> None:
    ext = _build_module().find_blender_ext()
    proc = subprocess.run([sys.executable, str(ext), "validate", str(ROOT)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    manifest = tomllib.loads((ROOT / "blender_manifest.toml").read_text())
    assert manifest["blender_version_min"] == "4.2.0" and manifest["type"] == "add-on"
    assert "files" in manifest["permissions"]
    assert len(manifest["tagline"]) < 64 and not manifest["tagline"].endswith(".")


def test_every_platform_has_its_wheels() -> None:
    build = _build_module()
    manifest = tomllib.loads((ROOT / "blender_manifest.toml").read_text())
    for plat in manifest["platforms"]:
        names = [Path(w).name.split("-")[0] for w in manifest["wheels"] if plat in build.wheel_platforms(w)]
        assert sorted(names) == ["pillow", "pycolmap"], (plat, names)
    assert build.wheel_platforms("x-1-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl") == {"linux-x64"}
    assert build.wheel_platforms("x-1-cp311-cp311-macosx_10_9_universal2.whl") == {"macos-x64", "macos-arm64"}


def test_zip_holds_the_extension_and_only_its_platforms_wheels(built_zip: Path) -> None:
    build = _build_module()
    with zipfile.ZipFile(built_zip) as z:
        names = z.namelist()
        manifest = z.read("blender_manifest.toml").decode()
    assert "__init__.py" in names and "backend/protocol.py" in names and "client/scene/runner.py" in names
    assert "operators/reconstruct.py" in names and "panels/sidebar.py" in names
    assert not [n for n in names if n.startswith(("tests/", "scripts/", "bench/", "docs/", ".")) or "__pycache__" in n]
    wheels = [n for n in names if n.endswith(".whl")]
    assert len(wheels) == 2 and all(build.this_platform() in build.wheel_platforms(w) for w in wheels)
    assert f'platforms = ["{build.this_platform()}"]' in manifest


def _tree_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def test_build_writes_less_than_200_mb(built_zip: Path) -> None:
    """The staging folder and the zip together stay small: the project's environment (3 GB) is never copied."""
    stage = ROOT / "build" / "stage" / "neusblend"
    assert stage.is_dir()
    assert not [p for p in stage.iterdir() if p.name in {".venv", "venv", "build", "out", "jobs", ".data", ".git"}]
    total = _tree_size(stage) + built_zip.stat().st_size
    assert total < 200 * 2**20, f"building wrote {total / 2**20:.0f} MiB"


def _make(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_staging_copies_only_what_goes_into_the_zip(tmp_path: Path) -> None:
    """A source tree with an environment, build outputs, caches and links beside the extension: only the
    extension's files are staged (with the manifest's own exclude patterns), and no link is followed."""
    build = _build_module()
    src, outside = tmp_path / "src", tmp_path / "outside"
    keep = {"__init__.py", "blender_manifest.toml", "README.md", "backend/protocol.py", "backend/data/loader.py",
            "client/runner.py", "backend/out/kept.py", "backend/build/kept.py", "requirements-backend.txt"}
    for rel in keep:
        _make(src / rel)
    leave = [".venv/lib/python3.11/site-packages/torch/big.so", ".venv/pyvenv.cfg", "venv/bin/python",
             "build/stage/neusblend/__init__.py", "dist/neusblend.zip", "out/demo/sample.blend", "jobs/a/mesh.ply",
             ".data/x.npz", ".whl/bpy.whl", ".git/HEAD", ".pytest_cache/v", "backend/__pycache__/protocol.pyc",
             "vendor/pycolmap.whl", "tests/test_x.py", "docs/A.md", "scripts/s.py", "bench/b.py",
             "pyproject.toml", "old.zip", "scene.blend1", "backend/.hidden"]
    for rel in leave:
        _make(src / rel)
    _make(outside / "lib" / "huge.bin", b"0" * 4096)
    (src / ".venv" / "lib64").symlink_to(src / ".venv" / "lib", target_is_directory=True)
    (src / "env").symlink_to(outside, target_is_directory=True)  # a linked environment under another name
    (src / "backend" / "linked.py").symlink_to(outside / "lib" / "huge.bin")
    manifest = tomllib.loads((ROOT / "blender_manifest.toml").read_text())
    files, size = build.stage_tree(src, tmp_path / "stage", manifest["build"]["paths_exclude_pattern"])
    staged = {p.relative_to(tmp_path / "stage").as_posix() for p in (tmp_path / "stage").rglob("*") if p.is_file()}
    assert staged == keep
    assert (files, size) == (len(keep), len(keep))


def test_exclude_patterns_follow_the_manifest_rules() -> None:
    excluded = _build_module().exclude_matcher(["/*.zip", "__pycache__/", "*.blend[1-9]", "/docs/", "a/b.py",
                                                "*.log", "!keep.log"])
    assert excluded("x.zip", False) and not excluded("backend/x.zip", False)
    assert excluded("backend/__pycache__", True) and not excluded("backend/__pycache__", False)
    assert excluded("s.blend1", False) and not excluded("s.blend", False)
    assert excluded("docs", True) and not excluded("backend/docs", True)
    assert excluded("a/b.py", False) and not excluded("c/a/b.py", False)
    assert excluded("x/y.log", False) and not excluded("x/keep.log", False)


def _script_tree(tmp_path: Path) -> Path:
    """A copy of the build script beside the real manifest, without wheels (so a build stops at 'missing wheels')."""
    root = tmp_path / "tree"
    _make(root / "scripts" / "build_extension.py", BUILD.read_bytes())
    _make(root / "blender_manifest.toml", (ROOT / "blender_manifest.toml").read_bytes())
    return root


@pytest.mark.skipif(os.name != "posix", reason="the stand-in environment is a shell script")
def test_a_python_without_bpy_runs_the_project_environment(tmp_path: Path) -> None:
    """`python scripts/build_extension.py` with a Python that lacks bpy (here: this one with -S, no site-packages)
    runs itself again with the project's .venv Python, which has bpy."""
    root = _script_tree(tmp_path)
    marker = tmp_path / "venv-python-ran"
    venv_python = _make(root / ".venv" / "bin" / "python",
                        f'#!/bin/sh\ntouch "{marker}"\nexec "{sys.executable}" "$@"\n'.encode())
    venv_python.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in {"BLENDER_EXT", "NEUSBLEND_BUILD_REEXEC"}}
    proc = subprocess.run([sys.executable, "-S", str(root / "scripts" / "build_extension.py"), "--no-download",
                           "--output-dir", str(tmp_path / "dist")], capture_output=True, text=True, timeout=120,
                          env=env)
    assert "has no bpy module" in proc.stderr and f"project's environment, {venv_python}" in proc.stderr, proc.stderr
    assert marker.exists()
    assert "missing wheels" in proc.stderr, proc.stderr  # the second run found blender_ext.py and went on to build
    assert not (tmp_path / "dist").exists() or not list((tmp_path / "dist").iterdir())


def test_a_python_without_bpy_or_environment_says_what_to_do(tmp_path: Path) -> None:
    root = _script_tree(tmp_path)
    env = {k: v for k, v in os.environ.items() if k not in {"BLENDER_EXT", "NEUSBLEND_BUILD_REEXEC"}}
    proc = subprocess.run([sys.executable, "-S", str(root / "scripts" / "build_extension.py")], capture_output=True,
                          text=True, timeout=120, env=env)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "has no bpy module" in proc.stderr and f"{root / '.venv'} does not exist" in proc.stderr
    assert "bash scripts/test.sh" in proc.stderr and "--blender-ext" in proc.stderr
    assert not (root / "build").exists()


INSTALL = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    import bpy

    zip_path = sys.argv[1]
    result = bpy.ops.extensions.package_install_files(filepath=zip_path, repo="user_default",
                                                      enable_on_install=True)
    module = "bl_ext.user_default.neusblend"
    site = Path(bpy.utils.user_resource("EXTENSIONS", path=".local")) / "lib" / \\
        f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    out = {
        "result": sorted(result),
        "enabled": module in bpy.context.preferences.addons,
        "ops": sorted(dir(bpy.ops.neusblend)),
        "panel": hasattr(bpy.types, "VIEW3D_PT_neusblend"),
        "pycolmap": (site / "pycolmap").is_dir(),
        "pil": (site / "PIL").is_dir(),
        "jobs": Path(bpy.utils.extension_path_user(module, path="jobs", create=True)).is_dir(),
    }
    repos = [r.module for r in bpy.context.preferences.extensions.repos]
    result = bpy.ops.extensions.package_uninstall(repo_index=repos.index("user_default"), pkg_id="neusblend")
    out["uninstalled"] = sorted(result)
    out["after_enabled"] = module in bpy.context.preferences.addons
    out["after_panel"] = hasattr(bpy.types, "VIEW3D_PT_neusblend")
    out["after_files"] = (Path(bpy.utils.user_resource("EXTENSIONS")) / "user_default" / "neusblend").exists()
    print("RESULT:" + json.dumps(out))
""")


def test_zip_installs_enables_and_uninstalls(built_zip: Path, tmp_path: Path) -> None:
    env = dict(os.environ, BLENDER_USER_RESOURCES=str(tmp_path / "blender-user"))
    proc = subprocess.run([sys.executable, "-c", INSTALL, str(built_zip)], env=env, capture_output=True, text=True,
                          timeout=300, cwd=str(tmp_path))
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT:")]
    assert proc.returncode == 0 and lines, proc.stdout[-3000:] + proc.stderr[-3000:]
    r = json.loads(lines[-1][len("RESULT:"):])
    assert r["result"] == ["FINISHED"] and r["enabled"] and r["panel"]
    assert {"reconstruct", "estimate_poses", "cancel"} <= set(r["ops"])
    assert r["pycolmap"] and r["pil"], "Blender must install the bundled wheels"
    assert r["jobs"], "the extension's user folder holds the job folders"
    assert r["uninstalled"] == ["FINISHED"] and not r["after_enabled"] and not r["after_panel"]
    assert not r["after_files"]
