"""Model outputs are checked (§10): a foreign ONNX file returning NaN or a wrong shape gets a clear
error naming the model, never a black image; backend failures name the model and the input size."""

import numpy as np
import pytest

from tokfuse_rt import Engine
from tokfuse_rt.backends import BackendError, ModelOutputError

K = 6


def _foreign_onnx(path, fused_op: str):
    """A graph with the tokfuse_rt IO contract (ir, vis, k -> fused, ids[B, 6]) whose fused output is
    ``ir * NaN`` ("nan") or ``ir`` without its last row ("short")."""
    import onnx
    from onnx import TensorProto, helper

    f = TensorProto.FLOAT
    ins = [helper.make_tensor_value_info(n, f, ["B", 1, "H", "W"]) for n in ("ir", "vis")]
    ins.append(helper.make_tensor_value_info("k", TensorProto.INT64, []))
    outs = [
        helper.make_tensor_value_info("fused", f, None),
        helper.make_tensor_value_info("ids", TensorProto.INT64, ["B", K]),
    ]
    inits = [
        helper.make_tensor("nan", f, [], [float("nan")]),
        helper.make_tensor("kk", TensorProto.INT64, [1], [K]),
        helper.make_tensor("z", TensorProto.INT64, [1], [0]),
        helper.make_tensor("one", TensorProto.INT64, [1], [1]),
        helper.make_tensor("m1", TensorProto.INT64, [1], [-1]),
        helper.make_tensor("ax", TensorProto.INT64, [1], [2]),
    ]
    nodes = [
        helper.make_node("Shape", ["ir"], ["s"]),
        helper.make_node("Slice", ["s", "z", "one"], ["b"]),
        helper.make_node("Concat", ["b", "kk"], ["ids_shape"], axis=0),
        helper.make_node(
            "ConstantOfShape", ["ids_shape"], ["ids"], value=helper.make_tensor("v", TensorProto.INT64, [1], [3])
        ),
    ]
    if fused_op == "nan":
        nodes.append(helper.make_node("Mul", ["ir", "nan"], ["fused"]))
    else:
        nodes.append(helper.make_node("Slice", ["ir", "z", "m1", "ax"], ["fused"]))
    g = helper.make_graph(nodes, "foreign", ins, outs, initializer=inits)
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


@pytest.mark.requires_ort
@pytest.mark.parametrize(
    "kind,msg",
    [
        ("nan", "output 'fused' contains NaN or inf"),
        ("short", r"output 'fused' has shape \(1, 1, 19, 24\), expected \(1, 1, 20, 24\)"),
    ],
)
def test_foreign_onnx_outputs_are_refused(tmp_path, kind, msg):
    pytest.importorskip("onnx")
    p = _foreign_onnx(tmp_path / f"{kind}.onnx", kind)
    a = np.random.default_rng(0).integers(0, 256, (20, 24), dtype=np.uint8)
    with Engine(p, device="cpu") as eng:
        with pytest.raises(ModelOutputError, match=rf"model file .*{kind}\.onnx: {msg}"):
            eng.fuse(a, a)
        rep = eng.fuse_dir(*_dirs(tmp_path, a), tmp_path / "out", progress=False)
    assert [n for n, _ in rep.failed] == ["x.png"] and "ModelOutputError" in rep.failed[0][1]


def _dirs(tmp_path, a):
    from PIL import Image

    for d in ("ir", "vi"):
        (tmp_path / d).mkdir(exist_ok=True)
        Image.fromarray(a).save(tmp_path / d / "x.png")
    return tmp_path / "ir", tmp_path / "vi"


def test_ids_out_of_range_and_backend_failures_name_the_model(tiny_ckpt, monkeypatch):
    a = np.zeros((20, 24), np.uint8)
    with Engine(tiny_ckpt) as eng:
        real = eng._backend.run

        def bad_ids(x, y, k):
            f, i = real(x, y, k)
            return f, i + 64  # the tiny model's codebook has 64 entries

        monkeypatch.setattr(eng._backend, "run", bad_ids)
        with pytest.raises(ModelOutputError, match="token ids out of range"):
            eng.fuse(a, a)

        def crash(x, y, k):
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory\nmore lines")

        monkeypatch.setattr(eng._backend, "run", crash)
        with pytest.raises(
            BackendError,
            match=r"tiny\.safetensors: the pytorch backend failed on a 24x20 input: "
            r"RuntimeError: DefaultCPUAllocator: can't allocate memory$",
        ):
            eng.fuse(a, a)


def test_untiled_call_larger_than_memory_is_refused(tiny_ckpt, monkeypatch):
    from tokfuse_rt import engine as engine_mod
    from tokfuse_rt.imageio import ImageTooLargeError

    monkeypatch.setattr(engine_mod, "_mem_available", lambda: 2**30)
    a = np.zeros((2000, 2000), np.uint8)  # 4 MP x 320 B/px = 1.2 GiB > 1 GiB "available"
    with Engine(tiny_ckpt, tile_size=None) as eng:
        with pytest.raises(ImageTooLargeError, match="needs about 1.2 GiB untiled, 1.0 GiB are available"):
            eng.fuse(a, a)
    with Engine(tiny_ckpt) as eng:  # the PyTorch backend tiles: it runs
        assert eng.fuse(a, a).shape == (2000, 2000)
