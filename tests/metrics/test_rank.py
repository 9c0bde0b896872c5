"""Mean rank by hand, peer tables, and ``tokfuse eval --peers``."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image

from tokfuse_rt.cli import main
from tokfuse_rt.metrics import evaluate, read_gray
from tokfuse_rt.metrics.rank import RANK_METRICS, load_peers, mean_ranks, place, rank_markdown


def _row(**kw):
    base = dict.fromkeys(RANK_METRICS, 1.0)
    return base | kw


def test_mean_ranks_by_hand():
    # A beats B and C on EN; B and C tie on EN (ranks 2.5 each); C has NaN SD (ranks last);
    # everything else tied between all three (rank 2 each).
    table = {"A": _row(EN=3.0, SD=2.0), "B": _row(EN=2.0, SD=1.0), "C": _row(EN=2.0, SD=math.nan)}
    r = mean_ranks(table)
    assert r["A"][1]["EN"] == 1 and r["B"][1]["EN"] == 2.5 and r["C"][1]["EN"] == 2.5
    assert r["A"][1]["SD"] == 1 and r["B"][1]["SD"] == 2 and r["C"][1]["SD"] == 3
    assert r["A"][1]["MI"] == 2 and r["C"][1]["SSIM"] == 2
    assert r["A"][0] == pytest.approx((1 + 1 + 2 * 6) / 8)
    assert r["B"][0] == pytest.approx((2.5 + 2 + 2 * 6) / 8)
    assert r["C"][0] == pytest.approx((2.5 + 3 + 2 * 6) / 8)
    assert place(table, "A") == 1 and place(table, "B") == 2 and place(table, "C") == 3
    md = rank_markdown(table, highlight="B")
    assert md.splitlines()[2].startswith("| A |") and "| **B** |" in md


def test_spec_tno_table_by_hand():
    """The published TNO table (docs/quality/peers_test.json), ranks worked out by hand for CDDFuse:
    EN 7.12 1, SD 46.0 1, SF 13.15 1, MI 2.19 4 (SFDFusion 2.99, teacher 2.61, LUT-Fuse 2.53 above),
    SCD 1.76 1, VIF 0.77 3 (SFDFusion, teacher above), Qabf 0.54 3 (teacher 0.572, SFDFusion 0.556),
    SSIM 1.03 1 -> 15 / 8."""
    peers = load_peers(_repo_file("docs/quality/peers_test.json"), "TNO")
    r = mean_ranks(peers)
    assert r["CDDFuse (published)"][1] == {"EN": 1, "SD": 1, "SF": 1, "MI": 4, "SCD": 1, "VIF": 3, "Qabf": 3, "SSIM": 1}
    assert r["CDDFuse (published)"][0] == 15 / 8
    assert place(peers, "CDDFuse (published)") == 1 and len(peers) == 7


def _repo_file(rel):
    from pathlib import Path

    return Path(__file__).resolve().parents[2] / rel


def test_load_peers_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="peer table not found"):
        load_peers(tmp_path / "nope.json", "TNO")
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    with pytest.raises(ValueError, match="peer_scores.json layout"):
        load_peers(bad, "TNO")
    ok = tmp_path / "ok.json"
    ok.write_text(json.dumps({"sets": {"TNO": {"x": {"mean": dict.fromkeys(RANK_METRICS, 1.0)}}}}))
    with pytest.raises(ValueError, match="no set 'Road'"):
        load_peers(ok, "Road")
    assert load_peers(ok, "TNO") == {"x": dict.fromkeys(RANK_METRICS, 1.0)}


def test_eval_appends_mean_rank_and_thermal_share(tmp_path):
    rng = np.random.default_rng(0)
    d = {k: tmp_path / "set" / k for k in ("ir", "vi")}
    fused = tmp_path / "fused"
    for p in list(d.values()) + [fused]:
        p.mkdir(parents=True)
    means = []
    for i in range(2):
        ir = rng.integers(0, 100, (48, 64), dtype=np.uint8)
        ir[10:30, 10:30] = 250  # a hot target: 400 px per image
        ir[30:40, 30:60] = 250  # + 300 px
        vis = rng.integers(0, 120, (48, 64), dtype=np.uint8)
        f = np.maximum(ir, vis)  # keeps all of the thermal excess
        for arr, path in ((ir, d["ir"]), (vis, d["vi"]), (f, fused)):
            Image.fromarray(arr).save(path / f"{i}.png")
        means.append(
            evaluate(
                read_gray(fused / f"{i}.png"),
                read_gray(d["ir"] / f"{i}.png"),
                read_gray(d["vi"] / f"{i}.png"),
                metrics=list(RANK_METRICS),
            )
        )
    ours = {m: float(np.mean([r[m] for r in means])) for m in RANK_METRICS}
    # a peer that is better on EN only, and one worse on everything
    peers = {"better_en": ours | {"EN": ours["EN"] + 1}, "worse": {m: v - 0.5 for m, v in ours.items()}}
    pj = tmp_path / "peers.json"
    pj.write_text(json.dumps({"sets": {"set": {k: {"mean": v} for k, v in peers.items()}}}))
    out = tmp_path / "r.md"
    rc = main(
        [
            "eval",
            "--fused",
            str(fused),
            "--ir",
            str(d["ir"]),
            "--vis",
            str(d["vi"]),
            "-o",
            str(out),
            "--no-figure",
            "-q",
            "--peers",
            str(pj),
            "--peer-set",
            "set",
            "--name",
            "mine",
        ]
    )
    assert rc == 0
    text = out.read_text()
    # mine: EN rank 2, others tied with better_en (1.5) -> (2 + 7 * 1.5) / 8 = 1.5625; better_en:
    # (1 + 7 * 1.5) / 8 = 1.4375 -> place 2 of 3
    assert "place 2 of 3" in text and "| **mine** |" in text and "1.562 |" in text
    assert "Thermal share kept: 1.000 (mean over 2 images" in text


def test_eval_peers_needs_a_set_name(tmp_path, capsys):
    pj = tmp_path / "p.json"
    pj.write_text(json.dumps({"sets": {}}))
    rc = main(
        [
            "eval",
            "--fused",
            str(tmp_path),
            "--ir",
            str(tmp_path),
            "--vis",
            str(tmp_path),
            "--peers",
            str(pj),
            "-o",
            str(tmp_path / "r.md"),
        ]
    )
    assert rc == 1 and "--peers needs --peer-set" in capsys.readouterr().err
    assert not (tmp_path / "r.md").exists()
