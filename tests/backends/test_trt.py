"""TensorRT export: the no-TensorRT path (ONNX + compatibility report + one clear line, non-zero
exit), the operator-list checker, shape profiles, the CLI, and TensorRT vs ONNX Runtime on a GPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")

from export.to_onnx import iter_nodes
from export.to_trt import EXIT_NO_TRT, check_profile, parse_shape, tensorrt_available
from export.trt_support import OPERATORS, SUPPORTED, TRT_VERSION, UNSUPPORTED, check_model

ROOT = Path(__file__).resolve().parents[2]
HAVE_TRT = tensorrt_available()[0]


def _ops(path) -> set:
    return {n.op_type for n in iter_nodes(onnx.load(str(path)).graph)}


@pytest.mark.skipif(HAVE_TRT, reason="TensorRT and a GPU are present: the build path is tested instead")
def test_to_trt_without_tensorrt_writes_onnx_and_report(tiny_ckpt, tmp_path):
    out = tmp_path / "model.plan"
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run(
        [sys.executable, "-m", "export.to_trt", str(tiny_ckpt), "-o", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode != 0 and r.returncode == EXIT_NO_TRT, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got: {r.stderr!r}"
    line = lines[0]
    assert line.startswith("export.to_trt: error:") and "TensorRT" in line and "no engine built" in line
    onnx_path, md, js = tmp_path / "model.onnx", tmp_path / "model.trt_report.md", tmp_path / "model.trt_report.json"
    assert str(onnx_path) in line and str(md) in line
    assert onnx_path.is_file() and md.is_file() and js.is_file() and not out.exists()
    onnx.checker.check_model(str(onnx_path))
    ops = _ops(onnx_path)
    text = md.read_text()
    rep = json.loads(js.read_text())
    assert f"TensorRT {TRT_VERSION}" in text
    for op in ops:
        assert f"| {op} |" in text, f"{op} missing from the report"
    assert {o["op"] for o in rep["ops"]} == ops
    assert rep["ok"] is True and all(o["status"] == "supported" for o in rep["ops"])
    assert sum(o["count"] for o in rep["ops"]) == sum(1 for _ in iter_nodes(onnx.load(str(onnx_path)).graph))


def test_operator_table_is_data():
    assert len(OPERATORS) > 180 and TRT_VERSION.startswith("10.")
    assert {"Conv", "MatMul", "Resize", "ArgMax", "LayerNormalization", "GatherND", "Erf"} <= SUPPORTED
    assert {"BitShift", "Unique", "ConvInteger", "SequenceAt"} <= UNSUPPORTED
    assert not SUPPORTED & UNSUPPORTED
    assert "FP32" in OPERATORS["Conv"].types and "INT64" in OPERATORS["Less"].types


def test_exported_graph_is_trt_compatible(tiny_onnx):
    rep = check_model(tiny_onnx)
    assert rep.ok, rep.summary()
    assert {o.op for o in rep.ops} == _ops(tiny_onnx)
    assert [io[0] for io in rep.io] == ["ir", "vis", "k", "fused", "ids"]


def test_checker_names_unsupported_ops_and_restrictions(tmp_path):
    from onnx import TensorProto, helper

    from export.trt_support import write_report

    x = helper.make_tensor_value_info("x", TensorProto.INT32, [4])
    y = helper.make_tensor_value_info("y", TensorProto.INT32, [4])
    img = helper.make_tensor_value_info("img", TensorProto.FLOAT, [1, 1, 8, 8])
    big = helper.make_tensor_value_info("big", TensorProto.FLOAT, [1, 1, 16, 16])
    sizes = helper.make_tensor("sizes", TensorProto.INT64, [4], [1, 1, 16, 16])
    nodes = [
        helper.make_node("BitShift", ["x", "x"], ["y"], direction="LEFT"),
        helper.make_node("Resize", ["img", "", "", "sizes"], ["big"], mode="cubic"),
        helper.make_node("Custom", ["img"], ["z"], domain="my.domain"),
    ]
    z = helper.make_tensor_value_info("z", TensorProto.FLOAT, [1])
    g = helper.make_graph(nodes, "g", [x, img], [y, big, z], initializer=[sizes])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("my.domain", 1)])
    rep = check_model(m)
    st = {o.op: o.status for o in rep.ops}
    assert st == {"BitShift": "unsupported", "Resize": "restricted", "my.domain::Custom": "unknown"}
    assert not rep.ok and "BitShift" in rep.summary() and "Resize" in rep.summary()
    md, js = write_report(rep, tmp_path / "r.md")
    assert "cubic" in md.read_text() and json.loads(js.read_text())["ok"] is False


def test_shape_profiles():
    assert parse_shape("1x480x640") == (1, 1, 480, 640)
    assert parse_shape("2x1x64x64") == (2, 1, 64, 64)
    for bad in ("480x640", "1x3x4x5", "axbxc", "0x16x16"):
        with pytest.raises(ValueError, match="expected BxHxW"):
            parse_shape(bad)
    check_profile((1, 1, 16, 16), (1, 1, 480, 640), (4, 1, 2048, 2048))
    with pytest.raises(ValueError, match="min <= opt <= max"):
        check_profile((1, 1, 16, 16), (1, 1, 480, 640), (4, 1, 256, 2048))
    with pytest.raises(ValueError, match=">= 16"):
        check_profile((1, 1, 8, 16), (1, 1, 480, 640), (4, 1, 2048, 2048))


def test_cli_export(tiny_onnx, tmp_path, capsys, monkeypatch):
    from tokfuse_rt.cli import main
    from tokfuse_rt.cli.export import resolve

    assert resolve(["onnx", "m.safetensors"], None) == ("onnx", "m.safetensors")
    assert resolve(["m.safetensors"], "x.plan") == ("trt", "m.safetensors")
    assert resolve(["tensorrt", "m.safetensors"], "x.engine") == ("trt", "m.safetensors")
    # `tokfuse export onnx` calls export.to_onnx's export_onnx with every one of its options
    import export.to_onnx as to_onnx

    seen = {}

    def spy(ckpt, output, **kw):
        seen.update(kw, ckpt=ckpt, output=output)
        raise to_onnx.ExportError("stop here")

    monkeypatch.setattr(to_onnx, "export_onnx", spy)
    assert main(["export", "onnx", "m.safetensors", "-o", "o.onnx", "--opset", "18"]) == 1
    assert seen == dict(
        ckpt="m.safetensors",
        output=Path("o.onnx"),
        opset=18,
        exporter="auto",
        verify=True,
        graph_opt=True,
        halves=True,
        int8=False,
        calib=None,
        calib_pairs=None,
    )
    assert "tokfuse export onnx: error: stop here" in capsys.readouterr().err
    assert (
        main(
            [
                "export",
                "m.safetensors",
                "-o",
                "o.onnx",
                "--exporter",
                "torchscript",
                "--no-verify",
                "--no-graph-opt",
                "--no-halves",
            ]
        )
        == 1
    )
    assert seen == dict(
        ckpt="m.safetensors",
        output=Path("o.onnx"),
        opset=18,
        exporter="torchscript",
        verify=False,
        graph_opt=False,
        halves=False,
        int8=False,
        calib=None,
        calib_pairs=None,
    )
    assert main(["export", "trt", "m.safetensors", "-o", "o.plan", "--no-halves"]) == 1
    assert "--no-halves applies to ONNX export only" in capsys.readouterr().err
    assert main(["export", "m.safetensors", "-o", "o.txt"]) == 1
    assert "cannot tell the export format" in capsys.readouterr().err
    assert main(["export", "onnx", "m.safetensors", "-o", "o.onnx", "--fp16"]) == 1
    assert "--fp16 applies to TensorRT export only" in capsys.readouterr().err
    # `tokfuse export trt` from an existing ONNX file: report, then TensorRT (or the clear failure)
    out = tmp_path / "m.plan"
    rc = main(["export", "trt", str(tiny_onnx), "-o", str(out), "--max-shape", "2x512x512"])  # opt clamped
    err = capsys.readouterr().err
    assert (tmp_path / "m.trt_report.md").is_file()
    if HAVE_TRT:
        assert rc == 0 and out.is_file()
    else:
        assert rc == EXIT_NO_TRT and len(err.strip().splitlines()) == 1 and "TensorRT" in err


@pytest.mark.requires_trt
def test_tensorrt_matches_onnxruntime(tiny_onnx, tmp_path):
    from export.to_trt import main as to_trt
    from tokfuse_rt import Engine

    plan = tmp_path / "tiny.plan"
    assert (
        to_trt(
            [
                str(tiny_onnx),
                "-o",
                str(plan),
                "--min-shape",
                "1x16x16",
                "--opt-shape",
                "1x64x64",
                "--max-shape",
                "2x512x512",
            ]
        )
        == 0
    )
    rng = np.random.default_rng(5)
    with Engine(tiny_onnx, device="cpu") as ox, Engine(plan) as tr:
        info = tr.info()
        assert info["backend"] == "tensorrt" and info["config"]["num_tokens"] == 8
        for hw in [(16, 16), (37, 45), (480, 511)]:
            ir = rng.integers(0, 256, hw, dtype=np.uint8)
            vis = rng.integers(0, 256, (*hw, 3), dtype=np.uint8)
            for k in (0, 2, 8):
                a, ia = ox.fuse_with_tokens(ir, vis, k)
                b, ib = tr.fuse_with_tokens(ir, vis, k)
                np.testing.assert_array_equal(ia, ib)
                assert np.abs(a.astype(int) - b.astype(int)).max() <= 1
        pairs = [(rng.integers(0, 256, (40, 40), dtype=np.uint8),) * 2 for _ in range(5)]  # batch > max: split
        assert len(tr.fuse_batch(pairs)) == 5
        with pytest.raises(ValueError, match="outside this TensorRT engine's profile"):
            tr.fuse(np.zeros((600, 40), np.uint8), np.zeros((600, 40), np.uint8))


@pytest.mark.requires_trt
@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_tensorrt_reduced_precision_engines(tiny_ckpt, tmp_path, shared_data, precision):
    """--fp16 and --int8 engines of the tiny model (made by make gpu-check on a GPU with TensorRT): token ids
    identical to ONNX Runtime float32 (the token pathway stays float32), fused uint8 within 3 grey levels
    (8-bit activations / FP16 convolutions; ~1 level on the CPU int8 paths)."""
    pytest.importorskip("onnxruntime.quantization")
    from export.to_onnx import export_onnx
    from export.to_trt import main as to_trt
    from tokfuse_rt import Engine

    ref = tmp_path / "f32.onnx"
    export_onnx(tiny_ckpt, ref, verify=False, halves=False)
    plan = tmp_path / f"{precision}.plan"
    extra = (
        ["--fp16"] if precision == "fp16" else ["--int8", "--calib", str(shared_data / "train"), "--calib-pairs", "4"]
    )
    assert to_trt([str(tiny_ckpt), "-o", str(plan), "--max-shape", "1x512x512", *extra]) == 0
    rng = np.random.default_rng(6)
    with Engine(ref, device="cpu") as ox, Engine(plan) as tr:
        for hw in [(37, 45), (240, 320)]:
            ir, vis = rng.integers(0, 256, hw, dtype=np.uint8), rng.integers(0, 256, (*hw, 3), dtype=np.uint8)
            a, ia = ox.fuse_with_tokens(ir, vis)
            b, ib = tr.fuse_with_tokens(ir, vis)
            np.testing.assert_array_equal(ia, ib)
            assert np.abs(a.astype(int) - b.astype(int)).max() <= 3


# --- the builder's control flow against a stand-in tensorrt module (no GPU needed) ---------------


def _fake_tensorrt(parse_ok=True, errors=(), k_is_shape=False):
    import enum
    import types

    calls = {"profile": {}, "shape_input": {}, "flags": [], "precision": 0}

    class _Severity(enum.IntEnum):
        INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = range(5)

    class ILogger:
        Severity = _Severity

        def __init__(self):
            pass

    class Tensor:
        def __init__(self, name, shape, shape_tensor=False):
            self.name, self.shape, self.is_shape_tensor = name, shape, shape_tensor

    class Network:
        num_layers = 0

        def __init__(self):
            self.inputs = [
                Tensor("ir", (-1, 1, -1, -1)),
                Tensor("vis", (-1, 1, -1, -1)),
                Tensor("k", (1,) if k_is_shape else (), k_is_shape),
            ]
            self.num_inputs = 3

        def get_input(self, i):
            return self.inputs[i]

    class Parser:
        def __init__(self, network, logger):
            self.num_errors = len(errors)

        def parse_from_file(self, path):
            calls["parsed"] = path
            return parse_ok

        def get_error(self, i):
            return errors[i]

    class Profile:
        def set_shape(self, name, mn, opt, mx):
            calls["profile"][name] = (mn, opt, mx)

        def set_shape_input(self, name, mn, opt, mx):
            calls["shape_input"][name] = (mn, opt, mx)

    class Config:
        def set_memory_pool_limit(self, pool, size):
            calls["workspace"] = size

        def set_flag(self, f):
            calls["flags"].append(f)

        def add_optimization_profile(self, p):
            calls["profiles_added"] = calls.get("profiles_added", 0) + 1

    class Builder:
        platform_has_fast_fp16 = True

        def __init__(self, logger):
            self.logger = logger

        def create_network(self, flags):
            return Network()

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            return b"PLAN"

    trt = types.ModuleType("tensorrt")
    trt.__version__ = "10.15.0"
    trt.ILogger, trt.Builder, trt.OnnxParser = ILogger, Builder, Parser
    trt.NetworkDefinitionCreationFlag = types.SimpleNamespace()
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE="workspace")
    trt.BuilderFlag = types.SimpleNamespace(FP16="fp16", INT8="int8", PREFER_PRECISION_CONSTRAINTS="prefer")
    trt.LayerType = types.SimpleNamespace(CONVOLUTION="conv")
    trt.float32, trt.float16 = "f32", "f16"
    return trt, calls


def test_build_engine_flow_with_stand_in_tensorrt(tmp_path, monkeypatch, tiny_onnx):
    import export.to_trt as to_trt

    trt, calls = _fake_tensorrt()
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(to_trt, "_cuda_available", lambda: True)
    plan = tmp_path / "m.plan"
    cfg = {"num_tokens": 8, "default_k": 2}
    info = to_trt.build_engine(
        tiny_onnx, plan, (1, 1, 16, 16), (1, 1, 64, 64), (2, 1, 256, 256), fp16=True, workspace_gib=1, config=cfg
    )
    assert plan.read_bytes() == b"PLAN" and info["tensorrt"] == "10.15.0"
    assert calls["profile"] == {n: ((1, 1, 16, 16), (1, 1, 64, 64), (2, 1, 256, 256)) for n in ("ir", "vis")}
    assert calls["shape_input"] == {} and calls["profiles_added"] == 1
    assert calls["workspace"] == 1 << 30 and "fp16" in calls["flags"]
    side = json.loads(to_trt.sidecar_path(plan).read_text())
    assert side["config"] == cfg and side["fp16"] is True and side["profile"]["max"] == [2, 1, 256, 256]
    # k exported as a [1] shape tensor gets a value range 0..K
    trt, calls = _fake_tensorrt(k_is_shape=True)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    to_trt.build_engine(tiny_onnx, plan, (1, 1, 16, 16), (1, 1, 64, 64), (2, 1, 256, 256), config=cfg)
    assert calls["shape_input"] == {"k": ([0], [2], [8])}
    assert "int8" not in calls["flags"] and json.loads(to_trt.sidecar_path(plan).read_text())["int8"] is False
    trt, calls = _fake_tensorrt()
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    to_trt.build_engine(tiny_onnx, plan, (1, 1, 16, 16), (1, 1, 64, 64), (2, 1, 256, 256), config=cfg, int8=True)
    assert "int8" in calls["flags"] and json.loads(to_trt.sidecar_path(plan).read_text())["int8"] is True


@pytest.mark.requires_ort
def test_to_trt_int8_writes_a_qdq_graph_tensorrt_accepts(tiny_ckpt, tmp_path, shared_data):
    """--int8 --calib: the ONNX step is the int8 export in TensorRT's explicit-quantization form (every
    zero point 0, no int32 DequantizeLinear), which the compatibility report accepts; without TensorRT
    the command then exits EXIT_NO_TRT. Refused: --int8 without --calib, and an .onnx that is not int8."""
    pytest.importorskip("onnxruntime.quantization")
    import onnx
    from onnx import numpy_helper

    from export.to_trt import main as to_trt
    from export.trt_support import check_model

    out = tmp_path / "m.plan"
    argv = [str(tiny_ckpt), "-o", str(out), "--int8", "--calib", str(shared_data / "train"), "--calib-pairs", "2"]
    rc = to_trt(argv)
    assert rc == (0 if tensorrt_available()[0] else EXIT_NO_TRT)
    graph = onnx.load(str(out.with_suffix(".onnx")))
    inits = {i.name: numpy_helper.to_array(i) for i in graph.graph.initializer}
    qdq = [n for n in graph.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert qdq and all((inits[n.input[2]] == 0).all() for n in qdq if len(n.input) > 2)
    assert all(inits[n.input[0]].dtype != np.int32 for n in qdq if n.input[0] in inits)
    assert check_model(out.with_suffix(".onnx")).ok
    assert to_trt([str(tiny_ckpt), "-o", str(tmp_path / "n.plan"), "--int8"]) == 1
    assert to_trt([str(out.with_suffix(".onnx")), "-o", str(tmp_path / "n.plan"), "--int8"]) in (0, EXIT_NO_TRT)
    plain = tmp_path / "plain.onnx"
    assert to_trt([str(tiny_ckpt), "-o", str(tmp_path / "p.plan"), "--onnx", str(plain)]) in (0, EXIT_NO_TRT)
    assert to_trt([str(plain), "-o", str(tmp_path / "n.plan"), "--int8"]) == 1


def test_parser_errors_carry_every_message(tmp_path, monkeypatch, tiny_onnx):
    import export.to_trt as to_trt

    trt, _ = _fake_tensorrt(parse_ok=False, errors=("node 3 (Foo): unsupported", "node 9 (Bar): bad type"))
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(to_trt, "_cuda_available", lambda: True)
    with pytest.raises(to_trt.TrtBuildError, match=r"2 error\(s\).*node 3 \(Foo\): unsupported.*node 9 \(Bar\)"):
        to_trt.build_engine(tiny_onnx, tmp_path / "m.plan", (1, 1, 16, 16), (1, 1, 64, 64), (1, 1, 64, 64))
    assert to_trt.main([str(tiny_onnx), "-o", str(tmp_path / "m.plan")]) == 1
    assert not (tmp_path / "m.plan").exists()
