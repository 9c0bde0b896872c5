"""Reading files: pixel limit from the header, bit depth rules, EXIF orientation, multi-frame,
palette and alpha. References are hand-built arrays, never the reader itself."""

import time
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from tokfuse_rt import Engine
from tokfuse_rt.imageio import ImageReadWarning, ImageTooLargeError, load_image, open_image, pil_to_array
from tokfuse_rt.inputs import Prepared


@pytest.mark.parametrize("w,h", [(50000, 50000), (12000, 9000)])  # past Pillow's own limit, and only past ours
def test_pixel_limit_checked_from_the_header(tmp_path, w, h, png_header_only):
    p = png_header_only(tmp_path / "bomb.png", w, h)
    t = time.perf_counter()
    with pytest.raises(ImageTooLargeError, match=rf"ir: image .*{w * h / 1e6:.1f} MP.*over the limit of 100 MP"):
        load_image(p, "ir")
    assert time.perf_counter() - t < 2.0
    # under a raised limit the same header gets as far as decoding, which fails on the missing data
    if w * h < 2e8:
        with pytest.raises(ValueError, match="corrupt or truncated"):
            load_image(p, "ir", max_pixels=200_000_000)


def test_pixel_limit_configurable_for_every_input_kind(tmp_path):
    a = np.zeros((40, 50), np.uint8)
    Image.fromarray(a).save(tmp_path / "a.png")
    small = np.zeros((20, 20), np.uint8)
    for x in (tmp_path / "a.png", a, Image.fromarray(a), torch.from_numpy(a)):
        with pytest.raises(ImageTooLargeError, match=r"vis: image is 50x40 .* limit of 0.001 MP"):
            Prepared(small, x, max_pixels=1000)
    assert Prepared(a, a, max_pixels=2000).shape == (40, 50)


def test_12_bit_thermal_in_16_bit_png_is_visible(tmp_path):
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 4096, (30, 40)).astype(np.uint16)
    raw[0, 0] = 4095
    Image.fromarray(raw).save(tmp_path / "t.png")
    with pytest.warns(ImageReadWarning, match="16-bit data use 12 bits"):
        auto = load_image(tmp_path / "t.png", "ir")
    assert auto.dtype == np.float32
    np.testing.assert_allclose(auto, raw / 4095.0, atol=1e-7)  # float32 rounding of the quotient
    full = load_image(tmp_path / "t.png", "ir", depth="full")
    np.testing.assert_allclose(full, raw / 65535.0, atol=1e-7)
    rng_ = load_image(tmp_path / "t.png", "ir", depth="range")
    np.testing.assert_allclose(rng_, (raw - raw.min()) / float(raw.max() - raw.min()), atol=1e-7)


def test_narrow_14_bit_band_warns_and_range_stretches(tmp_path):
    raw = np.linspace(7000, 8000, 30 * 40).reshape(30, 40).astype(np.uint16)
    Image.fromarray(raw).save(tmp_path / "t.png")
    with pytest.warns(ImageReadWarning, match="fill 6% of the range 0..16383"):
        a = load_image(tmp_path / "t.png")
    np.testing.assert_allclose(a, raw / 16383.0, atol=1e-7)  # 14 bits hold 8000
    b = load_image(tmp_path / "t.png", depth="range")
    assert b.min() == 0.0 and b.max() == 1.0


def test_float_and_int32_tiffs(tmp_path):
    rng = np.random.default_rng(1)
    f = rng.random((20, 30)).astype(np.float32)
    Image.fromarray(f).save(tmp_path / "f.tif")
    np.testing.assert_array_equal(load_image(tmp_path / "f.tif"), f)  # float in [0, 1]: as it is
    hot = (f * 300 + 200).astype(np.float32)  # e.g. Kelvin
    Image.fromarray(hot).save(tmp_path / "k.tif")
    with pytest.warns(ImageReadWarning, match="outside \\[0, 1\\]: stretched"):
        k = load_image(tmp_path / "k.tif")
    np.testing.assert_allclose(k, (hot - hot.min()) / (hot.max() - hot.min()), atol=2e-7)
    i = (f * 1000).astype(np.int32)
    i[0, 0] = 1000
    Image.fromarray(i).save(tmp_path / "i.tif")
    with pytest.warns(ImageReadWarning, match="31-bit data use 10 bits"):
        np.testing.assert_allclose(load_image(tmp_path / "i.tif"), i / 1023.0, atol=1e-7)
    nan = f.copy()
    nan[3, 3] = np.nan
    Image.fromarray(nan).save(tmp_path / "n.tif")
    with pytest.raises(ValueError, match="vis: image file contains NaN or inf"):
        load_image(tmp_path / "n.tif", "vis")


# EXIF 274 (TIFF 6.0 / Exif 2.3): where stored row 0 and column 0 appear for the viewer
@pytest.mark.parametrize(
    "orientation,expect",
    [
        (1, lambda a: a),
        (2, lambda a: a[:, ::-1]),
        (3, lambda a: a[::-1, ::-1]),
        (4, lambda a: a[::-1]),
        (5, lambda a: a.T),  # row 0 -> left side, column 0 -> top
        (6, lambda a: np.rot90(a, -1)),  # row 0 -> right side, column 0 -> top (turn 90° clockwise)
        (7, lambda a: a[::-1, ::-1].T),  # row 0 -> right side, column 0 -> bottom
        (8, lambda a: np.rot90(a, 1)),  # row 0 -> left side, column 0 -> bottom (counter-clockwise)
    ],
)
def test_exif_orientation_applied(tmp_path, orientation, expect):
    a = np.arange(12 * 20, dtype=np.uint8).reshape(12, 20)
    im = Image.fromarray(a)
    exif = Image.Exif()
    exif[0x0112] = orientation
    im.save(tmp_path / "o.png", exif=exif)
    np.testing.assert_array_equal(load_image(tmp_path / "o.png"), expect(a))


def test_exif_rotated_pair_is_not_a_size_mismatch(tiny_ckpt, tmp_path):
    rng = np.random.default_rng(2)
    vis = rng.integers(0, 256, (40, 24, 3), dtype=np.uint8)  # as the viewer shows it: 24 wide, 40 high
    ir_view = rng.integers(0, 256, (40, 24), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored turned back by 90°: 40 wide, 24 high
    Image.fromarray(np.rot90(ir_view, 1).copy()).save(tmp_path / "ir.png", exif=exif)
    Image.fromarray(vis).save(tmp_path / "vis.png")
    with Engine(tiny_ckpt) as eng:
        out = eng.fuse(tmp_path / "ir.png", tmp_path / "vis.png")
        assert np.array_equal(out, eng.fuse(ir_view, vis))


def test_open_image_reads_file_objects_by_the_same_rules(tmp_path, png_header_only):
    """Bytes in memory (an upload) read as the same file: EXIF orientation and bit depth applied,
    the pixel limit from the header, errors naming the input."""
    import io

    a = np.arange(24 * 40, dtype=np.uint16).reshape(24, 40) * 3  # 12-bit data in a 16-bit PNG
    exif = Image.Exif()
    exif[0x0112] = 8  # viewer turns it counter-clockwise
    Image.fromarray(a).save(tmp_path / "t.png", exif=exif)
    data = (tmp_path / "t.png").read_bytes()
    with (
        open_image(io.BytesIO(data), "ir", label="upload") as im,
        pytest.warns(ImageReadWarning, match="16-bit data use 12 bits"),
    ):
        got = pil_to_array(im, "ir")
    np.testing.assert_allclose(got, np.rot90(a, 1) / 4095.0, rtol=0, atol=1e-7)  # float32 rounding
    png_header_only(tmp_path / "big.png", 50000, 50000)
    with pytest.raises(ImageTooLargeError, match="^ir: "):
        open_image(io.BytesIO((tmp_path / "big.png").read_bytes()), "ir", label="upload")
    with pytest.raises(ValueError, match="^vis: not a readable image file.*upload"):
        open_image(io.BytesIO(b"hello"), "vis", label="upload")
    with pytest.raises(FileNotFoundError, match="^vis: file not found"):
        open_image(tmp_path / "missing.png", "vis")


def test_multi_frame_first_frame_with_a_warning(tmp_path):
    frames = [Image.fromarray(np.full((20, 20), v, np.uint8)) for v in (10, 200)]
    frames[0].save(tmp_path / "m.tif", save_all=True, append_images=frames[1:])
    frames[0].convert("P").save(tmp_path / "m.gif", save_all=True, append_images=[f.convert("P") for f in frames[1:]])
    for n in ("m.tif", "m.gif"):
        with pytest.warns(ImageReadWarning, match="2 frames; using the first"):
            a = load_image(tmp_path / n, "ir")
        assert a.shape[:2] == (20, 20) and int(np.asarray(a).max()) == 10


def test_palette_alpha_and_la(tmp_path):
    rgba = np.zeros((20, 20, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 7  # alpha is dropped, not composited
    Image.fromarray(rgba).save(tmp_path / "a.png")
    np.testing.assert_array_equal(load_image(tmp_path / "a.png"), rgba[..., :3])
    Image.fromarray(rgba[..., :3]).convert("P").save(tmp_path / "p.png")
    assert load_image(tmp_path / "p.png").shape == (20, 20, 3)
    la = np.dstack([np.full((20, 20), 99, np.uint8), np.zeros((20, 20), np.uint8)])
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    np.testing.assert_array_equal(load_image(tmp_path / "la.png"), la[..., 0])


def test_foreign_formats_are_not_decoded(tmp_path):
    """Only READ_FORMATS are opened: an EPS or ICO file is 'not a readable image', never handed to its decoder."""
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(tmp_path / "x.ico")
    with pytest.raises(ValueError, match="ir: not a readable image file"):
        load_image(tmp_path / "x.ico", "ir")


def test_depth_argument_validated_and_8_bit_files_unchanged(tiny_ckpt, tmp_path):
    with pytest.raises(ValueError, match="depth must be one of auto, range, full"):
        Engine(tiny_ckpt, depth="bits")
    a = np.random.default_rng(3).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    Image.fromarray(a).save(tmp_path / "c.png")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 8-bit data: no warning, whatever the depth rule
        for depth in ("auto", "range", "full"):
            out = load_image(tmp_path / "c.png", depth=depth)
            assert out.dtype == np.uint8 and np.array_equal(out, a)
