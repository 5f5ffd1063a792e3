"""pytest plugin (``-p tests.pytest_root`` in pyproject.toml): collect the repository root as a plain folder.

The root is the extension package: its ``__init__.py`` imports bpy and relative modules. pytest would otherwise
collect the root as a package and import that file under the checkout's folder name, which fails when the name is
not an identifier (``ci-check``) and wherever bpy is missing (the GPU machine).
"""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def pytest_collect_directory(path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if path == ROOT:
        return pytest.Dir.from_parent(parent, path=path)
    return None
