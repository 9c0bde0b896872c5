"""Input preparation, in one place: accept the input kinds (paths, PIL images, numpy, torch),
validate once, decide the colour of the result, and build it in the kind of the visible input.

Colour rule: the fused luminance takes the chroma of the visible (second) image when that image
is colour (an RGB photo, a pseudo-colour PET/SPECT image); a gray visible image gives a gray result,
whatever the infrared (first) image is. Gray stored as RGB with equal channels counts as gray.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Union

import numpy as np

from .imageio import (
    DEFAULT_MAX_PIXELS,
    MIN_SIZE,
    check_pixels,
    colour_ext,
    is_colour,
    load_image,
    luminance,
    pil_to_array,
    pixels_contiguous,
    rgb_to_ycbcr,
    to_uint8,
    ycbcr_to_rgb,
)

if TYPE_CHECKING:
    import PIL.Image
    import torch

#: What ``Engine.fuse`` takes for one image (and returns, in the kind of the visible input; paths give numpy).
ImageInput = Union[str, os.PathLike, np.ndarray, "PIL.Image.Image", "torch.Tensor"]
ImageOutput = Union[np.ndarray, "PIL.Image.Image", "torch.Tensor"]

_ROWS = 512  # row block for whole-image checks


@dataclass(frozen=True)
class Spec:
    """How an input arrived, so the output can be returned the same way."""

    kind: str  # "path" | "pil" | "numpy" | "torch"
    layout: str  # "hw" | "hw1" | "hwc" (numpy/pil) ; "hw" | "1hw" | "3hw" (torch)
    dtype: object = None  # numpy dtype or torch dtype of the input
    device: object = None


def _is_torch(x) -> bool:
    mod = type(x).__module__
    return mod.startswith("torch") and hasattr(x, "detach")


def _is_pil(x) -> bool:
    return type(x).__module__.startswith("PIL.") and hasattr(x, "mode") and hasattr(x, "size")


def to_array(x, name: str, max_pixels=DEFAULT_MAX_PIXELS, depth: str = "auto") -> tuple[np.ndarray, Spec]:
    """Input -> (image as uint8 or float32 numpy (H, W) / (H, W, 3), Spec). Raises naming ``name``.

    ``max_pixels`` bounds every kind of input (files: from the header, before decoding); ``depth``
    is the rule for files and PIL images with more than 8 bits (see ``imageio.scale_to_unit``).
    """
    if isinstance(x, (str, os.PathLike)):
        arr, spec = load_image(x, name, max_pixels=max_pixels, depth=depth), Spec("path", "hw")
    elif isinstance(x, bytes):
        raise TypeError(f"{name}: got bytes; pass a file path, a PIL image, a numpy array or a torch tensor")
    elif _is_pil(x):
        arr, spec = pil_to_array(x, name, depth=depth, max_pixels=max_pixels), Spec("pil", "hw", x.mode)
    elif _is_torch(x):
        if x.ndim >= 2:
            check_pixels(x.shape[-1], x.shape[-2], name, max_pixels)
        arr, spec = _from_torch(x, name)
    elif isinstance(x, np.ndarray):
        if x.ndim >= 2:
            check_pixels(x.shape[1], x.shape[0], name, max_pixels)
        arr, spec = _from_numpy(x, name)
    else:
        raise TypeError(
            f"{name}: unsupported input type {type(x).__name__}; "
            "expected a path, PIL image, numpy array or torch tensor"
        )
    _check_values(arr, name)
    return arr, spec


def _from_numpy(a: np.ndarray, name: str) -> tuple[np.ndarray, Spec]:
    if a.dtype == np.bool_ or not (a.dtype == np.uint8 or np.issubdtype(a.dtype, np.floating)):
        raise TypeError(f"{name}: numpy dtype {a.dtype} not supported; use uint8 (0..255) or float in [0, 1]")
    if a.ndim == 2:
        layout = "hw"
    elif a.ndim == 3 and a.shape[2] == 1:
        a, layout = a[..., 0], "hw1"
    elif a.ndim == 3 and a.shape[2] == 3:
        layout = "hwc"
    elif a.ndim == 3:
        raise ValueError(f"{name}: expected 1 or 3 channels (H, W, C), got shape {a.shape}")
    else:
        raise ValueError(f"{name}: expected an (H, W) or (H, W, 3) array, got shape {a.shape}")
    dtype = a.dtype
    if dtype != np.uint8:
        a = a.astype(np.float32, copy=False)
    return a, Spec("numpy", layout, dtype)


def _from_torch(t, name: str) -> tuple[np.ndarray, Spec]:
    import torch

    if t.dtype not in (torch.uint8, torch.float16, torch.bfloat16, torch.float32, torch.float64):
        raise TypeError(f"{name}: torch dtype {t.dtype} not supported; use uint8 or float in [0, 1]")
    if t.ndim == 2:
        layout = "hw"
    elif t.ndim == 3 and t.shape[0] in (1, 3):
        layout = f"{t.shape[0]}hw"
    elif t.ndim == 3:
        raise ValueError(f"{name}: expected a (H, W), (1, H, W) or (3, H, W) tensor, got shape {tuple(t.shape)}")
    else:
        raise ValueError(f"{name}: expected a (H, W), (1, H, W) or (3, H, W) tensor, got shape {tuple(t.shape)}")
    if t.device.type == "meta" or t.is_sparse:
        raise ValueError(
            f"{name}: a torch tensor on the {t.device.type} device (layout {t.layout}) holds no readable data"
        )
    spec = Spec("torch", layout, t.dtype, t.device)
    t = t.detach()
    if t.dtype in (torch.float16, torch.bfloat16, torch.float64):
        t = t.float()
    try:
        a = t.cpu().numpy()
    except (RuntimeError, NotImplementedError, TypeError) as e:
        raise ValueError(f"{name}: cannot read the torch tensor on {t.device}: {str(e).splitlines()[0]}") from None
    if layout == "1hw":
        a = a[0]
    elif layout == "3hw":
        a = np.moveaxis(a, 0, -1)
    return a, spec


def _check_values(a: np.ndarray, name: str) -> None:
    h, w = a.shape[:2]
    if h < MIN_SIZE or w < MIN_SIZE:
        raise ValueError(f"{name}: image is {w}x{h}; the minimum size is {MIN_SIZE}x{MIN_SIZE}")
    if a.dtype != np.uint8:
        if not all(np.isfinite(a[r : r + _ROWS]).all() for r in range(0, h, _ROWS)):
            raise ValueError(f"{name}: array contains NaN or inf")
        lo, hi = float(a.min()), float(a.max())
        if lo < 0.0 or hi > 1.0:
            raise ValueError(
                f"{name}: float input must be in [0, 1], got values in [{lo:.4g}, {hi:.4g}] "
                "(pass uint8 for 0..255 data)"
            )


def make_output(out_u8: np.ndarray, out_f: np.ndarray, spec: Spec):
    """Build the result in the kind of the visible input.

    ``out_u8`` is the fused image as uint8 (H, W) or (H, W, 3); ``out_f`` the same in float32 [0, 1]
    (needed only for float numpy/torch results; None otherwise).
    Paths give uint8 numpy; PIL gives PIL (mode L or RGB); numpy keeps dtype and layout (a gray
    result for an (H, W, 3) input repeats the channel); torch keeps dtype, layout and device.
    """
    colour = out_u8.ndim == 3
    if spec.kind == "path":
        return out_u8
    if spec.kind == "pil":
        from PIL import Image

        return Image.fromarray(out_u8, "RGB" if colour else "L")
    if spec.kind == "numpy":
        src = out_u8 if spec.dtype == np.uint8 else out_f.astype(spec.dtype, copy=False)
        return _layout_numpy(src, spec.layout, colour)
    import torch

    src = out_u8 if spec.dtype == torch.uint8 else out_f
    a = _layout_numpy(src, {"hw": "hw", "1hw": "hw1", "3hw": "hwc"}[spec.layout], colour)
    t = torch.from_numpy(np.ascontiguousarray(a))
    if t.ndim == 3:
        t = t.permute(2, 0, 1).contiguous()
    return t.to(device=spec.device, dtype=spec.dtype)


def _layout_numpy(a: np.ndarray, layout: str, colour: bool) -> np.ndarray:
    if colour:
        return a  # (H, W, 3): colour always comes back with 3 channels
    if layout == "hw1":
        return a[..., None]
    if layout == "hwc":
        return np.repeat(a[..., None], 3, axis=-1)
    return a


class Prepared:
    """One validated pair: the two sources (uint8 or float32 [0, 1]), the colour decision and how to
    return the result. Luminance is computed on demand, for the whole image or a window, so large
    images can be processed in tiles without full-size float copies."""

    __slots__ = ("ir", "vis", "colour", "spec", "rig")

    def __init__(self, ir, vis, max_pixels=DEFAULT_MAX_PIXELS, depth: str = "auto", align=None):
        a, _ = to_array(ir, "ir", max_pixels, depth)
        b, spec = to_array(vis, "vis", max_pixels, depth)
        if align is not None:  # a camera rig (tokfuse_rt.rig.Rig): the infrared goes onto the visible grid
            align.check_sizes((a.shape[1], a.shape[0]), (b.shape[1], b.shape[0]))
            a = align.warp(a)
        elif a.shape[:2] != b.shape[:2]:
            raise ValueError(
                f"ir and vis sizes differ: ir is {a.shape[1]}x{a.shape[0]}, vis is {b.shape[1]}x{b.shape[0]} "
                "(the pair must be registered and of the same size, or pass a camera rig: --align RIG)"
            )
        self.ir, self.vis, self.spec, self.rig = a, b, spec, align
        self.colour = is_colour(b)

    @property
    def shape(self) -> tuple[int, int]:
        return self.ir.shape[:2]

    def luminance(self, rows: slice = slice(None), cols: slice = slice(None)) -> tuple[np.ndarray, np.ndarray]:
        """(Y_ir, Y_vis) float32 of the window ``rows`` x ``cols`` (default: the whole image); with a rig,
        Y_ir is what the model sees (``Rig.model_input``)."""
        y_ir, y_vis = luminance(self.ir[rows, cols]), luminance(self.vis[rows, cols])
        if self.rig is not None:
            y_ir = self.rig.model_input(y_ir, y_vis, rows, cols)
        return y_ir, y_vis

    def output(self) -> OutputBuilder:
        return OutputBuilder(self)

    def finish(self, fused_y: np.ndarray):
        """The whole fused luminance (H, W) -> the result in the kind of the visible input."""
        out = self.output()
        out.put(0, 0, fused_y)
        return out.result()


class OutputBuilder:
    """The result of a Prepared pair, filled window by window with fused luminance (elementwise, so
    filling in tiles gives exactly what filling at once gives)."""

    def __init__(self, p: Prepared):
        import torch

        h, w = p.shape
        self.p = p
        shape = (h, w, 3) if p.colour else (h, w)
        self.u8 = np.empty(shape, np.uint8)
        s = p.spec
        need_f = (s.kind == "numpy" and s.dtype != np.uint8) or (s.kind == "torch" and s.dtype != torch.uint8)
        self.f = np.empty(shape, np.float32) if need_f else None

    def put(self, y0: int, x0: int, fused_y: np.ndarray) -> None:
        """Write the fused luminance window whose top-left corner is (y0, x0)."""
        h, w = fused_y.shape
        win = (slice(y0, y0 + h), slice(x0, x0 + w))
        if self.p.rig is not None:  # feathered into the visible image outside the infrared field of view
            fused_y = self.p.rig.blend(fused_y, luminance(self.p.vis[win]), *win)
        vis = self.p.vis[win]
        ext = colour_ext()
        if self.p.colour and self.f is None and ext is not None and vis.dtype == np.uint8 and pixels_contiguous(vis):
            ext.colour_out(np.ascontiguousarray(fused_y, dtype=np.float32), vis, self.u8[win])  # == the NumPy path
            return
        if self.p.colour:
            ycc = rgb_to_ycbcr(vis)
            ycc[..., 0] = fused_y
            out_f = ycbcr_to_rgb(ycc)
        else:
            out_f = np.clip(fused_y, 0.0, 1.0).astype(np.float32)
        self.u8[win] = to_uint8(out_f)
        if self.f is not None:
            self.f[win] = out_f

    def result(self):
        return make_output(self.u8, self.f, self.p.spec)
