"""The ``tokfuse`` CLI: fuse, fuse-dir, info, help, and errors as one clear line."""

import json
import subprocess
import sys

import numpy as np
import pytest
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


# what `tokfuse --help` imports, in a fresh interpreter: the sub-commands' modules, torch and the trainer stay out
HELP_IMPORTS = """
import json, sys
from tokfuse_rt.cli import COMMANDS, main
try:
    main(sys.argv[1:])
except SystemExit as e:
    code = e.code
print(json.dumps({"code": code, "modules": sorted(sys.modules), "commands": list(COMMANDS)}))
"""


def _help_imports(*argv):
    r = subprocess.run([sys.executable, "-c", HELP_IMPORTS, *argv], capture_output=True, text=True, check=True)
    out = json.loads(r.stdout.strip().splitlines()[-1])
    return r.stdout, out


def test_top_level_help_imports_no_sub_command_torch_or_trainer():
    text, out = _help_imports("--help")
    assert out["code"] == 0
    loaded = set(out["modules"])
    assert "torch" not in loaded and not any(m.startswith("tokfuse_rt.train") for m in loaded)
    sub = sorted(m for m in loaded if m.startswith("tokfuse_rt.cli."))
    assert sub == [], sub  # not even the shared options: the table alone prints the help
    for name in out["commands"]:  # every command of the table is listed
        assert f"\n    {name}" in text, name


def test_a_sub_command_imports_only_its_own_module():
    text, out = _help_imports("bench", "--help")
    assert out["code"] == 0 and "--rounds" in text
    sub = {m for m in out["modules"] if m.startswith("tokfuse_rt.cli.")}
    assert sub == {"tokfuse_rt.cli.bench", "tokfuse_rt.cli.options"}, sub
    assert "torch" not in out["modules"] and not any(m.startswith("tokfuse_rt.train") for m in out["modules"])


def test_every_command_of_the_table_builds_its_parser():
    from tokfuse_rt.cli import COMMANDS, build_parser

    for name in COMMANDS:
        p = build_parser(name)
        sub = next(a for a in p._actions if a.dest == "command").choices[name]
        assert sub.get_default("func") is not None, name  # a loaded command runs something
    with pytest.raises(ValueError, match="unknown sub-command"):
        build_parser("nope")


@pytest.mark.parametrize("cmd", ["fuse", "fuse-dir", "fuse-video", "info", "bench", "eval", "serve"])
def test_model_option_is_the_same_everywhere(cmd):
    """-m/--model PATH|default on every command that opens a model; -m alone means the bundled model."""
    from tokfuse_rt.cli import build_parser
    from tokfuse_rt.cli.options import model_path

    positional = {"fuse": ["a.png", "b.png", "-o", "f.png"], "fuse-video": ["a.mp4", "b.mp4", "-o", "f.mp4"]}
    required = {"fuse-dir": ["--ir", "i", "--vis", "v", "-o", "o"]}
    args = [cmd, *positional.get(cmd, []), *required.get(cmd, [])]
    p = build_parser(cmd)
    for given, want in ((["-m"], None), (["--model", "default"], None), (["-m", "x.onnx"], "x.onnx")):
        a = p.parse_args([*args, *given])
        got = a.model[0] if isinstance(a.model, list) else a.model  # bench: repeatable
        assert model_path(got) == want, (given, got)


def test_shared_options_have_one_spelling(capsys):
    """--k/--device/--threads and -o/--output come from one place: the same help text on every command."""
    from tokfuse_rt.cli import build_parser

    def option(cmd, flag):
        p = build_parser(cmd)
        sub = next(a for a in p._actions if a.dest == "command").choices[cmd]
        return next(a for a in sub._actions if flag in a.option_strings)

    for flag in ("--k", "--device", "--threads"):
        helps = {option(cmd, flag).help for cmd in ("fuse", "eval", "bench")}
        assert len(helps) == 1, (flag, helps)
    for cmd in ("fuse", "fuse-dir", "fuse-video", "calibrate", "eval", "export"):
        assert option(cmd, "-o").option_strings == ["-o", "--output"], cmd


def test_old_spellings_are_hidden_aliases_that_warn(capsys):
    from tokfuse_rt.cli import build_parser

    p = build_parser("calibrate")
    a = p.parse_args(["calibrate", "--ir", "i.png", "--vis", "v.png", "-o", "r.json", "--model", "affine"])
    assert a.transform == "affine"
    assert "--model is deprecated" in capsys.readouterr().err
    a = p.parse_args(["calibrate", "--ir", "i.png", "--vis", "v.png", "-o", "r.json"])
    assert a.transform == "homography" and capsys.readouterr().err == ""  # no warning without the old name
    r = subprocess.run(
        [sys.executable, "-m", "tokfuse_rt", "calibrate", "--help"], capture_output=True, text=True, check=True
    )
    assert "--transform" in r.stdout and "--model" not in r.stdout
