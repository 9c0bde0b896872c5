"""The Markdown report of ``tokfuse eval`` (images and videos): the run info, the per-image table with its
``mean ± std`` row and the skip list, and the mean row printed to the terminal."""

from __future__ import annotations

import datetime as _dt
from pathlib import Path


def mean_lines(rows) -> str:
    """Markdown header + mean ± std row (plain, for the terminal)."""
    from ..metrics.report import mean_row, metric_columns

    return "| image | " + " | ".join(metric_columns(rows)) + " |\n" + mean_row(rows, f"mean ± std (n={len(rows)})")


def write_report(rows, failures, report: Path, info: dict[str, str]) -> Path:
    """Markdown: title, run info, the per-image table with its mean ± std row, then the skip list."""
    from ..metrics.report import write_markdown

    write_markdown(rows, report)  # the table (creates parent folders)
    table = report.read_text(encoding="utf-8") if rows else "_no image could be evaluated_\n"
    when = _dt.datetime.now().isoformat(timespec="seconds")
    lines = ["# tokfuse eval", ""]
    lines += [f"- {k}: `{v}`" if k in ("ir", "vis", "fused", "set") else f"- {k}: {v}" for k, v in info.items()]
    lines += [f"- date: {when}", "", table.rstrip("\n")]
    if failures:
        lines += ["", f"## Skipped ({len(failures)})", ""]
        lines += [f"- `{f['name']}`: {f['reason']} ({f['path']})" for f in failures]
    report.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return report
