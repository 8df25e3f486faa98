"""Reading a W&B offline run back: its ``run-ID.wandb`` file is a LevelDB-style log (a 7-byte
header ``:W&B`` + version, then 32 KiB blocks of records, each a 7-byte header - CRC32, length,
type FULL/FIRST/MIDDLE/LAST - and a piece of a ``wandb_internal.Record`` protobuf)."""

from __future__ import annotations

import glob
import json
import os
import struct
from typing import Dict, Iterator, List, Tuple

_BLOCK = 32 * 1024
_HEADER = 7
_FULL, _LAST = 1, 4


def records(path: str) -> Iterator[object]:
    from wandb.proto import wandb_internal_pb2 as pb

    with open(path, "rb") as f:
        data = f.read()
    assert data[:4] == b":W&B", data[:_HEADER]
    i, piece = _HEADER, b""
    while i + _HEADER <= len(data):
        left = _BLOCK - i % _BLOCK
        if left < _HEADER:  # the block's tail is padding
            i += left
            continue
        _, length, kind = struct.unpack("<IHB", data[i:i + _HEADER])
        i += _HEADER
        if length == 0 and kind == 0:  # zero padding to the block's end
            i += _BLOCK - i % _BLOCK if i % _BLOCK else 0
            continue
        piece += data[i:i + length]
        i += length
        if kind in (_FULL, _LAST):
            record = pb.Record()
            record.ParseFromString(piece)
            piece = b""
            yield record


def offline_runs(out: str) -> List[str]:
    return sorted(glob.glob(os.path.join(out, "wandb", "offline-run-*")))


def read_run(run: str) -> Tuple[Dict[str, object], Dict[str, List[Tuple[int, float]]], List[str]]:
    """(config, {key: [(step, value)]}, uploaded files) of one offline run folder."""
    (path,) = glob.glob(os.path.join(run, "*.wandb"))
    config: Dict[str, object] = {}
    history: Dict[str, List[Tuple[int, float]]] = {}
    files: List[str] = []
    for record in records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            config.update({u.key: json.loads(u.value_json) for u in record.run.config.update})
        elif kind == "config":
            config.update({u.key: json.loads(u.value_json) for u in record.config.update})
        elif kind == "history":
            items = {u.key or "/".join(u.nested_key): json.loads(u.value_json) for u in record.history.item}
            step = int(items.pop("_step"))
            for key, value in items.items():
                if not key.startswith("_"):
                    history.setdefault(key, []).append((step, float(value)))
        elif kind == "files":
            files.extend(f.path for f in record.files.files)
    return config, history, files
