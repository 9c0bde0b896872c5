"""``tokfuse fuse-dir --ray``: the options and the command (the parser lives in ``tokfuse_rt.cli``)."""
from __future__ import annotations

from pathlib import Path


def add_ray_args(p) -> None:
    g = p.add_argument_group("Ray (scale-out; needs the extra tokfuse_rt[ray])")
    g.add_argument("--ray", nargs="?", const="auto", default=None, metavar="auto|ADDRESS",
                   help="fuse on Ray: 'auto' (the default when the flag has no value) joins the running cluster "
                        "or starts a local Ray instance; ADDRESS joins that cluster (HOST:PORT)")
    g.add_argument("--actors", type=int, default=None,
                   help="actors in the pool, one engine each (default: cluster CPUs / threads per actor)")
    g.add_argument("--threads-per-actor", type=int, default=1, help="backend threads per actor (default 1)")
    g.add_argument("--batch-size", type=int, default=4, help="pairs per actor call (default 4)")


def cmd_fuse_dir_ray(a) -> int:
    from .batch import fuse_dir_ray

    rep = fuse_dir_ray(a.ir, a.vis, a.output, model=a.model, k=a.k, device=a.device, address=a.ray, actors=a.actors,
                       threads_per_actor=a.threads_per_actor, batch_size=a.batch_size, ext=a.ext,
                       report=a.report, progress=not a.quiet)
    print(rep.summary())
    print(f"outputs in {Path(a.output).resolve()}; report {rep.report_path}")
    return 0 if not rep.failed else 1
