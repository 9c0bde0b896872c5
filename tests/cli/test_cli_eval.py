"""``tokfuse eval``: metrics over fused folders, and over an engine run on a test set (in-process CLI)."""

from __future__ import annotations

import math
import shutil

import numpy as np
import pytest
from PIL import Image

from tokfuse_rt.cli import main
from tokfuse_rt.cli.eval import find_set_dirs, parse_metrics
from tokfuse_rt.metrics import METRICS, evaluate, read_gray

SIZE = (64, 64)  # large enough for every VIF scale and the 7x7 SSIM window
TNO_PAIRS = ("07.png", "19.png", "20.png")  # the three smallest TNO pairs (256², 360x270)


def _img(seed, colour=False, size=SIZE):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0 : size[0], 0 : size[1]]
    base = 128 + 60 * np.sin(x / 5.0 + seed) * np.cos(y / 7.0)
    a = np.clip(base + rng.normal(0, 8, size), 0, 255).astype(np.uint8)
    if colour:
        return np.dstack([a, np.roll(a, 3, axis=1), 255 - a])
    return a


def _save(arr, path, **kw):
    Image.fromarray(arr).save(path, **kw)


@pytest.fixture()
def dirs(tmp_path):
    d = {k: tmp_path / k for k in ("fused", "ir", "vi")}
    for p in d.values():
        p.mkdir()
    # three complete triplets, mixed formats, gray and RGB (gray stored as equal-channel RGB too)
    _save(_img(1), d["fused"] / "a.png")
    _save(_img(2), d["ir"] / "a.png")
    _save(_img(3, colour=True), d["vi"] / "a.png")
    _save(_img(4, colour=True), d["fused"] / "b.bmp")
    _save(np.dstack([_img(5)] * 3), d["ir"] / "b.tif")
    _save(_img(6, colour=True), d["vi"] / "b.jpg", quality=95)
    _save(_img(7), d["fused"] / "c.tiff")
    _save(_img(8), d["ir"] / "c.jpeg", quality=95)
    _save(_img(9), d["vi"] / "c.png")
    # unpaired both ways
    _save(_img(10), d["fused"] / "lonely.png")
    _save(_img(11), d["ir"] / "orphan.png")
    _save(_img(12), d["vi"] / "orphan.png")
    # unreadable fused file
    (d["fused"] / "broken.png").write_bytes(b"not a png at all")
    _save(_img(13), d["ir"] / "broken.png")
    _save(_img(14), d["vi"] / "broken.png")
    return d


def _table(text):
    return [ln for ln in text.splitlines() if ln.startswith("|")]


def test_eval_dirs_report_figure_and_skips(dirs, tmp_path, capsys):
    out = tmp_path / "rep" / "report.md"
    rc = main(
        ["eval", "--fused", str(dirs["fused"]), "--ir", str(dirs["ir"]), "--vis", str(dirs["vi"]), "-o", str(out)]
    )
    cap = capsys.readouterr()
    assert rc == 0
    # report: header with every metric name, one row per image, then mean ± std
    text = out.read_text(encoding="utf-8")
    lines = _table(text)
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header[0] == "image"
    for m in METRICS:
        assert m in header
    assert "SSIM_2" in header and "SSIM_255" in header
    assert [ln.split("|")[1].strip() for ln in lines[2:5]] == ["a", "b", "c"]
    assert lines[-1].startswith("| **mean ± std** (n=3) |")
    assert lines[-1].count("±") == len(header)  # label + one per metric column
    # skipped files are listed in the report and on stderr, with the reason
    assert "## Skipped (3)" in text
    for name, why in (("lonely", "unpaired"), ("orphan", "unpaired"), ("broken", "unreadable")):
        assert f"skipped {name}: {why}" in cap.err
        assert f"`{name}`: {why}" in text
    # progress bar on stderr; mean row and where the report is on stdout
    assert "metrics" in cap.err and "4/4" in cap.err  # a, b, c and broken (found unreadable while reading)
    assert "evaluated 3 images, 3 skipped" in cap.out
    mean_line = [ln for ln in cap.out.splitlines() if ln.startswith("| mean ± std (n=3)")]
    assert len(mean_line) == 1
    assert f"report: {out.resolve()}" in cap.out
    # figure beside the report, a real PNG
    fig = out.with_suffix(".png")
    assert f"figure: {fig.resolve()}" in cap.out
    with Image.open(fig) as im:
        assert im.format == "PNG" and im.size[0] > 200


def test_eval_values_match_evaluate(dirs, tmp_path, capsys):
    out = tmp_path / "r.md"
    rc = main(
        [
            "eval",
            "--fused",
            str(dirs["fused"]),
            "--ir",
            str(dirs["ir"]),
            "--vis",
            str(dirs["vi"]),
            "-o",
            str(out),
            "--metrics",
            "mi, en,SD",
            "--convention",
            "cddfuse_bits",
            "-q",
            "--figure",
            str(tmp_path / "fig" / "f.png"),
        ]
    )
    cap = capsys.readouterr()
    assert rc == 0
    assert "metrics" not in cap.err  # -q: no progress bar
    lines = _table(out.read_text(encoding="utf-8"))
    assert lines[0] == "| image | EN | SD | MI |"
    F, A, B = (read_gray(dirs[k] / n) for k, n in (("fused", "a.png"), ("ir", "a.png"), ("vi", "a.png")))
    ref = evaluate(F, A, B, convention="cddfuse_bits", metrics=["EN", "SD", "MI"])
    cells = [c.strip() for c in lines[2].strip("|").split("|")]
    assert cells[0] == "a"
    assert [float(c) for c in cells[1:]] == pytest.approx([ref["EN"], ref["SD"], ref["MI"]], abs=1e-4)
    nats = evaluate(F, A, B, metrics=["MI"])["MI"]
    assert ref["MI"] == pytest.approx(nats / math.log(2), rel=1e-6)
    assert (tmp_path / "fig" / "f.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not out.with_suffix(".png").exists()


def test_eval_no_figure_and_nothing_to_evaluate(dirs, tmp_path, capsys):
    out = tmp_path / "r.md"
    assert (
        main(
            [
                "eval",
                "--fused",
                str(dirs["fused"]),
                "--ir",
                str(dirs["ir"]),
                "--vis",
                str(dirs["vi"]),
                "-o",
                str(out),
                "--metrics",
                "EN",
                "--no-figure",
                "-q",
            ]
        )
        == 0
    )
    assert out.exists() and not out.with_suffix(".png").exists()
    capsys.readouterr()
    # only unpaired / unreadable files: exit 1, one-line error, the report still lists what was skipped
    empty = tmp_path / "empty"
    empty.mkdir()
    out2 = tmp_path / "r2.md"
    rc = main(["eval", "--fused", str(empty), "--ir", str(dirs["ir"]), "--vis", str(dirs["vi"]), "-o", str(out2), "-q"])
    cap = capsys.readouterr()
    assert rc == 1
    assert "tokfuse eval: error: no image could be evaluated" in cap.err
    assert "## Skipped" in out2.read_text(encoding="utf-8")
    assert not out2.with_suffix(".png").exists()


@pytest.mark.parametrize(
    "argv, msg",
    [
        (["--metrics", "EN,BOGUS"], "unknown metric 'BOGUS'"),
        (["--convention", "nope"], "unknown convention"),
        (["--k", "1"], "--k needs --model"),
        (["--model", "default"], "--fused cannot be combined with --model"),
    ],
)
def test_eval_bad_arguments_one_line(dirs, tmp_path, capsys, argv, msg):
    rc = main(
        [
            "eval",
            "--fused",
            str(dirs["fused"]),
            "--ir",
            str(dirs["ir"]),
            "--vis",
            str(dirs["vi"]),
            "-o",
            str(tmp_path / "r.md"),
            "-q",
            *argv,
        ]
    )
    err = capsys.readouterr().err.strip()
    assert rc == 1 and msg in err and len(err.splitlines()) == 1
    assert not (tmp_path / "r.md").exists()


def test_eval_missing_inputs(dirs, tmp_path, capsys):
    assert main(["eval", "--fused", str(tmp_path / "nope"), "--ir", str(dirs["ir"]), "--vis", str(dirs["vi"])]) == 1
    assert "fused directory not found" in capsys.readouterr().err
    assert main(["eval", "--ir", str(dirs["ir"]), "--vis", str(dirs["vi"])]) == 1
    assert "missing --fused" in capsys.readouterr().err
    flat = tmp_path / "flat"
    flat.mkdir()
    assert main(["eval", "--model", "default", "--set", str(flat)]) == 1
    assert "none of the sub-folder pairs" in capsys.readouterr().err
    assert main(["eval", "--model", str(tmp_path / "nope.safetensors"), "--set", str(tmp_path)]) == 1
    assert "not found" in capsys.readouterr().err


def test_parse_metrics_and_find_set_dirs(tmp_path):
    assert parse_metrics(None) is None and parse_metrics("all") is None and parse_metrics(" ") is None
    assert parse_metrics("en, Qabf,ssim_255,EN") == ["EN", "Qabf", "SSIM_255"]
    with pytest.raises(ValueError):
        parse_metrics("EN,XX")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    assert find_set_dirs(tmp_path) == (tmp_path / "a", tmp_path / "b")
    (tmp_path / "ir").mkdir()
    (tmp_path / "vi").mkdir()
    assert find_set_dirs(tmp_path) == (tmp_path / "ir", tmp_path / "vi")
    with pytest.raises(FileNotFoundError):
        find_set_dirs(tmp_path / "missing")


def test_eval_engine_on_tno_pairs(shared_data, tiny_ckpt, tmp_path, capsys):
    """Mode 2 on real test-set files: a tmp set of three TNO pairs (ir/ + vi/), fused outputs kept."""
    tno = shared_data / "test" / "TNO"
    s = tmp_path / "TNO3"
    for sub in ("ir", "vi"):
        (s / sub).mkdir(parents=True)
        for n in TNO_PAIRS:
            shutil.copy2(tno / sub / n, s / sub / n)
    keep = tmp_path / "fused"
    out = tmp_path / "tno.md"
    rc = main(
        [
            "eval",
            "--model",
            str(tiny_ckpt),
            "--set",
            str(s),
            "--keep",
            str(keep),
            "--k",
            "1",
            "--device",
            "cpu",
            "-o",
            str(out),
        ]
    )
    cap = capsys.readouterr()
    assert rc == 0
    assert "fused 3 pairs with tiny.safetensors (pytorch, k=1)" in cap.out
    assert "evaluated 3 images, 0 skipped" in cap.out
    assert f"report: {out.resolve()}" in cap.out
    assert "fusing" in cap.err and "metrics" in cap.err
    assert sorted(p.name for p in keep.iterdir()) == list(TNO_PAIRS)
    text = out.read_text(encoding="utf-8")
    lines = _table(text)
    assert [ln.split("|")[1].strip() for ln in lines[2:-1]] == ["07", "19", "20"]
    assert lines[-1].startswith("| **mean ± std** (n=3) |")
    assert "tiny.safetensors" in text and "## Skipped" not in text
    # values in the report are those of the kept fused images
    F = read_gray(keep / "07.png")
    A, B = read_gray(s / "ir" / "07.png"), read_gray(s / "vi" / "07.png")
    en = float(lines[2].split("|")[2])
    assert en == pytest.approx(evaluate(F, A, B, metrics=["EN"])["EN"], abs=1e-4)
    with Image.open(out.with_suffix(".png")) as im:
        assert im.format == "PNG"


def test_eval_engine_temp_dir_ab_layout_and_failures(tiny_ckpt, tmp_path, capsys):
    """a/ + b/ layout, outputs in a temporary folder, an unpaired file and a corrupt pair reported once."""
    s = tmp_path / "med"
    (s / "a").mkdir(parents=True)
    (s / "b").mkdir()
    for i, n in enumerate(("p1", "p2")):
        _save(_img(i), s / "a" / f"{n}.png")
        _save(_img(i + 10, colour=True), s / "b" / f"{n}.png")
    _save(_img(20), s / "a" / "only_a.png")
    _save(_img(21), s / "a" / "bad.png")
    (s / "b" / "bad.png").write_bytes(b"junk")
    out = tmp_path / "med.md"
    rc = main(["eval", "--model", str(tiny_ckpt), "--set", str(s), "-o", str(out), "-q", "--metrics", "EN,SD,Qabf"])
    cap = capsys.readouterr()
    assert rc == 0
    assert "fused 2 pairs" in cap.out and "1 failed, 1 unpaired" in cap.out
    assert "evaluated 2 images, 2 skipped" in cap.out
    assert cap.err.count("skipped bad:") == 1 and "fusion failed" in cap.err
    assert cap.err.count("skipped only_a:") == 1
    text = out.read_text(encoding="utf-8")
    assert _table(text)[0] == "| image | EN | SD | Qabf |"
    assert "temporary folder, deleted" in text and "## Skipped (2)" in text
    assert not any(p.name.startswith("tokfuse_eval_") for p in tmp_path.iterdir())


def test_eval_help_lists_options(capsys):
    with pytest.raises(SystemExit) as e:
        main(["eval", "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for opt in (
        "--fused",
        "--ir",
        "--vis",
        "-o",
        "--figure",
        "--convention",
        "--metrics",
        "--model",
        "--set",
        "--keep",
        "--k",
    ):
        assert opt in text


def test_old_spellings_engine_and_out_still_work_with_a_warning(dirs, tmp_path, capsys):
    """--out and --engine (the names before -o/--output and -m/--model): same result, a deprecation warning,
    not in the help."""
    new, old = tmp_path / "new.md", tmp_path / "old.md"
    common = ["eval", "--fused", str(dirs["fused"]), "--ir", str(dirs["ir"]), "--vis", str(dirs["vi"])]
    common += ["--metrics", "EN,SD", "--no-figure", "-q"]
    assert main([*common, "-o", str(new)]) == 0
    assert "deprecated" not in capsys.readouterr().err
    assert main([*common, "--out", str(old)]) == 0
    err = capsys.readouterr().err
    assert "--out is deprecated" in err and "use -o/--output" in err
    table = _table(new.read_text(encoding="utf-8"))
    assert table and table == _table(old.read_text(encoding="utf-8"))
    rc = main([*common, "-o", str(tmp_path / "x.md"), "--engine", "default"])
    err = capsys.readouterr().err
    assert rc == 1 and "--engine is deprecated" in err and "--fused cannot be combined with --model" in err


def test_eval_help_shows_the_new_names_only(capsys):
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    text = capsys.readouterr().out
    assert "-m [PATH|default], --model" in text and "-o OUTPUT, --output" in text
    assert "--engine" not in text and "--out " not in text
