"""``fuse-dir`` as one job, wherever it runs (``Engine.fuse_dir`` here, ``fuse_dir_ray`` on Ray actors):

1. :func:`plan`: validate everything (output extension and quality, input folders, the output folder
   and the report path, neither inside an input folder), pair the folders (``pairing.pair_dirs``, or
   ``pairing.pair_trees`` with ``recursive``: sub-folders mirrored in the output) and name each
   output ``out_dir/<stem><ext>``. Nothing is written and no model is loaded.
2. :meth:`Job.start`: create the output folders and remove the temporaries of killed runs.
3. :func:`fuse_and_write`: for a batch of pairs, skip those whose output exists and decodes (unless
   ``overwrite``), read each pair alone (its errors and warnings are its own), fuse the batch through
   ``Engine.fuse_batch`` (pairs of one size share backend calls; a failed call is retried pair by pair
   so only the bad pair fails) and write each output atomically. One status per pair.
4. :func:`finish`: the JSON report (``out_dir/tokfuse-report.json`` unless given), written even when
   the run was interrupted; :func:`exit_code` is the one rule for the CLI's exit status.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

REPORT_NAME = "tokfuse-report.json"
WRITTEN, SKIPPED, FAILED = "written", "skipped", "failed"


@dataclass
class Job:
    """A planned fuse-dir job (see :func:`plan`). ``targets``: {pair name: output path}."""

    ir_dir: Path
    vis_dir: Path
    out_dir: Path
    ext: str
    quality: int | None
    overwrite: bool
    report_path: Path | None  # None: no JSON report
    pairs: list
    unpaired: list
    ambiguous: list
    targets: dict
    removed_temps: list = field(default_factory=list)

    @property
    def folders(self) -> list[Path]:
        """The output folder and every sub-folder an output goes to."""
        return sorted({self.out_dir} | {t.parent for t in self.targets.values()})

    def start(self) -> Job:
        """Create the output folders; remove temporaries left there by killed runs."""
        from .outputs import remove_stale_temps

        for d in self.folders:
            d.mkdir(parents=True, exist_ok=True)
        self.removed_temps += [p for d in self.folders for p in remove_stale_temps(d)]
        return self

    def rows(self, pairs=None) -> list[dict]:
        """{name, ir, vis, out} for ``pairs`` (default: all), the unit :func:`fuse_and_write` takes."""
        return [
            {"name": p.name, "ir": str(p.ir), "vis": str(p.vis), "out": self.targets[p.name]}
            for p in (self.pairs if pairs is None else pairs)
        ]


def plan(
    ir_dir,
    vis_dir,
    out_dir,
    *,
    ext: str = ".png",
    quality: int | None = None,
    overwrite: bool = False,
    report_path=None,
    recursive: bool = False,
) -> Job:
    """Validate and pair; raises ValueError / FileNotFoundError / NotADirectoryError naming the bad input.
    ``report_path``: None for ``out_dir/tokfuse-report.json``, False for no report."""
    from .outputs import check_output_dir, check_output_ext, check_quality, check_report_path
    from .pairing import pair_dirs, pair_trees

    ext = check_output_ext(ext)
    quality = check_quality(quality)
    pairing = (pair_trees if recursive else pair_dirs)(ir_dir, vis_dir)
    out_dir = check_output_dir(out_dir, ir_dir, vis_dir)
    if report_path is None:
        report_path = out_dir / REPORT_NAME
    if report_path is not False:
        report_path = check_report_path(report_path, ir_dir, vis_dir)
    return Job(
        ir_dir=Path(ir_dir),
        vis_dir=Path(vis_dir),
        out_dir=out_dir,
        ext=ext,
        quality=quality,
        overwrite=bool(overwrite),
        report_path=None if report_path is False else Path(report_path),
        pairs=list(pairing.pairs),
        unpaired=list(pairing.unpaired),
        ambiguous=list(pairing.ambiguous),
        targets={p.name: out_dir / (p.stem + ext) for p in pairing.pairs},
    )


def fuse_and_write(
    engine,
    rows: list[dict],
    k,
    *,
    overwrite: bool,
    quality,
    one_by_one: bool = False,
    before_write=None,
    on_done=None,
) -> dict:
    """Fuse and write a batch of ``rows`` ({name, ir, vis, out}) with ``engine``.

    Returns {name: (status, message, [warnings])}: status ``written``, ``skipped`` (the output exists and
    decodes; not with ``overwrite``) or ``failed`` (message: why, one line). Never raises for a pair.
    ``one_by_one``: fuse each pair alone (a batch retried after its worker died). ``before_write(path)``:
    called before each output is written (fault-injection tests). ``on_done(name, status)``: called as
    each pair's status is known (so an interrupted batch still reports the pairs it finished)."""
    from .outputs import output_ok, save_image
    from .runner import one_line

    status: dict = {}

    def done(name, st):
        status[name] = st
        if on_done is not None:
            on_done(name, st)

    if not overwrite:
        for r in rows:
            if output_ok(r["out"]):
                done(r["name"], (SKIPPED, "", []))
    ready = []
    for r in rows:
        if r["name"] in status:
            continue
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                p, err = engine.prepare(r["ir"], r["vis"]), None
            except Exception as e:  # noqa: BLE001 - one pair never stops the batch
                p, err = None, one_line(e)
        warns = [str(w.message) for w in caught]
        if err is not None:
            done(r["name"], (FAILED, err, warns))
        else:
            ready.append((r, p, warns))
    for group in [[x] for x in ready] if one_by_one else [ready]:
        for (r, _, warns), res in zip(group, _fuse(engine, group, k)):
            if not isinstance(res, tuple):
                try:
                    if before_write is not None:
                        before_write(r["out"])
                    save_image(res, r["out"], quality)
                    res = (WRITTEN, "")
                except Exception as e:  # noqa: BLE001 - a write error fails this pair only
                    res = (FAILED, one_line(e))
            done(r["name"], (*res, warns))
    return status


def _fuse(engine, group, k) -> list:
    """Fused image, or a (failed, message) status, for each (row, prepared pair, warnings) of ``group``."""
    from .runner import one_line

    if not group:
        return []
    try:
        return engine.fuse_batch([p for _, p, _ in group], k=k)
    except Exception as e:  # noqa: BLE001 - name the bad pair: fuse one by one
        if len(group) == 1:
            return [(FAILED, one_line(e))]
    return [_fuse(engine, [x], k)[0] for x in group]


def record(report, job: Job, name: str, status: tuple, existed: bool = True) -> None:
    """Fold one pair's (status, message, warnings) into a ``FuseReport``. A ``skipped`` pair whose output
    did not exist when the job started (an earlier attempt of this job wrote it) counts as written."""
    st, msg, warns = status
    out = job.targets[name]
    report.warnings += [(name, w) for w in warns]
    if st == WRITTEN or (st == SKIPPED and not existed):
        report.written.append(out)
    elif st == SKIPPED:
        report.skipped.append(out)
    else:
        report.failed.append((name, msg))


def finish(job: Job, report, **run_info) -> None:
    """End of a job (also when interrupted): remove temporaries this job left, write the JSON report."""
    from .outputs import remove_stale_temps

    report.removed_temps = list(job.removed_temps) + [p for d in job.folders for p in remove_stale_temps(d)]
    if job.report_path is not None:
        report.save_json(job.report_path, ir_dir=job.ir_dir, vis_dir=job.vis_dir, out_dir=job.out_dir, **run_info)


def exit_code(report) -> int:
    """The CLI's exit status for a fuse-dir report: 130 interrupted, 1 when a pair failed or a stem was
    ambiguous, else 0 (files without a partner are listed in the report; they are not an error)."""
    if report.interrupted:
        return 130
    return 1 if report.failed or report.ambiguous else 0
