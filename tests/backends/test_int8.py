"""int8 export (``python -m export.to_onnx --int8 --calib DIR``) of the bundled model, on real pairs.

Reference: the float32 PyTorch model of the same checkpoint (the float32 ONNX export equals it within
~1e-6 and has its token ids, see test_export_onnx.py). Bounds (issue "fast path", point 1): PSNR of
the int8 result against float32 (uint8 images, peak 255) median >= 40 dB and worst pair >= 35 dB,
token ids identical. Here on the first pairs of test/TNO, RoadScene and MSRS with a small
calibration set (8 train/ pairs) to keep the test short; scripts/int8_parity.py measures every pair.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.requires_ort]
pytest.importorskip("onnxruntime.quantization")
pytest.importorskip("onnxscript")

BUNDLED = Path(__file__).resolve().parents[2] / "tokfuse_rt" / "assets" / "default.safetensors"
PAIRS_PER_SET = 4


@pytest.fixture(scope="module")
def int8_model(shared_data, tmp_path_factory) -> Path:
    from export.to_onnx import main

    out = tmp_path_factory.mktemp("int8") / "default.int8.onnx"
    argv = [str(BUNDLED), "-o", str(out), "--int8", "--calib", str(shared_data / "train"), "--calib-pairs", "8"]
    assert main(argv) == 0
    return out


def _psnr(a, b) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def test_int8_parity_on_test_pairs(int8_model, shared_data):
    from tokfuse_rt import Engine
    from tokfuse_rt.pairing import pair_set

    dbs = []
    with Engine(BUNDLED, device="cpu", threads=2) as ref, Engine(int8_model, threads=2) as q:
        for s in ("TNO", "RoadScene", "MSRS"):
            for p in list(pair_set(shared_data / "test" / s))[:PAIRS_PER_SET]:
                fa, ia = ref.fuse_with_tokens(p.ir, p.vis)
                fb, ib = q.fuse_with_tokens(p.ir, p.vis)
                assert np.array_equal(ia, ib), (s, p.name)
                assert fa.shape == fb.shape
                dbs.append(_psnr(fa, fb))
    assert np.median(dbs) >= 40.0 and min(dbs) >= 35.0, dbs
    assert min(dbs) < 200  # the int8 graph is really quantised (not the float32 graph under another name)


def test_int8_model_is_a_normal_onnx_model(int8_model):
    """Engine loads it (and its halves, also int8 for the render), info says int8, the quantised
    nodes are the render half's convolutions only, tiles of the int8 render match the whole image."""
    import onnx

    from tokfuse_rt import Engine
    from tokfuse_rt.onnx_contract import half_paths, read_meta

    with Engine(int8_model, threads=2) as e:
        info = e.info()
        assert info["precision"] == "int8" and info["backend"] == "onnxruntime"
        rng = np.random.default_rng(3)
        ir, vis = rng.integers(0, 256, (150, 171), dtype=np.uint8), rng.integers(0, 256, (150, 171, 3), dtype=np.uint8)
        whole = e.fuse(ir, vis)
        e.tile_size = 64
        tiled = e.fuse(ir, vis)
    assert np.abs(whole.astype(int) - tiled.astype(int)).max() <= 1
    halves = half_paths(int8_model)
    for path, int8 in ((int8_model, True), (halves["render"], True), (halves["tokens"], False)):
        m = onnx.load(str(path))
        meta = read_meta({p.key: p.value for p in m.graph.metadata_props} | {p.key: p.value for p in m.metadata_props})
        ops = {n.op_type for n in m.graph.node}
        assert ("QuantizeLinear" in ops) == int8 and ("quant" in meta) == int8, path
        if int8:
            q = json.loads(meta["quant"])
            assert q["precision"] == "int8" and q["calibration"]["pairs"] == 8
            convs = {n.name for n in onnx.load(str(halves["render"])).graph.node if n.op_type == "Conv"}
            # every render convolution, plus (bundled model) the 3 ReLUs and the Add of the split head
            # convolution between them, not the head rule's Adds (the quantiser folds the ReLUs away)
            assert convs <= set(q["nodes"])
            assert len(q["nodes"]) == len(convs) + 4


def test_int8_export_refuses_bad_calibration(shared_data, tmp_path, capsys):
    from export.to_onnx import main

    out = tmp_path / "m.onnx"
    assert main([str(BUNDLED), "-o", str(out), "--int8"]) == 1
    assert "--int8 needs --calib" in capsys.readouterr().err
    assert main([str(BUNDLED), "-o", str(out), "--int8", "--calib", str(shared_data / "test" / "TNO")]) == 1
    assert "test/ pairs are for evaluation only" in capsys.readouterr().err
    assert main([str(BUNDLED), "-o", str(out), "--calib", str(shared_data / "train")]) == 1
    assert "apply to --int8 exports only" in capsys.readouterr().err
    assert main([str(BUNDLED), "-o", str(out), "--int8", "--calib", str(tmp_path)]) == 1
    assert "no image pairs found" in capsys.readouterr().err
    assert not out.exists() and not list(tmp_path.glob(".tokfuse-int8-*"))


def test_int8_model_refuses_the_native_backend(int8_model):
    from tokfuse_rt import Engine

    with pytest.raises(ValueError, match="native backend runs .safetensors"):
        Engine(int8_model, backend="native")
