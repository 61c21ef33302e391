"""Training loop shared by the four pretext tasks."""

from .trainer import TrainConfig, Trainer

__all__ = ["TrainConfig", "Trainer"]
