"""``tokfuse bench``: Engine.fuse timed for several models side by side in one run."""

import json

import pytest

from tokfuse_rt.cli import main


def test_bench_two_models_side_by_side(tiny_ckpt, tiny_onnx, capsys):
    assert (
        main(
            [
                "bench",
                "--model",
                str(tiny_ckpt),
                "--model",
                str(tiny_onnx),
                "--size",
                "64x48",
                "--rounds",
                "3",
                "--warmup",
                "1",
                "--k",
                "2",
                "--threads",
                "1",
                "--json",
            ]
        )
        == 0
    )
    res = json.loads(capsys.readouterr().out)
    assert [r["backend"] for r in res] == ["pytorch", "onnxruntime"]
    for r in res:
        assert r["size"] == "64x48" and r["k"] == 2 and r["rounds"] == 3 and r["threads"] == 1
        assert 0 < r["min_ms"] <= r["median_ms"] <= r["p90_ms"]
        assert r["pairs_per_s"] == pytest.approx(1000.0 / r["median_ms"])


def test_bench_text_output_and_errors(tiny_ckpt, tmp_path, capsys):
    assert main(["bench", "--model", str(tiny_ckpt), "--rounds", "1", "--warmup", "0"]) == 0
    out = capsys.readouterr().out
    assert "tiny" in out and "pytorch" in out and "496x301" in out and "pairs/s" in out  # the bundled sample pair
    assert main(["bench", "--model", str(tiny_ckpt), "--rounds", "0"]) == 1
    assert "--rounds must be >= 1" in capsys.readouterr().err
    assert main(["bench", "--model", str(tiny_ckpt), "--size", "8x8"]) == 1
    assert "--size '8x8'" in capsys.readouterr().err
    assert main(["bench", "--model", str(tiny_ckpt), "--ir", str(tmp_path / "a.png")]) == 1
    assert "both --ir and --vis" in capsys.readouterr().err
    assert main(["bench", "--model", str(tiny_ckpt), "--k", "99"]) == 1
    assert "k must be in [0, 8]" in capsys.readouterr().err


def test_bench_size_over_the_pixel_limit_is_refused_before_any_work(tiny_ckpt, capsys):
    """--size 60000x60000 (3.6 GP): one line naming the size and the limit, nothing allocated."""
    import time

    t0 = time.monotonic()
    assert main(["bench", "--model", str(tiny_ckpt), "--size", "60000x60000", "--rounds", "1"]) == 1
    err = capsys.readouterr().err
    assert "60000x60000" in err and "max-pixels" in err, err
    assert time.monotonic() - t0 < 10
    assert main(["bench", "--model", str(tiny_ckpt), "--size", "64x48", "--max-pixels", "1000", "--rounds", "1"]) == 1
    assert "64x48" in capsys.readouterr().err


def test_bench_backends_of_one_model(tiny_ckpt, capsys):
    """--backend repeated for one model: the same checkpoint through each backend, in order."""
    from tokfuse_rt.backends.native_backend import native_available

    backends = ["pytorch", "native"] if native_available() else ["pytorch", "pytorch"]
    argv = ["bench", "-m", str(tiny_ckpt), "--size", "64x48", "--rounds", "2", "--warmup", "0", "--json"]
    assert main([*argv, *(x for b in backends for x in ("--backend", b))]) == 0
    res = json.loads(capsys.readouterr().out)
    assert [r["backend"] for r in res] == backends and len({r["model"] for r in res}) == 1


def test_bench_backend_count_must_pair_with_the_models(tiny_ckpt, tiny_onnx, capsys):
    argv = ["bench", "-m", str(tiny_ckpt), "-m", str(tiny_onnx), "-m", str(tiny_ckpt)]
    assert main([*argv, "--backend", "pytorch", "--backend", "pytorch"]) == 1
    assert "2 --backend for 3 --model" in capsys.readouterr().err
