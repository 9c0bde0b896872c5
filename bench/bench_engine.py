"""Engine speed and memory, backends side by side.

    pytest bench/bench_engine.py --benchmark-only

Groups ``engine-640x480`` and ``engine-1280x1024``: one real MSRS test pair (640×480, colour visible;
resized to 1280×1024 for the second group), ``Engine.fuse`` on numpy uint8 arrays (decode excluded; colour
conversion, model and uint8 output included), default model, 2 threads. Backends: PyTorch, the native
backend (PyTorch token pathway + the fused C++ render) in float32 and int8 (``native-int8``: the bundled
ranges, calibrated on train/), ONNX Runtime float32 and ONNX Runtime int8 (``export.to_onnx --int8``,
calibrated on train/), plus the CUDA cases where a GPU is present, and the public MMDRFuse student beside
them (``TOKFUSE_MMDRFUSE=DIR``, see ``bench/peers.py``). ``extra_info``: ms and pairs/s (median), and
GFLOP/s = the render half's convolution FLOPs per pair (2 × multiply-adds of DetailNet and HeadConvs at full
resolution, from the model config: :func:`render_gflop`) / median time -- the full-resolution work, which
dominates. In the 640×480 group each backend also runs once, in a fresh subprocess, on the pair resized to
1280×1024 and reports its peak RSS (VmHWM of /proc/self/status; ru_maxrss is recorded too but can carry the
forking parent's size across exec), which must stay <= 1 GiB.

Targets on the project's 2-core CPU: ONNX Runtime <= 100 ms, PyTorch <= 200 ms median per pair. They
are recorded in ``extra_info`` (``target_ms``, ``meets_target``); set ``TOKFUSE_BENCH_STRICT=1`` to
assert them too (timings on a shared machine are noisy, RSS is always asserted).
``TOKFUSE_BENCH_MODEL`` overrides the checkpoint (default: the bundled model).
``TOKFUSE_BENCH_BASELINE=CKPT`` adds the CPU cases of a second checkpoint (e.g. an earlier default
model) to the same run, each case right after its counterpart, for a side-by-side ratio: ids
``*-baseline``, its name in ``extra_info["model"]``.
``TOKFUSE_BENCH_ONNX`` / ``TOKFUSE_BENCH_ONNX_INT8``: use these exported graphs instead of exporting
the checkpoint in the run (float32 / ``--int8``; their halves beside them).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SIZES = {"640x480": (640, 480), "1280x1024": (1280, 1024)}
THREADS = 2
ROUNDS = int(os.environ.get("TOKFUSE_BENCH_ROUNDS", "20"))
RSS_LIMIT_MIB = 1024
TARGET_MS = {("onnxruntime", "cpu"): 100.0, ("pytorch", "cpu"): 200.0}
STRICT = os.environ.get("TOKFUSE_BENCH_STRICT", "") not in ("", "0")


def _model() -> Path:
    from tokfuse_rt.engine import DEFAULT_MODEL

    return Path(os.environ.get("TOKFUSE_BENCH_MODEL") or DEFAULT_MODEL)


def _shared_data() -> Path | None:
    from workspace import find_shared_data

    return find_shared_data(start=ROOT)


def _has(mod: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(mod) is not None


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


@pytest.fixture(scope="module")
def pair_paths():
    data = _shared_data()
    if data is None:
        pytest.skip("shared/data not found beside the repository (set TOKFUSE_SHARED)")
    from tokfuse_rt.pairing import pair_set

    first = pair_set(data / "test" / "MSRS").pairs[0]
    return first.ir, first.vis


@pytest.fixture(scope="module")
def pair(pair_paths):
    from tokfuse_rt.imageio import load_image

    ir, vis = (load_image(p, n) for p, n in zip(pair_paths, ("ir", "vis")))
    assert ir.shape[:2] == (480, 640), f"expected a 640x480 MSRS pair, got {ir.shape}"
    return ir, vis


@pytest.fixture(scope="module")
def ckpt():
    m = _model()
    if not m.is_file():
        pytest.skip(f"model checkpoint {m} not present (train it or set TOKFUSE_BENCH_MODEL)")
    return m


@pytest.fixture(scope="module")
def baseline_ckpt():
    m = os.environ.get("TOKFUSE_BENCH_BASELINE")
    if not m:
        pytest.skip("no baseline model (set TOKFUSE_BENCH_BASELINE=CKPT)")
    if not Path(m).is_file():
        pytest.fail(f"TOKFUSE_BENCH_BASELINE={m}: no such file")
    return Path(m)


def _export(ckpt: Path, tmp_path_factory, **kw) -> Path:
    for mod in ("onnx", "onnxscript", "onnxruntime"):
        if not _has(mod):
            pytest.skip(f"ONNX Runtime benchmark needs {mod}")
    from export.to_onnx import export_onnx

    out = tmp_path_factory.mktemp("bench_onnx") / (ckpt.stem + (".int8" if kw.get("int8") else "") + ".onnx")
    export_onnx(ckpt, out, verify=False, **kw)
    return out


@pytest.fixture(scope="module")
def onnx_model(ckpt, tmp_path_factory):
    given = os.environ.get("TOKFUSE_BENCH_ONNX")
    return Path(given) if given else _export(ckpt, tmp_path_factory)


@pytest.fixture(scope="module")
def onnx_int8(ckpt, tmp_path_factory):
    given = os.environ.get("TOKFUSE_BENCH_ONNX_INT8")
    if given:
        return Path(given)
    data = _shared_data()
    if data is None:
        pytest.skip("int8 calibration needs shared/data/train")
    return _export(ckpt, tmp_path_factory, int8=True, calib=data / "train")


def render_gflop(cfg, h: int, w: int) -> float:
    """GFLOP (2 per multiply-add) of the render half's convolutions for one h×w pair: DetailNet's
    3×3 2->C and C->C, HeadConvs' 3×3 (C+3)->Ch and 1×1 Ch->2."""
    c, ch = int(cfg["detail_channels"]), int(cfg["head_channels"])
    macs = 9 * 2 * c + 9 * c * c + 9 * (c + 3) * ch + ch * 2
    return 2 * macs * h * w / 1e9


@pytest.fixture(scope="module")
def baseline_onnx(baseline_ckpt, tmp_path_factory):
    return _export(baseline_ckpt, tmp_path_factory)


@pytest.fixture(scope="module")
def trt_plan(onnx_model, tmp_path_factory):
    from export.to_trt import build_engine, onnx_config, tensorrt_available

    ok, why = tensorrt_available()
    if not ok:
        pytest.skip(why)
    plan = tmp_path_factory.mktemp("bench_trt") / (onnx_model.stem + ".plan")
    build_engine(onnx_model, plan, (1, 1, 16, 16), (1, 1, 480, 640), (1, 1, 1024, 1280), config=onnx_config(onnx_model))
    return plan


_RSS_SCRIPT = textwrap.dedent("""
    import json, resource, sys
    import numpy as np
    from PIL import Image
    from tokfuse_rt import Engine
    from tokfuse_rt.imageio import load_image
    model, backend, device, threads, ir_p, vis_p, w, h = sys.argv[1:]
    w, h = int(w), int(h)
    ir = np.asarray(Image.fromarray(load_image(ir_p, "ir")).resize((w, h), Image.BILINEAR))
    vis = np.asarray(Image.fromarray(load_image(vis_p, "vis")).resize((w, h), Image.BILINEAR))
    with Engine(model, device=device, threads=int(threads), backend=backend) as eng:
        out = eng.fuse(ir, vis)
        backend = eng.info()["backend"]
    assert out.shape[:2] == (h, w), out.shape
    try:
        hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
    except (OSError, StopIteration):
        hwm = 0
    print(json.dumps({"backend": backend, "vmhwm_kib": hwm,
                      "ru_maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
""")


def peak_rss(model: Path, device: str, pair_paths, size=(1280, 1024), backend: str = "auto") -> dict:
    """Fuse one pair of ``size`` in a fresh interpreter; return its peak resident memory."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run(
        [
            sys.executable,
            "-c",
            _RSS_SCRIPT,
            str(model),
            backend,
            device,
            str(THREADS),
            str(pair_paths[0]),
            str(pair_paths[1]),
            str(size[0]),
            str(size[1]),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=600,
    )
    if r.returncode != 0:
        raise RuntimeError(f"RSS run for {model.name} on {device} failed: {r.stderr.strip()[-2000:]}")
    d = json.loads(r.stdout.strip().splitlines()[-1])
    # VmHWM is this process's own high-water mark. ru_maxrss survives execve on Linux, so in a child
    # forked from a big pytest process it can report the parent's size: only a fallback.
    d["peak_mib"] = (d["vmhwm_kib"] or d["ru_maxrss_kib"]) / 1024.0
    return d


CASES = [
    pytest.param("onnxruntime", "cpu", id="onnxruntime-cpu"),
    pytest.param("onnxruntime-numpy-colour", "cpu", id="onnxruntime-numpy-colour-cpu"),
    pytest.param("onnxruntime-int8", "cpu", id="onnxruntime-int8-cpu"),
    pytest.param("native", "cpu", id="native-cpu"),
    pytest.param("native-int8", "cpu", id="native-int8-cpu"),
    pytest.param("onnxruntime-baseline", "cpu", id="onnxruntime-cpu-baseline"),
    pytest.param("pytorch", "cpu", id="pytorch-cpu"),
    pytest.param("pytorch-baseline", "cpu", id="pytorch-cpu-baseline"),
    pytest.param("onnxruntime", "cuda", id="onnxruntime-cuda"),
    pytest.param("pytorch", "cuda", id="pytorch-cuda"),
    pytest.param("tensorrt", "cuda", id="tensorrt-cuda"),
]


@pytest.fixture(scope="module")
def pair_1280(pair):
    from PIL import Image

    return tuple(np.asarray(Image.fromarray(x).resize(SIZES["1280x1024"], Image.BILINEAR)) for x in pair)


@pytest.mark.parametrize("size", list(SIZES))
@pytest.mark.parametrize("backend,device", CASES)
def test_engine(benchmark, request, backend, device, size, ckpt, pair, pair_paths):
    from tokfuse_rt import Engine

    if device == "cuda":
        if backend == "onnxruntime":
            import onnxruntime as ort

            if "CUDAExecutionProvider" not in ort.get_available_providers():
                pytest.skip("onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu)")
        elif not _cuda():
            pytest.skip("needs a CUDA GPU visible to torch")
    if backend.startswith("native"):
        from tokfuse_rt.backends.native_backend import native_available

        if not native_available():
            pytest.skip("tokfuse_rt._C built without the native render")
    model = {
        "pytorch": lambda: ckpt,
        "native": lambda: ckpt,
        "native-int8": lambda: ckpt,
        "onnxruntime": lambda: request.getfixturevalue("onnx_model"),
        "onnxruntime-numpy-colour": lambda: request.getfixturevalue("onnx_model"),
        "onnxruntime-int8": lambda: request.getfixturevalue("onnx_int8"),
        "pytorch-baseline": lambda: request.getfixturevalue("baseline_ckpt"),
        "onnxruntime-baseline": lambda: request.getfixturevalue("baseline_onnx"),
        "tensorrt": lambda: request.getfixturevalue("trt_plan"),
    }[backend]()
    backend = backend.removesuffix("-baseline")
    numpy_colour = backend == "onnxruntime-numpy-colour"  # the float32 path with the colour steps in NumPy
    backend = backend.removesuffix("-numpy-colour")
    engine_backend = {"native": "native", "native-int8": "native-int8", "pytorch": "pytorch"}.get(backend, "auto")
    ir, vis = pair if size == "640x480" else request.getfixturevalue("pair_1280")
    w, h = SIZES[size]
    with Engine(model, device=device, threads=THREADS, backend=engine_backend) as eng:
        info = eng.info()
        assert info["backend"] == (backend if backend.startswith("native") else backend.removesuffix("-int8"))
        precision = info.get("precision") or (info.get("render") or {}).get("precision", "float32")
        assert (precision == "int8") == backend.endswith("-int8")
        import tokfuse_rt.imageio as imageio

        ext = imageio.colour_ext()
        if numpy_colour:
            imageio._EXT = None
        try:
            for _ in range(3):  # warm-up: allocator, kernel selection, caches
                eng.fuse(ir, vis)
            benchmark.group = f"engine-{size}"
            benchmark.pedantic(eng.fuse, args=(ir, vis), rounds=ROUNDS, warmup_rounds=1, iterations=1)
        finally:
            imageio._EXT = ext
    stats = getattr(benchmark, "stats", None)
    median_s = stats.stats.median if stats is not None else float("nan")
    rss = (
        peak_rss(model, device, pair_paths, backend=engine_backend) if size == "640x480" and not numpy_colour else None
    )
    ms = 1e3 * median_s
    target = TARGET_MS.get((backend, device)) if size == "640x480" else None
    gflop = render_gflop(info["config"], h, w) if "detail_channels" in (info.get("config") or {}) else None
    benchmark.extra_info.update(
        {
            "backend": backend + (" (colour steps in NumPy)" if numpy_colour else ""),
            "device": info["device"],
            "threads": info.get("threads"),
            "kernels": info.get("render") or info.get("kernels") or info.get("providers"),
            "precision": precision,
            "model": model.name,
            "pair": f"MSRS/{pair_paths[0].name} {size}",
            "ms_per_pair": round(ms, 2),
            "pairs_per_s": round(1e3 / ms, 2) if ms == ms and ms > 0 else None,
            "render_gflop_per_pair": round(gflop, 3) if gflop else None,
            "gflop_per_s": round(gflop / median_s, 1) if gflop and ms == ms and ms > 0 else None,
            "target_ms": target,
            "meets_target": (ms <= target) if target and ms == ms else None,
        }
    )
    if rss is not None:
        benchmark.extra_info.update(
            {
                "peak_rss_mib_1280x1024": round(rss["peak_mib"], 1),
                "vmhwm_kib_1280x1024": rss["vmhwm_kib"],
                "ru_maxrss_kib_1280x1024": rss["ru_maxrss_kib"],
                "rss_limit_mib": RSS_LIMIT_MIB,
            }
        )
    print(
        f"\n{backend}{' (NumPy colour)' if numpy_colour else ''}/{info['device']}: {ms:.1f} ms per {size} pair "
        f"(median of {ROUNDS})"
        + (f", {gflop / median_s:.1f} GFLOP/s" if gflop and ms == ms else "")
        + (f", peak RSS {rss['peak_mib']:.0f} MiB at 1280x1024" if rss else "")
    )
    if rss is not None:
        assert rss["peak_mib"] <= RSS_LIMIT_MIB, f"peak RSS {rss['peak_mib']:.0f} MiB > {RSS_LIMIT_MIB} MiB"
    if STRICT and target and ms == ms:
        assert ms <= target, f"{backend} median {ms:.1f} ms > target {target} ms"


@pytest.mark.parametrize("size", list(SIZES))
def test_peer_mmdrfuse_student(benchmark, request, size, pair):
    """The public MMDRFuse student in the same groups (bench/peers.py: arrays in -> uint8 out, gray)."""
    from peers import ENV, mmdrfuse_dir, mmdrfuse_student

    root = mmdrfuse_dir()
    if root is None:
        pytest.skip(f"set {ENV} to a checkout of github.com/yanglinDeng/MMDRFuse to time its student")
    import torch

    fuse = mmdrfuse_student(root, THREADS)
    ir, vis = pair if size == "640x480" else request.getfixturevalue("pair_1280")
    w, h = SIZES[size]
    try:
        assert fuse(ir, vis).shape == (h, w)
        for _ in range(3):
            fuse(ir, vis)
        benchmark.group = f"engine-{size}"
        benchmark.pedantic(fuse, args=(ir, vis), rounds=ROUNDS, warmup_rounds=1, iterations=1)
    finally:
        torch.set_num_threads(THREADS)
    stats = getattr(benchmark, "stats", None)
    ms = 1e3 * stats.stats.median if stats is not None else float("nan")
    benchmark.extra_info.update(
        {
            "backend": "mmdrfuse-student (peer, PyTorch)",
            "device": "cpu",
            "threads": THREADS,
            "parameters": fuse.parameters,
            "pair": f"MSRS {size} (gray output)",
            "ms_per_pair": round(ms, 2),
            "pairs_per_s": round(1e3 / ms, 2) if ms == ms and ms > 0 else None,
        }
    )
    print(f"\nmmdrfuse-student/cpu: {ms:.1f} ms per {size} pair (median of {ROUNDS})")
