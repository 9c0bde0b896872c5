"""``tokfuse calibrate``: estimate a camera rig file from image pairs of one rig, or from hand-picked points.

    tokfuse calibrate --ir IR --vis VIS [--ir IR2 --vis VIS2 ...] -o rig.json [--transform homography]
                      [--points points.csv] [--preview check.png]

Prints each pair's correlation and residual and the confidence. Exit 1 with a one-line reason, and
nothing written, when no reliable rig is found (see ``tokfuse_rt.calibrate``).
"""

from __future__ import annotations

import argparse

from .options import add_deprecated_alias, add_output

EPILOG = """examples:
  tokfuse calibrate --ir ir.png --vis vis.png -o rig.json --preview check.png
  tokfuse calibrate --ir a_ir.png --vis a_vis.png --ir b_ir.png --vis b_vis.png -o rig.json
  tokfuse calibrate --ir ir.png --vis vis.png --points points.csv -o rig.json   # ir_x,ir_y,vis_x,vis_y rows
then: tokfuse fuse ir.png vis.png -o fused.png --align rig.json
"""


def register(sub, help: str) -> None:
    from ..rig import MODELS

    c = sub.add_parser(
        "calibrate",
        help=help,
        description="Estimate the matrix that maps infrared pixels onto visible pixels from one or more pairs "
        "taken by the same two cameras (edges and structure are matched: a global search over scale, "
        "rotation and shift, then ECC refinement with OpenCV), or from hand-picked correspondences "
        "(--points). Writes the rig file used by --align.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    c.add_argument("--ir", action="append", required=True, help="infrared image (repeat for more pairs)")
    c.add_argument("--vis", action="append", required=True, help="visible image of the same scene (repeat)")
    add_output(c, required=True, help="rig file to write (JSON, written atomically)")
    transform = c.add_argument(
        "--transform", default="homography", choices=MODELS, help="form of the matrix (default homography)"
    )
    add_deprecated_alias(c, "--model", transform)  # --model names the fusion model everywhere else
    c.add_argument(
        "--points",
        default=None,
        metavar="CSV",
        help="fit hand-picked correspondences instead (rows ir_x, ir_y, vis_x, vis_y; at least 4)",
    )
    c.add_argument(
        "--preview",
        default=None,
        metavar="PNG",
        help="also write a checkerboard overlay of the first pair: left unaligned (stretched), right aligned",
    )
    c.set_defaults(func=cmd_calibrate)


def cmd_calibrate(a) -> int:
    from .. import calibrate as cal
    from ..imageio import load_image
    from ..outputs import check_output_path, save_image
    from ..rig import require_cv2

    if len(a.ir) != len(a.vis):
        raise ValueError(f"give as many --ir as --vis images ({len(a.ir)} --ir, {len(a.vis)} --vis)")
    if a.preview:
        check_output_path(a.preview)
    require_cv2()
    pairs = [
        (load_image(i, f"pair {n}: ir"), load_image(v, f"pair {n}: vis"))
        for n, (i, v) in enumerate(zip(a.ir, a.vis), 1)
    ]
    if a.points:
        pts = cal.read_points(a.points)
        ir, vis = pairs[0]
        res = cal.fit_points(pts, (ir.shape[1], ir.shape[0]), (vis.shape[1], vis.shape[0]), a.transform, a.points)
        r = res.point_residuals
        print(f"{len(pts)} correspondences: residual rms {float((r**2).mean() ** 0.5):.2f} px, max {r.max():.2f} px")
    else:
        try:
            res = cal.calibrate_images(pairs, a.transform)
        except cal.CalibrationError as e:
            raise ValueError(f"no rig written: {e}") from None
        print(res.report())
        print(f"confidence {res.confidence:.3f} (lowest correlation of the pairs used; reliable from {cal.MIN_RHO})")
    rig = res.rig
    picture = cal.checker_preview(*pairs[0], rig) if a.preview else None  # before anything is written
    out = rig.save(a.output)
    print(
        f"wrote {out}: {rig.model}, ir {rig.ir_size[0]}x{rig.ir_size[1]} -> vis {rig.vis_size[0]}x"
        f"{rig.vis_size[1]}, covers {100 * rig.coverage():.0f} % of the visible frame"
    )
    if picture is not None:
        p = save_image(picture, a.preview)
        print(f"preview: {p} (left: stretched, unaligned; right: aligned)")
    return 0
