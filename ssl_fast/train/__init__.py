"""Training loop shared by the four pretext tasks."""

from .grad_cache import chunked_backward
from .trainer import TrainConfig, Trainer

__all__ = ["TrainConfig", "Trainer", "chunked_backward"]
