"""Model shapes, determinism and the STE / quantiser contracts, against plain reference computations."""

import numpy as np
import pytest
import torch

from tokfuse_rt.model import TokFuse, TokFuseConfig, l2norm, quantize, topk_mask
from tokfuse_rt.model.quant import kernel_backend

from tiny_model import tiny_config


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = TokFuse(tiny_config()).eval()
    with torch.no_grad():
        m.head.conv2.weight.normal_(0, 0.1)
        m.ste.edit_fc2.weight.normal_(0, 0.5)  # edits large enough to change codes
    return m


@pytest.mark.parametrize("hw", [(16, 16), (17, 33), (64, 48), (121, 97)])
def test_forward_shapes(model, hw):
    g = torch.Generator().manual_seed(1)
    ir, vis = torch.rand(2, 1, *hw, generator=g), torch.rand(2, 1, *hw, generator=g)
    with torch.no_grad():
        fused, ids, base = model(ir, vis)
    assert fused.shape == (2, 1, *hw)
    assert ids.shape == (2, model.cfg.num_tokens) and ids.dtype == torch.int64
    assert base.shape == (2, 1, model.cfg.image_size, model.cfg.image_size)
    assert 0.0 <= float(fused.min()) and float(fused.max()) <= 1.0
    assert int(ids.min()) >= 0 and int(ids.max()) < model.cfg.codebook_size


def test_deterministic_and_batch_independent(model):
    g = torch.Generator().manual_seed(2)
    ir, vis = torch.rand(3, 1, 40, 56, generator=g), torch.rand(3, 1, 40, 56, generator=g)
    with torch.no_grad():
        f1, i1, _ = model(ir, vis)
        f2, i2, _ = model(ir, vis)
        f3, i3, _ = model(ir[1:2], vis[1:2])
    assert torch.equal(f1, f2) and torch.equal(i1, i2)
    assert torch.equal(i1[1:2], i3)
    # batched conv/matmul may sum in another order: a few float32 ulps on values in [0, 1]
    torch.testing.assert_close(f1[1:2], f3, rtol=0, atol=1e-5)


def test_quantize_matches_bruteforce_and_ties_lowest():
    g = torch.Generator().manual_seed(3)
    cb = l2norm(torch.randn(50, 12, generator=g))
    cb = torch.cat([cb[:10], cb[3:4], cb[10:]])  # row 10 duplicates row 3: an exact tie
    z = l2norm(torch.cat([torch.randn(20, 12, generator=g), cb[3:4]]))
    with kernel_backend("torch"):
        ids, q = quantize(z, cb)
    # brute force in float64 with an explicit lowest-index rule
    sims = z.double() @ cb.double().t()
    for n in range(len(z)):
        best = max(range(len(cb)), key=lambda j: (float(sims[n, j]), -j))
        assert int(ids[n]) == best
    assert int(ids[-1]) == 3
    assert torch.equal(q, cb[ids])


def _topk_reference(scores, k):
    out = torch.zeros_like(scores, dtype=torch.bool)
    for b in range(scores.shape[0]):
        order = sorted(range(scores.shape[1]), key=lambda i: (-float(scores[b, i]), i))
        out[b, order[:k]] = True
    return out


@pytest.mark.parametrize("k", [0, 1, 3, 8])
def test_topk_mask_ties_to_lowest_index(k):
    g = torch.Generator().manual_seed(4)
    s = torch.randint(0, 3, (5, 8), generator=g).float()  # many exact ties on purpose
    assert torch.equal(topk_mask(s, k), _topk_reference(s, k))
    assert int(topk_mask(s, k).sum(dim=1).unique()) == k


@pytest.mark.parametrize("k", [0, 1, 2, 8])
def test_ste_edits_only_topk_and_passes_the_rest_bitwise(model, k):
    g = torch.Generator().manual_seed(5)
    cb = model.codebook_n()
    ids = torch.randint(0, cb.shape[0], (3, model.cfg.num_tokens), generator=g)
    z = cb[ids]
    ctx = torch.randn(3, 2 * model.cfg.code_dim, generator=g)
    with torch.no_grad(), kernel_backend("torch"):
        z_out, ids_out, s = model.ste(z, ids, ctx, cb, k)
        sel = topk_mask(s, k)
        # reference: edit each selected token on its own, re-quantise by brute force
        for b in range(3):
            for t in range(model.cfg.num_tokens):
                if not sel[b, t]:
                    assert torch.equal(z_out[b, t], z[b, t]) and int(ids_out[b, t]) == int(ids[b, t])
                    continue
                zz = model.ste.edit(z[b, t][None], ctx[b][None], s[b, t][None])[0]
                want = int(torch.argmax(cb @ zz))
                assert int(ids_out[b, t]) == want
                assert torch.equal(z_out[b, t], cb[want])
    if k == 0:
        assert torch.equal(ids_out, ids)


def test_k_changes_output(model):
    g = torch.Generator().manual_seed(6)
    ir, vis = torch.rand(1, 1, 32, 32, generator=g), torch.rand(1, 1, 32, 32, generator=g)
    with torch.no_grad():
        _, i0, _ = model(ir, vis, k=0)
        _, iK, _ = model(ir, vis, k=model.cfg.num_tokens)
    assert not torch.equal(i0, iK)


def test_config_json_round_trip_and_validation():
    cfg = tiny_config(default_k=3)
    assert TokFuseConfig.from_json(cfg.to_json()) == cfg
    with pytest.raises(ValueError, match="multiple of patch_size"):
        TokFuseConfig(image_size=30, patch_size=8)
    with pytest.raises(ValueError, match="default_k"):
        TokFuseConfig(default_k=99)
    with pytest.raises(ValueError, match="unknown model config fields"):
        TokFuseConfig.from_json('{"nope": 1}')


def test_train_mode_straight_through_gradients_reach_mixer_and_score(model):
    m = TokFuse(tiny_config())
    m.train()
    g = torch.Generator().manual_seed(7)
    ir, vis = torch.rand(2, 1, 32, 32, generator=g), torch.rand(2, 1, 32, 32, generator=g)
    fused, _, base = m(ir, vis, k=2)
    (fused.mean() + base.mean()).backward()
    assert m.mixer.inp.weight.grad is not None and m.mixer.inp.weight.grad.abs().sum() > 0
    assert m.ste.score[0].weight.grad is not None and m.ste.score[0].weight.grad.abs().sum() > 0


def test_render_halves_and_tiles_match_forward():
    """forward == render(token_pathway) exactly, and a crop rendered from a padded window (offset a
    multiple of render_align, render_halo pixels of context) equals the crop of the whole render."""
    torch.manual_seed(0)
    m = TokFuse(TokFuseConfig()).eval()
    ir, vis = torch.rand(1, 1, 45, 61), torch.rand(1, 1, 45, 61)
    with torch.no_grad():
        fused, ids, base = m(ir, vis, k=3)
        base2, ids2 = m.token_pathway(ir, vis, k=3)
        assert torch.equal(ids, ids2) and torch.equal(base, base2)
        up = m.upsample_base(base, (45, 61))
        assert torch.equal(m.render(ir, vis, up), fused)
        h = m.render_halo
        y0, x0, y1, x1 = 10, 20, 30, 41
        win = (slice(None), slice(None), slice(y0 - h, y1 + h), slice(x0 - h, x1 + h))
        tile = m.render(ir[win], vis[win], up[win])[..., h:-h, h:-h]
        # float32 convs over identical inputs: only summation order may differ -> 1e-6
        torch.testing.assert_close(tile, fused[..., y0:y1, x0:x1], atol=1e-6, rtol=0)


def test_tone_head_computes_the_documented_rule():
    """With the convolutional corrections at their initial zero and a sharp selection, the "tone"
    render is exactly tone_rule (tokfuse_rt.train.losses) at the tone the tokens predicted; the tone
    is within its documented ranges and constant over the base map."""
    from tokfuse_rt.train.losses import tone_rule

    torch.manual_seed(0)
    m = TokFuse(TokFuseConfig(head="tone")).eval()
    with torch.no_grad():
        m.head.tau.fill_(1e5)
    g = torch.Generator().manual_seed(1)
    ir, vis = torch.rand(2, 1, 33, 47, generator=g), torch.rand(2, 1, 33, 47, generator=g)
    with torch.no_grad():
        fused, _, base = m(ir, vis)
    assert base.shape == (2, 5, 128, 128)
    tone = base[:, 1:, 0, 0]
    assert torch.equal(base[:, 1:], tone[:, :, None, None].expand_as(base[:, 1:]))
    assert (tone[:, 0] >= 1).all() and (tone[:, 0] <= 2).all() and (tone[:, 1:] >= 0).all() and (tone[:, 1:] <= 1).all()
    clear = (ir - vis).abs() > 1e-3  # sigmoid(1e5 · 1e-3) = 1 in float32: a hard max there
    # float32: the same formula in a different order -> a few ulp of values <= ~2
    torch.testing.assert_close(fused[clear], tone_rule(ir, vis, tone)[clear], atol=1e-6, rtol=0)


def test_tone_losses_grad_target_max_is_gain_times_strongest_source_edge():
    """grad_target="max": the gradient term is L1 between the fused Sobel map and g · max(Sobel(ir),
    Sobel(vis)), g the target's gain; other terms do not depend on it; an unknown name is a ValueError."""
    import torch.nn.functional as F

    from tokfuse_rt.train.losses import sobel_mag, target_tone, tone_losses

    g = torch.Generator().manual_seed(3)
    ir, vis, fused = (torch.rand(2, 1, 19, 23, generator=g) for _ in range(3))
    tone = torch.rand(2, 4, generator=g)
    t_max, _ = tone_losses(fused, tone, ir, vis, grad_target="max")
    t_tgt, _ = tone_losses(fused, tone, ir, vis, grad_target="target")
    gain = target_tone(ir, vis, 0.5, sd=55 / 255, gain_max=2.0)[:, :1, None, None]  # tone_losses defaults
    want = F.l1_loss(sobel_mag(fused), gain * torch.maximum(sobel_mag(ir), sobel_mag(vis)))
    # the same float32 ops in the same order -> equal up to a few ulp
    torch.testing.assert_close(t_max["grad"], want, atol=1e-6, rtol=0)
    assert not torch.allclose(t_max["grad"], t_tgt["grad"])
    for key in ("int", "ssim", "tone"):
        assert torch.equal(t_max[key], t_tgt[key])
    with pytest.raises(ValueError, match="grad_target"):
        tone_losses(fused, tone, ir, vis, grad_target="sobel")


def test_tone_rule_visible_detail_by_hand():
    """vis_detail β adds β·(vis − its 3×3 mean) to m, everywhere ("all") or where ir > vis ("ir"),
    checked on a hand-made 3×3 case: vis is 0 except 0.9 at the centre, so its high-pass is 0.8 at
    the centre and −0.1 at the other 8 pixels (replicate padding only touches the border, where the
    3×3 mean still sees the centre once: 0.9/9 = 0.1)."""
    from tokfuse_rt.train.losses import tone_rule

    vis = torch.zeros(1, 1, 3, 3)
    vis[..., 1, 1] = 0.9
    ir = torch.full((1, 1, 3, 3), 0.5)
    tone = torch.tensor([[1.0, 0.0, 0.5, 0.0]])  # g = 1, a = 0: F = m = max(ir, vis) (+ detail)
    base = tone_rule(ir, vis, tone, roll_off=False)
    hp = torch.full((1, 1, 3, 3), -0.1)
    hp[..., 1, 1] = 0.8
    # float32 sums of 9 values -> a few ulp
    torch.testing.assert_close(
        tone_rule(ir, vis, tone, roll_off=False, vis_detail=0.5) - base,
        (0.5 * hp).clamp(max=1 - base),
        atol=1e-6,
        rtol=0,
    )
    gated = tone_rule(ir, vis, tone, roll_off=False, vis_detail=0.5, detail_where="ir") - base
    want = 0.5 * hp * (ir > vis).float()  # centre: vis > ir, no detail added there
    torch.testing.assert_close(gated, want, atol=1e-6, rtol=0)
    assert torch.equal(tone_rule(ir, vis, tone, vis_detail=0.0), tone_rule(ir, vis, tone))
    with pytest.raises(ValueError, match="detail_where"):
        tone_rule(ir, vis, tone, vis_detail=0.5, detail_where="edges")


def test_box_blur_against_numpy_reference():
    """box_blur = ``passes`` means over (2r+1)² windows with edge-replicated borders, checked against a
    numpy reference on an odd size, r = 0 (identity), 1 and 4, one and two passes."""
    from tokfuse_rt.model.layers import box_blur

    rng = np.random.default_rng(0)
    x = rng.random((2, 3, 13, 21), dtype=np.float32)

    def ref(a, r, passes):
        for _ in range(passes):
            p = np.pad(a, ((0, 0), (0, 0), (r, r), (r, r)), mode="edge").astype(np.float64)
            out = np.zeros_like(a, dtype=np.float64)
            for dy in range(2 * r + 1):
                for dx in range(2 * r + 1):
                    out += p[..., dy : dy + a.shape[-2], dx : dx + a.shape[-1]]
            a = (out / (2 * r + 1) ** 2).astype(np.float32)
        return a

    for r in (0, 1, 4):
        for passes in (1, 2):
            got = box_blur(torch.from_numpy(x), r, passes).numpy()
            # float32 sums of up to 81 values in [0, 1] against a float64 sum: ~1e-6
            np.testing.assert_allclose(got, ref(x, r, passes), atol=2e-6, rtol=0)


def test_layers_rule_by_hand():
    """Flat sources have no detail: m is the tone rule's mix of the levels; a detail layer adds its
    gain times the source minus its blur (a flat infrared level with one bright visible pixel, r = 1,
    one 3×3 box pass twice: the pixel spreads to 1/9 then to a 5×5 pyramid)."""
    from tokfuse_rt.model.layers import box_blur
    from tokfuse_rt.train.losses import layers_mix, layers_rule

    ir = torch.full((1, 1, 9, 9), 0.6)
    vis = torch.full((1, 1, 9, 9), 0.2)
    m = layers_mix(ir, vis, 0.25, 0.3, radius=1, ir_detail=0.5, vis_detail=1.0)
    # (1 − a)·max(0.6, 0.2) + a·clamp(0.6 + 0.2 − 0.3) = 0.75·0.6 + 0.25·0.5; no detail
    torch.testing.assert_close(m, torch.full_like(m, 0.575), atol=1e-6, rtol=0)
    vis[..., 4, 4] = 1.0
    m2 = layers_mix(ir, vis, 0.0, 0.3, radius=1, ir_detail=0.5, vis_detail=1.2)
    d_vis = vis - box_blur(vis, 1)
    low_max = torch.maximum(torch.full_like(ir, 0.6), box_blur(vis, 1))
    # float32: blur sums of 9 values, then a few ops -> a few ulp
    torch.testing.assert_close(m2, low_max + 1.2 * d_vis, atol=1e-6, rtol=0)
    assert abs(float(d_vis[0, 0, 4, 4]) - 0.8 * (1 - 1 / 9)) < 1e-6  # centre: 1 − (0.2 + 0.8/9)
    tone = torch.tensor([[1.0, 0.0, 0.5, 0.3]])  # g = 1: F = knee(m)
    from tokfuse_rt.model.tone import knee

    torch.testing.assert_close(
        layers_rule(ir, vis, tone, 1, 0.5, 1.2), knee(layers_mix(ir, vis, 0.0, 0.3, 1, 0.5, 1.2)), atol=0, rtol=0
    )


def test_layers_head_computes_the_documented_rule():
    """With the corrections at their initial zero and a sharp selection, the "layers" render is
    layers_rule at the predicted tone and the head's detail gains (initial 0.3 infrared, 1 visible)."""
    from tokfuse_rt.model.layers import box_blur
    from tokfuse_rt.train.losses import layers_rule

    torch.manual_seed(0)
    m = TokFuse(TokFuseConfig(head="layers", base_radius=2)).eval()
    assert m.render_halo == 4
    with torch.no_grad():
        m.head.tau.fill_(1e5)
    g = torch.Generator().manual_seed(1)
    ir, vis = torch.rand(2, 1, 33, 47, generator=g), torch.rand(2, 1, 33, 47, generator=g)
    with torch.no_grad():
        fused, _, base = m(ir, vis)
    tone = base[:, 1:, 0, 0]
    clear = (box_blur(ir, 2) - box_blur(vis, 2)).abs() > 1e-3  # sigmoid(1e5 · 1e-3) = 1: a hard max there
    want = layers_rule(ir, vis, tone, 2, m.head.gain_ir.item(), m.head.gain_vis.item())
    # float32: the same formula in a different order -> a few ulp of values <= ~2
    torch.testing.assert_close(fused[clear], want[clear], atol=2e-6, rtol=0)


@pytest.mark.parametrize("k", [0, None])
def test_token_pathway_orders_of_work_give_the_same_result(shared_data, k):
    """The bundled model on real pairs: tokenising ir and vis one after the other, on two threads
    (``pool``) and as one batch (``together``) gives the same base map and ids, bit for bit (every op
    treats each image alone), for one pair and for a batch of two, at k = 0 and K."""
    from concurrent.futures import ThreadPoolExecutor

    from tokfuse_rt.engine import DEFAULT_MODEL
    from tokfuse_rt.imageio import load_image, luminance
    from tokfuse_rt.model import load_checkpoint

    m = load_checkpoint(DEFAULT_MODEL)[0].eval()
    k = m.cfg.num_tokens if k is None else k
    d = shared_data / "train" / "M3FD"
    names = sorted(p.name for p in (d / "ir").iterdir())[:2]

    def lum(sub, name):
        return torch.from_numpy(luminance(load_image(d / sub / name, sub)))[None, None]

    ir = torch.cat([lum("ir", n) for n in names])
    vis = torch.cat([lum("vi", n) for n in names])
    with torch.inference_mode(), ThreadPoolExecutor(1) as pool:
        for b in (1, 2):
            ref = m.token_pathway(ir[:b], vis[:b], k)
            for kw in ({"pool": pool}, {"together": True}):
                base, ids = m.token_pathway(ir[:b], vis[:b], k, **kw)
                assert torch.equal(ids, ref[1]) and torch.equal(base, ref[0]), (b, kw)
