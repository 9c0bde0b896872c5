"""Calibration accuracy on the development sets (train/ and val/ only; docs/rigs.md), for tuning.

    python scripts/rig_dev.py --data ../shared/data --per-set 8 --out /tmp/dev.json

The same measurement as ``scripts/rig_accuracy.py`` (one rig per pair, ``rig_synth.draw_rig`` seeded
by the pair's index, the infrared rendered through it, ``calibrate_images`` on that one pair; error:
mean distance over a 16x16 grid of infrared pixels), on val/TNO, val/RoadScene, train/M3FD, train/MSRS
and train/LLVIP (the first ``--per-set`` pairs of each in file order), plus the identity check
(registered equal-size pair in, error against the identity). ``--drift`` also refines from the true
matrix (``calibrate._refine``) and reports how far the refinement moves away from it.
``--pseudo SIGMA`` replaces the registered infrared image by one made from the visible luminance
(Gaussian blur SIGMA px, inverted, gamma 1.5, noise 0.02): a cross-modal-like pair whose
registration is exact, so the error is the estimator's alone.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SETS = (("val", "TNO"), ("val", "RoadScene"), ("train", "M3FD"), ("train", "MSRS"), ("train", "LLVIP"))
WRONG_PX = 5.0


def _pairs(data: Path, per_set: int, sets=SETS):
    for split, name in sets:
        from tokfuse_rt.pairing import pair_set

        for pair in pair_set(data / split / name).pairs[:per_set]:  # in infrared file-name order
            yield name, pair.ir, pair.vis


def _refine(C, y_ir, y_vis, m0):
    """The estimator's refinement (coarse-to-fine ECC) from ``m0``."""
    return C._refine(y_ir, y_vis, m0, "homography")[1]


def _stats(xs):
    xs = [x for x in xs if x is not None]
    if not xs:
        return {"n": 0}
    return {"n": len(xs), "median": float(np.median(xs)), "p90": float(np.percentile(xs, 90))}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--per-set", type=int, default=8)
    ap.add_argument("--sets", default=None, help="comma-separated set names (default: all five)")
    ap.add_argument("--no-identity", action="store_true")
    ap.add_argument("--drift", action="store_true", help="also refine from the true matrix")
    ap.add_argument(
        "--consistency",
        action="store_true",
        help="also compare the rig's estimate with the registered pair's own estimate composed with the truth",
    )
    ap.add_argument("--pseudo", type=float, default=None, help="infrared made from the visible image (blur sigma)")
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)

    import cv2

    cv2.setNumThreads(1)
    from tokfuse_rt import calibrate as C
    from tokfuse_rt.imageio import load_image, luminance
    from tokfuse_rt.rig import Rig
    from tokfuse_rt.rig_synth import draw_rig, frame_error, render_ir

    sets = [s for s in SETS if a.sets is None or s[1] in a.sets.split(",")]
    rows = []
    for i, (name, ir_p, vis_p) in enumerate(_pairs(Path(a.data), a.per_set, sets)):
        y_ir, y_vis = luminance(load_image(ir_p, "ir")), luminance(load_image(vis_p, "vis"))
        truth = draw_rig((y_vis.shape[1], y_vis.shape[0]), np.random.default_rng(1000 + i))
        if a.pseudo is not None:
            f = cv2.GaussianBlur(y_vis, (0, 0), a.pseudo) if a.pseudo > 0 else y_vis
            noise = np.random.default_rng(i).normal(0, 0.02, f.shape)
            y_ir = np.clip((1 - f) ** 1.5 + noise, 0, 1).astype(np.float32)
        cam = render_ir(y_ir, truth)
        row = {"set": name, "pair": ir_p.name}
        t0 = time.perf_counter()
        try:
            cal = C.calibrate_images([(cam, y_vis)])
            row.update(ok=True, px=float(frame_error(cal.rig.matrix, truth).mean()), conf=cal.confidence)
            est = cal.rig.matrix
        except C.CalibrationError as ex:
            row.update(ok=False, reason=str(ex)[:60])
        row["s"] = time.perf_counter() - t0
        if a.consistency:
            # the same estimator on the registered pair (refined from the identity): d maps the registered
            # infrared onto the visible image as the objective sees it; the rig's estimate should be d @ truth
            d = _refine(C, y_ir, y_vis, np.eye(3))
            row["reg_px"] = float(frame_error(d, Rig.identity(truth.vis_size)).mean())
            if row["ok"]:
                row["consist_px"] = float(frame_error(est, Rig(d @ truth.matrix, truth.ir_size, truth.vis_size)).mean())
        if a.drift:
            m = _refine(C, cam, y_vis, truth.matrix)
            row["drift_px"] = float(frame_error(m, truth).mean())
        if not a.no_identity:
            t0 = time.perf_counter()
            try:
                cal = C.calibrate_images([(y_ir, y_vis)])
                row["id_px"] = float(frame_error(cal.rig.matrix, Rig.identity(truth.vis_size)).mean())
            except C.CalibrationError:
                row["id_px"] = None
            row["id_s"] = time.perf_counter() - t0
        rows.append(row)
        print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}), flush=True)

    ok = [r for r in rows if r["ok"]]
    summary = {
        "rigs": len(rows),
        "all": _stats([r["px"] for r in ok]),
        "refused": 1 - len(ok) / len(rows),
        "wrong": float(np.mean([r["ok"] and r["px"] > WRONG_PX for r in rows])),
        "per_set": {
            s: {
                **_stats([r["px"] for r in ok if r["set"] == s]),
                "refused": float(np.mean([not r["ok"] for r in rows if r["set"] == s])),
            }
            for _, s in sets
        },
        "seconds_median": float(np.median([r["s"] for r in rows])),
        "seconds_max": float(np.max([r["s"] for r in rows])),
    }
    if not a.no_identity:
        summary["identity"] = _stats([r["id_px"] for r in rows])
        summary["identity_refused"] = sum(r["id_px"] is None for r in rows)
    if a.consistency:
        summary["registered_pair_vs_identity"] = _stats([r["reg_px"] for r in rows])
        summary["consistency"] = _stats([r.get("consist_px") for r in rows])
    if a.drift:
        summary["drift"] = _stats([r["drift_px"] for r in rows])
    print(json.dumps(summary, indent=1))
    if a.out:
        Path(a.out).write_text(json.dumps({"summary": summary, "rigs": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
