"""Reading image files (bounded) and BT.601 full-range YCbCr colour handling.

Internal image convention: uint8, or float32 in [0, 1]; (H, W) gray or (H, W, 3) RGB.

Reading a file (:func:`load_image`; :func:`open_image` reads a path or a file object, e.g. the
bytes of an upload, by the same rules up to a PIL image):

- Only the formats of :data:`READ_FORMATS` are decoded (PNG, JPEG, BMP, TIFF, WebP, PNM/PFM, GIF);
  :data:`IMAGE_EXTS` lists their file extensions, the same list folder pairing uses.
- The pixel count is checked from the header before anything is decoded: more than
  ``max_pixels`` (default :data:`DEFAULT_MAX_PIXELS`, 100 MP) raises :class:`ImageTooLargeError`.
- The EXIF orientation is applied (the array is what an image viewer shows).
- Multi-frame files (animated GIF/PNG/WebP, multi-page TIFF): the first frame, with a warning.
- Palette images are expanded to RGB; alpha is dropped (not composited).
- 8-bit data is returned as uint8. Integer data above 8 bits and float data become float32 in
  [0, 1] by the ``depth`` rule (:func:`scale_to_unit`): ``"auto"`` (default), ``"range"`` or
  ``"full"``.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from pathlib import Path

import numpy as np

MIN_SIZE = 16
DEFAULT_MAX_PIXELS = 100_000_000
DEPTH_MODES = ("auto", "range", "full")
#: Pillow formats that are decoded; nothing else is opened (no EPS/PSD/... decoders on untrusted files).
READ_FORMATS = ("PNG", "JPEG", "BMP", "DIB", "TIFF", "WEBP", "PPM", "GIF")  # JPEG includes MPO
#: File extensions of READ_FORMATS (lower case), as Pillow registers them.
IMAGE_EXTS = frozenset(
    {
        ".png",
        ".apng",
        ".jpg",
        ".jpeg",
        ".jpe",
        ".jfif",
        ".mpo",
        ".bmp",
        ".dib",
        ".tif",
        ".tiff",
        ".webp",
        ".pbm",
        ".pgm",
        ".ppm",
        ".pnm",
        ".pfm",
        ".gif",
    }
)
# BT.601 full range, as OpenCV's COLOR_RGB2YCrCb for float images (delta = 0.5 in [0, 1]).
_KR, _KG, _KB = 0.299, 0.587, 0.114
_ROWS = 512  # row block for whole-image passes (bounded temporaries on large images)


class ImageTooLargeError(ValueError):
    """An image has more pixels than the configured limit (checked before decoding)."""


class ImageReadWarning(UserWarning):
    """Something about an input file was handled by a rule the user may want to know about."""


def check_pixels(width: int, height: int, name: str, max_pixels) -> None:
    """Raise ImageTooLargeError when ``width * height`` exceeds ``max_pixels`` (None: no limit)."""
    if max_pixels is not None and int(width) * int(height) > max_pixels:
        raise ImageTooLargeError(
            f"{name}: image is {width}x{height} ({width * height / 1e6:.1f} MP), over the limit of "
            f"{max_pixels / 1e6:g} MP (max_pixels; raise it to read larger images)"
        )


def check_depth(depth: str) -> str:
    if depth not in DEPTH_MODES:
        raise ValueError(f"depth must be one of {', '.join(DEPTH_MODES)}, got {depth!r}")
    return depth


def _open(src, name: str, max_pixels, label: str):
    """Image.open of a path or a binary file object restricted to READ_FORMATS, with Pillow's own bomb
    check mapped to ours. ``label`` names the file in messages."""
    from PIL import Image, UnidentifiedImageError

    if max_pixels is not None and Image.MAX_IMAGE_PIXELS is not None and max_pixels >= 2 * Image.MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = max_pixels  # Pillow refuses at 2x its limit: never below ours
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(src, formats=READ_FORMATS)
    except UnidentifiedImageError:
        raise ValueError(
            f"{name}: not a readable image file (formats read: {', '.join(READ_FORMATS)}): {label}"
        ) from None
    except Image.DecompressionBombError as e:  # Pillow's hard limit (2x its own) came first
        import re

        m = re.search(r"\((\d+) pixels\)", str(e))
        size = f"{int(m.group(1)) / 1e6:.1f} MP" if m else "too many pixels"
        raise ImageTooLargeError(
            f"{name}: image {Path(label).name} has {size} (from its header), over the limit of "
            f"{(max_pixels or 0) / 1e6:g} MP (max_pixels; raise it to read larger images)"
        ) from None
    except FileNotFoundError:
        raise FileNotFoundError(f"{name}: file not found: {label}") from None
    except Exception as e:  # noqa: BLE001 - any decoder failure on a header is a bad file
        raise ValueError(f"{name}: corrupt image file {label}: {type(e).__name__}: {e}") from None


@contextlib.contextmanager
def _decoding(name: str, label: str):
    """Decoder failures of any type -> ValueError naming the input (errors that already name it pass)."""
    try:
        yield
    except (ValueError, TypeError) as e:
        if str(e).startswith(f"{name}:"):
            raise
        raise ValueError(f"{name}: corrupt or truncated image file {label}: {e}") from None
    except Exception as e:  # noqa: BLE001 - OSError, SyntaxError, struct.error, ... from a decoder
        raise ValueError(f"{name}: corrupt or truncated image file {label}: {type(e).__name__}: {e}") from None


def open_image(src, name: str = "image", max_pixels=DEFAULT_MAX_PIXELS, label: str | None = None):
    """Open and decode ``src`` (a file path, or a binary file object such as ``io.BytesIO`` holding a
    file's bytes) by the reading rules above, up to the conversion to an array: READ_FORMATS only, the
    pixel limit from the header before decoding, the first frame of a multi-frame file (warning), the
    EXIF orientation applied. Returns the decoded PIL image (the caller closes it);
    ``pil_to_array(im, name, depth)`` turns it into what :func:`load_image` returns. ``label`` names
    the file in messages (default: the path). Raises FileNotFoundError / ImageTooLargeError / ValueError
    naming ``name``.
    """
    if label is None:
        label = os.fspath(src) if isinstance(src, (str, os.PathLike)) else "(file object)"
    im = _open(src, name, max_pixels, label)
    try:
        check_pixels(im.size[0], im.size[1], name, max_pixels)
        with _decoding(name, label):
            if getattr(im, "is_animated", False):
                warnings.warn(
                    f"{name}: {Path(label).name} has {getattr(im, 'n_frames', 'several')} frames; using the first",
                    ImageReadWarning,
                    stacklevel=3,
                )
            im.load()
            upright = _exif_upright(im)
    except BaseException:
        im.close()
        raise
    if upright is not im:
        im.close()
    return upright


def check_input_file(path, name: str, kind: str = "an image") -> Path:
    """``path`` as a Path, checked to be an existing, non-empty file (not a folder): FileNotFoundError /
    ValueError naming the input ``name`` (``kind``: what the file should be, for the message)."""
    p = Path(os.fspath(path))
    if not p.exists():
        raise FileNotFoundError(f"{name}: file not found: {p}")
    if p.is_dir():
        raise ValueError(f"{name}: {p} is a directory, not {kind} file")
    if p.stat().st_size == 0:
        raise ValueError(f"{name}: file is empty: {p}")
    return p


def load_image(path, name: str = "image", max_pixels=DEFAULT_MAX_PIXELS, depth: str = "auto") -> np.ndarray:
    """Read an image file as (H, W) or (H, W, 3): uint8 for 8-bit data, else float32 in [0, 1].

    Errors name the input ``name``: FileNotFoundError (missing), ImageTooLargeError (pixel limit,
    from the header), ValueError (not an image, corrupt, truncated, unsupported mode, NaN/inf).
    """
    check_depth(depth)
    p = check_input_file(path, name)
    with open_image(p, name, max_pixels) as im, _decoding(name, str(p)):
        return pil_to_array(im, name, depth)


def _exif_upright(im):
    """Apply the EXIF orientation tag (2..8); other images are returned as they are."""
    try:
        orientation = im.getexif().get(0x0112)
    except Exception:  # noqa: BLE001 - a broken EXIF block must not stop the image
        return im
    from PIL import Image

    T = Image.Transpose
    ops = {
        2: T.FLIP_LEFT_RIGHT,
        3: T.ROTATE_180,
        4: T.FLIP_TOP_BOTTOM,
        5: T.TRANSPOSE,
        6: T.ROTATE_270,
        7: T.TRANSVERSE,
        8: T.ROTATE_90,
    }
    return im.transpose(ops[orientation]) if orientation in ops else im


def pil_to_array(im, name: str = "image", depth: str = "auto", max_pixels=DEFAULT_MAX_PIXELS) -> np.ndarray:
    """PIL image -> uint8 (H, W) / (H, W, 3), or float32 in [0, 1] for data above 8 bits (``depth``)."""
    check_pixels(im.size[0], im.size[1], name, max_pixels)
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        return scale_to_unit(np.asarray(im), name, depth, container_bits=16)
    if mode == "I":
        return scale_to_unit(np.asarray(im), name, depth, container_bits=31)
    if mode == "F":
        return scale_to_unit(np.asarray(im), name, depth)
    try:
        if mode in ("1", "L", "LA", "La"):
            if mode == "La":  # premultiplied alpha: Pillow converts it only to LA
                im = im.convert("LA")
            return np.asarray(im.convert("L") if mode != "L" else im, dtype=np.uint8)
        if mode in ("RGB", "RGBA", "RGBa", "RGBX", "P", "PA", "CMYK", "YCbCr", "LAB", "HSV"):
            return np.asarray(im.convert("RGB") if mode != "RGB" else im, dtype=np.uint8)
    except (ValueError, OSError) as e:
        raise ValueError(f"{name}: cannot convert image mode {mode!r} to gray or RGB: {e}") from None
    raise ValueError(f"{name}: unsupported image mode {mode!r}")


def scale_to_unit(a: np.ndarray, name: str, depth: str = "auto", container_bits: int | None = None) -> np.ndarray:
    """Integer data above 8 bits or float data -> float32 (H, W) in [0, 1].

    ``depth`` rules (``lo``..``hi`` maps to 0..1):

    - ``"full"``: the container's range: integers 0..2^bits - 1 (16-bit files 65535; 32-bit
      integers 2^31 - 1); floats are taken as they are (clipped to [0, 1]).
    - ``"range"``: the data's own range, min..max (a constant image becomes 0).
    - ``"auto"``: integers 0..2^b - 1 with b the smallest of 8, 10, 12, 14, 16, 24, 31 that holds
      the maximum, so a 12-bit (or 14-bit) thermal frame in a 16-bit file fills the range; floats
      in [0, 1] as they are. Negative integers and floats outside [0, 1] fall back to min..max.
      A warning says when the data fill less of the range than the container offers (fewer bits
      than the file has, or a span under a quarter of the range).
    """
    check_depth(depth)
    is_float = np.issubdtype(a.dtype, np.floating)
    if a.size == 0:
        raise ValueError(f"{name}: image has no pixels")
    if is_float and not all(np.isfinite(a[r : r + _ROWS]).all() for r in range(0, a.shape[0], _ROWS)):
        raise ValueError(f"{name}: image file contains NaN or inf")
    mn, mx = float(a.min()), float(a.max())
    bits = container_bits or (16 if a.dtype.itemsize <= 2 else 31)
    if depth == "range":
        lo, hi = mn, mx
    elif depth == "full":
        lo, hi = (0.0, 1.0) if is_float else (0.0, float(2**bits - 1))
    elif is_float:
        lo, hi = (0.0, 1.0) if (mn >= 0.0 and mx <= 1.0) else (mn, mx)
        if (lo, hi) == (mn, mx):
            warnings.warn(
                f"{name}: float data in [{mn:.7g}, {mx:.7g}], outside [0, 1]: stretched min..max (depth='auto')",
                ImageReadWarning,
                stacklevel=3,
            )
    elif mn < 0:
        lo, hi = mn, mx
        warnings.warn(
            f"{name}: signed integer data in [{mn:.0f}, {mx:.0f}]: stretched min..max (depth='auto')",
            ImageReadWarning,
            stacklevel=3,
        )
    else:
        b = next((b for b in (8, 10, 12, 14, 16, 24, 31) if mx <= 2**b - 1), 31)
        lo, hi = 0.0, float(2**b - 1)
        if b < bits and container_bits is not None:
            warnings.warn(
                f"{name}: {container_bits}-bit data use {b} bits (max {mx:.0f}): scaled by 1/{2**b - 1} "
                "(depth='auto'; 'range' stretches min..max, 'full' uses the container's range)",
                ImageReadWarning,
                stacklevel=3,
            )
    if depth == "auto" and hi > lo and (mx - mn) < 0.25 * (hi - lo):
        warnings.warn(
            f"{name}: values {mn:.6g}..{mx:.6g} fill {100 * (mx - mn) / (hi - lo):.0f}% of the range "
            f"{lo:.6g}..{hi:.6g}; depth='range' stretches them",
            ImageReadWarning,
            stacklevel=3,
        )
    out = np.empty(a.shape, np.float32)
    inv = 1.0 / (hi - lo) if hi > lo else 0.0
    for r in range(0, a.shape[0], _ROWS):  # float64 per block: exact for 32-bit integers
        blk = (a[r : r + _ROWS].astype(np.float64) - lo) * inv
        out[r : r + _ROWS] = np.clip(blk, 0.0, 1.0)
    return out


def is_colour(img: np.ndarray, tol: float = 1.0 / 255.0) -> bool:
    """True for (H, W, 3) images whose channels differ (gray stored as RGB counts as gray)."""
    if img.ndim != 3:
        return False
    r, step = 0, 32  # a small first block: a colour image is usually told apart there
    while r < img.shape[0]:
        blk = img[r : r + step]
        r, step = r + step, _ROWS
        c0, c1, c2 = blk[..., 0], blk[..., 1], blk[..., 2]
        if img.dtype == np.uint8:
            if np.any(c0 != c1) or np.any(c1 != c2):
                return True
        elif np.max(np.abs(c0 - c1)) > tol or np.max(np.abs(c1 - c2)) > tol:
            return True
    return False


def to_float(img: np.ndarray) -> np.ndarray:
    """uint8 or float [0, 1] -> float32 [0, 1]."""
    if img.dtype == np.uint8:
        return img.astype(np.float32) * np.float32(1.0 / 255.0)
    return img.astype(np.float32, copy=False)


_EXT = False  # tokfuse_rt._C with the colour steps: not looked up yet


def colour_ext():
    """``tokfuse_rt._C`` when it has the colour steps (``luminance_u8``, ``colour_out``: the NumPy code of
    this module in C++, bit-identical), else None (the extension is optional)."""
    global _EXT
    if _EXT is False:
        try:
            from . import _C
        except ImportError:
            _EXT = None
        else:
            _EXT = _C if hasattr(_C, "colour_out") else None
    return _EXT


def pixels_contiguous(img: np.ndarray) -> bool:
    """True when each row's pixels are contiguous (any row stride): what the C++ colour steps read."""
    return img.strides[-1] == img.itemsize and (img.ndim == 2 or img.strides[1] == img.itemsize * img.shape[2])


def luminance(img: np.ndarray) -> np.ndarray:
    """(H, W) or (H, W, 3), uint8 or float [0, 1] -> Y float32 (H, W) in [0, 1]."""
    ext = colour_ext()
    if ext is not None and img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3 and pixels_contiguous(img):
        out = np.empty(img.shape[:2], np.float32)
        ext.luminance_u8(img, out)
        return out
    return luminance_np(img)


def luminance_np(img: np.ndarray) -> np.ndarray:
    """``luminance`` in NumPy (the definition; ``tokfuse_rt._C.luminance_u8`` repeats it)."""
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
