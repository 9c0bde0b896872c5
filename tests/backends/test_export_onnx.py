"""ONNX export: standard ops, dynamic batch/H/W, checker + shape inference, parity with PyTorch
on random inputs (tiny model) and on real pairs of every test set (default model, via Engine)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxscript")

from export.to_onnx import check_graph, iter_nodes
from tokfuse_rt.engine import DEFAULT_MODEL

REAL_SETS = ("TNO", "RoadScene", "MSRS", "Harvard_MRI_CT", "Harvard_MRI_PET", "Harvard_MRI_SPECT")


@pytest.fixture(scope="module")
def proto(tiny_onnx):
    return onnx.load(str(tiny_onnx))


@pytest.fixture(scope="module")
def tiny_model(tiny_ckpt):
    import torch

    from tokfuse_rt.model import load_checkpoint

    old = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny graphs: one thread is fastest, and CI shares its cores
    yield load_checkpoint(tiny_ckpt)[0]
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def session(tiny_onnx):
    ort = pytest.importorskip("onnxruntime")
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    return ort.InferenceSession(str(tiny_onnx), so, providers=["CPUExecutionProvider"])


def _dims(vi):
    return [d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim]


def test_graph_is_standard_and_checks(proto):
    onnx.checker.check_model(proto, full_check=True)
    onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True, data_prop=True)
    ops = check_graph(proto)
    assert {"Resize", "ArgMax", "Conv", "MatMul", "Less"} <= set(ops)
    assert all(n.domain in ("", "ai.onnx") for n in iter_nodes(proto.graph))
    assert not proto.functions
    opset = next(i.version for i in proto.opset_import if i.domain in ("", "ai.onnx"))
    assert opset >= 17
    assert {i.domain for i in proto.opset_import} <= {"", "ai.onnx"}


def test_io_signature_is_dynamic(proto):
    ins = {i.name: i for i in proto.graph.input}
    outs = {o.name: o for o in proto.graph.output}
    assert list(ins) == ["ir", "vis", "k"] and list(outs) == ["fused", "ids"]
    f32, i64 = onnx.TensorProto.FLOAT, onnx.TensorProto.INT64
    for n in ("ir", "vis"):
        assert ins[n].type.tensor_type.elem_type == f32
        assert _dims(ins[n]) == ["batch", 1, "height", "width"]
    assert ins["k"].type.tensor_type.elem_type == i64 and _dims(ins["k"]) == []
    assert outs["fused"].type.tensor_type.elem_type == f32 and _dims(outs["fused"]) == ["batch", 1, "height", "width"]
    assert outs["ids"].type.tensor_type.elem_type == i64 and _dims(outs["ids"]) == ["batch", 8]
    # the resize to S×S and the upsample back to H×W take their sizes from the graph, not constants
    inits = {i.name for i in proto.graph.initializer}
    consts = {o for n in proto.graph.node if n.op_type == "Constant" for o in n.output}
    resize = [n for n in iter_nodes(proto.graph) if n.op_type == "Resize"]
    assert len(resize) == 3
    assert all(n.input[3] not in inits | consts for n in resize)
    meta = {p.key: p.value for p in proto.metadata_props}
    assert '"num_tokens": 8' in meta["tokfuse_rt.config"]


@pytest.mark.requires_ort
@pytest.mark.parametrize("b,h,w", [(1, 16, 16), (2, 37, 53), (3, 64, 48), (1, 129, 17)])
def test_random_parity_any_shape_and_k(session, tiny_model, b, h, w):
    import torch

    from tokfuse_rt.model.quant import kernel_backend

    rng = np.random.default_rng(b * h * w)
    ir = rng.random((b, 1, h, w), dtype=np.float32)
    vis = rng.random((b, 1, h, w), dtype=np.float32)
    for k in (0, 2, 5, 8):
        fo, io = session.run(None, {"ir": ir, "vis": vis, "k": np.array(k, dtype=np.int64)})
        with torch.inference_mode(), kernel_backend("torch"):
            ft, it, _ = tiny_model(torch.from_numpy(ir), torch.from_numpy(vis), k)
        assert fo.shape == (b, 1, h, w) and io.shape == (b, 8) and io.dtype == np.int64
        np.testing.assert_array_equal(io, it.numpy())
        assert np.abs(fo - ft.numpy()).max() < 1e-4


def test_export_errors(tiny_ckpt, tmp_path):
    from export.to_onnx import main
    from tokfuse_rt.model import CheckpointError

    assert main([str(tmp_path / "missing.safetensors"), "-o", str(tmp_path / "x.onnx")]) == 1
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 4)
    with pytest.raises(CheckpointError):
        from export.to_onnx import export_onnx

        export_onnx(bad, tmp_path / "x.onnx")
    with pytest.raises(ValueError, match="opset must be >= 17"):
        export_onnx(tiny_ckpt, tmp_path / "x.onnx", opset=13)
    assert not (tmp_path / "x.onnx").exists()


# --- real pairs, default model -------------------------------------------------------------------


def _pairs(root: Path, name: str):
    d = root / "test" / name
    a, b = (d / "ir", d / "vi") if (d / "ir").is_dir() else (d / "a", d / "b")
    names = sorted(p.name for p in a.iterdir() if p.is_file())
    return [(n, a / n, b / n) for n in names if (b / n).is_file()]


def representative_pairs(root: Path, per_set: int = 2):
    """A few pairs of each set: the first, the middle one, and for sets with varied sizes also an odd-sized
    and the largest pair."""
    from PIL import Image

    out = []
    for s in REAL_SETS:
        ps = _pairs(root, s)
        pick = {0, len(ps) // 2} if per_set >= 2 else {0}
        sizes = [Image.open(p[1]).size for p in ps]
        if len(set(sizes)) > 1:
            odd = [i for i, (w, h) in enumerate(sizes) if w % 2 or h % 2]
            if odd:
                pick.add(odd[0])
            pick.add(max(range(len(ps)), key=lambda i: sizes[i][0] * sizes[i][1]))
        out += [(s, *ps[i], sizes[i]) for i in sorted(pick)]
    return out


@pytest.fixture(scope="module")
def default_engines(tmp_path_factory):
    if not DEFAULT_MODEL.is_file():
        pytest.skip(f"default checkpoint {DEFAULT_MODEL} not present")
    pytest.importorskip("onnxruntime")
    from export.to_onnx import export_onnx
    from tokfuse_rt import Engine

    out = tmp_path_factory.mktemp("default_onnx") / "default.onnx"
    export_onnx(DEFAULT_MODEL, out, verify=False)
    import torch

    old = torch.get_num_threads()
    # one thread each: with two, torch's OpenMP threads slow down badly when CI shares the cores
    with Engine(DEFAULT_MODEL, device="cpu", threads=1) as pt, Engine(out, device="cpu", threads=1) as ox:
        yield pt, ox
    torch.set_num_threads(old)


@pytest.mark.requires_ort
def test_real_pairs_parity_subset(default_engines, shared_data):
    pt, ox = default_engines
    pairs = representative_pairs(shared_data)
    assert {p[0] for p in pairs} == set(REAL_SETS)
    assert any(w % 2 or h % 2 for *_, (w, h) in pairs), "no odd size in the subset"
    bad = []
    for s, name, a, b, _ in pairs:
        f1, i1 = pt.fuse_with_tokens(a, b)
        f2, i2 = ox.fuse_with_tokens(a, b)
        assert f1.shape == f2.shape and f1.dtype == f2.dtype == np.uint8
        d = int(np.abs(f1.astype(np.int16) - f2.astype(np.int16)).max())
        if d > 1 or not np.array_equal(i1, i2):
            bad.append(f"{s}/{name}: max|Δ|={d}, ids {'equal' if np.array_equal(i1, i2) else 'DIFFER'}")
    assert not bad, "ONNX Runtime vs PyTorch parity failures: " + "; ".join(bad)


@pytest.mark.requires_ort
def test_split_concat_conv_rewrite_is_exact():
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from export.to_onnx import split_concat_convs

    rng = np.random.default_rng(0)
    w = rng.standard_normal((8, 19, 3, 3)).astype(np.float32)
    b = rng.standard_normal(8).astype(np.float32)
    ins = [
        helper.make_tensor_value_info(n, TensorProto.FLOAT, ["B", c, "H", "W"])
        for n, c in (("d", 16), ("base", 1), ("ir", 1), ("vis", 1))
    ]
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["B", 8, "H", "W"])
    nodes = [
        helper.make_node("Concat", ["d", "base", "ir", "vis"], ["cat"], axis=1),
        helper.make_node("Conv", ["cat", "w", "b"], ["y"], name="head", pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
    ]
    g = helper.make_graph(
        nodes, "g", ins, [y], initializer=[numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")]
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    before = m.SerializeToString()
    assert split_concat_convs(m) == ["head"]
    onnx.checker.check_model(m, full_check=True)
    assert [n.op_type for n in m.graph.node] == ["Concat", "Conv", "Conv", "Add"]
    assert sorted(i.name for i in m.graph.initializer) == ["b", "head.w_head", "head.w_tail"]
    feed = {"d": rng.random((2, 16, 13, 17), dtype=np.float32)}
    feed.update({n: rng.random((2, 1, 13, 17), dtype=np.float32) for n in ("base", "ir", "vis")})
    run = [
        ort.InferenceSession(x, providers=["CPUExecutionProvider"]).run(None, feed)[0]
        for x in (before, m.SerializeToString())
    ]
    # Only the float32 summation order differs: each output sums n = 19·9 + 1 terms, so either result is
    # within (n - 1)·u·S of the exact value (u = 2^-24, S = sum of the terms' magnitudes, per output).
    # (A fixed 1e-5 failed with onnxruntime 1.32: 1.5e-5 on outputs of magnitude ~10.) A wrong rewrite
    # (channels swapped, bias dropped or doubled) is off by O(1), far outside this bound.
    xc = np.concatenate([feed[n] for n in ("d", "base", "ir", "vis")], axis=1).astype(np.float64)
    xp = np.pad(xc, ((0, 0), (0, 0), (1, 1), (1, 1)))
    mag = (
        sum(
            np.einsum("oc,bchw->bohw", np.abs(w[:, :, i, j]).astype(np.float64), xp[:, :, i : i + 13, j : j + 17])
            for i in range(3)
            for j in range(3)
        )
        + np.abs(b)[None, :, None, None]
    )
    bound = 2 * (19 * 9) * 2.0**-24 * mag
    assert np.all(np.abs(run[0].astype(np.float64) - run[1]) <= bound)
    assert split_concat_convs(m) == []  # idempotent: nothing left to split


def test_export_never_writes_through_a_planted_link(tiny_ckpt, tmp_path):
    """A symlink planted at any predictable temporary name (OUT.onnx.tmp and the halves') is neither
    followed nor left as the output: the outputs are regular files, the link's target is untouched."""
    pytest.importorskip("onnxscript")
    from export.to_onnx import export_onnx
    from tokfuse_rt.onnx_contract import half_paths

    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    out = tmp_path / "model.onnx"
    for p in [out, *half_paths(out).values()]:
        p.with_name(p.name + ".tmp").symlink_to(victim)
    export_onnx(tiny_ckpt, out, verify=False)
    assert victim.read_text() == "keep"
    for p in [out, *half_paths(out).values()]:
        assert p.is_file() and not p.is_symlink() and p.stat().st_size > 1000, p


def test_export_refuses_to_write_onto_its_checkpoint(tiny_ckpt, tmp_path):
    import shutil

    from export.to_onnx import export_onnx

    ck = tmp_path / "m.onnx"  # a checkpoint under the name the output would take
    shutil.copy(tiny_ckpt, ck)
    before = ck.read_bytes()
    with pytest.raises(ValueError, match="checkpoint input file"):
        export_onnx(ck, ck, verify=False)
    assert ck.read_bytes() == before
