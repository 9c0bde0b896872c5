"""Scale-out and serving on Ray: ``fuse_dir_ray`` / ``fuse_job_ray`` (Ray Data batch job) and
``tokfuse_rt.serving.serve`` (HTTP service on Ray Serve). Ray is imported only when used."""

from __future__ import annotations

from .batch import RayFuseReport, fuse_dir_ray, fuse_job_ray

__all__ = ["fuse_dir_ray", "fuse_job_ray", "RayFuseReport"]
