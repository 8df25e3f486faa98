"""THE on-disk format of a teacher-output store, and its storage forms.

A store is a directory::

    DIR/.kdsl-teacher-store       marker: kdsl wrote this directory (nothing else is a store)
    DIR/RECORD.bin                one raw little-endian array per stored record and part
    DIR/inputs.digest.bin         a digest of each sample's model inputs, per stored epoch
    DIR/manifest.json             written last, atomically: its presence means "complete"

A store is built in a new sibling directory and renamed into place when complete (a rebuild
never writes into the files a running reader has mapped). The manifest (schema:
:mod:`kdsl.training.teacher_store_manifest`) holds the sha256 of every 1 MiB chunk of every file;
a reader verifies each chunk the first time it reads from it.

Each record's array is ``[epochs, samples, *per_sample_shape]`` in the store's dtype, indexed by
the sample's index in the training set (and the epoch, when augmentation makes epochs differ; an
epoch-independent store has one). A top-k record has three parts: ``RECORD.values.bin`` (the k
largest logits), ``RECORD.indices.bin`` (their classes, int16 or int32) and ``RECORD.tail.bin``
(float32: the log of the probability mass of every other class, see :func:`compress_topk`).
Format 2 stores held ``RECORD.rest.bin`` instead (one logit standing for each other class, the
same information: :func:`uniform_rest` turns a tail into it); both are read.
The arrays are memory-mapped (nothing is pickled).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import mmap
import os
import re
import stat
import weakref
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import torch

from kdsl.core.diagnostics import KdslError, error
from kdsl.training.teacher_store_manifest import (DIGEST_BYTES, FORMAT, VERSION, PartEntry, RecordEntry,
                                                  parse_manifest)

__all__ = ["FORMAT", "VERSION"]  # re-exported: the manifest schema owns them
MARKER = ".kdsl-teacher-store"
MARKER_PREFIX = "a kdsl teacher-output store"
MARKER_TEXT = MARKER_PREFIX + " (written by `kdsl teacher-cache`); complete once manifest.json exists\n"
MANIFEST = "manifest.json"
MAX_MANIFEST_BYTES = 16 * 1024 * 1024
INPUTS = "inputs.digest.bin"  # one digest of the model inputs per sample and stored epoch
CHUNK_BYTES = 1 << 20  # the unit of checksumming: a read verifies the 1 MiB chunks it touches
DTYPES = {"float32": torch.float32, "float16": torch.float16}
_INDEX_DTYPES = {"int16": torch.int16, "int32": torch.int32}
_ITEM = {"float32": 4, "float16": 2, "int16": 2, "int32": 4, "uint8": 1}


# ---------------------------------------------------------------------------------- top-k form
def compress_topk(logits: torch.Tensor, k: int) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``logits [..., C]`` -> (the k largest logits ``[..., k]``, their classes ``[..., k]``, the
    log of the probability the teacher gives every other class together ``[...]``).

    The tail's mass is what both reconstructions need: the top-k logits with the tail as one more
    category (``token_topk_kl(..., tail="bucket")``, exact at temperature 1), and the naive
    sparse-logit cache that spreads the tail uniformly over the other C - k classes
    (:func:`uniform_rest`, :func:`expand_topk`; the form Anshumann et al., "Sparse Logit Sampling:
    Accelerating Knowledge Distillation in LLMs", ACL 2025, analyse). The tail is
    ``logsumexp(z_rest) - logsumexp(z)``, a log-probability, finite however small the mass.
    """
    classes = logits.shape[-1]
    if not 0 < k < classes:
        raise ValueError(f"k must be in 1..{classes - 1}, got {k}")
    z = logits.detach().to(torch.float32)
    values, indices = z.topk(k, dim=-1)
    tail = z.scatter(-1, indices, float("-inf")).logsumexp(-1) - z.logsumexp(-1)
    return values, indices, tail


def uniform_rest(values: torch.Tensor, tail: torch.Tensor, classes: int) -> torch.Tensor:
    """The one logit that, given to each of the ``classes - k`` classes outside the top k, holds
    the tail's mass at temperature 1 (format 2's ``rest``): ``logsumexp(z_rest) - log(C - k)``,
    with ``logsumexp(z_rest) = logsumexp(values) + tail - log(1 - exp(tail))``."""
    v, t = values.to(torch.float64), tail.to(torch.float64)
    # log(1 - exp(t)) without cancellation on either side of -log 2 (Maechler's log1mexp)
    top = torch.where(t > -math.log(2), torch.log(-torch.expm1(t)), torch.log1p(-torch.exp(t)))
    return v.logsumexp(-1) + t - top - math.log(classes - values.shape[-1])


def expand_topk(values: torch.Tensor, indices: torch.Tensor, rest: torch.Tensor, classes: int,
                dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The full ``[..., classes]`` logits of :func:`compress_topk`'s parts."""
    full = rest.to(dtype).unsqueeze(-1).expand(*rest.shape, classes).clone()
    return full.scatter_(-1, indices.to(torch.int64), values.to(dtype))


def topk_error(logits: torch.Tensor, k: int, tau: float = 1.0,
               student: Optional[torch.Tensor] = None) -> Dict[str, float]:
    """How far the top-k store is from the full logits, at temperature ``tau`` (for an LM, pass
    ``[tokens, vocabulary]`` logits). ``kl``: the mean KL(p_full || p_uniform) per row (nats) of
    the uniform spread's reconstruction, ``max_prob`` its largest absolute probability difference.

    With ``student`` logits (same shape), the error of the distillation loss itself: ``full``,
    the mean token KL(p_T || p_S) on the full teacher logits; ``uniform`` and ``bucket``, the mean
    absolute difference per row from it of token_kl on the uniform reconstruction and of
    token_topk_kl(tail="bucket") on the stored parts; ``uniform_grad`` and ``bucket_grad``, the
    relative L2 error of their gradients with respect to the student's logits."""
    from kdsl.components.lm_losses import TokenKL, TokenTopKKL

    z = logits.detach().to(torch.float64)
    values, indices, tail = compress_topk(z, k)
    approx = expand_topk(values, indices, uniform_rest(values, tail, z.shape[-1]), z.shape[-1], dtype=torch.float64)
    p = (z / tau).log_softmax(-1)
    q = (approx / tau).log_softmax(-1)
    kl = (p.exp() * (p - q)).sum(-1)
    out = {"kl": float(kl.mean()), "max_prob": float((p.exp() - q.exp()).abs().max())}
    if student is None:
        return out
    s = student.detach().to(torch.float64).reshape(-1, z.shape[-1]).requires_grad_(True)
    rows = {"full": (TokenKL(tau=tau), z), "uniform": (TokenKL(tau=tau), approx),
            "bucket": (TokenTopKKL(k=k, tau=tau, tail="bucket"), approx)}
    per_row, grads = {}, {}
    for name, (loss, teacher) in rows.items():
        per_row[name] = loss.per_token(s, teacher.reshape(s.shape))
        grads[name] = torch.autograd.grad(per_row[name].sum(), s)[0]
    out["full"] = float(per_row["full"].detach().mean())
    for name in ("uniform", "bucket"):
        out[name] = float((per_row[name] - per_row["full"]).detach().abs().mean())
        out[f"{name}_grad"] = float((grads[name] - grads["full"]).norm() / grads["full"].norm())
    return out


# ---------------------------------------------------------------------------------- layout
@dataclass
class Part:
    """One array of a record: file name, per-sample shape, dtype name, and (once written) the
    sha256 of each chunk of ``chunk_rows`` rows (a row: one sample of one epoch)."""

    file: str
    shape: Tuple[int, ...]
    dtype: str
    chunk_rows: int = 0
    sha256: Tuple[str, ...] = ()

    def sample_bytes(self) -> int:
        return math.prod(self.shape) * _ITEM[self.dtype]

    def describe(self) -> Dict[str, Any]:
        return {"file": self.file, "shape": list(self.shape), "dtype": self.dtype, "chunk_rows": self.chunk_rows,
                "sha256": list(self.sha256)}


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
        "tail": Part(f"{base}.tail.bin", lead, "float32")}, k=topk)


def layout_from(name: str, entry: RecordEntry) -> RecordLayout:
    """A validated manifest record as its layout."""
    return RecordLayout(name, entry.teacher, entry.form, tuple(entry.shape), entry.dtype,
                        {n: part_from(p) for n, p in entry.parts.items()}, entry.k)


def part_from(entry: PartEntry) -> Part:
    return Part(entry.file, tuple(entry.shape), entry.dtype, entry.chunk_rows, tuple(entry.sha256))


def inputs_part() -> Part:
    """The part that holds each sample's input digest (see :func:`input_digests`)."""
    return Part(INPUTS, (DIGEST_BYTES,), "uint8")


def store_bytes(layouts: List[RecordLayout], epochs: int, samples: int) -> int:
    """The bytes of a store's arrays: its records' and its inputs' digests."""
    return (sum(p.sample_bytes() for lay in layouts for p in lay.parts.values()) + digest_bytes(1, 1)) * epochs * samples


def digest_bytes(epochs: int, samples: int) -> int:
    return inputs_part().sample_bytes() * epochs * samples


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


# ---------------------------------------------------------------------------------- the directory
def is_store(directory: str) -> bool:
    """Whether ``directory`` is a store kdsl wrote: it holds kdsl's marker file (a directory that
    merely holds a ``manifest.json`` is someone else's)."""
    try:
        fd = _open_regular(directory, MARKER, None)
    except (OSError, KdslError):
        return False
    with os.fdopen(fd, "rb") as fh:
        return fh.read(len(MARKER_TEXT)).startswith(MARKER_PREFIX.encode())


def store_files(directory: str) -> Optional[List[str]]:
    """The names of the files the store in ``directory`` wrote, from its manifest (read leniently:
    a store of an older format version is listed too); None when the manifest is missing or
    unreadable, so that which files are the store's own is unknown."""
    try:
        with os.fdopen(_open_regular(directory, MANIFEST, None), "rb") as fh:
            manifest = json.loads(fh.read(MAX_MANIFEST_BYTES))
        parts = [part["file"] for rec in manifest["records"].values() for part in rec["parts"].values()]
        parts += [manifest["inputs"]["file"]] if "inputs" in manifest else []
    except (OSError, KdslError, ValueError, TypeError, KeyError, AttributeError, RecursionError):
        return None
    if not all(isinstance(f, str) and f == os.path.basename(f) and f.endswith(".bin") for f in parts):
        return None
    return [MARKER, MANIFEST, *parts]


def remove_store(directory: str, files: List[str]) -> None:
    """Delete ``files`` (what a store wrote) and then ``directory`` if that left it empty."""
    for name in files:
        try:
            os.remove(os.path.join(directory, name))
        except FileNotFoundError:
            pass
    try:
        os.rmdir(directory)
    except OSError:
        pass


def write_marker(directory: str) -> None:
    with open(os.path.join(directory, MARKER), "w", encoding="utf-8") as fh:
        fh.write(MARKER_TEXT)


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


def read_manifest(directory: str, dir_fd: Optional[int] = None) -> Dict[str, Any]:
    """The validated manifest of the store in ``directory`` (read through ``dir_fd`` when given, so
    that the files a reader opens next come from the same directory even if a rebuild swaps
    another in meanwhile), with its ``layouts`` and ``inputs_part``. KD710 when there is none or
    it is damaged."""
    path = os.path.join(directory, MANIFEST)
    hint = "rebuild it with `kdsl teacher-cache SPEC --out DIR`"
    if dir_fd is None and not os.path.isdir(directory):
        raise error("KD710", f"no teacher store at {directory}: no such directory", hint=hint)
    if not _exists(MANIFEST, directory, dir_fd):
        partial = _exists(MARKER, directory, dir_fd)
        raise error("KD710", f"{directory} holds no complete teacher store: "
                    + ("its writing did not finish (no manifest.json)" if partial else "there is no manifest.json"),
                    hint=hint)
    if not _exists(MARKER, directory, dir_fd):
        raise error("KD710", f"{directory} is not a teacher store kdsl wrote (it lacks the {MARKER} marker)",
                    hint=hint)
    fd = _open_regular(directory, MANIFEST, dir_fd)
    with os.fdopen(fd, "rb") as fh:
        raw = fh.read(MAX_MANIFEST_BYTES + 1)
    if len(raw) > MAX_MANIFEST_BYTES:
        raise error("KD710", f"{path} is damaged: larger than {MAX_MANIFEST_BYTES // 2 ** 20} MiB", hint=hint)
    model = parse_manifest(path, raw)
    manifest = model.model_dump(mode="json")
    manifest["layouts"] = [layout_from(n, rec) for n, rec in model.records.items()]
    manifest["inputs_part"] = part_from(model.inputs)
    return manifest


def _exists(name: str, directory: str, dir_fd: Optional[int]) -> bool:
    try:
        os.stat(name if dir_fd is not None else os.path.join(directory, name), dir_fd=dir_fd)
        return True
    except OSError:
        return False


def _open_regular(directory: str, name: str, dir_fd: Optional[int]) -> int:
    """A read-only descriptor of the regular file ``name`` (never blocking on a FIFO); KD710 for
    anything else (a device, a FIFO, a directory, or a symbolic link to one)."""
    path = os.path.join(directory, name)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(name if dir_fd is not None else path, flags, dir_fd=dir_fd)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise error("KD710", f"{path} is not a regular file (a device, FIFO or directory, or a link to one)",
                    hint="rebuild the store with `kdsl teacher-cache`")
    return fd


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


def seal_part(directory: str, part: Part) -> Part:
    """``part`` with the sha256 of each chunk of its written file (flushed to disk first)."""
    rows_per_chunk = max(1, CHUNK_BYTES // max(1, part.sample_bytes()))
    chunk = rows_per_chunk * part.sample_bytes()
    sums = []
    with open(os.path.join(directory, part.file), "rb") as fh:
        os.fsync(fh.fileno())
        while True:
            data = fh.read(chunk)
            if not data:
                break
            sums.append(hashlib.sha256(data).hexdigest())
    return dataclasses.replace(part, chunk_rows=rows_per_chunk, sha256=tuple(sums))


class MappedPart:
    """An existing part file, memory-mapped read-only (copy-on-write) through a descriptor opened
    in the store's directory. Each chunk is checked against its sha256 the first time a read
    touches it (so a run hashes each byte it reads once, not the whole store each epoch), and every
    read checks that the file was not changed in place since it was opened."""

    def __init__(self, directory: str, dir_fd: Optional[int], part: Part, epochs: int, samples: int) -> None:
        self.path, self.part, self.samples = os.path.join(directory, part.file), part, samples
        numel = epochs * samples * math.prod(part.shape)
        expected = numel * _ITEM[part.dtype]
        try:
            self.fd = _open_regular(directory, part.file, dir_fd)
        except FileNotFoundError:
            raise error("KD710", f"the teacher store {directory} lacks {part.file}",
                        hint="rebuild it with `kdsl teacher-cache`") from None
        st = os.fstat(self.fd)
        if st.st_size != expected:
            os.close(self.fd)
            raise error("KD710", f"{self.path} holds {st.st_size} bytes; the manifest says {expected} "
                        f"({epochs} epoch(s) x {samples} samples x {list(part.shape)} {part.dtype}): "
                        "the file is truncated or not this store's", hint="rebuild it with `kdsl teacher-cache`")
        weakref.finalize(self, os.close, self.fd)
        self.stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        self.map = mmap.mmap(self.fd, expected, access=mmap.ACCESS_COPY) if expected else None
        flat = (torch.frombuffer(self.map, dtype=_dtype(part.dtype), count=numel) if expected
                else torch.empty(0, dtype=_dtype(part.dtype)))
        self.rows_view = flat.view((epochs * samples,) + part.shape)
        self.verified = torch.zeros(len(part.sha256), dtype=torch.bool)

    def rows(self, epoch: int, index: torch.Tensor) -> torch.Tensor:
        """The values of samples ``index`` at ``epoch``, verified."""
        rows = index + epoch * self.samples
        chunks = torch.unique(rows // self.part.chunk_rows)
        for c in chunks[~self.verified[chunks]].tolist():
            self._verify(c, epoch)
        self._check_unchanged()
        return self.rows_view.index_select(0, rows)

    def _verify(self, chunk: int, epoch: int) -> None:
        size = self.part.chunk_rows * self.part.sample_bytes()
        with memoryview(self.map) as view:
            digest = hashlib.sha256(view[chunk * size:(chunk + 1) * size]).hexdigest()
        if digest != self.part.sha256[chunk]:
            first = chunk * self.part.chunk_rows
            last = min(first + self.part.chunk_rows, len(self.rows_view)) - 1
            raise error("KD710", f"{self.path} was altered after it was written: chunk {chunk + 1} of "
                        f"{len(self.part.sha256)} (rows {first}..{last}, epoch {epoch + 1}) does not match "
                        "the manifest's sha256", hint="rebuild the store with `kdsl teacher-cache --overwrite`")
        self.verified[chunk] = True

    def _check_unchanged(self) -> None:
        st = os.fstat(self.fd)
        if (st.st_ino, st.st_size, st.st_mtime_ns) != self.stamp:
            raise error("KD710", f"{self.path} was changed while this run read it (written in place)",
                        hint="a store is rebuilt into a new directory by `kdsl teacher-cache --overwrite`; "
                        "do not edit its files")


def input_digests(call_args: Tuple[Any, ...], call_kwargs: Dict[str, Any]) -> torch.Tensor:
    """``[batch, DIGEST_BYTES]`` uint8: the blake2b of each sample's model inputs (every tensor the
    models are called with: its dtype, shape and bytes), what a teacher's stored output was
    computed from. A run's batch must match the digests of its samples to be served."""
    leaves = [(f"{i}", a) for i, a in enumerate(call_args)] + sorted(call_kwargs.items())
    tensors = [(k, v.detach().to("cpu").contiguous()) for k, v in leaves if isinstance(v, torch.Tensor)]
    rows = tensors[0][1].shape[0] if tensors else 0
    flat = [(k, t, t.reshape(rows, -1).view(torch.uint8).numpy() if t.numel() else None) for k, t in tensors]
    heads = [f"{key}|{t.dtype}|{list(t.shape[1:])}|".encode() for key, t, _ in flat]
    digests = bytearray()
    for r in range(rows):
        h = hashlib.blake2b(digest_size=DIGEST_BYTES)
        for head, (_, _, data) in zip(heads, flat):
            h.update(head)
            if data is not None:
                h.update(data[r])
        digests += h.digest()
    return torch.frombuffer(digests, dtype=torch.uint8).view(rows, DIGEST_BYTES) if rows else \
        torch.empty(0, DIGEST_BYTES, dtype=torch.uint8)


def _dtype(name: str) -> torch.dtype:
    return DTYPES.get(name) or _INDEX_DTYPES.get(name) or torch.uint8
