"""ssl_fast: fused C++/CUDA losses and masking for self-supervised learning in PyTorch."""

from ._ext import empty_cache
from .collate import MLMCollator
from .info import backend_info
from .losses import (
    BCELoss,
    BCEWithLogitsLoss,
    DCLLoss,
    DCLWLoss,
    InfoNCELoss,
    MSELoss,
    NTXentLoss,
    SigLipLoss,
    SmoothL1Loss,
    SupConLoss,
)
from .ops.contrastive import info_nce, nt_xent
from .ops.contrastive_family import dcl, sup_con
from .ops.masking import mask_tokens, random_masking
from .ops.mlm_loss import mlm_loss
from .ops.regression import binary_cross_entropy, binary_cross_entropy_with_logits, mse_loss, smooth_l1_loss
from .ops.siglip import siglip

__version__ = "0.1.0"
__all__ = [
    "BCELoss",
    "BCEWithLogitsLoss",
    "DCLLoss",
    "DCLWLoss",
    "InfoNCELoss",
    "MLMCollator",
    "MSELoss",
    "NTXentLoss",
    "SigLipLoss",
    "SmoothL1Loss",
    "SupConLoss",
    "backend_info",
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "dcl",
    "empty_cache",
    "info_nce",
    "mask_tokens",
    "mlm_loss",
    "mse_loss",
    "nt_xent",
    "random_masking",
    "siglip",
    "smooth_l1_loss",
    "sup_con",
]
