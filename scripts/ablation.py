"""What the 1D tokens are worth: the STE and token-pathway ablation of a checkpoint.

    python scripts/ablation.py [--ckpt CKPT] [--sets val/TNO val/RoadScene test/TNO test/RoadScene]
        [--json out.json] > docs/quality/ablation.md

Rows, every one scored the same way (luminance of each pair through the PyTorch model, fused
luminance rounded to uint8, the 8 CDDFuse-convention rank metrics and the thermal share kept, as
scripts/val_rank.py):

- ``k = 0``, ``k = default``, ``k = K``: STE editing none, the default number, or all shared tokens;
- ``constant base``: the token pathway replaced by one constant base map, the mean of the model's
  base maps over the training pairs (so the 2D half sees the same typical tone and base layout
  for every image, none of this image's);
- ``no tokens, tone from pixels``: for a "tone" or "layers" model, the tone computed from the image itself by
  the training target's formula (tokfuse_rt.train.targets.target_tone) instead of predicted by the
  tokens -- how close the tokens come to the rule they were trained towards.

The mean rank is against the peers of the set (val/peer_scores.json for val sets,
docs/quality/peers_test.json for test sets, CDDFuse included where it has a row).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))


def main(argv=None) -> int:
    import torch
    from val_rank import as_tensor, load_set, mean_rank, peer_table, save_json, score
    from workspace import find_shared_data

    from tokfuse_rt.engine import DEFAULT_MODEL
    from tokfuse_rt.imageio import load_image, luminance
    from tokfuse_rt.metrics.rank import RANK_METRICS
    from tokfuse_rt.model.checkpoint import load_checkpoint
    from tokfuse_rt.train.data import find_pairs
    from tokfuse_rt.train.losses import target_tone

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", default=str(DEFAULT_MODEL))
    ap.add_argument("--sets", nargs="+", default=["val/TNO", "val/RoadScene", "test/TNO", "test/RoadScene"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    data = find_shared_data("test")
    model, meta = load_checkpoint(a.ckpt)
    cfg = model.cfg
    with torch.inference_mode():
        bases = [
            model.token_pathway(as_tensor(luminance(load_image(ir))), as_tensor(luminance(load_image(vis))))[0]
            for ir, vis in find_pairs(data / "train")
        ]
        const = torch.cat(bases).mean(dim=0, keepdim=True)

    def fuser(k=None, base=None):
        def f(a_, b_):
            with torch.inference_mode():
                ir, vis = as_tensor(a_), as_tensor(b_)
                bm = model.token_pathway(ir, vis, k)[0] if base is None else base(ir, vis)
                return model.render(ir, vis, model.upsample_base(bm, ir.shape[-2:]))[0, 0].numpy()

        return f

    def pixel_tone(ir, vis):
        bm = model.token_pathway(ir, vis)[0].clone()
        tone = target_tone(ir, vis, cfg_alpha, sd=cfg_sd, gain_max=cfg_gmax, layers=cfg_layers)
        bm[:, 1:] = tone[:, :, None, None]
        return bm

    rows = {
        "k = 0": fuser(0),
        f"k = {cfg.default_k} (default)": fuser(),
        f"k = {cfg.num_tokens} (= K)": fuser(cfg.num_tokens),
        "constant base": fuser(base=lambda ir, vis: const),
    }
    if cfg.head in ("tone", "layers"):
        recipe = meta.get("extra", {}).get("train", {}).get("recipe", {})
        cfg_alpha, cfg_sd, cfg_gmax = (
            recipe.get("alpha", 0.5),
            recipe.get("target_sd", 0.2157),
            recipe.get("gain_max", 2.0),
        )
        cfg_layers = (
            (cfg.base_radius, recipe.get("ir_detail", 0.3), recipe.get("vis_gain", 1.0))
            if cfg.head == "layers"
            else None
        )
        rows["no tokens, tone from pixels"] = fuser(base=pixel_tone)
    out = {}
    print(f"Ablation of `{Path(a.ckpt).name}` (scripts/ablation.py)\n")
    for s in a.sets:
        kind, name = s.split("/")
        peers = peer_table(data, name, None if kind == "val" else ROOT / "docs" / "quality" / "peers_test.json")
        pairs = load_set(data / kind / name)
        print(f"\n### {s} ({len(pairs)} pairs; mean rank among {len(peers)} peers + the row)\n")
        print("| variant | " + " | ".join(RANK_METRICS) + " | kept | mean rank |")
        print("| --- |" + " --- |" * (len(RANK_METRICS) + 2))
        # scored and ranked as val_rank's rows are; the report differs: a Markdown table row per variant
        # (for docs/quality) and JSON keyed set -> variant, where val_rank logs a line per model
        for label, f in rows.items():
            r = score(f, pairs)
            mr = mean_rank(r, peers)[0]
            out.setdefault(s, {})[label] = r | {"mean_rank": mr}
            print(
                f"| {label} | " + " | ".join(f"{r[m]:.4g}" for m in RANK_METRICS) + f" | {r['kept']:.3f} | {mr:.3f} |",
                flush=True,
            )
    save_json(a.json, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
