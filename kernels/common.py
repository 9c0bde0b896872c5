"""What the Triton kernels share: the triton import, the run-mode and device checks, and the two device
functions of the nearest-code search (``score_tile``, ``keep_best``), written once for vq_lookup's
search and token_edit's re-quantisation.

Modes. Triton fixes its mode (compiled or the CPU interpreter, ``TRITON_INTERPRET=1``) when it is first
imported: its own helpers (``tl.max``, ``tl.sigmoid``, ...) are jit objects of that mode, and a kernel
can only call device functions of its own mode. :func:`jit` therefore builds every jit object here and
in the kernel modules in the mode triton was imported in (:func:`interpret`), whatever
``TRITON_INTERPRET`` says later. Nothing is compiled or interpreted at import.

Tie rule: the nearest code is the one with the highest score, the lowest index among equal
scores. Within a tile :func:`keep_best` takes the lowest column index among the maxima explicitly;
across tiles (and across the codebook chunks of vq_lookup's split search) :func:`merge_best` keeps
the earlier candidate unless the later one is strictly better. Callers visit the codebook in
increasing index order.
"""

from __future__ import annotations

from . import interpreter_enabled

try:  # the kernels need triton; the references do not
    import triton
    import triton.language as tl

    TRITON_IMPORT_ERROR: BaseException | None = None
except Exception as _e:  # noqa: BLE001 - ImportError, or a broken triton install
    triton = None
    tl = None
    TRITON_IMPORT_ERROR = _e

MIN_DIM = 16  # tl.dot needs every dimension >= 16


def require_triton(what: str) -> None:
    """ImportError naming ``what`` and its ``*_ref`` fallback when triton cannot be imported."""
    if triton is None:
        raise ImportError(
            f"{what} needs triton, which could not be imported ({TRITON_IMPORT_ERROR!r}). Install it with "
            f"`pip install triton` (Linux), or use the pure-PyTorch reference {what}_ref."
        ) from TRITON_IMPORT_ERROR


def interpret() -> bool:
    """Whether Triton runs in its CPU interpreter in this process (the mode it was first imported in)."""
    from triton.runtime.interpreter import InterpretedFunction

    return isinstance(tl.max, InterpretedFunction)


def jit(fn, **kwargs):
    """``triton.jit(fn, **kwargs)`` in the mode of :func:`interpret`."""
    if interpret():
        from triton.runtime.interpreter import InterpretedFunction

        return InterpretedFunction(fn, **kwargs)
    from triton.runtime.jit import JITFunction

    return JITFunction(fn, **kwargs)


def check_device(what: str, *tensors) -> None:
    """All tensors on one device, and a device the kernels can run on in this mode (CUDA when compiled;
    anything under the interpreter). Raises ValueError / RuntimeError naming ``what``."""
    devs = {t.device for t in tensors}
    if len(devs) > 1:
        raise ValueError(f"{what}: all tensors must be on one device, got {sorted(map(str, devs))}")
    if interpret():
        return
    dev = next(iter(devs))
    if dev.type != "cuda":
        late = " (it is set now, but triton was imported before it was)" if interpreter_enabled() else ""
        raise RuntimeError(
            f"{what}: Triton kernels need CUDA tensors (got tensors on {dev}). To run them on the CPU in "
            f"Triton's interpreter, set TRITON_INTERPRET=1 before triton is first imported{late}; "
            f"or use {what}_ref"
        )


def dim_pad(n: int) -> int:
    """Padded size of a dimension that feeds tl.arange / tl.dot: a power of two, at least 16."""
    return max(MIN_DIM, 1 << max(0, int(n) - 1).bit_length())


def resolve_score_mode(mode: str | None) -> bool:
    """True for the "dot" score form, False for "ordered" (kernels.vq_lookup explains both).
    Default: "dot" compiled on CUDA, "ordered" under the interpreter."""
    if mode is None:
        return not interpret()
    if mode not in ("dot", "ordered"):
        raise ValueError(f"score_mode must be 'dot', 'ordered' or None, got {mode!r}")
    return mode == "dot"


if triton is not None:

    def _merge_best(val, idx, best_val, best_idx):
        """(best_val, best_idx) updated with candidates (val, idx) that are strictly better: an earlier
        candidate keeps a tie."""
        upd = val > best_val
        return tl.where(upd, val, best_val), tl.where(upd, idx, best_idx)

    def _keep_best(acc, cols, best_val, best_idx):
        """Fold one score tile ``acc`` [R, C] (columns = codebook indices ``cols`` [C], masked columns at
        -inf) into the running (best score, best index) [R]: the tile's maximum, at its lowest index."""
        tmax = tl.max(acc, axis=1)
        targ = tl.min(tl.where(acc == tmax[:, None], cols[None, :], 2147483647), axis=1)
        return merge_best(tmax, targ, best_val, best_idx)

    def _score_tile(
        zn, cb_ptr, cols, cmask, dcol, dmask, D: tl.constexpr, DOT: tl.constexpr, ROWS: tl.constexpr, COLS: tl.constexpr
    ):
        """Scores [ROWS, COLS] of the fp32 rows ``zn`` [ROWS, D_PAD] (zero beyond D) against the codebook
        rows ``cols`` (row-major [KC, D] at ``cb_ptr``; columns outside ``cmask`` get -inf), in the "dot"
        form (tl.dot, IEEE fp32) or the "ordered" form (one explicit fma chain over j = 0..D-1)."""
        if DOT:
            ct = tl.load(
                cb_ptr + cols[None, :] * D + dcol[:, None], mask=dmask[:, None] & cmask[None, :], other=0.0
            ).to(tl.float32)
            acc = tl.dot(zn, ct, input_precision="ieee")
        else:
            acc = tl.zeros([ROWS, COLS], dtype=tl.float32)
            for j in tl.static_range(D):
                zj = tl.sum(tl.where(dcol[None, :] == j, zn, 0.0), axis=1)  # column j, exactly
                cj = tl.load(cb_ptr + cols * D + j, mask=cmask, other=0.0).to(tl.float32)
                acc = tl.fma(zj[:, None], cj[None, :], acc)
        return tl.where(cmask[None, :], acc, float("-inf"))

    merge_best = jit(_merge_best)
    keep_best = jit(_keep_best)
    score_tile = jit(_score_tile)
