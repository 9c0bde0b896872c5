"""BiSWE (tokfuse_rt.metrics.temporal) against hand-worked cases, plus the real Farneback flow."""

from __future__ import annotations

import numpy as np
import pytest

from tokfuse_rt.metrics import BiSWE, biswe
from tokfuse_rt.metrics.temporal import warp


def zero_flow(a, b):
    return np.zeros(a.shape + (2,), np.float32)


def const_flow(dx, dy=0.0):
    def f(a, b):
        out = np.zeros(a.shape + (2,), np.float32)
        out[..., 0], out[..., 1] = dx, dy
        return out

    return f


def static(v, t=3, h=4, w=5):
    return [np.full((h, w), v, np.uint8) for _ in range(t)]


def test_warp_bilinear_with_border_clamp_by_hand():
    img = np.array([[0, 10, 20, 30], [40, 50, 60, 70]], np.float64)
    f = np.zeros((2, 4, 2))
    f[..., 0] = -0.5  # sample half a pixel to the left
    # row 0: x=0 -> clamp(-0.5)=0 -> 0; x=1 -> 0.5 -> 5; x=2 -> 15; x=3 -> 25
    np.testing.assert_allclose(warp(img, f)[0], [0, 5, 15, 25])
    f[..., 0], f[..., 1] = 0.25, 0.5  # x + 0.25, y + 0.5 (row 1 clamps to y = 1)
    # (x=1, y=0): top 10*0.75 + 20*0.25 = 12.5, bottom 50*0.75 + 60*0.25 = 52.5 -> 32.5
    assert warp(img, f)[0, 1] == pytest.approx(32.5)
    assert warp(img, f)[1, 1] == pytest.approx(52.5)
    # x = 3 + 0.25 clamps to the last column
    assert warp(img, f)[0, 3] == pytest.approx(50.0)
    rgb = np.stack([img, 2 * img, 3 * img], -1)
    np.testing.assert_allclose(warp(rgb, f)[..., 2], 3 * warp(img, f))


def test_static_video_is_zero():
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (6, 7), dtype=np.uint8)
    video = [frame] * 4
    assert biswe(video, video, video, flow=zero_flow) == 0.0


def test_flicker_by_hand():
    # fused 100, 110, 100, 110: each interior frame differs by 10 from both neighbours -> 10 + 10
    fused = [np.full((4, 5), v, np.uint8) for v in (100, 110, 100, 110)]
    src = static(50, t=4)
    m = BiSWE(src, src, flow=zero_flow)
    np.testing.assert_allclose(m.per_frame(fused), [20.0, 20.0])
    assert m(fused) == pytest.approx(20.0)
    assert m.sources() == {"ir": 0.0, "vis": 0.0}
    # float frames in [0, 1] are rounded to 8 bit first: 100.4/255 -> 100, 109.6/255 -> 110
    assert m([f / 255.0 + d for f, d in zip(fused, (0.4 / 255, -0.4 / 255, 0.4 / 255, -0.4 / 255))]) == pytest.approx(
        20.0
    )


def test_colour_channels_are_averaged():
    fused = [np.zeros((3, 3, 3), np.uint8) for _ in range(3)]
    fused[1][..., 0] = 30  # only red flickers: |Δ| per channel 30, 0, 0 -> mean 10, twice
    assert biswe(fused, static(0, h=3, w=3), static(0, h=3, w=3), flow=zero_flow) == pytest.approx(20.0)


def test_half_pixel_motion_by_hand():
    # F_t = ramp 0, 10, 20, 30 per row; neighbours = F_t shifted: value at x is 10*x + 5.
    # flow u = -0.5 px: F_s(x - 0.5) = 10x (x >= 1) exactly, 5 at x = 0 (clamped) -> |Δ| = 5 at one of 4
    # per direction: (5 + 0 + 0 + 0) * 2 rows / 8 pixels = 1.25; both directions: 2.5
    ramp = np.tile(np.array([0, 10, 20, 30], np.uint8), (2, 1))
    fused = [ramp + 5, ramp, ramp + 5]
    src = [np.zeros((2, 4), np.uint8)] * 3

    def flow(a, b):  # the (blank) sources do not move; the fused frames do
        return const_flow(-0.5)(a, b) if a.any() else zero_flow(a, b)

    assert biswe(fused, src, src, flow=flow) == pytest.approx(2.5)
    # with the sources' flow inconsistent everywhere (-0.5 both ways: |-1| >= 1 px) nothing counts
    assert biswe(fused, src, src, flow=const_flow(-0.5)) == 0.0


def test_occlusion_mask_from_sources_by_hand():
    # infrared frames are constant 200, 210, 220. Oracle flow: from a neighbour (200 or 220) back to
    # the centre frame (210) 2 px in the left half, zero elsewhere and for every other pair. So for
    # t = 1 and both s: forward (t -> s) 0, backward (s -> t) sampled at x + 0 = 2 on the left ->
    # |0 + 2| >= 1 px: occluded; 0 on the right: visible. Only the right half counts.
    h, w = 4, 6
    ir = [np.full((h, w), v, np.uint8) for v in (200, 210, 220)]
    vis = static(7, h=h, w=w)

    def oracle(a, b):
        out = np.zeros((h, w, 2), np.float32)
        if int(a[0, 0]) in (200, 220) and int(b[0, 0]) == 210:
            out[:, : w // 2, 0] = 2.0
        return out

    m = BiSWE(ir, vis, flow=oracle)
    assert sorted(m.masks) == [(1, 0), (1, 2)]
    for mask in m.masks.values():
        np.testing.assert_array_equal(mask, np.tile([False] * 3 + [True] * 3, (h, 1)))
    left = [np.zeros((h, w), np.uint8) for _ in range(3)]
    left[1][:, :3] = 50  # flicker only where the sources are occluded: not counted
    right = [np.zeros((h, w), np.uint8) for _ in range(3)]
    right[1][:, 3:] = 50  # flicker where they are visible: 50 + 50
    assert m(left) == 0.0
    assert m(right) == pytest.approx(100.0)
    # the infrared video itself changes by 10 per frame on the visible half: 10 + 10
    assert m.sources() == {"ir": pytest.approx(20.0), "vis": 0.0}


def test_farneback_tracks_motion_and_sees_flicker():
    pytest.importorskip("cv2")
    rng = np.random.default_rng(1)
    # smooth texture (so the flow is well posed) moving 1 px right per frame
    base = rng.random((80, 120))
    from scipy.ndimage import gaussian_filter

    tex = gaussian_filter(base, 2.0)
    tex = (tex - tex.min()) / (tex.max() - tex.min()) * 200 + 20
    frames = [np.roll(tex, i, axis=1)[:, 8:-8] for i in range(5)]
    moving = [np.round(f).astype(np.uint8) for f in frames]
    m = BiSWE(moving, moving)
    still = m(moving)
    # warping along the true motion explains the frames: error far below the frame difference
    naive = np.mean([np.abs(moving[i].astype(float) - moving[i - 1]).mean() for i in range(1, 5)])
    assert still < 0.25 * 2 * naive
    flicker = [np.clip(f.astype(int) + (8 if i % 2 else 0), 0, 255).astype(np.uint8) for i, f in enumerate(moving)]
    # +8 on odd frames: each interior frame is 8 away from both neighbours -> about +16
    assert m(flicker) - still == pytest.approx(16.0, abs=2.0)


def test_input_validation():
    a = static(1)
    with pytest.raises(ValueError, match="at least 3 frames"):
        BiSWE(a[:2], a[:2], flow=zero_flow)
    with pytest.raises(ValueError, match="different lengths"):
        BiSWE(a, a[:2] + a, flow=zero_flow)
    with pytest.raises(ValueError, match="sizes differ"):
        BiSWE(a, static(1, w=6), flow=zero_flow)
    m = BiSWE(a, a, flow=zero_flow)
    with pytest.raises(ValueError, match="frames of"):
        m(static(1, t=4))
    with pytest.raises(ValueError, match="NaN"):
        m([np.full((4, 5), np.nan)] * 3)
    with pytest.raises(TypeError, match="dtype"):
        m([np.zeros((4, 5), np.int32)] * 3)
    with pytest.raises(ValueError, match=r"video\[1\]: frame size"):
        m([np.zeros((4, 5), np.uint8), np.zeros((4, 6), np.uint8), np.zeros((4, 5), np.uint8)])
