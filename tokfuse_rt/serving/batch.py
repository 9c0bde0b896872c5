"""Fuse a folder tree of pairs on Ray.

    from tokfuse_rt.serving import fuse_dir_ray
    rep = fuse_dir_ray("data/ir", "data/vi", "fused/", actors=2)   # local Ray, or the running cluster
    print(rep.summary())

The same job as ``Engine.fuse_dir``, on an actor pool: the driver pairs the two trees
(``pairing.pair_trees``: each folder by ``pairing.pair_dirs``; ambiguous stems reported, not fused)
and hands the pairs to Ray Data; each actor holds one ``Engine`` (ONNX Runtime by default: the
bundled model exported once with ``export.to_onnx``), fuses its batches and writes each output with
``outputs.save_image`` to ``out_dir/<stem><ext>`` (the names, formats and quality of ``fuse_dir``,
sub-folders mirrored). A pair whose output exists and decodes (``outputs.output_ok``) is skipped
unless ``overwrite``, so re-running resumes. A bad pair is reported and the job carries on. An actor
that dies is restarted by Ray and its unfinished batches are retried; temporaries of dead writers
are removed (``outputs.remove_stale_temps``). The report is a ``FuseReport`` (same summary and JSON
as ``fuse_dir``) with a ``ray`` section.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from .. import jobs
from ..engine import DEFAULT_TILE, FuseReport
from ..imageio import DEFAULT_MAX_PIXELS
from ..outputs import atomic_write, output_ok
from ..progress import progress_bar
from .cluster import ModelBlob, check_address, connected, import_ray, resolve_model

ATTEMPTS_DIR = ".tokfuse-attempts"


class AttemptGuard:
    """Counts how often a worker started a pair without finishing it. Ray restarts a dead actor and
    retries its batch without limit; a pair that kills its worker every time (a poison pair) is
    reported as failed after ``max_attempts`` starts instead of being retried for ever.

    The counters are small files in ``folder`` (``out_dir/.tokfuse-attempts``, shared by every node
    like the outputs), one per pair under a fixed name derived from the pair's name: unlike output
    temporaries they must be found again by the restarted process, so they cannot take
    ``atomic_write``'s unpredictable names (they are written through it, though: no symlink is
    followed). The driver empties the folder before a job and removes it after."""

    def __init__(self, folder, max_attempts: int):
        self.folder = Path(folder)
        self.max_attempts = max_attempts

    def _path(self, name: str) -> Path:
        return self.folder / hashlib.sha256(name.encode()).hexdigest()[:24]

    def begin(self, name: str) -> int:
        """Record one more start of pair ``name``; returns how many starts came before."""
        try:
            n = int(self._path(name).read_text() or 0)
        except (OSError, ValueError):
            n = 0
        atomic_write(self._path(name), lambda f: f.write(str(n + 1).encode()))
        return n

    def end(self, name: str) -> None:
        self._path(name).unlink(missing_ok=True)

    @staticmethod
    def reset(folder) -> None:
        """Remove ``folder`` and what it holds (counters of an earlier job)."""
        d = Path(folder)
        if d.is_symlink():
            d.unlink()
        shutil.rmtree(d, ignore_errors=True)


class PairFuser:
    """Ray Data actor: one Engine; fuses a batch of rows {name, ir, vis, out} and writes the outputs
    with ``jobs.fuse_and_write`` (the step plain ``fuse-dir`` runs), after ``AttemptGuard`` has set
    aside the pairs whose worker died too often. A batch retried after its worker died is fused one
    pair at a time so that only the bad pair fails.

    Returns one status row per input row: name, status (written | skipped | failed), error,
    warnings (JSON list of the pair's reading warnings), pid. ``before_write(path)``: called before
    each output is written (fault-injection tests hand one in; None in use).
    """

    def __init__(
        self,
        model: ModelBlob,
        attempts_dir,
        device: str = "auto",
        threads: int = 1,
        k: int | None = None,
        engine_batch: int = 4,
        max_attempts: int = 3,
        overwrite: bool = False,
        quality: int | None = None,
        engine_options: dict | None = None,
        before_write=None,
    ):
        from ..engine import Engine

        self.engine = Engine(
            model.local_path(), device=device, threads=threads, batch_size=engine_batch, **(engine_options or {})
        )
        self.k, self.overwrite, self.quality = k, overwrite, quality
        self.before_write = before_write
        self.guard = AttemptGuard(attempts_dir, max_attempts)
        self.pid = os.getpid()

    def __call__(self, batch: dict) -> dict:
        rows = [
            dict(name=str(n), ir=str(a), vis=str(b), out=Path(str(o)))
            for n, a, b, o in zip(batch["name"], batch["ir"], batch["vis"], batch["out"])
        ]
        status = {}
        if not self.overwrite:
            status = {r["name"]: (jobs.SKIPPED, "", []) for r in rows if output_ok(r["out"])}
        retried = False
        todo = []
        for r in rows:
            if r["name"] in status:
                continue
            before = self.guard.begin(r["name"])
            retried |= before > 0
            if before >= self.guard.max_attempts:
                status[r["name"]] = (jobs.FAILED, f"its worker process died {before} times while fusing it", [])
                self.guard.end(r["name"])
            else:
                todo.append(r)
        status.update(
            jobs.fuse_and_write(
                self.engine,
                todo,
                self.k,
                overwrite=True,  # outputs already whole were set aside above
                quality=self.quality,
                one_by_one=retried,
                before_write=self.before_write,
            )
        )
        for r in todo:
            self.guard.end(r["name"])
        names = [r["name"] for r in rows]
        return {
            "name": names,
            "status": [status[n][0] for n in names],
            "error": [status[n][1] for n in names],
            "warnings": [json.dumps(status[n][2]) for n in names],
            "pid": [self.pid] * len(names),
        }


@dataclass
class RayFuseReport(FuseReport):
    """``FuseReport`` of a Ray job (same summary, same JSON keys), plus run figures: seconds, pairs/s,
    actors and worker processes (a ``ray`` section in the JSON)."""

    seconds: float = 0.0
    actors: int = 0
    worker_pids: list = field(default_factory=list)
    report_path: str | None = None

    @property
    def pairs_per_s(self) -> float:
        return len(self.written) / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        first, *rest = super().summary().split("\n")
        return "\n".join(
            [f"{first} in {self.seconds:.1f} s ({self.pairs_per_s:.2f} pairs/s, {self.actors} actors)", *rest]
        )

    def to_dict(self) -> dict:
        d = super().to_dict()
        d["ray"] = {
            "seconds": round(self.seconds, 3),
            "pairs_per_s": round(self.pairs_per_s, 3),
            "actors": self.actors,
            "worker_processes": len(self.worker_pids),
        }
        return d


def fuse_dir_ray(
    ir_dir,
    vis_dir,
    out_dir,
    *,
    model=None,
    k: int | None = None,
    device: str = "auto",
    address: str | None = "auto",
    actors: int | None = None,
    threads_per_actor: int = 1,
    batch_size: int = 4,
    ext: str = ".png",
    overwrite: bool = False,
    quality: int | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    depth: str = "auto",
    tile_size: int | None = DEFAULT_TILE,
    align=None,
    report_path=None,
    recursive: bool = False,
    progress: bool = True,
    max_attempts: int = 3,
    before_write=None,
) -> RayFuseReport:
    """Fuse every pair of the folders ``ir_dir`` / ``vis_dir`` (with ``recursive``: the folder trees,
    sub-folders mirrored) into ``out_dir`` on Ray.

    Outputs, resume (``overwrite``), ``ext``, ``quality``, the reading options (``max_pixels``,
    ``depth``, ``tile_size``) and the report (``report_path``: default
    ``out_dir/tokfuse-report.json``; False: none) are those of ``Engine.fuse_dir``. ``model``: a
    model file (.onnx for ONNX Runtime, .safetensors, ...); None: the bundled default exported to
    ONNX once (``cluster.default_onnx``). ``device``: the actors' engine device. ``address``: "auto"
    (the running cluster, else a local Ray instance for this call) or a cluster address; ignored
    when Ray is already initialised in this process. ``actors``: size of the actor pool (default: the
    cluster's CPUs divided by ``threads_per_actor``). ``batch_size``: pairs per actor call.
    ``max_attempts``: a pair whose worker process died this many times while fusing it is reported
    as failed (``AttemptGuard``). ``align``: a camera rig (path or ``Rig``) every actor applies, as
    ``Engine(align=...)``. ``before_write(path)``: a picklable callable each actor runs before writing an
    output (fault-injection tests). Everything is checked before Ray starts; the job's steps are those
    of :mod:`tokfuse_rt.jobs`, as in plain ``Engine.fuse_dir``.
    """
    job = jobs.plan(
        ir_dir,
        vis_dir,
        out_dir,
        ext=ext,
        quality=quality,
        overwrite=overwrite,
        report_path=report_path,
        recursive=recursive,
    )
    return fuse_job_ray(
        job,
        model=model,
        k=k,
        device=device,
        address=address,
        actors=actors,
        threads_per_actor=threads_per_actor,
        batch_size=batch_size,
        max_pixels=max_pixels,
        depth=depth,
        tile_size=tile_size,
        align=align,
        progress=progress,
        max_attempts=max_attempts,
        before_write=before_write,
    )


def fuse_job_ray(
    job,
    *,
    model=None,
    k: int | None = None,
    device: str = "auto",
    address: str | None = "auto",
    actors: int | None = None,
    threads_per_actor: int = 1,
    batch_size: int = 4,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    depth: str = "auto",
    tile_size: int | None = DEFAULT_TILE,
    align=None,
    progress: bool = True,
    max_attempts: int = 3,
    before_write=None,
) -> RayFuseReport:
    """Run a fuse-dir job planned by ``tokfuse_rt.jobs.plan`` on Ray (``fuse_dir_ray`` = plan + this; the
    options as there). Everything is checked before Ray starts."""
    for nm, v, lo in (
        ("threads_per_actor", threads_per_actor, 1),
        ("batch_size", batch_size, 1),
        ("max_attempts", max_attempts, 1),
    ):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise ValueError(f"{nm} must be an int >= {lo}, got {v!r}")
    if actors is not None and (isinstance(actors, bool) or not isinstance(actors, int) or actors < 1):
        raise ValueError(f"actors must be a positive int or None, got {actors!r}")
    model_path = resolve_model(model)
    engine_options = {"max_pixels": max_pixels, "depth": depth, "tile_size": tile_size}
    if align is not None:
        from ..rig import as_rig

        engine_options["align"] = as_rig(align)
    backend, k = _check_model(model_path, k, engine_options)
    if address not in (None, "", "auto", "local") and not import_ray().is_initialized():
        check_address(address)  # fail fast, before anything is written
    job.start()
    attempts_dir = job.out_dir / ATTEMPTS_DIR
    AttemptGuard.reset(attempts_dir)
    rep = RayFuseReport(unpaired=list(job.unpaired), ambiguous=list(job.ambiguous))
    started = _dt.datetime.now().isoformat(timespec="seconds")
    existed = {n for n, t in job.targets.items() if t.exists()}
    rows: list = []
    t0 = time.perf_counter()
    try:
        if job.pairs:  # nothing to fuse: no Ray needed
            with connected(address, host="127.0.0.1") as ray:  # a local instance: loopback only
                rep.actors = actors or max(1, int(ray.cluster_resources().get("CPU", 1)) // threads_per_actor)
                options = {
                    "attempts_dir": str(attempts_dir),
                    "device": device,
                    "threads": threads_per_actor,
                    "k": k,
                    "engine_batch": batch_size,
                    "max_attempts": max_attempts,
                    "overwrite": job.overwrite,
                    "quality": job.quality,
                    "engine_options": engine_options,
                    "before_write": before_write,
                }
                _run(ray, job, ModelBlob.put(model_path), options, rep.actors, batch_size, progress, rows)
    except BaseException:
        rep.interrupted = True
        raise
    finally:
        rep.seconds = time.perf_counter() - t0
        _collect(rep, job, rows, existed)
        AttemptGuard.reset(attempts_dir)
        rep.report_path = str(job.report_path) if job.report_path else None
        jobs.finish(
            job,
            rep,
            model=model_path,
            backend=backend,
            k=k,
            started=started,
            finished=_dt.datetime.now().isoformat(timespec="seconds"),
        )
    return rep


def _check_model(model_path: Path, k, engine_options: dict):
    """Open the model once on the driver with the actors' options: a corrupt file, a bad option or
    a bad ``k`` fails here, clearly, before Ray starts. Returns (backend name, k resolved)."""
    from ..engine import Engine

    with Engine(model_path, device="cpu", threads=1, **engine_options) as eng:
        return eng.info()["backend"], eng.resolve_k(k)


def _run(ray, job, blob, options, n_actors, batch_size, progress, rows) -> None:
    """Run the job, appending the status rows to ``rows`` as they come (kept if interrupted)."""
    import ray.data

    items = [dict(r, out=str(r["out"])) for r in job.rows()]
    ctx = ray.data.DataContext.get_current()
    saved = (ctx.enable_progress_bars, ctx.print_on_execution_start, ctx.max_errored_blocks)
    log = logging.getLogger("ray.data")  # our own progress bar and summary replace its chatter
    saved_level = log.level
    log.setLevel(logging.ERROR)
    ctx.enable_progress_bars, ctx.print_on_execution_start = False, False
    ctx.max_errored_blocks = -1  # a batch that fails for good must not stop the others
    bar = progress_bar(enabled=progress, desc="fusing (ray)", unit="pair", total=len(items))
    try:
        ds = ray.data.from_items(items, override_num_blocks=max(1, math.ceil(len(items) / batch_size)))
        # Ray Data's actor pools restart dead actors and retry their batches (max_restarts and
        # max_task_retries -1 by default); AttemptGuard bounds the retries of a poison pair.
        ds = ds.map_batches(
            PairFuser,
            batch_size=batch_size,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=n_actors),
            num_cpus=options["threads"],
            fn_constructor_kwargs={"model": blob, **options},
        )
        for row in ds.iter_rows():
            rows.append(row)
            bar.update(1)
    finally:
        bar.close()
        ctx.enable_progress_bars, ctx.print_on_execution_start, ctx.max_errored_blocks = saved
        log.setLevel(saved_level)


def _collect(rep: RayFuseReport, job, rows, existed: set) -> None:
    """Fold the status rows into ``rep`` (``jobs.record``). A pair skipped because its output was whole
    counts as already done only if that output ``existed`` before the job (else an earlier attempt of
    this job, whose worker then died, wrote it). A pair without a status row: after an interruption it
    was not reached (left out); otherwise its batch failed for good (e.g. an error Ray does not retry)
    and it counts as written if its output is whole and new, already done if it was whole before
    (not with ``overwrite``), else as failed."""
    seen, pids = {}, set()
    for r in rows:
        seen[str(r["name"])] = (str(r["status"]), str(r["error"]), json.loads(str(r["warnings"])))
        pids.add(int(r["pid"]))
    rep.worker_pids = sorted(pids)
    for pair in job.pairs:
        st = seen.get(pair.name)
        if st is None:
            if rep.interrupted:
                continue
            out = job.targets[pair.name]
            if output_ok(out) and (pair.name not in existed or not job.overwrite):
                st = (jobs.SKIPPED, "", [])
            else:
                st = (jobs.FAILED, "its batch failed on the worker (see the Ray logs)", [])
        jobs.record(rep, job, pair.name, st, existed=pair.name in existed)


__all__ = ["fuse_dir_ray", "fuse_job_ray", "RayFuseReport", "PairFuser", "AttemptGuard"]
