"""Fused VQ lookup: l2-normalise -> nearest codebook entry by cosine -> gather.

    ids, q = vq_lookup(z, codebook_n, normalize=True)      # Triton: ids int32 [N], q [N, d] (codebook dtype)
    ids, q = vq_lookup_ref(z, codebook_n, normalize=True)  # pure PyTorch: oracle, baseline and fallback

Semantics (the model's ``quantize``, tokfuse_rt/model/quant.py): ``z_n = z / max(||z||_2, 1e-12)``
(skipped with ``normalize=False`` when z is already normalised), ``ids = argmax(z_n @ C_n.T)`` with ties
to the lowest index, ``q = C_n[ids]``. ``codebook_n`` must already be l2-normalised [Kc, d].

Kernel design. One program owns BLOCK_N query rows, normalises them once in registers and streams the
codebook in BLOCK_K-row tiles, keeping a running (best score, best index) per row: the N x Kc score
matrix is never stored, only one BLOCK_N x BLOCK_K tile lives in registers at a time. Within a tile the
lowest index among the maxima is taken explicitly (min of the column index over ``acc == max``); across
tiles a strict ``>`` keeps the earlier tile, so exact ties go to the lowest index (``common.keep_best``,
shared with kernels/token_edit.py). The code dimension is
padded to a power of two >= 16 (``tl.arange`` and ``tl.dot`` need it; d = 12 -> 16) with masks.

Score tile, two interchangeable forms of the same sum (``score_mode``):
  "dot"     - ``tl.dot(z_n, C_tile.T, input_precision="ieee")``: fp32 FMA chains on CUDA cores (no TF32:
              ids must match the float32 reference), register-blocked and software-pipelined by Triton.
              Triton lowers it to the same fma sequence for every output element, so identical codebook rows
              get bit-identical scores on the GPU. Default on CUDA.
  "ordered" - an explicit outer-product loop ``acc = fma(z_n[:, j], C[:, j], acc)`` for j = 0..d-1: the
              same fma chain for every (query, code) pair (the GPU's FMA dot computes the same kind of chain).
              Default under the interpreter, where ``tl.dot`` is emulated by a NumPy/BLAS sgemm that does
              NOT give identical columns identical results (nor does ``torch.matmul`` - see
              tests/kernels/test_vq_lookup.py), so only this form makes duplicate-row ties exact there. It is slow
              on a GPU (register pressure), hence not used there. Both forms are tested under the
              interpreter.

Small N (few row programs) under-fills a large GPU: the codebook is then split into NSPLIT chunks handled
by separate programs (grid N-blocks x NSPLIT), each writing a partial (best, index), and a tiny second
kernel reduces the partials in chunk order (strict ``>``: ties still go to the lowest index) and gathers.

On CUDA the main kernel is autotuned (Hopper configurations, ``_VQ_CONFIGS_SPEC``); under the Triton CPU
interpreter (``TRITON_INTERPRET=1``) autotuning is bypassed and one fixed configuration is used.
"""

import functools
from typing import Optional

import torch

from .common import check_device, dim_pad, interpret, jit, require_triton, resolve_score_mode, tl, triton

__all__ = ["vq_lookup", "vq_lookup_ref", "l2norm_ref", "effective_bytes"]


# ----------------------------------------------------------------------------------------------------
# Reference (pure PyTorch): exactly the model's chain (tokfuse_rt.model.quant.l2norm + nearest_code_ref)
# ----------------------------------------------------------------------------------------------------
def l2norm_ref(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """x / max(||x||_2, eps) over the last dim - the same expression as tokfuse_rt.model.quant.l2norm."""
    return x / torch.sqrt((x * x).sum(dim=-1, keepdim=True)).clamp_min(eps)


def vq_lookup_ref(z: torch.Tensor, codebook_n: torch.Tensor, normalize: bool = True, return_scores: bool = False):
    """PyTorch reference: ``(ids int32 [...], q [..., d])`` (+ best scores fp32 when ``return_scores``).

    ``argmax`` returns the first maximum, so exact ties go to the lowest index. (A BLAS matmul may give
    two identical codebook rows scores that differ in the last bit; the kernel does not - see module doc.)
    """
    _check_vq_args(z, codebook_n)
    zf = z.float()
    zn = l2norm_ref(zf) if normalize else zf
    scores = zn @ codebook_n.float().t()
    ids = torch.argmax(scores, dim=-1)
    q = codebook_n[ids]
    ids32 = ids.to(torch.int32)
    if return_scores:
        return ids32, q, scores.gather(-1, ids.unsqueeze(-1)).squeeze(-1)
    return ids32, q


def _check_vq_args(z, codebook_n):
    if not isinstance(z, torch.Tensor) or not isinstance(codebook_n, torch.Tensor):
        raise TypeError("vq_lookup: z and codebook_n must be torch tensors")
    if not z.is_floating_point():
        raise TypeError(f"vq_lookup: z must be a floating tensor, got {z.dtype}")
    if not codebook_n.is_floating_point():
        raise TypeError(f"vq_lookup: codebook_n must be a floating tensor, got {codebook_n.dtype}")
    if codebook_n.dim() != 2 or codebook_n.shape[0] < 1 or codebook_n.shape[1] < 1:
        raise ValueError(f"vq_lookup: codebook_n must be [Kc, d] with Kc, d >= 1, got {tuple(codebook_n.shape)}")
    if z.dim() < 1 or z.shape[-1] != codebook_n.shape[1]:
        raise ValueError(
            f"vq_lookup: z must be [..., d] with d = {codebook_n.shape[1]} (the codebook's code dim), "
            f"got {tuple(z.shape)}"
        )
    if z.device != codebook_n.device:
        raise ValueError(f"vq_lookup: z is on {z.device} but codebook_n is on {codebook_n.device}")


# ----------------------------------------------------------------------------------------------------
# Triton kernels
# ----------------------------------------------------------------------------------------------------
# Hopper (H100/H200) configurations for the "dot" form. Work per (query, code) pair is D_PAD = 16 FMAs on
# CUDA cores (fp32 IEEE; tensor cores would need TF32 and change ids), so the kernel is FMA-bound for
# large N: the 4096 x 12 fp32 codebook (192 KiB) is re-read by every row-block program but stays resident
# in the 50 MB L2, and num_stages 3-4 lets Triton pipeline the next codebook tile into shared memory
# (cp.async) while the current one is consumed (10-30 KiB of the 228 KiB per SM). Each config was
# compiled for sm_90 with this Triton (all four NORMALIZE x FINAL variants, d = 12) and uses 96-204
# registers/thread with no local-memory stack (candidates that spilled - 32x128/4 warps, 128x128/16 warps,
# 64x256/16 warps on some variants, 64x128/4 warps - are left out); tests/kernels/test_vq_lookup.py recompiles
# them. Small tiles (16-32 rows) keep more programs in flight for mid-size N; 64-128 row tiles with 8-16
# warps reuse each codebook tile across more queries for large N. Small N is handled by codebook splits
# (NSPLIT) rather than by tiny tiles, so the autotune key carries NSPLIT.
_VQ_CONFIGS_SPEC = [
    # BLOCK_N, BLOCK_K, num_warps, num_stages
    (16, 128, 4, 3),
    (32, 64, 4, 3),
    (64, 64, 4, 3),
    (64, 128, 8, 3),
    (64, 128, 8, 4),
    (128, 64, 8, 3),
    (128, 64, 8, 4),
    (128, 64, 16, 3),
]
# Fixed configuration under the CPU interpreter (no autotuning there): large tiles = fewer Python-level
# loop iterations; each interpreted op is a NumPy op over the whole tile. (The tests shrink these to cover
# many and partial tiles.)
_INTERP_BLOCK_N = 128
_INTERP_BLOCK_K = 2048
_REDUCE_BLOCK_N = 128
_CHUNK_ALIGN = 128  # codebook split chunks are multiples of the largest BLOCK_K

if triton is not None:
    from .common import keep_best, merge_best, score_tile

    def _vq_lookup_kernel(
        z_ptr,
        cb_ptr,
        ids_ptr,
        q_ptr,
        score_ptr,
        pval_ptr,
        pidx_ptr,
        N,
        KC,
        CHUNK,
        NSPLIT,
        NB,
        D: tl.constexpr,
        D_PAD: tl.constexpr,
        NORMALIZE: tl.constexpr,
        FINAL: tl.constexpr,
        DOT: tl.constexpr,
        BLOCK_N: tl.constexpr,
        BLOCK_K: tl.constexpr,
    ):
        pid_n = tl.program_id(0)
        pid_s = tl.program_id(1)
        rows = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        rmask = rows < N
        rows64 = rows.to(tl.int64)
        dcol = tl.arange(0, D_PAD)
        dmask = dcol < D
        m2 = rmask[:, None] & dmask[None, :]

        zn = tl.load(z_ptr + rows64[:, None] * D + dcol[None, :], mask=m2, other=0.0).to(tl.float32)
        if NORMALIZE:
            # z / max(||z||, 1e-12) with IEEE sqrt and division (as torch); padded columns stay 0
            nrm = tl.maximum(tl.sqrt_rn(tl.sum(zn * zn, axis=1)), 1e-12)
            zn = tl.div_rn(zn, nrm[:, None])

        best_val = tl.full([BLOCK_N], float("-inf"), tl.float32)
        best_idx = tl.zeros([BLOCK_N], dtype=tl.int32)
        k_begin = pid_s * CHUNK
        k_end = tl.minimum(k_begin + CHUNK, KC)
        for k0 in range(k_begin, k_end, BLOCK_K):
            cols = k0 + tl.arange(0, BLOCK_K)
            acc = score_tile(zn, cb_ptr, cols, cols < k_end, dcol, dmask, D, DOT, BLOCK_N, BLOCK_K)
            best_val, best_idx = keep_best(acc, cols, best_val, best_idx)  # ties: lowest index (common)

        if FINAL:
            tl.store(ids_ptr + rows64, best_idx, mask=rmask)
            tl.store(score_ptr + rows64, best_val, mask=rmask)
            qv = tl.load(cb_ptr + best_idx.to(tl.int64)[:, None] * D + dcol[None, :], mask=m2)
            tl.store(q_ptr + rows64[:, None] * D + dcol[None, :], qv, mask=m2)
        else:
            off = pid_s.to(tl.int64) * N + rows64
            tl.store(pval_ptr + off, best_val, mask=rmask)
            tl.store(pidx_ptr + off, best_idx, mask=rmask)

    def _vq_reduce_kernel(
        pval_ptr,
        pidx_ptr,
        cb_ptr,
        ids_ptr,
        q_ptr,
        score_ptr,
        N,
        NSPLIT,
        D: tl.constexpr,
        D_PAD: tl.constexpr,
        BLOCK_N: tl.constexpr,
    ):
        rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
        rmask = rows < N
        rows64 = rows.to(tl.int64)
        best_val = tl.load(pval_ptr + rows64, mask=rmask, other=float("-inf"))
        best_idx = tl.load(pidx_ptr + rows64, mask=rmask, other=0)
        for s in range(1, NSPLIT):  # chunks in codebook order; strict > keeps lowest index
            v = tl.load(pval_ptr + s * N + rows64, mask=rmask, other=float("-inf"))
            i = tl.load(pidx_ptr + s * N + rows64, mask=rmask, other=0)
            best_val, best_idx = merge_best(v, i, best_val, best_idx)
        dcol = tl.arange(0, D_PAD)
        m2 = rmask[:, None] & (dcol < D)[None, :]
        tl.store(ids_ptr + rows64, best_idx, mask=rmask)
        tl.store(score_ptr + rows64, best_val, mask=rmask)
        qv = tl.load(cb_ptr + best_idx.to(tl.int64)[:, None] * D + dcol[None, :], mask=m2)
        tl.store(q_ptr + rows64[:, None] * D + dcol[None, :], qv, mask=m2)


@functools.cache
def _kernels(interpreted: bool):
    """JIT objects of this process's Triton mode (``common.jit``), built on first use so that importing
    this module never compiles or interprets; autotuned when compiled."""
    main = jit(_vq_lookup_kernel, do_not_specialize=["NB"])
    reduce = jit(_vq_reduce_kernel)
    if interpreted:
        return main, reduce
    tuned = triton.autotune(
        configs=[
            triton.Config({"BLOCK_N": bn, "BLOCK_K": bk}, num_warps=w, num_stages=s)
            for bn, bk, w, s in _VQ_CONFIGS_SPEC
        ],
        key=["NB", "KC", "D", "NSPLIT", "NORMALIZE", "DOT"],  # NB: log2 bucket of N (unused in the body)
    )(main)
    return tuned, reduce


def _auto_splits(n_rows: int, kc: int, device: torch.device) -> int:
    """Codebook splits so that small batches still fill the GPU (about 2 programs per SM)."""
    if device.type != "cuda":
        return 1
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    row_programs = -(-n_rows // 64)
    max_splits = -(-kc // (4 * _CHUNK_ALIGN))  # chunks of >= 512 codes
    return max(1, min(max_splits, -(-2 * sms // row_programs)))


def vq_lookup(
    z: torch.Tensor,
    codebook_n: torch.Tensor,
    normalize: bool = True,
    *,
    return_scores: bool = False,
    splits: Optional[int] = None,
    score_mode: Optional[str] = None,
):
    """Nearest l2-normalised codebook entry by cosine, fused (Triton).

    z [..., d] (any float dtype; computed in fp32), codebook_n [Kc, d] l2-normalised, same device (CUDA,
    or CPU under ``TRITON_INTERPRET=1``). Returns ``(ids int32 [...], q [..., d])`` with q bit-exact rows
    of ``codebook_n`` (its dtype), plus the best score (fp32; the cosine when ``normalize``) when
    ``return_scores``. Ties go to the lowest index. ``splits`` forces the number of codebook chunks
    (default: automatic on CUDA, 1 under the interpreter); ``score_mode`` "dot" | "ordered" (module doc).
    """
    require_triton("vq_lookup")
    _check_vq_args(z, codebook_n)
    check_device("vq_lookup", z, codebook_n)
    lead = z.shape[:-1]
    d = int(codebook_n.shape[1])
    zf = z.reshape(-1, d).contiguous()
    cb = codebook_n.contiguous()
    n = int(zf.shape[0])
    dev = zf.device
    ids = torch.empty(n, dtype=torch.int32, device=dev)
    q = torch.empty(n, d, dtype=cb.dtype, device=dev)
    scores = torch.empty(n, dtype=torch.float32, device=dev)
    if n > 0:
        _launch_vq(zf, cb, ids, q, scores, bool(normalize), splits, resolve_score_mode(score_mode))
    ids, q, scores = ids.reshape(lead), q.reshape(*lead, d), scores.reshape(lead)
    return (ids, q, scores) if return_scores else (ids, q)


def _launch_vq(zf, cb, ids, q, scores, normalize, splits, dot):
    n, d = zf.shape
    kc = cb.shape[0]
    interpreted = interpret()
    main, reduce = _kernels(interpreted)
    if splits is None:
        splits = 1 if interpreted else _auto_splits(n, kc, zf.device)
    splits = max(1, min(int(splits), kc))
    chunk = -(-kc // splits)
    if not interpreted:
        chunk = -(-chunk // _CHUNK_ALIGN) * _CHUNK_ALIGN
    nsplit = -(-kc // chunk)
    final = nsplit == 1
    d_pad = dim_pad(d)
    if final:
        pval, pidx = scores, ids  # not touched on the FINAL path
    else:
        pval = torch.empty(nsplit, n, dtype=torch.float32, device=zf.device)
        pidx = torch.empty(nsplit, n, dtype=torch.int32, device=zf.device)
    args = (zf, cb, ids, q, scores, pval, pidx, n, kc, chunk, nsplit, min(int(n).bit_length(), 24))
    consts = dict(D=d, D_PAD=d_pad, NORMALIZE=normalize, FINAL=final, DOT=dot)
    if interpreted:
        grid = (triton.cdiv(n, _INTERP_BLOCK_N), nsplit)
        main[grid](*args, **consts, BLOCK_N=_INTERP_BLOCK_N, BLOCK_K=_INTERP_BLOCK_K)
    else:
        main[lambda meta: (triton.cdiv(n, meta["BLOCK_N"]), nsplit)](*args, **consts, enable_fp_fusion=True)
    if not final:
        reduce[(triton.cdiv(n, _REDUCE_BLOCK_N),)](
            pval, pidx, cb, ids, q, scores, n, nsplit, D=d, D_PAD=d_pad, BLOCK_N=_REDUCE_BLOCK_N, num_warps=4
        )


def effective_bytes(n: int, kc: int, d: int, z_bytes: int = 4, cb_bytes: int = 4) -> int:
    """Minimum memory traffic of one call (read z and the codebook once, write ids and q): the numerator
    of the benchmarks' effective-bandwidth figure."""
    return n * d * z_bytes + kc * d * cb_bytes + n * 4 + n * d * cb_bytes
