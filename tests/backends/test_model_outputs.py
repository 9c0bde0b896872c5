"""Model outputs are checked: a foreign ONNX file returning NaN or a wrong shape gets a clear
error naming the model, never a black image; backend failures name the model and the input size."""

import warnings

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
    from tokfuse_rt import runner as runner_mod
    from tokfuse_rt.imageio import ImageTooLargeError

    monkeypatch.setattr(runner_mod, "mem_available", lambda: 2**30)
    a = np.zeros((2000, 2000), np.uint8)  # 4 MP x 320 B/px = 1.2 GiB > 1 GiB "available"
    with Engine(tiny_ckpt, tile_size=None) as eng:
        with pytest.raises(ImageTooLargeError, match="needs about 1.2 GiB untiled, 1.0 GiB are available"):
            eng.fuse(a, a)
    with Engine(tiny_ckpt) as eng:  # the PyTorch backend tiles: it runs
        assert eng.fuse(a, a).shape == (2000, 2000)


def _nan_models(tmp_path, nan_onnx):
    return [nan_onnx, _foreign_onnx(tmp_path / "foreign_nan.onnx", "nan")]


@pytest.mark.requires_ort
def test_stream_checks_every_output_and_the_engine_limits(tmp_path, nan_onnx):
    """``stream`` refuses a NaN model's frames as ``fuse`` does (every reuse policy), and applies the
    engine's max_pixels and depth."""
    rng = np.random.default_rng(0)
    frames = [(rng.integers(0, 256, (20, 24), dtype=np.uint8),) * 2 for _ in range(3)]
    for model in _nan_models(tmp_path, nan_onnx):
        with Engine(model, device="cpu") as eng:
            with pytest.raises(ModelOutputError, match="contains NaN"):
                eng.fuse(*frames[0])
            for reuse in ("off", "auto"):
                with pytest.raises(ModelOutputError, match=rf"model file .*{model.name}: output 'fused' contains NaN"):
                    list(eng.stream(frames, reuse=reuse))
    from tokfuse_rt.imageio import ImageTooLargeError

    with Engine(nan_onnx, device="cpu", max_pixels=400) as eng:
        with pytest.raises(ImageTooLargeError, match=r"frames\[0\]: ir"):
            next(eng.stream(frames))


def test_stream_uses_the_engine_depth(tiny_ckpt, tmp_path):
    """12-bit data in 16-bit PNG files: ``stream`` scales them by the engine's ``depth`` as ``fuse`` does."""
    from PIL import Image

    a = (np.arange(20 * 24).reshape(20, 24) * 7 + 100).astype(np.uint16)
    Image.fromarray(a).save(tmp_path / "a.png")
    res = {}
    for depth in ("auto", "full"):
        with Engine(tiny_ckpt, device="cpu", depth=depth) as eng, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the bit-depth note of "auto"
            want = eng.fuse(tmp_path / "a.png", tmp_path / "a.png")
            res[depth] = next(eng.stream([(tmp_path / "a.png", tmp_path / "a.png")], reuse="off"))
        np.testing.assert_array_equal(res[depth], want)
    assert not np.array_equal(res["auto"], res["full"])  # the option matters for these data


@pytest.mark.requires_ort
def test_fuse_video_checks_every_output_and_the_pixel_limit(tmp_path, nan_onnx, shared_data):
    """A NaN model gives an error naming it, not an all-black video; frames over max_pixels are refused;
    nothing is left at the output path."""
    pytest.importorskip("av")
    from tokfuse_rt.imageio import ImageTooLargeError

    from video_cases import small_frames, write_video

    ir = write_video(tmp_path / "ir.mp4", small_frames(shared_data, "ir.mp4")[:4])
    vis = write_video(tmp_path / "vis.mp4", small_frames(shared_data, "vis.mp4")[:4])
    out = tmp_path / "out.mp4"
    for model in _nan_models(tmp_path, nan_onnx):
        with Engine(model, device="cpu") as eng:
            for reuse in ("off", "auto"):
                with pytest.raises(ModelOutputError, match="contains NaN"):
                    eng.fuse_video(ir, vis, out, reuse=reuse, progress=False)
    with Engine(nan_onnx, device="cpu", max_pixels=1000) as eng:
        with pytest.raises(ImageTooLargeError, match="vis"):
            eng.fuse_video(ir, vis, out, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["foreign_nan.onnx", "ir.mp4", "vis.mp4"]
