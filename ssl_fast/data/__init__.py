"""Data that works offline: bundled or installed defaults, the user's own files, and the
windowing and splitting each pretext task needs."""

from .augment import ContrastiveAugment
from .images import load_image_split, load_images, read_idx
from .series import SeriesSplits, WindowDataset, load_series, make_windows
from .text import WordPieceTokenizer, hf_tokenizer, load_corpus, token_sequences

__all__ = [
    "ContrastiveAugment",
    "SeriesSplits",
    "WindowDataset",
    "WordPieceTokenizer",
    "hf_tokenizer",
    "load_corpus",
    "load_image_split",
    "load_images",
    "load_series",
    "make_windows",
    "read_idx",
    "token_sequences",
]
