"""Images for reconstruction and contrastive learning, as float32 [N, C, H, W] in [0, 1]:
scikit-learn's bundled digits (the offline default), a user's .npy / .npz array, or MNIST
through torchvision."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import numpy as np
import torch


def load_images(
    source: str | Path = "digits", root: str | Path = "data"
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(images [N, C, H, W] float32 in [0, 1], labels [N] int64 or None).

    source: "digits" (1797 8x8 images, bundled with scikit-learn), "mnist" (torchvision's
    training set under `root`, downloaded when missing and the network allows), or the path
    of a .npy / .npz file holding [N, H, W], [N, C, H, W] or [N, H, W, C] (C <= 4) images;
    an .npz may also hold "labels". uint8 values are divided by 255, others are min-max
    scaled to [0, 1].
    """
    if source == "digits":
        try:
            from sklearn.datasets import load_digits
        except ImportError:
            raise ImportError("load_images('digits') needs scikit-learn: pip install scikit-learn") from None
        digits = load_digits()
        images = torch.from_numpy(digits.images).float().div_(16.0).unsqueeze(1)
        return images, torch.from_numpy(digits.target).long()
    if source == "mnist":
        return _mnist(Path(root))
    return _from_file(Path(source))


def _mnist(root: Path) -> tuple[torch.Tensor, torch.Tensor]:
    try:
        from torchvision.datasets import MNIST
    except ImportError:
        raise ImportError(
            "load_images('mnist') needs torchvision (pip install torchvision matching your torch); "
            "'digits' works offline without it"
        ) from None
    try:
        data = MNIST(str(root), train=True, download=True)
    except Exception as exc:  # no network and no files: say where they were looked for
        raise FileNotFoundError(
            f"load_images('mnist'): the MNIST files are not under {root} and could not be downloaded "
            f"({exc}); place them there or use 'digits'"
        ) from None
    return data.data.float().div_(255.0).unsqueeze(1), data.targets.long()


def _read_arrays(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """(images, labels or None) of a .npy file or an .npz archive, never unpickled: numpy's
    own error advises allow_pickle=True, which would let the file run code."""
    try:
        if path.suffix == ".npy":
            return np.load(path), None
        with np.load(path) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError):
        raise ValueError(
            f"load_images: cannot read {path}: it is not a NumPy file of arrays (corrupt, or holding "
            "Python objects, which are not unpickled)"
        ) from None
    labels = arrays.pop("labels", None)
    if not arrays:
        raise ValueError(f"load_images: {path} holds no image array")
    return arrays.get("images", next(iter(arrays.values()))), labels


def _from_file(path: Path) -> tuple[torch.Tensor, torch.Tensor | None]:
    if path.suffix not in (".npy", ".npz"):
        raise ValueError(
            f"load_images: source must be 'digits', 'mnist' or a .npy/.npz path, got {str(path)!r}"
        )
    if not path.is_file():
        raise FileNotFoundError(f"load_images: no file {path}")
    array, labels = _read_arrays(path)
    for what, values in (("images", array), ("labels", labels)):
        if values is not None and values.dtype.kind not in "biuf":  # bool, integers, floats
            kind = "strings" if values.dtype.kind in "SU" else f"{values.dtype} values"
            raise ValueError(f"load_images: the {what} in {path} are {kind}, not real numbers")
    images = torch.from_numpy(array)
    if images.dim() == 3:
        images = images.unsqueeze(1)
    elif images.dim() == 4 and images.shape[-1] <= 4 < images.shape[1]:
        images = images.permute(0, 3, 1, 2)  # channels last -> first
    if images.dim() != 4:
        raise ValueError(
            f"load_images: {path} holds shape {tuple(images.shape)}, not [N, H, W] or [N, C, H, W]"
        )
    if labels is not None:
        labels = torch.from_numpy(labels).long()
    if images.dtype == torch.uint8:
        return images.float().div_(255.0).contiguous(), labels
    images = images.float()
    low, high = images.min(), images.max()
    return ((images - low) / (high - low).clamp_min(1e-12)).contiguous(), labels
