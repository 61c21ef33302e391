"""Text for masked language modelling: the user's text files or folders, or by default the
English documentation topics bundled with Python (pydoc_data.topics, about 460k
characters); a WordPiece tokenizer trained on the fly with the `tokenizers` library; and
fixed-length token sequences for the MLM collator."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def load_corpus(paths: str | Path | Sequence[str | Path] | None = None) -> list[str]:
    """Documents as strings: each .txt file under the given files or folders (sorted), or
    without paths the topics of Python's own documentation."""
    if paths is None:
        from pydoc_data.topics import topics

        return [topics[name] for name in sorted(topics)]
    files: list[Path] = []
    for item in [paths] if isinstance(paths, (str, Path)) else paths:
        item = Path(item)
        if item.is_dir():
            files += sorted(item.rglob("*.txt"))
        elif item.is_file():
            files.append(item)
        else:
            raise FileNotFoundError(f"load_corpus: no file or folder {item}")
    if not files:
        raise ValueError(f"load_corpus: no .txt file under {paths}")
    texts = [f.read_text(encoding="utf-8", errors="replace") for f in files]
    if not any(text.strip() for text in texts):
        raise ValueError(f"load_corpus: the corpus {paths} is empty")
    return texts


class WordPieceTokenizer:
    """A `tokenizers` WordPiece model with the attributes the MLM collator and
    ssl_fast.mask_tokens use: mask_token_id, pad_token_id, all_special_ids, len()."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        ids = {token: tokenizer.token_to_id(token) for token in SPECIAL_TOKENS}
        self.pad_token_id, self.unk_token_id = ids["[PAD]"], ids["[UNK]"]
        self.cls_token_id, self.sep_token_id, self.mask_token_id = ids["[CLS]"], ids["[SEP]"], ids["[MASK]"]
        self.all_special_ids = list(ids.values())

    @classmethod
    def train(
        cls, texts: Iterable[str], vocab_size: int = 8000, min_frequency: int = 2, show_progress: bool = True
    ) -> WordPieceTokenizer:
        """Trains a lower-casing WordPiece vocabulary of at most vocab_size tokens on `texts`
        (with the tokenizers library's progress bar on stdout when show_progress)."""
        try:
            from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
        except ImportError:
            raise ImportError(
                "WordPieceTokenizer.train needs the tokenizers library: pip install tokenizers"
            ) from None
        tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
        tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tokenizer.decoder = decoders.WordPiece()
        trainer = trainers.WordPieceTrainer(
            vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=list(SPECIAL_TOKENS),
            show_progress=show_progress,
        )
        tokenizer.train_from_iterator(texts, trainer)
        return cls(tokenizer)

    def save(self, path: str | Path) -> None:
        self.tokenizer.save(str(path))

    @classmethod
    def load(cls, path: str | Path) -> WordPieceTokenizer:
        from tokenizers import Tokenizer

        return cls(Tokenizer.from_file(str(path)))

    def __len__(self) -> int:
        return self.tokenizer.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids))


def token_sequences(
    texts: Iterable[str], tokenizer: WordPieceTokenizer, max_length: int = 128
) -> list[list[int]]:
    """The texts' tokens, concatenated and cut into [CLS] ... [SEP] sequences of max_length
    ids (the last one shorter), so that no token is lost to truncation."""
    if max_length < 3:
        raise ValueError(f"token_sequences: max_length must be at least 3, got {max_length}")
    body = max_length - 2
    stream = [token for text in texts for token in tokenizer.encode(text)]
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    return [[cls, *stream[i : i + body], sep] for i in range(0, len(stream), body)]


def hf_tokenizer(name: str):
    """A Hugging Face tokenizer by folder or name, adapted to encode() without special
    tokens as WordPieceTokenizer. A name is looked up in the local Hugging Face cache
    first, and downloaded only when that misses and the hub answers: without a network,
    the error comes at once instead of after the hub client's retries."""
    try:
        from transformers import AutoTokenizer
    except ImportError:
        raise ImportError(f"the tokenizer {name!r} needs transformers: pip install transformers") from None
    try:
        tokenizer = AutoTokenizer.from_pretrained(name, local_files_only=True)
    except (OSError, ValueError) as exc:  # not a tokenizer folder, and not in the cache
        if Path(name).is_dir():
            raise ValueError(f"cannot load the tokenizer folder {name}: {_one_line(exc)}") from None
        if not re.fullmatch(r"\w[\w.-]*(/\w[\w.-]*)?", name):  # not a hub name (org/name) either
            raise ValueError(f"cannot load the tokenizer {name!r}: there is no such folder") from None
        offline = _hub_unreachable()
        if offline:
            raise ValueError(
                f"the tokenizer {name!r} is neither a folder nor in the local Hugging Face cache, and "
                f"cannot be downloaded: {offline}"
            ) from None
        try:
            tokenizer = AutoTokenizer.from_pretrained(name)
        except (OSError, ValueError) as exc:
            raise ValueError(f"cannot load the tokenizer {name!r}: {_one_line(exc)}") from None
    if tokenizer.mask_token_id is None or tokenizer.pad_token_id is None:
        raise ValueError(f"the tokenizer {name!r} has no mask or pad token, which masked language modelling "
                         "needs")
    return _HFAdapter(tokenizer)


def _one_line(exc: Exception) -> str:
    """The exception's message with its line breaks and runs of spaces made single spaces."""
    return " ".join(str(exc).split()) or type(exc).__name__


def _hub_unreachable() -> str | None:
    """Why the Hugging Face hub cannot be reached (offline mode, no connection within a few
    seconds), or None when it answers. One request without retries."""
    from huggingface_hub import constants
    from huggingface_hub.utils import get_session

    if constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set"
    try:
        get_session().head(constants.ENDPOINT, timeout=5)
    except Exception as exc:  # the session's own error types differ between hub versions
        return f"{constants.ENDPOINT} cannot be reached ({_one_line(exc)})"
    return None


class _HFAdapter:
    """A transformers tokenizer seen through the WordPieceTokenizer interface."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.pad_token_id, self.mask_token_id = tokenizer.pad_token_id, tokenizer.mask_token_id
        # Sequences are framed as [CLS] ... [SEP], or <s> ... </s> for tokenizers without them.
        cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
        self.cls_token_id = cls if cls is not None else tokenizer.bos_token_id
        self.sep_token_id = sep if sep is not None else tokenizer.eos_token_id
        self.all_special_ids = list(tokenizer.all_special_ids)
        if self.cls_token_id is None or self.sep_token_id is None:
            raise ValueError(
                f"the tokenizer {tokenizer.name_or_path!r} has no [CLS]/<s> or [SEP]/</s> token to frame "
                "sequences"
            )

    def __len__(self) -> int:
        return len(self.tokenizer)

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids))
