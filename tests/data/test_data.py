"""Tests for kdsl.data: the bundled digits and the CIFAR readers (on tiny fake releases)."""

from __future__ import annotations

import gzip
import importlib.util
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from kdsl import data
from kdsl.data import CIFAR10_MEAN, CIFAR10_STD, CIFAR100_MEAN, CIFAR100_STD, Splits

ROOT = Path(__file__).resolve().parents[2]
ASSET = ROOT / "kdsl" / "assets" / "digits.bin.gz"


# --------------------------------------------------------------------------------------- digits

def test_digits_sizes_and_metadata():
    splits = data.digits()
    assert isinstance(splits, Splits)
    assert (len(splits.train), len(splits.val)) == (1438, 359)
    assert splits.num_classes == 10
    assert splits.input_shape == (1, 8, 8)
    train, val, num_classes, input_shape = splits  # a plain tuple for callers that unpack
    assert train is splits.train and num_classes == 10 and input_shape == (1, 8, 8)


def test_digits_items():
    splits = data.digits()
    image, label = splits.train[0]
    assert image.shape == (1, 8, 8) and image.dtype == torch.float32
    assert label.dtype == torch.int64 and label.dim() == 0
    for dataset in (splits.train, splits.val):
        assert dataset.images.min() == 0.0 and dataset.images.max() == 1.0
        assert dataset.labels.dtype == torch.int64
        assert set(dataset.labels.tolist()) == set(range(10))


def test_digits_split_is_deterministic_and_ignores_torch_rng():
    torch.manual_seed(0)
    first = data.digits()
    torch.manual_seed(12345)
    torch.rand(100)
    second = data.digits()
    assert torch.equal(first.train.images, second.train.images)
    assert torch.equal(first.val.labels, second.val.labels)


def _asset_labels() -> torch.Tensor:
    splits = data.digits()
    return torch.cat([splits.train.labels, splits.val.labels])


@pytest.mark.parametrize("fraction", [0.1, 0.2, 0.5])
def test_stratified_split_partitions_and_stratifies(fraction):
    labels = torch.tensor([c for c in range(10) for _ in range(170 + 3 * c)])
    train, val = data.stratified_split(labels, fraction)
    assert torch.equal(torch.sort(torch.cat([train, val])).values, torch.arange(labels.numel()))
    assert not set(train.tolist()) & set(val.tolist())
    for cls in range(10):
        members = int((labels == cls).sum())
        assert int((labels[val] == cls).sum()) == round(members * fraction)


def test_stratified_split_spreads_picks_through_each_class():
    labels = torch.zeros(100, dtype=torch.int64)
    _, val = data.stratified_split(labels, 0.2)
    # Twenty picks, one from the middle of every run of five.
    assert val.tolist() == list(range(2, 100, 5))


def test_digits_split_per_class_counts():
    splits = data.digits()
    for cls in range(10):
        n_val = int((splits.val.labels == cls).sum())
        n_all = n_val + int((splits.train.labels == cls).sum())
        assert n_val == round(0.2 * n_all)


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_invalid_val_fraction(fraction):
    with pytest.raises(ValueError, match="val_fraction"):
        data.digits(val_fraction=fraction)


def test_digits_other_fraction():
    splits = data.digits(val_fraction=0.5)
    assert len(splits.train) + len(splits.val) == 1797
    assert abs(len(splits.val) - 1797 / 2) <= 10


def test_digits_asset_equals_sklearn():
    sklearn_datasets = pytest.importorskip("sklearn.datasets")
    bunch = sklearn_datasets.load_digits()
    images = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1)
    labels = torch.tensor(bunch.target, dtype=torch.int64)
    assert images.shape == (1797, 1, 8, 8)
    train, val = data.stratified_split(labels, 0.2)
    splits = data.digits()
    # The shipped asset is in sklearn's order, so the public split must land on the same samples.
    assert torch.equal(splits.train.images * 16, images[train])
    assert torch.equal(splits.val.images * 16, images[val])
    assert torch.equal(splits.train.labels, labels[train])
    assert torch.equal(splits.val.labels, labels[val])


def test_digits_asset_is_what_the_tool_builds():
    pytest.importorskip("sklearn")
    spec = importlib.util.spec_from_file_location("make_digits_asset", ROOT / "tools" / "make_digits_asset.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    assert gzip.decompress(ASSET.read_bytes()) == tool.build_payload()


def test_digits_loader_batches():
    batch_images, batch_labels = next(iter(DataLoader(data.digits().train, batch_size=16)))
    assert batch_images.shape == (16, 1, 8, 8) and batch_labels.shape == (16,)
    assert batch_labels.dtype == torch.int64


# ---------------------------------------------------------------------------------------- CIFAR

def _fake_batch(rng: np.random.Generator, n: int, label_key: str, classes: int) -> dict:
    """One batch in the layout of the python release (bytes keys, flat uint8 rows)."""
    batch = {
        b"batch_label": b"fake batch",
        b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
        label_key.encode(): [int(v) for v in rng.integers(0, classes, size=n)],
        b"filenames": [f"img_{i}.png".encode() for i in range(n)],
    }
    if label_key == "fine_labels":
        batch[b"coarse_labels"] = [int(v) for v in rng.integers(0, 20, size=n)]
    return batch


def _write(path: Path, content) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        pickle.dump(content, handle, protocol=2)


@pytest.fixture
def cifar10_root(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "cifar-10-batches-py"
    for i in range(1, 6):
        _write(folder / f"data_batch_{i}", _fake_batch(rng, 4, "labels", 10))
    _write(folder / "test_batch", _fake_batch(rng, 3, "labels", 10))
    return tmp_path


@pytest.fixture
def cifar100_root(tmp_path):
    rng = np.random.default_rng(1)
    folder = tmp_path / "cifar-100-python"
    _write(folder / "train", _fake_batch(rng, 6, "fine_labels", 100))
    _write(folder / "test", _fake_batch(rng, 2, "fine_labels", 100))
    return tmp_path


def _raw(root: Path, name: str) -> dict:
    with open(root / name, "rb") as handle:
        return pickle.load(handle, encoding="bytes")


def _normalised(row: np.ndarray, mean, std) -> torch.Tensor:
    image = torch.tensor(row, dtype=torch.float32).view(3, 32, 32) / 255
    return (image - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)


def test_cifar10_shapes_and_labels(cifar10_root):
    splits = data.cifar10(cifar10_root)
    assert (len(splits.train), len(splits.val)) == (20, 3)
    assert splits.num_classes == 10 and splits.input_shape == (3, 32, 32)
    expected = []
    for i in range(1, 6):
        expected += _raw(cifar10_root / "cifar-10-batches-py", f"data_batch_{i}")[b"labels"]
    assert splits.train.labels.tolist() == expected
    image, label = splits.train[7]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32
    assert label.dtype == torch.int64


def test_cifar10_validation_is_normalised_not_augmented(cifar10_root):
    splits = data.cifar10(cifar10_root)
    rows = _raw(cifar10_root / "cifar-10-batches-py", "test_batch")[b"data"]
    for index in range(3):
        image, _ = splits.val[index]
        assert torch.allclose(image, _normalised(rows[index], CIFAR10_MEAN, CIFAR10_STD), atol=1e-6)
        assert torch.equal(image, splits.val[index][0])


def test_cifar10_root_may_be_the_batches_folder(cifar10_root):
    splits = data.cifar10(cifar10_root / "cifar-10-batches-py")
    assert len(splits.train) == 20


def test_cifar10_without_augmentation(cifar10_root):
    splits = data.cifar10(cifar10_root, augment=False)
    row = _raw(cifar10_root / "cifar-10-batches-py", "data_batch_1")[b"data"][0]
    assert torch.allclose(splits.train[0][0], _normalised(row, CIFAR10_MEAN, CIFAR10_STD), atol=1e-6)


def _candidates(row: np.ndarray, mean, std) -> list:
    """Every image the standard augmentation can produce: 9 x 9 crops of the zero-padded image,
    flipped or not, then normalised."""
    image = torch.tensor(row, dtype=torch.float32).view(3, 32, 32) / 255
    padded = torch.zeros(3, 40, 40)
    padded[:, 4:36, 4:36] = image
    m, s = torch.tensor(mean).view(3, 1, 1), torch.tensor(std).view(3, 1, 1)
    out = []
    for top in range(9):
        for left in range(9):
            crop = padded[:, top:top + 32, left:left + 32]
            out += [(crop - m) / s, (crop.flip(-1) - m) / s]
    return out


def test_cifar10_augmentation_is_crop_and_flip(cifar10_root):
    splits = data.cifar10(cifar10_root)
    row = _raw(cifar10_root / "cifar-10-batches-py", "data_batch_1")[b"data"][2]
    candidates = _candidates(row, CIFAR10_MEAN, CIFAR10_STD)
    plain = _normalised(row, CIFAR10_MEAN, CIFAR10_STD)
    torch.manual_seed(0)
    draws = [splits.train[2][0] for _ in range(30)]
    for draw in draws:
        assert draw.shape == (3, 32, 32)
        assert any(torch.allclose(draw, c, atol=1e-6) for c in candidates)
    # With 162 equally likely outcomes, thirty unshifted, unflipped draws would mean no augmentation.
    assert not all(torch.allclose(draw, plain, atol=1e-6) for draw in draws)


def test_cifar10_augmentation_follows_torch_seed(cifar10_root):
    splits = data.cifar10(cifar10_root)
    torch.manual_seed(7)
    first = torch.stack([splits.train[i][0] for i in range(20)])
    torch.manual_seed(7)
    second = torch.stack([splits.train[i][0] for i in range(20)])
    assert torch.equal(first, second)


def test_cifar_loader_batches(cifar10_root):
    loader = DataLoader(data.cifar10(cifar10_root).train, batch_size=8, shuffle=True,
                        generator=torch.Generator().manual_seed(0))
    images, labels = next(iter(loader))
    assert images.shape == (8, 3, 32, 32) and images.dtype == torch.float32
    assert labels.shape == (8,) and labels.dtype == torch.int64


def test_cifar100_uses_fine_labels(cifar100_root):
    splits = data.cifar100(cifar100_root)
    folder = cifar100_root / "cifar-100-python"
    assert (len(splits.train), len(splits.val)) == (6, 2)
    assert splits.num_classes == 100 and splits.input_shape == (3, 32, 32)
    assert splits.train.labels.tolist() == _raw(folder, "train")[b"fine_labels"]
    assert splits.val.labels.tolist() == _raw(folder, "test")[b"fine_labels"]
    row = _raw(folder, "test")[b"data"][1]
    assert torch.allclose(splits.val[1][0], _normalised(row, CIFAR100_MEAN, CIFAR100_STD), atol=1e-6)
    assert data.cifar100(folder).train.labels.tolist() == splits.train.labels.tolist()


def test_missing_cifar10_names_paths_and_files(tmp_path):
    root = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError) as info:
        data.cifar10(root)
    message = str(info.value)
    assert str(root / "cifar-10-batches-py") in message and f"  {root}\n" in message
    for file in ["data_batch_1", "data_batch_5", "test_batch"]:
        assert file in message


def test_missing_cifar100_names_paths_and_files(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        data.cifar100(tmp_path)
    message = str(info.value)
    assert str(tmp_path / "cifar-100-python") in message and str(tmp_path) in message
    assert "train, test" in message


def test_incomplete_cifar10_is_missing(cifar10_root):
    (cifar10_root / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError, match="data_batch_3"):
        data.cifar10(cifar10_root)


def test_cifar_reads_numpy1_era_pickles(cifar10_root):
    """The official files name ``numpy.core.multiarray``, which numpy 2 only keeps as an alias."""
    folder = cifar10_root / "cifar-10-batches-py"
    content = (folder / "test_batch").read_bytes()
    (folder / "test_batch").write_bytes(content.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    assert b"numpy.core.multiarray" in (folder / "test_batch").read_bytes()
    assert len(data.cifar10(cifar10_root).val) == 3


class _Payload:
    """Unpickles into a call of ``print``: harmless, but not something a batch file may name."""

    def __reduce__(self):
        return (print, ("this should never run",))


def test_cifar_batch_may_not_name_arbitrary_callables(cifar10_root, capsys):
    _write(cifar10_root / "cifar-10-batches-py" / "test_batch", {b"data": _Payload(), b"labels": [0]})
    with pytest.raises(data.DataFileError, match=r"test_batch: not a CIFAR batch file \(refusing to load .*print"):
        data.cifar10(cifar10_root)
    assert "should never run" not in capsys.readouterr().out


def test_cifar_without_numpy_says_so(cifar10_root, monkeypatch):
    monkeypatch.setitem(sys.modules, "numpy", None)
    with pytest.raises(ImportError, match="numpy"):
        data.cifar10(cifar10_root)


# ------------------------------------------------------------------------- hostile CIFAR folders
def _replace_test_batch(root: Path, content=None, raw: bytes = None) -> Path:
    path = root / "cifar-10-batches-py" / "test_batch"
    if raw is not None:
        path.write_bytes(raw)
    else:
        _write(path, content)
    return path


@pytest.mark.parametrize("case, expected", [
    ("empty", "empty or truncated"),
    ("text", "not a CIFAR batch file"),
    ("list", "holds a list, not a dict"),
    ("no_labels", "no 'labels' entry"),
    ("float_pixels", "must be uint8 pixel values"),
    ("zero_images", "holds no images"),
    ("wrong_row_size", "rows of 3072 values"),
    ("label_out_of_range", "label 10 is outside 0..9"),
    ("count_mismatch", "3 images but 2 labels"),
])
def test_corrupt_cifar_batches_name_the_file(cifar10_root, case, expected):
    rng = np.random.default_rng(5)
    good = _fake_batch(rng, 3, "labels", 10)
    contents = {
        "list": [1, 2, 3],
        "no_labels": {b"data": good[b"data"]},
        "float_pixels": {**good, b"data": good[b"data"].astype(np.float32) / 255},
        "zero_images": {**good, b"data": np.zeros((0, 3072), dtype=np.uint8), b"labels": []},
        "wrong_row_size": {**good, b"data": np.zeros((3, 100), dtype=np.uint8)},
        "label_out_of_range": {**good, b"labels": [0, 1, 10]},
        "count_mismatch": {**good, b"labels": [0, 1]},
    }
    raw = {"empty": b"", "text": b"this is not a pickle\n"}.get(case)
    path = _replace_test_batch(cifar10_root, contents.get(case), raw)
    with pytest.raises(data.DataFileError) as info:
        data.cifar10(cifar10_root)
    assert str(path) in str(info.value) and expected in str(info.value)
