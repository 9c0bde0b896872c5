"""Video fusion end to end (decode both, fuse, encode), backends and token reuse side by side.

    pytest bench/bench_video.py --benchmark-only

Input: the six real M3SVD sequences (640×480, 30 fps) joined into one 120-frame infrared and one
visible H.264 file (CRF 12, like the originals; the joins are scene cuts). One round = one
``Engine.fuse_video`` call over all 120 frames into an H.264 MP4 (CRF 18, veryfast), default model,
2 intra-op threads, decode / fuse / encode overlapped in threads.

Group ``video-640x480``: ONNX Runtime, PyTorch, and the native backend in float32 and int8 (``native``,
``native-int8``), each with token reuse (default policy) and without (``reuse="off"``). ``extra_info``:
``fps`` (frames / median round), ``stage_ms`` (busy milliseconds per frame of each stage in the last round:
decode_ir, decode_vis, fuse, colour, encode), ``overlap`` (sum of stage busy time / wall: > 1 means stages
ran concurrently), key frames, the device, and the targets (>= 15 fps with ONNX Runtime, >= 30 fps with the
fastest path, native-int8, on the project's 2-core CPU; ``meets_target``). Group ``video-stages-640x480``:
decoding both streams alone and encoding alone, for scale. ``TOKFUSE_BENCH_STRICT=1`` asserts the fps target
(timings on a shared machine are noisy); ``TOKFUSE_BENCH_ROUNDS`` sets the rounds (default 3);
``TOKFUSE_BENCH_MODEL`` the checkpoint."""

from __future__ import annotations

import os
import platform
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
GROUP = "video-640x480"
THREADS = 2
ROUNDS = int(os.environ.get("TOKFUSE_BENCH_ROUNDS", "3"))
TARGET_FPS = {"onnxruntime": 15.0, "native-int8": 30.0}
STRICT = os.environ.get("TOKFUSE_BENCH_STRICT", "") not in ("", "0")

pytest.importorskip("av")


def _device() -> str:
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            name = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count()
    return f"cpu: {name} ({cores} cores usable)"


def _model() -> Path:
    from tokfuse_rt.engine import DEFAULT_MODEL

    return Path(os.environ.get("TOKFUSE_BENCH_MODEL") or DEFAULT_MODEL)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """(ir.mp4, vis.mp4, frames): the M3SVD sequences joined, re-encoded at CRF 12."""
    import av
    from workspace import find_shared_data

    data = find_shared_data(start=ROOT)
    if data is None:
        pytest.skip("shared/data not found beside the repository (set TOKFUSE_SHARED)")
    root = data / "video" / "M3SVD"
    seqs = sorted(d for d in root.iterdir() if (d / "ir.mp4").is_file() and (d / "vis.mp4").is_file())
    out = tmp_path_factory.mktemp("bench_video")
    paths = {}
    for name in ("ir", "vis"):
        p = out / f"{name}.mp4"
        with av.open(str(p), "w") as o:
            s = o.add_stream("libx264", rate=30)
            s.width, s.height, s.pix_fmt = 640, 480, "yuv420p"
            s.options = {"crf": "12", "preset": "veryfast"}
            i = 0
            for seq in seqs:
                with av.open(str(seq / f"{name}.mp4")) as c:
                    for f in c.decode(video=0):
                        g = f.reformat(format="yuv420p")
                        g.pts, g.time_base = i, Fraction(1, 30)
                        i += 1
                        for pkt in s.encode(g):
                            o.mux(pkt)
            for pkt in s.encode():
                o.mux(pkt)
        paths[name] = p
    return paths["ir"], paths["vis"], i


@pytest.fixture(scope="module")
def ckpt():
    m = _model()
    if not m.is_file():
        pytest.skip(f"model checkpoint {m} not present (set TOKFUSE_BENCH_MODEL)")
    return m


@pytest.fixture(scope="module")
def onnx_model(ckpt, tmp_path_factory):
    import importlib.util

    for mod in ("onnx", "onnxscript", "onnxruntime"):
        if importlib.util.find_spec(mod) is None:
            pytest.skip(f"ONNX Runtime benchmark needs {mod}")
    from export.to_onnx import export_onnx

    out = tmp_path_factory.mktemp("bench_video_onnx") / (ckpt.stem + ".onnx")
    export_onnx(ckpt, out, verify=False)  # with the token/render halves
    return out


def _engine(path, backend="auto"):
    from tokfuse_rt import Engine

    eng = Engine(path, device="cpu", threads=THREADS, backend=backend)
    assert getattr(eng.backend, "has_halves", False), "backend without the model's halves"
    return eng


def _run(benchmark, eng, clips, tmp_path, reuse, backend):
    ir, vis, n = clips
    out = tmp_path / "fused.mp4"
    reports = []

    def once():
        reports.append(eng.fuse_video(ir, vis, out, reuse=reuse, progress=False))

    once()  # warm-up: sessions, allocations at this size
    benchmark.pedantic(once, rounds=ROUNDS, iterations=1)
    rep = reports[-1]
    assert rep.frames == n and not [w for w in rep.warnings if "reuse" in w]
    fps = n / benchmark.stats.stats.median
    target = TARGET_FPS.get(backend)
    sec = rep.seconds
    busy = sum(v for k, v in sec.items() if k != "wall")
    benchmark.extra_info.update(
        {
            "device": _device(),
            "backend": backend,
            "threads": THREADS,
            "frames": n,
            "size": "640x480",
            "reuse": rep.reuse.get("policy"),
            "key_frames": rep.reuse.get("key_frames"),
            "fps": round(fps, 2),
            "ms_per_frame": round(1e3 / fps, 1),
            "stage_ms": {k: round(1e3 * v / n, 2) for k, v in sec.items() if k != "wall"},
            "overlap": round(busy / sec["wall"], 2) if sec.get("wall") else None,
            "target_fps": target,
            "meets_target": None if target is None else fps >= target,
        }
    )
    if STRICT and target is not None:
        assert fps >= target, f"{backend}: {fps:.1f} fps < target {target}"


@pytest.mark.benchmark(group=GROUP)
@pytest.mark.parametrize("reuse", ["auto", "off"])
def test_video_onnxruntime(benchmark, onnx_model, clips, tmp_path, reuse):
    with _engine(onnx_model) as eng:
        _run(benchmark, eng, clips, tmp_path, reuse, "onnxruntime")


@pytest.mark.benchmark(group=GROUP)
@pytest.mark.parametrize("reuse", ["auto", "off"])
def test_video_pytorch(benchmark, ckpt, clips, tmp_path, reuse):
    import torch

    old = torch.get_num_threads()
    try:
        with _engine(ckpt) as eng:
            _run(benchmark, eng, clips, tmp_path, reuse, "pytorch")
    finally:
        torch.set_num_threads(old)


@pytest.mark.benchmark(group=GROUP)
@pytest.mark.parametrize("reuse", ["auto", "off"])
@pytest.mark.parametrize("backend", ["native", "native-int8"])
def test_video_native(benchmark, ckpt, clips, tmp_path, reuse, backend):
    import torch

    from tokfuse_rt.backends.native_backend import native_available

    if not native_available():
        pytest.skip("tokfuse_rt._C built without the native render")
    old = torch.get_num_threads()
    try:
        with _engine(ckpt, backend) as eng:
            _run(benchmark, eng, clips, tmp_path, reuse, backend)
    finally:
        torch.set_num_threads(old)


@pytest.mark.benchmark(group="video-stages-640x480")
def test_stage_decode_both(benchmark, clips):
    from tokfuse_rt.video.avio import VideoSource

    ir, vis, n = clips

    def once():
        for p, name in ((ir, "ir"), (vis, "vis")):
            s = VideoSource(p, name)
            assert sum(1 for _ in s.frames()) == n
            s.close()

    benchmark.pedantic(once, rounds=ROUNDS, iterations=1, warmup_rounds=1)
    benchmark.extra_info.update(
        {"device": _device(), "frames": n, "ms_per_frame_pair": round(1e3 * benchmark.stats.stats.median / n, 2)}
    )


@pytest.mark.benchmark(group="video-stages-640x480")
def test_stage_encode(benchmark, clips, tmp_path):
    from tokfuse_rt.video.avio import VideoSink, VideoSource

    ir, vis, n = clips
    src = VideoSource(vis, "vis")
    frames = [(f.pts, np.array(f.y), np.array(f.u), np.array(f.v)) for f in src.frames()]
    rate, tb = src.rate, src.time_base or Fraction(1, 30)
    src.close()

    def once():
        sink = VideoSink(tmp_path / "enc.mp4", 640, 480, rate, tb)
        for item in frames:
            sink.write(*item)
        sink.commit()

    benchmark.pedantic(once, rounds=ROUNDS, iterations=1, warmup_rounds=1)
    benchmark.extra_info.update(
        {
            "device": _device(),
            "frames": n,
            "codec": "libx264 crf 18 veryfast",
            "ms_per_frame": round(1e3 * benchmark.stats.stats.median / n, 2),
        }
    )
