"""Training: ``python -m tokfuse_rt.train --data ../shared/data/train --out model.safetensors``."""

from .loop import TrainArgs, train

__all__ = ["TrainArgs", "train"]
