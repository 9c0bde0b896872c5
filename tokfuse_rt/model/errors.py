"""Errors of the model package (a leaf module: what raises them imports nothing else from here)."""


class CheckpointError(ValueError):
    """A checkpoint file is corrupt, truncated or incompatible with this version of tokfuse_rt."""
