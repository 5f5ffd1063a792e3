"""The commit a benchmark ran on, for the tables in docs/BENCHMARKS.md."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def commit() -> str:
    """``$NEUSBLEND_COMMIT`` when set, else the short commit of HEAD with ``+dirty`` when tracked files differ.

    A copy of the working tree on another machine (the GPU machine) may carry stale git metadata: pass the commit
    from the checkout that sent it, e.g. ``NEUSBLEND_COMMIT=$(git rev-parse --short HEAD)`` expanded locally.
    """
    given = os.environ.get("NEUSBLEND_COMMIT", "").strip()
    if given:
        return given
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
