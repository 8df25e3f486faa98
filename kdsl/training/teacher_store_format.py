"""THE on-disk format of a teacher-output store, and its storage forms.

A store is a directory::

    DIR/.kdsl-teacher-store       marker: the directory is (or is becoming) a store
    DIR/RECORD.bin                one raw little-endian array per stored record and part
    DIR/manifest.json             written last, atomically: its presence means "complete"

Each record's array is ``[epochs, samples, *per_sample_shape]`` in the store's dtype, indexed by
the sample's index in the training set (and the epoch, when augmentation makes epochs differ; an
epoch-independent store has one). A top-k record has three parts: ``RECORD.values.bin`` (the k
largest logits), ``RECORD.indices.bin`` (their classes, int16 or int32) and ``RECORD.rest.bin``
(one float32 logit standing for every other class, see :func:`compress_topk`).
The arrays are opened with ``torch.from_file`` (memory-mapped; nothing is pickled).
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import torch

from kdsl.core.diagnostics import error

FORMAT = "kdsl-teacher-store"
VERSION = 1
MARKER = ".kdsl-teacher-store"
MANIFEST = "manifest.json"
DTYPES = {"float32": torch.float32, "float16": torch.float16}
_INDEX_DTYPES = {"int16": torch.int16, "int32": torch.int32}
_ITEM = {"float32": 4, "float16": 2, "int16": 2, "int32": 4}


# ---------------------------------------------------------------------------------- top-k form
def compress_topk(logits: torch.Tensor, k: int) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``logits [..., C]`` -> (the k largest logits ``[..., k]``, their classes ``[..., k]``, one
    logit ``[...]`` for each of the other C - k classes).

    The reconstruction is the usual sparse-logit one (the naive top-k cache that Anshumann et al.,
    "Sparse Logit Sampling: Accelerating Knowledge Distillation in LLMs", ACL 2025, analyse): the
    top-k logits are kept exactly and the remaining probability mass is spread uniformly over the
    other classes. The "rest" logit is the log of the mean of their exponentials,
    ``logsumexp(z_rest) - log(C - k)``, so that at temperature 1 the reconstructed softmax equals
    the teacher's on the top k classes and holds the same total mass on the rest. (At temperature
    tau != 1 the tail mass differs slightly; measured by :func:`topk_error`.)
    """
    classes = logits.shape[-1]
    if not 0 < k < classes:
        raise ValueError(f"k must be in 1..{classes - 1}, got {k}")
    z = logits.detach().to(torch.float32)
    values, indices = z.topk(k, dim=-1)
    rest = z.scatter(-1, indices, float("-inf")).logsumexp(-1) - math.log(classes - k)
    return values, indices, rest


def expand_topk(values: torch.Tensor, indices: torch.Tensor, rest: torch.Tensor, classes: int,
                dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The full ``[..., classes]`` logits of :func:`compress_topk`'s parts."""
    full = rest.to(dtype).unsqueeze(-1).expand(*rest.shape, classes).clone()
    return full.scatter_(-1, indices.to(torch.int64), values.to(dtype))


def topk_error(logits: torch.Tensor, k: int, tau: float = 1.0) -> Dict[str, float]:
    """How far the top-k reconstruction is from the full logits, at temperature ``tau``:
    ``kl`` the mean KL(p_full || p_topk) per row (nats), ``max_prob`` the largest absolute
    probability difference. (For an LM, pass ``[tokens, vocabulary]`` logits.)"""
    z = logits.detach().to(torch.float64)
    approx = expand_topk(*compress_topk(z, k), z.shape[-1], dtype=torch.float64)
    p = (z / tau).log_softmax(-1)
    q = (approx / tau).log_softmax(-1)
    kl = (p.exp() * (p - q)).sum(-1)
    return {"kl": float(kl.mean()), "max_prob": float((p.exp() - q.exp()).abs().max())}


# ---------------------------------------------------------------------------------- layout
@dataclass
class Part:
    """One array of a record: file name, per-sample shape, dtype name."""

    file: str
    shape: Tuple[int, ...]
    dtype: str

    def sample_bytes(self) -> int:
        return math.prod(self.shape) * _ITEM[self.dtype]

    def describe(self) -> Dict[str, Any]:
        return {"file": self.file, "shape": list(self.shape), "dtype": self.dtype}


@dataclass
class RecordLayout:
    """How one record is stored: ``form`` "full" or "topk", its parts, and the shape and dtype the
    record had (what the losses get back)."""

    name: str
    teacher: str
    form: str
    shape: Tuple[int, ...]
    dtype: str  # the recorded tensor's dtype (torch name without "torch.")
    parts: Dict[str, Part]
    k: Optional[int] = None

    def describe(self) -> Dict[str, Any]:
        return {"teacher": self.teacher, "form": self.form, "shape": list(self.shape), "dtype": self.dtype,
                "k": self.k, "parts": {n: p.describe() for n, p in self.parts.items()}}


def safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def record_layout(name: str, teacher: str, shape: Tuple[int, ...], recorded: str, store_dtype: str,
                  topk: Optional[int]) -> RecordLayout:
    """The layout of a record of per-sample ``shape``: top-k when ``topk`` is given."""
    base = safe_name(name)
    if topk is None:
        return RecordLayout(name, teacher, "full", shape, recorded, {"values": Part(f"{base}.bin", shape, store_dtype)})
    lead, classes = shape[:-1], shape[-1]
    index = "int16" if classes <= 2 ** 15 else "int32"
    return RecordLayout(name, teacher, "topk", shape, recorded, {
        "values": Part(f"{base}.values.bin", lead + (topk,), store_dtype),
        "indices": Part(f"{base}.indices.bin", lead + (topk,), index),
        "rest": Part(f"{base}.rest.bin", lead, "float32")}, k=topk)


def layout_from(data: Dict[str, Any], name: str) -> RecordLayout:
    parts = {p: Part(str(d["file"]), tuple(int(x) for x in d["shape"]), str(d["dtype"]))
             for p, d in data["parts"].items()}
    for p in parts.values():
        if p.dtype not in _ITEM or os.path.basename(p.file) != p.file:
            raise ValueError(f"record '{name}': bad part {p.file!r} ({p.dtype})")
    return RecordLayout(name, str(data["teacher"]), str(data["form"]), tuple(int(x) for x in data["shape"]),
                        str(data["dtype"]), parts, data.get("k"))


def store_bytes(layouts: List[RecordLayout], epochs: int, samples: int) -> int:
    return sum(p.sample_bytes() for lay in layouts for p in lay.parts.values()) * epochs * samples


# ---------------------------------------------------------------------------------- sizes
_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1024, "kib": 1024, "m": 1024 ** 2, "mb": 1024 ** 2, "mib": 1024 ** 2,
          "g": 1024 ** 3, "gb": 1024 ** 3, "gib": 1024 ** 3, "t": 1024 ** 4, "tb": 1024 ** 4, "tib": 1024 ** 4}


def parse_size(text: str) -> int:
    """``"500M"``, ``"1.5G"``, ``"2GiB"``, ``"123456"`` -> bytes (binary units). KD701 otherwise."""
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*", text or "")
    if not m or m.group(2).lower() not in _UNITS:
        raise error("KD701", f"--max-size takes a size such as 500M, 2G or 123456 (bytes), got {text!r}")
    value = float(m.group(1)) * _UNITS[m.group(2).lower()]
    if not math.isfinite(value) or value > 2 ** 62:
        raise error("KD701", f"--max-size {text} is too large")
    return int(value)


def format_size(n: int) -> str:
    for unit, size in (("GiB", 1024 ** 3), ("MiB", 1024 ** 2), ("KiB", 1024)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


# ---------------------------------------------------------------------------------- files
def write_manifest(directory: str, manifest: Dict[str, Any]) -> None:
    """The manifest, atomically (temporary file, fsync, rename): the store's commit point."""
    path = os.path.join(directory, MANIFEST)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(manifest, fh, indent=1, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def read_manifest(directory: str) -> Dict[str, Any]:
    """The manifest of the store in ``directory`` (KD710 when there is none or it is damaged)."""
    path = os.path.join(directory, MANIFEST)
    hint = "rebuild it with `kdsl teacher-cache SPEC --out DIR`"
    if not os.path.isdir(directory):
        raise error("KD710", f"no teacher store at {directory}: no such directory", hint=hint)
    if not os.path.isfile(path):
        partial = os.path.exists(os.path.join(directory, MARKER))
        raise error("KD710", f"{directory} holds no complete teacher store: "
                    + ("its writing did not finish (no manifest.json)" if partial else "there is no manifest.json"),
                    hint=hint)
    try:
        with open(path, "rb") as fh:
            manifest = json.loads(fh.read(16 * 1024 * 1024).decode("utf-8"))
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise ValueError("not a kdsl teacher-store manifest")
        if manifest.get("version") != VERSION:
            raise ValueError(f"format version {manifest.get('version')!r}; this kdsl reads {VERSION}")
        for key in ("epochs", "samples", "epoch_dependent", "records", "fingerprint", "dtype"):
            if key not in manifest:
                raise ValueError(f"no '{key}' entry")
        manifest["layouts"] = [layout_from(d, n) for n, d in manifest["records"].items()]
        if not (isinstance(manifest["epochs"], int) and manifest["epochs"] >= 1
                and isinstance(manifest["samples"], int) and manifest["samples"] >= 1):
            raise ValueError("bad epochs or samples")
    except (ValueError, TypeError, KeyError, AttributeError, UnicodeDecodeError) as exc:
        raise error("KD710", f"{path} is damaged: {exc}", hint=hint) from None
    return manifest


def create_part(directory: str, part: Part, epochs: int, samples: int) -> torch.Tensor:
    """A new part file of the right size, mapped for writing: ``[epochs, samples, *shape]``."""
    path = os.path.join(directory, part.file)
    numel = epochs * samples * math.prod(part.shape)
    with open(path, "wb") as fh:
        fh.truncate(numel * _ITEM[part.dtype])
    if numel == 0:
        return torch.empty((epochs, samples) + part.shape, dtype=_dtype(part.dtype))
    return torch.from_file(path, shared=True, size=numel, dtype=_dtype(part.dtype)).view(
        (epochs, samples) + part.shape)


def open_part(directory: str, part: Part, epochs: int, samples: int) -> torch.Tensor:
    """An existing part file, memory-mapped read-only (copy-on-write); KD710 when its size is not
    what the manifest says (a truncated or foreign file)."""
    path = os.path.join(directory, part.file)
    numel = epochs * samples * math.prod(part.shape)
    expected = numel * _ITEM[part.dtype]
    try:
        size = os.path.getsize(path)
    except OSError:
        raise error("KD710", f"the teacher store {directory} lacks {part.file}",
                    hint="rebuild it with `kdsl teacher-cache`") from None
    if size != expected:
        raise error("KD710", f"{path} holds {size} bytes; the manifest says {expected} "
                    f"({epochs} epoch(s) x {samples} samples x {list(part.shape)} {part.dtype}): "
                    "the file is truncated or not this store's", hint="rebuild it with `kdsl teacher-cache`")
    if numel == 0:
        return torch.empty((epochs, samples) + part.shape, dtype=_dtype(part.dtype))
    return torch.from_file(path, shared=False, size=numel, dtype=_dtype(part.dtype)).view(
        (epochs, samples) + part.shape)


def _dtype(name: str) -> torch.dtype:
    return DTYPES.get(name) or _INDEX_DTYPES[name]
