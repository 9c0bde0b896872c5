"""Shared fixtures and capability markers. Capabilities are decided by what is importable/built,
evaluated at collection time (never at import time of the package)."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest


def pytest_configure(config):
    """Without a GPU, Triton kernels run under its CPU interpreter (exact, slow). Triton fixes its
    mode when first imported, so decide before any test module imports it."""
    if "TRITON_INTERPRET" not in os.environ:
        import torch

        if not torch.cuda.is_available():
            os.environ["TRITON_INTERPRET"] = "1"


sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))  # workspace helpers (not the package)
from workspace import find_shared_data

SHARED_DATA = find_shared_data(start=Path(__file__))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if SHARED_DATA is None:
        pytest.skip("shared/data not found beside the repository (set TOKFUSE_SHARED)")
    return SHARED_DATA


def _has(mod: str) -> bool:
    return importlib.util.find_spec(mod) is not None


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _cuda_ext() -> bool:
    try:
        from tokfuse_rt import _C
    except ImportError:
        return False
    return bool(_C.has_cuda()) and _cuda()


_CAPS = {
    "requires_cuda": (_cuda, "needs a CUDA GPU visible to torch (none here)"),
    "requires_trt": (lambda: _has("tensorrt") and _cuda(), "needs TensorRT and a CUDA GPU"),
    "requires_cuda_ext": (_cuda_ext, "needs tokfuse_rt._C built with CUDA and a CUDA GPU"),
    "requires_triton": (lambda: _has("triton"), "needs triton (pip install triton)"),
    "requires_ort": (lambda: _has("onnxruntime"), "needs onnxruntime"),
}


# Modules whose tests start Ray, a browser, an ONNX export, FFmpeg pipelines or subprocess builds (each
# test seconds to tens of seconds on 2 cores): marked slow, so `make test-fast` (-m "not slow and not
# sweep") stays a quick loop; `make test` runs everything.
SLOW_MODULES = {
    "test_ray_batch",
    "test_serve",
    "test_web",
    "test_rig_paths",
    "test_int8",
    "test_export_onnx",
    "test_backend_halves",
    "test_trt",
    "test_gpu_check",
    "test_video",
    "test_video_bad_inputs",
    "test_packaging",
}


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(session, config, items):
    """Mark the tests of SLOW_MODULES slow (before -m selects); skip what this machine cannot run."""
    for item in items:
        if item.module is not None and item.module.__name__.rsplit(".", 1)[-1] in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)
    _skip_by_capability(config, items)


def _skip_by_capability(config, items):
    cache: dict = {}
    for item in items:
        for name, (probe, why) in _CAPS.items():
            if item.get_closest_marker(name) is None:
                continue
            if name not in cache:
                cache[name] = probe()
            if not cache[name]:
                item.add_marker(pytest.mark.skip(reason=f"{name}: {why}"))


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory) -> Path:
    """A small, seeded, untrained TokFuse checkpoint for fast API tests (not for quality)."""
    import torch

    from tokfuse_rt.model import TokFuse, save_checkpoint

    from tiny_model import tiny_config

    torch.manual_seed(0)
    cfg = tiny_config()
    m = TokFuse(cfg).eval()
    with torch.no_grad():  # non-trivial head so outputs depend on both inputs
        m.head.conv2.weight.normal_(0, 0.1)
    return save_checkpoint(m, tmp_path_factory.mktemp("ckpt") / "tiny.safetensors")


@pytest.fixture(scope="session")
def tiny_onnx(tiny_ckpt, tmp_path_factory) -> Path:
    """``tiny_ckpt`` exported once per session with ``python -m export.to_onnx`` (in-process)."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    from export.to_onnx import main

    out = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    assert main([str(tiny_ckpt), "-o", str(out), "--no-verify"]) == 0
    return out


def _nan_fused(src, dst):
    """Copy of ONNX graph ``src`` whose output 'fused' is multiplied by NaN (metadata kept)."""
    import onnx
    from onnx import TensorProto, helper

    m = onnx.load(str(src))
    for n in m.graph.node:
        n.output[:] = ["fused_raw" if o == "fused" else o for o in n.output]
    m.graph.initializer.append(helper.make_tensor("nan_c", TensorProto.FLOAT, [], [float("nan")]))
    m.graph.node.append(helper.make_node("Mul", ["fused_raw", "nan_c"], ["fused"]))
    onnx.save(m, str(dst))
    return dst


@pytest.fixture(scope="session")
def nan_onnx(tiny_onnx, tmp_path_factory):
    """The tiny session model exported to ONNX with its halves, its model and render graphs giving
    NaN: video and stream reuse the token pathway through the halves."""
    import shutil

    from tokfuse_rt.onnx_contract import half_paths

    d = tmp_path_factory.mktemp("nan")
    out = d / "nan.onnx"
    _nan_fused(tiny_onnx, out)
    src, dst = half_paths(tiny_onnx), half_paths(out)
    shutil.copy(src["tokens"], dst["tokens"])
    _nan_fused(src["render"], dst["render"])
    from tokfuse_rt import Engine

    with Engine(out) as eng:
        assert eng.info()["halves"] == "tokens+render"
    return out


@pytest.fixture(scope="module")
def engines(tiny_ckpt, tiny_onnx):
    """(PyTorch Engine of ``tiny_ckpt``, ONNX Runtime Engine of ``tiny_onnx``), one thread each: tiny graphs
    gain nothing from two, and CI shares its cores with other jobs."""
    import torch

    from tokfuse_rt import Engine

    old = torch.get_num_threads()
    with Engine(tiny_ckpt, device="cpu", threads=1) as pt, Engine(tiny_onnx, threads=1) as ox:
        yield pt, ox
    torch.set_num_threads(old)


def _png_header_only(path, w, h):
    """A PNG whose IHDR claims w x h (8-bit gray) followed by a tiny IDAT: decoding it would fail."""
    import struct
    import zlib

    def chunk(t, data):
        return struct.pack(">I", len(data)) + t + data + struct.pack(">I", zlib.crc32(t + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")
    )
    return path


@pytest.fixture(scope="session")
def png_header_only():
    """``png_header_only(path, w, h)`` writes a PNG header claiming w x h pixels (a decompression bomb)."""
    return _png_header_only
