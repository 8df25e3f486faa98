"""Building a teacher-output store: ``kdsl teacher-cache`` from Python.

The teachers run over the training data exactly as ``kdsl train`` would feed them (the same data
factory, batch size, per-epoch order, per-sample augmentation seeds, precision), every sample of
every stored epoch (the last, incomplete batch too, whatever ``drop_last`` says). The size is
known from the dry run before anything is written; the manifest is written last and atomically,
so a store killed while being written is never taken for a complete one.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch

from kdsl.core.diagnostics import error
from kdsl.training.api import _compile, _models
from kdsl.training.batches import model_call
from kdsl.training.config import resolve_config
from kdsl.training.data import load_data
from kdsl.training.distributed import autocast, pick_device
from kdsl.training.rng import seed_everything
from kdsl.training.threads import apply_threads
from kdsl.training.teacher_store import check_storable, fingerprint, rebuild_command, stored_records
from kdsl.training.teacher_store_format import (DTYPES, FORMAT, MANIFEST, MARKER, VERSION, RecordLayout,
                                                compress_topk, create_part, format_size, record_layout,
                                                store_bytes, write_manifest)

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
    loaded = load(os.fspath(spec))
    check_storable(loaded)
    cfg = resolve_config(loaded, dict(settings, epochs=epochs))
    _check_out(out, overwrite)
    device = pick_device(cfg.device, 0)
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
        say(f"teacher store {out}: {len(layouts)} record(s), {stored_epochs} epoch(s) x {data.train_size} "
            f"samples = {format_size(size)}" + ("" if stored_epochs > 1 or not cfg.epochs > 1 else
                                                  " (the data has no randomness: one epoch serves every epoch)"))
        for lay in layouts:
            form = f"top-{lay.k} of {lay.shape[-1]}" if lay.form == "topk" else dtype
            say(f"  {lay.name}: {lay.teacher} {list(lay.shape)} ({form})")
        if max_size is not None and size > max_size:
            raise error("KD715", f"the store would take {format_size(size)} ({size} bytes), more than "
                        f"--max-size {format_size(max_size)}; nothing was written",
                        hint="store fewer epochs, --dtype float16, or --topk K for logits")
        t0 = time.time()
        _write(out, distiller, data, cfg, device, layouts, stored_epochs, say)
        manifest = {
            "format": FORMAT, "version": VERSION, "epochs": stored_epochs, "samples": data.train_size,
            "epoch_dependent": fp["augmentation"]["per_epoch"], "dtype": dtype, "topk": topk,
            "records": {lay.name: lay.describe() for lay in layouts}, "fingerprint": fp, "bytes": size,
            "batch_size": cfg.batch_size, "device": device.type, "spec": loaded.file,
            "command": rebuild_command(loaded.file, out, cfg), "seconds": round(time.time() - t0, 3),
        }
        write_manifest(out, manifest)
    say(f"wrote {out} ({format_size(size)}) in {time.time() - t0:.1f} s")
    return manifest


def _check_out(out: str, overwrite: bool) -> None:
    """``out`` must be new, empty, or (with ``overwrite``) a store; a store being replaced loses
    its manifest first, so that a kill mid-way leaves an incomplete store, never a stale one."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise error("KD706", f"--out {out} is a file, not a directory")
    if os.path.isdir(out) and os.listdir(out):
        is_store = os.path.exists(os.path.join(out, MARKER)) or os.path.exists(os.path.join(out, MANIFEST))
        if not is_store:
            raise error("KD706", f"--out {out} is a directory that is not a teacher store; refusing to write into it",
                        hint="choose a new or empty directory")
        if not overwrite:
            raise error("KD706", f"--out {out} already holds a teacher store", hint="pass --overwrite to replace it")


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


def _write(out: str, distiller, data, cfg, device, layouts: List[RecordLayout], epochs: int, say: Progress) -> None:
    os.makedirs(out, exist_ok=True)
    try:
        os.remove(os.path.join(out, MANIFEST))
    except FileNotFoundError:
        pass
    with open(os.path.join(out, MARKER), "w", encoding="utf-8") as fh:
        fh.write("a kdsl teacher-output store; complete once manifest.json exists\n")
    arrays = {lay.name: {p: create_part(out, part, epochs, data.train_size) for p, part in lay.parts.items()}
              for lay in layouts}
    teachers = list(dict.fromkeys(lay.teacher for lay in layouts))
    seen = torch.zeros(epochs, data.train_size, dtype=torch.bool)
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
            seen[epoch, idx] = True
        say(f"epoch {epoch + 1}/{epochs}: {data.train_size} samples in {time.time() - t0:.1f} s")
    if not bool(seen.all()):
        raise error("KD713", f"the training loader skipped {int((~seen).sum())} sample(s); a store needs every one")
    del arrays  # unmaps; the manifest is written after the files are complete
    for lay in layouts:
        for part in lay.parts.values():
            with open(os.path.join(out, part.file), "rb+") as fh:
                os.fsync(fh.fileno())


def _put(arrays: Dict[str, torch.Tensor], lay: RecordLayout, recorder, epoch: int, idx: torch.Tensor) -> None:
    value = recorder.read()
    if not isinstance(value, torch.Tensor) or tuple(value.shape[1:]) != lay.shape or value.shape[0] != len(idx):
        what = f"a {type(value).__name__}" if not isinstance(value, torch.Tensor) else f"shape {list(value.shape)}"
        raise error("KD713", f"record '{lay.name}' holds {what} in a batch of {len(idx)}; the store expects "
                    f"[{len(idx)}, {', '.join(str(d) for d in lay.shape)}] (one value per sample, the same "
                    "shape in every step)", recorder.span)
    value = value.detach().to("cpu")
    if lay.form == "topk":
        values, indices, rest = compress_topk(value, lay.k)
        arrays["values"][epoch].index_copy_(0, idx, values.to(arrays["values"].dtype))
        arrays["indices"][epoch].index_copy_(0, idx, indices.to(arrays["indices"].dtype))
        arrays["rest"][epoch].index_copy_(0, idx, rest.to(torch.float32))
    else:
        arrays["values"][epoch].index_copy_(0, idx, value.to(arrays["values"].dtype))
