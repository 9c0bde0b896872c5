"""``fuse-dir`` plain vs on Ray (``--ray``), side by side on one folder.

    pytest bench/bench_ray_batch.py --benchmark-only

Group ``fuse-dir``: every pair of ``val/RoadScene`` (120 pairs, ~540x320; ``TOKFUSE_BENCH_FOLDER``
overrides: a folder with ir/ and vi/), the same ONNX model file (the bundled default exported
once) for every case, into a fresh output folder each round:

- ``plain-1``, ``plain-2``: ``Engine(model, threads=1 or 2).fuse_dir`` (``tokfuse fuse-dir --model M
  [--threads N]``; ONNX Runtime's default on this machine is 2);
- ``ray-1x1``, ``ray-1x2``, ``ray-2x1``: ``fuse_dir_ray`` with actors x threads per actor.

Ray's overhead is ``ray-1xT`` against ``plain-T`` (same engine, same threads); its scaling is
``ray-2x1`` against ``ray-1x1``. On a busy 2-core machine 2 ONNX Runtime threads can be much slower
than 1 (its threads wait for each other), so compare like with like.

A Ray round includes starting its actors and loading the model in each (the job's fixed cost);
starting Ray itself (once per module) is recorded apart as ``ray_init_s``. ``extra_info``: pairs/s,
the ratio to plain, the device and the load average (this VM is shared: timings are noisy).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from ray_common import bench_model, cpu_name, load_average, shared_data, start_ray

pytest.importorskip("ray.data", reason="needs the extra tokfuse_rt[ray]")
pytest.importorskip("onnxruntime")

GROUP = "fuse-dir"
ROUNDS = int(os.environ.get("TOKFUSE_BENCH_ROUNDS", "2"))
CASES = [("plain-1", 0, 1), ("plain-2", 0, 2), ("ray-1x1", 1, 1), ("ray-1x2", 1, 2), ("ray-2x1", 2, 1)]
# (name, actors, threads per actor); plain cases first so the Ray cases can record their ratios
_RESULTS: dict = {}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    import ray

    env = os.environ.get("TOKFUSE_BENCH_FOLDER")
    folder = Path(env) if env else shared_data() / "val" / "RoadScene"
    model = bench_model()
    init_s = start_ray()
    yield folder, model, init_s, tmp_path_factory.mktemp("fuse-dir")
    ray.shutdown()


@pytest.mark.parametrize("name,actors,threads", CASES, ids=[c[0] for c in CASES])
def test_fuse_dir(benchmark, setup, name, actors, threads):
    from tokfuse_rt import Engine
    from tokfuse_rt.serving import fuse_dir_ray

    folder, model, init_s, work = setup
    n = len(list((folder / "ir").iterdir()))
    out = work / name
    seconds = []

    def fresh():
        shutil.rmtree(out, ignore_errors=True)
        return (), {}

    def run():
        t0 = time.perf_counter()
        if actors == 0:
            with Engine(model, threads=threads) as eng:
                rep = eng.fuse_dir(folder / "ir", folder / "vi", out, progress=False)
        else:
            rep = fuse_dir_ray(
                folder / "ir",
                folder / "vi",
                out,
                model=model,
                actors=actors,
                threads_per_actor=threads,
                batch_size=4,
                progress=False,
                report_path=False,
            )
        seconds.append(time.perf_counter() - t0)
        assert len(rep.written) == n and not rep.failed, rep.summary()

    benchmark.group = GROUP
    benchmark.pedantic(run, setup=fresh, rounds=ROUNDS, iterations=1)
    best = min(seconds)
    _RESULTS[name] = n / best
    info = {
        "pairs": n,
        "pairs_per_s": round(n / best, 2),
        "seconds_per_round": [round(s, 2) for s in seconds],
        "actors": actors,
        "threads_per_actor": threads,
        "model": model.name,
        "device": cpu_name(),
        "load_average": load_average(),
    }
    if actors:
        info["ray_init_s"] = round(init_s, 1)
    if actors:
        for ref in ("plain-1", "plain-2", "ray-1x1"):
            if ref in _RESULTS and ref != name:
                info[f"ratio_to_{ref}"] = round(_RESULTS[name] / _RESULTS[ref], 3)
    benchmark.extra_info.update(info)
    ratios = ", ".join(f"{v:.2f}x {k[9:]}" for k, v in info.items() if k.startswith("ratio_to_"))
    print(
        f"\n{name}: {n / best:.2f} pairs/s (best of {ROUNDS}: {best:.1f} s for {n} pairs)"
        + (f"; {ratios}" if ratios else "")
        + f"; load average {info['load_average']}"
    )
