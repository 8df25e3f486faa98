"""Sharded run checkpoints: under ``strategy = "fsdp"`` with more than one process, the run's
resumable state is written with ``torch.distributed.checkpoint`` (DCP), each rank its own shards.

What DCP writes (``shards/epochN/`` in the run directory): the distiller's state dict (the sharded
models' DTensor shards, written by the rank that holds each; the whole connectors and learning
losses once), every phase's optimizer, schedule and scaler state (the sharded parameters' moments
as shards) and every rank's generator states. ``checkpoint.pt`` stays the commit point: rank 0
writes it last, holding everything else a checkpoint holds (progress, history, config, spec
fingerprint) and, under ``"shards"``, the folder's name, the world size and the size and sha256 of
every file in it; its ``distiller`` and ``optimization`` are empty.

One checkpoint is written so (:func:`save`, every rank):

1. rank 0 removes ``shards/epochN.partial`` (a killed writer's), then every rank writes its shards
   into it (``dcp.save``; rank 0 writes DCP's ``.metadata`` once every rank's files are written);
2. the ranks hash the files (each a share of them) and rank 0 collects the digests;
3. rank 0 renames ``epochN.partial`` to ``epochN``, then (:mod:`~kdsl.training.loop`) writes the
   other files of the epoch and ``checkpoint.pt`` naming ``epochN``, atomically;
4. then the folders ``checkpoint.pt`` does not name (the previous checkpoint's) are removed
   (:func:`prune`).

A kill at any instant leaves ``checkpoint.pt`` naming a complete folder: the new one is named only
once it is whole, and the old one is removed only once it is no longer named.

Reading (:func:`merge_shards`, from :meth:`kdsl.training.rundir.RunDir.load_run_checkpoint`)
checks every file against the digests (a missing one: KD781; a changed or cut one: KD782), then
reads every tensor whole into this process (DCP reshards on load: a run of any world size, one
process included, reads them, as ``dcp_to_torch_save`` does), and gives back the checkpoint as a
plain one holds it: the resumed run loads the whole state and shards it again, as a fresh run
shards the whole models it builds. Each rank takes its own generator states when the world size
is the run's, rank 0's otherwise.

The kill test's write points (``KDSL_KILL_AT``, :mod:`kdsl.training.write_points`): "shards"
on each rank once its shard files are written (before rank 0's ``.metadata``), "rename" and
"renamed" on rank 0 around the rename.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from typing import Any, Dict, List, Optional

from kdsl.core.diagnostics import error
from kdsl.training.write_points import write_point

FOLDER = "shards"
PARTIAL = ".partial"
METADATA = ".metadata"  # DCP's index of every tensor's chunks, written by rank 0 last
_HINT = "resume needs the whole checkpoint: restore the run directory from a copy, or start a new run with --out"


def save(trainer, epochs_done: int) -> Optional[Dict[str, Any]]:
    """Every rank: write the run's state after ``epochs_done`` epochs as DCP shards into
    ``shards/epochN`` (see the module doc); what ``checkpoint.pt`` records of them (``{"dir",
    "world", "files"}``), or None when the run is not sharded over several processes."""
    d, rd = trainer.dist, trainer.run_dir
    if not sharded(trainer):
        return None
    import torch.distributed as dist

    from kdsl.training.distributed import barrier
    from kdsl.training.rng import rng_state

    name = f"{FOLDER}/epoch{epochs_done}"
    partial = rd.file(name + PARTIAL)
    if d.main:
        rd.claim(FOLDER + "/")
        shutil.rmtree(partial, ignore_errors=True)  # a killed writer's: DCP must not mix files in
    barrier(d)
    state = {"distiller": trainer.distiller.state_dict(),
             "optimization": {trainer.stage.name: _text_keys(trainer.stage.state_dict())},
             "rng": {str(d.rank): rng_state(trainer.device)}}
    files = _write(state, partial)
    mine = {f: _digest(os.path.join(partial, f)) for f in files[d.rank::d.world]}
    every: List[Any] = [None] * d.world
    dist.all_gather_object(every, mine)
    if not d.main:
        return None
    digests = {f: digest for part in every for f, digest in part.items()}
    digests[METADATA] = _digest(os.path.join(partial, METADATA))
    final = rd.file(name)
    shutil.rmtree(final, ignore_errors=True)  # an epoch redone after a kill: never the one checkpoint.pt names
    write_point("rename", final)
    os.replace(partial, final)
    write_point("renamed", final)
    return {"dir": name, "world": d.world, "files": digests}


def sharded(trainer) -> bool:
    """Whether the run's checkpoints are DCP shards: models sharded over several processes."""
    return trainer.sharding is not None and trainer.dist.enabled


def _write(state: Dict[str, Any], folder: str) -> List[str]:
    """``dcp.save`` of ``state`` into ``folder`` (a collective); the files written, every rank's."""
    import torch.distributed.checkpoint as dcp

    class Writer(dcp.FileSystemWriter):
        def write_data(self, plan, planner):
            written = super().write_data(plan, planner)
            written.wait()
            write_point("shards", folder)  # this rank's shards are on disk, the metadata is not
            return written

    try:
        metadata = dcp.save(state, storage_writer=Writer(folder))
    except Exception as exc:  # noqa: BLE001 - a full disk, a rank that died mid-write
        raise error("KD783", f"cannot write the sharded checkpoint {folder}: {_first_line(exc)}",
                    hint="the last complete checkpoint is kept: --resume continues from it") from None
    return sorted({info.relative_path for info in metadata.storage_data.values()})


def prune(run_dir, shards: Optional[Dict[str, Any]]) -> None:
    """Rank 0, after ``checkpoint.pt`` is written: remove every folder of ``shards/`` but the one it
    names (``shards``; all of them after a plain checkpoint)."""
    where = run_dir.file(FOLDER)
    if not run_dir.writer or not os.path.isdir(where):
        return
    keep = os.path.basename(shards["dir"]) if shards else None
    for name in sorted(os.listdir(where)):
        if name != keep:
            write_point("prune", os.path.join(where, name))
            shutil.rmtree(os.path.join(where, name), ignore_errors=True)


def merge_shards(run_path: str, state: Dict[str, Any], path: str) -> Dict[str, Any]:
    """``state`` (``checkpoint.pt``'s) with the state its ``"shards"`` name read whole from them:
    ``distiller``, ``optimization`` and this rank's ``rng``; ``state`` itself when it has none."""
    shards = state.get("shards") if isinstance(state, dict) else None
    if shards is None:
        return state
    if not (isinstance(shards, dict) and isinstance(shards.get("dir"), str) and isinstance(shards.get("world"), int)
            and isinstance(shards.get("files"), dict) and METADATA in shards["files"]
            and all(isinstance(v, (list, tuple)) and len(v) == 2 for v in shards["files"].values())
            and not os.path.isabs(shards["dir"]) and ".." not in shards["dir"].split("/")):
        raise error("KD782", f"{path} is damaged: its 'shards' should name the folder of its sharded state, "
                    "the world size and every file's size and sha256", hint=_HINT)
    folder = os.path.join(run_path, shards["dir"])
    _check_files(folder, shards["files"], path)
    loaded = _read(folder)
    rngs = loaded.get("rng")
    if not (isinstance(loaded.get("distiller"), dict) and isinstance(loaded.get("optimization"), dict)
            and isinstance(rngs, dict) and "0" in rngs):
        raise error("KD782", f"the sharded checkpoint {folder} lacks the run's models, optimizers or "
                    "generator states", hint=_HINT)
    rank = _rank() if shards["world"] == _world() else 0
    return {**state, "distiller": loaded["distiller"], "optimization": _int_keys(loaded["optimization"]),
            "rng": rngs.get(str(rank), rngs["0"])}


def _check_files(folder: str, files: Dict[str, Any], path: str) -> None:
    """KD781 for a file of the checkpoint that is missing, KD782 for one that is not what was
    written (another size or sha256): before DCP reads any (it unpickles what is not a tensor)."""
    for name, (size, digest) in sorted(files.items()):
        where = os.path.join(folder, name)
        if not os.path.isfile(where):
            raise error("KD781", f"{where} is missing: the sharded checkpoint that {path} names is incomplete",
                        hint=_HINT)
        if os.path.getsize(where) != size or _digest(where)[1] != digest:
            raise error("KD782", f"{where} is not the file the run wrote ({os.path.getsize(where)} bytes, "
                        f"written {size}; its sha256 differs)", hint=_HINT)


def _read(folder: str) -> Dict[str, Any]:
    """Every entry of the DCP checkpoint in ``folder``, tensors whole, in this process alone (no
    collective: ``dcp_to_torch_save``'s reading, without the file it writes)."""
    import warnings

    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.format_utils import _EmptyStateDictLoadPlanner, _load_state_dict

    out: Dict[str, Any] = {}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "assuming the intent is to load in a single process": it is
            _load_state_dict(out, storage_reader=dcp.FileSystemReader(folder),
                             planner=_EmptyStateDictLoadPlanner(), no_dist=True)
    except Exception as exc:  # noqa: BLE001 - files that pass the digests but not DCP's reader
        raise error("KD782", f"cannot read the sharded checkpoint {folder}: {_first_line(exc)}", hint=_HINT) from None
    return out


def _text_keys(optimization: Dict[str, Any]) -> Dict[str, Any]:
    """A stage's phases with each optimizer's per-parameter state keyed by text (DCP's paths are
    text; :func:`_int_keys` turns them back)."""
    out = {}
    for phase, s in optimization.items():
        opt = s["optimizer"]
        out[phase] = {**s, "optimizer": {**opt, "state": {str(i): v for i, v in opt["state"].items()}}}
    return out


def _int_keys(optimization: Dict[str, Any]) -> Dict[str, Any]:
    """Each optimizer's per-parameter state keyed by parameter index again, as torch keys it."""
    out = {}
    for stage, phases in optimization.items():
        out[stage] = {}
        for phase, s in (phases.items() if isinstance(phases, dict) else ()):
            opt = s.get("optimizer") if isinstance(s, dict) else None
            if isinstance(opt, dict) and isinstance(opt.get("state"), dict):
                s = {**s, "optimizer": {**opt, "state": {int(k) if str(k).isdigit() else k: v
                                                         for k, v in opt["state"].items()}}}
            out[stage][phase] = s
    return out


def _digest(path: str):
    """[size, sha256] of a file (read in 16 MiB pieces)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            piece = fh.read(1 << 24)
            if not piece:
                break
            h.update(piece)
    return [os.path.getsize(path), h.hexdigest()]


def _rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _world() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"
