"""Evaluate a directory of fused images against their sources; write Markdown and a PNG figure.

``ir_dir`` and ``vis_dir`` pair up by the rules of :mod:`tokfuse_rt.pairing` (exact file name, then
stem), and each pair meets its fused image in ``fused_dir`` by stem (the name ``fuse-dir`` gives
it); every format ``fuse`` reads is read (see :data:`tokfuse_rt.metrics.IMAGE_EXTS`).
Anything that cannot be evaluated -- a stem missing from one of the folders, an ambiguous stem
(two files with the same stem in one folder), an unreadable file, mismatched sizes -- is skipped
and reported in ``failures`` instead of aborting the run.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from .core import METRICS, evaluate, get_convention
from .io import PathLike, read_gray, read_rgb

Row = dict[str, object]
Failure = dict[str, str]

__all__ = ["evaluate_dirs", "write_markdown", "write_figure", "summarize", "metric_columns", "mean_row", "format_value"]


def evaluate_dirs(
    fused_dir: PathLike,
    ir_dir: PathLike,
    vis_dir: PathLike,
    progress: bool = True,
    convention="cddfuse",
    metrics: Iterable[str] | None = None,
) -> tuple[list[Row], list[Failure]]:
    """Evaluate every fused image that has an ir and a vis partner with the same stem.

    Returns ``(rows, failures)``: ``rows`` is a list of ``{"name": stem, <metric>: value, ...}``
    sorted by stem; ``failures`` a list of ``{"name", "path", "reason"}`` for everything skipped.
    Images are read with :func:`read_gray` (or :func:`read_rgb` for per-channel conventions).
    """
    from ..pairing import match_outputs, pair_dirs
    from ..progress import progress_bar

    conv = get_convention(convention)
    dirs = {"fused": Path(fused_dir), "ir": Path(ir_dir), "vis": Path(vis_dir)}
    for role, d in dirs.items():
        if not d.is_dir():
            raise NotADirectoryError(f"{role} directory not found: {d}")
    matched = match_outputs(pair_dirs(dirs["ir"], dirs["vis"]), dirs["fused"])
    failures: list[Failure] = [{"name": stem, "path": path, "reason": why} for stem, path, why in matched.problems]
    files = {"fused": {}, "ir": {}, "vis": {}}
    for pair, fused in matched.found:
        files["fused"][pair.stem], files["ir"][pair.stem], files["vis"][pair.stem] = fused, pair.ir, pair.vis
    todo = sorted(files["fused"])

    reader = read_rgb if conv.per_channel else read_gray
    rows: list[Row] = []
    for stem in progress_bar(todo, enabled=progress, desc="metrics", unit="img"):
        imgs = {}
        bad = None
        for role in ("fused", "ir", "vis"):
            path = files[role][stem]
            try:
                imgs[role] = reader(path)
            except Exception as exc:  # noqa: BLE001 - unreadable / truncated / not an image: reported, the run goes on
                bad = {"name": stem, "path": str(path), "reason": f"unreadable: {type(exc).__name__}: {exc}"}
                break
        if bad is not None:
            failures.append(bad)
            continue
        shapes = {r: imgs[r].shape[:2] for r in imgs}
        if len(set(shapes.values())) != 1:
            failures.append(
                {
                    "name": stem,
                    "path": str(files["fused"][stem]),
                    "reason": "size mismatch: " + ", ".join(f"{r} {h}x{w}" for r, (h, w) in shapes.items()),
                }
            )
            continue
        try:
            values = evaluate(imgs["fused"], imgs["ir"], imgs["vis"], convention=conv, metrics=metrics)
        except Exception as exc:  # noqa: BLE001 - a metric failing on one image is reported, the run goes on
            failures.append(
                {
                    "name": stem,
                    "path": str(files["fused"][stem]),
                    "reason": f"metric error: {type(exc).__name__}: {exc}",
                }
            )
            continue
        row: Row = {"name": stem}
        row.update(values)
        rows.append(row)
    return rows, failures


def metric_columns(rows: list[Row]) -> list[str]:
    """Metric keys present in ``rows``: METRICS order first (SSIM_2 / SSIM_255 after SSIM)."""
    present: list[str] = []
    for r in rows:
        for k in r:
            if k != "name" and k not in present:
                present.append(k)
    order = []
    for m in METRICS:
        for k in (m, m + "_2", m + "_255"):
            if k in present:
                order.append(k)
    order += [k for k in present if k not in order]
    return order


def summarize(rows: list[Row]) -> dict[str, tuple[float, float]]:
    """``{metric: (mean, std)}`` over rows (population std, ddof=0; non-finite values ignored)."""
    out = {}
    for k in metric_columns(rows):
        v = np.array([float(r[k]) for r in rows if k in r], dtype=np.float64)
        v = v[np.isfinite(v)]
        out[k] = (float(v.mean()), float(v.std())) if v.size else (math.nan, math.nan)
    return out


def format_value(x: float) -> str:
    """A metric value as the reports print it: 4 decimals, 4 significant digits below 1e-3, inf/nan."""
    if x is None or not np.isfinite(x):
        return "inf" if x == math.inf else ("-inf" if x == -math.inf else "nan")
    if x != 0 and abs(x) < 1e-3:  # e.g. Nabf (~1e-7 .. 1e-4 under the cddfuse convention): keep 4 significant digits
        return f"{x:.4g}"
    return f"{x:.4f}"


def mean_row(rows: list[Row], label: str) -> str:
    """The Markdown ``mean ± std`` row of ``rows`` (columns: :func:`metric_columns`), first cell ``label``."""
    stats = summarize(rows)
    return (
        f"| {label} | "
        + " | ".join(f"{format_value(stats[c][0])} ± {format_value(stats[c][1])}" for c in metric_columns(rows))
        + " |"
    )


def write_markdown(rows: list[Row], path: PathLike, title: str | None = None) -> Path:
    """Write a Markdown table: one row per image, then a ``mean ± std`` row (population std)."""
    path = Path(path)
    cols = metric_columns(rows)
    lines = []
    if title:
        lines += [f"# {title}", ""]
    lines.append("| image | " + " | ".join(cols) + " |")
    lines.append("| --- | " + " | ".join("---:" for _ in cols) + " |")
    for r in rows:
        lines.append(f"| {r['name']} | " + " | ".join(format_value(float(r[c])) if c in r else "" for c in cols) + " |")
    if rows:
        lines.append(mean_row(rows, f"**mean ± std** (n={len(rows)})"))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_figure(rows: list[Row], path: PathLike, title: str | None = None) -> Path:
    """Write a PNG with one bar chart per metric (one bar per image, dashed line at the mean).

    matplotlib is imported lazily and drawn through the Agg canvas directly, so the global
    pyplot backend is left alone.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    cols = metric_columns(rows)
    if not cols:
        raise ValueError("no metric values to plot")
    names = [str(r["name"]) for r in rows]
    ncol = min(4, len(cols))
    nrow = math.ceil(len(cols) / ncol)
    fig = Figure(figsize=(4.2 * ncol, 2.8 * nrow + 0.4), dpi=100)
    FigureCanvasAgg(fig)
    x = np.arange(len(rows))
    for i, c in enumerate(cols):
        ax = fig.add_subplot(nrow, ncol, i + 1)
        v = np.array([float(r.get(c, math.nan)) for r in rows], dtype=np.float64)
        finite = np.where(np.isfinite(v), v, np.nan)
        ax.bar(x, np.nan_to_num(finite, nan=0.0), color="#4C72B0")
        if np.isfinite(finite).any():
            ax.axhline(np.nanmean(finite), color="#C44E52", ls="--", lw=1)
            ax.set_title(f"{c}  (mean {np.nanmean(finite):.4g})", fontsize=9)
        else:
            ax.set_title(c, fontsize=9)
        if len(rows) <= 30:
            ax.set_xticks(x)
            ax.set_xticklabels(names, rotation=90, fontsize=6)
        else:
            ax.set_xticks([])
        ax.tick_params(axis="y", labelsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(str(path), format="png")
    return path
