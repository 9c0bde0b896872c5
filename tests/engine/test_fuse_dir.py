"""fuse-dir reliability: no pair stops a run, reports always written, resume, safe outputs;
the CLI's exit codes and one-line errors."""

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tokfuse_rt import Engine
from tokfuse_rt.cli import main
from tokfuse_rt.outputs import TEMP_SUFFIX, output_ok

ROOT = Path(__file__).resolve().parents[2]


def _folders(tmp_path, names=("a.png", "b.png", "c.jpg"), hw=(24, 32)):
    rng = np.random.default_rng(0)
    ird, visd = tmp_path / "ir", tmp_path / "vi"
    ird.mkdir(exist_ok=True)
    visd.mkdir(exist_ok=True)
    for n in names:
        Image.fromarray(rng.integers(0, 256, hw, dtype=np.uint8)).save(ird / n)
        Image.fromarray(rng.integers(0, 256, (*hw, 3), dtype=np.uint8)).save(visd / n)
    return ird, visd


@pytest.fixture(scope="module")
def eng(tiny_ckpt):
    with Engine(tiny_ckpt) as e:
        yield e


def test_any_failure_of_one_pair_is_reported_and_the_run_goes_on(eng, tmp_path, monkeypatch, png_header_only):
    ird, visd = _folders(tmp_path, names=[f"{i}.png" for i in range(6)])
    # decode error, size limit (a header claiming 50000^2), backend error, out of memory, write error
    (visd / "0.png").write_bytes(b"\x89PNG garbage")
    png_header_only(ird / "1.png", 50000, 50000)
    out = tmp_path / "out"
    out.mkdir()
    (out / "5.png").mkdir()  # the output name is taken by a folder
    real = eng._backend.run
    seen = []

    def flaky(a, b, k):
        seen.append(1)
        if len(seen) == 1:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        if len(seen) == 2:
            raise MemoryError()
        return real(a, b, k)

    monkeypatch.setattr(eng._backend, "run", flaky)
    monkeypatch.setattr(eng, "batch_size", 1)  # one backend call per pair: the 1st and 2nd calls fail
    rep = eng.fuse_dir(ird, visd, out, progress=False)
    failed = dict(rep.failed)
    assert sorted(failed) == ["0.png", "1.png", "2.png", "3.png", "5.png"] and [p.name for p in rep.written] == [
        "4.png"
    ]
    assert "not a readable image" in failed["0.png"] and "over the limit of 100 MP" in failed["1.png"]
    assert failed["2.png"].startswith("BackendError: model file") and "illegal memory access" in failed["2.png"]
    assert failed["3.png"].startswith("out of memory")
    assert "IsADirectoryError" in failed["5.png"] or "Is a directory" in failed["5.png"]
    assert all("\n" not in m for m in failed.values())
    d = json.loads((out / "tokfuse-report.json").read_text())
    assert d["counts"] == {"fused": 1, "failed": 5, "unpaired": 0, "already_done": 0, "ambiguous": 0}
    assert not [p for p in out.iterdir() if p.name.endswith(TEMP_SUFFIX)]


def test_pairs_go_in_batches_and_a_failed_batch_is_retried_pair_by_pair(eng, tmp_path, monkeypatch):
    """Same-size pairs share backend calls (batch_size 4); a call that fails because of one pair is
    retried pair by pair, so only that pair fails and the others equal ``fuse`` of their pair."""
    ird, visd = _folders(tmp_path, names=["a.png", "b.png", "c.png", "d.png"])
    bad = eng.prepare(ird / "b.png", visd / "b.png").luminance()[0]
    real, sizes = eng._backend.run, []

    def fails_on_b(a, b, k):
        sizes.append(a.shape[0])
        if any(np.array_equal(x[0], bad) for x in a):
            raise RuntimeError("this pair breaks the kernel")
        return real(a, b, k)

    monkeypatch.setattr(eng._backend, "run", fails_on_b)
    rep = eng.fuse_dir(ird, visd, tmp_path / "out", progress=False)
    assert sizes == [4, 1, 1, 1, 1]  # one call for the batch, then one per pair
    assert [n for n, _ in rep.failed] == ["b.png"] and "this pair breaks the kernel" in rep.failed[0][1]
    monkeypatch.setattr(eng._backend, "run", real)
    for n in ("a.png", "c.png", "d.png"):
        got = np.asarray(Image.open(tmp_path / "out" / n))
        np.testing.assert_array_equal(got, eng.fuse(ird / n, visd / n))


def test_resume_skips_outputs_that_decode_and_overwrite_redoes(eng, tmp_path):
    ird, visd = _folders(tmp_path)
    out = tmp_path / "out"
    rep = eng.fuse_dir(ird, visd, out, progress=False)
    assert [p.name for p in rep.written] == ["a.png", "b.png", "c.png"] and rep.ok
    first = (out / "b.png").read_bytes()
    (out / "c.png").write_bytes((out / "c.png").read_bytes()[:50])  # truncated by a crash
    stale = out / f".a.png.000000.999999999.abcd{TEMP_SUFFIX}"  # a temporary of a killed run
    stale.write_bytes(b"partial")
    rep = eng.fuse_dir(ird, visd, out, progress=False)
    assert [p.name for p in rep.skipped] == ["a.png", "b.png"] and [p.name for p in rep.written] == ["c.png"]
    assert output_ok(out / "c.png") and (out / "b.png").read_bytes() == first
    rep = eng.fuse_dir(ird, visd, out, progress=False, overwrite=True)
    assert len(rep.written) == 3 and not rep.skipped


def test_killed_run_leaves_no_corrupt_output_and_rerun_completes(tiny_ckpt, tmp_path):
    """SIGKILL in the middle of writing an output: no partial file under an output name; the re-run
    removes the temporary and fuses what is missing."""
    ird, visd = _folders(tmp_path, names=[f"{i}.png" for i in range(4)])
    out = tmp_path / "out"
    code = f"""
import os, signal, sys
import tokfuse_rt.outputs as o
from tokfuse_rt import Engine
real, n = o.atomic_write, []
def dying(path, write):
    n.append(path)
    if len(n) == 3:
        def half(f):
            f.write(b"\\x89PNG half")
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        return real(path, half)
    return real(path, write)
o.atomic_write = dying
Engine({str(tiny_ckpt)!r}).fuse_dir({str(ird)!r}, {str(visd)!r}, {str(out)!r}, progress=False)
"""
    r = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True)
    assert r.returncode == -signal.SIGKILL
    names = sorted(p.name for p in out.iterdir())
    assert [n for n in names if not n.startswith(".")] == ["0.png", "1.png"]
    assert all(output_ok(out / n) for n in ("0.png", "1.png"))
    assert len([n for n in names if n.endswith(TEMP_SUFFIX)]) == 1
    rep = Engine(tiny_ckpt).fuse_dir(ird, visd, out, progress=False)
    assert [p.name for p in rep.written] == ["2.png", "3.png"] and len(rep.skipped) == 2
    assert len(rep.removed_temps) == 1 and not [p for p in out.iterdir() if p.name.endswith(TEMP_SUFFIX)]


def test_interrupt_still_writes_the_report(eng, tmp_path, monkeypatch):
    ird, visd = _folders(tmp_path)
    n = []
    real = eng.fuse_batch

    def fuse_batch(*a, **k):
        n.append(1)
        if len(n) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(eng, "fuse_batch", fuse_batch)
    monkeypatch.setattr(eng, "batch_size", 1)
    with pytest.raises(KeyboardInterrupt):
        eng.fuse_dir(ird, visd, tmp_path / "out", progress=False)
    d = json.loads((tmp_path / "out" / "tokfuse-report.json").read_text())
    assert d["interrupted"] is True and d["counts"]["fused"] == 1


def test_pairing_regressions_in_fuse_dir(eng, tmp_path):
    """ir/scene.png + ir/scene.jpg with vi/scene.jpg: scene.jpg is fused with scene.jpg (never the
    wrong infrared); an ambiguous stem is reported and not fused; .webp pairs are fused."""
    rng = np.random.default_rng(1)
    ird, visd = tmp_path / "ir", tmp_path / "vi"
    ird.mkdir(), visd.mkdir()
    right = rng.integers(0, 256, (24, 32), dtype=np.uint8)
    wrong = np.zeros((24, 32), np.uint8)
    vis = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    Image.fromarray(wrong).save(ird / "scene.png")
    Image.fromarray(right).save(ird / "scene.jpg", quality=100)
    Image.fromarray(vis).save(visd / "scene.jpg", quality=100)
    for n in ("amb.png", "amb.tif"):
        Image.fromarray(wrong).save(ird / n)
    Image.fromarray(vis).save(visd / "amb.bmp")
    Image.fromarray(right).save(ird / "w.webp", lossless=True)
    Image.fromarray(vis).save(visd / "w.webp", lossless=True)
    rep = eng.fuse_dir(ird, visd, tmp_path / "out", progress=False)
    assert sorted(p.name for p in rep.written) == ["scene.png", "w.png"]
    assert [s for s, _ in rep.ambiguous] == ["amb"] and rep.unpaired == ["ir/scene.png"]
    want = eng.fuse(ird / "scene.jpg", visd / "scene.jpg")
    assert np.array_equal(np.asarray(Image.open(tmp_path / "out" / "scene.png")), want)
    assert not (tmp_path / "out" / "amb.png").exists()


def test_bad_output_settings_refused_before_any_work(eng, tmp_path):
    ird, visd = _folders(tmp_path)
    with pytest.raises(ValueError, match="input folder"):
        eng.fuse_dir(ird, visd, visd, progress=False)
    with pytest.raises(ValueError, match="input folder"):
        eng.fuse_dir(ird, visd, ird / "fused", progress=False)
    with pytest.raises(ValueError, match="unknown output image extension"):
        eng.fuse_dir(ird, visd, tmp_path / "out", ext=".gif", progress=False)
    assert not (tmp_path / "out").exists() and not (ird / "fused").exists()
    rep = eng.fuse_dir(ird, visd, tmp_path / "jpg", ext="jpg", quality=60, progress=False)
    assert [p.name for p in rep.written] == ["a.jpg", "b.jpg", "c.jpg"]


# --- CLI -------------------------------------------------------------------------------------------
def test_cli_fuse_dir_summary_report_and_exit_codes(tiny_ckpt, tmp_path, capsys):
    ird, visd = _folders(tmp_path)
    out = tmp_path / "out"
    args = ["fuse-dir", "--ir", str(ird), "--vis", str(visd), "-o", str(out), "--model", str(tiny_ckpt), "-q"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "3 fused, 0 failed" in text and f"report: {(out / 'tokfuse-report.json').resolve()}" in text
    assert main(args) == 0 and "0 fused, 0 failed, 0 unpaired, 3 already done" in capsys.readouterr().out
    Image.fromarray(np.zeros((24, 32), np.uint8)).save(ird / "d.png")
    Image.fromarray(np.zeros((24, 32), np.uint8)).save(ird / "d.tif")
    Image.fromarray(np.zeros((24, 32), np.uint8)).save(visd / "d.bmp")
    assert main(args + ["--report", str(tmp_path / "r.json")]) == 1  # an ambiguous stem: exit 1
    assert "1 ambiguous" in capsys.readouterr().out
    assert json.loads((tmp_path / "r.json").read_text())["ambiguous"][0]["stem"] == "d"


@pytest.mark.parametrize(
    "argv,msg",
    [
        (["fuse", "a.png", "b.png", "-o", "fused"], "unknown image extension '(none)'"),
        (["fuse", "a.png", "b.png", "-o", "f.png", "--quality", "101"], "quality must be an int in [1, 100]"),
        (["fuse-dir", "--ir", "IR", "--vis", "IR", "-o", "IR/out"], "input folder"),
        (["fuse-dir", "--ir", "IR", "--vis", "IR", "-o", "o", "--ext", "gif"], "unknown output image extension"),
    ],
)
def test_cli_refuses_bad_outputs_before_loading_the_model(tmp_path, capsys, argv, msg):
    (tmp_path / "IR").mkdir()
    argv = [a.replace("IR", str(tmp_path / "IR")) for a in argv] + ["--model", str(tmp_path / "missing.onnx")]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert msg in err and "model file not found" not in err and len(err.strip().splitlines()) == 1


def test_cli_errors_without_traceback(tiny_ckpt, tmp_path, capsys, png_header_only):
    ird, visd = _folders(tmp_path)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        rc = main(
            [
                "fuse",
                str(ird / "a.png"),
                str(visd / "a.png"),
                "-o",
                str(locked / "x" / "f.png"),
                "--model",
                str(tiny_ckpt),
            ]
        )
    finally:
        locked.chmod(0o700)
    err = capsys.readouterr().err
    if os.geteuid() != 0:  # root may write anyway
        assert rc == 1 and "Permission denied" in err and "Traceback" not in err
    big = tmp_path / "big.png"
    png_header_only(big, 20000, 20000)
    assert main(["fuse", str(big), str(visd / "a.png"), "-o", str(tmp_path / "f.png"), "--model", str(tiny_ckpt)]) == 1
    err = capsys.readouterr().err  # Pillow's own limit may refuse first (its wording), or ours
    assert re.search(r"ir: image .*400.0 MP.*over the limit of 100 MP", err), err
    assert (
        main(
            [
                "fuse",
                str(ird / "a.png"),
                str(visd / "a.png"),
                "-o",
                str(tmp_path / "f.png"),
                "--model",
                str(tiny_ckpt),
                "--max-pixels",
                "300",
            ]
        )
        == 1
    )
    assert "ir: image is 32x24 (0.0 MP), over the limit of 0.0003 MP" in capsys.readouterr().err


def test_cli_interrupt_exit_130(tiny_ckpt, tmp_path, capsys, monkeypatch):
    ird, visd = _folders(tmp_path)

    def stop(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(Engine, "fuse_batch", stop)
    rc = main(
        ["fuse-dir", "--ir", str(ird), "--vis", str(visd), "-o", str(tmp_path / "o"), "--model", str(tiny_ckpt), "-q"]
    )
    assert rc == 130 and "interrupted" in capsys.readouterr().err
    assert json.loads((tmp_path / "o" / "tokfuse-report.json").read_text())["interrupted"] is True


def test_cli_train_accepts_the_readme_arguments():
    from tokfuse_rt.cli import build_parser

    a = build_parser("train").parse_args(
        ["train", "--data", "../shared/data/train", "-o", "model.safetensors", "--steps1", "3", "--seed", "1"]
    )
    assert a.func.__name__ == "cmd_train" and a.data == "../shared/data/train" and a.out == "model.safetensors"
    assert a.steps1 == 3 and a.seed == 1


def test_cli_quality_and_depth_reach_the_output(tiny_ckpt, tmp_path):
    ird, visd = _folders(tmp_path, hw=(64, 64))
    sizes = {}
    for q in (20, 95):
        out = tmp_path / f"q{q}.jpg"
        assert (
            main(
                [
                    "fuse",
                    str(ird / "a.png"),
                    str(visd / "a.png"),
                    "-o",
                    str(out),
                    "--quality",
                    str(q),
                    "--model",
                    str(tiny_ckpt),
                ]
            )
            == 0
        )
        sizes[q] = out.stat().st_size
    assert sizes[20] < sizes[95]
    raw = (np.arange(64 * 64).reshape(64, 64) % 4096).astype(np.uint16)
    Image.fromarray(raw).save(tmp_path / "t16.png")
    outs = {}
    for depth in ("auto", "full"):
        outs[depth] = tmp_path / f"{depth}.png"
        assert (
            main(
                [
                    "fuse",
                    str(tmp_path / "t16.png"),
                    str(tmp_path / "t16.png"),
                    "-o",
                    str(outs[depth]),
                    "--depth",
                    depth,
                    "--model",
                    str(tiny_ckpt),
                ]
            )
            == 0
        )
    # 12-bit data: 'full' (/65535) is nearly black, 'auto' (/4095) is not
    assert np.asarray(Image.open(outs["full"])).mean() < 20 < np.asarray(Image.open(outs["auto"])).mean()


def test_pairs_whose_output_names_clash_are_reported_not_fused(eng, tmp_path, capsys):
    """x.png, x.jpg and x.png.png in both folders: x.png and x.png.png would both be written as
    x.png.png, so neither is fused (reported, exit 1); no output holds another pair's image."""
    ird, visd = _folders(tmp_path, names=("x.png", "x.jpg", "x.png.png", "y.png"))
    out = tmp_path / "out"
    rep = eng.fuse_dir(ird, visd, out, progress=False)
    clash = {s for s, _ in rep.ambiguous}
    assert clash == {"x.png"}, rep.ambiguous
    assert "x.png.png" in rep.ambiguous[0][1] and "x.png" in rep.ambiguous[0][1]
    written = sorted(p.name for p in rep.written)
    assert written == ["x.jpg.png", "y.png"] and not rep.skipped
    for name, src in (("x.jpg.png", "x.jpg"), ("y.png", "y.png")):  # each output is its own pair's fusion
        np.testing.assert_array_equal(np.asarray(Image.open(out / name)), eng.fuse(ird / src, visd / src))
    # a re-run still reports the clash (never "already done" for another pair's image)
    rep2 = eng.fuse_dir(ird, visd, out, progress=False)
    assert {s for s, _ in rep2.ambiguous} == {"x.png"} and sorted(p.name for p in rep2.skipped) == written
    assert main(["fuse-dir", "--ir", str(ird), "--vis", str(visd), "-o", str(out), "-q", "-m", str(eng.path)]) == 1


def test_report_and_fuse_output_never_overwrite_an_input(eng, tmp_path, capsys):
    ird, visd = _folders(tmp_path, names=("a.png", "b.png"))
    before = {p: p.read_bytes() for p in [*ird.iterdir(), *visd.iterdir()]}
    out = tmp_path / "out"
    m = ["-m", str(eng.path)]
    for rep in (ird / "a.png", visd / "b.png", ird / "new.json"):
        code = main(["fuse-dir", "--ir", str(ird), "--vis", str(visd), "-o", str(out), "--report", str(rep), "-q", *m])
        assert code == 1
        err = capsys.readouterr().err
        assert "report" in err and "input" in err and str(rep.parent) in err, err
        assert not out.exists()  # refused before any work
    for target in (ird / "a.png", visd / "a.png"):
        assert main(["fuse", str(ird / "a.png"), str(visd / "a.png"), "-o", str(target), *m]) == 1
        err = capsys.readouterr().err
        assert "input file" in err and str(target) in err, err
    link = tmp_path / "link.png"
    link.symlink_to(ird / "a.png")  # the same file under another name
    assert main(["fuse", str(ird / "a.png"), str(visd / "a.png"), "-o", str(link), *m]) == 1
    assert {p: p.read_bytes() for p in before} == before
    with pytest.raises(ValueError, match="input"):
        eng.fuse_dir(ird, visd, out, progress=False, report_path=visd / "a.png")


def test_sigterm_writes_the_report_and_exits_143(tiny_ckpt, tmp_path):
    """SIGTERM mid-run (as a service manager stops a job): the report is written (interrupted), every
    output present decodes, no temporary is left, and the exit status is the documented 143."""
    ird, visd = _folders(tmp_path, names=[f"{i}.png" for i in range(5)])
    out = tmp_path / "out"
    code = f"""
import os, signal, sys
import tokfuse_rt.outputs as o
from tokfuse_rt.cli import main
real, n = o.atomic_write, []
def terminated(path, write):
    n.append(path)
    if len(n) == 3:
        os.kill(os.getpid(), signal.SIGTERM)
    return real(path, write)
o.atomic_write = terminated
sys.exit(main(["fuse-dir", "--ir", {str(ird)!r}, "--vis", {str(visd)!r}, "-o", {str(out)!r}, "-q",
               "-m", {str(tiny_ckpt)!r}]))
"""
    r = subprocess.run(
        [sys.executable, "-c", code], env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True
    )
    assert r.returncode == 143, (r.returncode, r.stderr)
    assert "terminated" in r.stderr and "Traceback" not in r.stderr, r.stderr
    d = json.loads((out / "tokfuse-report.json").read_text())
    assert d["interrupted"] is True and 1 <= d["counts"]["fused"] <= 3
    assert not [p for p in out.iterdir() if p.name.endswith(TEMP_SUFFIX)]
    assert all(output_ok(p) for p in out.glob("*.png"))
