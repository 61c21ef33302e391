"""Models of the four pretext tasks: reconstruction, contrastive, masked language
modelling and time-series prediction. Each model returns its task's loss through the
fused ssl_fast losses, so that a trainer needs nothing task-specific."""

from .autoencoder import VAE, Autoencoder, ConvAutoencoder, DenoisingAutoencoder, SparseAutoencoder, corrupt
from .forecaster import SeriesForecaster
from .grad_cache import chunked_backward
from .mlm import MaskedLanguageModel
from .simclr import SimCLR

__all__ = [
    "VAE",
    "Autoencoder",
    "ConvAutoencoder",
    "DenoisingAutoencoder",
    "MaskedLanguageModel",
    "SeriesForecaster",
    "SimCLR",
    "SparseAutoencoder",
    "chunked_backward",
    "corrupt",
]
