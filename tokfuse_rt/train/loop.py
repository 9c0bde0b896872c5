"""Two-stage training: I tokenizer reconstruction warm-up, II fusion with STE (tokenizer frozen)."""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ..model import TokFuse, TokFuseConfig, save_checkpoint
from ..model.quant import l2norm, quantize
from .data import PairBank, single_images
from .losses import fusion_losses, tone_losses


@dataclass
class TrainArgs:
    data: str
    out: str
    work: str = "runs/train"
    seed: int = 0
    steps1: int = 3000
    steps2: int = 3000
    batch1: int = 32
    batch2: int = 8
    crop2: int = 128
    lr1: float = 2e-3
    lr2: float = 2e-3
    w_int: float = 1.0  # stage II loss weights: intensity, gradient, structure (SSIM), base
    w_grad: float = 10.0
    w_ssim: float = 1.0
    w_base: float = 0.5
    w_vif: float = 0.0  # differentiable VIF and SCD terms (0 = not used; "blend" head)
    w_scd: float = 0.0
    w_tone: float = 1.0  # "tone" head: L1 of the predicted tone to the target's
    head: str = "layers"  # model head: "layers", "blend" or "tone" (TokFuseConfig.head)
    num_tokens: int = 64  # K
    image_size: int = 128  # S
    gain: float = 1.0  # contrast gain of the stage II intensity and gradient targets ("blend")
    alpha: float = 0.4  # share of the additive composite in the intensity target
    target_sd: float = 0.2157  # "tone": target contrast, std of the target in [0, 1] units (55/255)
    gain_max: float = 2.0  # "tone": largest contrast gain of the target
    grad_target: str = "target"  # "tone": gradient loss to the target's Sobel map, or "max" of the sources' × g
    vis_detail: float = 0.0  # "tone": weight of the visible 3×3 high-pass added to the target (targets.tone_rule)
    detail_where: str = "all"  # "tone": where that detail is added: "all" or "ir" (where ir > vis)
    base_radius: int = 3  # "layers": radius of the base layers' box filter (TokFuseConfig.base_radius)
    ir_detail: float = 0.7  # "layers": gain of the infrared detail layer in the target
    vis_gain: float = 1.2  # "layers": gain of the visible detail layer in the target
    random_k: bool = False  # stage II edits a random k in [0, 2·default_k] per step (else default_k)
    threads: int = 2
    log_every: int = 50
    save_every: int = 250
    resume: bool = False
    tokenizer: str = ""  # official TiTok tokenizer (folder or weights file): skip stage I, keep it frozen
    tokenizer_config: str = ""  # its config.json or preset (L-32, B-64, S-128) when not beside the weights


# Named recipes other than the defaults above (``--preset NAME``), each reproducible by name. The
# defaults of TrainArgs are the bundled model's recipe ("layers" head, K = 64, docs/model.md).
PRESETS: dict[str, dict] = {
    "blend": {
        "about": "the previous bundled model: the blend head, K = 32 (per-pixel blend of the sources plus a "
        "residual; keeps less visible texture and fewer thermal targets)",
        "head": "blend",
        "num_tokens": 32,
        "steps1": 2000,
        "steps2": 2500,
        "alpha": 0.0,
        "random_k": True,
    },
    "tone": {
        "about": "the tone head without detail layers (first on val by mean rank, loses visible texture)",
        "head": "tone",
        "num_tokens": 64,
        "steps1": 3000,
        "steps2": 3000,
        "alpha": 0.5,
        "random_k": False,
        "vis_detail": 0.0,
    },
}


def _log(msg: str, fh=None):
    print(msg, flush=True)
    if fh:
        fh.write(msg + "\n")
        fh.flush()


def tokenizer_step(model: TokFuse, y: torch.Tensor, beta: float = 0.25):
    """Reconstruction + VQ losses (cosine codebook/commitment), straight-through estimator."""
    cb = model.codebook_n()
    z = l2norm(model.encoder(y))
    ids, q = quantize(z.detach(), cb.detach())
    q = cb[ids]  # gradient to the codebook
    l_code = F.mse_loss(q, z.detach())
    l_commit = F.mse_loss(z, q.detach())
    zq = z + (q - z).detach()
    rec = model.decoder(zq)
    l_rec = F.l1_loss(rec, y) + F.mse_loss(rec, y)
    return l_rec + l_code + beta * l_commit, {"rec": l_rec.item(), "code": l_code.item()}, z.detach(), ids


def tokenizer_modules(model: TokFuse) -> list:
    """The modules of the token pathway's tokenizer (frozen in stage II)."""
    if model.cfg.tokenizer == "titok":
        return [model.tokenizer]
    return [model.encoder, model.decoder]


def titok_model(path, config=None, cfg: TokFuseConfig | None = None):
    """A TokFuse model on the official TiTok tokenizer at ``path`` (weights copied in, frozen); its
    fusion part from ``cfg`` (default TokFuseConfig). Returns (model, provenance dict)."""
    import dataclasses

    from ..model.config import tokfuse_config
    from ..model.titok import TOKENIZER_FIELDS, load_titok, state_digest

    tok = load_titok(path, config)
    base = cfg or TokFuseConfig()
    fusion = {k: v for k, v in dataclasses.asdict(base).items() if k not in TOKENIZER_FIELDS}
    fusion["default_k"] = min(fusion["default_k"], tok.cfg.num_latent_tokens)
    model = TokFuse(tokfuse_config(tok.cfg, **fusion))
    model.tokenizer.load_state_dict(tok.state_dict())
    model.tokenizer.requires_grad_(False)
    info = {
        "kind": "titok",
        "source": Path(path).name,
        "sha256": state_digest(tok),
        "params": sum(p.numel() for p in tok.parameters()),
    }
    return model, info


def _restart_dead_codes(model: TokFuse, usage: torch.Tensor, recent_z: torch.Tensor, gen: torch.Generator) -> int:
    dead = (usage == 0).nonzero().flatten()
    if len(dead) == 0 or len(recent_z) == 0:
        return 0
    pick = torch.randint(len(recent_z), (len(dead),), generator=gen)
    with torch.no_grad():
        model.codebook[dead] = l2norm(recent_z[pick] + 0.01 * torch.randn(len(dead), recent_z.shape[1], generator=gen))
    return len(dead)


def _fast_forward(sched, steps: int) -> None:
    """Advance a fresh LR schedule to ``steps`` on resume (no optimizer step in between: intended)."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler")
        for _ in range(steps):
            sched.step()


def _save_state(path: Path, model, opt, stage: int, step: int, gen: torch.Generator, log: dict):
    """Tensors, numbers and strings only (the log and config as JSON), so :func:`_load_state` can read it
    with ``weights_only=True``; written through an exclusive temporary, never through a planted link."""
    from ..outputs import atomic_write

    state = {
        "model": model.state_dict(),
        "opt": opt.state_dict(),
        "stage": int(stage),
        "step": int(step),
        "gen": gen.get_state(),
        "cfg": model.cfg.to_json(),
        "log": json.dumps(log),
    }
    atomic_write(path, lambda f: torch.save(state, f))


def _load_state(path: Path) -> dict:
    """The trainer's state file, read without running code from it (``weights_only=True``); ValueError
    naming the file for a link, a pickle with anything but tensors/numbers/strings, or a wrong layout."""
    import os
    import pickle
    import stat

    if not stat.S_ISREG(os.lstat(path).st_mode):
        raise ValueError(f"resume state {path} is not a regular file (a link or special file is refused)")
    try:
        st = torch.load(path, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as e:
        raise ValueError(
            f"resume state {path} is not a tokfuse_rt state file (refused to load it: only tensors, numbers "
            f"and strings are read, never code): {str(e).splitlines()[0] if str(e) else type(e).__name__}"
        ) from None
    keys = {"model", "opt", "stage", "step", "gen", "cfg", "log"}
    if not isinstance(st, dict) or not keys <= set(st) or not all(isinstance(st[k], str) for k in ("cfg", "log")):
        raise ValueError(f"resume state {path} does not have the tokfuse_rt state layout ({', '.join(sorted(keys))})")
    st["log"] = json.loads(st["log"])
    return st


def train(args: TrainArgs, cfg: TokFuseConfig | None = None) -> Path:
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    state_path = work / "state.pt"
    with open(work / "train.log", "a") as logf:
        t0 = time.perf_counter()
        bank = PairBank(args.data)
        _log(f"[data] {len(bank)} pairs from {args.data} loaded in {time.perf_counter() - t0:.1f}s", logf)

        gen = torch.Generator().manual_seed(args.seed)
        stage, start = 1, 0
        summary: dict = {
            "seed": args.seed,
            "pairs": len(bank),
            "steps1": args.steps1,
            "steps2": args.steps2,
            "recipe": {
                k: v
                for k, v in dataclasses.asdict(args).items()
                if k not in ("data", "out", "work", "resume", "threads")
            },
        }
        if args.tokenizer:  # S and K are the tokenizer's (--image-size, --num-tokens do not apply)
            model, summary["tokenizer"] = titok_model(
                args.tokenizer, args.tokenizer_config or None, cfg or TokFuseConfig(head=args.head)
            )
            summary["steps1"] = 0
            stage = 2
            _log(
                f"[tokenizer] {args.tokenizer}: official TiTok, K={model.cfg.num_tokens}, "
                f"S={model.cfg.image_size}, frozen; stage I skipped",
                logf,
            )
        else:
            model = TokFuse(
                cfg
                or TokFuseConfig(
                    head=args.head, num_tokens=args.num_tokens, image_size=args.image_size, base_radius=args.base_radius
                )
            )
        opt = None
        if args.resume and state_path.exists():
            st = _load_state(state_path)
            model = TokFuse(TokFuseConfig.from_json(st["cfg"]))
            model.load_state_dict(st["model"])
            stage, start = st["stage"], st["step"]
            gen.set_state(st["gen"])
            summary.update(st["log"])
            _log(f"[resume] stage {stage} step {start}", logf)

        # ---------------- stage I: tokenizer warm-up -------------------------------------------
        if stage == 1:
            params = list(model.encoder.parameters()) + list(model.decoder.parameters()) + [model.codebook]
            opt = torch.optim.AdamW(params, lr=args.lr1, weight_decay=0.0)
            if args.resume and state_path.exists() and st["stage"] == 1:
                opt.load_state_dict(st["opt"])
            sched = torch.optim.lr_scheduler.OneCycleLR(opt, args.lr1, total_steps=max(args.steps1, 1), pct_start=0.1)
            _fast_forward(sched, start)
            model.train()
            usage = torch.zeros(model.cfg.codebook_size)
            recent = []
            ts = time.perf_counter()
            for step in range(start, args.steps1):
                y = single_images(bank, gen, args.batch1, model.cfg.image_size)
                loss, parts, z, ids = tokenizer_step(model, y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                usage += torch.bincount(ids.flatten(), minlength=usage.numel())
                recent.append(z.reshape(-1, z.shape[-1]))
                if (step + 1) % 100 == 0:
                    n_dead = (
                        _restart_dead_codes(model, usage, torch.cat(recent), gen) if step < 0.8 * args.steps1 else 0
                    )
                    summary["codes_used"] = int((usage > 0).sum())
                    usage.zero_()
                    recent.clear()
                    if n_dead:
                        _log(f"[I] step {step + 1}: restarted {n_dead} unused codes", logf)
                if (step + 1) % args.log_every == 0:
                    rate = (step + 1 - start) / (time.perf_counter() - ts)
                    _log(
                        f"[I] step {step + 1}/{args.steps1} loss {loss.item():.4f} rec {parts['rec']:.4f} "
                        f"code {parts['code']:.4f} ({rate:.2f} it/s, {time.perf_counter() - t0:.0f}s)",
                        logf,
                    )
                    summary["stage1_final_rec"] = parts["rec"]
                if (step + 1) % args.save_every == 0:
                    _save_state(state_path, model, opt, 1, step + 1, gen, summary)
            summary["stage1_seconds"] = round(time.perf_counter() - ts, 1)
            stage, start = 2, 0
            _save_state(state_path, model, opt, 2, 0, gen, summary)

        stage2(model, bank, args, gen, summary, start, state_path, logf, t0)
        summary["total_seconds"] = round(time.perf_counter() - t0, 1)
        model.eval()
        out = save_checkpoint(model, args.out, extra={"train": summary})
        _log(f"[done] wrote {out} in {summary['total_seconds']}s: {json.dumps(summary)}", logf)
        return out


def stage2(
    model: TokFuse,
    bank: PairBank,
    args: TrainArgs,
    gen: torch.Generator,
    summary: dict,
    start: int = 0,
    state_path: Path | None = None,
    logf=None,
    t0: float | None = None,
) -> None:
    """Stage II: fusion with STE, tokenizer (encoder, decoder, codebook) frozen."""
    t0 = time.perf_counter() if t0 is None else t0
    frozen = tokenizer_modules(model)
    for mod in frozen:
        mod.requires_grad_(False)
    if model.cfg.tokenizer == "builtin":
        model.codebook.requires_grad_(False)
    params = [p for n, p in model.named_parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr2, weight_decay=1e-4)
    if state_path is not None and args.resume and state_path.exists() and start > 0:
        opt.load_state_dict(_load_state(state_path)["opt"])
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, args.lr2, total_steps=max(args.steps2, 1), pct_start=0.1)
    _fast_forward(sched, start)
    model.train()
    for mod in frozen:
        mod.eval()
    K = model.cfg.num_tokens
    ts = time.perf_counter()
    for step in range(start, args.steps2):
        ir, vis = bank.sample(gen, args.batch2, args.crop2)
        k = (
            int(torch.randint(0, min(K, 2 * model.cfg.default_k) + 1, (1,), generator=gen))
            if args.random_k
            else model.cfg.default_k
        )
        fused, _, base = model(ir, vis, k=k)
        if model.cfg.head in ("tone", "layers"):
            parts, target = tone_losses(
                fused,
                base[:, 1:, 0, 0],
                ir,
                vis,
                args.alpha,
                args.target_sd,
                args.gain_max,
                args.w_int,
                args.w_grad,
                args.w_ssim,
                args.w_tone,
                args.grad_target,
                args.vis_detail,
                args.detail_where,
                (model.cfg.base_radius, args.ir_detail, args.vis_gain) if model.cfg.head == "layers" else None,
            )
        else:
            parts = fusion_losses(
                fused, ir, vis, args.w_int, args.w_grad, args.w_ssim, args.gain, args.alpha, args.w_vif, args.w_scd
            )
            target = torch.maximum(ir, vis)
        target_base = F.interpolate(target, size=base.shape[-2:], mode="bilinear", align_corners=False)
        l_base = F.l1_loss(base[:, :1], target_base)
        loss = parts["total"] + args.w_base * l_base
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if (step + 1) % args.log_every == 0:
            rate = (step + 1 - start) / (time.perf_counter() - ts)
            loss, l_base, parts = loss.detach(), l_base.detach(), {k2: v.detach() for k2, v in parts.items()}
            terms = " ".join(f"{k2} {float(v):.4f}" for k2, v in parts.items() if k2 != "total")
            _log(
                f"[II] step {step + 1}/{args.steps2} loss {float(loss):.4f} {terms} base {float(l_base):.4f} "
                f"({rate:.2f} it/s, {time.perf_counter() - t0:.0f}s)",
                logf,
            )
            summary["stage2_final"] = {k2: round(float(v), 5) for k2, v in parts.items()} | {
                "base": round(float(l_base), 5)
            }
        if state_path is not None and (step + 1) % args.save_every == 0:
            _save_state(state_path, model, opt, 2, step + 1, gen, summary)
    summary["stage2_seconds"] = round(time.perf_counter() - ts, 1)
