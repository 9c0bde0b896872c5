"""The render's thread pool (csrc/thread_pool.cpp), through the kernels that use it: results do not depend
on the thread count, concurrent calls from several Python threads (the second runs on its own thread),
and fork() after the pool has started (the child gets a fresh pool)."""

from __future__ import annotations

import os
import sys
import threading

import numpy as np
import pytest

from tokfuse_rt.backends.native_backend import native_available

pytestmark = pytest.mark.skipif(not native_available(), reason="tokfuse_rt._C built without the native render")

from test_native_render import _inputs, _model  # noqa: E402


@pytest.fixture(scope="module")
def kernel():
    from tokfuse_rt.backends.native_backend import native_render

    return native_render(_model("layers"))


def test_thread_counts_give_one_result(kernel):
    ir, vis, up = _inputs(np.random.default_rng(0), 2, 53, 41, 5)
    ref = kernel.run(ir, vis, up, 1)
    for threads in (0, 2, 3, 7):  # 0: one per core; more threads than tiles or cores
        assert np.array_equal(kernel.run(ir, vis, up, threads), ref)


def test_concurrent_calls(kernel):
    """Four Python threads render at once (the GIL is released): every result equals the serial one."""
    rng = np.random.default_rng(1)
    jobs = [_inputs(rng, 1, 37 + i, 45, 5) for i in range(4)]
    want = [kernel.run(*j, 2) for j in jobs]
    got = [None] * 4

    def work(i):
        for _ in range(5):
            got[i] = kernel.run(*jobs[i], 2)

    ts = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert all(np.array_equal(a, b) for a, b in zip(got, want))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork() on this platform")
def test_fork_after_the_pool_started(kernel):
    ir, vis, up = _inputs(np.random.default_rng(3), 1, 33, 47, 5)
    ref = kernel.run(ir, vis, up, 2)  # the parent's workers exist now
    pid = os.fork()
    if pid == 0:  # the child: its pool must start afresh, not wait for the parent's workers
        code = 1
        try:
            code = 0 if np.array_equal(kernel.run(ir, vis, up, 2), ref) else 2
        finally:
            sys.stdout.flush()
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
    assert np.array_equal(kernel.run(ir, vis, up, 2), ref)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork() on this platform")
def test_engine_used_in_a_forked_child():
    """An Engine made before fork() fuses in the child: the token pathway's worker thread (and the render's
    pool) are made again there instead of waiting for threads the child does not have."""
    from tokfuse_rt import Engine

    rng = np.random.default_rng(4)
    ir, vis = rng.integers(0, 256, (61, 77), dtype=np.uint8), rng.integers(0, 256, (61, 77, 3), dtype=np.uint8)
    with Engine(None, backend="native", threads=2) as eng:
        ref = eng.fuse(ir, vis)
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = 0 if np.array_equal(eng.fuse(ir, vis), ref) else 2
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
        assert np.array_equal(eng.fuse(ir, vis), ref)
