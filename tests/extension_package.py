"""This checkout imported as the extension package, the way Blender imports it (``<package>.client.x`` with the
relative imports resolved), for tests and benchmarks that use the front end's bpy-free modules."""

from __future__ import annotations

import importlib
import sys
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = "neusblend_under_test"


def client(module: str) -> types.ModuleType:
    """``client.<module>`` of this checkout, imported as part of a package (as Blender imports it)."""
    if PKG not in sys.modules:
        pkg = types.ModuleType(PKG)
        pkg.__path__ = [str(ROOT)]
        sys.modules[PKG] = pkg
    return importlib.import_module(f"{PKG}.client.{module}")
