"""HTTP service throughput and latency, Ray Serve replicas side by side with the same
work done in-process.

    pytest bench/bench_serve.py --benchmark-only

Group ``serve-640x480``: one real MSRS test pair (640x480, colour visible) sent ``TOKFUSE_BENCH_REQUESTS``
times (default 100) by 8 concurrent httpx clients as multipart POST /fuse to the service on
127.0.0.1; every answer is checked to be the PNG of ``Engine.fuse`` on the pair. Cases, 2 CPU threads
in all each time:

- ``inprocess``: the same work with no HTTP and no Ray: decode both uploads, ``Engine.fuse``
  (ONNX Runtime, 2 threads), encode the PNG, one request after another;
- ``serve-1x2``: 1 replica with 2 threads; ``serve-2x1``: 2 replicas with 1 thread each.

``extra_info``: requests/s, p50/p99 latency (ms, client side), errors, batching, device, load
average. The machine is a shared 2-core VM: timings are noisy.
"""

from __future__ import annotations

import concurrent.futures as cf
import io
import os
import socket
import time

import numpy as np
import pytest

from ray_common import bench_model, cpu_name, load_average, shared_data, start_ray

pytest.importorskip("ray.serve", reason="needs the extra tokfuse_rt[ray]")
httpx = pytest.importorskip("httpx")

GROUP = "serve-640x480"
REQUESTS = int(os.environ.get("TOKFUSE_BENCH_REQUESTS", "100"))
CONCURRENCY = 8
CASES = [("inprocess", 0, 2), ("serve-1x2", 1, 2), ("serve-2x1", 2, 1)]  # name, replicas, threads each
_RESULTS: dict = {}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def setup():
    import ray
    from ray import serve

    d = shared_data() / "test" / "MSRS"
    name = sorted(p.name for p in (d / "ir").iterdir())[0]
    ir, vis = d / "ir" / name, d / "vi" / name
    model = bench_model()
    init_s = start_ray()
    yield ir, vis, model, init_s, _free_port()
    serve.shutdown()
    ray.shutdown()


def _pct(xs, q) -> float:
    return float(np.percentile(np.asarray(xs) * 1000.0, q))


@pytest.mark.parametrize("name,replicas,threads", CASES, ids=[c[0] for c in CASES])
def test_serve(benchmark, setup, name, replicas, threads):
    from PIL import Image

    from tokfuse_rt import Engine
    from tokfuse_rt.serving.serve import _encode_png, build_app, decode_upload, start

    ir, vis, model, init_s, port = setup
    ir_b, vis_b = ir.read_bytes(), vis.read_bytes()
    with Engine(model, threads=2) as eng:
        expect = eng.fuse(ir, vis)
    lat, errors, info = [], [], {}

    if replicas == 0:
        eng = Engine(model, threads=threads)

        def one(_):
            t0 = time.perf_counter()
            a, b = decode_upload(ir_b, "ir", 10**8), decode_upload(vis_b, "vis", 10**8)
            body = _encode_png(eng.fuse(a, b))
            lat.append(time.perf_counter() - t0)
            return body

        def run():
            return [one(i) for i in range(REQUESTS)]
    else:
        t0 = time.perf_counter()
        url = start(build_app(model, replicas=replicas, threads=threads, max_batch_size=8), port=port)
        info["deploy_s"] = round(time.perf_counter() - t0, 1)
        info["ray_init_s"] = round(init_s, 1)
        files = {"ir": ("ir.png", ir_b), "vis": ("vis.png", vis_b)}

        def one(client):
            t0 = time.perf_counter()
            r = client.post(f"{url}/fuse", files=files, timeout=120)
            lat.append(time.perf_counter() - t0)
            if r.status_code != 200:
                errors.append(r.status_code)
            return r.content

        def run():
            with (
                httpx.Client(limits=httpx.Limits(max_connections=CONCURRENCY)) as client,
                cf.ThreadPoolExecutor(CONCURRENCY) as pool,
            ):
                one(client)  # warm: first request loads lazily
                lat.clear()
                t0 = time.perf_counter()
                bodies = list(pool.map(lambda _: one(client), range(REQUESTS)))
                run.wall = time.perf_counter() - t0
                return bodies

    benchmark.group = GROUP
    t0 = time.perf_counter()
    bodies = benchmark.pedantic(run, rounds=1, iterations=1)
    wall = getattr(run, "wall", time.perf_counter() - t0)
    if replicas == 0:
        eng.close()
    assert not errors, errors[:10]
    for body in bodies:
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(body))), expect)
    rps = REQUESTS / wall
    _RESULTS[name] = rps
    info.update(
        {
            "requests": REQUESTS,
            "concurrency": CONCURRENCY if replicas else 1,
            "requests_per_s": round(rps, 2),
            "p50_ms": round(_pct(lat, 50), 1),
            "p99_ms": round(_pct(lat, 99), 1),
            "errors": len(errors),
            "replicas": replicas,
            "threads_each": threads,
            "model": model.name,
            "device": cpu_name(),
            "load_average": load_average(),
        }
    )
    if replicas:
        from ray import serve

        from tokfuse_rt.serving.serve import APP_NAME

        info["one_replica_served"] = httpx.get(f"http://127.0.0.1:{port}/info", timeout=30).json()["served"]
        serve.delete(APP_NAME)  # free its CPUs: the next case's replicas could not be placed
    if "inprocess" in _RESULTS and replicas:
        info["ratio_to_inprocess"] = round(rps / _RESULTS["inprocess"], 3)
    benchmark.extra_info.update(info)
    print(
        f"\n{name}: {rps:.2f} req/s, p50 {info['p50_ms']} ms, p99 {info['p99_ms']} ms, {len(errors)} errors"
        + (f", {info['ratio_to_inprocess']:.2f}x in-process" if "ratio_to_inprocess" in info else "")
        + f"; load average {info['load_average']}"
    )
