"""Data that works offline: bundled or installed defaults, the user's own files, and the
windowing and splitting each pretext task needs."""

from .images import load_images
from .series import SeriesSplits, WindowDataset, load_series, make_windows

__all__ = ["SeriesSplits", "WindowDataset", "load_images", "load_series", "make_windows"]
