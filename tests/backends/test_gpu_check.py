"""scripts/gpu_check.py without a GPU: its dry run checks its own plumbing (every command resolves, every
pytest selection collects its known GPU tests, the engine-parity worker runs on the CPU) and writes the
JSON and the log; a step that runs out of time is recorded, and the JSON is still written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "gpu_check.py"
STEPS = [
    "environment",
    "build",
    "cuda_tests",
    "trt_tests",
    "triton_vq_lookup",
    "triton_token_edit",
    "triton_engine",
    "engine_parity",
    "bench_kernels",
    "bench_engine",
]


def run_check(out: Path, *args, timeout=170):
    r = subprocess.run(
        [sys.executable, str(SCRIPT), "--dry-run", "--out", str(out), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    doc = json.loads((out / "gpu_check.json").read_text())
    return r, doc


def test_dry_run_plumbing(tmp_path, shared_data):
    r, doc = run_check(tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert doc["mode"] == "dry-run" and doc["status"] == "pass"
    steps = {s["name"]: s for s in doc["steps"]}
    assert list(steps) == STEPS
    env = doc["environment"]
    assert env["torch"] and env["python"] and "cuda_available" in env and "nvcc" in env
    assert steps["environment"]["status"] == "pass"
    for name in STEPS[1:]:
        s = steps[name]
        assert s["status"] == "skip" and "dry run" in s["reason"], s
        assert s["command"] and s["plumbing"]["ok"], s
    assert "TOKFUSE_CUDA=1" in steps["build"]["command"] and "build_ext --inplace" in steps["build"]["command"]
    # the selections reach the GPU tests they exist for
    cuda = steps["cuda_tests"]["plumbing"]
    assert cuda["collected"] >= 11 and "requires_cuda or requires_cuda_ext" in steps["cuda_tests"]["command"]
    assert steps["trt_tests"]["plumbing"]["collected"] >= 1
    assert steps["triton_vq_lookup"]["plumbing"]["collected"] >= 80
    assert steps["triton_token_edit"]["plumbing"]["collected"] >= 80
    assert steps["bench_engine"]["plumbing"]["collected"] >= 3  # the three cuda cases
    kb = steps["bench_kernels"]["plumbing"]  # without CUDA both modules skip at import, naming why
    assert kb["collected"] >= 16 or any("CUDA is missing" in m for m in kb["skipped_at_collection"]), kb
    # the engine-parity worker ran end to end on one real pair (CPU on both sides: identical)
    eng = steps["engine_parity"]["numbers"]
    assert len(eng["pairs"]) == 1 and eng["all_ids_equal"] and eng["max_abs_diff"] == 0
    log = (tmp_path / "gpu_check.log").read_text()
    assert "--collect-only" in log and "==== bench_engine: skip" in log
    assert not list(tmp_path.glob("*.tmp"))


def test_timed_out_step_and_missing_pairs_are_recorded(tmp_path):
    """A step cut by its timeout is a failure naming it, the run goes on, the JSON is written; a pairs
    folder that does not exist fails the dry run's plumbing. (The environment probe imports torch: it
    cannot finish in 0.2 s.)"""
    r, doc = run_check(
        tmp_path / "out",
        "--timeout",
        "environment=0.2",
        "--steps",
        "build,engine_parity",
        "--pairs",
        str(tmp_path / "missing"),
        timeout=60,
    )
    assert r.returncode == 1 and doc["status"] == "fail"
    env, build, eng = doc["steps"]
    assert env["name"] == "environment" and env["status"] == "fail" and "timed out" in env["reason"]
    assert build["name"] == "build" and build["status"] == "skip" and build["command"]
    assert eng["name"] == "engine_parity" and eng["plumbing"]["ok"] is False and "no pairs folder" in eng["reason"]
    assert "(timed out, killed)" in (tmp_path / "out" / "gpu_check.log").read_text()


def test_budget_exhausted_still_writes_json(tmp_path):
    """With no time left every step is skipped and named as such; the dry run then fails."""
    r, doc = run_check(tmp_path, "--budget", "5", timeout=60)
    assert r.returncode == 1 and doc["status"] == "fail"
    assert [s["name"] for s in doc["steps"]] == STEPS
    assert all(s["status"] == "skip" and "budget" in s["reason"] for s in doc["steps"])


def test_unknown_step_is_an_error(tmp_path):
    for args in (["--steps", "cuda_tests,nope"], ["--timeout", "nope=3"]):
        r = subprocess.run(
            [sys.executable, str(SCRIPT), "--out", str(tmp_path), *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 2 and "nope" in r.stderr
    assert not (tmp_path / "gpu_check.json").exists()
