"""Try to reproduce the interpreter-teardown crash seen once after a full ``make test`` run.

    python scripts/teardown_repro.py [--runs 20] [--parts torch,ort,ray]

Each run is a fresh Python process that builds what the test suite leaves alive at exit (a torch
intra-op thread pool that has run convolutions, ONNX Runtime sessions with their own thread pools left
open, a local Ray instance started and shut down) and then exits normally, running the interpreter's
teardown. A run that dies by a signal (SIGSEGV: exit status -11) reproduces the crash; its faulthandler
trace is printed. The summary counts exit statuses per combination of parts.
"""

from __future__ import annotations

import argparse
import collections
import itertools
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import faulthandler, sys
faulthandler.enable()
parts = sys.argv[1].split(",")
keep = []
if "torch" in parts:
    import torch
    torch.set_num_threads(2)
    x = torch.rand(1, 8, 256, 256)
    for _ in range(3):
        x = torch.nn.functional.conv2d(x, torch.rand(8, 8, 3, 3), padding=1).tanh()
    keep.append(x)
if "ort" in parts:
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper
    g = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 256, 256])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [helper.make_tensor("w", TensorProto.FLOAT, [8, 8, 3, 3], np.random.rand(8 * 8 * 9).tolist())],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    for _ in range(3):
        s = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
        s.run(None, {"x": np.random.rand(1, 8, 256, 256).astype(np.float32)})
        keep.append(s)  # left open, as module-scoped fixtures leave them
if "ray" in parts:
    import ray
    ray.init(num_cpus=1, include_dashboard=False, logging_level="ERROR")
    @ray.remote
    def f():
        return 1
    ray.get(f.remote())
    ray.shutdown()
print("done", flush=True)
"""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=20, help="runs per combination (default 20)")
    ap.add_argument("--parts", default="torch,ort,ray", help="what the child builds (default torch,ort,ray)")
    a = ap.parse_args(argv)
    parts = a.parts.split(",")
    combos = [c for n in range(1, len(parts) + 1) for c in itertools.combinations(parts, n)]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    crashed = 0
    for combo in combos:
        codes = collections.Counter()
        for _ in range(a.runs):
            r = subprocess.run(
                [sys.executable, "-c", CHILD, ",".join(combo)], env=env, capture_output=True, text=True, timeout=300
            )
            codes[r.returncode] += 1
            if r.returncode < 0:
                crashed += 1
                print(f"{'+'.join(combo)}: exit {r.returncode}\n{r.stderr[-3000:]}", flush=True)
        print(f"{'+'.join(combo)}: exit statuses {dict(codes)} over {a.runs} runs", flush=True)
    print(f"crashes: {crashed}")
    return 1 if crashed else 0


if __name__ == "__main__":
    raise SystemExit(main())
