"""Token data for language-model distillation: a corpus cut into fixed-length windows.

``kdsl.data:text`` (defined here, exposed by :mod:`kdsl.data`) reads text files, tokenizes each
file (bytes by default: vocabulary 256, nothing to download; or a Hugging Face tokenizer that is
installed locally), and cuts each file's tokens into windows of ``seq_len``. One item is a dict of
three int64 tensors of shape ``[seq_len]``:

* ``input_ids``: the tokens (``pad_id`` after the end of a file);
* ``attention_mask``: 1 at a real token, 0 at padding;
* ``labels``: the input ids, ``-100`` at padding, as Hugging Face's causal-LM collators give them.
  Targets are *not* shifted: position ``t``'s logits predict ``labels[t + 1]``, which is what the
  token losses' ``shift=true`` and kdsl's LM metrics do.

Windows never cross a file boundary, so the last window of a file is right-padded (a tail of one
token has no target and is dropped). The train/validation split is by file.

The default corpus (``path=None``) is the Python standard library's own source files, which every
Python has: the ``*.py`` files directly in ``sysconfig.get_paths()["stdlib"]``, in sorted order,
skipping files over ``max_file_bytes``, until ``max_bytes`` are taken; every ``val_every``-th of
them (the 5th, 15th, ...) is validation. The files differ slightly between Python patch
releases, so the datasets carry ``corpus_sha256`` (a hash of every selected file's name and
bytes) to say which corpus a result was measured on.
"""

from __future__ import annotations

import hashlib
import os
import sysconfig
from pathlib import Path
from typing import Any, List, NamedTuple, Optional, Sequence, Tuple, Union

import torch
from torch.utils.data import Dataset

__all__ = ["TokenWindows", "TextSplits", "text", "stdlib_files", "windows", "default_inputs", "IGNORE_INDEX"]

IGNORE_INDEX = -100  # the label of a position without a target (Hugging Face's convention)
BYTE_VOCAB = 256
MODEL_INPUTS = ("input_ids", "attention_mask")
# batch fields that are never model inputs unless the train block's ``inputs`` says so: targets
# the sample index kdsl's loaders add, and the prompt fields of prompt/completion batches
# (kdsl.prompt_batches), which generation reads
NOT_INPUTS = ("labels", "target", "index", "prompt_ids", "prompt_mask")


def default_inputs(names: Sequence[str]) -> Tuple[str, ...]:
    """The fields of a dict batch that models are called with when the train block names none."""
    return tuple(n for n in names if n not in NOT_INPUTS)


class TextSplits(NamedTuple):
    """What :func:`text` returns: :class:`kdsl.data.Splits`' fields (``num_classes`` is the
    vocabulary size, ``input_shape`` ``(seq_len,)``) and the task, ``"lm"``."""

    train: Dataset
    val: Dataset
    num_classes: int
    input_shape: Tuple[int, ...]
    task: str = "lm"


class TokenWindows(Dataset):
    """Fixed-length token windows held in three ``[N, seq_len]`` int64 tensors.

    ``dataset[i]`` is ``{"input_ids", "attention_mask", "labels"}`` (each ``[seq_len]``).
    ``files`` names the files the windows come from; ``corpus_sha256`` hashes their names and
    bytes; ``task`` is ``"lm"`` (the trainer's metrics follow it); ``model_inputs`` are the fields
    a model is called with by default.
    """

    task = "lm"
    model_inputs = MODEL_INPUTS

    def __init__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor,
                 vocab_size: int, files: Sequence[str] = (), corpus_sha256: str = "") -> None:
        if not (input_ids.shape == attention_mask.shape == labels.shape) or input_ids.dim() != 2:
            raise ValueError("input_ids, attention_mask and labels must be [N, seq_len] tensors of one shape")
        self.input_ids, self.attention_mask, self.labels = input_ids, attention_mask, labels
        self.vocab_size = vocab_size
        self.files = list(files)
        self.corpus_sha256 = corpus_sha256

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def __getitem__(self, index: int):
        return {"input_ids": self.input_ids[index], "attention_mask": self.attention_mask[index],
                "labels": self.labels[index]}

    @property
    def tokens(self) -> int:
        """Real (unpadded) tokens."""
        return int(self.attention_mask.sum())

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(windows={len(self)}, seq_len={self.input_ids.shape[1]}, "
                f"tokens={self.tokens}, files={len(self.files)}, vocab_size={self.vocab_size})")


def windows(ids: Sequence[int], seq_len: int, pad_id: int = 0) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One token sequence cut into ``[n, seq_len]`` windows: (input_ids, attention_mask, labels).

    Non-overlapping windows from the start; the last is right-padded with ``pad_id`` (mask 0,
    label -100); a last window of a single token (no target inside the window) is dropped.
    """
    if seq_len < 2:
        raise ValueError(f"seq_len must be at least 2 (a token and its target), got {seq_len}")
    ids = ids.to(torch.int64) if isinstance(ids, torch.Tensor) else torch.as_tensor(list(ids), dtype=torch.int64)
    n = ids.numel()
    count = n // seq_len + (1 if n % seq_len >= 2 else 0)
    input_ids = torch.full((count, seq_len), pad_id, dtype=torch.int64)
    mask = torch.zeros((count, seq_len), dtype=torch.int64)
    flat_ids, flat_mask = input_ids.view(-1), mask.view(-1)
    used = min(n, count * seq_len)
    flat_ids[:used] = ids[:used]
    flat_mask[:used] = 1
    labels = input_ids.masked_fill(mask == 0, IGNORE_INDEX)
    return input_ids, mask, labels


def stdlib_files(max_bytes: int = 600_000, max_file_bytes: int = 40_000) -> List[Path]:
    """The default corpus: the standard library's top-level ``*.py`` files in sorted order, those
    of at most ``max_file_bytes``, until ``max_bytes`` are taken (the file that crosses the cap is
    the last)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    chosen, total = [], 0
    for path in sorted(root.glob("*.py"), key=lambda p: p.name):
        size = path.stat().st_size
        if size > max_file_bytes or size == 0:
            continue
        chosen.append(path)
        total += size
        if total >= max_bytes:
            break
    if not chosen:
        raise FileNotFoundError(f"no Python source files under {root} (the standard library's folder)")
    return chosen


def _files_under(path: Path, pattern: str) -> List[Path]:
    if path.is_file():
        return [path]
    if path.is_dir():
        found = sorted((p for p in path.glob(pattern) if p.is_file()), key=lambda p: p.as_posix())
        if not found:
            raise FileNotFoundError(f"{path}: no files match {pattern!r}")
        return found
    raise FileNotFoundError(f"{path}: no such file or folder")


class _Bytes:
    """The default tokenizer: a file's bytes are its token ids (vocabulary 256)."""

    vocab_size = BYTE_VOCAB
    pad_id = 0

    def encode(self, data: bytes) -> torch.Tensor:
        return torch.frombuffer(bytearray(data), dtype=torch.uint8).to(torch.int64) if data else \
            torch.zeros(0, dtype=torch.int64)


class _HuggingFace:
    """A Hugging Face tokenizer found locally (``local_files_only``: never downloads)."""

    def __init__(self, name: str) -> None:
        try:
            from transformers import AutoTokenizer  # optional: imported only when asked for
        except ImportError:
            raise ImportError(f"tokenizer={name!r} needs the transformers package "
                              "(pip install transformers); without tokenizer= the text is read as bytes") from None
        try:
            self.tok = AutoTokenizer.from_pretrained(name, local_files_only=True)
        except Exception as exc:  # noqa: BLE001 - transformers raises OSError, ValueError, ...
            raise FileNotFoundError(f"tokenizer {name!r} is not available locally "
                                    f"({type(exc).__name__}); kdsl never downloads one") from None
        self.vocab_size = len(self.tok)
        pad = self.tok.pad_token_id if self.tok.pad_token_id is not None else self.tok.eos_token_id
        self.pad_id = 0 if pad is None else int(pad)

    def encode(self, data: bytes) -> List[int]:
        return list(self.tok(data.decode("utf-8", errors="replace"), add_special_tokens=False)["input_ids"])


def _tokenizer(tokenizer: Any):
    if tokenizer is None or tokenizer == "bytes":
        return _Bytes()
    if isinstance(tokenizer, str):
        return _HuggingFace(tokenizer)
    raise TypeError(f"tokenizer must be None, \"bytes\" or the name of a local Hugging Face tokenizer, "
                    f"got {type(tokenizer).__name__}")


def _build(files: Sequence[Path], names: Sequence[str], tok, seq_len: int) -> TokenWindows:
    parts, digest = [], hashlib.sha256()
    for path, name in zip(files, names):
        data = path.read_bytes()
        digest.update(name.encode() + b"\0" + len(data).to_bytes(8, "little") + data)
        parts.append(windows(tok.encode(data), seq_len, tok.pad_id))
    if parts:
        ids, mask, labels = (torch.cat([p[i] for p in parts]) for i in range(3))
    else:
        ids = mask = labels = torch.zeros((0, seq_len), dtype=torch.int64)
    return TokenWindows(ids, mask, labels, tok.vocab_size, names, digest.hexdigest())


def text(path: Union[str, "os.PathLike[str]", None] = None, seq_len: int = 64,
         tokenizer: Optional[str] = None, pattern: str = "**/*.py", val_every: int = 10,
         max_bytes: int = 600_000, max_file_bytes: int = 40_000) -> TextSplits:
    """A corpus as fixed-length token windows for causal language modelling.

    Args:
        path: a text file, or a folder whose files matching ``pattern`` are read (sorted);
            None: the standard library's sources (see the module docstring), capped by
            ``max_bytes`` and ``max_file_bytes``.
        seq_len: tokens per window (at least 2).
        tokenizer: None (bytes, vocabulary 256) or the name or folder of a Hugging Face tokenizer
            installed locally (needs ``transformers``; nothing is downloaded).
        val_every: of the files in order, the ``val_every``-th ones (indices 4, 14, 24, ... for 10)
            are validation; with a single file, its last tenth of windows is.

    Returns:
        :class:`TextSplits` whose datasets are :class:`TokenWindows`; ``num_classes`` is the
        vocabulary size.
    """
    if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 2:
        raise ValueError(f"seq_len must be an integer of at least 2, got {seq_len!r}")
    if isinstance(val_every, bool) or not isinstance(val_every, int) or val_every < 2:
        raise ValueError(f"val_every must be an integer of at least 2, got {val_every!r}")
    tok = _tokenizer(tokenizer)
    if path is None:
        files = stdlib_files(max_bytes, max_file_bytes)
        base = files[0].parent
    else:
        base = Path(path).expanduser()
        files = _files_under(base, pattern)
    names = [p.name if p == base else p.relative_to(base).as_posix() if base.is_dir() else p.name
             for p in files]
    if len(files) == 1:
        return _single_file(files[0], names[0], tok, seq_len)
    is_val = [i % val_every == val_every // 2 - 1 for i in range(len(files))]
    pick = lambda want: [(f, n) for f, n, v in zip(files, names, is_val) if v == want]  # noqa: E731
    train = _build(*zip(*pick(False)), tok, seq_len)
    val_files = pick(True)
    val = _build(*zip(*val_files), tok, seq_len) if val_files else _build([], [], tok, seq_len)
    return TextSplits(train, val, tok.vocab_size, (seq_len,))


def _single_file(path: Path, name: str, tok, seq_len: int) -> TextSplits:
    """One file: its first nine tenths of windows train, the rest validate."""
    whole = _build([path], [name], tok, seq_len)
    n = len(whole)
    if n < 2:
        raise ValueError(f"{path}: too short for two windows of {seq_len} tokens (a training and a "
                         "validation one)")
    cut = n - max(1, n // 10)
    part = lambda s: TokenWindows(whole.input_ids[s], whole.attention_mask[s], whole.labels[s],  # noqa: E731
                                  whole.vocab_size, [name], whole.corpus_sha256)
    return TextSplits(part(slice(0, cut)), part(slice(cut, n)), whole.vocab_size, (seq_len,))
