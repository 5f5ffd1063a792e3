"""Benchmark scripts (run as ``python bench/NAME.py``); shared helpers."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def shared_data(name: str) -> Path:
    """A capture in the test and benchmark data: ``$NEUSBLEND_DATA/name``, or ``../shared/data/name`` beside the
    project."""
    return Path(os.environ.get("NEUSBLEND_DATA", ROOT.parent / "shared" / "data")) / name
