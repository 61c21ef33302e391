"""Models of the four pretext tasks: reconstruction, contrastive, masked language
modelling and time-series prediction. Each model returns its task's loss through the
fused ssl_fast losses, so that a trainer needs nothing task-specific."""

from .autoencoder import Autoencoder, ConvAutoencoder
from .forecaster import SeriesForecaster
from .grad_cache import chunked_backward
from .mlm import MaskedLanguageModel
from .simclr import SimCLR

__all__ = [
    "Autoencoder",
    "ConvAutoencoder",
    "MaskedLanguageModel",
    "SeriesForecaster",
    "SimCLR",
    "chunked_backward",
]
