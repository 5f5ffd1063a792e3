"""Checkpoints: what a training run saves, and the one safe way to read one back.

A checkpoint (``JOB/checkpoints/last.pt``) holds only tensors and plain data (numbers, strings, booleans, None,
lists and dicts), written with ``torch.save`` and read with ``torch.load(weights_only=True)``: unpickling a
checkpoint can then never run code, whoever made the file. It carries a format marker and version
(:data:`CHECKPOINT_FORMAT`, :data:`CHECKPOINT_VERSION`); anything else (a checkpoint of an earlier version, which
held numpy arrays, a file from another program, a damaged file, a missing key) is refused with a
:class:`~backend.errors.BackendError` that names the file and says what to do, and nothing of it runs.

Contents (:data:`REQUIRED_KEYS`): ``step``, ``config`` (a :class:`~backend.config.TrainConfig` as a dict),
``field`` / ``grid`` (module state dicts: name -> tensor), ``optimizer`` (``state`` and ``param_groups``),
``n_rays``, ``to_world`` (4 x 4 list, normalized frame -> input coordinates), ``roi`` ((2, 3) list or None),
``roi_matrix`` ((4, 4) list or None), ``data`` / ``masks`` (paths or None), ``has_masks``.
torch is imported only inside the functions.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from . import protocol
from .errors import BackendError, io_error

CHECKPOINT_FORMAT = "neusblend-checkpoint"
#: 2: plain data only (lists for matrices), loaded with ``weights_only=True``. 1 (before): numpy arrays inside.
CHECKPOINT_VERSION = 2

REQUIRED_KEYS = ("format", "version", "step", "config", "field", "grid", "optimizer", "n_rays", "to_world", "roi",
                 "roi_matrix", "data", "masks", "has_masks")

_RETRAIN = ("Train again into a new job folder (python -m backend train --data CAPTURE --out NEW_JOB), then "
            "extract or continue from that.")


def plain(value: Any, where: str = "checkpoint") -> Any:
    """``value`` with numpy arrays and scalars turned into lists and Python numbers, paths into strings; raises
    ``TypeError`` for anything that is not a tensor or plain data (it would need pickling to save)."""
    import torch

    if isinstance(value, torch.Tensor) or value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, (str, int)):
                raise TypeError(f"{where}: key {k!r} is neither a string nor an integer")
            out[k] = plain(v, f"{where}.{k}")
        return out
    if isinstance(value, (list, tuple)):
        return [plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    raise TypeError(f"{where}: a {type(value).__name__} cannot go into a checkpoint (tensors and plain data only)")


def checkpoint_bytes(state: Mapping[str, Any]) -> bytes:
    """``state`` (see the module docstring) as checkpoint bytes, with the format marker and version."""
    import torch

    doc = plain(dict(state))
    doc["format"], doc["version"] = CHECKPOINT_FORMAT, CHECKPOINT_VERSION
    missing = [k for k in REQUIRED_KEYS if k not in doc]
    if missing:
        raise ValueError(f"checkpoint state lacks {', '.join(missing)}")
    buf = io.BytesIO()
    torch.save(doc, buf)
    return buf.getvalue()


def save_checkpoint(path: str | os.PathLike[str], state: Mapping[str, Any]) -> Path:
    """Write a checkpoint atomically (a full disk leaves the previous one in place and no temporary file).

    Raises:
        BackendError: the disk is full, the folder is not writable, or an I/O error, naming the file.
    """
    data = checkpoint_bytes(state)
    try:
        return protocol.atomic_write_bytes(path, data)
    except OSError as exc:
        known = io_error(exc, path)
        if known is None:
            raise
        known.message = f"cannot save the checkpoint: {exc.strerror or exc}"
        raise known from exc


def resolve_checkpoint(path: str | os.PathLike[str]) -> Path:
    """A checkpoint file, or a job folder's ``checkpoints/last.pt``; BackendError when there is none."""
    p = Path(path).expanduser()
    if p.is_dir():
        p = protocol.JobLayout(p).last_checkpoint
    if not p.is_file():
        raise BackendError("checkpoint not found", hint="Give the job folder of a training run or its "
                           "checkpoints/last.pt; train first if there is none.", file=p)
    return p


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check a checkpoint without running anything in it.

    Returns:
        the checkpoint dict (see the module docstring), with ``to_world`` as a (4, 4) float64 array and ``roi`` /
        ``roi_matrix`` as (2, 3) / (4, 4) float64 arrays or None.

    Raises:
        BackendError: the file is missing, unreadable, damaged, holds Python objects (an earlier version's or
            another program's checkpoint), lacks keys or has the wrong marker; it names the file.
    """
    import pickle

    import torch

    path = Path(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except OSError as exc:
        raise io_error(exc, path, "read") or BackendError(
            f"cannot read the checkpoint: {exc.strerror or exc}", hint="Check that the file exists and is "
            "readable.", file=path) from exc
    except pickle.UnpicklingError as exc:
        if "weights only" in str(exc).lower():
            raise BackendError(
                "the checkpoint holds Python objects, not only tensors and plain data, so it was not loaded "
                "(loading it could run code)", hint="It comes from an earlier version of NeuS Blend or from "
                "another program; only load checkpoints of your own runs. " + _RETRAIN, file=path) from exc
        raise _damaged(path, exc) from exc
    except Exception as exc:  # noqa: BLE001 - zip, EOF, unpickling errors: a damaged or foreign file
        raise _damaged(path, exc) from exc
    return validate_checkpoint(ckpt, path)


def _damaged(path: Path, exc: BaseException) -> BackendError:
    return BackendError(f"the checkpoint is damaged or not a checkpoint ({type(exc).__name__}: {exc})",
                        hint="It may have been cut short by a full disk or a copy that did not finish. " + _RETRAIN,
                        file=path)


def _matrix(value: Any, shape: tuple[int, int], key: str, path: Path) -> np.ndarray:
    try:
        m = np.asarray(value.tolist() if hasattr(value, "tolist") else value, dtype=np.float64)
    except (TypeError, ValueError):
        m = np.zeros(0)
    if m.shape != shape or not np.all(np.isfinite(m)):
        raise BackendError(f"the checkpoint's {key} is not a finite {shape[0]}x{shape[1]} matrix",
                           hint="The file is damaged or not ours. " + _RETRAIN, file=path)
    return m


def validate_checkpoint(ckpt: Any, path: str | os.PathLike[str]) -> dict[str, Any]:
    """Check a loaded checkpoint's marker, version, keys and types (see :func:`load_checkpoint`)."""
    import torch

    path = Path(path)
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise BackendError("the file is not a NeuS Blend checkpoint (it lacks the format marker)",
                           hint="Give the checkpoints/last.pt of one of your own training runs. " + _RETRAIN,
                           file=path)
    version = ckpt.get("version")
    if not isinstance(version, int) or version > CHECKPOINT_VERSION:
        raise BackendError(f"the checkpoint has version {version!r}; this backend reads version "
                           f"{CHECKPOINT_VERSION}", hint="It was made by a newer NeuS Blend: update the add-on, "
                           "or " + _RETRAIN[0].lower() + _RETRAIN[1:], file=path)
    if version < CHECKPOINT_VERSION:
        raise BackendError(f"the checkpoint has the old version {version}", hint=_RETRAIN, file=path)
    missing = [k for k in REQUIRED_KEYS if k not in ckpt]
    if missing:
        raise BackendError(f"the checkpoint is incomplete: it lacks {', '.join(missing)}",
                           hint="The file is damaged or was written by another program. " + _RETRAIN, file=path)
    checks = {
        "step": isinstance(ckpt["step"], int) and not isinstance(ckpt["step"], bool) and ckpt["step"] >= 0,
        "n_rays": isinstance(ckpt["n_rays"], int) and ckpt["n_rays"] > 0,
        "config": isinstance(ckpt["config"], dict),
        "field": isinstance(ckpt["field"], dict) and all(isinstance(v, torch.Tensor) for v in ckpt["field"].values()),
        "grid": isinstance(ckpt["grid"], dict) and all(isinstance(v, torch.Tensor) for v in ckpt["grid"].values()),
        "optimizer": isinstance(ckpt["optimizer"], dict) and {"state", "param_groups"} <= set(ckpt["optimizer"]),
        "data": ckpt["data"] is None or isinstance(ckpt["data"], str),
        "masks": ckpt["masks"] is None or isinstance(ckpt["masks"], str),
        "has_masks": isinstance(ckpt["has_masks"], bool),
    }
    bad = [k for k, ok in checks.items() if not ok]
    if bad:
        raise BackendError(f"the checkpoint's {', '.join(bad)} {'is' if len(bad) == 1 else 'are'} not what a "
                           "checkpoint holds", hint="The file is damaged or not ours. " + _RETRAIN, file=path)
    out = dict(ckpt)
    out["to_world"] = _matrix(ckpt["to_world"], (4, 4), "to_world", path)
    out["roi"] = None if ckpt["roi"] is None else _matrix(ckpt["roi"], (2, 3), "roi", path)
    out["roi_matrix"] = None if ckpt["roi_matrix"] is None else _matrix(ckpt["roi_matrix"], (4, 4), "roi_matrix",
                                                                        path)
    return out


def load_module_state(module: Any, state: Mapping[str, Any], what: str, path: str | os.PathLike[str]) -> None:
    """``module.load_state_dict(state)``; a checkpoint whose tensors do not fit the network its own settings build
    is a BackendError naming the file, not a crash."""
    try:
        module.load_state_dict(state)
    except (RuntimeError, KeyError, ValueError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise BackendError(f"the checkpoint's {what} does not fit the network its settings describe ({first})",
                           hint="The file is damaged or was edited. " + _RETRAIN, file=path) from exc


def resolve_device(name: str) -> str:
    """``auto`` -> ``cuda`` when torch sees a GPU, else ``cpu``; ``cuda`` without one is a BackendError."""
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise BackendError("--device cuda was asked for, but this torch has no CUDA device",
                           hint="Use --device cpu, or point the add-on at a Python whose torch sees a GPU.")
    return name


def field_from_checkpoint(ckpt: dict[str, Any], device: Any, source: str | os.PathLike[str] | None = None
                          ) -> tuple[Any, Any]:
    """The :class:`~backend.field.NeuSField` a checkpoint (read by :func:`load_checkpoint`) holds, on ``device``
    with the fastest path it supports, and its :class:`~backend.config.TrainConfig`; ``source``, the checkpoint's
    file, is named in errors."""
    from .config import TrainConfig
    from .field import FieldConfig, NeuSField
    from .kernels import select_path, use_fast_path

    where = source or "checkpoint"
    cfg = TrainConfig.from_dict(ckpt["config"], source=str(where))
    field = NeuSField(FieldConfig.from_train(cfg, bool(ckpt.get("has_masks"))))
    load_module_state(field, ckpt["field"], "network", where)
    field.encoding.active_levels = cfg.n_levels
    field = field.to(device)
    path = select_path(device, field)
    if path != "reference":
        use_fast_path(field, path)
    return field, cfg


def grid_from_checkpoint(ckpt: dict[str, Any], cfg: Any, device: Any, source: str | os.PathLike[str]) -> Any:
    """The checkpoint's :class:`~backend.render.OccupancyGrid` (``cfg``: its TrainConfig) on ``device``."""
    from .render import OccupancyGrid

    grid = OccupancyGrid(cfg.grid_resolution, cfg.grid_threshold)
    load_module_state(grid, ckpt["grid"], "occupancy grid", source)
    return grid.to(device)
