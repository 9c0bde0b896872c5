"""The bundled default model is real: its fused test images carry infrared targets and visible texture."""

import numpy as np
import pytest

from tokfuse_rt import Engine, default_model_path
from tokfuse_rt.imageio import load_image, luminance
from tokfuse_rt.metrics import sobel_magnitude, texture_kept, thermal_kept

pytestmark = pytest.mark.skipif(not default_model_path().exists(), reason="bundled default model missing")


@pytest.fixture(scope="module")
def eng():
    with Engine() as e:
        yield e


def _corr(a, b):
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def test_texture_kept_is_the_sobel_correlation():
    """texture_kept against a hand-written Sobel + numpy corrcoef on a real pair; a copy keeps 1."""
    rng = np.random.default_rng(0)
    f, v = rng.random((31, 44)), rng.random((31, 44))

    def sobel(y):
        gx, gy = np.zeros_like(y), np.zeros_like(y)
        for dy, w in ((-1, 1), (0, 2), (1, 1)):
            gx[1:-1, 1:-1] += w * (y[1 + dy : y.shape[0] - 1 + dy, 2:] - y[1 + dy : y.shape[0] - 1 + dy, :-2])
            gy[1:-1, 1:-1] += w * (y[2:, 1 + dy : y.shape[1] - 1 + dy] - y[:-2, 1 + dy : y.shape[1] - 1 + dy])
        return np.hypot(gx, gy)

    np.testing.assert_allclose(sobel_magnitude(f), sobel(f), atol=1e-12)
    # float64 sums over ~1300 values: 1e-12
    assert abs(texture_kept(f, v) - _corr(sobel(f), sobel(v))) < 1e-12
    assert abs(texture_kept(v, v) - 1.0) < 1e-12 and np.isnan(texture_kept(np.ones((9, 9)), v))


@pytest.mark.parametrize(
    "set_name,names",
    [
        ("TNO", ["01.png", "05.png", "21.png"]),
        ("RoadScene", ["FLIR_00211.jpg", "FLIR_04269.jpg"]),
        ("MSRS", ["00004N.png", "00055D.png"]),
    ],
)
def test_ivif_fusion_keeps_targets_and_texture(eng, shared_data, set_name, names):
    d = shared_data / "test" / set_name
    kept_all = []
    for n in names:
        ir = luminance(load_image(d / "ir" / n))
        vis = luminance(load_image(d / "vi" / n))
        f = luminance(eng.fuse(d / "ir" / n, d / "vi" / n))
        # thermal targets: where ir is much brighter than vis, the fused image keeps most of that
        # excess (a plain average keeps 0.5; an untrained model ~0.4; this model 0.54-0.93 per
        # image, 0.69-0.92 per set)
        kept, n_hot = thermal_kept(f, ir, vis, margin=0.25)
        assert n_hot > 1000
        assert kept > 0.5, (set_name, n, kept)
        kept_all.append(kept)
        # texture of both: edges of each source show up as edges of the fused image
        assert texture_kept(f, vis) > 0.6, (set_name, n, "visible texture missing")
        assert texture_kept(f, ir) > 0.2, (set_name, n, "infrared structure missing")
    assert np.mean(kept_all) > 0.6, (set_name, kept_all)


def test_untrained_model_would_fail_these_checks(shared_data, tiny_ckpt):
    """The target check above can fail: an untrained model keeps ~half of the thermal excess."""
    d = shared_data / "test" / "TNO"
    kept = []
    with Engine(tiny_ckpt) as e:
        for n in ["01.png", "05.png", "21.png"]:
            ir = luminance(load_image(d / "ir" / n))
            vis = luminance(load_image(d / "vi" / n))
            f = luminance(e.fuse(d / "ir" / n, d / "vi" / n))
            kept.append(thermal_kept(f, ir, vis, margin=0.25)[0])
    assert np.mean(kept) <= 0.6, kept


@pytest.mark.parametrize("set_name", ["Harvard_MRI_CT", "Harvard_MRI_PET", "Harvard_MRI_SPECT"])
def test_medical_fusion_keeps_both_modalities(eng, shared_data, set_name):
    d = shared_data / "test" / set_name
    a = luminance(load_image(d / "a" / "11.png"))
    b = luminance(load_image(d / "b" / "11.png"))
    f = luminance(eng.fuse(d / "a" / "11.png", d / "b" / "11.png"))
    assert _corr(f, a) > 0.3 and _corr(f, b) > 0.3


def test_default_model_metadata(eng):
    info = eng.info()
    assert info["config"]["num_tokens"] == 64 and info["config"]["codebook_size"] == 4096
    assert info["config"]["head"] == "layers"
    assert info["train"]["pairs"] == 306 and info["train"]["seed"] == 0
    assert default_model_path().stat().st_size <= 25 * 2**20


def test_the_trainer_defaults_are_the_bundled_recipe(eng):
    """``python -m tokfuse_rt.train --data ... -o ...`` trains what ships: its defaults equal the recipe
    stored in the bundled checkpoint."""
    import dataclasses

    from tokfuse_rt.train.__main__ import build_parser, train_args

    recipe = eng.info()["train"]["recipe"]
    defaults = dataclasses.asdict(train_args(build_parser().parse_args(["--data", "d", "-o", "o.safetensors"])))
    assert {k: defaults[k] for k in recipe} == recipe
