#!/usr/bin/env python3
"""GPU check: every GPU path of tokfuse_rt verified by one command, in under 8 minutes.

On a machine with an NVIDIA GPU and a copy of the repository (no network and no virtual environment
needed: a plain ``python3`` with torch, triton, numpy, pytest, pytest-benchmark, onnxruntime and
pybind11, plus nvcc), from the repository root:

    python3 scripts/gpu_check.py --out "$OUT" --pairs gpu_pairs

(``make gpu-check OUT="$OUT" PAIRS=gpu_pairs`` runs the same.) ``gpu_pairs/`` is an ignored folder
holding a few real test pairs laid out as ``shared/data`` is (``gpu_pairs/test/<set>/ir|vi/`` or
``a|b/``), because ``../shared`` is not on the GPU machine; make it beside ``../shared`` with

    python3 scripts/gpu_check.py --make-pairs gpu_pairs

Without ``--pairs`` the folder comes from ``$TOKFUSE_GPU_PAIRS``, else ``shared/data`` found beside
the repository (``$TOKFUSE_SHARED`` or ``../shared/data``).

Steps, each in its own subprocess with its own timeout (all of them within ``--budget`` seconds, 450 by
default; a step that would start with less than 10 s left is skipped). The five test steps from
cuda_tests to triton_engine start together once the extension is built (Triton compiles on the CPU
cores while other tests use the GPU); engine_parity and the benchmarks then run alone:

  environment       GPU name, driver, compute capability; python, torch, CUDA, triton, nvcc versions
  build             ``TOKFUSE_CUDA=1 setup.py build_ext --inplace`` for this GPU's architecture, then
                    ``tokfuse_rt._C.has_cuda()`` must be true
  cuda_tests        pytest: every test marked requires_cuda / requires_cuda_ext (the CUDA ``nn_search``
                    kernel against its host-emulated body and the exact checker: ids identical)
  trt_tests         pytest: every test marked requires_trt; skipped when TensorRT is not installed
  triton_vq_lookup  pytest tests/kernels/test_vq_lookup.py with TRITON_INTERPRET=0: the compiled kernel on the
                    GPU against vq_lookup_ref (ids identical)
  triton_token_edit pytest tests/kernels/test_token_edit.py, the same for the fused STE kernel
  triton_engine     pytest tests/kernels/test_triton_engine.py: model forward and Engine on the Triton kernels
  engine_parity     ``Engine(device="cuda")`` against ``Engine(device="cpu")`` (bundled model) on the
                    real pairs: token ids identical and fused uint8 max |diff| <= 1 per pair, the
                    the parity rule; on a miss the CUDA run is repeated with TF32 off
                    to tell TF32 convolution rounding from a kernel fault
  bench_kernels     pytest-benchmark bench/bench_vq_lookup.py and bench/bench_token_edit.py
  bench_engine      pytest-benchmark bench/bench_engine.py, the CUDA cases (needs an MSRS pair)

Output (``--out``): ``gpu_check.json`` (per step: status pass/fail/skip, seconds, reason, command, key
numbers; the environment; the pairs) rewritten after every step, so it exists even when a step hangs
or the whole run is killed, and ``gpu_check.log`` (every command and its full output). Exit status 0
when no step failed.

Without a GPU (or with ``--dry-run``) the check verifies its own plumbing instead: the environment
step runs, every command resolves, each pytest selection is collected (``--collect-only``) and must
contain its known GPU tests, the engine-parity worker runs end to end on one pair with the CPU on both
sides, and every other step is recorded as "skip" (no GPU) with its planned command. CI runs this
dry run (tests/backends/test_gpu_check.py).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
JSON_NAME, LOG_NAME = "gpu_check.json", "gpu_check.log"
DEFAULT_BUDGET_S = 450  # 8 minutes minus a margin for interpreter start-up and the transfers
MIN_STEP_S = 10  # a step with less time left than this is skipped, not started
GPU_MARKERS = ("requires_cuda", "requires_cuda_ext")
# pairs copied by --make-pairs: (set, how many); 640x480 MSRS (bench_engine uses the first), odd-sized
# RoadScene with a colour visible image, TNO, and a pseudo-colour PET pair (the chroma comes from b)
PAIR_SETS = (("MSRS", 2), ("RoadScene", 2), ("TNO", 1), ("Harvard_MRI_PET", 1))
TRAIN_SETS = (("M3FD", 4),)  # train/ pairs: int8 calibration of the TensorRT test (never test/ pairs)


# ------------------------------------------------------------------------------------------------------
# running things
# ------------------------------------------------------------------------------------------------------
class Check:
    """Run state: mode, deadline, output files, the steps' records. The JSON is rewritten after every
    step (temporary file + rename); each command's output is appended to the log when it ends."""

    def __init__(self, args):
        self.args = args
        self.out = Path(args.out).resolve()
        self.out.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix="gpu_check_"))
        self.t0 = time.monotonic()
        self.deadline = self.t0 + args.budget
        self.dry = True  # decided by the environment step
        self.dry_reason = "no GPU: dry run"
        self.env_info: dict = {}
        self.pairs_dir = resolve_pairs(args.pairs)
        self.steps: list = []
        self.timeouts = dict(args.timeout or {})
        self.pending: dict = {}  # commands started together, by step name (start_together)
        self.together_started = False
        self.commit = git_commit()
        self.started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self.log_path = self.out / LOG_NAME
        self.log_path.write_text(
            f"tokfuse_rt GPU check, started {self.started}\n"
            f"command: {shlex.join([sys.executable, *sys.argv])}\ncwd: {ROOT}\n"
        )

    def log(self, text: str) -> None:
        with open(self.log_path, "a") as f:
            f.write(text if text.endswith("\n") else text + "\n")

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def child_env(self, extra: dict | None = None) -> dict:
        """The environment of every command: the tree first on sys.path, compiled Triton (the test
        modules default to the interpreter unless TRITON_INTERPRET is set), no .pytest_cache writes."""
        env = dict(
            os.environ,
            PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
            TRITON_INTERPRET="0",
            PYTHONDONTWRITEBYTECODE="1",
        )
        env.update(extra or {})
        return env

    def start(self, name: str, cmd: list, timeout: float, extra_env: dict | None = None) -> dict:
        """Start ``cmd`` in its own process group, its output going to a file of its own; a watcher thread
        kills the whole group when ``timeout`` runs out, whether or not anything is waiting for it yet."""
        out = self.tmp / f"{len(os.listdir(self.tmp))}.out"
        with open(out, "wb") as f:
            proc = subprocess.Popen(
                [str(c) for c in cmd],
                cwd=ROOT,
                env=self.child_env(extra_env),
                stdout=f,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        shown = " ".join(f"{k}={v}" for k, v in (extra_env or {}).items())
        job = {
            "name": name,
            "proc": proc,
            "out": out,
            "t0": time.monotonic(),
            "timeout": max(1.0, timeout),
            "shown": f"{shown + ' ' if shown else ''}{shlex.join(map(str, cmd))}",
            "killed": False,
        }
        job["watcher"] = threading.Thread(target=self.watch, args=(job,), daemon=True)
        job["watcher"].start()
        return job

    def watch(self, job: dict) -> None:
        try:
            job["proc"].wait(timeout=job["timeout"])
        except subprocess.TimeoutExpired:
            self.kill(job)
        job["ended"] = time.monotonic()

    @staticmethod
    def kill(job: dict) -> None:
        """SIGTERM to the job's process group, SIGKILL 5 s later if anything of it is still there."""
        proc = job["proc"]
        if proc.poll() is not None:
            return
        job["killed"] = True
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                return
            for _ in range(50):
                if proc.poll() is not None:
                    break
                time.sleep(0.1)

    def finish(self, job: dict) -> dict:
        """Wait for a started command (its watcher ends it at its timeout). Its command line and output go
        to the log. Returns {rc, seconds (until it ended), timed_out, output}."""
        proc = job["proc"]
        job["watcher"].join(timeout=max(1.0, job["t0"] + job["timeout"] + 30 - time.monotonic()))
        if job["watcher"].is_alive():  # not even SIGKILL ended it: record it and move on
            job["killed"] = True
        secs = job.get("ended", time.monotonic()) - job["t0"]
        output = job["out"].read_text(errors="replace")
        timed_out = job["killed"]
        self.log(
            f"\n---- {job['name']}: {job['shown']}  (timeout {job['timeout']:.0f} s)\n{output}"
            f"---- {job['name']}: exit {proc.returncode}{' (timed out, killed)' if timed_out else ''} "
            f"after {secs:.1f} s"
        )
        return {"rc": proc.returncode, "seconds": round(secs, 1), "timed_out": timed_out, "output": output}

    def run(self, name: str, cmd: list, timeout: float, extra_env: dict | None = None) -> dict:
        return self.finish(self.start(name, cmd, timeout, extra_env))

    def write_json(self, final: bool = False) -> Path:
        counts = {s: sum(1 for r in self.steps if r["status"] == s) for s in ("pass", "fail", "skip")}
        if self.dry:
            ok = all(r.get("plumbing", {}).get("ok", r["status"] != "fail") for r in self.steps)
        else:
            ok = counts["fail"] == 0
        doc = {
            "check": "tokfuse_rt GPU check (scripts/gpu_check.py)",
            "mode": "dry-run" if self.dry else "gpu",
            "status": ("pass" if ok else "fail") if final else "running",
            "started": self.started,
            "seconds": round(time.monotonic() - self.t0, 1),
            "budget_s": self.args.budget,
            "command": shlex.join([sys.executable, *sys.argv]),
            "commit": self.commit,
            "environment": self.env_info,
            "pairs_dir": str(self.pairs_dir) if self.pairs_dir else None,
            "child_env": {"PYTHONPATH": str(ROOT), "TRITON_INTERPRET": "0"},
            "counts": counts,
            "steps": self.steps,
        }
        path = self.out / JSON_NAME
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(doc, indent=1, default=str) + "\n")
        os.replace(tmp, path)
        return path


def git_commit():
    try:
        r = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        return (r.stdout.strip() + ("+dirty" if dirty else "")) if r.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None  # a copied tree without .git, or no git


def resolve_pairs(arg):
    """The folder of real pairs: --pairs, $TOKFUSE_GPU_PAIRS, else shared/data/test found beside the repo."""
    p = arg or os.environ.get("TOKFUSE_GPU_PAIRS")
    if p:
        return Path(p).resolve()
    sys.path.insert(0, str(ROOT))
    try:
        from workspace import find_shared_data
    except ImportError:  # the package needs numpy: the environment step will say more
        return None
    data = find_shared_data(start=ROOT)
    return data / "test" if data else None


def data_root(pairs_dir):
    """The folder that plays shared/data for the benchmarks (TOKFUSE_SHARED): it holds test/."""
    if pairs_dir is None:
        return None
    if (pairs_dir / "test").is_dir():
        return pairs_dir
    return pairs_dir.parent if pairs_dir.name == "test" else None


# ------------------------------------------------------------------------------------------------------
# pytest helpers: selection, collect-only (dry run), JUnit XML and benchmark JSON (GPU run)
# ------------------------------------------------------------------------------------------------------
def marked_files(markers) -> list:
    """Test files that use any of ``markers`` (so a -m selection never imports unrelated test modules,
    some of which need packages the GPU machine lacks)."""
    pat = re.compile(r"\bmark\.({})\b".format("|".join(map(re.escape, markers))))
    return [
        f.relative_to(ROOT).as_posix()
        for f in sorted((ROOT / "tests").rglob("test_*.py"))
        if pat.search(f.read_text(encoding="utf-8", errors="replace"))
    ]


def pytest_cmd(selection: list) -> list:
    return [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *selection]


def collect_cmd(selection: list) -> list:
    return pytest_cmd(selection) + ["--collect-only", "-q", "-rs"]


def start_together(ck: Check, names) -> None:
    """Start the commands of the steps ``names`` at once; each step then waits for its own, under its own
    timeout. Dry run: the collect-only runs and the engine worker's CPU run (none writes into the tree).
    GPU run: the test steps of ``TOGETHER`` (GPU correctness only; the benchmarks run alone)."""
    for name in names:
        timeout = min(ck.timeouts.get(name, CAPS[name]), ck.remaining())
        if name in PYTEST_STEPS:
            spec = PYTEST_STEPS[name](ck)
            if ck.dry:
                ck.pending[name] = ck.start(
                    f"{name} (collect-only)", collect_cmd(spec["selection"]), min(120, timeout), spec.get("env")
                )
            elif not spec.get("skip"):
                ck.pending[name] = ck.start(name, run_cmd(ck, name, spec)[0], timeout, spec.get("env"))
        elif name == "engine_parity" and ck.dry and ck.pairs_dir and ck.pairs_dir.is_dir():
            ck.pending[name] = ck.start(name, engine_cmd(ck, True), timeout)


def collect(ck: Check, name: str, spec: dict) -> dict:
    """Dry run of a pytest step: collect its selection; every ``expect`` prefix must be among the ids."""
    job = ck.pending.pop(name, None) or ck.start(
        f"{name} (collect-only)", collect_cmd(spec["selection"]), min(120, ck.remaining()), spec.get("env")
    )
    res = ck.finish(job)
    lines = res["output"].splitlines()
    ids = [ln.strip() for ln in lines if "::" in ln and not ln.startswith(("SKIPPED", "ERROR"))]
    skipped_modules = [ln.split(":", 2)[-1].strip() for ln in lines if ln.startswith("SKIPPED")]
    problems = []
    if res["timed_out"]:
        problems.append(f"collection timed out after {res['seconds']} s")
    elif res["rc"] not in (0, 5):  # 5: nothing collected (e.g. modules that skip without CUDA)
        problems.append(f"pytest --collect-only exited {res['rc']} (see the log)")
    missing = [e for e in spec["expect"] if not any(i.startswith(e) for i in ids)]
    if missing:
        problems.append("expected tests not collected: " + ", ".join(missing))
    return {
        "ok": not problems,
        "problems": problems,
        "collected": len(ids),
        "collect_seconds": res["seconds"],
        "expected": spec["expect"],
        "skipped_at_collection": skipped_modules,
        "note": spec.get("note"),
    }


def junit_summary(path: Path) -> dict:
    """Counts, failures and skip reasons from pytest's JUnit XML."""
    if not path.is_file():
        return {}
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    n = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
    failed, skips = [], {}
    for case in root.iter("testcase"):
        node = f"{case.get('classname', '')}::{case.get('name', '')}"
        for tag in ("failure", "error"):
            el = case.find(tag)
            if el is not None:
                msg = (el.get("message") or tag).strip().splitlines() or [tag]
                failed.append(f"{node}: {msg[0][:300]}")
        el = case.find("skipped")
        if el is not None:
            why = (el.get("message") or "").strip()[:300]
            skips[why] = skips.get(why, 0) + 1
    return {
        "passed": n["tests"] - n["failures"] - n["errors"] - n["skipped"],
        "failed": n["failures"],
        "errors": n["errors"],
        "skipped": n["skipped"],
        "failures": failed[:20],
        "skip_reasons": [{"reason": k, "count": v} for k, v in skips.items()],
    }


def bench_summary(path: Path) -> list:
    """Key numbers of a pytest-benchmark JSON: per benchmark, median/min ms and its extra_info."""
    if not path.is_file():
        return []
    doc = json.loads(path.read_text())
    return [
        {
            "name": b.get("name"),
            "group": b.get("group"),
            "median_ms": round(1e3 * b["stats"]["median"], 4),
            "min_ms": round(1e3 * b["stats"]["min"], 4),
            "rounds": b["stats"].get("rounds"),
            "extra_info": b.get("extra_info", {}),
        }
        for b in doc.get("benchmarks", [])
    ]


def run_cmd(ck: Check, name: str, spec: dict):
    """The pytest command of a GPU run, with its JUnit XML and benchmark JSON paths."""
    junit, bjson = ck.tmp / f"{name}.xml", ck.tmp / f"{name}.bench.json"
    cmd = pytest_cmd(spec["selection"]) + ["-q", "-rs", f"--junitxml={junit}"]
    return cmd + ([f"--benchmark-json={bjson}"] if spec.get("bench") else []), junit, bjson


def pytest_step(ck: Check, name: str, spec: dict, timeout: float) -> dict:
    """Run a pytest step from its spec: ``selection`` (files and options), ``expect`` (node id prefixes
    the selection must collect), ``strict``, optional ``env``, ``bench`` and ``skip`` (a reason not to
    run on this machine). GPU run: fail on any failure, error or timeout, when no test ran at all, and
    (``strict``) on any skipped test - on a GPU machine with the extension built they must all run."""
    cmd = pytest_cmd(spec["selection"])
    if ck.dry:
        plumbing = collect(ck, name, spec)
        return {
            "status": "skip",
            "reason": ck.dry_reason,
            "command": shlex.join(cmd),
            "plumbing": plumbing,
            "seconds": plumbing["collect_seconds"],
        }
    if spec.get("skip"):
        return {"status": "skip", "reason": spec["skip"], "command": shlex.join(cmd)}
    cmd, junit, bjson = run_cmd(ck, name, spec)
    job = ck.pending.pop(name, None)
    res = ck.finish(job or ck.start(name, cmd, timeout, spec.get("env")))
    nums = junit_summary(junit)
    if spec.get("bench"):
        nums["benchmarks"] = bench_summary(bjson)
    rec = {
        "command": shlex.join(map(str, cmd)),
        "numbers": nums,
        "rc": res["rc"],
        "seconds": res["seconds"],
        "ran_alongside_others": job is not None,
    }
    if res["timed_out"]:
        return dict(rec, status="fail", reason=f"timed out after {res['seconds']:.0f} s (killed)")
    if "passed" not in nums:
        return dict(rec, status="fail", reason=f"pytest exited {res['rc']} without a report (see the log)")
    if nums["failed"] or nums["errors"] or res["rc"] not in (0, 5):
        return dict(rec, status="fail", reason=f"{nums['failed']} failed, {nums['errors']} errors (exit {res['rc']})")
    if nums["passed"] == 0:
        why = "; ".join(s["reason"] for s in nums["skip_reasons"]) or "nothing collected"
        return dict(rec, status="fail" if spec["strict"] else "skip", reason=f"no test ran: {why}")
    if spec["strict"] and nums["skipped"]:
        return dict(rec, status="fail", reason=f"{nums['skipped']} skipped where all must run on a GPU")
    return dict(rec, status="pass", reason=f"{nums['passed']} passed, {nums['skipped']} skipped")


# ------------------------------------------------------------------------------------------------------
# the steps
# ------------------------------------------------------------------------------------------------------
def step_environment(ck: Check, timeout: float) -> dict:
    result = ck.tmp / "env.json"
    cmd = [sys.executable, Path(__file__).resolve(), "--worker", "env", "--result", result]
    res = ck.run("environment", cmd, timeout)
    if res["timed_out"] or not result.is_file():
        return {
            "status": "fail",
            "reason": f"environment probe failed (exit {res['rc']}"
            f"{', timed out' if res['timed_out'] else ''}; see the log)",
            "command": shlex.join(map(str, cmd)),
        }
    ck.env_info = json.loads(result.read_text())
    ck.dry = ck.args.dry_run or not ck.env_info.get("cuda_available")
    gpu = ck.env_info.get("gpu") or {}
    if ck.env_info.get("cuda_available"):
        ck.dry_reason = "dry run requested (--dry-run)"
    why = f"{gpu.get('name')}, driver {ck.env_info.get('driver')}" if not ck.dry else ck.dry_reason
    return {"status": "pass", "reason": why, "numbers": ck.env_info}


def step_build(ck: Check, timeout: float) -> dict:
    arch = os.environ.get("TOKFUSE_CUDA_ARCH") or (ck.env_info.get("gpu") or {}).get("arch")
    env = {"TOKFUSE_CUDA": "1", **({"TOKFUSE_CUDA_ARCH": arch} if arch else {})}
    cmd = [sys.executable, "setup.py", "build_ext", "--inplace"]
    probe = [
        sys.executable,
        "-c",
        "import json; from tokfuse_rt import _C; "
        "print('BUILD_INFO ' + json.dumps(dict(_C.build_info(), devices=_C.cuda_device_count())))",
    ]
    shown = " ".join(f"{k}={v}" for k, v in env.items()) + " " + shlex.join(map(str, cmd))
    if ck.dry:
        problems = [f"{f} missing" for f in ("setup.py", "csrc/nn_search_cuda.cu") if not (ROOT / f).is_file()]
        try:
            import pybind11  # noqa: F401 - setup.py needs it (imported only to check that it is there)
        except ImportError:
            problems.append("pybind11 is not importable")
        nvcc = ck.env_info.get("nvcc") or {}
        return {
            "status": "skip",
            "reason": f"{ck.dry_reason} (the build itself needs only nvcc, but it would "
            "replace the extension in this tree)",
            "command": shown,
            "plumbing": {
                "ok": not problems,
                "problems": problems,
                "nvcc": nvcc.get("path"),
                "note": None if nvcc.get("path") else "nvcc not found here: the GPU build would fail",
            },
        }
    res = ck.run("build", cmd, timeout, env)
    rec = {"command": shown, "numbers": {"arch": arch, "seconds": res["seconds"]}}
    if res["rc"] != 0:
        why = "timed out (killed)" if res["timed_out"] else f"exit {res['rc']}"
        return dict(rec, status="fail", reason=f"build failed: {why} (see the log)")
    pr = ck.run("build (probe)", probe, min(60, ck.remaining()))
    line = [ln for ln in pr["output"].splitlines() if ln.startswith("BUILD_INFO ")]
    if pr["rc"] != 0 or not line:
        return dict(rec, status="fail", reason="the built extension does not import (see the log)")
    info = json.loads(line[-1][len("BUILD_INFO ") :])
    rec["numbers"]["build_info"] = info
    if not info.get("cuda") or not info.get("devices"):
        return dict(
            rec,
            status="fail",
            reason=f"tokfuse_rt._C: has_cuda={info.get('cuda')}, cuda_device_count={info.get('devices')}",
        )
    return dict(
        rec,
        status="pass",
        reason=f"built for sm_{arch}; _C sees {info['devices']} CUDA device(s), runtime {info.get('cuda_runtime')}",
    )


def cuda_tests(ck: Check) -> dict:
    return {
        "selection": marked_files(GPU_MARKERS) + ["-m", " or ".join(GPU_MARKERS)],
        "strict": True,
        "expect": [
            "tests/kernels/test_nn_search.py::test_cuda_kernel_matches_cpu_bit_for_bit",
            "tests/kernels/test_nn_search.py::test_wrapper_on_cuda_tensors",
        ],
    }


def trt_tests(ck: Check) -> dict:
    no_trt = ck.env_info.get("cuda_available") and not ck.env_info.get("tensorrt")
    root = data_root(ck.pairs_dir)  # train/ pairs calibrate the --int8 engine
    return {
        "selection": marked_files(["requires_trt"]) + ["-m", "requires_trt"],
        "strict": True,
        "env": {"TOKFUSE_SHARED": str(root)} if root else None,
        "expect": [
            "tests/backends/test_trt.py::test_tensorrt_matches_onnxruntime",
            "tests/backends/test_trt.py::test_tensorrt_reduced_precision_engines[fp16]",
            "tests/backends/test_trt.py::test_tensorrt_reduced_precision_engines[int8]",
        ],
        "skip": "TensorRT is not installed here (the requires_trt tests need it)" if no_trt else None,
    }


def _test_module(path: str, *expect: str) -> dict:
    """A step that runs one test module, strict, and expects the named tests of it to have run."""
    return {"selection": [path], "strict": True, "expect": [f"{path}::{name}" for name in expect]}


def triton_vq_lookup(ck: Check) -> dict:
    return _test_module("tests/kernels/test_vq_lookup.py", "test_sweep_matches_reference", "test_compiles_for_hopper")


def triton_token_edit(ck: Check) -> dict:
    return _test_module("tests/kernels/test_token_edit.py", "test_sweep_matches_reference", "test_matches_model_ste")


def triton_engine(ck: Check) -> dict:
    return _test_module(
        "tests/kernels/test_triton_engine.py",
        "test_model_forward_triton_matches_torch",
        "test_engine_fuse_triton_matches_torch",
    )


def bench_kernels(ck: Check) -> dict:
    # no expected ids: without CUDA both modules skip at import, so nothing can be collected here
    return {
        "selection": ["bench/bench_vq_lookup.py", "bench/bench_token_edit.py", "--benchmark-only"],
        "strict": True,
        "bench": True,
        "expect": [],
    }


def bench_engine(ck: Check) -> dict:
    root = data_root(ck.pairs_dir)
    msrs = root is not None and any((root / "test" / "MSRS" / "ir").glob("*"))
    return {
        "selection": ["bench/bench_engine.py", "-k", "cuda", "--benchmark-only"],
        "strict": False,
        "bench": True,
        "env": {"TOKFUSE_SHARED": str(root)} if root else None,
        "note": None if msrs else f"no test/MSRS pair under {root}: the engine benchmark will skip",
        "expect": ["bench/bench_engine.py::test_engine[pytorch-cuda-640x480]"],
    }


def engine_cmd(ck: Check, dry: bool) -> list:
    """The engine-parity worker: CUDA against CPU on --max-pairs pairs; in a dry run CPU against CPU on one."""
    return [
        sys.executable,
        Path(__file__).resolve(),
        "--worker",
        "engine",
        "--result",
        ck.tmp / "engine.json",
        "--pairs",
        ck.pairs_dir,
        "--max-pairs",
        str(1 if dry else ck.args.max_pairs),
        "--device",
        "cpu" if dry else "cuda",
    ]


def step_engine_parity(ck: Check, timeout: float) -> dict:
    if ck.pairs_dir is None or not ck.pairs_dir.is_dir():
        return {
            "status": "fail" if not ck.dry else "skip",
            "reason": f"no pairs folder ({ck.pairs_dir or 'give --pairs DIR or set TOKFUSE_GPU_PAIRS'})",
            **({"plumbing": {"ok": False, "problems": ["no pairs folder"]}} if ck.dry else {}),
        }
    cmd = engine_cmd(ck, ck.dry)
    res = ck.finish(ck.pending.pop("engine_parity", None) or ck.start("engine_parity", cmd, timeout))
    result = ck.tmp / "engine.json"
    nums = json.loads(result.read_text()) if result.is_file() else {}
    rec = {"command": shlex.join(map(str, engine_cmd(ck, False))), "numbers": nums, "seconds": res["seconds"]}
    problem = (
        "timed out (killed)"
        if res["timed_out"]
        else f"worker exited {res['rc']} (see the log)"
        if res["rc"] != 0 or not nums
        else None
    )
    if ck.dry:
        return dict(
            rec,
            status="skip",
            reason=f"{ck.dry_reason} (the worker ran with the CPU on both sides)",
            plumbing={
                "ok": problem is None,
                "problems": [problem] if problem else [],
                "ran": shlex.join(map(str, cmd)),
            },
        )
    if problem:
        return dict(rec, status="fail", reason=problem)
    bad = [r["pair"] for r in nums["pairs"] if not r["ok"]]
    return dict(
        rec,
        status="fail" if bad else "pass",
        reason=(
            f"{len(bad)} of {len(nums['pairs'])} pairs differ: {', '.join(bad)}"
            if bad
            else f"{len(nums['pairs'])} pairs: ids identical, max |diff| {nums['max_abs_diff']} <= 1"
        ),
    )


# the pytest steps: name -> spec function (see pytest_step)
PYTEST_STEPS = {
    f.__name__: f
    for f in (cuda_tests, trt_tests, triton_vq_lookup, triton_token_edit, triton_engine, bench_kernels, bench_engine)
}
# name, step function or None for a pytest step, timeout (s). Timeouts bound a hang; the budget bounds the sum.
STEPS = [
    ("environment", step_environment, 60),
    ("build", step_build, 240),
    ("cuda_tests", None, 180),
    ("trt_tests", None, 300),
    ("triton_vq_lookup", None, 240),
    ("triton_token_edit", None, 240),
    ("triton_engine", None, 240),
    ("engine_parity", step_engine_parity, 150),
    ("bench_kernels", None, 150),
    ("bench_engine", None, 120),
]
CAPS = {name: cap for name, _, cap in STEPS}
# GPU run: these start together once the extension is built (Triton compiles and autotunes on the CPU
# cores while other tests use the GPU); everything else runs alone.
TOGETHER = ("cuda_tests", "trt_tests", "triton_vq_lookup", "triton_token_edit", "triton_engine")


def run_steps(ck: Check, only=None) -> int:
    selected = [n for n, _, _ in STEPS if not only or n in only or n == "environment"]
    if ck.args.dry_run:  # known before the environment probe: start it all at once
        ck.together_started = True
        start_together(ck, selected[1:])
    for name, fn, cap in STEPS:
        if name not in selected:
            continue
        left = ck.remaining()
        t = time.monotonic()
        if left < MIN_STEP_S:
            rec = {"status": "skip", "reason": f"budget of {ck.args.budget:g} s exhausted ({max(0, left):.0f} s left)"}
            if ck.dry:
                rec["plumbing"] = {"ok": False, "problems": ["budget exhausted before this step"]}
        else:
            if not ck.dry and name in TOGETHER and not ck.together_started:
                ck.together_started = True
                start_together(ck, [n for n in TOGETHER if n in selected])
            timeout = min(ck.timeouts.get(name, cap), left)
            try:
                rec = fn(ck, timeout) if fn else pytest_step(ck, name, PYTEST_STEPS[name](ck), timeout)
            except Exception as e:  # noqa: BLE001 - a defect of this script must not lose the record
                rec = {"status": "fail", "reason": f"{type(e).__name__}: {e}"}
                ck.log(f"---- {name}: {type(e).__name__}: {e}")
            rec.setdefault("timeout_s", round(timeout))
        rec.setdefault("seconds", round(time.monotonic() - t, 1))
        ck.steps.append({"name": name, **rec})
        ck.log(f"==== {name}: {rec['status']} - {rec.get('reason', '')}")
        print(f"{name:18s} {rec['status']:4s} {rec['seconds']:6.1f} s  {rec.get('reason', '')}", flush=True)
        ck.write_json()
        if name == "environment" and ck.dry and not ck.together_started and ck.remaining() >= MIN_STEP_S:
            ck.together_started = True
            start_together(ck, selected[1:])
    for job in ck.pending.values():  # started but never waited for (budget exhausted): stop them
        ck.kill(job)
        ck.finish(job)
    path = ck.write_json(final=True)
    doc = json.loads(path.read_text())
    print(f"{doc['mode']}: {doc['status']} in {doc['seconds']} s -> {path} and {ck.log_path}", flush=True)
    shutil.rmtree(ck.tmp, ignore_errors=True)
    return 0 if doc["status"] == "pass" else 1


# ------------------------------------------------------------------------------------------------------
# workers: run in their own process (so a hang is killed with its step)
# ------------------------------------------------------------------------------------------------------
def _version(dist: str, mod: str):
    """Installed version of a distribution (from its metadata: nothing is imported), else None."""
    from importlib import metadata
    from importlib.util import find_spec

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        try:
            return "installed (no metadata)" if find_spec(mod) else None
        except (ImportError, ValueError):
            return None


def _tool(cmd: list, timeout=30):
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        return r.stdout.strip() if r.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def worker_env() -> dict:
    import platform

    import torch

    info = {
        "python": platform.python_version(),
        "executable": sys.executable,
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "cuda_available": torch.cuda.is_available(),
        "triton_interpret": os.environ.get("TRITON_INTERPRET"),
    }
    for dist, mod in (
        ("triton", "triton"),
        ("numpy", "numpy"),
        ("onnx", "onnx"),
        ("onnxruntime", "onnxruntime"),
        ("onnxruntime-gpu", "onnxruntime"),
        ("onnxscript", "onnxscript"),
        ("tensorrt", "tensorrt"),
        ("pytest", "pytest"),
        ("pytest-benchmark", "pytest_benchmark"),
        ("pybind11", "pybind11"),
        ("pillow", "PIL"),
        ("safetensors", "safetensors"),
        ("scipy", "scipy"),
    ):
        info[dist] = _version(dist, mod)
    if info["onnxruntime"] or info["onnxruntime-gpu"]:
        import onnxruntime

        info["onnxruntime_providers"] = onnxruntime.get_available_providers()
    if info["cuda_available"]:
        p = torch.cuda.get_device_properties(0)
        cap = torch.cuda.get_device_capability(0)
        info["gpu"] = {
            "name": p.name,
            "capability": f"{cap[0]}.{cap[1]}",
            "arch": f"{cap[0]}{cap[1]}",
            "memory_gib": round(p.total_memory / 2**30, 1),
            "count": torch.cuda.device_count(),
            "multiprocessors": p.multi_processor_count,
        }
        info["cudnn_allow_tf32"] = torch.backends.cudnn.allow_tf32
        info["matmul_allow_tf32"] = torch.backends.cuda.matmul.allow_tf32
    smi = shutil.which("nvidia-smi")
    if smi:
        q = _tool([smi, "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"])
        info["nvidia_smi"] = q
        info["driver"] = q.split(",")[1].strip() if q and q.count(",") >= 2 else None
    home = next((os.environ[v] for v in ("CUDA_HOME", "CUDA_PATH") if os.environ.get(v)), None)
    nvcc = (
        os.path.join(home, "bin", "nvcc")
        if home and os.path.isfile(os.path.join(home, "bin", "nvcc"))
        else shutil.which("nvcc")
    )
    ver = _tool([nvcc, "--version"]) if nvcc else None
    info["nvcc"] = {
        "path": nvcc,
        "release": next((ln.strip() for ln in (ver or "").splitlines() if "release" in ln), None),
    }
    return info


def worker_engine(pairs_dir: str, max_pairs: int, device: str) -> dict:
    """Engine(device=device) against Engine(device="cpu") on up to ``max_pairs`` real pairs, spread over
    the sets (round-robin). Parity rule: ids identical and uint8 max |diff| <= 1."""
    import numpy as np
    import torch

    from tokfuse_rt import Engine
    from tokfuse_rt.train.data import find_pairs

    by_set: dict = {}
    for a, b in find_pairs(pairs_dir):
        by_set.setdefault(a.parent.parent.name, []).append((a, b))
    chosen = []
    while len(chosen) < max_pairs and any(by_set.values()):
        for s in sorted(by_set):
            if by_set[s] and len(chosen) < max_pairs:
                chosen.append((s, *by_set[s].pop(0)))

    def run(eng, ir, vis):
        t = time.perf_counter()
        fused, ids = eng.fuse_with_tokens(str(ir), str(vis))  # returns numpy: the device is synchronised
        return fused, ids, 1e3 * (time.perf_counter() - t)

    def compare(eng, ref_out):
        rows = []
        for (s, ir, vis), (f_ref, i_ref, ms_ref) in zip(chosen, ref_out):
            f, i, ms = run(eng, ir, vis)
            d = np.abs(f.astype(np.int16) - f_ref.astype(np.int16))
            same = bool(np.array_equal(i, i_ref))
            rows.append(
                {
                    "pair": f"{s}/{ir.name}",
                    "size": f"{f.shape[1]}x{f.shape[0]}",
                    "ids_equal": same,
                    "ids_differing": int((np.asarray(i) != np.asarray(i_ref)).sum()),
                    "max_abs_diff": int(d.max()),
                    "pixels_differing_pct": round(100.0 * float((d > 0).mean()), 4),
                    "ms_reference": round(ms_ref, 1),
                    "ms_engine": round(ms, 1),
                    "ok": same and int(d.max()) <= 1,
                }
            )
        return rows

    with Engine(device="cpu") as ref:
        ref_info = {k: ref.info().get(k) for k in ("backend", "device", "kernels", "threads")}
        ref_out = [run(ref, ir, vis) for _, ir, vis in chosen]
    with Engine(device=device) as eng:
        info = {k: eng.info().get(k) for k in ("backend", "device", "kernels")}
        run(eng, *chosen[0][1:])  # warm-up: kernel compilation, cuDNN algorithm choice
        rows = compare(eng, ref_out)
    out = {
        "device": device,
        "engine": info,
        "reference": ref_info,
        "pairs": rows,
        "max_abs_diff": max(r["max_abs_diff"] for r in rows),
        "all_ids_equal": all(r["ids_equal"] for r in rows),
        "rule": "per pair: token ids identical and fused uint8 max |diff| <= 1",
    }
    if device.startswith("cuda"):
        out["cudnn_allow_tf32"] = torch.backends.cudnn.allow_tf32
        if not all(r["ok"] for r in rows):  # diagnosis: TF32 convolution rounding or a real fault?
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cuda.matmul.allow_tf32 = False
            with Engine(device=device) as eng:
                out["tf32_off"] = [
                    {k: r[k] for k in ("pair", "ids_equal", "max_abs_diff", "ok")} for r in compare(eng, ref_out)
                ]
    return out


def make_pairs(dest: Path) -> int:
    """Copy a handful of real test pairs (PAIR_SETS) from shared/data/test into ``dest/test/<set>/``, and a
    few train pairs (TRAIN_SETS) into ``dest/train/<set>/`` for int8 calibration."""
    sys.path.insert(0, str(ROOT))
    from workspace import find_shared_data

    data = find_shared_data(start=ROOT)
    if data is None:
        print("gpu_check: error: shared/data not found (set TOKFUSE_SHARED)", file=sys.stderr)
        return 2
    from tokfuse_rt.pairing import find_set_dirs, pair_dirs

    n = 0
    for split, sets in (("test", PAIR_SETS), ("train", TRAIN_SETS)):
        for name, count in sets:
            try:
                ir_dir, vis_dir = find_set_dirs(data / split / name)
            except FileNotFoundError as e:
                print(f"gpu_check: warning: {e}; no {name} pairs", file=sys.stderr)
                continue
            for pair in pair_dirs(ir_dir, vis_dir).pairs[:count]:
                for src, side in ((pair.ir, ir_dir.name), (pair.vis, vis_dir.name)):
                    (dest / split / name / side).mkdir(parents=True, exist_ok=True)
                    shutil.copy2(src, dest / split / name / side / src.name)
                n += 1
    size = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())
    print(f"{n} pairs copied to {dest} ({size / 2**20:.1f} MiB)")
    return 0


def _step_timeout(text: str):
    name, _, secs = text.partition("=")
    if name not in {n for n, _, _ in STEPS}:
        raise argparse.ArgumentTypeError(f"unknown step {name!r}")
    try:
        return name, float(secs)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected STEP=SECONDS") from None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--out", default="out/gpu", help="output folder for gpu_check.json and gpu_check.log")
    ap.add_argument(
        "--pairs",
        default=None,
        help="folder of real pairs (default: $TOKFUSE_GPU_PAIRS, else shared/data/test beside the repository)",
    )
    ap.add_argument("--max-pairs", type=int, default=6, help="pairs for the engine parity step (default 6)")
    ap.add_argument("--budget", type=float, default=DEFAULT_BUDGET_S, help="seconds for all steps (default 450)")
    ap.add_argument(
        "--timeout",
        action="append",
        type=_step_timeout,
        metavar="STEP=SECONDS",
        help="override one step's timeout (repeatable)",
    )
    ap.add_argument("--dry-run", action="store_true", help="check the plumbing only (automatic without a GPU)")
    ap.add_argument("--steps", default=None, help="comma-separated subset of: " + ", ".join(n for n, _, _ in STEPS))
    ap.add_argument("--make-pairs", metavar="DIR", default=None, help="copy a few real test pairs into DIR and exit")
    ap.add_argument("--worker", choices=["env", "engine"], help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    ap.add_argument("--device", default="cuda", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)

    if a.worker:
        sys.path.insert(0, str(ROOT))
        res = worker_env() if a.worker == "env" else worker_engine(a.pairs, a.max_pairs, a.device)
        Path(a.result).write_text(json.dumps(res, indent=1, default=str))
        return 0
    if a.make_pairs:
        return make_pairs(Path(a.make_pairs).resolve())
    only = set(a.steps.split(",")) if a.steps else None
    unknown = (only or set()) - {n for n, _, _ in STEPS}
    if unknown:
        ap.error(f"unknown step(s): {', '.join(sorted(unknown))}")
    return run_steps(Check(a), only)


if __name__ == "__main__":
    raise SystemExit(main())
