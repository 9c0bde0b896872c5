"""Image reading that reproduces the reference evaluator's ``image_read_cv2(path, 'GRAY')``.

The reference (MMIF-CDDFuse ``utils/Evaluator.py``) reads every image with::

    img = cv2.imread(path)                      # IMREAD_COLOR: 8-bit BGR, EXIF orientation applied
    img = img.astype('float32')
    img = np.round(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY))

We do not depend on OpenCV.  Pillow decodes the file to 8-bit RGB (PNG/BMP/TIFF are lossless, so
identical; for JPEG both Pillow and OpenCV use libjpeg-turbo with the default ISLOW IDCT and fancy
chroma upsampling, and the decoded RGB bytes were found identical for all RoadScene test JPEGs and
100 training JPEGs against opencv-python-headless 5.0.0).

OpenCV's float32 BGR2GRAY (AVX2 dispatch) evaluates, per pixel, with fused multiply-adds::

    Y = fma(R, 0.299f, fma(B, 0.114f, G * 0.587f))          # float32, one rounding per step

which we emulate exactly: every product of an 8-bit value and a float32 coefficient, plus a float32
addend, is exact in float64, so rounding the float64 result to float32 equals the single FMA
rounding.  (OpenCV handles the last ``width % 8`` pixels of each row with a 4-lane/scalar tail whose
rounding can differ by one float32 ulp; it only changes the rounded grey level when Y lies within
~1.5e-5 of k + 0.5.  Over all 56.9 M pixels of ``shared/data/test`` the rounded result of this
module equals OpenCV's exactly.)
"""

from __future__ import annotations

import os
from typing import Union

import numpy as np

from ..imageio import IMAGE_EXTS as _READ_EXTS
from ..imageio import READ_FORMATS

PathLike = Union[str, "os.PathLike[str]"]

#: File extensions read by :func:`read_gray` / :func:`read_rgb` and paired by the report module:
#: the formats ``fuse`` reads (tokfuse_rt.imageio.IMAGE_EXTS).
IMAGE_EXTS = tuple(sorted(_READ_EXTS))

_R = np.float64(np.float32(0.299))
_G = np.float64(np.float32(0.587))
_B = np.float64(np.float32(0.114))


def rgb_to_gray_cv(rgb: np.ndarray) -> np.ndarray:
    """OpenCV ``cvtColor(float32 BGR, COLOR_BGR2GRAY)`` on an RGB ``HxWx3`` array (unrounded).

    Returns float32 ``HxW``.  Inputs must hold values representable in float32 with at most
    8 significant bits (8-bit images) for the FMA emulation to be exact; other inputs are still
    converted with the same formula, just not bit-exactly.
    """
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] < 3:
        raise ValueError(f"expected HxWx3 RGB array, got shape {rgb.shape}")
    r = rgb[..., 0].astype(np.float32).astype(np.float64)
    g = rgb[..., 1].astype(np.float32).astype(np.float64)
    b = rgb[..., 2].astype(np.float32).astype(np.float64)
    t = (g * _G).astype(np.float32).astype(np.float64)
    t = (b * _B + t).astype(np.float32).astype(np.float64)
    return (r * _R + t).astype(np.float32)


def to_gray_cv(img: np.ndarray) -> np.ndarray:
    """Luminance as the reference computes it: gray ``HxW`` passes through (as float32), RGB
    ``HxWx3`` (or ``HxWx4``, alpha ignored) goes through :func:`rgb_to_gray_cv` and ``np.round``."""
    img = np.asarray(img)
    if img.ndim == 2:
        return img.astype(np.float32, copy=False)
    if img.ndim == 3 and img.shape[2] == 1:
        return img[..., 0].astype(np.float32, copy=False)
    if img.ndim == 3 and img.shape[2] in (3, 4):
        return np.round(rgb_to_gray_cv(img[..., :3]))
    raise ValueError(f"expected HxW, HxWx1, HxWx3 or HxWx4 image, got shape {img.shape}")


def _open_rgb_uint8(path) -> np.ndarray:
    """Decode ``path`` (or a binary file object holding a file's bytes) to an 8-bit ``HxWx3`` RGB array
    the way ``cv2.imread(IMREAD_COLOR)`` does."""
    from PIL import Image, ImageOps

    with Image.open(path if hasattr(path, "read") else os.fspath(path), formats=READ_FORMATS) as im:
        im.load()
        # cv2.imread applies the EXIF orientation tag unless IMREAD_IGNORE_ORIENTATION is given.
        im = ImageOps.exif_transpose(im)
        mode = im.mode
        if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
            # OpenCV converts 16-bit data to 8 bits with convertTo(CV_8U, 1/256) (round, saturate);
            # Pillow's own convert("RGB") would clip instead of scaling.
            a = np.asarray(im).astype(np.float64)
            a = np.clip(np.rint(a / 256.0), 0, 255).astype(np.uint8)
            return np.repeat(a[..., None], 3, axis=2)
        if mode == "F":
            a = np.clip(np.rint(np.asarray(im, dtype=np.float64)), 0, 255).astype(np.uint8)
            return np.repeat(a[..., None], 3, axis=2)
        if mode != "RGB":
            # L/1/P/LA/RGBA/CMYK/YCbCr -> RGB; alpha is dropped without compositing, like OpenCV.
            im = im.convert("RGB")
        return np.array(im, dtype=np.uint8)


def read_rgb(path) -> np.ndarray:
    """Read an image (a path, or a binary file object such as ``io.BytesIO``) as float32 ``HxWx3`` RGB in
    [0, 255] (gray files replicated to 3 channels)."""
    return _open_rgb_uint8(path).astype(np.float32)


def read_gray(path) -> np.ndarray:
    """Read an image (a path, or a binary file object such as ``io.BytesIO``) exactly like the reference
    ``image_read_cv2(path, 'GRAY')``.

    Returns a float32 ``HxW`` array of integer grey levels in [0, 255]:
    8-bit RGB decode -> float32 -> ``Y = 0.299 R + 0.587 G + 0.114 B`` with OpenCV's float32
    arithmetic -> ``np.round`` (half to even).  Files stored as gray or as RGB with equal channels
    give back the stored value.
    """
    return np.round(rgb_to_gray_cv(_open_rgb_uint8(path)))
