"""``tokfuse fuse``: fuse one registered pair of images into one image file."""

from __future__ import annotations

from .options import add_align, add_engine_args, add_k, add_output, add_quality, open_engine


def register(sub, help: str) -> None:
    f = sub.add_parser("fuse", help=help, description="Fuse one registered pair of images.")
    f.add_argument("ir", help="infrared (or MRI) image file")
    f.add_argument("vis", help="visible (or CT/PET/SPECT) image file; a colour image gives the output its colour")
    add_output(f, required=True, help="output image file: .png, .jpg, .webp, .tif or .bmp (PNG recommended)")
    add_k(f)
    add_quality(f)
    add_align(f)
    add_engine_args(f)
    f.set_defaults(func=cmd_fuse)


def cmd_fuse(a) -> int:
    from ..outputs import check_not_input, check_output_path, check_quality, save_image

    check_output_path(a.output)  # before any work
    check_not_input(a.output, "output", {"ir": a.ir, "vis": a.vis})
    check_quality(a.quality)
    with open_engine(a) as eng:
        img = eng.fuse(a.ir, a.vis, k=a.k)
    out = save_image(img, a.output, quality=a.quality)
    print(f"wrote {out} ({img.shape[1]}x{img.shape[0]}, {'RGB' if img.ndim == 3 else 'gray'})")
    return 0
