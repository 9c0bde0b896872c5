"""Stage II recipe search on a held-out split of shared/data/train (never test/): how the default
recipe (gain, alpha of the intensity target) was chosen; results in docs/recipe_search.md.

Split: every 9th M3FD training pair (index % 9 == 4, 30 pairs) is held out for scoring; stage II
trains on the other 276 pairs for ``--steps`` steps, starting from the bundled model's tokenizer
(stage I output; frozen in stage II) and a fresh seed-0 fusion part.  Scores are the 8 CDDFuse-
convention metrics on luminance, averaged over the 30 held-out pairs.

    python scripts/recipe_search.py --name g15a04 --gain 1.5 --alpha 0.4 [--steps 1000] [--threads 1]
    python scripts/recipe_search.py --name base --baselines     # max, mean and the bundled model
    python scripts/recipe_search.py --name fig --figure docs/x.png --compare v2s07 v2s1   # val montage

Every run also reports ``kept``: the share of the thermal excess (ir − vis on pixels where ir is
brighter than vis by > 0.25) the fused image keeps, averaged over the held-out pairs that have such
pixels (a plain average keeps 0.5, copying the visible image keeps 0).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
M8 = ["EN", "SD", "SF", "MI", "SCD", "VIF", "Qabf", "SSIM"]


def split(train_root: Path, work: Path):
    """Symlink farm: work/trainsplit (276 M3FD + LLVIP + MSRS pairs) and work/val (30 M3FD pairs)."""
    from tokfuse_rt.pairing import pair_set

    ts, val = work / "trainsplit", work / "val"
    for i, p in enumerate(pair_set(train_root / "M3FD")):
        dst = val if i % 9 == 4 else ts / "M3FD"
        for m, src in (("ir", p.ir), ("vi", p.vis)):
            (dst / m).mkdir(parents=True, exist_ok=True)
            if not (dst / m / src.name).exists():
                os.symlink(src, dst / m / src.name)
    for s in ("LLVIP", "MSRS"):
        if not (ts / s).exists():
            os.symlink(train_root / s, ts / s)
    return ts, val


def score(fuse, pairs):
    from tokfuse_rt.metrics import evaluate, thermal_kept

    rows, kept = [], []
    for a, b in pairs:
        f = fuse(a, b)
        A, B, F = (np.clip(np.round(x * 255), 0, 255).astype(np.uint8) for x in (a, b, f))
        rows.append(evaluate(F, A, B, metrics=M8))
        k, n_hot = thermal_kept(f, a, b, margin=0.25)
        if n_hot >= 500:
            kept.append(k)
    return {m: float(np.mean([r[m] for r in rows])) for m in M8} | {"kept": float(np.mean(kept))}


def figure(path, pairs, fusers, every=6, n=4, size=(256, 192)):
    """Rows: every ``every``-th held-out pair (n of them); columns: ir, vis, then each fuser."""
    from PIL import Image

    rows = []
    for a, b in pairs[::every][:n]:
        outs = [a, b] + [f(a, b) for f in fusers]
        rows.append(
            np.concatenate(
                [
                    np.asarray(Image.fromarray(np.clip(np.round(o * 255), 0, 255).astype(np.uint8)).resize(size))
                    for o in outs
                ],
                axis=1,
            )
        )
    Image.fromarray(np.concatenate(rows, axis=0)).save(path)


def model_fuse(model):
    import torch

    def f(a, b):
        with torch.no_grad():

            def t(x):
                return torch.from_numpy(x)[None, None].float()

            return model(t(a), t(b))[0][0, 0].numpy()

    return f


def main(argv=None) -> int:
    import torch
    from workspace import find_shared_data

    from tokfuse_rt.engine import DEFAULT_MODEL
    from tokfuse_rt.imageio import load_image, luminance
    from tokfuse_rt.model import TokFuse, TokFuseConfig, save_checkpoint
    from tokfuse_rt.model.checkpoint import load_checkpoint
    from tokfuse_rt.pairing import pair_set
    from tokfuse_rt.train.data import PairBank
    from tokfuse_rt.train.loop import TrainArgs, stage2

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--name", required=True)
    ap.add_argument("--work", default="runs/recipe_search")
    ap.add_argument("--data", default=None, help="shared/data (default: found beside the repo)")
    ap.add_argument("--tokenizer", default=str(DEFAULT_MODEL), help="checkpoint whose tokenizer is reused")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--baselines", action="store_true")
    ap.add_argument(
        "--detail-channels",
        type=int,
        default=None,
        help="fusion-part width override (default: the tokenizer checkpoint's)",
    )
    ap.add_argument("--head-channels", type=int, default=None)
    ap.add_argument(
        "--figure",
        default=None,
        help="write a montage of the held-out pairs fused by the bundled model and each --compare run, then stop",
    )
    ap.add_argument("--compare", nargs="*", default=[], help="names of earlier runs (their .safetensors in --work)")
    d = TrainArgs("", "")
    for f in ("w_int", "w_grad", "w_ssim", "w_base", "w_vif", "w_scd", "lr2", "gain", "alpha"):
        ap.add_argument("--" + f, type=float, default=getattr(d, f))
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    data = Path(a.data) if a.data else find_shared_data("train")
    work = Path(a.work)
    ts, val = split(data / "train", work)
    pairs = [(luminance(load_image(p.ir)), luminance(load_image(p.vis))) for p in pair_set(val)]
    src, _ = load_checkpoint(a.tokenizer)
    res = {}
    if a.figure:
        runs = [src] + [load_checkpoint(str(work / f"{n}.safetensors"))[0] for n in a.compare]
        figure(a.figure, pairs, [model_fuse(m.eval()) for m in runs])
        print(f"wrote {a.figure}: ir, vis, bundled, " + ", ".join(a.compare))
        return 0
    if a.baselines:
        res["max"] = score(np.maximum, pairs)
        res["mean"] = score(lambda x, y: 0.5 * (x + y), pairs)
        res["bundled"] = score(model_fuse(src), pairs)
    else:
        torch.manual_seed(0)
        cfg = TokFuseConfig.from_json(src.cfg.to_json())
        widths = {k: v for k, v in (("detail_channels", a.detail_channels), ("head_channels", a.head_channels)) if v}
        model = TokFuse(dataclasses.replace(cfg, **widths))
        model.load_state_dict(
            {k: v for k, v in src.state_dict().items() if k.startswith(("encoder.", "decoder.", "codebook"))},
            strict=False,
        )
        args = TrainArgs(
            data="",
            out="",
            steps2=a.steps,
            log_every=250,
            **{
                f: getattr(a, f)
                for f in ("w_int", "w_grad", "w_ssim", "w_base", "w_vif", "w_scd", "lr2", "gain", "alpha")
            },
        )
        t0 = time.time()
        with open(work / f"{a.name}.log", "w") as logf:
            stage2(model, PairBank(ts), args, torch.Generator().manual_seed(0), {}, logf=logf)
        model.eval()
        save_checkpoint(model, work / f"{a.name}.safetensors")
        res[a.name] = score(model_fuse(model), pairs) | {"train_s": time.time() - t0}
    for k, v in res.items():
        print(k, " ".join(f"{m} {v[m]:.3f}" for m in M8 + ["kept"]), flush=True)
    (work / f"{a.name}.json").write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
