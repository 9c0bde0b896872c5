"""``tokfuse fuse-dir``: fuse the pairs of two folders, locally or on Ray (``--ray``)."""

from __future__ import annotations

from pathlib import Path

from .options import add_align, add_engine_args, add_k, add_output, add_quality, engine_options, model_path, open_engine


def register(sub, help: str) -> None:
    d = sub.add_parser(
        "fuse-dir",
        help=help,
        description="Fuse the pairs of two folders (same file name, else same stem; ambiguous stems are reported "
        "and not fused). Bad pairs are reported and skipped; outputs are written atomically; a re-run "
        "skips pairs whose output exists and decodes. A summary is printed and a JSON report written.",
    )
    d.add_argument("--ir", required=True, help="folder of infrared (or MRI) images")
    d.add_argument("--vis", required=True, help="folder of visible (or second-modality) images")
    add_output(d, required=True, help="output folder (not inside an input folder)")
    d.add_argument("--ext", default=".png", help="output file extension: .png, .jpg, .webp, .tif, .bmp (default .png)")
    d.add_argument("--overwrite", action="store_true", help="fuse again pairs whose output already exists")
    d.add_argument(
        "-r",
        "--recursive",
        action="store_true",
        help="also the pairs of sub-folders (the same relative path under --ir and --vis), mirrored under OUTPUT",
    )
    d.add_argument("--report", default=None, help="JSON report path (default: OUTPUT/tokfuse-report.json)")
    d.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    add_k(d)
    add_quality(d)
    add_align(d)
    add_engine_args(d)
    from ..serving.cli import add_ray_args

    add_ray_args(d)
    d.set_defaults(func=cmd_fuse_dir)


def cmd_fuse_dir(a) -> int:
    from .. import jobs

    # everything the user got wrong, before the model loads (the same plan the job then runs)
    job = jobs.plan(
        a.ir,
        a.vis,
        a.output,
        ext=a.ext,
        quality=a.quality,
        overwrite=a.overwrite,
        report_path=a.report,
        recursive=a.recursive,
    )
    if a.ray is not None:
        from ..serving.cli import fuse_dir_ray_args

        a.model = model_path(a.model)
        rep = fuse_dir_ray_args(a, job, engine_options(a))
    else:
        with open_engine(a) as eng:
            rep = eng.fuse_job(job, k=a.k, progress=not a.quiet)
    print(rep.summary())
    print(f"outputs in {Path(a.output).resolve()}")
    print(f"report: {job.report_path.resolve()}")
    return jobs.exit_code(rep)
