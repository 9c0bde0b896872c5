"""``tokfuse eval``: fusion metrics over a folder of fused images, or over an engine run on a test set.

Two modes::

    tokfuse eval --fused DIR --ir DIR --vis DIR [-o report.md] [--figure report.png]
    tokfuse eval --model PATH|default --set DIR [--keep DIR] [--k K] [-o report.md]

ir and vis files pair up as in ``fuse-dir`` (exact file name, then stem: :mod:`tokfuse_rt.pairing`),
fused images by stem; every format ``fuse`` reads, gray or RGB, read as luminance under the default
convention.  Unpaired, ambiguous, unreadable or mismatched files are reported on stderr and in the
report, and skipped.  The report is a Markdown table (one row per image, then a
``mean ± std`` row); the figure (a PNG, by default beside the report) has one bar chart per metric.
The mean row goes to stdout, progress bars to stderr.

Exit status: 0 when at least one image was evaluated (even if others were skipped), 1 otherwise.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

from ..pairing import find_set_dirs
from .eval_report import mean_lines, write_report
from .options import add_deprecated_alias, add_device, add_k, add_model, add_output, add_threads, model_path

EPILOG = """examples:
  tokfuse eval --fused out/TNO --ir ../shared/data/test/TNO/ir --vis ../shared/data/test/TNO/vi -o tno.md
  tokfuse eval --model default --set ../shared/data/test/TNO -o tno.md --keep out/TNO
  tokfuse eval --model model.onnx --set ../shared/data/test/Harvard_MRI_PET --k 4 --metrics EN,SD,VIF,Qabf,SSIM
  tokfuse eval --fused fused.mp4 --ir ir.mp4 --vis vis.mp4 -o video.md        (videos: + BiSWE)
  tokfuse eval --model model.onnx --ir ir.mp4 --vis vis.mp4 --reuse off -o video.md
"""


def register(subparsers, help: str) -> None:
    from ..metrics import CONVENTIONS, METRICS

    e = subparsers.add_parser(
        "eval",
        help=help,
        description="Evaluate fused images against their sources (EN, SD, SF, AG, MI, SCD, VIF, Qabf, SSIM, "
        "PSNR, CC, MSE, Nabf). Either give --fused/--ir/--vis folders, or --model and --set to "
        "fuse a test set on the fly. Files pair up by name (stem); unpaired or unreadable files "
        "are reported and skipped.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = e.add_argument_group("images")
    src.add_argument("--fused", default=None, help="folder of fused images (mode 1)")
    src.add_argument("--ir", default=None, help="folder of infrared (or MRI) images")
    src.add_argument("--vis", default=None, help="folder of visible (or second-modality) images")
    eng = e.add_argument_group("fuse on the fly (mode 2)")
    model = add_model(
        eng, help="model file (.safetensors, .onnx, .plan) or 'default' (the bundled model; also -m alone) to fuse with"
    )
    add_deprecated_alias(eng, "--engine", model)
    eng.add_argument(
        "--set",
        dest="set_dir",
        default=None,
        metavar="DIR",
        help="test-set folder with ir/ + vi/ (or a/ + b/) sub-folders; alternatively give --ir and --vis",
    )
    eng.add_argument(
        "--keep",
        default=None,
        metavar="DIR",
        help="also write the fused images here (default: a temporary folder, deleted)",
    )
    add_k(eng)
    add_device(eng)
    add_threads(eng)
    from .eval_video import add_video_args

    add_video_args(e)
    out = e.add_argument_group("output")
    output = add_output(out, default="report.md", help="Markdown report (default: ./report.md)")
    add_deprecated_alias(out, "--out", output)
    out.add_argument("--figure", default=None, help="PNG figure (default: beside the report, same name with .png)")
    out.add_argument("--no-figure", action="store_true", help="do not write the figure")
    out.add_argument(
        "--convention", default="cddfuse", help=f"metric convention: {', '.join(CONVENTIONS)} (default: cddfuse)"
    )
    out.add_argument(
        "--metrics",
        default=None,
        metavar="EN,SD,...",
        help=f"comma-separated subset of {','.join(METRICS)} (default: all)",
    )
    out.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    out.add_argument(
        "--peers",
        default=None,
        metavar="JSON",
        help="append a mean-rank table against the methods of this peer table "
        "(layout of shared/data/val/peer_scores.json) and the thermal share kept",
    )
    out.add_argument(
        "--peer-set",
        default=None,
        metavar="NAME",
        help="set name in the peer table (default: the name of the --set folder)",
    )
    out.add_argument("--name", default="tokfuse_rt", help="this model's row name in the mean-rank table")
    e.set_defaults(func=cmd_eval)


# --- argument checks -------------------------------------------------------------------------------
def parse_metrics(text: str | None) -> list[str] | None:
    """'EN, sd,SSIM_255' -> ['EN', 'SD', 'SSIM_255'] (canonical names); None/'' or 'all' -> None."""
    from ..metrics import METRICS

    if text is None or not text.strip() or text.strip().lower() == "all":
        return None
    known = {m.lower(): m for m in METRICS}
    known.update({"ssim_2": "SSIM_2", "ssim_255": "SSIM_255"})
    out: list[str] = []
    for tok in text.split(","):
        tok = tok.strip()
        if not tok:
            continue
        name = known.get(tok.lower())
        if name is None:
            raise ValueError(f"unknown metric {tok!r} in --metrics; known: {', '.join(METRICS)} (and SSIM_2, SSIM_255)")
        if name not in out:
            out.append(name)
    return out or None


def _need_dir(path, what: str) -> Path:
    p = Path(path)
    if not p.is_dir():
        raise FileNotFoundError(f"{what} directory not found: {p}")
    return p


def _figure_path(a, report: Path) -> Path | None:
    if a.no_figure:
        return None
    if a.figure:
        return Path(a.figure)
    fig = report.with_suffix(".png")
    return fig if fig != report else report.with_name(report.stem + "_figure.png")


# --- the command ------------------------------------------------------------------------------------
def cmd_eval(a) -> int:
    from ..metrics import get_convention

    conv = get_convention(a.convention)  # ValueError for unknown names, before any work
    metrics = parse_metrics(a.metrics)
    if a.peers is not None:
        from ..metrics.rank import load_peers

        peer_set = a.peer_set or (Path(a.set_dir).name if a.set_dir else None)
        if peer_set is None:
            raise ValueError("--peers needs --peer-set NAME (or --set DIR, whose folder name is the set)")
        a.peer_table = load_peers(a.peers, peer_set)  # FileNotFoundError / ValueError before any work
    report = Path(a.output)
    if report.exists() and report.is_dir():
        raise ValueError(f"--output must be a file, not a directory: {report}")
    figure = _figure_path(a, report)
    from .eval_video import is_video_args

    if is_video_args(a):
        from .eval_video import cmd_eval_video

        return cmd_eval_video(a, conv, metrics, report, figure)
    info: dict[str, str] = {}
    pre_failures: list[dict[str, str]] = []

    if a.model is None:
        for opt, val in (("--set", a.set_dir), ("--keep", a.keep), ("--k", a.k)):
            if val is not None:
                raise ValueError(f"{opt} needs --model")
        missing = [o for o, v in (("--fused", a.fused), ("--ir", a.ir), ("--vis", a.vis)) if v is None]
        if missing:
            raise ValueError(f"missing {' '.join(missing)} (give --fused --ir --vis, or --model with --set)")
        fused_dir, ir_dir, vis_dir = (_need_dir(p, w) for p, w in ((a.fused, "fused"), (a.ir, "ir"), (a.vis, "vis")))
        info["fused"] = str(fused_dir)
        return _evaluate_and_write(a, conv, metrics, fused_dir, ir_dir, vis_dir, report, figure, info, pre_failures)

    # --- mode 2: fuse on the fly --------------------------------------------------------------------
    if a.fused is not None:
        raise ValueError("--fused cannot be combined with --model (use --keep DIR to keep the fused images)")
    if a.set_dir is not None:
        if a.ir is not None or a.vis is not None:
            raise ValueError("give either --set or --ir/--vis, not both")
        ir_dir, vis_dir = find_set_dirs(a.set_dir)
        info["set"] = str(Path(a.set_dir))
    else:
        if a.ir is None or a.vis is None:
            raise ValueError("--model needs --set DIR (or both --ir and --vis)")
        ir_dir, vis_dir = _need_dir(a.ir, "ir"), _need_dir(a.vis, "vis")
    keep = Path(a.keep) if a.keep is not None else None
    if keep is not None and keep.exists() and not keep.is_dir():
        raise ValueError(f"--keep must be a directory: {keep}")

    from ..engine import Engine

    with tempfile.TemporaryDirectory(prefix="tokfuse_eval_") as tmp:
        # Fuse into a fresh folder so that only this run's outputs are evaluated (never stale files
        # left in --keep); copy them to --keep right after fusing.
        fused_dir = Path(tmp) / "fused"
        with Engine(model_path(a.model), device=a.device, threads=a.threads) as eng:
            k = eng.resolve_k(a.k)  # validates --k before fusing anything
            desc = f"{eng.path.name} ({eng.info().get('backend', '?')}, k={k})"
            t0 = time.perf_counter()
            rep = eng.fuse_dir(ir_dir, vis_dir, fused_dir, k=k, progress=not a.quiet, report_path=False)
            dt = time.perf_counter() - t0
        print(
            f"fused {len(rep.written)} pairs with {desc} in {dt:.1f} s"
            f" ({len(rep.failed)} failed, {len(rep.unpaired)} unpaired)"
        )
        for name, msg in rep.failed:
            pre_failures.append({"name": Path(name).stem, "path": name, "reason": f"fusion failed: {msg}"})
        for name in rep.unpaired:
            pre_failures.append(
                {"name": Path(name).stem, "path": name, "reason": "unpaired: no partner in the other source folder"}
            )
        for stem, why in rep.ambiguous:
            pre_failures.append({"name": stem, "path": "", "reason": why})
        if keep is not None:
            keep.mkdir(parents=True, exist_ok=True)
            for p in rep.written:
                shutil.copy2(p, keep / Path(p).name)
            print(f"fused images in {keep.resolve()}")
        info["engine"] = f"{a.model} -> {desc}"
        info["fused"] = str(keep) if keep is not None else "(temporary folder, deleted)"
        return _evaluate_and_write(a, conv, metrics, fused_dir, ir_dir, vis_dir, report, figure, info, pre_failures)


def _evaluate_and_write(
    a,
    conv,
    metrics,
    fused_dir,
    ir_dir,
    vis_dir,
    report: Path,
    figure: Path | None,
    info: dict[str, str],
    pre_failures: list[dict[str, str]],
) -> int:
    from ..metrics.report import evaluate_dirs, write_figure

    rows, failures = evaluate_dirs(fused_dir, ir_dir, vis_dir, progress=not a.quiet, convention=conv, metrics=metrics)
    # in engine mode a pair that failed to fuse also shows up as "no fused image": report it once
    already = {f["name"] for f in pre_failures}
    failures = pre_failures + [f for f in failures if f["name"] not in already]
    for f in failures:
        print(f"skipped {f['name']}: {f['reason']} [{f['path']}]", file=sys.stderr)

    info = {
        "ir": str(ir_dir),
        "vis": str(vis_dir),
        **info,
        "convention": conv.name,
        "evaluated": f"{len(rows)} images, {len(failures)} skipped",
    }
    write_report(rows, failures, report, info)
    if a.peers is not None and rows:
        print(_append_rank(a, rows, report, fused_dir, ir_dir, vis_dir))
    print(f"evaluated {len(rows)} images, {len(failures)} skipped (convention {conv.name})")
    if not rows:
        print(f"report: {report.resolve()}")
        raise ValueError(f"no image could be evaluated ({len(failures)} skipped; see {report})")
    print(mean_lines(rows))
    print(f"report: {report.resolve()}")
    if figure is not None:
        title = f"tokfuse eval ({conv.name}, n={len(rows)})"
        write_figure(rows, figure, title=title)
        print(f"figure: {figure.resolve()}")
    return 0


def _guard_shares(rows, fused_dir: Path, ir_dir: Path, vis_dir: Path):
    """Mean thermal share kept (margin 0.25, images with >= 500 hot pixels), how many images count, and
    the visible texture kept (:func:`tokfuse_rt.metrics.texture_kept` against B): its mean over all
    images and the share of images at or below 0.6."""
    import numpy as np

    from ..metrics import read_gray, texture_kept, thermal_kept
    from ..pairing import match_outputs, pair_dirs

    paths = {
        pair.stem: (fused, pair.ir, pair.vis)
        for pair, fused in match_outputs(pair_dirs(ir_dir, vis_dir), fused_dir).found
    }
    kept, tex = [], []
    for r in rows:
        f, ir, vis = (read_gray(p) / 255.0 for p in paths[r["name"]])
        k, n = thermal_kept(f, ir, vis, margin=0.25)
        if n >= 500:
            kept.append(k)
        tex.append(texture_kept(f, vis))
    tex = np.array(tex)
    return (
        (float(np.mean(kept)) if kept else float("nan")),
        len(kept),
        float(np.nanmean(tex)),
        float(np.mean(tex <= 0.6)),
    )


def _append_rank(a, rows, report: Path, fused_dir: Path, ir_dir: Path, vis_dir: Path) -> str:
    """Append the mean-rank table (this model among ``a.peer_table``) and the thermal share kept."""
    from ..metrics.rank import RANK_METRICS, place, rank_markdown
    from ..metrics.report import summarize

    stats = summarize(rows)
    table = dict(a.peer_table)
    table[a.name] = {m: stats[m][0] for m in RANK_METRICS if m in stats}
    kept, n, tex, low = _guard_shares(rows, fused_dir, ir_dir, vis_dir)
    pos = place(table, a.name)
    text = (
        f"\n## Mean rank against {Path(a.peers).name}\n\n{rank_markdown(table, highlight=a.name)}\n\n"
        f"{a.name}: place {pos} of {len(table)} by mean rank. Thermal share kept: {kept:.3f} "
        f"(mean over {n} images with >= 500 pixels where ir > vis + 0.25). Visible texture kept "
        f"(corr of Sobel magnitudes of fused and B): mean {tex:.3f}, {100 * low:.0f} % of images <= 0.6.\n"
    )
    with open(report, "a", encoding="utf-8") as fh:
        fh.write(text)
    return text.strip()
