"""Image-fusion quality metrics.

``evaluate(fused, ir, vis, convention="cddfuse", metrics=None)`` returns EN, SD, SF, AG, MI, SCD,
VIF, Qabf, SSIM, PSNR, CC, MSE, Nabf (plus the named ``SSIM_2`` / ``SSIM_255``).  The default
"cddfuse" convention reproduces the evaluator behind the published CDDFuse tables (see
``shared/data/README.md`` and ``shared/data/metric_reference.json``); "cddfuse_bits",
"cddfuse_ssim255" and "vifb" are alternatives (:data:`CONVENTIONS`).

Only numpy and Pillow are needed to import this package; VIF and SSIM import scipy when called.
Per-directory evaluation with Markdown/PNG output lives in :mod:`tokfuse_rt.metrics.report`.
Temporal stability of videos: :func:`biswe` / :class:`BiSWE` (:mod:`tokfuse_rt.metrics.temporal`; its
optical flow imports OpenCV when called).
"""

from __future__ import annotations

from .basic import ag, cc, en, mse, psnr, scd, sd, sf, sobel_magnitude, texture_kept, thermal_kept
from .core import (
    CONVENTIONS,
    HIGHER_IS_BETTER,
    METRICS,
    Convention,
    evaluate,
    get_convention,
)
from .gradient import nabf, qabf
from .info import mi, mutual_information
from .io import IMAGE_EXTS, read_gray, read_rgb, rgb_to_gray_cv, to_gray_cv
from .ssim import ssim, ssim_both, ssim_pair
from .temporal import BiSWE, biswe
from .vif import vif, vifp

__all__ = [
    "METRICS",
    "CONVENTIONS",
    "HIGHER_IS_BETTER",
    "Convention",
    "evaluate",
    "get_convention",
    "read_gray",
    "read_rgb",
    "rgb_to_gray_cv",
    "to_gray_cv",
    "IMAGE_EXTS",
    "en",
    "sd",
    "sf",
    "ag",
    "mi",
    "mutual_information",
    "scd",
    "vif",
    "vifp",
    "qabf",
    "ssim",
    "ssim_pair",
    "ssim_both",
    "psnr",
    "cc",
    "mse",
    "nabf",
    "thermal_kept",
    "texture_kept",
    "sobel_magnitude",
    "BiSWE",
    "biswe",
]
