"""Running test cases in real Blender (the bpy module), each in a fresh Python with its own Blender user folder.

A test module defines ``case_<name>`` functions and a ``CASES`` dict, and ends with
``if __name__ == "__main__": case_main(CASES)``; its tests call :func:`run_case`, which runs that module as a script
(with ``BLENDER_USER_RESOURCES`` pointing into the test's temporary folder, so no Blender state leaks between
tests) and returns the JSON the case printed. Cases load the extension from this source tree exactly as the headless
script does (:func:`headless`).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEADLESS = ROOT / "scripts" / "reconstruct_headless.py"


def run_case(script: str | Path, case: str, tmp_path: Path, timeout: float = 600, **kwargs: Any) -> dict[str, Any]:
    """Run ``CASES[case](**kwargs)`` of ``script`` in a fresh Python with an isolated Blender user folder and
    temporary folder; fails when the case leaves the headless script's temporary extension repository behind."""
    tmp = tmp_path / "tmp"
    tmp.mkdir(exist_ok=True)
    env = dict(os.environ, BLENDER_USER_RESOURCES=str(tmp_path / "blender-user"), TMPDIR=str(tmp), TEMP=str(tmp),
               TMP=str(tmp))
    proc = subprocess.run([sys.executable, str(script), case, json.dumps(kwargs)], env=env, capture_output=True,
                          text=True, timeout=timeout, cwd=str(tmp_path), stdin=subprocess.DEVNULL)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT:")]
    if proc.returncode != 0 or not lines:
        pytest.fail(f"case {case} failed (exit {proc.returncode})\n--- stdout\n{proc.stdout[-6000:]}\n"
                    f"--- stderr\n{proc.stderr[-6000:]}")
    left = sorted(p.name for p in tmp.glob("neusblend-repo-*"))
    assert not left, f"case {case} left the temporary extension repository {left} behind"
    return json.loads(lines[-1][len("RESULT:"):])


def case_main(cases: dict[str, Callable[..., dict[str, Any]]]) -> None:
    """The script side of :func:`run_case`: run the named case, print its result as ``RESULT:<json>``."""
    import bpy  # noqa: F401 - Blender first, with BLENDER_USER_RESOURCES already set by the test

    try:
        result = cases[sys.argv[1]](**json.loads(sys.argv[2]))
    except BaseException:
        traceback.print_exc()
        sys.exit(1)
    print("RESULT:" + json.dumps(result), flush=True)
    sys.exit(0)


def headless() -> ModuleType:
    """scripts/reconstruct_headless.py as a module (it enables the extension from this source tree)."""
    spec = importlib.util.spec_from_file_location("reconstruct_headless", HEADLESS)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
