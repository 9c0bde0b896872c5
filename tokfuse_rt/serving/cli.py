"""``tokfuse fuse-dir --ray``: the Ray options and the call (the parser, the checks done before any
work, the summary and the exit status live in ``tokfuse_rt.cli.fuse_dir``, shared with plain fuse-dir)."""

from __future__ import annotations


def add_ray_args(p) -> None:
    g = p.add_argument_group("Ray (scale-out; needs the extra tokfuse_rt[ray])")
    g.add_argument(
        "--ray",
        nargs="?",
        const="auto",
        default=None,
        metavar="auto|ADDRESS",
        help="fuse on Ray: 'auto' (the default when the flag has no value) joins the running cluster "
        "or starts a local Ray instance; ADDRESS joins that cluster (HOST:PORT). The job is the same as without --ray "
        "(sub-folders with --recursive)",
    )
    g.add_argument(
        "--actors",
        type=int,
        default=None,
        help="actors in the pool, one engine each (default: cluster CPUs / threads per actor)",
    )
    g.add_argument(
        "--threads-per-actor",
        type=int,
        default=None,
        help="backend threads per actor (default: --threads if given, else 1)",
    )
    g.add_argument("--batch-size", type=int, default=4, help="pairs per actor call (default 4)")


def fuse_dir_ray_args(a, job, engine_options: dict):
    """Run the planned fuse-dir ``job`` (``tokfuse_rt.jobs.plan``) on Ray with the parsed ``fuse-dir``
    arguments; returns its report."""
    from .batch import fuse_job_ray

    threads = next((t for t in (a.threads_per_actor, a.threads) if t is not None), 1)
    return fuse_job_ray(
        job,
        model=a.model,
        k=a.k,
        device=a.device,
        address=a.ray,
        actors=a.actors,
        threads_per_actor=threads,
        batch_size=a.batch_size,
        progress=not a.quiet,
        **engine_options,
    )
