"""Tokenizer reconstruction quality on test sets (README ablation).

Each source image's luminance is resized to the token pathway's S×S (as the model sees it),
tokenized (K ids from the codebook) and decoded by π; PSNR (dB, peak 1) and SSIM (the metrics'
scikit-image-style SSIM, 7×7 uniform window, data range 1) of the reconstruction against the
S×S input are averaged per modality.

    python scripts/tokenizer_recon.py [--ckpt CKPT] [--sets val/TNO test/TNO ...] [--json out.json]

A set without a ``val/`` or ``test/`` prefix is a test set.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def recon_scores(model, images) -> dict:
    import torch

    from tokfuse_rt.metrics.ssim import ssim_pair

    psnr, ssim = [], []
    with torch.no_grad():
        for y in images:
            t = model.to_token_input(torch.from_numpy(y)[None, None].float())
            r = model.reconstruct(t).clamp(0, 1)
            x, z = t[0, 0].double().numpy(), r[0, 0].double().numpy()
            mse = float(np.mean((x - z) ** 2))
            psnr.append(10 * np.log10(1.0 / max(mse, 1e-12)))
            ssim.append(ssim_pair(z, x, data_range=1.0))
    return {"n": len(psnr), "PSNR": float(np.mean(psnr)), "SSIM": float(np.mean(ssim))}


def main(argv=None) -> int:
    from workspace import find_shared_data

    from tokfuse_rt.engine import DEFAULT_MODEL
    from tokfuse_rt.imageio import load_image, luminance
    from tokfuse_rt.model.checkpoint import load_checkpoint
    from tokfuse_rt.pairing import find_set_dirs, image_files

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", default=str(DEFAULT_MODEL))
    ap.add_argument("--data", default=None, help="shared/data folder (default: found beside the repo)")
    ap.add_argument("--sets", nargs="*", default=["val/TNO", "val/RoadScene", "test/TNO", "test/RoadScene"])
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    data = Path(a.data) if a.data else find_shared_data()
    if data is None:
        print("tokenizer_recon: error: shared/data not found (use --data)", file=sys.stderr)
        return 2
    model, _ = load_checkpoint(a.ckpt)
    out = {}
    print("| set | modality | images | PSNR (dB) | SSIM |\n|---|---|---:|---:|---:|")
    for s in a.sets:
        d = Path(data) / (s if "/" in s else f"test/{s}")
        ir_dir, vis_dir = find_set_dirs(d)
        mods = [(ir_dir, "ir"), (vis_dir, "vis")] if ir_dir.name == "ir" else [(ir_dir, "a"), (vis_dir, "b")]
        for sub, label in mods:
            imgs = [luminance(load_image(p)) for p in image_files(sub)]
            r = recon_scores(model, imgs)
            out[f"{s}/{label}"] = r
            print(f"| {s} | {label} | {r['n']} | {r['PSNR']:.2f} | {r['SSIM']:.3f} |", flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
