"""Token reuse on the real M3SVD clips: per-frame metric drift against recomputing every frame, time
spent in the token pathway, and temporal stability (BiSWE) of fused videos and their sources.

    python scripts/video_reuse.py --model model.onnx [--data ../shared/data/video/M3SVD]
                                  [--policies 'auto;interval=30,scene=off'] [--out docs/video_reuse.md]

Frames are decoded by PyAV (rgb24) and fused with ``Engine.stream`` (no codec in between); the
reference is ``reuse="off"`` (every frame = ``Engine.fuse``). For every policy and frame the metrics
MI, VIF, Qabf, SSIM (CDDFuse convention, luminance) are compared with the reference frame's:
drift = |m - m_ref| / |m_ref|. BiSWE is computed on RGB frames for the sources, the per-frame fused
video, each policy's fused video and the H.264 output of ``Engine.fuse_video`` (default CRF 18).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

METRICS = ("MI", "VIF", "Qabf", "SSIM")


def decode_rgb(path):
    import av

    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def run_clip(eng, seq_dir: Path, policies, tmp: Path, log, temporal_metric: bool = True):
    from tokfuse_rt.metrics import BiSWE, evaluate

    ir, vis = decode_rgb(seq_dir / "ir.mp4"), decode_rgb(seq_dir / "vis.mp4")
    n = min(len(ir), len(vis))
    ir, vis = ir[:n], vis[:n]
    fused, stats, secs = {}, {}, {}
    for pol in ("off",) + tuple(policies):
        t0 = time.perf_counter()
        s = eng.stream(zip(ir, vis), reuse=pol)
        fused[pol] = list(s)
        secs[pol] = time.perf_counter() - t0
        stats[pol] = s.stats()
    ref_m = [evaluate(f, a, b, metrics=METRICS) for f, a, b in zip(fused["off"], ir, vis)]
    drift = {}
    for pol in policies:
        per = {m: [] for m in METRICS}
        identical = 0
        for i, f in enumerate(fused[pol]):
            if np.array_equal(f, fused["off"][i]):
                identical += 1
                vals = ref_m[i]
            else:
                vals = evaluate(f, ir[i], vis[i], metrics=METRICS)
            for m in METRICS:
                per[m].append(abs(vals[m] - ref_m[i][m]) / max(abs(ref_m[i][m]), 1e-12))
        drift[pol] = {m: {"max_pct": 100 * max(v), "mean_pct": 100 * float(np.mean(v))} for m, v in per.items()}
        drift[pol]["identical_frames"] = identical
        drift[pol]["max_abs_diff"] = int(max(np.abs(a.astype(int) - b).max() for a, b in zip(fused[pol], fused["off"])))
    res = {
        "frames": n,
        "stats": stats,
        "seconds": secs,
        "drift": drift,
        "ref_metrics_mean": {m: float(np.mean([r[m] for r in ref_m])) for m in METRICS},
    }
    if not temporal_metric:
        return res
    log("  metrics done; BiSWE ...")
    out = tmp / f"{seq_dir.name}.mp4"
    rep = eng.fuse_video(seq_dir / "ir.mp4", seq_dir / "vis.mp4", out, progress=False)
    encoded = decode_rgb(out)[:n]
    bis = BiSWE(ir, vis)
    temporal = {"ir": None, "vis": None}
    temporal.update(bis.sources())
    temporal["fused, every frame"] = bis(fused["off"])
    for pol in policies:
        temporal[f"fused, reuse {pol}"] = bis(fused[pol])
    temporal["fused H.264 (fuse_video, reuse auto, CRF 18)"] = bis(encoded)
    res.update(biswe=temporal, fuse_video_fps=rep.fps)
    return res


def write_md(results, policies, model, path: Path):
    lines = [
        "# Token reuse on video: drift, time, temporal stability",
        "",
        f"Model: `{model}`. Clips: M3SVD (6 sequences, 640×480, 20 frames each), decoded by PyAV and fused "
        'with `Engine.stream` (no codec in between) unless said otherwise. Reference: `reuse="off"` '
        "(the token pathway on every frame, = `Engine.fuse`). Produced by `scripts/video_reuse.py`; "
        "timings on the shared 2-core VM are noisy.",
        "",
    ]
    lines += [
        "## Per-frame metric drift against recomputing every frame",
        "",
        "drift = |m − m_ref| / |m_ref| per frame (CDDFuse convention, luminance); max and mean over the "
        "20 frames of each clip.",
        "",
    ]
    head = (
        "| clip | policy | key frames | identical frames | max abs Δ (levels) | "
        + " | ".join(f"{m} max / mean %" for m in METRICS)
        + " |"
    )
    lines += [head, "| --- | --- | ---: | ---: | ---: | " + " | ".join("---:" for _ in METRICS) + " |"]
    worst = {p: {m: 0.0 for m in METRICS} for p in policies}
    for seq, r in results.items():
        for p in policies:
            d = r["drift"][p]
            lines.append(
                f"| {seq} | {p} | {r['stats'][p]['key_frames']} | {d['identical_frames']} | "
                f"{d['max_abs_diff']} | "
                + " | ".join(f"{d[m]['max_pct']:.3f} / {d[m]['mean_pct']:.4f}" for m in METRICS)
                + " |"
            )
            for m in METRICS:
                worst[p][m] = max(worst[p][m], d[m]["max_pct"])
    lines += [
        "",
        "Worst frame over all clips: "
        + "; ".join(f"`{p}`: " + ", ".join(f"{m} {worst[p][m]:.3f}%" for m in METRICS) for p in policies),
        "",
    ]
    lines += [
        "## Time in the token pathway",
        "",
        "Seconds over all frames of all clips (backend calls only; `off` runs the full graph per frame).",
        "",
        "| policy | key frames | tokens s | render s | full s | stream wall s |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for p in ("off",) + tuple(policies):
        kf = sum(r["stats"][p]["key_frames"] for r in results.values())
        tok = sum(r["stats"][p].get("seconds_tokens", 0) for r in results.values())
        ren = sum(r["stats"][p].get("seconds_render", 0) for r in results.values())
        full = sum(r["stats"][p].get("seconds_full", 0) for r in results.values())
        wall = sum(r["seconds"][p] for r in results.values())
        lines.append(f"| {p} | {kf} | {tok:.2f} | {ren:.2f} | {full:.2f} | {wall:.2f} |")
    if "biswe" not in next(iter(results.values())):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return
    lines += [
        "",
        "## Temporal stability (BiSWE, lower = more stable)",
        "",
        "VF-Bench's bi-directional self-warping error (`tokfuse_rt.metrics.biswe`, Farneback flow, 8-bit "
        "levels, occlusion masks from both sources), RGB frames.",
        "",
    ]
    cols = list(next(iter(results.values()))["biswe"])
    lines += ["| clip | " + " | ".join(cols) + " |", "| --- | " + " | ".join("---:" for _ in cols) + " |"]
    for seq, r in results.items():
        lines.append(f"| {seq} | " + " | ".join(f"{r['biswe'][c]:.3f}" for c in cols) + " |")
    lines.append(
        "| **mean** | "
        + " | ".join(f"**{np.mean([r['biswe'][c] for r in results.values()]):.3f}**" for c in cols)
        + " |"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="model file (default: the bundled checkpoint exported to ONNX)")
    p.add_argument("--data", default=None, help="M3SVD folder (default: shared/data/video/M3SVD beside the repo)")
    p.add_argument(
        "--policies",
        default="auto;interval=30,scene=off",
        help="reuse policies to compare with 'off', separated by ';' (default: auto;interval=30,scene=off)",
    )
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-biswe", action="store_true", help="skip the temporal metric (drift and time only)")
    p.add_argument("--out", default=str(ROOT / "docs" / "video_reuse.md"))
    a = p.parse_args(argv)
    from workspace import data_option

    a.data = str(data_option(p, a.data, "video/M3SVD", start=ROOT))
    from tokfuse_rt import Engine

    policies = tuple(x.strip() for x in a.policies.split(";") if x.strip())

    def log(m):
        print(m, file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = a.model
        if model is None:
            from export.to_onnx import export_onnx
            from tokfuse_rt.engine import DEFAULT_MODEL

            model = tmp / "default.onnx"
            export_onnx(DEFAULT_MODEL, model, verify=False)
        results = {}
        with Engine(model, threads=a.threads) as eng:
            for seq in sorted(d for d in Path(a.data).iterdir() if (d / "ir.mp4").is_file()):
                log(f"{seq.name} ...")
                results[seq.name] = run_clip(eng, seq, policies, tmp, log, not a.no_biswe)
        name = "bundled default (ONNX Runtime)" if a.model is None else Path(a.model).name
        out = Path(a.out)
        write_md(results, policies, name, out)
        out.with_suffix(".json").write_text(json.dumps(results, indent=1, default=float) + "\n")
    print(f"wrote {out} and {out.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
