"""Runtime backends. Each exposes ``run(ir, vis, k) -> (fused, ids)`` on float32 numpy batches
[B, 1, H, W] in [0, 1] and ``info() -> dict``. Heavy dependencies are imported lazily."""
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
