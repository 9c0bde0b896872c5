"""Fused Selective Token Editing.

    z_out, ids_out = token_edit(z, ids, scores, ctx, ste_module, codebook_n, k)            # Triton
    z_out, ids_out = token_edit_weights(z, ids, scores, ctx, w1, b1, w2, b2, codebook_n, k)
    z_out, ids_out = token_edit_ref(...) / token_edit_weights_ref(...)                      # PyTorch

Semantics: exactly ``SelectiveTokenEditing.forward`` of tokfuse_rt/model/ste.py (inference), given its
scores. Per sequence b (z [B, K, d] quantised tokens, ids [B, K], scores [B, K], ctx [B, 2d]):

* selected = the k highest scores, ties to the lowest index (rank_i = #{j: s_j > s_i or (s_j == s_i and
  j < i)}, selected iff rank_i < k - the model's ``topk_mask``; k <= 0 selects none, k >= K all);
* for a selected token z: e = fc2(relu(fc1([z, ctx]))), z' = l2norm(z + sigmoid(s) * e), re-quantised
  against the l2-normalised codebook (argmax of z' . C_n, ties to the lowest index): new id and vector
  ``C_n[id]``;
* unselected tokens are copied bit-for-bit (ids and vectors). ``ids_out`` has the dtype of ``ids``.

fc1 = Linear(3d -> H) with weight w1 [H, 3d], bias b1 [H]; fc2 = Linear(H -> d), w2 [d, H], b2 [d].

Kernel design: grid (B, slot blocks). Every program ranks its sequence's scores (tiled BLOCK_I x BLOCK_J
comparisons, O(K^2) but K is small), which gives each selected token its slot = its rank in 0..k-1, so
the selected token indices of the program's SB slots are gathered without sorting or atomics; program
(b, 0) also copies the unselected tokens. The SB selected tokens then go through the edit MLP in
registers: the ctx half of fc1 is one [H] vector per sequence (W1[:, d:] @ ctx + b1), the token half and
fc2 are ``tl.dot`` (IEEE fp32, no TF32); sigmoid gate, l2-normalise (IEEE sqrt/division), then the
re-quantisation streams the codebook in BLOCK_C tiles with a running (best, lowest index) with the same
device functions as kernels/vq_lookup.py (``common.score_tile`` in the "dot" / "ordered" form,
``common.keep_best``: same tie rule), and scatters C_n[id] and id
back to the selected positions. Code, hidden and slot dimensions are padded to powers of two >= 16
(``tl.arange``/``tl.dot`` need them; d = 12 -> 16) with masks. Autotuned on CUDA (Hopper configs below);
one fixed configuration under the interpreter (``TRITON_INTERPRET=1``).
"""

import functools
from typing import Optional

import torch
import torch.nn.functional as F

from .common import check_device, dim_pad, interpret, jit, require_triton, resolve_score_mode, tl, triton
from .vq_lookup import l2norm_ref

__all__ = ["token_edit", "token_edit_weights", "token_edit_ref", "token_edit_weights_ref", "topk_mask_ref"]


# ----------------------------------------------------------------------------------------------------
# Reference (pure PyTorch): the model's own expressions, in the same order and shapes
# ----------------------------------------------------------------------------------------------------
def topk_mask_ref(scores: torch.Tensor, k) -> torch.Tensor:
    """Boolean [B, K]: the k highest scores per row, ties to the lowest index (= model.ste.topk_mask)."""
    n = scores.shape[-1]
    si = scores.unsqueeze(-1)
    sj = scores.unsqueeze(-2)
    idx = torch.arange(n, device=scores.device)
    earlier = idx.unsqueeze(0) < idx.unsqueeze(1)
    beats = (sj > si) | ((sj == si) & earlier)
    return beats.sum(dim=-1) < k


def token_edit_weights_ref(z, ids, scores, ctx, w1, b1, w2, b2, codebook_n, k, return_edited: bool = False):
    """PyTorch reference with explicit weights; bit-identical to the model's STE forward (eval).

    Returns ``(z_out, ids_out)``, plus ``edited`` [B, K, d] (z' before re-quantisation at the selected
    positions, NaN elsewhere) when ``return_edited``.
    """
    _check_args(z, ids, scores, ctx, w1, b1, w2, b2, codebook_n, k)
    sel = topk_mask_ref(scores, k)
    c = ctx.unsqueeze(-2).expand(*z.shape[:-1], ctx.shape[-1])
    e = F.linear(torch.relu(F.linear(torch.cat([z, c], dim=-1), w1, b1)), w2, b2)
    z_new = l2norm_ref(z + torch.sigmoid(scores).unsqueeze(-1) * e)
    new_ids = torch.argmax(z_new @ codebook_n.t(), dim=-1)
    q_new = codebook_n[new_ids]
    m = sel.unsqueeze(-1)
    z_out = torch.where(m, q_new, z)
    ids_out = torch.where(sel, new_ids, ids).to(ids.dtype)
    if return_edited:
        return z_out, ids_out, torch.where(m, z_new, torch.full_like(z_new, float("nan")))
    return z_out, ids_out


def _ste_weights(ste_module):
    try:
        fc1, fc2 = ste_module.edit_fc1, ste_module.edit_fc2
    except AttributeError:
        raise TypeError(
            "token_edit: ste_module must have edit_fc1 and edit_fc2 Linear layers "
            f"(a SelectiveTokenEditing), got {type(ste_module).__name__}"
        ) from None
    return fc1.weight, fc1.bias, fc2.weight, fc2.bias


def token_edit_ref(z, ids, scores, ctx, ste_module, codebook_n, k, return_edited: bool = False):
    """PyTorch reference taking the weights from ``ste_module.edit_fc1/edit_fc2``."""
    return token_edit_weights_ref(
        z, ids, scores, ctx, *_ste_weights(ste_module), codebook_n, k, return_edited=return_edited
    )


def _check_args(z, ids, scores, ctx, w1, b1, w2, b2, codebook_n, k):
    def need(cond, msg):
        if not cond:
            raise ValueError(f"token_edit: {msg}")

    for name, t in (
        ("z", z),
        ("ids", ids),
        ("scores", scores),
        ("ctx", ctx),
        ("w1", w1),
        ("w2", w2),
        ("codebook_n", codebook_n),
    ):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"token_edit: {name} must be a torch tensor, got {type(t).__name__}")
    for name, t in (("b1", b1), ("b2", b2)):
        if t is not None and not isinstance(t, torch.Tensor):
            raise TypeError(f"token_edit: {name} must be a torch tensor or None, got {type(t).__name__}")
    for name, t in (("z", z), ("scores", scores), ("ctx", ctx), ("w1", w1), ("w2", w2), ("codebook_n", codebook_n)):
        if not t.is_floating_point():
            raise TypeError(f"token_edit: {name} must be a floating tensor, got {t.dtype}")
    if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
        raise TypeError(f"token_edit: ids must be an integer tensor, got {ids.dtype}")
    if isinstance(k, bool) or not isinstance(k, int):
        if isinstance(k, torch.Tensor) and k.numel() == 1 and not k.is_floating_point():
            pass
        else:
            raise TypeError(f"token_edit: k must be an int, got {type(k).__name__}")
    need(z.dim() == 3, f"z must be [B, K, d], got {tuple(z.shape)}")
    b, n, d = z.shape
    need(
        codebook_n.dim() == 2 and codebook_n.shape[1] == d and codebook_n.shape[0] >= 1,
        f"codebook_n must be [Kc, {d}] with Kc >= 1, got {tuple(codebook_n.shape)}",
    )
    need(tuple(ids.shape) == (b, n), f"ids must be [{b}, {n}], got {tuple(ids.shape)}")
    need(tuple(scores.shape) == (b, n), f"scores must be [{b}, {n}], got {tuple(scores.shape)}")
    need(tuple(ctx.shape) == (b, 2 * d), f"ctx must be [{b}, {2 * d}], got {tuple(ctx.shape)}")
    need(w1.dim() == 2 and w1.shape[1] == 3 * d, f"w1 (edit_fc1.weight) must be [H, {3 * d}], got {tuple(w1.shape)}")
    h = w1.shape[0]
    need(b1 is None or tuple(b1.shape) == (h,), f"b1 must be [{h}], got {None if b1 is None else tuple(b1.shape)}")
    need(tuple(w2.shape) == (d, h), f"w2 (edit_fc2.weight) must be [{d}, {h}], got {tuple(w2.shape)}")
    need(b2 is None or tuple(b2.shape) == (d,), f"b2 must be [{d}], got {None if b2 is None else tuple(b2.shape)}")


# ----------------------------------------------------------------------------------------------------
# Triton kernel
# ----------------------------------------------------------------------------------------------------
# Hopper (H100/H200) configurations. One program handles one sequence's block of SB (16-64) selected
# tokens; its cost is dominated by the re-quantisation, SB x Kc x 16 FMAs on CUDA cores, streaming the
# codebook (L2-resident) in BLOCK_C tiles that num_stages pipelines through shared memory. SB is small,
# so 2-4 warps suffice for SB = 16 (more CTAs per SM for large batches) and 8 warps carry SB = 64 with
# wide tiles. Compiled for sm_90 with this Triton (d = 12, H = 64): 72-118 registers at SB = 16 and
# 164-238 at SB = 64, no local memory, except 2 warps at SB = 64 (spills), which ``_prune_te_configs``
# drops. The grid is B x ceil(k / SB) programs, so large batches fill the 132 SMs; the autotune key
# carries SB and the codebook size.
_TE_CONFIGS_SPEC = [
    # BLOCK_C, num_warps, num_stages
    (64, 2, 3),
    (64, 4, 3),
    (128, 4, 3),
    (128, 4, 4),
    (128, 8, 3),
    (256, 8, 3),
]


def _prune_te_configs(configs, nargs, **kwargs):
    sb = kwargs.get("SB", nargs.get("SB", 16))
    kept = [c for c in configs if not (c.num_warps < 4 and sb > 32)]
    return kept or list(configs)


# Fixed configuration under the CPU interpreter (no autotuning; big tiles = fewer interpreted ops).
_INTERP_BLOCK_C = 2048
_INTERP_BLOCK_IJ = 128
_GPU_BLOCK_IJ = 32

if triton is not None:
    from .common import keep_best, score_tile

    def _token_edit_kernel(
        z_ptr,
        ids_ptr,
        s_ptr,
        ctx_ptr,
        w1_ptr,
        b1_ptr,
        w2_ptr,
        b2_ptr,
        cb_ptr,
        zout_ptr,
        idsout_ptr,
        edited_ptr,
        K,
        KC,
        k,
        NSEL,
        BB,
        D: tl.constexpr,
        D_PAD: tl.constexpr,
        H: tl.constexpr,
        H_PAD: tl.constexpr,
        C2_PAD: tl.constexpr,
        HAS_B1: tl.constexpr,
        HAS_B2: tl.constexpr,
        WRITE_EDITED: tl.constexpr,
        DOT: tl.constexpr,
        BLOCK_I: tl.constexpr,
        BLOCK_J: tl.constexpr,
        SB: tl.constexpr,
        BLOCK_C: tl.constexpr,
    ):
        pid_b = tl.program_id(0).to(tl.int64)
        pid_r = tl.program_id(1)
        zb_ptr = z_ptr + pid_b * K * D
        zob_ptr = zout_ptr + pid_b * K * D
        sb_ptr = s_ptr + pid_b * K
        offs_d = tl.arange(0, D_PAD)
        dmask = offs_d < D
        offs_r = pid_r * SB + tl.arange(0, SB)  # this program's slots (= ranks of its tokens)
        slot_valid = offs_r < NSEL

        # 1) rank every token (ties to the lowest index), copy the unselected ones, find this block's slots
        sel_idx = tl.zeros([SB], dtype=tl.int32)
        for i0 in range(0, K, BLOCK_I):
            offs_i = i0 + tl.arange(0, BLOCK_I)
            valid_i = offs_i < K
            s_i = tl.load(sb_ptr + offs_i, mask=valid_i, other=0.0).to(tl.float32)
            rank = tl.zeros([BLOCK_I], dtype=tl.int32)
            for j0 in range(0, K, BLOCK_J):
                offs_j = j0 + tl.arange(0, BLOCK_J)
                valid_j = offs_j < K
                s_j = tl.load(sb_ptr + offs_j, mask=valid_j, other=0.0).to(tl.float32)
                beats = (s_j[None, :] > s_i[:, None]) | (
                    (s_j[None, :] == s_i[:, None]) & (offs_j[None, :] < offs_i[:, None])
                )
                beats = beats & valid_j[None, :]
                rank += tl.sum(beats.to(tl.int32), axis=1)
            sel_i = valid_i & (rank < k)
            keep = valid_i & (rank >= k) & ((offs_i * 0 + pid_r) == 0)  # only program (b, 0) copies
            km = keep[:, None] & dmask[None, :]
            zoff = offs_i[:, None] * D + offs_d[None, :]
            tl.store(zob_ptr + zoff, tl.load(zb_ptr + zoff, mask=km), mask=km)  # bit-for-bit copy
            tl.store(idsout_ptr + pid_b * K + offs_i, tl.load(ids_ptr + pid_b * K + offs_i, mask=keep), mask=keep)
            match = (rank[None, :] == offs_r[:, None]) & sel_i[None, :]
            sel_idx += tl.sum(tl.where(match, offs_i[None, :], 0), axis=1)

        # 2) gather the selected tokens and apply the edit MLP
        sm2 = slot_valid[:, None] & dmask[None, :]
        tok_off = sel_idx[:, None] * D + offs_d[None, :]
        xz = tl.load(zb_ptr + tok_off, mask=sm2, other=0.0).to(tl.float32)  # [SB, D_PAD]
        sc = tl.load(sb_ptr + sel_idx, mask=slot_valid, other=0.0).to(tl.float32)  # [SB]
        offs_h = tl.arange(0, H_PAD)
        hmask = offs_h < H
        offs_c = tl.arange(0, C2_PAD)
        cmask2 = offs_c < 2 * D
        ctx = tl.load(ctx_ptr + pid_b * 2 * D + offs_c, mask=cmask2, other=0.0).to(tl.float32)
        w1c = tl.load(
            w1_ptr + offs_h[:, None] * (3 * D) + D + offs_c[None, :], mask=hmask[:, None] & cmask2[None, :], other=0.0
        ).to(tl.float32)  # W1[:, d:]
        hc = tl.sum(w1c * ctx[None, :], axis=1)  # [H_PAD]
        if HAS_B1:
            hc += tl.load(b1_ptr + offs_h, mask=hmask, other=0.0).to(tl.float32)
        w1z = tl.load(
            w1_ptr + offs_h[None, :] * (3 * D) + offs_d[:, None], mask=dmask[:, None] & hmask[None, :], other=0.0
        ).to(tl.float32)  # W1[:, :d]^T
        hid = tl.maximum(tl.dot(xz, w1z, input_precision="ieee") + hc[None, :], 0.0)  # [SB, H_PAD]
        w2t = tl.load(
            w2_ptr + offs_d[None, :] * H + offs_h[:, None], mask=hmask[:, None] & dmask[None, :], other=0.0
        ).to(tl.float32)  # W2^T
        e = tl.dot(hid, w2t, input_precision="ieee")  # [SB, D_PAD]
        if HAS_B2:
            e += tl.load(b2_ptr + offs_d, mask=dmask, other=0.0).to(tl.float32)[None, :]
        v = tl.where(sm2, xz + tl.sigmoid(sc)[:, None] * e, 0.0)
        nrm = tl.maximum(tl.sqrt_rn(tl.sum(v * v, axis=1)), 1e-12)
        zn = tl.div_rn(v, nrm[:, None])  # z'
        if WRITE_EDITED:
            tl.store(edited_ptr + pid_b * K * D + tok_off, zn, mask=sm2)

        # 3) re-quantise: running best over codebook tiles, ties to the lowest index
        best_val = tl.full([SB], float("-inf"), tl.float32)
        best_idx = tl.zeros([SB], dtype=tl.int32)
        kc_run = tl.where(pid_r * SB < NSEL, KC, 0)
        for c0 in range(0, kc_run, BLOCK_C):
            cols = c0 + tl.arange(0, BLOCK_C)
            acc = score_tile(zn, cb_ptr, cols, cols < KC, offs_d, dmask, D, DOT, SB, BLOCK_C)
            best_val, best_idx = keep_best(acc, cols, best_val, best_idx)  # ties: lowest index (common)

        # 4) scatter C_n[id] and id back to the selected positions
        qv = tl.load(cb_ptr + best_idx.to(tl.int64)[:, None] * D + offs_d[None, :], mask=sm2)
        tl.store(zob_ptr + tok_off, qv, mask=sm2)
        tl.store(idsout_ptr + pid_b * K + sel_idx, best_idx, mask=slot_valid)


@functools.cache
def _kernel(interpreted: bool):
    """Built lazily in this process's Triton mode (``common.jit``); autotuned when compiled."""
    fn = jit(_token_edit_kernel, do_not_specialize=["BB"])
    if interpreted:
        return fn
    return triton.autotune(
        configs=[triton.Config({"BLOCK_C": bc}, num_warps=w, num_stages=s) for bc, w, s in _TE_CONFIGS_SPEC],
        key=["BB", "KC", "D", "H", "SB", "DOT"],  # BB: log2 bucket of the batch (unused in the body)
        prune_configs_by={"early_config_prune": _prune_te_configs},
    )(fn)


def token_edit_weights(
    z, ids, scores, ctx, w1, b1, w2, b2, codebook_n, k, *, return_edited: bool = False, score_mode: Optional[str] = None
):
    """Fused STE with explicit weights (Triton). See the module doc for the semantics.

    Returns ``(z_out [B, K, d] (z's dtype), ids_out [B, K] (ids' dtype))``, plus ``edited`` (fp32 z' at the
    selected positions, NaN elsewhere) when ``return_edited``. ``score_mode``: "dot" | "ordered" (see
    tokfuse_rt.kernels.vq_lookup).
    """
    require_triton("token_edit")
    _check_args(z, ids, scores, ctx, w1, b1, w2, b2, codebook_n, k)
    tensors = [z, ids, scores, ctx, w1, w2, codebook_n] + [t for t in (b1, b2) if t is not None]
    check_device("token_edit", *tensors)
    dot = resolve_score_mode(score_mode)
    k = int(k)
    bsz, n, d = z.shape
    kc = int(codebook_n.shape[0])
    h = int(w1.shape[0])
    z, ids, scores, ctx = z.contiguous(), ids.contiguous(), scores.contiguous(), ctx.contiguous()
    w1, w2, cb = w1.contiguous(), w2.contiguous(), codebook_n.contiguous()
    b1c = b1.contiguous() if b1 is not None else w1  # dummy pointer when absent (HAS_B1=False)
    b2c = b2.contiguous() if b2 is not None else w2
    z_out = torch.empty_like(z)
    ids_out = torch.empty_like(ids)
    edited = torch.full((bsz, n, d), float("nan"), dtype=torch.float32, device=z.device) if return_edited else z_out
    nsel = max(0, min(k, n))
    if bsz > 0 and n > 0:
        interpreted = interpret()
        kern = _kernel(interpreted)
        sb = min(64, dim_pad(nsel))
        bij = min(_INTERP_BLOCK_IJ if interpreted else _GPU_BLOCK_IJ, dim_pad(n))
        grid = (bsz, max(1, -(-nsel // sb)))
        args = (
            z,
            ids,
            scores,
            ctx,
            w1,
            b1c,
            w2,
            b2c,
            cb,
            z_out,
            ids_out,
            edited,
            n,
            kc,
            nsel,
            nsel,
            min(int(bsz).bit_length(), 24),
        )
        consts = dict(
            D=d,
            D_PAD=dim_pad(d),
            H=h,
            H_PAD=dim_pad(h),
            C2_PAD=dim_pad(2 * d),
            HAS_B1=b1 is not None,
            HAS_B2=b2 is not None,
            WRITE_EDITED=bool(return_edited),
            DOT=dot,
            BLOCK_I=bij,
            BLOCK_J=bij,
            SB=sb,
        )
        if interpreted:
            kern[grid](*args, **consts, BLOCK_C=_INTERP_BLOCK_C)
        else:
            kern[grid](*args, **consts, enable_fp_fusion=True)
    if return_edited:
        return z_out, ids_out, edited
    return z_out, ids_out


def token_edit(
    z, ids, scores, ctx, ste_module, codebook_n, k, *, return_edited: bool = False, score_mode: Optional[str] = None
):
    """Fused STE (Triton) with the edit MLP weights of ``ste_module`` (a SelectiveTokenEditing):
    ``(z_out [B, K, d], ids_out [B, K])``. This is the hook tokfuse_rt/model/ste.py calls."""
    w1, b1, w2, b2 = _ste_weights(ste_module)
    with torch.no_grad():
        return token_edit_weights(
            z,
            ids,
            scores,
            ctx,
            w1.detach(),
            None if b1 is None else b1.detach(),
            w2.detach(),
            None if b2 is None else b2.detach(),
            codebook_n,
            k,
            return_edited=return_edited,
            score_mode=score_mode,
        )
