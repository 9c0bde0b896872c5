"""The int8 render half: calibration ranges, the quantised tables of ``tokfuse_rt._C.NativeRender.run_int8``
and ``render_int8_ref``, its pure-PyTorch reference.

What is quantised: the render half's three 3×3 convolutions (detail conv1, detail conv2, head conv1).
Their inputs are uint8 activations, per channel: the sources (ir, vis in [0, 1]) with scale 1/255;
detail conv1's and conv2's outputs (after ReLU, zero point 0) with scale ``max / 255`` of the
calibration; the head's base channel (which can be negative) with scale ``(hi - lo) / 255`` and a zero
point. Weights: int8, symmetric, per output channel, with each input channel's activation scale folded
in (``w[co, ci] * s_in[ci]``). Accumulation is exact (int32); each convolution's output is
``float(acc) * scale + bias`` (float32, multiply then add), ReLU, and for conv1 and conv2 requantised
for the next layer (``round(min(v / s_next, 255))``, half to even). Head conv1's output, the 1×1
convolution, the head's rule and the base layers stay float32, as does the token pathway (the token
ids are the float32 model's own).

Ranges come from a checkpoint's metadata (``extra["render_int8"]``, written by
``python -m export.to_native CKPT -o OUT --calib DIR``): ``{"version": 1, "h1": [C maxima], "d": [C
maxima], "base": [lo, hi], "calibration": {...}}``.

Shapes: ir, vis [B, 1, H, W] float32 in [0, 1]; base_up [B, nbase, H, W]; fused [B, 1, H, W].
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

RANGES_KEY = "render_int8"
RANGES_VERSION = 1
MIN_RANGE = 1e-6  # a channel never positive in calibration: any later value saturates at ~0


def ranges_from_meta(meta: dict) -> dict | None:
    """The int8 ranges stored in a checkpoint's metadata, or None."""
    extra = meta.get("extra") or {}
    return extra.get(RANGES_KEY)


def check_ranges(r, channels: int, where: str) -> dict:
    """``r`` validated for a model of ``channels`` detail channels; ValueError naming ``where``."""
    if not isinstance(r, dict) or r.get("version") != RANGES_VERSION:
        raise ValueError(f"{where}: int8 ranges must be a dict of version {RANGES_VERSION}, got {r!r:.80}")
    for key, n in (("h1", channels), ("d", channels), ("base", 2)):
        v = r.get(key)
        if not isinstance(v, list) or len(v) != n or not all(isinstance(x, (int, float)) for x in v):
            raise ValueError(f"{where}: int8 ranges {key!r} must be a list of {n} numbers")
        if not np.all(np.isfinite(v)):
            raise ValueError(f"{where}: int8 ranges {key!r} must be finite")
    lo, hi = r["base"]
    if not hi > lo:
        raise ValueError(f"{where}: int8 ranges 'base' must be [lo, hi] with hi > lo, got {r['base']}")
    return r


def calibrate(model, pairs) -> dict:
    """Ranges of the render half's activations over ``pairs`` (an iterable of (ir, vis) float32 [H, W]
    luminance arrays in [0, 1]): per-channel maxima of detail conv1's and conv2's outputs, and the
    base channel's [min, max] (widened to include 0)."""
    h1 = d = None
    lo, hi, n = 0.0, 0.0, 0
    with torch.inference_mode():
        for a, b in pairs:
            ir = torch.from_numpy(np.ascontiguousarray(a, np.float32))[None, None]
            vis = torch.from_numpy(np.ascontiguousarray(b, np.float32))[None, None]
            base, _ = model.token_pathway(ir, vis)
            up = model.upsample_base(base[:, :1], ir.shape[-2:])
            x1 = torch.relu(model.detail.conv1(torch.cat([ir, vis], 1)))
            x2 = torch.relu(model.detail.conv2(x1))
            m1, m2 = x1.amax(dim=(0, 2, 3)).numpy(), x2.amax(dim=(0, 2, 3)).numpy()
            h1 = m1 if h1 is None else np.maximum(h1, m1)
            d = m2 if d is None else np.maximum(d, m2)
            lo, hi = min(lo, float(up.min())), max(hi, float(up.max()))
            n += 1
    if n == 0:
        raise ValueError("calibrate: no pairs")
    return {
        "version": RANGES_VERSION,
        "h1": [float(v) for v in h1],
        "d": [float(v) for v in d],
        "base": [lo, hi],
    }


def _act_scales(maxima) -> np.ndarray:
    return np.maximum(np.asarray(maxima, np.float64), MIN_RANGE) / 255.0


def _quant_conv(conv, s_in, z_in, inv_out):
    """(w int8 [co, ci, 3, 3], acc0 int32 [co], scale f32 [co], bias f32 [co], inv f32 [co] or None)."""
    w = conv.weight.detach().double().numpy() * s_in[None, :, None, None]
    sw = np.maximum(np.abs(w).reshape(w.shape[0], -1).max(axis=1), 1e-30) / 127.0
    wq = np.clip(np.rint(w / sw[:, None, None, None]), -127, 127).astype(np.int8)
    acc0 = -(wq.astype(np.int64) * z_in[None, :, None, None]).sum(axis=(1, 2, 3))
    inv = None if inv_out is None else np.asarray(inv_out, np.float32)
    return wq, acc0.astype(np.int32), sw.astype(np.float32), conv.bias.detach().float().numpy(), inv


def quant_tables(model, ranges: dict) -> dict:
    """The quantised convolutions and the base channel's quantisation for ``NativeRender.quantize``."""
    c = model.cfg.detail_channels
    r = check_ranges(ranges, c, "quant_tables")
    s_x = np.full(2, 1.0 / 255.0)
    s_h1, s_d = _act_scales(r["h1"]), _act_scales(r["d"])
    lo, hi = r["base"]
    s_base = (hi - lo) / 255.0
    base_zero = float(np.clip(np.rint(-lo / s_base), 0, 255))
    s3 = np.concatenate([s_d, [s_base], s_x])
    z3 = np.zeros(c + 3)
    z3[c] = base_zero
    return {
        "conv1": _quant_conv(model.detail.conv1, s_x, np.zeros(2), 1.0 / s_h1),
        "conv2": _quant_conv(model.detail.conv2, s_h1, np.zeros(c), 1.0 / s_d),
        "conv3": _quant_conv(model.head.conv1, s3, z3, None),
        "base_inv": float(np.float32(1.0 / s_base)),
        "base_zero": base_zero,
    }


def _qconv_ref(x_q: torch.Tensor, table, zero_pad: torch.Tensor) -> torch.Tensor:
    """uint8-valued x_q [B, ci, H, W] (float64) -> v = relu(float(acc) * scale + bias) float32, and the
    requantised uint8 values (float32) when the table has inv."""
    wq, acc0, scale, bias, inv = table
    # zero padding of the real values = each channel's zero point in the quantised domain
    xp = F.pad(x_q - zero_pad[None, :, None, None], (1, 1, 1, 1)) + zero_pad[None, :, None, None]
    acc = (
        F.conv2d(xp, torch.from_numpy(wq.astype(np.float64)))
        + torch.from_numpy(acc0.astype(np.float64))[None, :, None, None]
    )
    v = acc.float() * torch.from_numpy(scale)[None, :, None, None] + torch.from_numpy(bias)[None, :, None, None]
    v = torch.relu(v)
    if inv is None:
        return v
    return torch.round(torch.clamp(v * torch.from_numpy(inv)[None, :, None, None], max=255.0))


def _q01(x: torch.Tensor) -> torch.Tensor:
    return torch.round(torch.clamp(x * 255.0, 0.0, 255.0))


def render_int8_ref(model, tables: dict, ir, vis, base_up) -> torch.Tensor:
    """The int8 render half in PyTorch (the reference of ``NativeRender.run_int8``): float32 tensors
    ir, vis [B, 1, H, W] and base_up [B, nbase, H, W] -> fused [B, 1, H, W]."""
    c = model.cfg.detail_channels
    with torch.inference_mode():
        x = torch.cat([_q01(ir), _q01(vis)], 1).double()
        h1 = _qconv_ref(x, tables["conv1"], torch.zeros(2, dtype=torch.float64))
        d = _qconv_ref(h1.double(), tables["conv2"], torch.zeros(c, dtype=torch.float64))
        qb = torch.round(base_up[:, :1] * tables["base_inv"] + tables["base_zero"]).clamp(0.0, 255.0)
        z3 = torch.zeros(c + 3, dtype=torch.float64)
        z3[c] = tables["base_zero"]
        dq = torch.cat([d, qb, _q01(ir), _q01(vis)], 1).double()
        h = _qconv_ref(dq, tables["conv3"], z3)
        return model.head.rule(model.head.conv2(h), base_up, ir, vis)
