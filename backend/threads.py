"""How many threads the CPU-side work (image decoding, mask carving, image export) uses."""

from __future__ import annotations

import os


def default_workers() -> int:
    """Threads for work that releases the GIL (Pillow decoding, large numpy reductions): the cores, at most 8."""
    return max(1, min(8, os.cpu_count() or 1))
