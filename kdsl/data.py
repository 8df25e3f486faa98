"""Built-in datasets, referenced from specs as ``kdsl.data:digits``, ``kdsl.data:cifar100``, ...

A data factory is any callable that returns training and validation datasets; the built-in ones
return a :class:`Splits`, which also says how many classes there are and what one input looks like
so that models and shape checks can be set up before any data is read.

* :func:`digits`: scikit-learn's 8x8 handwritten digits (1797 images, 10 classes), shipped with
  kdsl as ``kdsl/assets/digits.bin.gz`` so that it needs neither scikit-learn nor the network.
  The asset is produced by ``tools/make_digits_asset.py``; its decompressed layout is a 16-byte
  little-endian header (magic ``b"KDSLDIG1"``, uint32 image count ``n``, uint8 height, width,
  largest pixel value and class count), then ``n * height * width`` uint8 pixels (image-major,
  row-major), then ``n`` uint8 labels.
* :func:`cifar10` / :func:`cifar100`: the python-pickle releases from
  https://www.cs.toronto.edu/~kriz/cifar.html, read from a local folder; with ``download=True`` a
  missing release is downloaded there first (resumable, checked against the published MD5,
  extracted atomically: :mod:`kdsl.core.download`). ``KDSL_CIFAR_MIRROR=URL`` fetches the same
  archives from a mirror (the checksums still apply).

Datasets are tensor-backed; ``dataset[i]`` returns ``(image, label)`` with a float image tensor and
an int64 label. Random augmentation draws from torch's global generator; kdsl's training loader
seeds that generator for each item from (run seed, epoch, index) (``kdsl.training.data.sample_seed``),
so a sample's augmentation at an epoch is the same in every run, process and data-loader worker.
"""

from __future__ import annotations

import dataclasses
import gzip
import os
import pickle
import struct
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

import torch
from torch.utils.data import Dataset

from kdsl.core.diagnostics import error
from kdsl.core.download import Remote, exclusive, extract_folder, fetch
from kdsl.prompt_data import prompts  # noqa: F401 - kdsl.data:prompts, prompt/completion and chat lines
from kdsl.prompt_tasks import arith, strings  # noqa: F401 - kdsl.data:arith and :strings, synthetic prompt/completion tasks
from kdsl.text_data import text  # noqa: F401 - kdsl.data:text, the token-window reader

__all__ = [
    "Splits",
    "ImageDataset",
    "CifarTransform",
    "stratified_split",
    "digits",
    "cifar10",
    "cifar100",
    "text",
    "prompts",
    "arith",
    "strings",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "CIFAR100_MEAN",
    "CIFAR100_STD",
]

PathLike = Union[str, Path]

# Per-channel statistics of the training images (pixel values scaled to [0, 1]). The CIFAR-100
# figures are the ones the CRD/RepDistiller benchmarks normalise with.
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN = (0.5071, 0.4867, 0.4408)
CIFAR100_STD = (0.2675, 0.2565, 0.2761)

_DIGITS_MAGIC = b"KDSLDIG1"
_DIGITS_HEADER = struct.Struct("<8sIBBBB")
_CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"


class Splits(NamedTuple):
    """What a built-in data factory returns.

    Attributes:
        train: the training dataset.
        val: the validation dataset.
        num_classes: number of target classes.
        input_shape: shape of one input, without the batch dimension (e.g. ``(3, 32, 32)``).
    """

    train: Dataset
    val: Dataset
    num_classes: int
    input_shape: Tuple[int, ...]


class ImageDataset(Dataset):
    """Images and labels held in two tensors, with an optional per-item transform.

    Args:
        images: ``[N, C, H, W]`` tensor (any dtype the transform accepts).
        labels: ``[N]`` int64 tensor.
        transform: applied to one image on every access; ``None`` returns it unchanged.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor,
                 transform: Optional[Callable[[torch.Tensor], torch.Tensor]] = None) -> None:
        if images.shape[0] != labels.shape[0]:
            raise ValueError(f"{images.shape[0]} images but {labels.shape[0]} labels")
        self.images = images
        self.labels = labels
        self.transform = transform

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, torch.Tensor]:
        image = self.images[index]
        if self.transform is not None:
            image = self.transform(image)
        return image, self.labels[index]

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(n={len(self)}, image_shape={tuple(self.images.shape[1:])}, "
                f"transform={self.transform!r})")


class CifarTransform:
    """uint8 ``[C, H, W]`` image -> normalised float image, optionally augmented.

    Augmentation is the standard CIFAR recipe: zero-pad by ``padding`` pixels (black, i.e. before
    normalisation, as torchvision's ``RandomCrop(32, padding=4)`` on a PIL image does), take a
    random crop of the original size, and flip horizontally with probability 1/2. Randomness comes
    from torch's global generator (three draws per image), which kdsl's training loader seeds per
    sample from (seed, epoch, index).
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], augment: bool = False,
                 padding: int = 4) -> None:
        if padding < 0:
            raise ValueError(f"padding must be non-negative, got {padding}")
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
        self.augment = augment
        self.padding = padding

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        x = image.to(torch.float32).div(255.0)
        if self.augment:
            _, height, width = x.shape
            if self.padding:
                x = torch.nn.functional.pad(x, (self.padding,) * 4)
            top = int(torch.randint(0, 2 * self.padding + 1, ()))
            left = int(torch.randint(0, 2 * self.padding + 1, ()))
            x = x[:, top:top + height, left:left + width]
            if bool(torch.rand(()) < 0.5):
                x = x.flip(-1)
        return (x - self.mean) / self.std

    def __repr__(self) -> str:
        return f"{type(self).__name__}(augment={self.augment}, padding={self.padding})"


def stratified_split(labels: torch.Tensor, val_fraction: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """Split sample indices into ``(train, val)`` deterministically, class by class.

    Each class with ``n`` samples sends ``round(n * val_fraction)`` of them (at least one, and never
    all) to validation, chosen evenly spaced through that class's samples in their stored order, so
    the result depends only on the labels: no random generator is involved. Both index tensors are
    sorted.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be strictly between 0 and 1, got {val_fraction}")
    val_parts: List[torch.Tensor] = []
    for cls in torch.unique(labels).tolist():
        members = torch.nonzero(labels == cls).flatten()
        count = members.numel()
        if count < 2:
            raise ValueError(f"class {cls} has {count} sample(s); a stratified split needs two")
        k = min(max(1, round(count * val_fraction)), count - 1)
        # Integer midpoints of k equal slices of the class: exact, and spread over the whole run.
        picks = [((2 * i + 1) * count) // (2 * k) for i in range(k)]
        val_parts.append(members[picks])
    val = torch.sort(torch.cat(val_parts)).values
    is_val = torch.zeros(labels.shape[0], dtype=torch.bool)
    is_val[val] = True
    train = torch.nonzero(~is_val).flatten()
    return train, val


@lru_cache(maxsize=1)
def _digits_arrays() -> Tuple[torch.Tensor, torch.Tensor, int, int]:
    raw = gzip.decompress(resources.files("kdsl").joinpath("assets/digits.bin.gz").read_bytes())
    magic, n, height, width, max_value, num_classes = _DIGITS_HEADER.unpack_from(raw)
    expected = _DIGITS_HEADER.size + n * height * width + n
    if magic != _DIGITS_MAGIC or len(raw) != expected:
        raise ValueError("kdsl/assets/digits.bin.gz is corrupt; rebuild it with tools/make_digits_asset.py")
    # frombuffer shares memory with its buffer, so give it a private, writable copy.
    buffer = bytearray(raw)
    offset = _DIGITS_HEADER.size
    pixels = torch.frombuffer(buffer, dtype=torch.uint8, count=n * height * width, offset=offset)
    labels = torch.frombuffer(buffer, dtype=torch.uint8, count=n, offset=offset + n * height * width)
    return pixels.view(n, 1, height, width), labels.to(torch.int64), max_value, num_classes


def digits(val_fraction: float = 0.2) -> Splits:
    """scikit-learn's 8x8 digits, split deterministically and stratified by class.

    Images are float32 ``[1, 8, 8]`` tensors in [0, 1] (the original 0..16 intensities divided by
    16); labels are int64 in 0..9. With the default ``val_fraction=0.2`` the split is 1438 training
    and 359 validation images; see :func:`stratified_split` for how they are chosen.
    """
    pixels, labels, max_value, num_classes = _digits_arrays()
    images = pixels.to(torch.float32).div(max_value)
    train, val = stratified_split(labels, val_fraction)
    return Splits(
        train=ImageDataset(images[train], labels[train]),
        val=ImageDataset(images[val], labels[val]),
        num_classes=num_classes,
        input_shape=tuple(images.shape[1:]),
    )


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickler that rebuilds numpy arrays and nothing else.

    The CIFAR files are pickles, and a pickle can name any callable; restricting what may be
    looked up means a tampered file in a data folder cannot run code when it is read.
    """

    _ALLOWED_NAMES = {"_reconstruct", "ndarray", "dtype", "scalar", "_frombuffer"}

    def find_class(self, module: str, name: str) -> Any:
        if (module == "numpy" or module.startswith("numpy.")) and name in self._ALLOWED_NAMES:
            return super().find_class(module, name)
        if (module, name) in (("_codecs", "encode"), ("__builtin__", "bytes"), ("builtins", "bytes")):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR batch file")


def _require_numpy() -> Any:
    try:
        import numpy
    except ImportError as exc:  # numpy is optional for kdsl but the CIFAR pickles contain arrays
        raise ImportError("reading CIFAR needs numpy (the batch files are pickled numpy arrays); "
                          "install it with `pip install numpy`") from exc
    return numpy


class DataFileError(ValueError):
    """A data file that is not what its reader expects; the message names the file."""


def _read_batch(path: Path) -> Dict[str, Any]:
    try:
        with open(path, "rb") as handle:
            content = _ArrayUnpickler(handle, encoding="bytes").load()
    except pickle.UnpicklingError as exc:
        raise DataFileError(f"{path}: not a CIFAR batch file ({exc})") from None
    except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError, ImportError) as exc:
        what = "empty or truncated" if isinstance(exc, EOFError) else f"{type(exc).__name__}: {exc}"
        raise DataFileError(f"{path}: not a CIFAR batch file ({what})") from None
    if not isinstance(content, dict):
        raise DataFileError(f"{path}: not a CIFAR batch file (it holds a {type(content).__name__}, "
                            "not a dict)")
    # The release was pickled by Python 2, so keys come back as bytes; accept str keys as well.
    return {key.decode("latin1") if isinstance(key, bytes) else key: value for key, value in content.items()}


def _locate(root: PathLike, folder: str, files: Sequence[str], name: str) -> Path:
    root = Path(root).expanduser()
    candidates = [root / folder, root]
    for candidate in candidates:
        if all((candidate / file).is_file() for file in files):
            return candidate
    looked = "\n".join(f"  {candidate}" for candidate in candidates)
    reader = "cifar100" if "100" in name else "cifar10"
    raise FileNotFoundError(
        f"{name} not found. Looked in:\n{looked}\n"
        f"Name the folder: --data 'kdsl.data:{reader}(root=\"PATH\")' (relative to the working "
        f"directory), or root=\"PATH\" in the spec's dataset(...) (relative to the spec file). "
        f"It holds the files {', '.join(files)} (the python version of {name}, from {_CIFAR_URL}, "
        f"extracted); download=true in dataset(...) or --data downloads it there."
    )


# The python releases, with the checksums their publisher gives (MD5; torchvision checks the same).
CIFAR_ARCHIVES = {
    "CIFAR-10": Remote("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                       "md5:c58f30108f718f92721af3b95e74349a", 170_498_071),
    "CIFAR-100": Remote("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
                        "md5:eb9058c3a382ffc7106e4002c42a8d85", 169_001_437),
}
MIRROR_ENV = "KDSL_CIFAR_MIRROR"


def _located(root: PathLike, folder: str, files: Sequence[str], name: str, download: bool) -> Path:
    """The folder holding ``files``; with ``download``, a release not found under ``root`` is
    downloaded to ``root`` and extracted there first."""
    try:
        return _locate(root, folder, files, name)
    except FileNotFoundError:
        if not download:
            raise
    remote = CIFAR_ARCHIVES[name]
    if os.environ.get(MIRROR_ENV):
        remote = dataclasses.replace(remote, url=os.environ[MIRROR_ENV].rstrip("/") + "/" + remote.name)
    root = Path(root).expanduser()
    with exclusive(root / f".{remote.name}.lock"):
        try:  # another process may have finished it while this one waited
            return _locate(root, folder, files, name)
        except FileNotFoundError:
            extract_folder(fetch(remote, root / remote.name), folder, root)
    return _locate(root, folder, files, name)


def _batch_arrays(path: Path, label_key: str, num_classes: int, numpy: Any) -> Tuple[torch.Tensor, List[int]]:
    """One batch file's images ([N, 3, 32, 32] uint8) and labels, checked: nothing is cast silently."""
    batch = _read_batch(path)
    missing = [k for k in ("data", label_key) if k not in batch]
    if missing:
        raise DataFileError(f"{path}: not a CIFAR batch file (no {', '.join(repr(k) for k in missing)} "
                            f"entry; it has {', '.join(repr(k) for k in batch) or 'none'})")
    data = batch["data"]
    if not isinstance(data, numpy.ndarray) or data.dtype != numpy.uint8:
        kind = getattr(data, "dtype", type(data).__name__)
        raise DataFileError(f"{path}: images must be uint8 pixel values (0-255), got {kind}")
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataFileError(f"{path}: images must be rows of 3072 values (3x32x32), got shape {tuple(data.shape)}")
    if data.shape[0] == 0:
        raise DataFileError(f"{path}: the batch holds no images")
    labels = [int(label) for label in batch[label_key]]
    if len(labels) != data.shape[0]:
        raise DataFileError(f"{path}: {data.shape[0]} images but {len(labels)} labels")
    bad = next((label for label in labels if not 0 <= label < num_classes), None)
    if bad is not None:
        raise DataFileError(f"{path}: label {bad} is outside 0..{num_classes - 1}")
    return torch.from_numpy(numpy.ascontiguousarray(data)).reshape(-1, 3, 32, 32), labels


def _load_split(folder: Path, files: Sequence[str], label_key: str,
                num_classes: int) -> Tuple[torch.Tensor, torch.Tensor]:
    numpy = _require_numpy()
    images: List[torch.Tensor] = []
    labels: List[int] = []
    for file in files:
        batch_images, batch_labels = _batch_arrays(folder / file, label_key, num_classes, numpy)
        images.append(batch_images)
        labels.extend(batch_labels)
    return torch.cat(images), torch.tensor(labels, dtype=torch.int64)


def _cifar(folder: Path, train_files: Sequence[str], val_files: Sequence[str], label_key: str,
           num_classes: int, mean: Sequence[float], std: Sequence[float], augment: bool) -> Splits:
    train_images, train_labels = _load_split(folder, train_files, label_key, num_classes)
    val_images, val_labels = _load_split(folder, val_files, label_key, num_classes)
    return Splits(
        train=ImageDataset(train_images, train_labels, CifarTransform(mean, std, augment=augment)),
        val=ImageDataset(val_images, val_labels, CifarTransform(mean, std, augment=False)),
        num_classes=num_classes,
        input_shape=(3, 32, 32),
    )


def cifar10(root: PathLike = "data/cifar10", augment: bool = True, download: bool = False) -> Splits:
    """CIFAR-10 from the python release: 50000 training and 10000 test (validation) images.

    ``root`` may be the folder that contains ``cifar-10-batches-py`` or that folder itself. Images
    are kept as uint8 and normalised on access with :data:`CIFAR10_MEAN`/:data:`CIFAR10_STD`; the
    training set is augmented (random 4-pixel-padded crop and horizontal flip) when ``augment``.
    ``download``: when the files are in neither place, download the release (170 MB) to ``root``
    and extract it there (see :data:`CIFAR_ARCHIVES`).

    Raises:
        FileNotFoundError: the batch files are in neither place; the message lists both paths.
        kdsl.core.download.DownloadError: the download failed or its checksum did not match.
        ImportError: numpy is not installed.
    """
    train_files = [f"data_batch_{i}" for i in range(1, 6)]
    folder = _located(root, "cifar-10-batches-py", train_files + ["test_batch"], "CIFAR-10", download)
    return _cifar(folder, train_files, ["test_batch"], "labels", 10, CIFAR10_MEAN, CIFAR10_STD, augment)


def cifar100(root: PathLike = "data/cifar100", augment: bool = True, download: bool = False) -> Splits:
    """CIFAR-100 (fine labels) from the python release: 50000 training and 10000 test images.

    ``root`` may be the folder that contains ``cifar-100-python`` or that folder itself; otherwise
    as :func:`cifar10` (``download`` included: 169 MB), normalising with
    :data:`CIFAR100_MEAN`/:data:`CIFAR100_STD`.

    Raises:
        FileNotFoundError: ``train``/``test`` are in neither place; the message lists both paths.
        kdsl.core.download.DownloadError: the download failed or its checksum did not match.
        ImportError: numpy is not installed.
    """
    folder = _located(root, "cifar-100-python", ["train", "test"], "CIFAR-100", download)
    return _cifar(folder, ["train"], ["test"], "fine_labels", 100, CIFAR100_MEAN, CIFAR100_STD, augment)


def _zeros_example(shape: Tuple[int, ...]) -> Callable[..., Tuple[torch.Tensor, Dict[str, torch.Tensor]]]:
    def example_input(rows: int, **options: Any) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        """Zeros of a batch of ``rows`` inputs, with ``target`` and ``index``: what a dry run
        (``kdsl check --dry-run``, ``kdsl explain``) needs, without reading any data."""
        return torch.zeros(rows, *shape), {"target": torch.zeros(rows, dtype=torch.int64),
                                           "index": torch.arange(rows)}
    return example_input


# A reader's declared example shape (kdsl.reports.derive_example reads it): one input's shape.
digits.example_input = _zeros_example((1, 8, 8))  # type: ignore[attr-defined]
cifar10.example_input = _zeros_example((3, 32, 32))  # type: ignore[attr-defined]
cifar100.example_input = _zeros_example((3, 32, 32))  # type: ignore[attr-defined]


def split_result(result: Any, ref: str) -> Tuple[Any, Any, Optional[int]]:
    """A data factory's result as (train, validation, number of classes or None)."""
    num_classes = getattr(result, "num_classes", None)
    if isinstance(result, dict):
        train = result.get("train")
        val = result.get("val", result.get("validation", result.get("test")))
    elif isinstance(result, (tuple, list)) and len(result) >= 2:
        train, val = result[0], result[1]
    else:
        raise error("KD702", f"data factory '{ref}' returned {type(result).__name__}; expected "
                    "(train, val) datasets or loaders, a dict with 'train' and 'val', or kdsl.data.Splits")
    if train is None or val is None:
        raise error("KD702", f"data factory '{ref}' did not return both train and validation data")
    return train, val, num_classes
