"""Accuracy of ``tokfuse calibrate`` on synthetic rigs drawn on registered pairs (docs/rigs.md).

    python scripts/rig_accuracy.py --data ../shared/data --per-set 12 --fuse 6 --out docs/rig_accuracy.json

For each pair (the first ``--per-set`` of test/TNO, test/RoadScene, test/MSRS and train/M3FD, in file
order), one rig is drawn (``rig_synth.draw_rig``, seeded by the pair's index) and the infrared image is
rendered through it; ``calibrate_images`` (one pair per rig, homography) estimates the rig.
Reported: the reprojection error over the infrared frame (mean distance on the visible grid of a
16x16 grid of infrared pixels) as median and 90th percentile over the rigs; the failure rate
(calibrate refused: exit 1) and the wrong rate (accepted with an error over 5 px); calibrate's time
per pair; the identity check (registered pairs of equal size: error of the estimate against the
identity); and, for ``--fuse`` pairs, the PSNR of fusion after calibrate + align against fusion with
the true rig, inside the infrared field of view (default model, 2 threads).
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

SETS = (("test", "TNO"), ("test", "RoadScene"), ("test", "MSRS"), ("train", "M3FD"))
WRONG_PX = 5.0


def _pairs(data: Path, per_set: int):
    for split, name in SETS:
        from tokfuse_rt.pairing import pair_set

        for pair in pair_set(data / split / name).pairs[:per_set]:  # in infrared file-name order
            yield name, pair.ir, pair.vis


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--per-set", type=int, default=12)
    ap.add_argument("--fuse", type=int, default=6, help="pairs also fused (true rig vs estimate)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None, help="JSON of every rig and the summary")
    a = ap.parse_args(argv)

    import cv2

    cv2.setNumThreads(a.threads)
    from tokfuse_rt.calibrate import CalibrationError, calibrate_images
    from tokfuse_rt.imageio import load_image, luminance
    from tokfuse_rt.rig import Rig
    from tokfuse_rt.rig_synth import draw_rig, frame_error, render_ir

    rows, ident = [], []
    for i, (name, ir_p, vis_p) in enumerate(_pairs(Path(a.data), a.per_set)):
        ir, vis = load_image(ir_p, "ir"), load_image(vis_p, "vis")
        truth = draw_rig((vis.shape[1], vis.shape[0]), np.random.default_rng(1000 + i))
        cam = render_ir(luminance(ir), truth)
        t0 = time.perf_counter()
        row = {"set": name, "pair": ir_p.name, "vis": list(truth.vis_size), "ir": list(truth.ir_size)}
        try:
            cal = calibrate_images([(cam, luminance(vis))])
            e = frame_error(cal.rig.matrix, truth)
            row.update(ok=True, mean_px=float(e.mean()), max_px=float(e.max()), confidence=cal.confidence)
        except CalibrationError as ex:
            row.update(ok=False, reason=str(ex)[:120])
        row["seconds"] = time.perf_counter() - t0
        rows.append(row)
        try:  # registered pair of equal size: the identity
            cal = calibrate_images([(luminance(ir), luminance(vis))])
            ident.append(float(frame_error(cal.rig.matrix, Rig.identity(truth.vis_size)).mean()))
        except CalibrationError:
            ident.append(None)
        print(json.dumps(row), flush=True)

    psnrs = []
    if a.fuse:
        from tokfuse_rt import Engine

        with Engine(threads=a.threads) as eng:
            for i, (name, ir_p, vis_p) in enumerate(_pairs(Path(a.data), a.per_set)):
                if len(psnrs) >= a.fuse or not rows[i].get("ok"):
                    continue
                ir, vis = load_image(ir_p, "ir"), load_image(vis_p, "vis")
                truth = draw_rig((vis.shape[1], vis.shape[0]), np.random.default_rng(1000 + i))
                cam = render_ir(luminance(ir), truth)
                est = calibrate_images([(cam, luminance(vis))]).rig
                f_true = eng.fuse(cam, vis, align=truth).astype(np.float64)
                f_est = eng.fuse(cam, vis, align=est).astype(np.float64)
                core = truth.maps()[1] == 1
                mse = float(np.mean((f_true[core] - f_est[core]) ** 2))
                psnrs.append({"set": name, "pair": ir_p.name, "psnr_db": 10 * np.log10(255**2 / max(mse, 1e-10))})
                print(json.dumps(psnrs[-1]), flush=True)

    ok = [r for r in rows if r["ok"]]
    errs = np.array([r["mean_px"] for r in ok])
    summary = {
        "rigs": len(rows),
        "median_px": float(np.median(errs)) if len(errs) else None,
        "p90_px": float(np.percentile(errs, 90)) if len(errs) else None,
        "median_px_all_with_failures_as_inf": float(np.median([r.get("mean_px", np.inf) for r in rows])),
        "failure_rate": 1 - len(ok) / len(rows),
        "wrong_rate": float(np.mean([r["ok"] and r["mean_px"] > WRONG_PX for r in rows])),
        "per_set_median_px": {
            s: float(np.median([r["mean_px"] for r in ok if r["set"] == s] or [np.nan])) for _, s in SETS
        },
        "per_set_failure_rate": {s: float(np.mean([not r["ok"] for r in rows if r["set"] == s])) for _, s in SETS},
        "seconds_per_pair_median": float(np.median([r["seconds"] for r in rows])),
        "seconds_per_pair_max": float(np.max([r["seconds"] for r in rows])),
        "identity_median_px": float(np.median([x for x in ident if x is not None])),
        "identity_p90_px": float(np.percentile([x for x in ident if x is not None], 90)),
        "identity_refused": sum(x is None for x in ident),
        "fusion_psnr_db_median": float(np.median([p["psnr_db"] for p in psnrs])) if psnrs else None,
        "fusion_psnr_db_min": float(np.min([p["psnr_db"] for p in psnrs])) if psnrs else None,
    }
    print(json.dumps(summary, indent=1))
    if a.out:
        Path(a.out).write_text(
            json.dumps({"summary": summary, "rigs": rows, "identity_px": ident, "fusion": psnrs}, indent=1) + "\n"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
