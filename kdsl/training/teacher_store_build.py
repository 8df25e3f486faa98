"""Building a teacher-output store: ``kdsl teacher-cache`` from Python.

The teachers run over the training data exactly as ``kdsl train`` would feed them (the same data
factory, batch size, per-epoch order, per-sample augmentation seeds, precision), every sample of
every stored epoch (the last, incomplete batch too, whatever ``drop_last`` says). The size is
known from the dry run before anything is written. The store is written into a new directory
beside ``--out`` and renamed into place once complete (manifest last, with the checksums), so a
store killed while being written is never taken for a complete one, and a rebuild never
changes the files a running reader has mapped.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import time
import uuid
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch

from kdsl.core.diagnostics import error
from kdsl.training.api import _compile, _models
from kdsl.training.batches import model_call
from kdsl.training.config import resolve_config
from kdsl.training.data import load_data
from kdsl.training.distributed import autocast, check_amp, pick_device
from kdsl.training.rng import seed_everything
from kdsl.training.threads import apply_threads
from kdsl.training.teacher_store import check_storable, fingerprint, rebuild_command, stored_records
from kdsl.training.teacher_store_format import (DTYPES, FORMAT, MANIFEST, MARKER, VERSION, Part, RecordLayout,
                                                compress_topk, create_part, digest_bytes, format_size, input_digests,
                                                inputs_part, is_store, record_layout, remove_store, seal_part,
                                                store_bytes, store_files, write_manifest, write_marker)

Progress = Callable[[str], None]


def build_store(spec: Any, *, out: str, epochs: Optional[int] = None, dtype: str = "float32",
                topk: Optional[int] = None, max_size: Optional[int] = None, overwrite: bool = False,
                student: Optional[str] = None, teacher: Optional[str] = None, models: Sequence[str] = (),
                teacher_ckpt: Optional[str] = None, progress: Optional[Progress] = None,
                **settings: Any) -> Dict[str, Any]:
    """Run the frozen teachers of ``spec`` over its training data and store their records in
    ``out``; the manifest. ``epochs`` (default: the spec's) is how many epochs an augmented data
    set stores (one epoch serves every epoch of data without randomness); ``dtype`` is
    ``"float32"`` (training is then bit-exact) or ``"float16"``; ``topk`` keeps the k largest
    logits of logit records; ``max_size`` (bytes) refuses a larger store before writing (KD715).
    ``settings`` are training settings (``data``, ``batch_size``, ``seed``, ``threads``,
    ``device``, ``amp``) as ``kdsl.train`` takes them."""
    from kdsl.lang.loader import load

    say = progress or (lambda _line: None)
    if dtype not in DTYPES:
        raise error("KD701", f"--dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if topk is not None and topk < 1:
        raise error("KD701", f"--topk must be at least 1, got {topk}")
    params = settings.pop("params", None)  # --set: the spec's params, as the run will give them
    loaded = load(os.fspath(spec), params)
    check_storable(loaded)
    cfg = resolve_config(loaded, dict(settings, epochs=epochs))
    out = os.path.normpath(out)
    replaced = _check_out(out, overwrite)
    device = pick_device(cfg.device, 0)
    check_amp(cfg.amp, device)  # a store computed in a precision no run here can use is refused now
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)  # as kdsl.train does, so that models built without weights match
    data = load_data(dataclasses.replace(cfg, drop_last=False), 0, 1)
    chosen, given = _models(loaded, student, teacher, list(models), teacher_ckpt)
    distiller = _compile(chosen, given, data, device, cfg.inputs)
    apply_threads(cfg, [distiller.student, *distiller.teachers.values()])  # the rule kdsl train follows
    with distiller:
        distiller.to(device)
        check_storable(chosen, distiller)
        records = stored_records(distiller)
        layouts = _layouts(distiller, records, dtype, topk, data.num_classes)
        fp = fingerprint(chosen, cfg, distiller, data)
        stored_epochs = cfg.epochs if fp["augmentation"]["per_epoch"] else 1
        size = store_bytes(layouts, stored_epochs, data.train_size)
        digests = format_size(digest_bytes(stored_epochs, data.train_size))
        say(f"teacher store {out}: {len(layouts)} record(s), {stored_epochs} epoch(s) x {data.train_size} "
            f"samples = {format_size(size)}, {digests} of it the inputs' digests"
            + ("" if stored_epochs > 1 or not cfg.epochs > 1 else
               " (the data has no randomness: one epoch serves every epoch)"))
        for lay in layouts:
            form = f"top-{lay.k} of {lay.shape[-1]}" if lay.form == "topk" else dtype
            say(f"  {lay.name}: {lay.teacher} {list(lay.shape)} ({form})")
        if max_size is not None and size > max_size:
            raise error("KD715", f"the store would take {format_size(size)} ({size} bytes), more than "
                        f"--max-size {format_size(max_size)}; nothing was written",
                        hint="store fewer epochs, --dtype float16, or --topk K for logits")
        t0 = time.time()
        staging = _staging_dir(os.path.abspath(out))  # absolute: `--out .` has a parent too
        try:
            sealed, inputs, content = _write(staging, distiller, data, cfg, device, layouts, stored_epochs, say)
            fp["data"]["content"] = content
            manifest = {
                "format": FORMAT, "version": VERSION, "epochs": stored_epochs, "samples": data.train_size,
                "epoch_dependent": fp["augmentation"]["per_epoch"], "dtype": dtype, "topk": topk,
                "records": {lay.name: lay.describe() for lay in sealed}, "inputs": inputs.describe(),
                "fingerprint": fp, "bytes": size, "batch_size": cfg.batch_size, "device": device.type,
                "spec": loaded.file, "command": rebuild_command(loaded.file, out, cfg),
                "seconds": round(time.time() - t0, 3),
            }
            write_manifest(staging, manifest)
            replaced = _check_out(out, overwrite)  # again: what --out holds now is what the swap removes
        except BaseException:
            remove_store(staging, _own_files(layouts))
            raise
        _swap_in(staging, os.path.abspath(out), replaced)
    say(f"wrote {out} ({format_size(size)}) in {time.time() - t0:.1f} s")
    return manifest


def _check_out(out: str, overwrite: bool) -> Optional[List[str]]:
    """``out`` must be new, empty, or (with ``overwrite``) a store kdsl wrote that holds nothing
    else; the files of the store it replaces (None: nothing is replaced)."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise error("KD706", f"--out {out} is a file, not a directory")
    if not os.path.isdir(out) or not os.listdir(out):
        return None
    if not is_store(out):
        raise error("KD706", f"--out {out} is a directory that is not a teacher store (it lacks kdsl's {MARKER} "
                    "marker); refusing to write into it", hint="choose a new or empty directory")
    if not overwrite:
        raise error("KD706", f"--out {out} already holds a teacher store", hint="pass --overwrite to replace it")
    files = store_files(out)
    if files is None:
        raise error("KD706", f"--out {out} holds a teacher store whose manifest is missing or damaged, so which "
                    "files are its own is unknown; --overwrite removes only a store's own files",
                    hint=f"delete {out} yourself, or choose another --out")
    foreign = sorted(set(os.listdir(out)) - set(files))
    if foreign:
        more = f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
        raise error("KD706", f"--out {out} holds files the teacher store did not write ({', '.join(foreign[:3])}{more}); "
                    "--overwrite replaces only a store's own files", hint="move them elsewhere, or choose another --out")
    return files


def _staging_dir(out: str) -> str:
    """A new directory beside ``out`` (same file system, so that it can be renamed into place)."""
    parent = os.path.dirname(out) or "."
    os.makedirs(parent, exist_ok=True)
    staging = os.path.join(parent, f"{os.path.basename(out)}.kdsl-building-{uuid.uuid4().hex[:12]}")
    os.mkdir(staging)
    return staging


def _own_files(layouts: List[RecordLayout]) -> List[str]:
    """Every file a build writes (for removing a build that did not finish)."""
    parts = [p.file for lay in layouts for p in lay.parts.values()]
    return [MARKER, MANIFEST, MANIFEST + ".tmp", inputs_part().file, *parts]


def _swap_in(staging: str, out: str, replaced: Optional[List[str]]) -> None:
    """Put the complete store ``staging`` at ``out``. A store it replaces is renamed away first and
    then deleted file by file: a run that has it open keeps reading its (unchanged) files, and a
    run that opens ``out`` meanwhile finds the old store, the new one, or none (KD710)."""
    if replaced is None:
        os.rename(staging, out)  # onto nothing, or onto an empty directory
        return
    old = os.path.join(os.path.dirname(out) or ".", f"{os.path.basename(out)}.kdsl-replaced-{uuid.uuid4().hex[:12]}")
    os.rename(out, old)
    os.rename(staging, out)
    remove_store(old, replaced)


def _layouts(distiller, records, dtype: str, topk: Optional[int], num_classes: Optional[int]) -> List[RecordLayout]:
    """Each stored record's layout, from the dry run's shapes; KD713/KD714 for records that
    cannot be stored (as asked)."""
    shapes = distiller.plan.record_shapes
    layouts = []
    for name, rec in records.items():
        info = shapes.get(name)
        if info is None or len(info.shape) < 1 or not all(isinstance(d, int) for d in info.shape):
            raise error("KD713", f"record '{name}' of {rec.model} is not one tensor with a batch dimension "
                        "(a structured output, or `all` calls?); a store keeps tensors", rec.span,
                        hint="record the tensor itself, e.g. `output of teacher.fc`, or train without a store")
        if not info.dtype.startswith(("float", "bfloat")):
            raise error("KD713", f"record '{name}' is a {info.dtype} tensor; a store keeps floating-point values",
                        rec.span)
        shape = tuple(info.shape[1:])
        logit = len(shape) >= 1 and (num_classes is None or shape[-1] == num_classes) and shape[-1] > 1
        k = topk if topk is not None and logit else None
        if k is not None and k >= shape[-1]:
            raise error("KD714", f"--topk {topk} keeps every one of record '{name}''s {shape[-1]} classes",
                        hint=f"choose k below {shape[-1]}")
        layouts.append(record_layout(name, rec.model, shape, info.dtype, dtype, k))
    if topk is not None and not any(lay.form == "topk" for lay in layouts):
        found = ", ".join(f"'{lay.name}' {list(lay.shape)}" for lay in layouts)
        raise error("KD714", f"--topk applies to logit records (last dimension = the "
                    f"{num_classes if num_classes else 'number of'} classes); this spec's teacher records are {found}",
                    hint="drop --topk (or use --dtype float16 to halve the store)")
    return layouts


def _write(out: str, distiller, data, cfg, device, layouts: List[RecordLayout], epochs: int,
           say: Progress) -> Tuple[List[RecordLayout], Part, str]:
    """Every part file in the new directory ``out``; the layouts and the inputs' part with their
    checksums, and the sha256 of every epoch-0 sample's input digest (the data's content)."""
    write_marker(out)
    arrays = {lay.name: {p: create_part(out, part, epochs, data.train_size) for p, part in lay.parts.items()}
              for lay in layouts}
    digests = create_part(out, inputs_part(), epochs, data.train_size)
    teachers = list(dict.fromkeys(lay.teacher for lay in layouts))
    seen = torch.zeros(epochs, data.train_size, dtype=torch.bool)
    cpu = torch.device("cpu")
    for epoch in range(epochs):
        t0 = time.time()
        data.start_epoch(epoch)
        for batch in data.train:
            call = model_call(batch, cfg.inputs, device)
            idx = call.fields["index"].to("cpu", torch.int64)
            with autocast(device, cfg.amp):
                for name in teachers:
                    with distiller.teacher_pass(name) as model:
                        model(*call.args, **call.kwargs)
            for lay in layouts:
                _put(arrays[lay.name], lay, distiller.recorders[lay.name], epoch, idx)
            for r in distiller.recorders.values():
                r.clear()
            plain = model_call(batch, cfg.inputs, cpu)
            digests[epoch].index_copy_(0, idx, input_digests(plain.args, plain.kwargs))
            seen[epoch, idx] = True
        say(f"epoch {epoch + 1}/{epochs}: {data.train_size} samples in {time.time() - t0:.1f} s")
    if not bool(seen.all()):
        raise error("KD713", f"the training loader skipped {int((~seen).sum())} sample(s); a store needs every one")
    content = hashlib.sha256(digests[0].numpy().tobytes()).hexdigest()
    del arrays, digests  # unmaps; the checksums are taken from the files as written
    sealed = [dataclasses.replace(lay, parts={n: seal_part(out, p) for n, p in lay.parts.items()}) for lay in layouts]
    return sealed, seal_part(out, inputs_part()), content


def _put(arrays: Dict[str, torch.Tensor], lay: RecordLayout, recorder, epoch: int, idx: torch.Tensor) -> None:
    value = recorder.read()
    if not isinstance(value, torch.Tensor) or tuple(value.shape[1:]) != lay.shape or value.shape[0] != len(idx):
        what = f"a {type(value).__name__}" if not isinstance(value, torch.Tensor) else f"shape {list(value.shape)}"
        raise error("KD713", f"record '{lay.name}' holds {what} in a batch of {len(idx)}; the store expects "
                    f"[{len(idx)}, {', '.join(str(d) for d in lay.shape)}] (one value per sample, the same "
                    "shape in every step)", recorder.span)
    value = value.detach().to("cpu")
    if lay.form == "topk":
        values, indices, tail = compress_topk(value, lay.k)
        arrays["values"][epoch].index_copy_(0, idx, values.to(arrays["values"].dtype))
        arrays["indices"][epoch].index_copy_(0, idx, indices.to(arrays["indices"].dtype))
        arrays["tail"][epoch].index_copy_(0, idx, tail.to(torch.float32))
    else:
        arrays["values"][epoch].index_copy_(0, idx, value.to(arrays["values"].dtype))
