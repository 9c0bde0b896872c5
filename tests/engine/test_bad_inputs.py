"""Every kind of bad input gets a clear error that names the input."""

import numpy as np
import pytest
import torch
from PIL import Image

from tokfuse_rt import Engine

OK = np.zeros((24, 24), np.uint8)


@pytest.fixture(scope="module")
def eng(tiny_ckpt):
    return Engine(tiny_ckpt)


def test_mismatched_sizes(eng):
    with pytest.raises(ValueError, match=r"ir and vis sizes differ: ir is 24x24, vis is 25x24"):
        eng.fuse(OK, np.zeros((24, 25), np.uint8))


@pytest.mark.parametrize(
    "bad,msg",
    [
        (np.zeros((24, 24, 2), np.uint8), r"vis: expected 1 or 3 channels"),
        (np.zeros((24, 24, 4), np.uint8), r"vis: expected 1 or 3 channels"),
        (np.zeros((2, 24, 24, 3), np.uint8), r"vis: expected an \(H, W\) or \(H, W, 3\) array"),
        (np.zeros(24, np.uint8), r"vis: expected an \(H, W\)"),
        (torch.zeros(2, 24, 24), r"vis: expected a \(H, W\), \(1, H, W\) or \(3, H, W\) tensor"),
        (torch.zeros(1, 1, 24, 24), r"vis: expected a \(H, W\)"),
    ],
)
def test_wrong_channels_or_rank(eng, bad, msg):
    with pytest.raises(ValueError, match=msg):
        eng.fuse(OK, bad)


@pytest.mark.parametrize(
    "bad,msg",
    [
        (np.zeros((24, 24), np.int64), "ir: numpy dtype int64 not supported"),
        (np.zeros((24, 24), np.uint16), "ir: numpy dtype uint16"),
        (np.zeros((24, 24), bool), "ir: numpy dtype bool"),
        (torch.zeros(24, 24, dtype=torch.int32), "ir: torch dtype torch.int32"),
        ([[0] * 24] * 24, "ir: unsupported input type list"),
        (None, "ir: unsupported input type NoneType"),
        (b"\x89PNG", "ir: got bytes"),
    ],
)
def test_wrong_types(eng, bad, msg):
    with pytest.raises(TypeError, match=msg):
        eng.fuse(bad, OK)


@pytest.mark.parametrize("val", [np.nan, np.inf, -np.inf])
def test_nan_inf(eng, val):
    a = np.zeros((24, 24), np.float32)
    a[3, 5] = val
    with pytest.raises(ValueError, match="vis: array contains NaN or inf"):
        eng.fuse(OK.astype(np.float32), a)
    with pytest.raises(ValueError, match="ir: array contains NaN or inf"):
        eng.fuse(torch.from_numpy(a), OK)


def test_float_out_of_range_and_too_small(eng):
    with pytest.raises(ValueError, match=r"ir: float input must be in \[0, 1\]"):
        eng.fuse(np.full((24, 24), 200.0), OK)
    with pytest.raises(ValueError, match="ir: image is 15x24; the minimum size is 16x16"):
        eng.fuse(np.zeros((24, 15), np.uint8), np.zeros((24, 15), np.uint8))


def test_bad_files(eng, tmp_path):
    good = tmp_path / "good.png"
    Image.fromarray(OK).save(good)
    with pytest.raises(FileNotFoundError, match="vis: file not found"):
        eng.fuse(good, tmp_path / "missing.png")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="ir: file is empty"):
        eng.fuse(empty, good)
    text = tmp_path / "notes.png"
    text.write_text("this is not an image")
    with pytest.raises(ValueError, match="vis: not a readable image file"):
        eng.fuse(good, text)
    trunc = tmp_path / "trunc.png"
    buf = tmp_path / "big.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)).save(buf)
    trunc.write_bytes(buf.read_bytes()[:200])
    with pytest.raises(ValueError, match="ir: corrupt or truncated image file"):
        eng.fuse(trunc, good)
    with pytest.raises(ValueError, match="ir: .* is a directory"):
        eng.fuse(tmp_path, good)


def test_bad_engine_arguments(tiny_ckpt, tmp_path):
    with pytest.raises(FileNotFoundError, match="model file not found"):
        Engine(tmp_path / "missing.safetensors")
    other = tmp_path / "model.pt"
    other.write_bytes(b"x")
    with pytest.raises(ValueError, match="unknown file type '.pt'"):
        Engine(other)
    with pytest.raises(TypeError, match="model path must be a str"):
        Engine(123)
    with pytest.raises(ValueError, match="threads must be a positive int"):
        Engine(tiny_ckpt, threads=0)
    with pytest.raises(TypeError, match="device must be a string"):
        Engine(tiny_ckpt, device=0)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device='cuda'.*CUDA is not available"):
            Engine(tiny_ckpt, device="cuda")


def test_meta_tensor_is_a_clear_error_naming_the_input(eng):
    import torch

    good = torch.zeros(20, 24)
    with pytest.raises(ValueError, match=r"^ir: .*meta"):
        eng.fuse(torch.empty(20, 24, device="meta"), good)
    with pytest.raises(ValueError, match=r"^vis: .*meta"):
        eng.fuse(good, torch.empty(3, 20, 24, device="meta"))


def test_pil_la_image_is_read_like_its_la_conversion(eng):
    """Mode 'La' (gray with premultiplied alpha) is read as gray like 'LA'; the result equals fusing
    the image's own LA -> L conversion (the reference)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    la = Image.fromarray(rng.integers(0, 256, (20, 24, 2), dtype=np.uint8), "LA")
    pre = la.convert("La")
    ref_gray = np.asarray(pre.convert("LA").convert("L"))
    vis = rng.integers(0, 256, (20, 24), dtype=np.uint8)
    got = eng.fuse(pre, vis)
    np.testing.assert_array_equal(np.asarray(got), eng.fuse(ref_gray, vis))
