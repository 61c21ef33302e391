"""Offline data: the bundled sunspot series, windows and splits, and image loading."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from conftest import idx_bytes, idx_folder, write_idx

from ssl_fast.data import load_image_split, load_images, load_series, make_windows, read_idx


def test_bundled_sunspots():
    s = load_series()
    assert s.shape == (309,) and s.dtype == torch.float32
    assert s[0].item() == 5.0 and s[-1].item() == pytest.approx(2.9)  # 1700 and 2008


def test_csv_column(tmp_path):
    path = tmp_path / "series.csv"
    path.write_text("# a comment\ntime,load,temp\n0,1.5,20\n1,2.5,21\n2,3.5,22\n")
    assert load_series(path, "load").tolist() == [1.5, 2.5, 3.5]
    assert load_series(path).tolist() == [20, 21, 22]
    with pytest.raises(ValueError, match="no column 'x'; its columns are"):
        load_series(path, "x")
    with pytest.raises(FileNotFoundError, match="no file"):
        load_series(tmp_path / "missing.csv")


def test_windows_split_in_time_without_leakage():
    s = torch.arange(100, dtype=torch.float32)
    splits = make_windows(s, context=10, horizon=3)
    mean, std = s[:70].mean().item(), s[:70].std().item()
    assert (splits.mean, splits.std) == pytest.approx((mean, std))  # the training part only
    # Targets cover each part exactly (the first training target follows the first context).
    for part, lo, hi in ((splits.train, 10, 70), (splits.val, 70, 85), (splits.test, 85, 100)):
        x, y = splits.unscale(part.x), splits.unscale(part.y)
        assert x.shape[1:] == (10,) and y.shape[1:] == (3,)
        torch.testing.assert_close(x[:, -1] + 1, y[:, 0])  # y continues x
        assert y.min().item() == pytest.approx(lo, abs=1e-3)
        assert y.max().item() == pytest.approx(hi - 1, abs=1e-3)
    assert splits.val.x[0, 0] < splits.train.y.max()  # validation windows start L points early
    assert len(splits.train) == 70 - 10 - 3 + 1
    x, y = splits.train[0]
    assert x.shape == (10,) and y.shape == (3,)


def test_window_errors():
    with pytest.raises(ValueError, match="fewer than one window"):
        make_windows(torch.zeros(20), context=12, horizon=4)
    with pytest.raises(ValueError, match="context and horizon must be >= 1"):
        make_windows(torch.zeros(20), context=0, horizon=4)


def test_digits():
    pytest.importorskip("sklearn")
    images, labels = load_images("digits")
    assert images.shape == (1797, 1, 8, 8) and images.dtype == torch.float32
    assert images.min() >= 0 and images.max() == 1 and labels.shape == (1797,)


@pytest.mark.parametrize("layout", ["nhw", "nchw", "nhwc"])
def test_npy_and_npz(tmp_path, layout):
    raw = np.random.default_rng(0).integers(0, 256, size=(5, 6, 6, 3), dtype=np.uint8)
    array = {"nhw": raw[..., 0], "nchw": raw.transpose(0, 3, 1, 2), "nhwc": raw}[layout]
    np.save(tmp_path / "x.npy", array)
    images, labels = load_images(tmp_path / "x.npy")
    assert images.shape == ((5, 1, 6, 6) if layout == "nhw" else (5, 3, 6, 6)) and labels is None
    assert images.amax().item() == pytest.approx(array.max() / 255.0)
    np.savez(tmp_path / "x.npz", images=array, labels=np.arange(5))
    images_z, labels_z = load_images(tmp_path / "x.npz")
    torch.testing.assert_close(images_z, images)
    assert labels_z.tolist() == [0, 1, 2, 3, 4]


def _fake_torchvision(monkeypatch, mnist_class) -> None:
    """torchvision.datasets.MNIST replaced (torchvision has no build for the CPU torch here)."""
    import sys
    import types

    torchvision, datasets = types.ModuleType("torchvision"), types.ModuleType("torchvision.datasets")
    datasets.MNIST, torchvision.datasets = mnist_class, datasets
    monkeypatch.setitem(sys.modules, "torchvision", torchvision)
    monkeypatch.setitem(sys.modules, "torchvision.datasets", datasets)


def test_mnist_through_torchvision(monkeypatch, tmp_path):
    class MNIST:
        def __init__(self, root, train, download):
            assert root == str(tmp_path) and train and download
            self.data = torch.full((3, 28, 28), 255, dtype=torch.uint8)
            self.targets = torch.tensor([7, 1, 4])

    _fake_torchvision(monkeypatch, MNIST)
    images, labels = load_images("mnist", root=tmp_path)
    assert images.shape == (3, 1, 28, 28) and images.max() == 1.0 and labels.tolist() == [7, 1, 4]


def test_mnist_without_files_or_network(monkeypatch, tmp_path):
    class MNIST:
        def __init__(self, root, train, download):
            raise RuntimeError("Error downloading train-images-idx3-ubyte.gz")

    _fake_torchvision(monkeypatch, MNIST)
    with pytest.raises(FileNotFoundError, match=f"not under {tmp_path} and could not be downloaded"):
        load_images("mnist", root=tmp_path)


def test_image_errors(tmp_path):
    with pytest.raises(ValueError, match="'digits', 'mnist', a folder of IDX files or a .npy/.npz path"):
        load_images(tmp_path / "x.png")
    with pytest.raises(FileNotFoundError):
        load_images(tmp_path / "x.npy")
    with pytest.raises(FileNotFoundError, match="no folder"):
        load_images(tmp_path / "mnist")


# ----------------------------------------------------------------- MNIST-format IDX folders

@pytest.mark.parametrize("gzipped", [(True,) * 4, (False,) * 4, (True, False, False, True)],
                         ids=["gzipped", "plain", "mixed"])
def test_idx_folder(tmp_path, gzipped):
    train_x, train_y, test_x, test_y = idx_folder(tmp_path / "mnist", gzipped)
    images, labels, test_start = load_image_split(tmp_path / "mnist")
    assert images.shape == (10, 1, 5, 4) and images.dtype == torch.float32 and test_start == 7
    expected = np.concatenate([train_x, test_x])[:, None] / 255.0
    torch.testing.assert_close(images, torch.from_numpy(expected).float())
    assert labels.tolist() == np.concatenate([train_y, test_y]).tolist()
    images_only, labels_only = load_images(str(tmp_path / "mnist"))  # the training set first, then t10k
    assert torch.equal(images_only, images) and torch.equal(labels_only, labels)


def test_read_idx_types_and_big_endian(tmp_path):
    values = (np.arange(-6, 6).reshape(3, 4) * 1000).astype(">i4")
    (tmp_path / "ints").write_bytes(idx_bytes(values, 0x0C))
    np.testing.assert_array_equal(read_idx(tmp_path / "ints"), values)
    floats = np.linspace(0, 1, 6, dtype=">f8")
    write_idx(tmp_path / "floats", idx_bytes(floats, 0x0E), gz=True)
    np.testing.assert_array_equal(read_idx(tmp_path / "floats.gz"), floats)


def test_idx_folder_missing_a_file(tmp_path):
    idx_folder(tmp_path, gzipped=(False,) * 4)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(FileNotFoundError) as error:
        load_images(tmp_path)
    assert str(error.value) == (
        f"load_images: {tmp_path} lacks t10k-labels-idx1-ubyte[.gz]; a folder of IDX files holds "
        "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte "
        "(each may be gzipped)"
    )


CORRUPT_IDX = {
    "bad magic": (lambda good: b"\x12\x34" + good[2:], "is not an IDX file (magic number 1234"),
    "unknown type": (lambda good: good[:2] + b"\x07" + good[3:], "is not an IDX file (magic number 0000070"),
    "truncated values": (lambda good: good[:-5], "but its header (7, 5, 4) of uint8 needs 156: truncated"),
    "truncated header": (lambda good: good[:9], "is truncated: its header lacks dimensions"),
    "trailing bytes": (lambda good: good + b"\0", "trailing bytes"),
    "empty": (lambda good: b"", "magic number missing"),
}


@pytest.mark.parametrize("case", list(CORRUPT_IDX))
def test_corrupt_idx_files(tmp_path, case):
    idx_folder(tmp_path, gzipped=(False,) * 4)
    path = tmp_path / "train-images-idx3-ubyte"
    damage, message = CORRUPT_IDX[case]
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(ValueError, match=re.escape(message)):
        load_images(tmp_path)


def test_idx_folder_inconsistent_files(tmp_path):
    idx_folder(tmp_path, gzipped=(False,) * 4)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(6, np.uint8)))
    with pytest.raises(ValueError, match=r"the train files hold images of shape \(7, 5, 4\) and labels"):
        load_images(tmp_path)
    (tmp_path / "broken.gz").write_bytes(b"not gzip at all")
    with pytest.raises(ValueError, match="cannot read .*broken.gz"):
        read_idx(tmp_path / "broken.gz")


# ----------------------------------------------------------------- text


def test_default_corpus_is_pythons_documentation():
    from ssl_fast.data import load_corpus

    texts = load_corpus()
    assert 400_000 < sum(map(len, texts)) < 600_000


def test_corpus_from_files_and_folders(tmp_path):
    from ssl_fast.data import load_corpus

    (tmp_path / "a.txt").write_text("first")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.txt").write_text("second")
    assert load_corpus(tmp_path) == ["first", "second"]
    assert load_corpus([tmp_path / "a.txt"]) == ["first"]
    with pytest.raises(FileNotFoundError, match="no file or folder"):
        load_corpus(tmp_path / "missing")


def test_wordpiece_sequences_and_collator(tmp_path):
    pytest.importorskip("tokenizers")
    import ssl_fast
    from ssl_fast.data import WordPieceTokenizer, load_corpus, token_sequences

    texts = load_corpus()[:20]
    tok = WordPieceTokenizer.train(texts, vocab_size=600)
    assert len(tok) <= 600 and tok.mask_token_id in tok.all_special_ids
    assert tok.decode(tok.encode("the python language")) == "the python language"
    sequences = token_sequences(texts, tok, max_length=32)
    assert all(len(s) <= 32 and s[0] == tok.cls_token_id and s[-1] == tok.sep_token_id for s in sequences)
    assert sum(len(s) - 2 for s in sequences) == sum(len(tok.encode(t)) for t in texts)  # nothing dropped
    batch = ssl_fast.MLMCollator(tok, seed=0)(sequences[:8])
    assert batch["input_ids"].shape == batch["labels"].shape == (8, 32)
    # Saved with the run and loaded by `eval`: the same vocabulary.
    tok.save(tmp_path / "tokenizer.json")
    assert WordPieceTokenizer.load(tmp_path / "tokenizer.json").encode(texts[0]) == tok.encode(texts[0])


def test_hugging_face_tokenizer_from_a_folder(tmp_path):
    transformers = pytest.importorskip("transformers")
    from ssl_fast.data import WordPieceTokenizer, hf_tokenizer, load_corpus, token_sequences
    from ssl_fast.data.text import SPECIAL_TOKENS

    texts = load_corpus()[:5]
    ours = WordPieceTokenizer.train(texts, vocab_size=400)
    names = ("pad", "unk", "cls", "sep", "mask")
    specials = {f"{name}_token": token for name, token in zip(names, SPECIAL_TOKENS, strict=True)}
    hf = transformers.PreTrainedTokenizerFast(tokenizer_object=ours.tokenizer, **specials)
    hf.save_pretrained(tmp_path)
    tok = hf_tokenizer(str(tmp_path))
    assert len(tok) == len(ours) and tok.mask_token_id == ours.mask_token_id
    assert sorted(tok.all_special_ids) == sorted(ours.all_special_ids)
    assert tok.encode(texts[0]) == ours.encode(texts[0])  # no special tokens added
    assert token_sequences(texts, tok, max_length=32) == token_sequences(texts, ours, max_length=32)
    with pytest.raises(ValueError, match="cannot load the tokenizer"):
        hf_tokenizer(str(tmp_path / "missing"))


# ----------------------------------------------------------------- augmentations


def test_augment_shapes_range_and_reproducibility():
    from ssl_fast.data import ContrastiveAugment

    x = torch.rand(16, 3, 32, 32)
    augment = ContrastiveAugment(24, noise_std=0.05)
    a = augment(x, torch.Generator().manual_seed(1))
    b = augment(x, torch.Generator().manual_seed(1))
    c = augment(x, torch.Generator().manual_seed(2))
    assert a.shape == (16, 3, 24, 24) and 0 <= a.min() and a.max() <= 1
    assert torch.equal(a, b) and not torch.equal(a, c)
    # Each image gets its own draw: two copies of one image come out different.
    twins = augment(x[:1].expand(2, -1, -1, -1).contiguous(), torch.Generator().manual_seed(3))
    assert not torch.equal(twins[0], twins[1])


def test_augment_identity_and_flip():
    from ssl_fast.data import ContrastiveAugment

    x = torch.rand(4, 1, 8, 8)
    keep = ContrastiveAugment(8, crop_scale=(1, 1), crop_ratio=(1, 1), flip_p=0, jitter=0, blur_p=0)
    torch.testing.assert_close(keep(x), x)
    flip = ContrastiveAugment(8, crop_scale=(1, 1), crop_ratio=(1, 1), flip_p=1, jitter=0, blur_p=0)
    torch.testing.assert_close(flip(x), x.flip(-1))


def test_augment_blur_is_a_normalised_gaussian():
    from ssl_fast.data import ContrastiveAugment

    blur = ContrastiveAugment(16, crop_scale=(1, 1), crop_ratio=(1, 1), flip_p=0, jitter=0, blur_p=1,
                              blur_sigma=(1.0, 1.0))
    constant = torch.full((2, 1, 16, 16), 0.3)
    torch.testing.assert_close(blur(constant), constant)  # weights sum to 1
    impulse = torch.zeros(1, 1, 16, 16)
    impulse[0, 0, 8, 8] = 1.0
    out = blur(impulse)[0, 0]
    assert out[8, 8] < 0.5 and out.sum().item() == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(ValueError, match="expects float"):
        blur(torch.zeros(2, 16, 16))
