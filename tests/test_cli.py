"""The ``tokfuse`` CLI: fuse, fuse-dir, info, help, and errors as one clear line."""

import json
import subprocess
import sys

import numpy as np
from PIL import Image

from tokfuse_rt.cli import main


def _pair(d, name="a.png", hw=(20, 28)):
    rng = np.random.default_rng(0)
    (d / "ir").mkdir(exist_ok=True)
    (d / "vi").mkdir(exist_ok=True)
    Image.fromarray(rng.integers(0, 256, hw, dtype=np.uint8)).save(d / "ir" / name)
    Image.fromarray(rng.integers(0, 256, (*hw, 3), dtype=np.uint8)).save(d / "vi" / name)


def test_fuse_and_info(tiny_ckpt, tmp_path, capsys):
    _pair(tmp_path)
    out = tmp_path / "f.png"
    assert (
        main(
            [
                "fuse",
                str(tmp_path / "ir/a.png"),
                str(tmp_path / "vi/a.png"),
                "-o",
                str(out),
                "--model",
                str(tiny_ckpt),
                "--k",
                "1",
            ]
        )
        == 0
    )
    assert np.asarray(Image.open(out)).shape == (20, 28, 3)
    assert "wrote" in capsys.readouterr().out
    assert main(["info", "--model", str(tiny_ckpt), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["backend"] == "pytorch" and info["config"]["num_tokens"] == 8


def test_fuse_dir_exit_code_reports_failures(tiny_ckpt, tmp_path, capsys):
    _pair(tmp_path, "a.png")
    _pair(tmp_path, "b.png")
    (tmp_path / "vi" / "b.png").write_bytes(b"junk")
    rc = main(
        [
            "fuse-dir",
            "--ir",
            str(tmp_path / "ir"),
            "--vis",
            str(tmp_path / "vi"),
            "-o",
            str(tmp_path / "o"),
            "--model",
            str(tiny_ckpt),
            "-q",
        ]
    )
    text = capsys.readouterr().out
    assert rc == 1 and "1 fused, 1 failed" in text and "b.png" in text
    assert (tmp_path / "o" / "a.png").exists()


def test_errors_are_one_clear_line(tiny_ckpt, tmp_path, capsys):
    rc = main(
        [
            "fuse",
            str(tmp_path / "nope.png"),
            str(tmp_path / "nope2.png"),
            "-o",
            str(tmp_path / "x.png"),
            "--model",
            str(tiny_ckpt),
        ]
    )
    err = capsys.readouterr().err
    assert rc == 1 and err.startswith("tokfuse fuse: error: ir: file not found")
    assert main(["info", "--model", str(tmp_path / "missing.safetensors")]) == 1
    assert "model file not found" in capsys.readouterr().err


def test_help_reads_well():
    r = subprocess.run([sys.executable, "-m", "tokfuse_rt", "--help"], capture_output=True, text=True, check=True)
    for word in ("fuse", "fuse-dir", "info", "examples:"):
        assert word in r.stdout
    r = subprocess.run(
        [sys.executable, "-m", "tokfuse_rt", "fuse", "--help"], capture_output=True, text=True, check=True
    )
    assert "--k" in r.stdout and "--model" in r.stdout
    r = subprocess.run([sys.executable, "-m", "tokfuse_rt"], capture_output=True, text=True)
    assert r.returncode == 2 and "usage: tokfuse" in r.stdout
