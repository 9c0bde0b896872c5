"""Runtime backends. Each exposes ``run(ir, vis, k) -> (fused, ids)`` on float32 numpy batches
[B, 1, H, W] in [0, 1] and ``info() -> dict``. Heavy dependencies are imported lazily.

Backends that can run the model's two halves separately set ``has_halves`` and expose
``run_tokens(ir, vis, k) -> (base [B, C, S, S], ids)``, ``upsample_base(base, (H, W)) -> base_up``
and ``run_render(ir, vis, base_up) -> fused``, plus ``token_size`` (S), ``render_halo`` and
``render_align``: the token pathway's base map can then be kept across calls (video frames reusing a
key frame's tokens) or shared by the tiles of one large image (``tokfuse_rt.tiling``).
``render(ir, vis, upsample_base(run_tokens(ir, vis, k)[0], (H, W)))`` equals ``run(ir, vis, k)[0]``
up to float rounding."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Backend(Protocol):
    """What every backend implements (the Engine's runner, ``tokfuse_rt.runner.Runner``, calls nothing else).

    ``run``: float32 numpy ir, vis [B, 1, H, W] in [0, 1], ``k`` edited tokens -> (fused float32 [B, 1, H, W],
    ids int64 [B, K]). ``has_halves`` says whether the two halves below run separately (``halves_note``:
    why not, when known)."""

    name: str
    num_tokens: int
    default_k: int
    has_halves: bool

    def run(self, ir: np.ndarray, vis: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]: ...

    def info(self) -> dict: ...

    def close(self) -> None: ...


@runtime_checkable
class HalvesBackend(Backend, Protocol):
    """A backend that also runs the model's halves (video token reuse, tiles): ``run_tokens`` -> (base map
    float32 [B, C, S, S], ids [B, K]); ``upsample_base(base, (H, W))`` -> base_up [B, C, H, W];
    ``run_render(ir, vis, base_up)`` -> fused [B, 1, H, W]. ``token_size`` is S; an output pixel of the
    render depends only on inputs within ``render_halo`` pixels, for windows whose offset is a multiple of
    ``render_align``."""

    token_size: int
    render_halo: int
    render_align: int

    def run_tokens(self, ir: np.ndarray, vis: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]: ...

    def upsample_base(self, base: np.ndarray, size) -> np.ndarray: ...

    def run_render(self, ir: np.ndarray, vis: np.ndarray, base_up: np.ndarray) -> np.ndarray: ...


# suffix -> (module, class, what must be installed)
REGISTRY = {
    ".safetensors": ("tokfuse_rt.backends.torch_backend", "TorchBackend", "torch"),
    ".onnx": ("tokfuse_rt.backends.ort_backend", "OrtBackend", "onnxruntime"),
    ".plan": ("tokfuse_rt.backends.trt_backend", "TrtBackend", "tensorrt"),
    ".engine": ("tokfuse_rt.backends.trt_backend", "TrtBackend", "tensorrt"),
}


# backend name -> (module, class, the model files it runs); "auto" picks by file suffix (REGISTRY)
NAMED = {
    "pytorch": ("tokfuse_rt.backends.torch_backend", "TorchBackend", (".safetensors",)),
    "native": ("tokfuse_rt.backends.native_backend", "NativeBackend", (".safetensors",)),
    "native-int8": ("tokfuse_rt.backends.native_backend", "NativeInt8Backend", (".safetensors",)),
    "onnxruntime": ("tokfuse_rt.backends.ort_backend", "OrtBackend", (".onnx",)),
    "tensorrt": ("tokfuse_rt.backends.trt_backend", "TrtBackend", (".plan", ".engine")),
}
BACKEND_NAMES = ("auto", *NAMED)


def backend_class(path: Path, backend: str = "auto"):
    """The backend class for model file ``path``: by its suffix (``backend="auto"``), or the named
    backend (:data:`NAMED`), which must run that kind of file."""
    suffix = path.suffix.lower()
    if backend not in BACKEND_NAMES:
        raise ValueError(f"backend must be one of {BACKEND_NAMES}, got {backend!r}")
    if backend != "auto":
        mod_name, cls_name, suffixes = NAMED[backend]
        if suffix not in suffixes:
            raise ValueError(
                f"model path {path}: the {backend} backend runs {' / '.join(suffixes)} files, not {suffix!r}"
            )
        needs = "the compiled extension tokfuse_rt._C" if backend == "native" else REGISTRY[suffix][2]
    elif suffix not in REGISTRY:
        raise ValueError(f"model path {path}: unknown file type {suffix!r}; expected one of {sorted(REGISTRY)}")
    else:
        mod_name, cls_name, needs = REGISTRY[suffix]
    try:
        mod = importlib.import_module(mod_name)
    except ModuleNotFoundError as e:
        raise ImportError(
            f"model path {path}: the {suffix} backend needs {needs}, which is not available ({e})"
        ) from None
    return getattr(mod, cls_name)


def upsample_base(base, size):
    """base float32 [B, C, S, S] -> base_up float32 [B, C, H, W] for ``size`` = (H, W), the one definition every
    backend uses: channel 0 (the base map) by ``TokFuse.upsample_base`` (bilinear, half-pixel centres); the
    other channels of a "tone"/"layers" base (C = 5: the tone, constant over the map) are filled with their
    value, as the whole model broadcasts them (bilinear weights summing to 1 in float32 would move a constant
    by up to an ulp, and cost four full-size interpolations)."""
    import numpy as np
    import torch

    from ..model.fusion import TokFuse

    h, w = (int(v) for v in size)
    base = np.ascontiguousarray(base, dtype=np.float32)
    n = 1 if base.shape[1] == 5 else base.shape[1]  # channels interpolated
    out = np.empty((base.shape[0], base.shape[1], h, w), np.float32)
    with torch.inference_mode():
        out[:, :n] = TokFuse.upsample_base(torch.from_numpy(base[:, :n]), (h, w)).numpy()
    for b in range(base.shape[0]):
        for c in range(n, base.shape[1]):
            out[b, c].fill(base[b, c, 0, 0])
    return out


def token_counts(cfg: dict | None, k_static: int | None, path: Path, missing: str) -> tuple[int, int]:
    """(num_tokens K, default_k) of an exported model: from its tokfuse_rt config when it has one,
    else inferred from the static token dimension of its ``ids`` output (default_k = min(4, K)).

    Raises ValueError naming ``path`` when neither is available (``missing`` says what was looked
    for) or when the two disagree.
    """
    if cfg and cfg.get("num_tokens"):
        n = int(cfg["num_tokens"])
        default_k = int(cfg.get("default_k", min(4, n)))
    elif k_static:  # a foreign/stripped export: infer what we can
        n = int(k_static)
        default_k = min(4, n)
    else:
        raise ValueError(f"model file {path}: {missing}")
    if k_static and int(k_static) != n:
        raise ValueError(f"model file {path}: ids output has {k_static} tokens but the config says {n}")
    return n, default_k


class ModelOutputError(RuntimeError):
    """A model returned what no tokfuse_rt model returns: a wrong shape, NaN/inf, token ids out of range."""


class BackendError(RuntimeError):
    """A backend failed while running a model (the message names the model and the input size)."""


class OutputGuard:
    """Checks every backend output before it is used, so a foreign or broken model file gives a clear
    error naming it instead of a black or garbage image."""

    def __init__(self, path, num_tokens: int, codebook_size: int | None = None):
        self.path, self.num_tokens, self.codebook_size = Path(path), int(num_tokens), codebook_size

    def _fail(self, what: str):
        raise ModelOutputError(f"model file {self.path}: {what} (a foreign or broken model?)")

    def fused(self, f, shape) -> None:
        if not isinstance(f, np.ndarray) or not np.issubdtype(f.dtype, np.floating):
            self._fail(f"output 'fused' is {type(f).__name__} {getattr(f, 'dtype', '')}, expected float")
        if tuple(f.shape) != tuple(shape):
            self._fail(f"output 'fused' has shape {tuple(f.shape)}, expected {tuple(shape)}")
        if not np.isfinite(f).all():
            self._fail("output 'fused' contains NaN or inf")

    def ids(self, ids, batch: int) -> None:
        ids = np.asarray(ids)
        if ids.shape != (batch, self.num_tokens) or not np.issubdtype(ids.dtype, np.integer):
            self._fail(f"output 'ids' is {ids.dtype} {ids.shape}, expected integers ({batch}, {self.num_tokens})")
        if ids.size and (ids.min() < 0 or (self.codebook_size and ids.max() >= self.codebook_size)):
            self._fail(f"output 'ids' holds token ids out of range ({ids.min()}..{ids.max()})")

    def base(self, b) -> None:
        if not isinstance(b, np.ndarray) or b.ndim != 4 or not np.isfinite(b).all():
            self._fail(f"the token pathway's base map is {getattr(b, 'shape', type(b).__name__)} or not finite")
