"""The schema of a teacher store's ``manifest.json``, and its reading: a manifest is accepted only
when every entry has the type, range and consistency the schema declares (pydantic, strict, no
extra keys); anything else is refused (KD710) with its line and column in the file.

A hand-edited manifest must never reach the reader as something it half understands: a record's
``dtype`` of int64 would cast the logits, a missing key would end in an internal error.
"""

from __future__ import annotations

import json
import math
from json.decoder import scanstring
from typing import Annotated, Any, Dict, List, Literal, Optional, Tuple

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from kdsl.core.diagnostics import error
from kdsl.core.span import SourceText

FORMAT = "kdsl-teacher-store"
VERSION = 3  # 2: per-chunk checksums and the inputs' digests; 3: top-k records keep the tail's log-mass
READABLE = (2, 3)  # format 2's top-k "rest" logit holds the same information as format 3's "tail"
MAX_DEPTH = 32  # the schema nests 6 deep; the spec's canonical JSON a little more
HINT = "rebuild it with `kdsl teacher-cache SPEC --out DIR --overwrite`"

Hex64 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
FileName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]*\.bin$", max_length=200)]
Dim = Annotated[int, Field(ge=1, le=2 ** 31)]
Shape = Annotated[List[Dim], Field(max_length=8)]
RECORD_DTYPES = ("float16", "bfloat16", "float32", "float64")
DIGEST_BYTES = 16  # blake2b digest of one sample's model inputs


class _Strict(BaseModel):
    """A manifest entry: exact types, no keys beyond the declared ones, immutable once read."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class PartEntry(_Strict):
    """One array file: per-sample shape and dtype, and the sha256 of each chunk of
    ``chunk_rows`` rows (a row is one sample of one epoch)."""

    file: FileName
    shape: Shape
    dtype: Literal["float32", "float16", "int16", "int32", "uint8"]
    chunk_rows: Annotated[int, Field(ge=1)]
    sha256: List[Hex64]


class RecordEntry(_Strict):
    teacher: str
    form: Literal["full", "topk"]
    shape: Shape
    dtype: Literal[RECORD_DTYPES]  # type: ignore[valid-type]
    k: Optional[Annotated[int, Field(ge=1)]] = None
    parts: Dict[str, PartEntry]

    @model_validator(mode="after")
    def _parts_fit_the_form(self) -> "RecordEntry":
        shape, parts = list(self.shape), self.parts
        if self.form == "full":
            if self.k is not None:
                raise ValueError(f"a full record has no k (got {self.k}); top-k records have form \"topk\"")
            expected = {"values": shape}
        else:
            if self.k is None or not shape or self.k >= shape[-1]:
                raise ValueError(f"a top-k record needs k below its {shape[-1:] or 'missing'} classes, got {self.k}")
            expected = {"values": shape[:-1] + [self.k], "indices": shape[:-1] + [self.k], self.tail_part: shape[:-1]}
        if set(parts) != set(expected):
            raise ValueError(f"a {self.form} record has the parts {sorted(expected)}, not {sorted(parts)}")
        for name, want in expected.items():
            if list(parts[name].shape) != want:
                raise ValueError(f"part '{name}' has shape {list(parts[name].shape)}; the record needs {want}")
        if self.form == "topk" and (parts["indices"].dtype not in ("int16", "int32")
                                    or parts[self.tail_part].dtype != "float32"):
            raise ValueError(f"a top-k record's indices are int16 or int32 and its {self.tail_part} is float32")
        return self

    @property
    def tail_part(self) -> str:
        """The top-k part that stands for the other classes: "tail" (format 3), "rest" (format 2)."""
        return "rest" if "rest" in self.parts else "tail"


class TeacherPrint(_Strict):
    model: Any
    weights: Hex64


class RecordPrint(_Strict):
    text: str
    canonical: Any


class DataPrint(_Strict):
    ref: str
    options: Dict[str, Any]
    train_size: Annotated[int, Field(ge=1)]
    content: Hex64


class AugmentationPrint(_Strict):
    per_epoch: bool
    sample_seeding: str


class Fingerprint(_Strict):
    teachers: Dict[str, TeacherPrint]
    records: Dict[str, RecordPrint]
    data: DataPrint
    augmentation: AugmentationPrint
    seed: Optional[int]
    precision: Literal["float32", "bf16", "fp16"]


class Manifest(_Strict):
    """A complete store: what :func:`kdsl.training.teacher_store_build.build_store` writes last."""

    format: Literal["kdsl-teacher-store"]
    version: Literal[READABLE]  # type: ignore[valid-type]
    epochs: Annotated[int, Field(ge=1, le=100_000)]
    samples: Annotated[int, Field(ge=1)]
    epoch_dependent: bool
    dtype: Literal["float32", "float16"]
    topk: Optional[Annotated[int, Field(ge=1)]]
    records: Annotated[Dict[str, RecordEntry], Field(min_length=1)]
    inputs: PartEntry
    fingerprint: Fingerprint
    bytes: Annotated[int, Field(ge=0)]
    batch_size: Annotated[int, Field(ge=1)]
    device: str
    spec: str
    command: str
    seconds: Annotated[float, Field(ge=0)]

    @model_validator(mode="after")
    def _consistent(self) -> "Manifest":
        if not self.epoch_dependent and self.epochs != 1:
            raise ValueError("a store of data without randomness holds one epoch")
        if self.fingerprint.data.train_size != self.samples:
            raise ValueError(f"fingerprint.data.train_size {self.fingerprint.data.train_size} is not samples {self.samples}")
        if set(self.records) != set(self.fingerprint.records):
            raise ValueError("the records and the fingerprint's records differ")
        if self.inputs.dtype != "uint8" or list(self.inputs.shape) != [DIGEST_BYTES]:
            raise ValueError(f"inputs holds one {DIGEST_BYTES}-byte digest per sample")
        parts = [self.inputs]
        for name, rec in self.records.items():
            want = "rest" if self.version == 2 else "tail"
            if rec.form == "topk" and rec.tail_part != want:
                raise ValueError(f"record '{name}': a format {self.version} top-k record keeps the other classes "
                                 f"in part '{want}', not '{rec.tail_part}'")
            if rec.teacher not in self.fingerprint.teachers:
                raise ValueError(f"record '{name}' is of teacher '{rec.teacher}', which the fingerprint lacks")
            if rec.parts["values"].dtype != self.dtype:
                raise ValueError(f"record '{name}' stores {rec.parts['values'].dtype} values in a {self.dtype} store")
            parts += rec.parts.values()
        files = [p.file for p in parts]
        if len(set(files)) != len(files):
            raise ValueError("two parts name the same file")
        for part in parts:
            chunks = math.ceil(self.epochs * self.samples / part.chunk_rows)
            if len(part.sha256) != chunks:
                raise ValueError(f"{part.file} has {len(part.sha256)} checksums for its {chunks} chunks")
        return self


# ---------------------------------------------------------------------------------- reading
def parse_manifest(path: str, raw: bytes) -> Manifest:
    """``raw`` (the bytes of ``path``) as a :class:`Manifest`; KD710 located in the file otherwise."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error("KD710", f"{path} is damaged: not UTF-8 text (byte {exc.start})", hint=HINT) from None
    source = SourceText(path, text)

    def refuse(message: str, offset: Optional[int]) -> Exception:
        span = source.span(offset, min(offset + 1, len(text))) if offset is not None else None
        return error("KD710", f"{path} is damaged: {message}", span, hint=HINT, sources={path: text})

    deep = _too_deep(text)
    if deep is not None:
        raise refuse(f"nested deeper than {MAX_DEPTH} levels", deep)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise refuse(exc.msg, exc.pos) from None
    if isinstance(data, dict) and data.get("format") == FORMAT and data.get("version") not in READABLE:
        raise error("KD710", f"{path} is a teacher store of format version {data.get('version')!r}; this kdsl "
                    f"reads versions {' and '.join(map(str, READABLE))}", hint=HINT)
    try:
        return Manifest.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "the top level"
        more = len(exc.errors()) - 1
        offsets = value_offsets(text)
        raise refuse(f"{where}: {first['msg']}" + (f" (and {more} more problem(s))" if more else ""),
                     _nearest(offsets, tuple(first["loc"]))) from None


def _too_deep(text: str) -> Optional[int]:
    """The offset of the first bracket nested deeper than MAX_DEPTH (None: none is), outside strings."""
    depth, in_string, escaped = 0, False, False
    for i, ch in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                return i
        elif ch in "]}":
            depth -= 1
    return None


def value_offsets(text: str) -> Dict[Tuple[Any, ...], int]:
    """The offset of every value of valid JSON ``text`` by its path (keys and list indices)."""
    out: Dict[Tuple[Any, ...], int] = {}
    _locate(text, 0, (), out)
    return out


def _skip(text: str, i: int) -> int:
    while i < len(text) and text[i] in " \t\r\n":
        i += 1
    return i


def _locate(text: str, i: int, path: Tuple[Any, ...], out: Dict[Tuple[Any, ...], int]) -> int:
    i = _skip(text, i)
    out[path] = i
    opener = text[i]
    if opener == '"':
        return scanstring(text, i + 1)[1]
    if opener not in "[{":
        while i < len(text) and text[i] not in ",]} \t\r\n":
            i += 1
        return i
    closer, i, index = ("}" if opener == "{" else "]"), _skip(text, i + 1), 0
    while text[i] != closer:
        if opener == "{":
            key, i = scanstring(text, i + 1)
            i = _skip(text, i) + 1  # the ':'
            i = _locate(text, i, path + (key,), out)
        else:
            i = _locate(text, i, path + (index,), out)
            index += 1
        i = _skip(text, i)
        if text[i] == ",":
            i = _skip(text, i + 1)
    return i + 1


def _nearest(offsets: Dict[Tuple[Any, ...], int], loc: Tuple[Any, ...]) -> Optional[int]:
    """The offset of ``loc``, or of its nearest enclosing value (a missing key: its object)."""
    for end in range(len(loc), -1, -1):
        if loc[:end] in offsets:
            return offsets[loc[:end]]
    return None
