"""Camera rigs (tokfuse_rt.rig): the rig file's contract (load/save/validation), the warp's pixel
convention against an independent reference (scipy's map_coordinates), the field-of-view rule, and
``Engine.fuse(..., align=)`` on real pairs rendered through a known rig."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from tokfuse_rt import Engine
from tokfuse_rt.imageio import load_image
from tokfuse_rt.rig import FEATHER_PX, Rig, as_rig
from tokfuse_rt.rig_synth import draw_rig, render_ir

cv2 = pytest.importorskip("cv2", reason="needs the extra tokfuse_rt[rig] (opencv-python-headless)")

H = np.array([[0.9, 0.05, 20.0], [-0.04, 0.92, 12.0], [2e-5, -1e-5, 1.0]])


def _rig(**kw):
    d = {"version": 1, "model": "homography", "matrix": H.tolist(), "ir_size": [320, 256], "vis_size": [400, 300]}
    d.update(kw)
    return d


def test_save_load_round_trip_and_file_format(tmp_path):
    r = Rig(H, (320, 256), (400, 300), meta={"note": "bench"})
    p = r.save(tmp_path / "rig.json")
    d = json.loads(p.read_text())
    assert d["version"] == 1 and d["model"] == "homography" and d["ir_size"] == [320, 256]
    assert d["vis_size"] == [400, 300] and np.allclose(d["matrix"], H) and d["note"] == "bench"
    back = Rig.load(p)
    assert back == r and back.meta == {"note": "bench"} and as_rig(str(p)) == r and as_rig(d) == r
    assert [f for f in os.listdir(tmp_path) if f != "rig.json"] == []  # no temporary left


def test_save_is_atomic(tmp_path, monkeypatch):
    """A failure while writing leaves the previous file as it was and no temporary behind."""
    p = tmp_path / "rig.json"
    Rig.identity((64, 48)).save(p)
    before = p.read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError, match="disk full"):
        Rig(H, (320, 256), (400, 300)).save(p)
    assert p.read_bytes() == before and os.listdir(tmp_path) == ["rig.json"]


@pytest.mark.parametrize(
    "change, message",
    [
        ({"version": 2}, "version 2 is not supported"),
        ({"model": "similarity"}, "model must be one of"),
        ({"matrix": [[1, 0], [0, 1]]}, "3x3"),
        ({"matrix": [[1, 0, float("nan")], [0, 1, 0], [0, 0, 1]]}, "NaN"),
        ({"matrix": [[1, 2, 0], [2, 4, 0], [0, 0, 1]]}, "singular"),
        ({"matrix": [[1, 0, 0], [0, 1e-6, 0], [0, 0, 1]]}, "ill-conditioned"),
        ({"matrix": [[1, 0, 0], [0, 1, 0], [0, 0, 0]]}, r"matrix\[2\]\[2\] is 0"),
        ({"model": "translation", "matrix": [[1.1, 0, 3], [0, 1.1, 2], [0, 0, 1]]}, "a translation matrix is"),
        ({"model": "affine"}, "last row"),
        ({"matrix": [[1, 0, 5000], [0, 1, 0], [0, 0, 1]]}, "entirely outside"),
        ({"matrix": [[1, 0, 0], [0, 1, 0], [-0.01, 0, 1]]}, "behind the camera"),
        ({"ir_size": [0, 256]}, "ir_size must be two positive"),
        ({"vis_size": [400]}, "vis_size must be"),
    ],
)
def test_validation_names_what_is_wrong(tmp_path, change, message):
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(_rig(**change), allow_nan=True))
    with pytest.raises(ValueError, match=message) as e:
        Rig.load(p)
    assert str(p) in str(e.value)


def test_missing_keys_not_json_and_missing_file(tmp_path):
    p = tmp_path / "r.json"
    p.write_text(json.dumps({"version": 1, "model": "affine"}))
    with pytest.raises(ValueError, match="missing key.*matrix"):
        Rig.load(p)
    p.write_text("{not json")
    with pytest.raises(ValueError, match="not a JSON file"):
        Rig.load(p)
    with pytest.raises(FileNotFoundError, match="rig file not found"):
        Rig.load(tmp_path / "nope.json")
    with pytest.raises(TypeError, match="expected a Rig"):
        as_rig(3)


def test_warp_convention_matches_map_coordinates():
    """Pixel centres at integer coordinates, matrix ir -> vis: vis pixel p samples ir at H^-1 p.
    Reference: scipy.ndimage.map_coordinates (order 1). Tolerance: OpenCV quantises sub-pixel
    positions to 1/32 px, so values differ by at most ~|gradient| / 32 (< 0.02 on this smooth image)."""
    ndi = pytest.importorskip("scipy.ndimage")
    r = Rig(H, (320, 256), (400, 300))
    yy, xx = np.mgrid[0:256, 0:320].astype(np.float32)
    ir = (0.5 + 0.25 * np.sin(xx / 9.0) * np.cos(yy / 7.0)).astype(np.float32)
    got = r.warp(ir)
    assert got.shape == (300, 400)
    inv = np.linalg.inv(H)
    vy, vx = np.mgrid[0:300, 0:400].astype(np.float64)
    z = inv[2, 0] * vx + inv[2, 1] * vy + inv[2, 2]
    u = (inv[0, 0] * vx + inv[0, 1] * vy + inv[0, 2]) / z
    v = (inv[1, 0] * vx + inv[1, 1] * vy + inv[1, 2]) / z
    ref = ndi.map_coordinates(ir, [v, u], order=1, mode="nearest")
    inside = (u >= 0) & (u <= 319) & (v >= 0) & (v <= 255)
    assert inside.mean() > 0.5
    assert np.abs(got - ref)[inside].max() < 0.02


def test_integer_translation_is_a_shift():
    ir = np.random.default_rng(0).integers(0, 256, (40, 50), dtype=np.uint8)
    r = Rig([[1, 0, 7], [0, 1, 3], [0, 0, 1]], (50, 40), (64, 48), "translation")
    got = r.warp(ir)
    assert np.array_equal(got[3:43, 7:57], ir)


def test_field_of_view_rule():
    """Inside: weight 1 from FEATHER_PX infrared px on; outside: weight 0 and the model sees the
    visible image; the ramp between has no jump (the largest step between neighbours stays below
    what a linear ramp over FEATHER_PX px would take, times the smoothstep's peak slope 1.5, times
    at most 1.25 infrared px per visible px: H scales by about 0.9, perspective varies that by a few %)."""
    r = Rig(H, (320, 256), (400, 300))
    inside, w = r.maps()
    d = r.depth_inside()
    assert np.all(w[d <= 0] == 0) and np.all(w[d >= FEATHER_PX] == 1)
    assert np.all(inside == (d > 0)) and 0.5 < r.coverage() < 0.95
    step = max(np.abs(np.diff(w, axis=0)).max(), np.abs(np.diff(w, axis=1)).max())
    assert step <= 1.5 / FEATHER_PX * 1.25
    y_vis = np.full((300, 400), 0.25, np.float32)
    y_ir = np.full((300, 400), 0.75, np.float32)
    mi = r.model_input(y_ir, y_vis)
    assert np.all(mi[~inside] == 0.25) and np.all(mi[inside] == 0.75)
    out = r.blend(y_ir, y_vis)
    assert np.all(out[d <= 0] == 0.25) and np.all(out[d >= FEATHER_PX] == 0.75)


@pytest.fixture(scope="module")
def eng(tiny_ckpt):
    with Engine(tiny_ckpt, device="cpu", threads=1) as e:
        yield e


@pytest.fixture(scope="module")
def synth(shared_data):
    """A real RoadScene pair (gray ir, colour vis) with its infrared rendered through a drawn rig."""
    d = shared_data / "test" / "RoadScene"
    ir_p = sorted((d / "ir").iterdir())[3]
    vis = load_image(next((d / "vi").glob(ir_p.stem + ".*")), "vis")
    ir = load_image(ir_p, "ir")
    rig = draw_rig((vis.shape[1], vis.shape[0]), np.random.default_rng(7))
    return ir, vis, rig, render_ir(ir, rig)


def test_engine_align_output_size_inside_and_outside(eng, synth, tmp_path):
    """The output has the visible size; outside the infrared field of view it is the visible image
    (up to the YCbCr round trip: 1 code value); inside it fuses the warped infrared: close to the
    fusion of the registered pair (the infrared went through two bilinear resamplings, so not exact:
    PSNR > 30 dB inside, where misalignment by 1 px would cost far more on this scene)."""
    ir, vis, rig, ir_cam = synth
    out = eng.fuse(ir_cam, vis, align=rig)
    assert out.shape == vis.shape
    inside, w = rig.maps()
    assert np.abs(out.astype(int) - vis.astype(int))[~inside].max() <= 1
    ref = eng.fuse(ir, vis)
    core = w == 1
    mse = np.mean((out[core].astype(float) - ref[core].astype(float)) ** 2)
    assert 10 * np.log10(255**2 / mse) > 30
    # the same through a rig file, on the engine and per call, and through prepare/fuse_batch
    p = rig.save(tmp_path / "rig.json")
    with Engine(eng.path, device="cpu", threads=1, align=p) as e2:
        assert np.array_equal(e2.fuse(ir_cam, vis), out)
        assert np.array_equal(e2.fuse_batch([(ir_cam, vis)])[0], out)
        assert e2.info()["align"]["ir_size"] == list(rig.ir_size)
    assert np.array_equal(eng.fuse(ir_cam, vis, align=str(p)), out)
    assert np.array_equal(eng.fuse_batch([(ir_cam, vis)], align=rig)[0], out)


def test_engine_refuses_sizes_other_than_the_rigs(eng, synth):
    ir, vis, rig, ir_cam = synth
    with pytest.raises(ValueError, match=r"ir is \d+x\d+ but the rig .*calibrate a rig"):
        eng.fuse(ir, vis, align=rig)  # the registered infrared has the visible size, not the rig's
    with pytest.raises(ValueError, match=r"vis is \d+x\d+ but the rig"):
        eng.fuse(ir_cam, vis[:-2], align=rig)
    with pytest.raises(ValueError, match="sizes differ.*--align"):
        eng.fuse(ir_cam, vis)  # without a rig: refused as before, pointing at --align
    with pytest.raises(FileNotFoundError, match="rig file not found"):
        Engine(eng.path, align="/nonexistent/rig.json")


def test_import_needs_no_cv2():
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['cv2'] = None; import tokfuse_rt, tokfuse_rt.rig, tokfuse_rt.inputs; "
        "assert 'cv2' not in [m for m in sys.modules if sys.modules[m] is not None]"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
