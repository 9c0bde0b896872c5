"""Runtime backends. Each exposes ``run(ir, vis, k) -> (fused, ids)`` on float32 numpy batches
[B, 1, H, W] in [0, 1] and ``info() -> dict``. Heavy dependencies are imported lazily.

Backends that can run the model's two halves separately set ``has_halves`` and expose
``run_tokens(ir, vis, k) -> (base [B, C, S, S], ids)``, ``upsample_base(base, (H, W)) -> base_up``
and ``run_render(ir, vis, base_up) -> fused``: the token pathway's base map can then be kept across
calls (video frames reusing a key frame's tokens, tiles of one large image). ``render(ir, vis,
upsample_base(run_tokens(ir, vis, k)[0], (H, W)))`` equals ``run(ir, vis, k)[0]`` up to float rounding."""
from __future__ import annotations

import importlib
from pathlib import Path

# suffix -> (module, class, what must be installed)
REGISTRY = {
    ".safetensors": ("tokfuse_rt.backends.torch_backend", "TorchBackend", "torch"),
    ".onnx": ("tokfuse_rt.backends.ort_backend", "OrtBackend", "onnxruntime"),
    ".plan": ("tokfuse_rt.backends.trt_backend", "TrtBackend", "tensorrt"),
    ".engine": ("tokfuse_rt.backends.trt_backend", "TrtBackend", "tensorrt"),
}


def backend_class(path: Path):
    suffix = path.suffix.lower()
    if suffix not in REGISTRY:
        raise ValueError(
            f"model path {path}: unknown file type {suffix!r}; expected one of {sorted(REGISTRY)}"
        )
    mod_name, cls_name, needs = REGISTRY[suffix]
    try:
        mod = importlib.import_module(mod_name)
    except ModuleNotFoundError as e:
        raise ImportError(f"model path {path}: the {suffix} backend needs {needs}, which is not available ({e})") from None
    return getattr(mod, cls_name)


def upsample_base(base, size):
    """base float32 [B, C, S, S] -> base_up float32 [B, C, H, W] for ``size`` = (H, W): ``TokFuse.upsample_base``
    (bilinear, half-pixel centres), the one definition every backend uses."""
    import numpy as np
    import torch

    from ..model.fusion import TokFuse

    h, w = (int(v) for v in size)
    with torch.inference_mode():
        t = torch.from_numpy(np.ascontiguousarray(base, dtype=np.float32))
        return TokFuse.upsample_base(t, (h, w)).contiguous().numpy()


def token_counts(cfg: dict | None, k_static: int | None, path: Path, missing: str) -> tuple[int, int]:
    """(num_tokens K, default_k) of an exported model: from its tokfuse_rt config when it has one,
    else inferred from the static token dimension of its ``ids`` output (default_k = min(4, K)).

    Raises ValueError naming ``path`` when neither is available (``missing`` says what was looked
    for) or when the two disagree.
    """
    if cfg and cfg.get("num_tokens"):
        n = int(cfg["num_tokens"])
        default_k = int(cfg.get("default_k", min(4, n)))
    elif k_static:                        # a foreign/stripped export: infer what we can
        n = int(k_static)
        default_k = min(4, n)
    else:
        raise ValueError(f"model file {path}: {missing}")
    if k_static and int(k_static) != n:
        raise ValueError(f"model file {path}: ids output has {k_static} tokens but the config says {n}")
    return n, default_k
