"""The project's shell entry points, run for real: scripts/test.sh (what CI runs through .ci/run)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def _project(tmp_path: Path, tests: dict[str, str]) -> Path:
    """A small project with the real scripts/test.sh; its venv.sh points at this Python (already set up) instead of
    installing into .venv."""
    root = tmp_path / "project"
    (root / "scripts").mkdir(parents=True)
    shutil.copy2(ROOT / "scripts" / "test.sh", root / "scripts" / "test.sh")
    (root / "scripts" / "venv.sh").write_text(f'VPY="{sys.executable}"\n')
    (root / "pyproject.toml").write_text('[tool.ruff]\nline-length = 120\n\n'
                                         '[tool.pytest.ini_options]\ntestpaths = ["tests"]\n')
    (root / "tests").mkdir()
    for name, body in tests.items():
        (root / "tests" / name).write_text(textwrap.dedent(body))
    return root


def _run(root: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "NEUSBLEND_"))}
    env["CI"] = "true"  # as .ci/run runs it: no terminal, no stdin, from another folder
    return subprocess.run(["bash", str(root / "scripts" / "test.sh")], cwd=str(root / "tests"), env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)


SLOW = """\
    import time


    def test_one():
        time.sleep(0.3)

    def test_two():
        pass
"""


def test_test_sh_shows_progress_per_file_and_the_slowest_tests(tmp_path: Path) -> None:
    root = _project(tmp_path, {"test_a.py": SLOW, "test_b.py": "def test_three():\n    pass\n"})
    proc = _run(root)
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert "All checks passed" in out  # ruff ran first
    assert re.search(r"^tests/test_a\.py \.\. +\[ *2/ *3\]$", out, re.M), out  # a line per file, with the count
    assert re.search(r"^tests/test_b\.py \. +\[ *3/ *3\]$", out, re.M), out
    assert "slowest 15 durations" in out
    assert re.search(r"0\.[3-9]\d*s call +tests/test_a\.py::test_one", out), out


def test_test_sh_fails_when_a_test_fails(tmp_path: Path) -> None:
    root = _project(tmp_path, {"test_a.py": SLOW, "test_c.py": "def test_broken():\n    assert sum([1]) == 2\n"})
    proc = _run(root)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "FAILED tests/test_c.py::test_broken" in proc.stdout
