"""Fuse a folder tree of pairs on Ray (shared/SPEC.md §9 "Batch").

    from tokfuse_rt.distributed import fuse_dir_ray
    rep = fuse_dir_ray("data/ir", "data/vi", "fused/", actors=2)   # local Ray, or the running cluster
    print(rep.summary())

The driver lists the pairs (``files.list_pairs``) and hands them to Ray Data; an actor pool, one
``Engine`` per actor (ONNX Runtime by default: the bundled model exported once with
``export.to_onnx``), fuses them and writes each output atomically where ``Engine.fuse_dir`` would
(``files.output_path``). A pair whose output already exists and decodes is skipped, so re-running
the same job resumes it. A bad pair is reported and the job carries on. An actor that dies is
restarted by Ray and its unfinished batches are retried; temporary files it left are removed.
"""
from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..engine import FuseReport
from . import files
from .cluster import ModelBlob, connected, resolve_model, worker_env

REPORT_NAME = "tokfuse-report.json"
STATUS_WRITTEN, STATUS_SKIPPED, STATUS_FAILED = "written", "skipped", "failed"


class FaultHook:
    """Test hook: ``TOKFUSE_FAULT_EXIT_AT=N`` makes a worker process die (``os._exit``) when it is
    about to write its N-th output, after leaving a half-written temporary file, as a process
    killed mid-write would. With ``TOKFUSE_FAULT_MARKER=PATH`` only the first process to create
    ``PATH`` dies (once per job, whatever Ray restarts); it writes its pid there. Unset: does nothing."""

    def __init__(self):
        at = os.environ.get("TOKFUSE_FAULT_EXIT_AT", "")
        self.at = int(at) if at.strip() else 0
        self.marker = os.environ.get("TOKFUSE_FAULT_MARKER") or None
        self.count = 0

    def before_write(self, out_path: Path) -> None:
        if not self.at:
            return
        self.count += 1
        if self.count != self.at:
            return
        if self.marker:
            try:
                fd = os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                return
            os.write(fd, str(os.getpid()).encode())
            os.close(fd)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        files.partial_path(out_path).write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
        os._exit(70)


class AttemptGuard:
    """Counts, in a small file beside each output, how often a worker started a pair without
    finishing it. Ray restarts a dead actor and retries its batch without limit; a pair that kills
    its worker every time (a poison pair) is reported as failed after ``max_attempts`` starts
    instead of being retried for ever. The counter files are temporaries (``clean_partials``)."""

    def __init__(self, max_attempts: int):
        self.max_attempts = max_attempts

    @staticmethod
    def _path(out: Path) -> Path:
        return out.with_name(f"{files.PARTIAL_PREFIX}attempts-{out.name}")

    def begin(self, out: Path) -> int:
        """Record one more start of ``out``'s pair; returns how many starts came before."""
        p = self._path(out)
        try:
            n = int(p.read_text() or 0)
        except (FileNotFoundError, ValueError):
            n = 0
        out.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(str(n + 1))
        return n

    def end(self, out: Path) -> None:
        self._path(out).unlink(missing_ok=True)


class PairFuser:
    """Ray Data actor: one Engine, fuses a batch of rows {name, ir, vis, out} and writes outputs.

    Returns one status row per input row: name, status (written | skipped | failed), error, pid.
    Pairs of the same size share backend calls (``Engine.fuse_batch``); a batch with a bad pair, or
    one retried after its worker died, is fused one pair at a time so that only the bad pair fails.
    """

    def __init__(self, model: ModelBlob, device: str = "auto", threads: int = 1, k: int | None = None,
                 engine_batch: int = 4, max_attempts: int = 3):
        from ..engine import Engine

        self.engine = Engine(model.local_path(), device=device, threads=threads, batch_size=engine_batch)
        self.k = k
        self.fault = FaultHook()
        self.guard = AttemptGuard(max_attempts)
        self.pid = os.getpid()

    def __call__(self, batch: dict) -> dict:
        rows = [dict(name=str(n), ir=str(a), vis=str(b), out=Path(str(o)))
                for n, a, b, o in zip(batch["name"], batch["ir"], batch["vis"], batch["out"])]
        status = {r["name"]: (STATUS_SKIPPED, "") for r in rows if files.output_done(r["out"])}
        todo = [r for r in rows if r["name"] not in status]
        retried = False
        for r in todo:
            before = self.guard.begin(r["out"])
            retried |= before > 0
            if before >= self.guard.max_attempts:
                status[r["name"]] = (STATUS_FAILED, f"its worker process died {before} times while fusing it")
                self.guard.end(r["out"])
        todo = [r for r in todo if r["name"] not in status]
        groups = [[r] for r in todo] if retried else [todo]
        for group in groups:
            for r, res in zip(group, self._fuse(group)):
                status[r["name"]] = self._write(r["out"], res) if not isinstance(res, tuple) else res
                self.guard.end(r["out"])
        names = [r["name"] for r in rows]
        return {"name": names, "status": [status[n][0] for n in names],
                "error": [status[n][1] for n in names], "pid": [self.pid] * len(names)}

    def _fuse(self, rows) -> list:
        """Fused uint8 image, or a (failed, message) status, for each row. The engine reads the files
        itself, so outputs are exactly those of ``Engine.fuse(ir_path, vis_path)``."""
        pairs = [(r["ir"], r["vis"]) for r in rows]
        try:
            return self.engine.fuse_batch(pairs, k=self.k)
        except (ValueError, TypeError, OSError):          # a bad pair: fuse one by one to name it
            pass
        out = []
        for a, b in pairs:
            try:
                out.append(self.engine.fuse(a, b, k=self.k))
            except (ValueError, TypeError, OSError) as e:
                out.append((STATUS_FAILED, str(e)))
        return out

    def _write(self, out: Path, img) -> tuple:
        try:
            self.fault.before_write(out)
            files.write_output_atomic(img, out)
        except (ValueError, OSError) as e:
            return STATUS_FAILED, f"writing {out}: {e}"
        return STATUS_WRITTEN, ""


@dataclass
class RayFuseReport(FuseReport):
    """``FuseReport`` of a Ray job, plus the pairs skipped as already done and run figures."""

    skipped: list = field(default_factory=list)
    seconds: float = 0.0
    actors: int = 0
    worker_pids: list = field(default_factory=list)
    partials_removed: int = 0
    report_path: str | None = None

    @property
    def pairs_per_s(self) -> float:
        return len(self.written) / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        s = (f"{len(self.written)} fused, {len(self.skipped)} already done, {len(self.failed)} failed, "
             f"{len(self.unpaired)} unpaired in {self.seconds:.1f} s ({self.pairs_per_s:.2f} pairs/s, "
             f"{self.actors} actors)")
        lines = [s] + [f"  failed {n}: {m}" for n, m in self.failed] + [f"  unpaired {n}" for n in self.unpaired]
        return "\n".join(lines)

    def to_json(self) -> dict:
        return {
            "summary": {"fused": len(self.written), "already_done": len(self.skipped), "failed": len(self.failed),
                        "unpaired": len(self.unpaired), "seconds": round(self.seconds, 3),
                        "pairs_per_s": round(self.pairs_per_s, 3), "actors": self.actors,
                        "worker_processes": len(self.worker_pids), "partials_removed": self.partials_removed},
            "failed": [{"pair": n, "error": m} for n, m in self.failed],
            "unpaired": list(self.unpaired),
        }


def fuse_dir_ray(ir_dir, vis_dir, out_dir, *, model=None, k: int | None = None, device: str = "auto",
                 address: str | None = "auto",
                 actors: int | None = None, threads_per_actor: int = 1, batch_size: int = 4, ext: str = ".png",
                 report=None, progress: bool = True, max_attempts: int = 3) -> RayFuseReport:
    """Fuse every pair of the folder trees ``ir_dir`` / ``vis_dir`` into ``out_dir`` on Ray.

    ``model``: a model file (.onnx for ONNX Runtime, .safetensors, ...); None: the bundled default
    exported to ONNX once (``cluster.default_onnx``). ``device``: the actors' engine device ("auto":
    CUDA when the backend finds it, else CPU). ``address``: "auto" (the running cluster, else
    a local Ray instance for this call) or a cluster address; ignored when Ray is already initialised
    in this process. ``actors``: size of the actor pool (default: the cluster's CPUs divided by
    ``threads_per_actor``). ``batch_size``: pairs per actor call. ``report``: JSON report path
    (default ``out_dir/tokfuse-report.json``; False: none). ``max_attempts``: a pair whose worker
    process died this many times while fusing it is reported as failed (``AttemptGuard``).
    """
    for nm, v, lo in (("threads_per_actor", threads_per_actor, 1), ("batch_size", batch_size, 1),
                      ("max_attempts", max_attempts, 1)):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise ValueError(f"{nm} must be an int >= {lo}, got {v!r}")
    if actors is not None and (isinstance(actors, bool) or not isinstance(actors, int) or actors < 1):
        raise ValueError(f"actors must be a positive int or None, got {actors!r}")
    files.check_ext(ext)
    out_dir = files.check_output_dir(out_dir, ir_dir, vis_dir)
    pairs, unpaired = files.list_pairs(ir_dir, vis_dir)
    model_path = resolve_model(model)
    k = _check_k(model_path, k)
    out_dir.mkdir(parents=True, exist_ok=True)
    files.clean_partials(out_dir)           # left by an interrupted run of this job
    rep = RayFuseReport(unpaired=unpaired)
    t0 = time.perf_counter()
    if pairs:                               # nothing to fuse: no Ray needed
        with connected(address) as ray:
            n_actors = actors or max(1, int(ray.cluster_resources().get("CPU", 1)) // threads_per_actor)
            rep.actors = n_actors
            existed = {n for n, _, _ in pairs if files.output_path(out_dir, n, ext).exists()}
            rows = _run(ray, pairs, out_dir, ext, ModelBlob.put(model_path), k, device, n_actors,
                        threads_per_actor, batch_size, max_attempts, progress)
            _collect(rep, pairs, out_dir, ext, rows, existed)
    rep.partials_removed = files.clean_partials(out_dir)
    rep.seconds = time.perf_counter() - t0
    if report is not False:
        path = Path(report) if report else out_dir / REPORT_NAME
        _write_json(path, rep.to_json())
        rep.report_path = str(path)
    return rep


def _check_k(model_path: Path, k):
    """Open the model once on the driver: a corrupt file or a bad ``k`` fails here, clearly."""
    from ..engine import Engine

    with Engine(model_path, device="cpu", threads=1) as eng:
        return eng._k(k) if k is not None else None


def _run(ray, pairs, out_dir, ext, blob, k, device, n_actors, threads, batch_size, max_attempts, progress) -> list:
    import ray.data

    items = [{"name": n, "ir": str(a), "vis": str(b), "out": str(files.output_path(out_dir, n, ext))}
             for n, a, b in pairs]
    ctx = ray.data.DataContext.get_current()
    saved = (ctx.enable_progress_bars, ctx.print_on_execution_start, ctx.max_errored_blocks)
    log = logging.getLogger("ray.data")             # our own progress bar and summary replace its chatter
    saved_level = log.level
    log.setLevel(logging.ERROR)
    ctx.enable_progress_bars, ctx.print_on_execution_start = False, False
    ctx.max_errored_blocks = -1           # a batch that fails for good must not stop the others
    try:
        ds = ray.data.from_items(items, override_num_blocks=max(1, math.ceil(len(items) / batch_size)))
        # Ray Data's actor pools restart dead actors and retry their batches (max_restarts and
        # max_task_retries -1 by default); AttemptGuard bounds the retries of a poison pair.
        ds = ds.map_batches(PairFuser, batch_size=batch_size, batch_format="numpy",
                            compute=ray.data.ActorPoolStrategy(size=n_actors), num_cpus=threads,
                            runtime_env=worker_env() or None,
                            fn_constructor_kwargs={"model": blob, "device": device, "threads": threads, "k": k,
                                                   "engine_batch": batch_size, "max_attempts": max_attempts})
        bar = _bar(len(items), progress)
        rows = []
        for row in ds.iter_rows():
            rows.append(row)
            bar.update(1)
        bar.close()
    finally:
        ctx.enable_progress_bars, ctx.print_on_execution_start, ctx.max_errored_blocks = saved
        log.setLevel(saved_level)
    return rows


def _collect(rep: RayFuseReport, pairs, out_dir, ext, rows, existed: set) -> None:
    """Fold the status rows into ``rep``. A pair skipped because its output was whole counts as
    already done only if that output ``existed`` before the job (else an earlier attempt of this
    job, whose worker then died, wrote it). A pair without a status row (its batch failed for good,
    e.g. an error Ray does not retry) counts as written if its output is whole, else as failed."""
    seen, pids = {}, set()
    for r in rows:
        seen[str(r["name"])] = (str(r["status"]), str(r["error"]))
        pids.add(int(r["pid"]))
    rep.worker_pids = sorted(pids)
    for name, _, _ in pairs:
        out = files.output_path(out_dir, name, ext)
        st, err = seen.get(name, (None, ""))
        if st is None:
            st, err = ((STATUS_WRITTEN, "") if files.output_done(out) else
                       (STATUS_FAILED, "its batch failed on the worker (see the Ray logs)"))
        if st == STATUS_WRITTEN or (st == STATUS_SKIPPED and name not in existed):
            rep.written.append(out)
        elif st == STATUS_SKIPPED:
            rep.skipped.append(out)
        else:
            rep.failed.append((name, err))


def _write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = files.partial_path(path)
    tmp.write_text(json.dumps(obj, indent=2))
    os.replace(tmp, path)


class _NullBar:
    def update(self, n):
        pass

    def close(self):
        pass


def _bar(total: int, enabled: bool):
    if not enabled:
        return _NullBar()
    from tqdm import tqdm

    return tqdm(total=total, desc="fusing (ray)", unit="pair", file=sys.stderr)


__all__ = ["fuse_dir_ray", "RayFuseReport", "PairFuser", "FaultHook"]
