"""Images for reconstruction and contrastive learning, as float32 [N, C, H, W] in [0, 1]:
scikit-learn's bundled digits (the offline default), a folder of MNIST-format IDX files
(MNIST, Fashion-MNIST), a user's .npy / .npz array, or MNIST through torchvision."""

from __future__ import annotations

import gzip
import pickle
import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch


def load_images(
    source: str | Path = "digits", root: str | Path = "data"
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(images [N, C, H, W] float32 in [0, 1], labels [N] int64 or None).

    source: "digits" (1797 8x8 images, bundled with scikit-learn), "mnist" (torchvision's
    training set under `root`, downloaded when missing and the network allows), a folder of
    MNIST-format IDX files (see `load_image_split`; the training images come first, then
    the t10k ones), or the path of a .npy / .npz file holding [N, H, W], [N, C, H, W] or
    [N, H, W, C] (C <= 4) images; an .npz may also hold "labels". uint8 values are divided
    by 255, others are min-max scaled to [0, 1].
    """
    images, labels, _ = load_image_split(source, root)
    return images, labels


def load_image_split(
    source: str | Path = "digits", root: str | Path = "data"
) -> tuple[torch.Tensor, torch.Tensor | None, int | None]:
    """load_images(source, root) and where its official held-out part starts: for a folder
    of IDX files, the index of the first t10k image (the images before it are the training
    set's); None for sources without an official split.

    An IDX folder holds train-images-idx3-ubyte, train-labels-idx1-ubyte,
    t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte, each gzipped (.gz) or not: MNIST's
    layout, which Fashion-MNIST and others share.
    """
    path = Path(source)
    if source not in ("digits", "mnist") and path.is_dir():
        return _idx_folder(path)
    images, labels = _load(source, Path(root))
    return images, labels, None


def _load(source: str | Path, root: Path) -> tuple[torch.Tensor, torch.Tensor | None]:
    if source == "digits":
        try:
            from sklearn.datasets import load_digits
        except ImportError:
            raise ImportError("load_images('digits') needs scikit-learn: pip install scikit-learn") from None
        digits = load_digits()
        images = torch.from_numpy(digits.images).float().div_(16.0).unsqueeze(1)
        return images, torch.from_numpy(digits.target).long()
    if source == "mnist":
        return _mnist(root)
    return _from_file(Path(source))


IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
             "t10k-labels-idx1-ubyte")
# The IDX header's type byte -> numpy's big-endian dtype.
_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _idx_folder(folder: Path) -> tuple[torch.Tensor, torch.Tensor, int]:
    files = {}
    for name in IDX_FILES:
        found = [folder / n for n in (name, name + ".gz") if (folder / n).is_file()]
        if not found:
            raise FileNotFoundError(
                f"load_images: {folder} lacks {name}[.gz]; a folder of IDX files holds "
                f"{', '.join(IDX_FILES)} (each may be gzipped)"
            )
        files[name] = found[0]
    arrays = [read_idx(files[name]) for name in IDX_FILES]
    for images, labels, part in ((arrays[0], arrays[1], "train"), (arrays[2], arrays[3], "t10k")):
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise ValueError(
                f"load_images: {folder}: the {part} files hold images of shape {images.shape} and labels "
                f"of shape {labels.shape}, not [N, H, W] and [N]"
            )
    if arrays[0].shape[1:] != arrays[2].shape[1:]:
        raise ValueError(f"load_images: {folder}: train images are {arrays[0].shape[1:]}, t10k ones "
                         f"{arrays[2].shape[1:]}")
    images = _scaled(torch.from_numpy(np.concatenate([arrays[0], arrays[2]])).unsqueeze(1))
    labels = torch.from_numpy(np.concatenate([arrays[1], arrays[3]]).astype(np.int64))
    return images, labels, len(arrays[0])


def read_idx(path: str | Path) -> np.ndarray:
    """The array of an IDX file (gzipped when its name ends in .gz): two zero bytes, a type
    byte, the number of dimensions, each dimension as a big-endian uint32, then the values,
    big-endian. ValueError for a bad header or a size that disagrees with it."""
    path = Path(path)
    try:
        with (gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")) as f:
            data = f.read()
    except (gzip.BadGzipFile, EOFError, OSError, zlib.error) as exc:
        raise ValueError(f"read_idx: cannot read {path}: {exc}") from None
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] not in _IDX_TYPES:
        raise ValueError(f"read_idx: {path} is not an IDX file (magic number {data[:4].hex() or 'missing'})")
    dtype, ndim = np.dtype(_IDX_TYPES[data[2]]), data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"read_idx: {path} is truncated: its header lacks dimensions")
    shape = tuple(int(d) for d in np.frombuffer(data, ">u4", ndim, 4))
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if len(data) != expected:
        raise ValueError(
            f"read_idx: {path} holds {len(data)} bytes, but its header {shape} of {dtype.name} needs "
            f"{expected}: {'truncated' if len(data) < expected else 'trailing bytes'}"
        )
    return np.frombuffer(data, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


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
        if not path.suffix and not path.exists():
            raise FileNotFoundError(f"load_images: no folder {path}")
        raise ValueError(
            "load_images: source must be 'digits', 'mnist', a folder of IDX files or a .npy/.npz path, "
            f"got {str(path)!r}"
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
    return _scaled(images), labels


def _scaled(images: torch.Tensor) -> torch.Tensor:
    """float32 in [0, 1]: uint8 divided by 255, other types min-max scaled."""
    if images.dtype == torch.uint8:
        return images.float().div_(255.0).contiguous()
    images = images.float()
    low, high = images.min(), images.max()
    return ((images - low) / (high - low).clamp_min(1e-12)).contiguous()
