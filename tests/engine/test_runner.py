"""One runner: every local path (an image, an image in tiles, ``stream`` with and without token reuse,
``fuse_video``) applies the engine's pixel limit, names backend failures after the model file and
refuses bad model outputs the same way. The Ray path is checked in tests/serving/test_ray_batch.py (its actors
hold an Engine); the backends implement one protocol."""

import numpy as np
import pytest

from tokfuse_rt import Engine
from tokfuse_rt.backends import Backend, BackendError, HalvesBackend, ModelOutputError
from tokfuse_rt.imageio import ImageTooLargeError

PATHS = ("image", "tiles", "stream", "stream-reuse", "fuse_video")


def _pair(shared_data, size=(64, 48)):
    """A real MSRS pair (ir, vis) resized to ``size`` = (w, h): rgb24 visible, gray infrared."""
    from PIL import Image

    d = shared_data / "test" / "MSRS"
    ir = np.asarray(Image.open(d / "ir" / "00004N.png").convert("L").resize(size, Image.BILINEAR))
    vis = np.asarray(Image.open(d / "vi" / "00004N.png").convert("RGB").resize(size, Image.BILINEAR))
    return ir, vis


def _fuse(eng, path, ir, vis, tmp_path):
    """Fuse (ir, vis) through ``path``; returns the fused uint8 image (the first frame for video)."""
    if path in ("image", "tiles"):
        return eng.fuse(ir, vis)
    if path.startswith("stream"):
        return list(eng.stream([(ir, vis)] * 3, reuse="auto" if path == "stream-reuse" else "off"))[-1]
    pytest.importorskip("av")
    from video_cases import decode, write_video

    out = tmp_path / "out.mp4"
    eng.fuse_video(
        write_video(tmp_path / "ir.mp4", [np.stack([ir] * 3, -1)] * 3),
        write_video(tmp_path / "vis.mp4", [vis] * 3),
        out,
        progress=False,
        crf=0,
    )
    return decode(out)[0][0]


def _engine(tiny_ckpt, path, **kw):
    # tiles: a 64x48 pair is tiled when it has more than 2 x 16^2 pixels
    return Engine(tiny_ckpt, device="cpu", threads=1, tile_size=16 if path == "tiles" else None, **kw)


@pytest.mark.parametrize("path", PATHS)
def test_every_path_refuses_what_the_engine_limit_refuses(tiny_ckpt, shared_data, tmp_path, path):
    ir, vis = _pair(shared_data)
    with _engine(tiny_ckpt, path, max_pixels=64 * 48 - 1) as eng:
        with pytest.raises(ImageTooLargeError, match=r"64x48 .*over the limit"):
            _fuse(eng, path, ir, vis, tmp_path)
    with _engine(tiny_ckpt, path, max_pixels=64 * 48) as eng:
        assert _fuse(eng, path, ir, vis, tmp_path).shape == (48, 64, 3)


@pytest.mark.parametrize("path", PATHS)
def test_every_path_names_the_model_when_the_backend_fails(tiny_ckpt, shared_data, tmp_path, monkeypatch, path):
    ir, vis = _pair(shared_data)
    with _engine(tiny_ckpt, path) as eng:

        def crash(*a, **k):
            raise RuntimeError("kernel exploded")

        for m in ("run", "run_tokens", "run_render"):
            monkeypatch.setattr(eng._backend, m, crash)
        with pytest.raises(BackendError, match=r"tiny\.safetensors: the pytorch backend failed on a \d+x\d+ input: "):
            _fuse(eng, path, ir, vis, tmp_path)


@pytest.mark.parametrize("path", PATHS)
def test_every_path_refuses_a_nan_output(tiny_ckpt, shared_data, tmp_path, monkeypatch, path):
    ir, vis = _pair(shared_data)
    with _engine(tiny_ckpt, path) as eng:
        be = eng._backend
        run, render = be.run, be.run_render
        monkeypatch.setattr(be, "run", lambda a, b, k: (run(a, b, k)[0] * np.nan, run(a, b, k)[1]))
        monkeypatch.setattr(be, "run_render", lambda a, b, u: render(a, b, u) * np.nan)
        with pytest.raises(ModelOutputError, match=r"tiny\.safetensors: output 'fused' contains NaN"):
            _fuse(eng, path, ir, vis, tmp_path)
        assert not (tmp_path / "out.mp4").exists()


@pytest.mark.parametrize("path", PATHS)
def test_every_path_gives_the_image_fuse_gives(tiny_ckpt, shared_data, tmp_path, path):
    """The reference: ``fuse`` of the whole image, untiled. Tiles, stream and token reuse on identical
    frames give the same pixels (float rounding of the halves moves a pixel by at most 1 level); video
    goes through H.264 4:2:0 at crf 0, whose chroma subsampling changes colour pixels by a few levels."""
    ir, vis = _pair(shared_data)
    with _engine(tiny_ckpt, "image") as ref_eng:
        want = ref_eng.fuse(ir, vis).astype(int)
    with _engine(tiny_ckpt, path) as eng:
        got = _fuse(eng, path, ir, vis, tmp_path).astype(int)
    if path == "fuse_video":
        assert np.abs(got - want).mean() < 3.0
    else:
        assert np.abs(got - want).max() <= 1


def test_backends_implement_the_protocol(tiny_ckpt, tiny_onnx):
    from tokfuse_rt.backends.trt_backend import TrtBackend

    for path, backend in ((tiny_ckpt, "pytorch"), (tiny_ckpt, "native"), (tiny_onnx, "onnxruntime")):
        try:
            eng = Engine(path, device="cpu", threads=1, backend=backend)
        except ImportError:
            continue  # the native backend needs the compiled extension
        with eng:
            assert isinstance(eng._backend, Backend) and isinstance(eng._backend, HalvesBackend), backend
    assert not isinstance(object(), Backend)  # the check can fail
    for m in ("run", "info", "close"):
        assert callable(getattr(TrtBackend, m))
    assert TrtBackend.has_halves is False
