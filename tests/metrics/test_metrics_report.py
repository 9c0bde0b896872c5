"""Tests for tokfuse_rt.metrics.report: pairing by stem, skipping/reporting, Markdown, PNG figure."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from tokfuse_rt.metrics import METRICS, read_gray
from tokfuse_rt.metrics.report import evaluate_dirs, summarize, write_figure, write_markdown

SIZE = (64, 64)  # large enough for every VIF scale and the 7x7 SSIM window


def _img(seed, colour=False):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0 : SIZE[0], 0 : SIZE[1]]
    base = 128 + 60 * np.sin(x / 5.0 + seed) * np.cos(y / 7.0)
    a = np.clip(base + rng.normal(0, 8, SIZE), 0, 255).astype(np.uint8)
    if colour:
        return np.dstack([a, np.roll(a, 3, axis=1), 255 - a])
    return a


@pytest.fixture()
def dirs(tmp_path):
    d = {k: tmp_path / k for k in ("fused", "ir", "vi")}
    for p in d.values():
        p.mkdir()
    # four complete triplets in different formats
    Image.fromarray(_img(1)).save(d["fused"] / "a.png")
    Image.fromarray(_img(2)).save(d["ir"] / "a.png")
    Image.fromarray(_img(3, colour=True)).save(d["vi"] / "a.png")

    Image.fromarray(_img(4)).save(d["fused"] / "b.bmp")
    Image.fromarray(_img(5)).save(d["ir"] / "b.tif")
    Image.fromarray(_img(6, colour=True)).save(d["vi"] / "b.jpg", quality=95)

    Image.fromarray(_img(7)).save(d["fused"] / "c.tiff")
    Image.fromarray(_img(8)).save(d["ir"] / "c.jpeg")
    Image.fromarray(_img(9)).save(d["vi"] / "c.png")

    Image.fromarray(_img(10)).save(d["fused"] / "d.png")
    Image.fromarray(_img(11)).save(d["ir"] / "d.png")
    Image.fromarray(_img(12)).save(d["vi"] / "d.png")

    # unpaired: fused without ir/vis, ir/vis without fused
    Image.fromarray(_img(13)).save(d["fused"] / "lonely.png")
    Image.fromarray(_img(14)).save(d["ir"] / "orphan.png")
    Image.fromarray(_img(15)).save(d["vi"] / "orphan.png")
    # unreadable
    (d["fused"] / "broken.png").write_bytes(b"not a png at all")
    Image.fromarray(_img(16)).save(d["ir"] / "broken.png")
    Image.fromarray(_img(17)).save(d["vi"] / "broken.png")
    # size mismatch
    Image.fromarray(_img(18)).save(d["fused"] / "small.png")
    Image.fromarray(_img(19)[:32, :32]).save(d["ir"] / "small.png")
    Image.fromarray(_img(20)).save(d["vi"] / "small.png")
    # ambiguous stem (two files with stem "e" in fused)
    Image.fromarray(_img(21)).save(d["fused"] / "e.png")
    Image.fromarray(_img(22)).save(d["fused"] / "e.bmp")
    Image.fromarray(_img(23)).save(d["ir"] / "e.png")
    Image.fromarray(_img(24)).save(d["vi"] / "e.png")
    # non-image files and sub-folders are ignored
    (d["fused"] / "notes.txt").write_text("hello")
    (d["fused"] / "sub").mkdir()
    return d


def test_evaluate_dirs_pairs_and_failures(dirs):
    rows, failures = evaluate_dirs(dirs["fused"], dirs["ir"], dirs["vi"], progress=False)
    assert [r["name"] for r in rows] == ["a", "b", "c", "d"]
    for r in rows:
        for m in METRICS:
            assert m in r
        assert "SSIM_2" in r and "SSIM_255" in r
    reasons = {f["name"]: f["reason"] for f in failures}
    assert set(reasons) == {"lonely", "orphan", "broken", "small", "e"}
    assert reasons["lonely"].startswith("unpaired") and "ir" in reasons["lonely"] and "vis" in reasons["lonely"]
    assert reasons["orphan"].startswith("unpaired") and "fused" in reasons["orphan"]
    assert reasons["broken"].startswith("unreadable")
    assert reasons["small"].startswith("size mismatch")
    assert reasons["e"].startswith("ambiguous")


def test_evaluate_dirs_values_match_direct_evaluation(dirs):
    from tokfuse_rt.metrics import evaluate

    rows, _ = evaluate_dirs(dirs["fused"], dirs["ir"], dirs["vi"], progress=False, metrics=["EN", "MSE"])
    a = rows[0]
    assert set(a) == {"name", "EN", "MSE"}
    F = read_gray(dirs["fused"] / "a.png")
    A = read_gray(dirs["ir"] / "a.png")
    B = read_gray(dirs["vi"] / "a.png")
    # independent hand formulas for these two metrics
    p = np.bincount(F.astype(np.int64).ravel(), minlength=256) / F.size
    p = p[p > 0]
    assert a["EN"] == pytest.approx(float(-(p * np.log2(p)).sum()), rel=1e-9)
    mse = (np.mean((np.float64(A) - F) ** 2) + np.mean((np.float64(B) - F) ** 2)) / 2
    assert a["MSE"] == pytest.approx(mse, rel=1e-5)
    assert evaluate(F, A, B, metrics=["EN"])["EN"] == a["EN"]


def test_evaluate_dirs_progress_and_missing_dir(dirs, tmp_path):
    rows, _ = evaluate_dirs(dirs["fused"], dirs["ir"], dirs["vi"], progress=True, metrics=["SD"])
    assert len(rows) == 4
    with pytest.raises(NotADirectoryError):
        evaluate_dirs(tmp_path / "nope", dirs["ir"], dirs["vi"], progress=False)


def test_evaluate_dirs_per_channel_convention(dirs):
    rows, failures = evaluate_dirs(
        dirs["fused"], dirs["ir"], dirs["vi"], progress=False, convention="vifb", metrics=["EN", "SD"]
    )
    assert len(rows) == 4 and len(failures) == 5


def _rows():
    return [
        {"name": "x1", "EN": 6.0, "SSIM": 1.0, "SSIM_2": 1.0, "SSIM_255": 1.4, "PSNR": 10.0},
        {"name": "x2", "EN": 7.0, "SSIM": 0.5, "SSIM_2": 0.5, "SSIM_255": 1.2, "PSNR": math.inf},
        {"name": "x3", "EN": 8.0, "SSIM": 0.0, "SSIM_2": 0.0, "SSIM_255": 1.0, "PSNR": 20.0},
    ]


def test_summarize_hand_values():
    s = summarize(_rows())
    assert s["EN"] == pytest.approx((7.0, math.sqrt(2 / 3)))  # population std of 6, 7, 8
    assert s["PSNR"] == pytest.approx((15.0, 5.0))  # inf ignored
    assert list(s) == ["EN", "SSIM", "SSIM_2", "SSIM_255", "PSNR"]


def test_write_markdown(tmp_path):
    out = write_markdown(_rows(), tmp_path / "sub" / "report.md", title="demo")
    text = out.read_text()
    lines = [ln for ln in text.splitlines() if ln.startswith("|")]
    assert lines[0] == "| image | EN | SSIM | SSIM_2 | SSIM_255 | PSNR |"
    assert len(lines) == 2 + 3 + 1
    assert lines[2].startswith("| x1 | 6.0000 | 1.0000 |")
    assert "inf" in lines[3]
    assert lines[-1].startswith("| **mean ± std** (n=3) | 7.0000 ± 0.8165 | 0.5000 ± 0.4082 |")
    assert text.startswith("# demo")


def test_write_figure(tmp_path):
    out = write_figure(_rows(), tmp_path / "fig.png")
    with Image.open(out) as im:
        assert im.format == "PNG"
        assert im.size[0] > 200 and im.size[1] > 100
    with pytest.raises(ValueError):
        write_figure([{"name": "x"}], tmp_path / "empty.png")
