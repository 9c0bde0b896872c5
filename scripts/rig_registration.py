"""How well are the "registered" infrared/visible pairs registered? (docs/rigs.md, "Accuracy")

    python scripts/rig_registration.py --data ../shared/data --sets val/RoadScene,train/M3FD --per-set 6

The synthetic rigs of ``scripts/rig_accuracy.py`` render the infrared image from a registered pair
through a known matrix, so any misregistration of the pair itself is part of the measured error. This
script measures the registered pairs (equal sizes) with several cross-modal objectives that share no
code with the estimator's ECC step, to tell a misregistered pair (the objectives agree on the same
non-identity mapping) from a bias of one objective (they disagree):

- ``structure``: normalised cross-correlation of ``calibrate.structure`` images;
- ``selfsim``: sum of squared differences of :func:`self_similarity` descriptors (MIND-like);
- ``orientation``: mean product of doubled-angle gradient orientation fields (normalised gradient
  field, polarity-free);
- ``mi``: mutual information of the intensities (32 bins; whole frame only).

Per objective: the best whole-frame translation (integer shifts up to ``--radius`` px, refined to
sub-pixel by a parabola through the peak; "edge" when the peak is on the search border), and the
best shift in each tile of a 5x5 grid, to which a homography is fitted (RANSAC, 1.5 px); that
homography is compared with the identity and with the other objectives' (mean distance over a 16x16
grid of the frame, like ``rig_synth.frame_error``). ``ecc``: the estimator's own refinement from the
identity (``calibrate._refine``), for comparison.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _peak(score: np.ndarray, r: int):
    iy, ix = np.unravel_index(int(np.argmax(score)), score.shape)
    if not (0 < iy < 2 * r and 0 < ix < 2 * r):
        return None

    def par(a, b, c):
        den = a - 2 * b + c
        return 0.0 if den >= 0 else 0.5 * (a - c) / den

    return (
        ix - r + par(score[iy, ix - 1], score[iy, ix], score[iy, ix + 1]),
        iy - r + par(score[iy - 1, ix], score[iy, ix], score[iy + 1, ix]),
    )


def _ncc(a, b):
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / (np.sqrt((a * a).sum() * (b * b).sum()) + 1e-12))


def _mi(a, b, bins=32):
    h, _, _ = np.histogram2d(a.ravel(), b.ravel(), bins=bins, range=[[0, 1], [0, 1]])
    p = h / h.sum()
    q = p.sum(1, keepdims=True) @ p.sum(0, keepdims=True)
    nz = p > 0
    return float((p[nz] * np.log(p[nz] / q[nz])).sum())


def self_similarity(y: np.ndarray) -> list:
    """Luminance (H, W) float32 -> 4 channels (H, W) float32 in [0, 1]: for the offsets (2, 0), (0, 2),
    (2, 2), (2, -2), exp(-D / V), D the Gaussian-weighted patch difference between the pixel's
    neighbourhood and the offset one, V the mean of D over the four offsets (local contrast divides
    out), each pixel scaled so that its largest channel is 1. Depends on where structure is, not on its
    intensity or polarity, so infrared and visible images of a scene have similar descriptors."""
    import cv2

    y = cv2.GaussianBlur(np.ascontiguousarray(y, np.float32), (0, 0), 0.5)
    h, w = y.shape
    ds = []
    for dx, dy in ((2, 0), (0, 2), (2, 2), (2, -2)):
        shift = np.float32([[1, 0, dx], [0, 1, dy]])
        moved = cv2.warpAffine(y, shift, (w, h), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_REPLICATE)
        ds.append(cv2.GaussianBlur((y - moved) ** 2, (0, 0), 0.8))
    d = np.stack(ds)
    v = d.mean(0)
    v = np.maximum(v, np.float32(1e-3 * float(v.mean()) + 1e-8))
    e = np.exp(-d / v)
    e /= e.max(0, keepdims=True) + np.float32(1e-8)
    return list(e)


def _descriptors(y_ir, y_vis):
    import cv2

    from tokfuse_rt import calibrate as C

    def orient(y):
        y = cv2.GaussianBlur(y, (0, 0), 1.0)
        gx = cv2.Sobel(y, cv2.CV_32F, 1, 0, ksize=3)
        gy = cv2.Sobel(y, cv2.CV_32F, 0, 1, ksize=3)
        n = gx * gx + gy * gy + (0.05 * float(np.hypot(gx, gy).mean())) ** 2
        return np.stack([(gx * gx - gy * gy) / n, 2 * gx * gy / n])

    return {
        "structure": (C.structure(y_ir, 1.0)[None], C.structure(y_vis, 1.0)[None], _ncc),
        "selfsim": (
            np.stack(self_similarity(y_ir)),
            np.stack(self_similarity(y_vis)),
            lambda a, b: -np.mean((a - b) ** 2),
        ),
        "orientation": (orient(y_ir), orient(y_vis), lambda a, b: float(np.mean((a * b).sum(0)))),
        "mi": (np.clip(y_ir, 0, 1)[None, ::2, ::2], np.clip(y_vis, 0, 1)[None, ::2, ::2], _mi),
    }


def _search(a, c, f, box, r, step=1):
    """Best shift (dx, dy) (infrared -> visible, px of the full frame) of ``a`` against ``c`` over ``box``."""
    x0, y0, x1, y1 = box
    ref = c[:, y0:y1, x0:x1]
    score = np.array(
        [[f(a[:, y0 - dy : y1 - dy, x0 - dx : x1 - dx], ref) for dx in range(-r, r + 1)] for dy in range(-r, r + 1)]
    )
    pk = _peak(score, r)
    return None if pk is None else (pk[0] * step, pk[1] * step)


def measure(y_ir, y_vis, r=6, tiles=5):
    import cv2

    from tokfuse_rt import calibrate as C
    from tokfuse_rt.rig import Rig, apply
    from tokfuse_rt.rig_synth import frame_error

    h, w = y_ir.shape
    size = (w, h)
    out, mats = {}, {}
    for name, (a, c, f) in _descriptors(y_ir, y_vis).items():
        step = 2 if name == "mi" else 1
        rr = r // step
        hh, ww = a.shape[1:]
        b = rr + 2
        sh = _search(a, c, f, (b, b, ww - b, hh - b), rr, step)
        row = {"translation": None if sh is None else [round(sh[0], 2), round(sh[1], 2)]}
        if name != "mi":
            src, dst = [], []
            for ty in range(tiles):
                for tx in range(tiles):
                    box = (
                        b + tx * (ww - 2 * b) // tiles,
                        b + ty * (hh - 2 * b) // tiles,
                        b + (tx + 1) * (ww - 2 * b) // tiles,
                        b + (ty + 1) * (hh - 2 * b) // tiles,
                    )
                    s = _search(a, c, f, box, rr)
                    if s is not None:
                        cx, cy = (box[0] + box[2] - 1) / 2, (box[1] + box[3] - 1) / 2
                        src.append((cx, cy))
                        dst.append((cx + s[0], cy + s[1]))
            if len(src) >= 8:
                m, inl = cv2.findHomography(np.array(src), np.array(dst), cv2.RANSAC, 1.5)
                if m is not None:
                    mats[name] = m
                    res = np.linalg.norm(apply(m, np.array(src)) - np.array(dst), axis=1)
                    row.update(
                        tiles=len(src),
                        inliers=int(inl.sum()),
                        tile_residual_median_px=round(float(np.median(res)), 2),
                        homography_vs_identity_px=round(float(frame_error(m, Rig.identity(size)).mean()), 2),
                    )
        out[name] = row
    _, m = C._refine(y_ir, y_vis, np.eye(3), "homography")
    mats["ecc"] = m
    out["ecc"] = {"homography_vs_identity_px": round(float(frame_error(m, Rig.identity(size)).mean()), 2)}
    ks = list(mats)
    out["agreement_px"] = {
        f"{ks[i]}/{ks[j]}": round(float(frame_error(mats[ks[i]], Rig(mats[ks[j]], size, size)).mean()), 2)
        for i in range(len(ks))
        for j in range(i + 1, len(ks))
    }
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--sets", default="val/TNO,val/RoadScene,train/M3FD,train/MSRS,train/LLVIP")
    ap.add_argument("--per-set", type=int, default=6)
    ap.add_argument("--radius", type=int, default=6)
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)

    import cv2

    cv2.setNumThreads(1)
    from tokfuse_rt.imageio import load_image, luminance
    from tokfuse_rt.pairing import pair_set

    rows = []
    for s in a.sets.split(","):
        for pair in pair_set(Path(a.data) / s).pairs[: a.per_set]:  # in infrared file-name order
            p, v = pair.ir, pair.vis
            y_ir, y_vis = luminance(load_image(p, "ir")), luminance(load_image(v, "vis"))
            if y_ir.shape != y_vis.shape:
                continue
            row = {"set": s, "pair": p.name, **measure(y_ir, y_vis, a.radius)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    summary = {}
    for s in a.sets.split(","):
        rs = [r for r in rows if r["set"] == s]
        summary[s] = {
            k: float(np.median([r[k]["homography_vs_identity_px"] for r in rs if "homography_vs_identity_px" in r[k]]))
            for k in ("structure", "selfsim", "orientation", "ecc")
            if any("homography_vs_identity_px" in r[k] for r in rs)
        }
        ag = [v for r in rs for v in r["agreement_px"].values()]
        summary[s]["agreement_median_px"] = float(np.median(ag)) if ag else None
    print(json.dumps(summary, indent=1))
    if a.out:
        Path(a.out).write_text(json.dumps({"summary": summary, "pairs": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
