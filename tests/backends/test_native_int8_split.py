"""The int8 render in two parts (``NativeRender.start_int8`` -> ``Int8Job.finish``; csrc/render_int8.cpp
``int8_split_*``): the detail convolutions run on threads of their own while the token pathway computes the
base map, then the head. Reference: ``NativeRender.run_int8`` (the fused kernel, itself tested against the
PyTorch reference in test_native_int8.py). Both compute every uint8 activation with the same integer
arithmetic and the same float32 rule per pixel, whoever computes which rows, so the results must be
identical bit for bit (no tolerance)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from tokfuse_rt.backends.native_backend import native_available

pytestmark = pytest.mark.skipif(not native_available(), reason="tokfuse_rt._C built without the native render")

from test_native_int8 import _int8_impls, _kernel  # noqa: E402
from test_native_render import BUNDLED, HEADS, _inputs, _model, _pair  # noqa: E402


@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("channels", [(4, 4), (16, 16), (5, 11)])
def test_split_equals_the_fused_kernel(head, channels):
    """Odd sizes (1 pixel, below and above a 16-row detail tile and the 16-pixel block), batch 2, channel
    counts whose D rows share a group between the detail channels and the base/sources (5, 11) or not,
    every instruction path, 0-2 background threads, 1-3 threads for the head, several head tile heights,
    tone as constants and as channels."""
    m = _model(head, detail_channels=channels[0], head_channels=channels[1], base_radius=2)
    r, _ = _kernel(m)
    rng = np.random.default_rng(11)
    nbase = 1 if head == "blend" else 5
    for h, w in [(1, 1), (5, 3), (17, 23), (41, 67)]:
        ir, vis, up = _inputs(rng, 2, h, w, nbase)
        up[:, :1] -= 0.2  # a base channel below 0: its zero point is not 0
        tone = rng.random((2, 4), dtype=np.float32) if nbase == 5 else None
        base1 = np.ascontiguousarray(up[:, :1])
        for impl in _int8_impls():
            for background, threads, tile_rows in [(0, 1, 0), (1, 2, 0), (2, 3, 7), (1, 1, 1), (0, 2, 5)]:
                ref = r.run_int8(ir, vis, up, threads, impl, tile_rows)
                out = r.start_int8(ir, vis, impl, background=background).finish(up, threads, tile_rows)
                assert out.dtype == np.float32 and np.array_equal(out, ref), (h, w, impl, background, threads)
                if tone is not None:
                    ref = r.run_int8(ir, vis, base1, threads, impl, tile_rows, tone=tone)
                    job = r.start_int8(ir, vis, impl, background=background)
                    assert np.array_equal(job.finish(base1, threads, tile_rows, tone=tone), ref)


def test_a_python_thread_can_take_part():
    """Int8Job.detail() on another Python thread (without the GIL) while this one waits, then finish():
    the same bits; detail() after finish() is a no-op."""
    m = _model("layers", detail_channels=16, head_channels=16)
    r, _ = _kernel(m)
    ir, vis, up = _inputs(np.random.default_rng(2), 1, 150, 77, 5)
    ref = r.run_int8(ir, vis, up, 2)
    for background in (0, 1):
        job = r.start_int8(ir, vis, background=background)
        t = threading.Thread(target=job.detail)
        t.start()
        t.join()
        assert np.array_equal(job.finish(up, 2), ref)
        assert job.finished
        job.detail()


def test_job_lifecycle_and_refusals():
    m = _model("tone")
    r, _ = _kernel(m)
    ir, vis, up = _inputs(np.random.default_rng(4), 1, 40, 31, 5)
    ref = r.run_int8(ir, vis, up, 2)
    job = r.start_int8(ir, vis)
    with pytest.raises(ValueError, match=r"base_up must have shape \(1, 5, 40, 31\)"):
        job.finish(up[:, :, :20].copy(), 2)
    assert not job.finished  # a refused base map leaves the job as it was
    assert np.array_equal(job.finish(up, 2), ref)
    with pytest.raises(ValueError, match="already finished"):
        job.finish(up, 2)
    for _ in range(5):  # dropped unfinished: the background threads stop after their current tile
        r.start_int8(ir, vis, background=2)
    assert np.array_equal(r.start_int8(ir, vis).finish(up, 2), ref)
    job = r.start_int8(ir, vis)
    t = _kernel(m)[1]
    with pytest.raises(ValueError, match="while an int8 job"):  # its threads read the tables
        r.quantize(t["conv1"], t["conv2"], t["conv3"], t["base_inv"], t["base_zero"])
    assert np.array_equal(job.finish(up, 2), ref)
    del job
    r.quantize(t["conv1"], t["conv2"], t["conv3"], t["base_inv"], t["base_zero"])
    with pytest.raises(ValueError, match="background must be a thread count"):
        r.start_int8(ir, vis, background=-1)
    with pytest.raises(ValueError, match="vis must have the shape of ir"):
        r.start_int8(ir, vis[:, :, :5].copy())
    with pytest.raises(ValueError, match="int8 impl must be"):
        r.start_int8(ir, vis, "avx2")
    from tokfuse_rt.backends.native_backend import native_render

    with pytest.raises(ValueError, match="before quantize"):
        native_render(m).start_int8(ir, vis)


class _Spy:
    """The backend's NativeRender, counting start_int8 calls."""

    def __init__(self, kernel):
        self.kernel, self.started = kernel, 0

    def start_int8(self, *a, **kw):
        self.started += 1
        return self.kernel.start_int8(*a, **kw)

    def __getattr__(self, name):
        return getattr(self.kernel, name)


@pytest.mark.parametrize("k", [0, None])
def test_backend_splits_large_images_with_the_same_result(shared_data, k):
    """NativeInt8Backend.run on a real pair with 2 threads: split at or above SPLIT_MIN_PIXELS (the token
    pathway on one thread), fused below or with 1 thread; ids and the fused map identical either way,
    at k = 0 and k = K."""
    from tokfuse_rt import Engine

    ir, vis = _pair(shared_data, crop=(233, 301))
    with (
        Engine(BUNDLED, backend="native-int8", threads=2) as two,
        Engine(BUNDLED, backend="native-int8", threads=1) as one,
    ):
        be = two.backend
        k = be.num_tokens if k is None else k
        spy = be.render_kernel = _Spy(be.render_kernel)
        be.SPLIT_MIN_PIXELS = 10**9
        fused, ids = be.run(ir, vis, k)
        assert spy.started == 0
        be.SPLIT_MIN_PIXELS = ir.shape[-2] * ir.shape[-1]
        split, ids2 = be.run(ir, vis, k)
        assert spy.started == 1
        assert np.array_equal(ids, ids2) and np.array_equal(fused, split)
        one.backend.SPLIT_MIN_PIXELS = 0
        single, ids1 = one.backend.run(ir, vis, k)
        assert np.array_equal(ids, ids1) and np.array_equal(fused, single)
    with Engine(BUNDLED, backend="native-int8", threads=3) as three:  # 2 background threads: twice the pixels
        be = three.backend
        spy = be.render_kernel = _Spy(be.render_kernel)
        be.SPLIT_MIN_PIXELS = ir.shape[-2] * ir.shape[-1]
        assert np.array_equal(be.run(ir, vis, k)[0], fused) and spy.started == 0
        be.SPLIT_MIN_PIXELS //= 2
        assert np.array_equal(be.run(ir, vis, k)[0], fused) and spy.started == 1
