"""Debug overrides: the one place the backend reads ``NEUSBLEND_*`` environment variables.

Training, extraction and evaluation are configured by presets and ``--set KEY=VALUE`` (:mod:`backend.config`).
These switches are for measuring and debugging the fast path (turn one kernel off, change a block size) and are
not part of a job's settings: nothing here is saved in a checkpoint. Every switch is declared in :data:`SWITCHES`
with its default and what it does; reading an undeclared one is a programming error, and a value outside a
switch's choices is refused with a clear message. ``python -m backend info`` lists the overrides in effect.
Some kernel switches are read when their module is imported (they shape compiled kernels): set them before the
process starts.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .errors import BackendError


@dataclass(frozen=True)
class Switch:
    """One environment override: its default, the values it takes (empty: any integer) and what it does."""

    default: str
    choices: tuple[str, ...]
    help: str


_ON_OFF = ("1", "0")

SWITCHES: dict[str, Switch] = {
    # which path runs
    "NEUSBLEND_PATH": Switch("", ("", "reference", "triton"), "force the reference (PyTorch) or the Triton path "
                             "instead of the automatic choice"),
    "NEUSBLEND_BATCH": Switch("triton", ("triton", "torch"), "build training batches with the PyTorch chain "
                              "instead of the fused Triton kernels"),
    "NEUSBLEND_MARCH": Switch("triton", ("triton", "torch"), "march rays through the occupancy grid with PyTorch "
                              "instead of Triton"),
    "NEUSBLEND_MC": Switch("auto", ("auto", "reference", "fast"), "marching cubes: PyMCubes blocks (reference) or "
                           "PyTorch over surface cells (fast); auto = fast for a field on CUDA"),
    # kernels on or off
    "NEUSBLEND_FUSED_GEOMETRY": Switch("1", _ON_OFF, "the fused hash-grid + geometry network kernels"),
    "NEUSBLEND_FUSED_MLP": Switch("1", _ON_OFF, "the fused one-hidden-layer geometry network"),
    "NEUSBLEND_FUSED_COLOR": Switch("1", _ON_OFF, "the fused colour network"),
    "NEUSBLEND_FUSED_EIKONAL": Switch("1", _ON_OFF, "the fused eikonal sum"),
    "NEUSBLEND_TRITON_ADAM": Switch("1", _ON_OFF, "the multi-tensor Triton Adam update"),
    "NEUSBLEND_MLP_PARTIALS": Switch("1", _ON_OFF, "reduce the network's weight gradients in a second pass "
                                     "(deterministic) instead of with atomics"),
    "NEUSBLEND_WGRAD_TF32": Switch("0", _ON_OFF, "weight gradients as one TF32 product"),
    "NEUSBLEND_HASHGRID_FUSE": Switch("1", _ON_OFF, "fuse the hash-grid backward into the geometry backward"),
    "NEUSBLEND_HASHGRID_VECRED": Switch("1", _ON_OFF, "vector atomic reductions in the hash-grid backward"),
    "NEUSBLEND_HASHGRID_PAIRS": Switch("1", _ON_OFF, "paired corner reductions in the hash-grid backward"),
    "NEUSBLEND_HASHGRID_PAIR_LOADS": Switch("1", _ON_OFF, "paired table loads in the hash-grid forward"),
    "NEUSBLEND_HASHGRID_MODE": Switch("jac", ("jac", "gather"), "hash-grid double backward: keep the Jacobian "
                                      "(jac) or gather from the table again"),
    # kernel shapes (read at import)
    "NEUSBLEND_HASHGRID_BLOCK": Switch("512", (), "points per hash-grid program"),
    "NEUSBLEND_HASHGRID_WARPS": Switch("4", (), "warps per hash-grid program"),
    "NEUSBLEND_HASHGRID_GROUP": Switch("2", (), "hash levels per hash-grid program"),
    "NEUSBLEND_COLOR_TILES": Switch("1", (), "tiles per colour-network program"),
    "NEUSBLEND_COLOR_STAGES": Switch("1", (), "software-pipelining stages of the colour backward"),
    "NEUSBLEND_COLOR_REDUCE": Switch("atomic", ("atomic", "partials"), "how the colour backward reduces weight "
                                     "gradients"),
    "NEUSBLEND_MARCH_RAYS": Switch("32", (), "rays per march program"),
    "NEUSBLEND_MARCH_SEGMENTS": Switch("16", (), "segments per ray in the march (a power of two)"),
    # process plumbing, set by the backend itself
    "NEUSBLEND_POSES_WORKER": Switch("", ("", "1"), "internal: marks the pose step's child process"),
}


def text(name: str) -> str:
    """The switch's value (its default when unset), checked against its choices."""
    sw = SWITCHES[name]  # KeyError: an undeclared switch is a programming error
    value = os.environ.get(name, sw.default).strip()
    if sw.choices and value.lower() not in sw.choices:
        raise BackendError(f"{name}={value!r} is not one of {', '.join(repr(c) for c in sw.choices)}",
                           hint=f"Unset {name} (it is a debug override: {sw.help}) or give one of those values.")
    if not sw.choices:
        try:
            int(value)
        except ValueError:
            raise BackendError(f"{name}={value!r} is not an integer", hint=f"Unset {name} (a debug override: "
                               f"{sw.help}) or give a whole number.") from None
    return value.lower() if sw.choices else value


def on(name: str) -> bool:
    """An on/off switch: True unless it is ``0``."""
    return text(name) != "0"


def number(name: str) -> int:
    """An integer switch."""
    return int(text(name))


def overrides() -> dict[str, str]:
    """The declared switches set in the environment to something other than their default."""
    return {name: os.environ[name] for name, sw in SWITCHES.items()
            if name in os.environ and os.environ[name].strip() != sw.default}
