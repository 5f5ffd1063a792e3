"""Fast paths beside the portable reference (see DESIGN.md, "Acceleration").

- :func:`select_path` picks the compute path for a device: ``"triton"`` when Triton imports, the device is CUDA
  and a quick self-check against the reference passes; ``"reference"`` otherwise. It never raises; the reason of
  the choice is in :func:`path_reason` (and logged).
- :func:`start_self_check` runs that self-check in the background ahead of time (training starts it before loading
  the capture).
- :func:`use_fast_path` switches a :class:`~backend.field.NeuSField` (or its encoding) to a path in place; the
  parameters are the same objects, so checkpoints and optimisers are unaffected.

``NEUSBLEND_PATH=reference|triton`` in the environment overrides the automatic choice (a forced ``triton`` still
falls back to the reference, with the reason, when it cannot run).
"""

from __future__ import annotations

import logging
from concurrent.futures import Future, ThreadPoolExecutor

import torch

from .. import debug
from ..field import HashGridConfig, HashGridEncoding

log = logging.getLogger(__name__)

PATHS = ("reference", "triton")
_reason = "no path selected yet"


def triton_available() -> tuple[bool, str]:
    """Whether the Triton kernels import (``(ok, why not)``)."""
    try:
        from . import hashgrid_triton  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - any import failure means: no fast path
        return False, f"triton kernels do not import: {type(exc).__name__}: {exc}"
    return True, ""


class TritonHashGridEncoding(HashGridEncoding):
    """:class:`HashGridEncoding` whose forward (and derivatives, up to the eikonal loss's second order) run in
    Triton kernels. Same parameters and buffers; what the kernels do not take (inputs that are not float32 or on a
    device Triton cannot run on, a table that is not float32, other than 2 features per level) goes through the
    reference.
    """

    def _triton_ok(self, x01: torch.Tensor) -> bool:
        from .hashgrid_triton import runs_kernels

        return (runs_kernels(x01) and self.cfg.n_features == 2 and x01.dtype == torch.float32 and x01.dim() == 2
                and x01.shape[1] == 3 and self.embeddings.device == x01.device
                and self.embeddings.dtype == torch.float32)

    def level_meta(self, device: torch.device):  # noqa: ANN201 - LevelMeta, imported lazily
        """Per-level constants on ``device`` (cached)."""
        from .hashgrid_triton import LevelMeta

        cache = self.__dict__.setdefault("_level_meta_cache", {})
        key = str(device)
        if key not in cache:
            cache[key] = LevelMeta.from_encoding(self, device)
        return cache[key]

    def fused_geometry(self, field: torch.nn.Module, x: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """``field``'s SDF (N,), features (N, F) and SDF gradient (N, 3) at ``x`` (N, 3) as one autograd node
        (:mod:`.fused_geometry`), or None when that path does not take this field or input."""
        from . import fused_geometry

        if not fused_geometry.supports(field, x):
            return None
        return fused_geometry.sdf_with_gradient(field, x)

    def fused_sdf(self, field: torch.nn.Module, x: torch.Tensor) -> torch.Tensor | None:
        """``field``'s SDF (N,) at ``x`` (N, 3) outside autograd in two kernels (:func:`.fused_geometry.sdf_only`),
        or None when that path does not take this field or input."""
        from . import fused_geometry

        return fused_geometry.sdf_only(field, x)

    def fused_color(self, field: torch.nn.Module, x: torch.Tensor, normal: torch.Tensor, view_dir: torch.Tensor,
                    feat: torch.Tensor) -> torch.Tensor | None:
        """``field``'s colour (N, 3) as one autograd node over one Triton kernel each way (:mod:`.fused_color`), or
        None when that path does not take this field or input."""
        from . import fused_color

        return fused_color.color(field, x, normal, view_dir, feat)

    def fused_eikonal(self, grad: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor | None:
        """The eikonal loss's sum (0-dim) over ``grad`` (N, 3) with ``weight`` (N,) or None, in one Triton kernel
        each way (:mod:`.eikonal_triton`), or None when that path does not take these inputs."""
        from . import eikonal_triton

        return eikonal_triton.eikonal_sum(grad, weight)

    def forward(self, x01: torch.Tensor) -> torch.Tensor:
        """Encode positions: (N, 3) in [0, 1]^3 (clamped) -> (N, L * F), zero for inactive levels."""
        if not self._triton_ok(x01):
            return super().forward(x01)
        from .hashgrid_triton import HashGridFunction

        n_active = max(0, min(int(self.active_levels), self.cfg.n_levels))
        return HashGridFunction.apply(x01, self.embeddings, self.level_meta(x01.device), n_active)


def _encoding_of(module: torch.nn.Module) -> HashGridEncoding:
    enc = module if isinstance(module, HashGridEncoding) else getattr(module, "encoding", None)
    if not isinstance(enc, HashGridEncoding):
        raise TypeError(f"{type(module).__name__} is neither a HashGridEncoding nor has one as .encoding")
    return enc


def use_fast_path(field: torch.nn.Module, path: str) -> torch.nn.Module:
    """Switch ``field`` (a NeuSField or a HashGridEncoding) to ``path`` in place and return it.

    ``"triton"`` makes the encoding a :class:`TritonHashGridEncoding` (raises RuntimeError when the kernels do not
    import, ValueError when the level layout is not supported: other than 2 features per level, hashed levels
    whose size is not a power of two); ``"reference"`` makes it a plain :class:`HashGridEncoding`.
    """
    if path not in PATHS:
        raise ValueError(f"unknown compute path {path!r} (one of {', '.join(PATHS)})")
    encodings = _encodings_of(field)
    if path == "reference":
        for enc in encodings:
            enc.__class__ = HashGridEncoding
            enc.__dict__.pop("_level_meta_cache", None)
        return field
    ok, why = triton_available()
    if not ok:
        raise RuntimeError(why)
    from .hashgrid_triton import LevelMeta

    for enc in encodings:
        LevelMeta.from_encoding(enc, enc.embeddings.device)  # validates every layout before switching any
    for enc in encodings:
        enc.__class__ = TritonHashGridEncoding
    return field


def _encodings_of(module: torch.nn.Module) -> list[HashGridEncoding]:
    """The module's hash-grid encodings: its own (or itself) and its background field's, if it has one."""
    out = [_encoding_of(module)]
    bg = getattr(module, "bg_field", None)
    if bg is not None:
        out.append(_encoding_of(bg))
    return out


def current_path(field: torch.nn.Module) -> str:
    """The path the field's encoding runs on."""
    return "triton" if isinstance(_encoding_of(field), TritonHashGridEncoding) else "reference"


def _rel(a: torch.Tensor | None, b: torch.Tensor | None) -> float:
    if a is None or b is None:
        return float("inf")
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def self_check(device: str | torch.device, tol: float = 1e-4, n_points: int = 500, seed: int = 1234) -> str:
    """Compare the Triton path with the reference on a tiny random case; '' when it agrees, else what differs.

    Checks the encoding, its gradients w.r.t. positions and table, and the second-order terms of an eikonal-like
    loss (w.r.t. the table and a linear head on the encoding). 16 levels x 2 features (the kernels the training
    configuration uses, so they are compiled once), a 2^12 table so that both dense and hashed levels occur.
    """
    device = torch.device(device)
    gen = torch.Generator().manual_seed(seed)
    ref = HashGridEncoding(HashGridConfig(n_levels=16, n_features=2, log2_table_size=12, base_resolution=4,
                                          finest_resolution=1024))
    with torch.no_grad():
        ref.embeddings.copy_(torch.randn(ref.embeddings.shape, generator=gen))
    ref = ref.to(device)
    fast = TritonHashGridEncoding(ref.cfg).to(device)
    fast.load_state_dict(ref.state_dict())
    ref.active_levels = fast.active_levels = 13
    x = (torch.rand(n_points, 3, generator=gen) * 1.1 - 0.05).to(device)
    head = (torch.randn(ref.n_output_dims, generator=gen) / 4).to(device)
    u = torch.randn(n_points, 3, generator=gen).to(device)

    def run(enc: HashGridEncoding) -> list[torch.Tensor]:
        xx = x.clone().requires_grad_(True)
        h = head.clone().requires_grad_(True)
        out = enc(xx)
        (gx,) = torch.autograd.grad((out * h).sum(), xx, create_graph=True)
        loss = (gx * u).sum() + (out ** 2).sum() * 1e-2
        gt, gh = torch.autograd.grad(loss, [enc.embeddings, h])
        return [out.detach(), gx.detach(), gt, gh]

    names = ["encoding", "grad_x", "d(eikonal)/d(table)", "d(eikonal)/d(head)"]
    errs = [_rel(a, b) for a, b in zip(run(fast), run(ref))]
    bad = [f"{n}: rel err {e:.2e}" for n, e in zip(names, errs) if not e <= tol]
    return "; ".join(bad)


_early_checks: dict[str, Future] = {}  # self-checks started by start_self_check, by device


def start_self_check(device: str | torch.device) -> None:
    """Start :func:`self_check` for a CUDA ``device`` in a background thread; the next :func:`select_path` for it
    takes that answer instead of checking again. Training starts it before loading the capture, so that the
    kernels load and run while the images decode. Does nothing where :func:`select_path` would not check."""
    dev = torch.device(device)
    if (dev.type != "cuda" or str(dev) in _early_checks or not triton_available()[0]
            or debug.text("NEUSBLEND_PATH") == "reference"):
        return
    from .hashgrid_triton import interpreting

    if interpreting():
        return
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="self-check")
    _early_checks[str(dev)] = pool.submit(self_check, dev)
    pool.shutdown(wait=False)


def select_path(device: str | torch.device, field: torch.nn.Module | None = None) -> str:
    """``"triton"`` or ``"reference"`` for ``device`` (and, if given, ``field``'s encoding layout); never raises.

    See :func:`path_reason` for why.
    """
    global _reason
    try:
        forced = debug.text("NEUSBLEND_PATH")
        if forced == "reference":
            _reason = "NEUSBLEND_PATH=reference"
            return "reference"
        dev = torch.device(device)
        if dev.type != "cuda":
            _reason = f"device {dev.type} (the Triton kernels run on CUDA)"
            return "reference"
        ok, why = triton_available()
        if not ok:
            _reason = why
            log.warning("compute path: reference (%s)", why)
            return "reference"
        from .hashgrid_triton import interpreting

        if interpreting():
            _reason = "TRITON_INTERPRET is set (kernels would run in the slow CPU interpreter)"
            log.warning("compute path: reference (%s)", _reason)
            return "reference"
        if field is not None:
            from .hashgrid_triton import LevelMeta

            try:
                for enc in _encodings_of(field):
                    LevelMeta.from_encoding(enc, dev)
            except ValueError as exc:
                _reason = f"the field's encoding layout is not supported by the kernels: {exc}"
                log.warning("compute path: reference (%s)", _reason)
                return "reference"
        early = _early_checks.pop(str(dev), None)
        bad = early.result() if early is not None else self_check(dev)  # its exception lands below too
        if bad:
            _reason = f"triton self-check failed: {bad}"
            log.warning("compute path: reference (%s)", _reason)
            return "reference"
        _reason = "triton kernels import and agree with the reference" + (" (NEUSBLEND_PATH=triton)" if forced
                                                                             else "")
        return "triton"
    except Exception as exc:  # noqa: BLE001 - the contract is: never raise, fall back
        _reason = f"triton unusable: {type(exc).__name__}: {exc}"
        log.warning("compute path: reference (%s)", _reason)
        return "reference"


def path_reason() -> str:
    """Why the last :func:`select_path` call chose what it chose."""
    return _reason
