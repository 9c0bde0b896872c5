"""The two-stage trainer: losses, both stages end to end, seeding, logging and resume.

A tiny model on a handful of small real PNG pairs (written here) keeps this to seconds; the
recipe's quality is judged by docs/eval_*.md, not here.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tokfuse_rt.model import TokFuseConfig
from tokfuse_rt.model.checkpoint import load_checkpoint, read_metadata
from tokfuse_rt.train import losses as L
from tokfuse_rt.train.__main__ import build_parser
from tokfuse_rt.train.loop import TrainArgs, train

TINY = TokFuseConfig(
    image_size=32,
    patch_size=8,
    num_tokens=8,
    code_dim=4,
    codebook_size=32,
    width=16,
    enc_depth=1,
    dec_depth=1,
    heads=2,
    mixer_hidden=8,
    edit_hidden=8,
    score_hidden=8,
    default_k=2,
    detail_channels=4,
    head_channels=4,
)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """Three registered pairs (ir/vi PNGs, 100×120 and 128×128: the bank crops at least 96 px)."""
    from PIL import Image

    root = tmp_path_factory.mktemp("train_data")
    rng = np.random.default_rng(0)
    for s in ("setA", "setB"):
        (root / s / "ir").mkdir(parents=True)
        (root / s / "vi").mkdir(parents=True)
    for i, (s, h, w) in enumerate([("setA", 100, 120), ("setA", 128, 128), ("setB", 110, 100)]):
        yy, xx = np.mgrid[0:h, 0:w]
        ir = 60 + 150 * (((yy - h / 2) ** 2 + (xx - w / 3) ** 2) < (h / 5) ** 2) + rng.normal(0, 8, (h, w))
        vis = 128 + 90 * np.sin(xx / (4 + i)) * np.cos(yy / 7) + rng.normal(0, 8, (h, w))
        Image.fromarray(np.clip(ir, 0, 255).astype(np.uint8)).save(root / s / "ir" / f"{i}.png")
        rgb = np.stack([vis, vis * 0.9, vis * 0.8], -1)
        Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).save(root / s / "vi" / f"{i}.png")
    return root


def _args(root, tmp, **kw) -> TrainArgs:
    base = dict(
        data=str(root),
        out=str(tmp / "out.safetensors"),
        work=str(tmp / "work"),
        seed=3,
        steps1=4,
        steps2=6,
        batch1=2,
        batch2=2,
        crop2=32,
        threads=1,
        log_every=2,
        save_every=2,
    )
    base.update(kw)
    return TrainArgs(**base)


def _weights(path):
    m, _ = load_checkpoint(path)
    return {k: v.clone() for k, v in m.state_dict().items()}


# --- losses ---------------------------------------------------------------------------------------
def test_contrast_target_reduces_to_max_and_stays_in_range():
    g = torch.Generator().manual_seed(0)
    ir, vis = torch.rand(3, 1, 17, 23, generator=g), torch.rand(3, 1, 17, 23, generator=g)
    # gain 1, alpha 0: exactly the classic max-intensity target.
    assert torch.equal(L.contrast_target(ir, vis), torch.maximum(ir, vis))
    for gain, alpha in [(1.5, 0.0), (1.0, 0.4), (1.5, 0.4), (3.0, 1.0)]:
        t = L.contrast_target(ir, vis, gain, alpha)
        assert t.shape == ir.shape and float(t.min()) >= 0.0 and float(t.max()) <= 1.0
    # gain > 1 spreads the target around its mean (more contrast) for every image.
    lo = torch.maximum(ir, vis).std(dim=(-2, -1))
    hi = L.contrast_target(ir * 0.5 + 0.25, vis * 0.5 + 0.25, 1.5).std(dim=(-2, -1))
    assert torch.all(hi > lo * 0.5 * 1.4)


def test_contrast_target_additive_part():
    # alpha 1: ir + vis - mean of the two image means, clamped; checked on a hand-made pair.
    ir = torch.tensor([[[[0.2, 0.4], [0.6, 0.8]]]])
    vis = torch.tensor([[[[0.1, 0.1], [0.3, 0.3]]]])
    want = (ir + vis - 0.5 * (0.5 + 0.2)).clamp(0, 1)
    assert torch.allclose(L.contrast_target(ir, vis, 1.0, 1.0), want)


def test_fusion_losses_terms():
    g = torch.Generator().manual_seed(1)
    ir, vis = torch.rand(2, 1, 32, 32, generator=g), torch.rand(2, 1, 32, 32, generator=g)
    t = L.contrast_target(ir, vis, 1.0, 0.0)
    p = L.fusion_losses(t, ir, vis, gain=1.0, alpha=0.0)
    assert float(p["int"]) == 0.0  # the target itself has zero intensity loss
    assert abs(float(L.ssim(ir, ir)) - 1.0) < 1e-5
    q = L.fusion_losses(0.5 * (ir + vis), ir, vis)
    assert float(q["total"]) == pytest.approx(float(q["int"]) + 10 * float(q["grad"]) + float(q["ssim"]), rel=1e-6)
    assert all(float(v) > 0 for v in q.values())


@pytest.mark.parametrize("h,w", [(17, 17), (41, 23), (33, 40), (41, 41), (128, 128), (131, 97)])
def test_vifp_and_scd_losses_match_the_metrics(h, w):
    """The differentiable VIF and SCD terms against the numpy metrics (the oracle, float64).

    Natural-ish images (smoothed noise, so no window is flat and the metric's hard masks never
    fire): the clamped torch version then computes the same formula in the same precision, so
    1e-9 relative is rounding only.  Sizes: VIF uses 1 scale at 17² and 41×23, 3 at 33×40, all 4
    from 41² (the smallest), odd and non-square on purpose.
    """
    from scipy.ndimage import gaussian_filter

    from tokfuse_rt.metrics.basic import scd as scd_ref
    from tokfuse_rt.metrics.vif import vifp as vifp_ref

    rng = np.random.default_rng(h * w)
    a, b = (gaussian_filter(rng.random((h, w)), s) for s in (1.5, 0.8))
    a, b = ((x - x.min()) / (x.max() - x.min()) for x in (a, b))
    f = np.clip(0.7 * a + 0.4 * b - 0.05, 0, 1)

    def t(x):
        return torch.from_numpy(x)[None, None]

    va, vb = L.vifp(torch.cat([t(a), t(b)], dim=1), t(f))[0].tolist()  # both refs in one call
    assert va == pytest.approx(vifp_ref(255 * a, 255 * f), rel=1e-9)
    assert vb == pytest.approx(vifp_ref(255 * b, 255 * f), rel=1e-9)
    assert float(L.vifp(t(b), t(f))[0, 0]) == pytest.approx(vb, rel=1e-12)  # one ref alone: same value
    assert float(L.scd(t(f), t(a), t(b))[0]) == pytest.approx(scd_ref(255 * f, 255 * a, 255 * b), rel=1e-9)
    x = t(f).clone().requires_grad_(True)
    (L.vifp(t(a), x).sum() + L.scd(x, t(a), t(b)).sum()).backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_vif_and_scd_terms_are_added_only_when_weighted():
    g = torch.Generator().manual_seed(2)
    ir, vis = torch.rand(2, 1, 64, 64, generator=g), torch.rand(2, 1, 64, 64, generator=g)
    f = 0.5 * (ir + vis)
    p = L.fusion_losses(f, ir, vis)
    assert set(p) == {"total", "int", "grad", "ssim"}
    q = L.fusion_losses(f, ir, vis, w_vif=2.0, w_scd=0.5)
    assert float(q["total"]) == pytest.approx(float(p["total"]) + 2 * float(q["vif"]) + 0.5 * float(q["scd"]), rel=1e-6)
    assert float(q["vif"]) == pytest.approx(1 - 0.5 * float((L.vifp(ir, f) + L.vifp(vis, f)).mean()), rel=1e-6)
    assert float(L.fusion_losses(ir, ir, vis, w_vif=1.0)["vif"]) < float(q["vif"])  # a copy keeps more


# --- the trainer end to end -------------------------------------------------------------------------
def test_two_stages_write_a_loadable_checkpoint_and_log(data_root, tmp_path):
    from tokfuse_rt import Engine

    out = train(_args(data_root, tmp_path), cfg=TINY)
    meta = read_metadata(out)
    summ = json.loads(meta["extra"])["train"]
    assert summ["pairs"] == 3 and summ["seed"] == 3 and summ["steps1"] == 4 and summ["steps2"] == 6
    assert {"stage1_final_rec", "stage2_final", "total_seconds"} <= set(summ)
    log = (tmp_path / "work" / "train.log").read_text()
    assert log.count("[I] step") >= 2 and log.count("[II] step") == 3 and "[done]" in log
    # Stage II leaves the tokenizer exactly as stage I made it (frozen), and trains the rest.
    with Engine(out, threads=1) as eng:
        img = eng.fuse(np.full((40, 52), 30, np.uint8), np.full((40, 52), 200, np.uint8))
    assert np.asarray(img).shape[:2] == (40, 52)


def test_stage2_freezes_tokenizer(data_root, tmp_path):
    out = train(_args(data_root, tmp_path, steps2=0), cfg=TINY)
    w1 = _weights(out)
    out2 = train(_args(data_root, tmp_path / "b", steps2=6), cfg=TINY)
    w2 = _weights(out2)
    tok = [k for k in w1 if k.startswith(("encoder.", "decoder.", "codebook"))]
    rest = [k for k in w1 if k not in tok]
    assert tok and rest
    assert all(torch.equal(w1[k], w2[k]) for k in tok)  # same seed, same stage I; frozen in II
    assert any(not torch.equal(w1[k], w2[k]) for k in rest)  # stage II trained the fusion part


def test_same_seed_same_model_other_seed_differs(data_root, tmp_path):
    a = _weights(train(_args(data_root, tmp_path / "a"), cfg=TINY))
    b = _weights(train(_args(data_root, tmp_path / "b"), cfg=TINY))
    c = _weights(train(_args(data_root, tmp_path / "c", seed=4), cfg=TINY))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_resume_after_a_crash_in_stage_two_matches_an_uninterrupted_run(data_root, tmp_path, monkeypatch):
    ref = _weights(train(_args(data_root, tmp_path / "ref"), cfg=TINY))

    import tokfuse_rt.train.loop as loop

    real, calls = loop.fusion_losses, {"n": 0}

    def crash_on_fifth(*a, **k):
        calls["n"] += 1
        if calls["n"] == 5:  # steps 1-4 done, state saved at step 4
            raise KeyboardInterrupt("simulated crash")
        return real(*a, **k)

    args = _args(data_root, tmp_path / "run")
    monkeypatch.setattr(loop, "fusion_losses", crash_on_fifth)
    with pytest.raises(KeyboardInterrupt):
        train(args, cfg=TINY)
    monkeypatch.setattr(loop, "fusion_losses", real)
    st = torch.load(tmp_path / "run" / "work" / "state.pt", weights_only=True)
    assert (st["stage"], st["step"]) == (2, 4)
    args.resume = True
    out = train(args, cfg=TINY)
    assert "[resume] stage 2 step 4" in (tmp_path / "run" / "work" / "train.log").read_text()
    got = _weights(out)
    assert all(torch.equal(ref[k], got[k]) for k in ref), [k for k in ref if not torch.equal(ref[k], got[k])]


def test_cli_exposes_the_recipe():
    from tokfuse_rt.train.__main__ import train_args

    a = train_args(build_parser().parse_args(["--data", "d", "-o", "o.safetensors", "--gain", "1.2", "--resume"]))
    assert a.gain == 1.2 and a.resume and a.alpha == TrainArgs("", "").alpha and a.seed == 0
    assert a == TrainArgs("d", "o.safetensors", gain=1.2, resume=True)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["-o", "o.safetensors"])  # --data is required
    with pytest.raises(ValueError, match="-o/--output is required"):
        train_args(build_parser().parse_args(["--data", "d"]))
    assert build_parser().parse_args(["--data", "d", "--output", "x.safetensors"]).out == "x.safetensors"


def test_old_out_spelling_still_works_with_a_warning(capsys):
    a = build_parser().parse_args(["--data", "d", "--out", "old.safetensors"])
    assert a.out == "old.safetensors" and "--out is deprecated" in capsys.readouterr().err


def test_presets_fill_what_is_not_given():
    """The defaults are the bundled recipe; --preset replaces its own fields; explicit options win."""
    from tokfuse_rt.train.__main__ import train_args
    from tokfuse_rt.train.loop import PRESETS

    base = ["--data", "d", "-o", "o.safetensors"]
    assert train_args(build_parser().parse_args(base)) == TrainArgs("d", "o.safetensors")
    default = train_args(build_parser().parse_args(base))
    assert (default.head, default.num_tokens, default.steps1, default.steps2, default.random_k) == (
        "layers",
        64,
        3000,
        3000,
        False,
    )
    assert (default.alpha, default.base_radius, default.ir_detail, default.vis_gain) == (0.4, 3, 0.7, 1.2)
    blend = train_args(build_parser().parse_args(base + ["--preset", "blend", "--steps2", "7"]))
    assert (blend.head, blend.num_tokens, blend.steps1, blend.random_k, blend.alpha) == ("blend", 32, 2000, True, 0.0)
    assert blend.steps2 == 7 and blend.seed == 0
    tone = train_args(build_parser().parse_args(base + ["--preset", "tone"]))
    assert (tone.head, tone.num_tokens, tone.alpha, tone.vis_detail) == ("tone", 64, 0.5, 0.0)
    assert all(set(p) - {"about"} <= set(TrainArgs.__dataclass_fields__) for p in PRESETS.values())
    with pytest.raises(SystemExit):
        build_parser().parse_args(base + ["--preset", "nope"])


def test_missing_or_empty_data_dir(tmp_path):
    with pytest.raises(FileNotFoundError, match="training data"):
        train(_args(tmp_path / "nope", tmp_path), cfg=TINY)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no image pairs"):
        train(_args(tmp_path / "empty", tmp_path), cfg=TINY)


class _Plant:
    """A pickle payload that creates a marker file when unpickled (what a hostile state.pt does)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_resume_refuses_a_hostile_pickle_in_the_state_file(data_root, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    marker = tmp_path / "pwned"
    torch.save({"stage": 2, "step": 1, "x": _Plant(marker)}, work / "state.pt")
    with pytest.raises(ValueError, match="state.pt"):
        train(_args(data_root, tmp_path, resume=True), cfg=TINY)
    assert not marker.exists()  # the payload never ran


def test_state_file_is_written_without_following_a_planted_link(data_root, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    for name in ("state.tmp", "state.pt.tmp"):  # the old predictable temporary names
        (work / name).symlink_to(victim)
    train(_args(data_root, tmp_path, steps1=2, steps2=2), cfg=TINY)
    assert victim.read_text() == "keep"
    st = torch.load(work / "state.pt", weights_only=True)  # loadable without unpickling code
    assert (st["stage"], st["step"]) == (2, 2) and not (work / "state.pt").is_symlink()
