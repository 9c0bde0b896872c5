"""Engine("model.onnx"): the ONNX Runtime backend has the PyTorch backend's API and results."""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import numpy as np
import pytest
import torch
from PIL import Image

from tokfuse_rt import Engine

pytestmark = pytest.mark.requires_ort


@pytest.fixture(scope="module")
def pair():
    rng = np.random.default_rng(7)
    return rng.integers(0, 256, (37, 45), dtype=np.uint8), rng.integers(0, 256, (37, 45, 3), dtype=np.uint8)


def _maxdiff(a, b) -> int:
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape
    return int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max())


def test_info(engines, tiny_onnx):
    _, ox = engines
    info = ox.info()
    assert info["backend"] == "onnxruntime" and info["device"] == "cpu" and info["threads"] == 1
    with Engine(tiny_onnx, device="cpu", threads=2) as e2:
        assert e2.info()["threads"] == 2
    assert info["providers"] == ["CPUExecutionProvider"]
    assert info["config"]["num_tokens"] == 8 and info["config"]["default_k"] == 2
    assert info["model"] == str(tiny_onnx) and info["opset"] >= 17
    assert "onnxruntime" in repr(ox)
    json.dumps(info)


def test_same_results_as_pytorch_for_every_input_kind(engines, pair, tmp_path):
    pt, ox = engines
    ir, vis = pair
    ref = pt.fuse(ir, vis)
    out = ox.fuse(ir, vis)
    assert out.dtype == np.uint8 and out.shape == (37, 45, 3) and _maxdiff(ref, out) <= 1
    Image.fromarray(ir).save(tmp_path / "ir.png")
    Image.fromarray(vis).save(tmp_path / "vis.png")
    assert np.array_equal(ox.fuse(tmp_path / "ir.png", str(tmp_path / "vis.png")), out)
    p = ox.fuse(Image.fromarray(ir), Image.fromarray(vis))
    assert isinstance(p, Image.Image) and p.mode == "RGB" and np.array_equal(np.asarray(p), out)
    f = ox.fuse(ir / 255.0, vis / 255.0)
    assert f.dtype == np.float64 and np.abs(f * 255 - out).max() <= 0.5 + 1e-3
    t = ox.fuse(torch.from_numpy(ir), torch.from_numpy(vis).permute(2, 0, 1))
    assert isinstance(t, torch.Tensor) and t.shape == (3, 37, 45)
    assert np.array_equal(t.permute(1, 2, 0).numpy(), out)
    assert ox.fuse(ir, ir).shape == (37, 45)


@pytest.mark.parametrize("hw", [(16, 16), (17, 33), (33, 17), (301, 7 * 31)])
def test_odd_sizes_match_pytorch(engines, hw):
    pt, ox = engines
    rng = np.random.default_rng(sum(hw))
    ir = rng.integers(0, 256, hw, dtype=np.uint8)
    vis = rng.integers(0, 256, (*hw, 3), dtype=np.uint8)
    a, ia = pt.fuse_with_tokens(ir, vis)
    b, ib = ox.fuse_with_tokens(ir, vis)
    assert b.shape == (*hw, 3) and _maxdiff(a, b) <= 1
    np.testing.assert_array_equal(ia, ib)


def test_k_at_run_time(engines, pair):
    pt, ox = engines
    ir, vis = pair
    for k in range(0, 9):
        a, ia = pt.fuse_with_tokens(ir, vis, k=k)
        b, ib = ox.fuse_with_tokens(ir, vis, k=k)
        assert ib.shape == (8,) and ib.dtype == np.int64
        np.testing.assert_array_equal(ia, ib)
        assert _maxdiff(a, b) <= 1
    with pytest.raises(ValueError, match=r"k must be in \[0, 8\]"):
        ox.fuse(ir, vis, k=9)
    with pytest.raises(TypeError, match="k must be an int"):
        ox.fuse(ir, vis, k=1.5)


def test_fuse_batch_and_dir(engines, tmp_path):
    _, ox = engines
    rng = np.random.default_rng(3)
    pairs = [
        (rng.integers(0, 256, s, dtype=np.uint8), rng.integers(0, 256, (*s, 3), dtype=np.uint8))
        for s in [(20, 30), (20, 30), (41, 17), (20, 30), (20, 30), (20, 30)]
    ]
    outs = ox.fuse_batch(pairs)
    for (a, b), o in zip(pairs, outs):
        assert _maxdiff(o, ox.fuse(a, b)) <= 1
    ird, vid = tmp_path / "ir", tmp_path / "vi"
    ird.mkdir(), vid.mkdir()
    for i, (a, b) in enumerate(pairs[:3]):
        Image.fromarray(a).save(ird / f"{i}.png")
        Image.fromarray(b).save(vid / f"{i}.png")
    (vid / "2.png").write_bytes(b"")
    rep = ox.fuse_dir(ird, vid, tmp_path / "out", progress=False)
    assert len(rep.written) == 2 and [n for n, _ in rep.failed] == ["2.png"]


def test_threads_share_one_session(engines):
    _, ox = engines
    rng = np.random.default_rng(11)
    jobs = [
        (rng.integers(0, 256, (24 + i, 40), dtype=np.uint8), rng.integers(0, 256, (24 + i, 40), dtype=np.uint8))
        for i in range(6)
    ]
    ref = [ox.fuse(a, b) for a, b in jobs]
    res = [None] * len(jobs)
    errors = []

    def work(i):
        try:
            for _ in range(3):
                res[i] = ox.fuse(*jobs[i])
        except Exception as e:  # noqa: BLE001 - any failure in a thread is reported below
            errors.append(e)

    th = [threading.Thread(target=work, args=(i,)) for i in range(len(jobs))]
    [t.start() for t in th]
    [t.join() for t in th]
    assert not errors
    assert all(np.array_equal(r, o) for r, o in zip(ref, res))


def test_devices_and_providers(tiny_onnx):
    from tokfuse_rt.backends.ort_backend import pick_providers

    prov, dev = pick_providers("auto", ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert dev == "cuda:0" and prov[0][0] == "CUDAExecutionProvider" and prov[-1] == "CPUExecutionProvider"
    assert pick_providers("cuda:1", ["CUDAExecutionProvider", "CPUExecutionProvider"])[1] == "cuda:1"
    assert pick_providers("auto", ["CPUExecutionProvider"]) == (["CPUExecutionProvider"], "cpu")
    assert pick_providers("cpu", ["CUDAExecutionProvider", "CPUExecutionProvider"])[1] == "cpu"
    with pytest.raises(ValueError, match="no CUDAExecutionProvider"):
        pick_providers("cuda", ["CPUExecutionProvider"])
    with pytest.raises(ValueError, match="expected 'auto', 'cpu'"):
        pick_providers("tpu", ["CPUExecutionProvider"])
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        with pytest.raises(ValueError, match="CUDAExecutionProvider"):
            Engine(tiny_onnx, device="cuda")
    with Engine(tiny_onnx, device="cpu") as e:  # threads=None: ONNX Runtime's default
        assert e.info()["threads"] >= 1


def test_bad_model_files(tmp_path, tiny_onnx):
    import onnx
    from onnx import TensorProto, helper

    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="cannot load it as an ONNX model"):
        Engine(empty)
    trunc = tmp_path / "trunc.onnx"
    trunc.write_bytes(tiny_onnx.read_bytes()[:1000])
    with pytest.raises(ValueError, match=r"trunc\.onnx"):
        Engine(trunc)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    other = tmp_path / "other.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(other))
    with pytest.raises(ValueError, match="do not match a tokfuse_rt export"):
        Engine(other)
    e = Engine(tiny_onnx)
    e.close()
    with pytest.raises(RuntimeError, match="closed"):
        e.fuse(np.zeros((16, 16), np.uint8), np.zeros((16, 16), np.uint8))


def test_cli_with_onnx_model(tiny_onnx, tmp_path, capsys):
    from tokfuse_rt.cli import main

    assert main(["info", "--model", str(tiny_onnx), "--json", "--threads", "1"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["backend"] == "onnxruntime" and info["threads"] == 1
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (20, 24), dtype=np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(tmp_path / "b.png")
    assert (
        main(
            [
                "fuse",
                str(tmp_path / "a.png"),
                str(tmp_path / "b.png"),
                "-o",
                str(tmp_path / "f.png"),
                "--model",
                str(tiny_onnx),
            ]
        )
        == 0
    )
    assert Image.open(tmp_path / "f.png").size == (24, 20)


@pytest.mark.requires_ort
def test_sessions_left_open_are_closed_at_exit(tiny_onnx):
    """An Engine nobody closed: its ONNX Runtime sessions are released by an atexit hook before the
    interpreter tears ONNX Runtime down (a session outliving ONNX Runtime's environment is a crash at exit)."""
    code = (
        "import atexit\n"
        "import sys\n"
        # atexit runs the hooks last-registered first: registered before the backend module is imported (which
        # registers its own), this one runs after it
        "atexit.register(lambda: print('at exit:', len(sys.modules['tokfuse_rt.backends.ort_backend']._LIVE),"
        " eng._backend.session))\n"
        "import numpy as np\n"
        "from tokfuse_rt import Engine\n"
        "from tokfuse_rt.backends import ort_backend\n"
        f"eng = Engine({str(tiny_onnx)!r}, threads=1)\n"
        "eng.fuse(np.zeros((20, 24), np.uint8), np.zeros((20, 24), np.uint8))\n"
        "print('running:', len(ort_backend._LIVE))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "running: 1\nat exit: 0 None" in r.stdout, r.stdout
    from tokfuse_rt.backends import ort_backend

    with Engine(tiny_onnx, threads=1) as eng:
        backend = eng._backend
        assert backend in ort_backend._LIVE
    assert backend not in ort_backend._LIVE and backend.session is None
