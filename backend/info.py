"""``python -m backend info``: what this Python can run (the client uses it to check an interpreter)."""

from __future__ import annotations

import argparse
import importlib.util
import platform
import sys

from . import debug, protocol


def add_arguments(parser: argparse.ArgumentParser) -> None:
    del parser  # no options


def probe() -> dict[str, object]:
    """Versions and capabilities, without failing when something is missing."""
    info: dict[str, object] = {
        "python": sys.version.split()[0],
        "executable": sys.executable,
        "platform": platform.platform(),
    }
    for mod in ("numpy", "torch", "mcubes", "PIL", "pycolmap", "triton", "nerfacc"):
        info[f"has_{mod}"] = importlib.util.find_spec(mod) is not None
    if info["has_torch"]:
        import torch

        info["torch"] = torch.__version__
        info["cuda"] = bool(torch.cuda.is_available())
        if info["cuda"]:
            info["cuda_device"] = torch.cuda.get_device_name(0)
            info["cuda_memory_gb"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    if info["has_pycolmap"]:
        import pycolmap

        info["pycolmap"] = getattr(pycolmap, "__version__", "?")
    info["debug_overrides"] = debug.overrides()  # NEUSBLEND_* switches in effect (backend/debug.py)
    return info


def run(args: argparse.Namespace, emitter: protocol.Emitter) -> int:
    info = probe()
    emitter.emit("start", command="info")
    emitter.emit("done", info=info, ok=bool(info["has_torch"]))
    return protocol.EXIT_OK
