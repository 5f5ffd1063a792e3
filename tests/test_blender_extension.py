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
