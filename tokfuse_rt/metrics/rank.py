"""Mean rank against other methods: the quality measure the project steers by.

For a set, every method is ranked on each of the 8 metrics EN, SD, SF, MI, SCD, VIF, Qabf, SSIM
(1 = best; higher is better for all 8; tied values share the average of their ranks; a missing or
non-finite value ranks last), and its ranks are averaged.

Peer tables are JSON in the layout of ``shared/data/val/peer_scores.json``::

    {"sets": {"<set>": {"<method>": {"mean": {"EN": ..., "SD": ..., ...}}, ...}, ...}}
"""

from __future__ import annotations

import json
import math
from pathlib import Path

RANK_METRICS = ("EN", "SD", "SF", "MI", "SCD", "VIF", "Qabf", "SSIM")


def load_peers(path, set_name: str) -> dict[str, dict[str, float]]:
    """The peers' mean scores for ``set_name`` from a peer table: {method: {metric: value}}.

    Raises FileNotFoundError / ValueError naming the file and the set."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"peer table not found: {path}")
    try:
        sets = json.loads(path.read_text(encoding="utf-8"))["sets"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"peer table {path} is not in the peer_scores.json layout ({e})") from None
    if set_name not in sets:
        raise ValueError(f"peer table {path} has no set {set_name!r} (it has {sorted(sets)})")
    return {
        m: {k: float(v) if v is not None else math.nan for k, v in d["mean"].items()} for m, d in sets[set_name].items()
    }


def _value(scores: dict, metric: str) -> float:
    v = scores.get(metric)
    return v if v is not None and math.isfinite(v) else -math.inf


def mean_ranks(table: dict[str, dict[str, float]]) -> dict[str, tuple[float, dict[str, float]]]:
    """{method: (mean rank, {metric: rank})} over the methods of ``table`` ({method: {metric: value}})."""
    out = {}
    for name, scores in table.items():
        ranks = {}
        for m in RANK_METRICS:
            x = _value(scores, m)
            others = [_value(s, m) for n, s in table.items() if n != name]
            ranks[m] = 1 + sum(v > x for v in others) + sum(v == x for v in others) / 2
        out[name] = (sum(ranks.values()) / len(ranks), ranks)
    return out


def place(table: dict[str, dict[str, float]], name: str) -> int:
    """Position of ``name`` by mean rank in ``table`` (1 = first; ties share the better place)."""
    r = mean_ranks(table)
    return 1 + sum(v[0] < r[name][0] for n, v in r.items() if n != name)


def rank_markdown(table: dict[str, dict[str, float]], highlight: str | None = None) -> str:
    """Markdown table: one row per method (best mean rank first), its value and rank per metric."""
    r = mean_ranks(table)
    lines = [
        "| method | " + " | ".join(RANK_METRICS) + " | mean rank |",
        "| --- |" + " --- |" * (len(RANK_METRICS) + 1),
    ]
    for name in sorted(r, key=lambda n: r[n][0]):
        mr, ranks = r[name]
        cells = [f"{table[name].get(m, math.nan):.4g} ({ranks[m]:g})" for m in RANK_METRICS]
        label = f"**{name}**" if name == highlight else name
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {mr:.3f} |")
    return "\n".join(lines)
