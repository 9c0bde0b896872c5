"""Tests for tokfuse_rt.metrics.

Three kinds of checks, none of which compares the implementation with itself:

* every entry of ``shared/data/metric_reference.json`` (values computed by the unmodified
  reference evaluator, MMIF-CDDFuse ``utils/Evaluator.py`` + scikit-image) must be reproduced to
  1e-4 relative error, including the per-pair parts;
* hand-computed values on tiny images (constant, identical, 4x4 examples);
* straightforward loop implementations of the published formulas, written here independently,
  on small seeded random images (Qabf, Nabf, SSIM, VIF, MI).

JPEG note: the RoadScene entries read JPEG sources.  Pillow and OpenCV both decode with
libjpeg-turbo (ISLOW IDCT, fancy upsampling); their RGB output was found byte-identical on all
RoadScene test JPEGs (checked once against opencv-python-headless 5.0.0, which is not a project
dependency), so these entries are matched like the PNG ones -- no entry is exempted.
"""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import tokfuse_rt.metrics as M

REL_TOL = 1e-4


def _shared_data_dir():
    from workspace import find_shared_data

    return find_shared_data("metric_reference.json", start=Path(__file__))


DATA = _shared_data_dir()
_REF = json.loads((DATA / "metric_reference.json").read_text()) if DATA else None
ENTRIES = _REF["entries"] if _REF else []
needs_data = pytest.mark.skipif(DATA is None, reason="shared/data/metric_reference.json not found (set TOKFUSE_SHARED)")

# metric_reference.json key -> key returned by evaluate()
REF_KEYS = ["EN", "SD", "SF", "AG", "MI", "SCD", "VIF", "Qabf", "SSIM_255", "SSIM_2", "CC", "PSNR", "MSE"]


def _rel(a, b):
    return abs(a - b) / max(abs(b), 1e-300)


def _load(entry):
    return tuple(M.read_gray(DATA / entry[k]) for k in ("fused", "ir", "vis"))


# --------------------------------------------------------------------------------------------
# reference entries
# --------------------------------------------------------------------------------------------


@needs_data
@pytest.mark.parametrize(
    "entry",
    ENTRIES or [None],
    ids=[f"{e['set']}-{e['name']}-{e['method']}" for e in ENTRIES] or ["no-data"],
)
def test_reference_entry(entry):
    if entry is None:
        pytest.skip("no entries in metric_reference.json")
    digest = hashlib.sha256((DATA / entry["fused"]).read_bytes()).hexdigest()
    assert digest == entry["fused_sha256"], "fused fixture bytes changed"
    F, A, B = _load(entry)
    assert F.shape == (entry["height"], entry["width"])
    r = M.evaluate(F, A, B)
    bad = {k: (r[k], entry[k]) for k in REF_KEYS if k in entry and _rel(r[k], entry[k]) > REL_TOL}
    assert not bad, f"rel err > {REL_TOL}: {bad}"
    # default SSIM is the published column (data range 2)
    assert _rel(r["SSIM"], entry["SSIM_2"]) <= REL_TOL
    parts = entry.get("parts", {})
    got = {
        "MI_FA": M.mutual_information(F, A),
        "MI_FB": M.mutual_information(F, B),
        "VIF_A": M.vifp(A, F),
        "VIF_B": M.vifp(B, F),
        "SSIM_255_A": M.ssim_pair(F, A, 255),
        "SSIM_255_B": M.ssim_pair(F, B, 255),
        "SSIM_2_A": M.ssim_pair(F, A, 2),
        "SSIM_2_B": M.ssim_pair(F, B, 2),
        "maxF": float(F.max()),
    }
    bad = {k: (got[k], v) for k, v in parts.items() if k in got and _rel(got[k], v) > REL_TOL}
    assert not bad, f"parts rel err > {REL_TOL}: {bad}"


@needs_data
def test_reference_covers_jpeg_and_all_metrics():
    # documents what the reference file exercises: JPEG sources (RoadScene) are matched too
    assert any(e["ir"].lower().endswith(".jpg") for e in ENTRIES)
    for e in ENTRIES:
        assert all(k in e for k in REF_KEYS)


@needs_data
def test_convention_bits_and_ssim255_against_reference():
    e = ENTRIES[0]
    F, A, B = _load(e)
    bits = M.evaluate(F, A, B, convention="cddfuse_bits", metrics=["MI"])
    assert _rel(bits["MI"], e["MI"] / math.log(2)) <= REL_TOL
    over = M.evaluate(F, A, B, metrics=["MI", "SSIM"], mi_base=2, ssim_range=255)
    assert _rel(over["MI"], e["MI"] / math.log(2)) <= REL_TOL
    assert _rel(over["SSIM"], e["SSIM_255"]) <= REL_TOL
    s255 = M.evaluate(F, A, B, convention="cddfuse_ssim255", metrics=["SSIM"])
    assert _rel(s255["SSIM"], e["SSIM_255"]) <= REL_TOL
    assert _rel(s255["SSIM_2"], e["SSIM_2"]) <= REL_TOL


@needs_data
def test_per_channel_average_against_reference():
    """VIFB-style per-channel averaging: a colour fused image whose channels are two reference
    fused images must score the channel-weighted mean of their reference values."""
    by = {(e["set"], e["name"], e["method"]): e for e in ENTRIES}
    pair = [(k, v) for k, v in by.items() if k[2] == "mmdrfuse_student" and (k[0], k[1], "fcdfusion") in by][0]
    e1 = pair[1]
    e2 = by[(pair[0][0], pair[0][1], "fcdfusion")]
    F1, A, B = _load(e1)
    F2 = M.read_gray(DATA / e2["fused"])
    rgb = np.stack([F1, F2, F1], axis=2)
    r = M.evaluate(rgb, A, B, convention="vifb", mi_base=math.e, ssim_range=2.0, nabf_scale=1.0)
    for k in REF_KEYS:
        want = (2 * e1[k] + e2[k]) / 3
        assert _rel(r[k], want) <= REL_TOL, (k, r[k], want)


# --------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------


def test_read_gray_rgb_formula(tmp_path):
    from PIL import Image

    # Expected grey levels produced by OpenCV 5.0.0 (cv2.imread -> float32 -> BGR2GRAY -> round);
    # the first five are pixels where a plain float32 or an exact real-valued evaluation of
    # 0.299R+0.587G+0.114B rounds differently, so they pin down OpenCV's FMA evaluation order.
    cases = [
        ((0, 138, 171), 101),
        ((1, 63, 230), 64),
        ((1, 163, 180), 116),
        ((2, 6, 170), 24),
        ((0, 22, 49), 18),
        ((255, 0, 0), 76),
        ((0, 255, 0), 150),
        ((0, 0, 255), 29),
        ((10, 200, 30), 124),
        ((100, 100, 100), 100),
        ((255, 255, 255), 255),
        ((0, 0, 0), 0),
    ]
    px = np.array([c for c, _ in cases], dtype=np.uint8)[None]
    Image.fromarray(px).save(tmp_path / "c.png")
    g = M.read_gray(tmp_path / "c.png")
    assert g.dtype == np.float32 and g.shape == (1, len(cases))
    np.testing.assert_array_equal(g[0], [v for _, v in cases])
    # hand check of one value: 0.299*10 + 0.587*200 + 0.114*30 = 123.81 -> 124
    assert round(0.299 * 10 + 0.587 * 200 + 0.114 * 30) == 124


def test_read_gray_modes(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (5, 7), dtype=np.uint8)
    Image.fromarray(a).save(tmp_path / "g.png")
    np.testing.assert_array_equal(M.read_gray(tmp_path / "g.png"), a.astype(np.float32))
    Image.fromarray(np.repeat(a[..., None], 3, 2)).save(tmp_path / "g3.bmp")
    np.testing.assert_array_equal(M.read_gray(tmp_path / "g3.bmp"), a.astype(np.float32))
    Image.fromarray(a).save(tmp_path / "g.tif")
    np.testing.assert_array_equal(M.read_gray(tmp_path / "g.tif"), a.astype(np.float32))
    rgba = np.dstack([a, a, a, 255 - a])  # alpha dropped without compositing (as cv2.imread)
    Image.fromarray(rgba).save(tmp_path / "a.png")
    np.testing.assert_array_equal(M.read_gray(tmp_path / "a.png"), a.astype(np.float32))
    # 16-bit: OpenCV scales by 1/256 for IMREAD_COLOR
    a16 = a.astype(np.uint16) * 256
    Image.fromarray(a16).save(tmp_path / "w.png")
    np.testing.assert_array_equal(M.read_gray(tmp_path / "w.png"), a.astype(np.float32))
    assert M.read_rgb(tmp_path / "g.png").shape == (5, 7, 3)


# --------------------------------------------------------------------------------------------
# hand-checkable values
# --------------------------------------------------------------------------------------------


def test_constant_image():
    rng = np.random.default_rng(1)
    F = np.full((16, 16), 100, np.float32)
    A = rng.integers(0, 256, (16, 16)).astype(np.float32)
    B = rng.integers(0, 256, (16, 16)).astype(np.float32)
    r = M.evaluate(F, A, B, metrics=["EN", "SD", "SF", "AG", "MI"])
    assert r == {"EN": 0.0, "SD": 0.0, "SF": 0.0, "AG": 0.0, "MI": 0.0}


def test_identical_images():
    rng = np.random.default_rng(2)
    X = rng.integers(0, 256, (64, 64)).astype(np.float32)
    r = M.evaluate(X, X, X)
    assert r["MSE"] == 0.0
    assert r["PSNR"] == math.inf
    assert r["CC"] == pytest.approx(1.0, abs=1e-6)
    assert r["SSIM_2"] == pytest.approx(2.0, abs=1e-6)
    assert r["SSIM_255"] == pytest.approx(2.0, abs=1e-6)
    assert r["VIF"] == pytest.approx(2.0, abs=1e-6)  # vifp(X, X) = 1 per pair
    assert r["Nabf"] == 0.0  # gF never exceeds both source gradients
    # MI(X, X) = H(X) in nats: sum of two equal entropies
    _, counts = np.unique(X, return_counts=True)
    p = counts / X.size
    assert r["MI"] == pytest.approx(2 * float(-(p * np.log(p)).sum()), rel=1e-9)


def test_hand_values_4x4():
    F = np.array([[0, 0, 255, 255]] * 4, np.float32)  # half 0, half 255
    assert M.en(F) == pytest.approx(1.0)  # 1 bit
    assert M.sd(F) == pytest.approx(127.5)
    F4 = np.array([[0, 1, 2, 3]] * 4, np.float32)  # 4 equiprobable levels
    assert M.en(F4) == pytest.approx(2.0)
    S = np.array([[0, 1, 0, 1]] * 4, np.float32)  # horizontal diffs +-1, vertical 0
    assert M.sf(S) == pytest.approx(1.0)
    R = np.array([[0, 2, 4, 6]] * 4, np.float32)  # ramp: Gx = 2, Gy = 0
    assert M.ag(R) == pytest.approx(math.sqrt(2.0))
    # AG borders are one-sided and not halved: [0, 4, 4, 8] -> Gx = 4, 2, 2, 4
    R2 = np.array([[0, 4, 4, 8]] * 4, np.float32)
    assert M.ag(R2) == pytest.approx((4 + 2 + 2 + 4) / 4 / math.sqrt(2))

    # MI: F copies A (2 equiprobable levels), F independent of B -> ln 2 + 0 nats
    Fm = np.array([[0, 0, 1, 1]] * 4, np.float32)
    Bm = np.array([[0, 1, 0, 1]] * 4, np.float32)
    assert M.mi(Fm, Fm, Bm) == pytest.approx(math.log(2))
    assert M.mi(Fm, Fm, Bm, base=2) == pytest.approx(1.0)
    assert M.evaluate(Fm, Fm, Bm, convention="cddfuse_bits", metrics=["MI"])["MI"] == pytest.approx(1.0)

    # CC: corr(A, F) = 1, corr(B, F) = -1
    Fc = np.array([[1, 2, 3, 4], [5, 6, 7, 8], [1, 3, 5, 7], [2, 4, 6, 9]], np.float32)
    assert M.cc(Fc, Fc, 10 - Fc) == pytest.approx(0.0, abs=1e-6)
    assert M.cc(Fc, Fc, 2 * Fc + 1) == pytest.approx(1.0, abs=1e-6)

    # MSE / PSNR: F = 10, A = 12, B = 6 -> MSE = (4 + 16) / 2 = 10, PSNR = 10 log10(10^2 / 10) = 10
    F0 = np.full((4, 4), 10, np.float32)
    assert M.mse(F0, F0 + 2, F0 - 4) == pytest.approx(10.0)
    assert M.psnr(F0, F0 + 2, F0 - 4) == pytest.approx(10.0)


def test_scd_cc_against_corrcoef():
    rng = np.random.default_rng(3)
    F, A, B = (rng.integers(0, 256, (4, 4)).astype(np.float64) for _ in range(3))

    def c(x, y):
        return np.corrcoef(x.ravel(), y.ravel())[0, 1]

    assert M.scd(F, A, B) == pytest.approx(c(A, F - B) + c(B, F - A), rel=1e-9)
    assert M.cc(F, A, B) == pytest.approx((c(A, F) + c(B, F)) / 2, rel=1e-9)


# --------------------------------------------------------------------------------------------
# straightforward loop implementations of the published formulas
# --------------------------------------------------------------------------------------------


def _conv2_loop(x, h, mode):
    """Textbook 2-D convolution (kernel flipped), 'same' (zero padded) or 'valid'."""
    kh, kw = h.shape
    H, W = x.shape
    hf = h[::-1, ::-1]
    if mode == "same":
        xp = np.zeros((H + kh - 1, W + kw - 1))
        xp[kh // 2 : kh // 2 + H, kw // 2 : kw // 2 + W] = x
        oh, ow = H, W
    else:
        xp = x
        oh, ow = H - kh + 1, W - kw + 1
    out = np.zeros((max(oh, 0), max(ow, 0)))
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            out[i, j] = np.sum(xp[i : i + kh, j : j + kw] * hf)
    return out


def _qabf_loop(F, A, B):
    h1 = np.array([[1, 2, 1], [0, 0, 0], [-1, -2, -1]], float)
    h3 = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], float)

    def ga(x):
        sx, sy = _conv2_loop(x, h3, "same"), _conv2_loop(x, h1, "same")
        g = np.zeros_like(sx)
        a = np.zeros_like(sx)
        for i in range(sx.shape[0]):
            for j in range(sx.shape[1]):
                g[i, j] = math.sqrt(sx[i, j] ** 2 + sy[i, j] ** 2)
                a[i, j] = math.pi / 2 if sx[i, j] == 0 else math.atan(sy[i, j] / sx[i, j])
        return g, a

    gA, aA = ga(A)
    gB, aB = ga(B)
    gF, aF = ga(F)
    num = den = 0.0
    for i in range(F.shape[0]):
        for j in range(F.shape[1]):
            for (
                g,
                a,
            ) in ((gA, aA), (gB, aB)):
                if g[i, j] > gF[i, j]:
                    G = gF[i, j] / g[i, j]
                elif g[i, j] == gF[i, j]:
                    G = gF[i, j]  # reference quirk
                else:
                    G = g[i, j] / gF[i, j]
                Aa = 1 - abs(a[i, j] - aF[i, j]) / (math.pi / 2)
                Q = 0.9994 / (1 + math.exp(-15 * (G - 0.5))) * 0.9879 / (1 + math.exp(-22 * (Aa - 0.8)))
                num += Q * g[i, j]
                den += g[i, j]
    return num / den


def _nabf_loop(F, A, B, scale=1.0):
    """Kumar's MATLAB analysis_nabf, transcribed loop by loop, on images ``scale * X``.  The scale
    is applied to the Sobel responses of the integer images (mathematically the same) so that
    exact gradient ties stay exact and the strict ``gF > gA`` test is not decided by rounding."""

    def ext(x):  # per_extn_im_fn(x, 3)
        p, q = x.shape
        o = np.zeros((p + 2, q + 2))
        o[1 : p + 1, 1 : q + 1] = x
        o[0, :] = o[2, :]
        o[p + 1, :] = o[p - 1, :]
        o[:, 0] = o[:, 2]
        o[:, q + 1] = o[:, q - 1]
        return o

    vt = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]) / 8
    ht = np.array([[-1, -2, -1], [0, 0, 0], [1, 2, 1]]) / 8

    def sob(x):
        e = ext(x)
        p, q = x.shape
        gv = np.zeros((p, q))
        gh = np.zeros((p, q))
        for i in range(p):
            for j in range(q):
                gv[i, j] = np.sum(e[i : i + 3, j : j + 3] * vt)
                gh[i, j] = np.sum(e[i : i + 3, j : j + 3] * ht)
        return gv * scale, gh * scale

    (gvA, ghA), (gvB, ghB), (gvF, ghF) = sob(A), sob(B), sob(F)
    num = den = 0.0
    for i in range(F.shape[0]):
        for j in range(F.shape[1]):
            g = {
                k: math.hypot(gv[i, j], gh[i, j])
                for k, (gv, gh) in {"A": (gvA, ghA), "B": (gvB, ghB), "F": (gvF, ghF)}.items()
            }
            ang = {}
            for k, (gv, gh) in {"A": (gvA, ghA), "B": (gvB, ghB), "F": (gvF, ghF)}.items():
                if gv[i, j] == 0 and gh[i, j] == 0:
                    ang[k] = 0.0
                elif gh[i, j] == 0:
                    ang[k] = math.copysign(math.pi / 2, gv[i, j])
                else:
                    ang[k] = math.atan(gv[i, j] / gh[i, j])
            Q = {}
            w = {}
            for k in "AB":
                if g[k] == 0 or g["F"] == 0:
                    r = 0.0
                elif g[k] > g["F"]:
                    r = g["F"] / g[k]
                else:
                    r = g[k] / g["F"]
                aa = abs(abs(ang[k] - ang["F"]) - math.pi / 2) * 2 / math.pi
                Qg = 0.9999 / (1 + math.exp(-19 * (r - 0.5)))
                Qa = 0.9995 / (1 + math.exp(-22 * (aa - 0.5)))
                Q[k] = math.sqrt(Qg * Qa)
                w[k] = g[k] ** 1.5 if g[k] >= 2 else 0.001
            den += w["A"] + w["B"]
            if g["F"] > g["A"] and g["F"] > g["B"]:
                num += (1 - Q["A"]) * w["A"] + (1 - Q["B"]) * w["B"]
    return num / den


def _ssim_loop(X, Y, R):
    """Wang et al. SSIM with scikit-image's defaults: 7x7 uniform window over a 'reflect'
    (half-sample symmetric) padded image, sample covariance, mean over the 3-px-cropped map."""
    pad = 3
    Xp = np.pad(X.astype(np.float64), pad, mode="symmetric")
    Yp = np.pad(Y.astype(np.float64), pad, mode="symmetric")
    C1, C2 = (0.01 * R) ** 2, (0.03 * R) ** 2
    vals = []
    for i in range(pad, X.shape[0] - pad):
        for j in range(pad, X.shape[1] - pad):
            x = Xp[i : i + 7, j : j + 7].ravel()
            y = Yp[i : i + 7, j : j + 7].ravel()
            mx, my = x.mean(), y.mean()
            vx = np.sum((x - mx) ** 2) / 48
            vy = np.sum((y - my) ** 2) / 48
            cxy = np.sum((x - mx) * (y - my)) / 48
            vals.append((2 * mx * my + C1) * (2 * cxy + C2) / ((mx * mx + my * my + C1) * (vx + vy + C2)))
    return float(np.mean(vals))


def _vifp_loop(ref, dist):
    ref = ref.astype(np.float64)
    dist = dist.astype(np.float64)
    num = den = 0.0
    for scale in range(1, 5):
        N = 2 ** (4 - scale + 1) + 1
        sd = N / 5.0
        win = np.zeros((N, N))
        c = (N - 1) / 2
        for a in range(N):
            for b in range(N):
                win[a, b] = math.exp(-((a - c) ** 2 + (b - c) ** 2) / (2 * sd * sd))
        win /= win.sum()
        if scale > 1:
            ref = _conv2_loop(ref, win, "valid")[::2, ::2]
            dist = _conv2_loop(dist, win, "valid")[::2, ::2]
        mu1 = _conv2_loop(ref, win, "valid")
        mu2 = _conv2_loop(dist, win, "valid")
        e11 = _conv2_loop(ref * ref, win, "valid")
        e22 = _conv2_loop(dist * dist, win, "valid")
        e12 = _conv2_loop(ref * dist, win, "valid")
        for i in range(mu1.shape[0]):
            for j in range(mu1.shape[1]):
                s1 = max(e11[i, j] - mu1[i, j] ** 2, 0.0)
                s2 = max(e22[i, j] - mu2[i, j] ** 2, 0.0)
                s12 = e12[i, j] - mu1[i, j] * mu2[i, j]
                g = s12 / (s1 + 1e-10)
                sv = s2 - g * s12
                if s1 < 1e-10:
                    g, sv, s1 = 0.0, s2, 0.0
                if s2 < 1e-10:
                    g, sv = 0.0, 0.0
                if g < 0:
                    sv, g = s2, 0.0
                sv = max(sv, 1e-10)
                num += math.log10(1 + g * g * s1 / (sv + 2))
                den += math.log10(1 + s1 / 2)
    return num / den


def _mi_loop(X, Y):
    n = X.size
    joint, px, py = {}, {}, {}
    for x, y in zip(X.ravel().tolist(), Y.ravel().tolist()):
        joint[(x, y)] = joint.get((x, y), 0) + 1
        px[x] = px.get(x, 0) + 1
        py[y] = py.get(y, 0) + 1
    return sum(c / n * math.log((c / n) / (px[x] / n * py[y] / n)) for (x, y), c in joint.items())


def _rand_triplet(seed, shape, levels=256):
    rng = np.random.default_rng(seed)
    base = rng.integers(0, levels, shape).astype(np.float32)
    A = np.clip(base + rng.normal(0, 20, shape), 0, 255).round().astype(np.float32)
    B = np.clip(255 - base + rng.normal(0, 30, shape), 0, 255).round().astype(np.float32)
    F = np.clip(0.5 * A + 0.5 * B + rng.normal(0, 10, shape), 0, 255).round().astype(np.float32)
    # include flat patches so the zero-gradient branches are exercised
    F[:3, :3] = A[:3, :3] = B[:3, :3] = 7
    return F, A, B


def test_qabf_matches_loop_reference():
    F, A, B = _rand_triplet(4, (12, 12))
    assert M.qabf(F, A, B) == pytest.approx(_qabf_loop(F, A, B), rel=1e-5)


def test_qabf_equal_gradient_quirk():
    # where gA == gF the reference sets G^AF = gF (not 1): a step edge copied exactly into F
    A = np.zeros((4, 4), np.float32)
    A[:, 2:] = 1
    F = A.copy()
    B = np.zeros((4, 4), np.float32)
    assert M.qabf(F, A, B) == pytest.approx(_qabf_loop(F, A, B), rel=1e-6)


def test_nabf_matches_loop_reference():
    F, A, B = _rand_triplet(5, (12, 12))
    want = _nabf_loop(F, A, B)
    assert want > 0
    assert M.nabf(F, A, B) == pytest.approx(want, rel=1e-9)
    # VIFB scale (im2double inputs)
    assert M.nabf(F, A, B, scale=1 / 255) == pytest.approx(_nabf_loop(F, A, B, scale=1 / 255), rel=1e-9)


def test_ssim_matches_loop_reference():
    F, A, B = _rand_triplet(6, (11, 13))
    for R in (2.0, 255.0):
        want = _ssim_loop(F, A, R) + _ssim_loop(F, B, R)
        assert M.ssim(F, A, B, data_range=R) == pytest.approx(want, rel=1e-4)
    r = M.evaluate(F, A, B, metrics=["SSIM"])
    assert set(r) == {"SSIM", "SSIM_2", "SSIM_255"}
    assert r["SSIM"] == r["SSIM_2"]


def test_vif_matches_loop_reference():
    F, A, B = _rand_triplet(7, (48, 48))
    want = _vifp_loop(A, F) + _vifp_loop(B, F)
    assert M.vif(F, A, B) == pytest.approx(want, rel=1e-9)


def test_mi_matches_loop_reference():
    F, A, B = _rand_triplet(8, (16, 16), levels=16)
    want = _mi_loop(F, A) + _mi_loop(F, B)
    assert M.mi(F, A, B) == pytest.approx(want, rel=1e-9)
    assert M.mi(F, A, B, base=2) == pytest.approx(want / math.log(2), rel=1e-9)
    # non-integer values take the generic (np.unique) path
    assert M.mi(F + 0.5, A, B) == pytest.approx(want, rel=1e-9)


# --------------------------------------------------------------------------------------------
# API
# --------------------------------------------------------------------------------------------


def test_metrics_order_and_subset():
    assert M.METRICS == ("EN", "SD", "SF", "AG", "MI", "SCD", "VIF", "Qabf", "SSIM", "PSNR", "CC", "MSE", "Nabf")
    F, A, B = _rand_triplet(9, (32, 32))
    r = M.evaluate(F, A, B)
    assert [k for k in r if k in M.METRICS] == list(M.METRICS)
    assert "SSIM_2" in r and "SSIM_255" in r
    assert set(M.evaluate(F, A, B, metrics=["psnr", "EN"])) == {"PSNR", "EN"}
    with pytest.raises(ValueError):
        M.evaluate(F, A, B, metrics=["nope"])
    with pytest.raises(ValueError):
        M.evaluate(F, A, B, convention="nope")
    with pytest.raises(ValueError):
        M.evaluate(F, A[:-1], B)


def test_colour_input_is_converted_to_luminance():
    F, A, B = _rand_triplet(10, (24, 24))
    rgb = np.repeat(F[..., None], 3, axis=2)
    assert M.evaluate(rgb, A, B) == M.evaluate(F, A, B)
    # uint8 input is read as float32 like the reference
    assert M.evaluate(F.astype(np.uint8), A, B) == M.evaluate(F, A, B)


def test_vifb_nabf_scale_and_gray_passthrough():
    F, A, B = _rand_triplet(11, (24, 24))
    r = M.evaluate(F, A, B, convention="vifb", metrics=["Nabf", "MI", "SSIM"])
    assert r["Nabf"] == pytest.approx(_nabf_loop(F, A, B, scale=1 / 255), rel=1e-9)
    assert r["MI"] == pytest.approx((_mi_loop(F, A) + _mi_loop(F, B)) / math.log(2), rel=1e-9)
    assert r["SSIM"] == r["SSIM_255"]


def test_import_is_light():
    code = (
        "import sys, tokfuse_rt.metrics; "
        "assert 'scipy' not in sys.modules, 'scipy imported eagerly'; "
        "assert 'matplotlib' not in sys.modules"
    )
    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root)


def test_thermal_kept_by_hand():
    """Two hot pixels (A − B = 0.5 and 0.3 > margin 0.25), one not (0.1): kept = mean(F − B) / mean(A − B)."""
    thermal_kept = M.thermal_kept
    A = np.array([[0.9, 0.5, 0.3]])
    B = np.array([[0.4, 0.2, 0.2]])
    assert thermal_kept(A, A, B, 0.25) == (pytest.approx(1.0), 2)  # infrared itself: all kept
    assert thermal_kept(B, A, B, 0.25) == (0.0, 2)  # visible alone: none
    assert thermal_kept((A + B) / 2, A, B, 0.25)[0] == pytest.approx(0.5)  # plain average: half
    F = np.array([[0.6, 0.5, 0.0]])  # keeps 0.2 of 0.5 and 0.3 of 0.3
    assert thermal_kept(F, A, B, 0.25) == (pytest.approx(0.5 / 0.8), 2)
    k, n = thermal_kept(F, A, B, 0.6)  # no pixel is that much hotter
    assert n == 0 and np.isnan(k)
