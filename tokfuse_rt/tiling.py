"""Large images in overlapping tiles, with a bounded peak memory.

The model is two halves: the token pathway (1D tokens on an S×S resize of the whole image -> a base
map [B, C, S, S] and the token ids) and the 2D render (sources + base map upsampled to H×W -> fused
luminance). The render has no global operation: an output pixel depends only on inputs within
``render_halo`` pixels, for windows whose offset is a multiple of ``render_align``. So:

1. **Token input**: each luminance is resized to S×S exactly as the model resizes it (bilinear,
   half-pixel centres, no antialiasing), but from the sources in row blocks: the width pass on each
   block, then the height pass on the H×S intermediate. This gives the same bits as resizing the
   whole image at once (``tests/engine/test_tiling.py`` checks it against the model's own resize), so the
   token ids equal those of an untiled run.
2. **Base map** once: ``runner.run_tokens(ir_s, vis_s, k)``.
3. **Tiles**: the image is cut into tiles of about ``tile`` × ``tile`` pixels (edges on multiples of
   ``render_align``); each is rendered from a window ``render_halo`` pixels larger on every side
   (clipped to the image), with the exact window of the upsampled base map (never the whole H×W
   base map), and only the tile is kept and given its colour.

Memory: the decoded sources and the output, plus one window's working set, whatever H×W.

A backend runs tiles when it has ``run_tokens(ir, vis, k) -> (base, ids)``, ``run_render(ir, vis,
base_up) -> fused`` (float32 numpy [B, ...]), the attributes ``token_size``, ``render_halo`` and
``render_align``, and ``has_halves`` true where it defines it (:func:`supports_tiles`).
"""

from __future__ import annotations

import math

import numpy as np

ROW_BLOCK = 256  # rows of source luminance per step of the token-input resize


def supports_tiles(backend) -> bool:
    """True when ``backend`` can run the model's halves (and says so through ``has_halves``, where it
    has that attribute) and knows the token size, halo and alignment."""
    return (
        bool(getattr(backend, "has_halves", True))
        and all(callable(getattr(backend, m, None)) for m in ("run_tokens", "run_render"))
        and all(getattr(backend, a, None) is not None for a in ("token_size", "render_halo", "render_align"))
    )


def _edges(n: int, tile: int, align: int) -> list[int]:
    """Tile edges over 0..n: ceil(n / tile) tiles of near-equal size, inner edges on multiples of align."""
    k = max(1, math.ceil(n / tile))
    inner = sorted({(i * n // k) // align * align for i in range(1, k)} - {0})
    return [0, *inner, n]


def tile_windows(h: int, w: int, tile: int, halo: int, align: int):
    """[(tile_y0, tile_y1, tile_x0, tile_x1, win_y0, win_y1, win_x0, win_x1)] covering h×w once.

    Windows extend each tile by ``halo`` pixels (start rounded down to a multiple of ``align``) and
    are clipped to the image."""
    if tile < 1 or halo < 0 or align < 1:
        raise ValueError(f"tile={tile}, halo={halo}, align={align}: need tile >= 1, halo >= 0, align >= 1")
    out = []
    ys, xs = _edges(h, tile, align), _edges(w, tile, align)
    for y0, y1 in zip(ys[:-1], ys[1:]):
        for x0, x1 in zip(xs[:-1], xs[1:]):
            wy0, wx0 = max(0, y0 - halo) // align * align, max(0, x0 - halo) // align * align
            out.append((y0, y1, x0, x1, wy0, min(h, y1 + halo), wx0, min(w, x1 + halo)))
    return out


def token_inputs(p, s: int) -> tuple[np.ndarray, np.ndarray]:
    """(ir_s, vis_s) float32 [1, 1, s, s]: the luminance of a Prepared pair resized to s×s as the
    model's bilinear resize does (bit for bit), from ROW_BLOCK rows at a time."""
    import torch
    import torch.nn.functional as F

    h, w = p.shape

    def resize(t, size):
        return F.interpolate(t, size=size, mode="bilinear", align_corners=False)

    parts = ([], [])
    with torch.inference_mode():
        for r in range(0, h, ROW_BLOCK):
            ys = p.luminance(rows=slice(r, r + ROW_BLOCK))
            for acc, y in zip(parts, ys):
                acc.append(resize(torch.from_numpy(y)[None, None], (y.shape[0], s)))
        return tuple(resize(torch.cat(acc, dim=2), (s, s)).numpy() for acc in parts)


def _axis(n_out: int, n_in: int, start: int, stop: int):
    """Indices and weights of the bilinear upsample n_in -> n_out (half-pixel centres) for outputs start..stop-1."""
    scale = np.float32(n_in) / np.float32(n_out)
    src = np.maximum(scale * (np.arange(start, stop, dtype=np.float32) + np.float32(0.5)) - np.float32(0.5), 0)
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    l1 = np.clip(src - i0, 0, 1).astype(np.float32)
    return i0, i1, np.float32(1) - l1, l1


def upsample_window(base: np.ndarray, size, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    """The window [y0:y1, x0:x1] of the bilinear upsample of ``base`` [B, C, S, S'] to ``size`` = (H, W)
    (the model's ``upsample_base``: half-pixel centres), computed for that window only."""
    H, W = size
    r0, r1, a0, a1 = _axis(H, base.shape[2], y0, y1)
    c0, c1, b0, b1 = _axis(W, base.shape[3], x0, x1)
    rows = base[:, :, r0, :] * a0[:, None] + base[:, :, r1, :] * a1[:, None]  # [B, C, y1-y0, S']
    return np.ascontiguousarray(rows[..., c0] * b0 + rows[..., c1] * b1, dtype=np.float32)


def fuse_tiled(runner, p, k: int, tile: int):
    """Fuse a Prepared pair in tiles through ``runner`` (a :class:`tokfuse_rt.runner.Runner`: every step is
    checked and its failures named as in an untiled call). Returns (result in the kind of ``vis``, ids int64 [K])."""
    h, w = p.shape
    ir_s, vis_s = token_inputs(p, runner.token_size)
    base, ids = runner.run_tokens(ir_s, vis_s, k)
    out = p.output()
    for y0, y1, x0, x1, wy0, wy1, wx0, wx1 in tile_windows(h, w, tile, runner.render_halo, runner.render_align):
        y_ir, y_vis = p.luminance(rows=slice(wy0, wy1), cols=slice(wx0, wx1))
        base_up = upsample_window(base, (h, w), wy0, wy1, wx0, wx1)
        fused = runner.render(y_ir[None, None], y_vis[None, None], base_up)
        out.put(y0, x0, fused[0, 0, y0 - wy0 : y1 - wy0, x0 - wx0 : x1 - wx0])
    return out.result(), np.asarray(ids)[0]
