"""Image reading/writing, input normalisation and BT.601 full-range YCbCr colour handling (§2, §4).

Internal image convention: float32 numpy in [0, 1], (H, W) gray or (H, W, 3) RGB.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

MIN_SIZE = 16
IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}
# BT.601 full range, as OpenCV's COLOR_RGB2YCrCb for float images (delta = 0.5 in [0, 1]).
_KR, _KG, _KB = 0.299, 0.587, 0.114


def load_image(path, name: str = "image") -> np.ndarray:
    """Read an image file as uint8 (H, W) or (H, W, 3). Errors name the input ``name``."""
    from PIL import Image, UnidentifiedImageError

    p = Path(os.fspath(path))
    if not p.exists():
        raise FileNotFoundError(f"{name}: file not found: {p}")
    if p.is_dir():
        raise ValueError(f"{name}: {p} is a directory, not an image file")
    if p.stat().st_size == 0:
        raise ValueError(f"{name}: file is empty: {p}")
    try:
        with Image.open(p) as im:
            im.load()
            return pil_to_array(im, name)
    except UnidentifiedImageError:
        raise ValueError(f"{name}: not a readable image file: {p}") from None
    except (OSError, SyntaxError) as e:  # truncated/corrupt data
        raise ValueError(f"{name}: corrupt or truncated image file {p}: {e}") from None


def pil_to_array(im, name: str = "image") -> np.ndarray:
    """PIL image -> uint8 (H, W) or (H, W, 3); 16-bit gray is scaled to 8 bit, alpha dropped."""
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        return (np.asarray(im, dtype=np.float64) / 257.0).round().clip(0, 255).astype(np.uint8)
    if mode in ("I", "F"):
        a = np.asarray(im, dtype=np.float64)
        hi = 65535.0 if a.max(initial=0) > 255 else 255.0
        return (a / hi * 255.0).round().clip(0, 255).astype(np.uint8)
    if mode in ("1", "L", "LA", "La"):
        return np.asarray(im.convert("L"), dtype=np.uint8)
    if mode in ("RGB", "RGBA", "RGBa", "P", "PA", "CMYK", "YCbCr", "LAB", "HSV"):
        return np.asarray(im.convert("RGB"), dtype=np.uint8)
    raise ValueError(f"{name}: unsupported image mode {mode!r}")


def save_image(arr: np.ndarray, path) -> Path:
    """Write uint8 (H, W) or (H, W, 3) to ``path`` (format from the extension), creating folders."""
    from PIL import Image

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.stem + ".tmp" + p.suffix)
    Image.fromarray(np.ascontiguousarray(arr)).save(tmp)
    os.replace(tmp, p)
    return p


def is_colour(img: np.ndarray, tol: float = 1.0 / 255.0) -> bool:
    """True for (H, W, 3) images whose channels differ (gray stored as RGB counts as gray)."""
    if img.ndim != 3:
        return False
    r, g, b = img[..., 0], img[..., 1], img[..., 2]
    if img.dtype == np.uint8:
        return bool(np.any(r != g) or np.any(g != b))
    return bool(np.max(np.abs(r - g)) > tol or np.max(np.abs(g - b)) > tol)


def to_float(img: np.ndarray) -> np.ndarray:
    """uint8 or float [0, 1] -> float32 [0, 1]."""
    if img.dtype == np.uint8:
        return img.astype(np.float32) * np.float32(1.0 / 255.0)
    return img.astype(np.float32, copy=False)


def luminance(img: np.ndarray) -> np.ndarray:
    """(H, W) or (H, W, 3), uint8 or float [0, 1] -> Y float32 (H, W) in [0, 1]."""
    f = to_float(img)
    if f.ndim == 2:
        return np.ascontiguousarray(f)
    return np.ascontiguousarray(_KR * f[..., 0] + _KG * f[..., 1] + _KB * f[..., 2], dtype=np.float32)


def rgb_to_ycbcr(rgb: np.ndarray) -> np.ndarray:
    """float [0, 1] (H, W, 3) RGB -> (H, W, 3) Y, Cb, Cr in [0, 1] (OpenCV YCrCb coefficients)."""
    f = to_float(rgb)
    y = luminance(f)
    cr = (f[..., 0] - y) * 0.713 + 0.5
    cb = (f[..., 2] - y) * 0.564 + 0.5
    return np.stack([y, cb, cr], axis=-1).astype(np.float32)


def ycbcr_to_rgb(ycc: np.ndarray) -> np.ndarray:
    """(H, W, 3) Y, Cb, Cr in [0, 1] -> RGB float32 clipped to [0, 1]."""
    y, cb, cr = ycc[..., 0], ycc[..., 1] - 0.5, ycc[..., 2] - 0.5
    r = y + 1.403 * cr
    g = y - 0.714 * cr - 0.344 * cb
    b = y + 1.773 * cb
    return np.clip(np.stack([r, g, b], axis=-1), 0.0, 1.0).astype(np.float32)


def to_uint8(f: np.ndarray) -> np.ndarray:
    return (np.clip(f, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
