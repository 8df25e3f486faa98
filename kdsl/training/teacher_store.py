"""A teacher-output store: the frozen teachers' records over the training data, computed once
(``kdsl teacher-cache``, :mod:`kdsl.training.teacher_store_build`) and read by any number of
training runs (``kdsl train --teacher-cache DIR``) instead of running the teachers.

A store is only as good as its fingerprint (torchdistill's index-keyed cache went stale silently
under augmentation and was removed). The fingerprint (:func:`fingerprint`) covers what decides a
stored value: each stored teacher's architecture reference and a hash of its weights, the spec's
teacher records, the training data (reference, options, size), whether the data's augmentation
differs per epoch, the seed (when it does), and the mixed precision. A run whose fingerprint
differs in any part is refused (KD711) with the part named and the command that rebuilds the store.

The data's content is checked sample by sample: the store holds a digest of every sample's model
inputs at every stored epoch (taken while building, from the batches the teachers ran on). A run
checks 1,024 evenly spaced samples before its first step, and every batch it serves from the store
(KD711 for the first sample whose input differs). A served value is thus always the teacher's
output on the very input the student gets, and the store's bytes are checked per chunk against
the manifest's sha256 (KD710), so nothing altered is ever served.

Per-sample augmentation is seeded from (seed, epoch, index) (:func:`kdsl.training.data.sample_seed`),
so an augmented store holds one array per epoch and a run replays exactly what was stored; data
without randomness gives an epoch-independent store of one epoch that serves every epoch and seed.
Format: :mod:`kdsl.training.teacher_store_format`.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from kdsl.catalog.settings import command_flags
from kdsl.core.diagnostics import error
from kdsl.lang import ir
from kdsl.lang.printer import call_text
from kdsl.runtime.recorders import ParamRecorder, Recorder
from kdsl.training.batches import model_call
from kdsl.training.config import given_flags
from kdsl.training.teacher_store_format import (MappedPart, RecordLayout, expand_topk, input_digests,
                                                read_manifest, uniform_rest)

SAMPLE_SEEDING = "splitmix64(seed*1000003+epoch, index) v1"  # changes if sample_seed ever does
CHECKED_AT_OPEN = 1024  # samples whose inputs a run checks before its first step (evenly spaced)
PROBED_SAMPLES = 8  # samples drawn twice (replayable?) and at two epochs (augmented?)


# ---------------------------------------------------------------------------------- what is stored
def storable_problem(spec: ir.Spec) -> Optional[Tuple[str, Any]]:
    """Why ``spec`` cannot use a store, and where (None: it can): only frozen teachers read by
    records, unchanged by the spec."""
    if spec.input is not None:
        return "its models' input is generated (`input = ...`), so there is no training data to store", None
    if spec.deliveries:
        return "it delivers a teacher's calls to the student (`deliver`), which needs the teacher's pass", None
    if spec.stages or spec.phases:
        return "it declares stages or phases, whose steps run the teachers themselves", None
    read = {r.model for r in spec.records if r.what != "param"}
    trained = [t.name for t in spec.teachers if t.trainable and t.name in read]
    if trained:
        return f"teacher '{trained[0]}' is trainable: its outputs change as it trains", None
    transform = spec.train.get("batch_transform") if spec.train is not None else None
    if transform is not None:  # a store holds the teachers' outputs on the data's own samples
        return "it transforms its training batches (batch_transform)", transform.span
    batch_stats = [t for t in spec.teachers if t.train_mode and t.name in read]
    if batch_stats:  # its outputs depend on the other samples of each batch
        return (f"teacher '{batch_stats[0].name}' runs in train mode (train_mode): its outputs depend on "
                "the batch each sample is in", batch_stats[0].name_span)
    if not any(t.name in read for t in spec.teachers):
        return "no record reads a teacher's pass: there is nothing to store", None
    for init in (s for s in spec.statements if isinstance(s, ir.InitDecl)):
        if init.target.model in read and init.target.model in {t.name for t in spec.teachers}:
            # the run copies the weights when it starts, after the store's weights were hashed
            return (f"`init {init.target} from {init.source}` changes teacher '{init.target.model}' when the run "
                    "starts, so a store would hold the teacher before the init", init.span)
    return None


def check_storable(spec: ir.Spec, distiller=None) -> None:
    problem = storable_problem(spec)
    if problem is None and distiller is not None and distiller.procedure.declared:
        problem = "it declares stages or phases, whose steps run the teachers themselves", None
    if problem:
        message, span = problem
        raise error("KD712", f"{spec.file} cannot use a teacher store: {message}", span,
                    hint="train it without --teacher-cache (the teachers then run in every step)")


def stored_records(distiller) -> Dict[str, Recorder]:
    """The records a store holds: those of frozen teachers' passes (a parameter record reads the
    weights themselves and needs no pass)."""
    teachers = set(distiller.used_teachers)
    return {n: r for n, r in distiller.recorders.items()
            if r.model in teachers and not isinstance(r, ParamRecorder)}


# ---------------------------------------------------------------------------------- fingerprint
def weights_hash(model: torch.nn.Module) -> str:
    """sha256 of a model's state_dict: names, dtypes, shapes and raw bytes."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        t = t.detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{list(t.shape)}\n".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _hash_value(h, value: Any) -> None:
    if isinstance(value, torch.Tensor):
        t = value.detach().to("cpu").contiguous()
        h.update(f"{t.dtype}|{list(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    elif isinstance(value, dict):
        for k in sorted(value):
            h.update(str(k).encode())
            _hash_value(h, value[k])
    elif isinstance(value, (list, tuple)):
        for v in value:
            _hash_value(h, v)
    else:
        h.update(repr(value).encode())


def _spaced(n: int, count: int) -> List[int]:
    if n <= count:
        return list(range(n))
    return sorted({(i * (n - 1)) // (count - 1) for i in range(count)})


def probe_augmentation(indexed) -> bool:
    """Whether the training data's samples differ per epoch (augmented). KD718 when a sample read
    twice at the same (seed, epoch, index) differs: randomness kdsl does not seed."""
    changed = False
    for i in _spaced(len(indexed), PROBED_SAMPLES):
        a, b, c = hashlib.sha256(), hashlib.sha256(), hashlib.sha256()
        _hash_value(a, indexed.item(i, 0))
        _hash_value(b, indexed.item(i, 0))
        _hash_value(c, indexed.item(i, 1))
        if a.digest() != b.digest():
            raise error("KD718", f"training sample {i} differs between two reads at the same seed and epoch: "
                        "the data draws randomness that kdsl does not seed (Python's random or numpy?), so "
                        "a teacher store could not replay it",
                        hint="draw augmentation from torch's generator (torch.rand, torchvision transforms), "
                        "which kdsl seeds per sample, or train without a store")
        changed = changed or a.digest() != c.digest()
    return changed


def fingerprint(spec: ir.Spec, cfg, distiller, data) -> Dict[str, Any]:
    """What decides a store's values, part by part (compared part by part by :meth:`TeacherStore.check`).
    The data's ``content`` (the sha256 of every sample's input digest) is filled in by the build,
    which streams every sample; a run checks its samples' inputs one by one instead
    (:meth:`TeacherStore.check_samples`, :meth:`TeacherStore.serve`)."""
    records = stored_records(distiller)
    teachers = sorted({r.model for r in records.values()})
    decls = {m.name: m for m in spec.models}
    indexed = data.train.dataset
    augmented = probe_augmentation(indexed)
    ref, options = cfg.data
    return {
        "teachers": {n: {"model": json.loads(decls[n].factory.canonical_json()) if decls[n].factory else None,
                         "weights": weights_hash(distiller.model(n))} for n in teachers},
        "records": {d.name: {"text": d.describe(), "canonical": json.loads(d.canonical_json())}
                    for d in spec.records if d.name in records},
        "data": {"ref": ref, "options": json.loads(json.dumps(options, sort_keys=True, default=str)),
                 "train_size": len(indexed), "content": None},
        "augmentation": {"per_epoch": augmented, "sample_seeding": SAMPLE_SEEDING},
        "seed": cfg.seed if augmented else None,  # without augmentation no stored value depends on it
        "precision": cfg.amp or "float32",
    }


def differences(stored: Dict[str, Any], now: Dict[str, Any]) -> List[str]:
    """What differs between two fingerprints, in words, the most telling part first."""
    out: List[str] = []
    for name in sorted(set(stored["teachers"]) | set(now["teachers"])):
        a, b = stored["teachers"].get(name), now["teachers"].get(name)
        if a is None or b is None:
            out.append(f"teachers: the store holds teacher '{name}' and this run does not"
                       if b is None else f"teachers: this run's teacher '{name}' is not in the store")
        elif a["model"] != b["model"]:
            out.append(f"teacher '{name}': its model reference differs")
        elif a["weights"] != b["weights"]:
            out.append(f"teacher '{name}': its weights differ (store {a['weights'][:12]}, "
                       f"this run {b['weights'][:12]})")
    sr, nr = stored["records"], now["records"]
    for name in sorted(set(sr) | set(nr)):
        if name not in nr:
            out.append(f"records: the store holds record '{name}' ({sr[name]['text']}), which this spec lacks")
        elif name not in sr:
            out.append(f"records: record '{name}' ({nr[name]['text']}) is not in the store")
        elif sr[name]["canonical"] != nr[name]["canonical"]:
            out.append(f"records: record '{name}' is `{sr[name]['text']}` in the store, "
                       f"`{nr[name]['text']}` in this spec")
    sd, nd = stored["data"], now["data"]
    sa, na = stored["augmentation"], now["augmentation"]
    if (sd["ref"], sd["options"]) != (nd["ref"], nd["options"]):
        out.append(f"data: the store was built on {_data_text(sd)}, this run reads {_data_text(nd)}")
    elif sd["train_size"] != nd["train_size"]:
        out.append(f"data: the store holds {sd['train_size']} training samples, this run has {nd['train_size']}")
    if sa["per_epoch"] != na["per_epoch"]:
        out.append("augmentation: " + ("the store's samples differ per epoch (augmented) and this run's do not"
                                       if sa["per_epoch"] else "this run's samples differ per epoch (augmented) "
                                       "and the store's did not"))
    elif sa != na:
        out.append("augmentation: the per-sample seeding differs (a store of another kdsl version)")
    elif stored["seed"] != now["seed"]:
        out.append(f"seed: the store was built with seed {stored['seed']}, this run's is {now['seed']} "
                   "(with augmented data the seed picks every augmentation)")
    if stored["precision"] != now["precision"]:
        out.append(f"precision: the store was computed in {stored['precision']}, this run uses {now['precision']}")
    return out


def _data_text(d: Dict[str, Any]) -> str:
    return call_text(d["ref"], d["options"])


def rebuild_command(spec_file: str, directory: str, cfg, manifest: Optional[Dict[str, Any]] = None) -> str:
    """The ``kdsl teacher-cache`` command that builds a store for the run of ``cfg``."""
    words = ["kdsl", "teacher-cache", spec_file, "--out", directory, "--epochs", str(cfg.epochs)]
    # the run's other flags that teacher-cache takes too (the settings table says which)
    words += given_flags(cfg, [s for s in command_flags("teacher-cache") if s.name != "epochs"])
    if manifest is not None:
        if manifest.get("dtype") != "float32":
            words += ["--dtype", str(manifest["dtype"])]
        if manifest.get("topk"):
            words += ["--topk", str(manifest["topk"])]
    return " ".join(shlex.quote(w) for w in words) + " --overwrite"


# ---------------------------------------------------------------------------------- the reader
class TeacherStore:
    """An opened store: memory-mapped arrays, verified as they are read, served to a distiller
    step by step for batches whose inputs are the ones the store was built from."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.inputs: Optional[Sequence[str]] = None  # the train block's `inputs` (which batch fields)
        try:  # the manifest and every file through one descriptor: all of the same store
            dir_fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        except OSError:
            dir_fd = None  # read_manifest says what is missing
        try:
            self.manifest = read_manifest(directory, dir_fd)
            m = self.manifest
            self.epochs, self.samples = m["epochs"], m["samples"]
            self.epoch_dependent = bool(m["epoch_dependent"])
            self.layouts: Dict[str, RecordLayout] = {lay.name: lay for lay in m["layouts"]}
            self.arrays = {name: {p: MappedPart(directory, dir_fd, part, self.epochs, self.samples)
                                  for p, part in lay.parts.items()} for name, lay in self.layouts.items()}
            self.digests = MappedPart(directory, dir_fd, m["inputs_part"], self.epochs, self.samples)
        finally:
            if dir_fd is not None:
                os.close(dir_fd)
        self.by_teacher: Dict[str, List[str]] = {}
        for name, lay in self.layouts.items():
            self.by_teacher.setdefault(lay.teacher, []).append(name)
        self._checked_batch: Any = None
        self.rebuild = f"kdsl teacher-cache SPEC --out {directory} --overwrite"  # open_for_run: the exact one

    def check(self, now: Dict[str, Any], epochs: int, rebuild: str) -> None:
        """KD711 when ``now`` (this run's fingerprint) differs; KD716 when the run trains more
        epochs of augmented data than the store holds."""
        found = differences(self.manifest["fingerprint"], now)
        if found:
            more = f" (and {len(found) - 1} more difference{'s' if len(found) > 2 else ''})" if len(found) > 1 else ""
            raise error("KD711", f"the teacher store {self.directory} does not fit this run: {found[0]}{more}",
                        hint=f"rebuild it: {rebuild}")
        if self.epoch_dependent and epochs > self.epochs:
            raise error("KD716", f"the teacher store {self.directory} holds {self.epochs} epoch(s) of augmented "
                        f"data; this run trains {epochs}", hint=f"rebuild it: {rebuild}")

    def check_samples(self, data, rebuild: str) -> None:
        """KD711 unless CHECKED_AT_OPEN evenly spaced training samples, as epoch 0 draws them, are
        the inputs the store was built from (every other sample is checked when it is served)."""
        indexed, collate = data.train.dataset, data.train.collate_fn
        for i in _spaced(len(indexed), CHECKED_AT_OPEN):
            call = model_call(collate([indexed.item(i, 0)]), self.inputs, torch.device("cpu"))
            self._check_inputs(0, torch.tensor([i]), call, rebuild)

    def _check_inputs(self, epoch: int, index: torch.Tensor, call, rebuild: str) -> None:
        stored = self.digests.rows(epoch if self.epoch_dependent else 0, index)
        differ = (stored != input_digests(call.args, call.kwargs)).any(-1)
        if bool(differ.any()):
            sample = int(index[differ.nonzero()[0, 0]])
            raise error("KD711", f"the teacher store {self.directory} does not fit this run: data: the training "
                        f"samples' content differs (same reference, size and seed): sample {sample}'s input "
                        f"(epoch {epoch + 1}) is not the one the store's teacher outputs were computed from",
                        hint=f"rebuild it: {rebuild}")

    def values(self, teacher: str, epoch: int, index: torch.Tensor, device: torch.device) -> Dict[str, Any]:
        """The stored records of ``teacher`` for the samples ``index`` at ``epoch``, as the
        teacher's pass would have recorded them (dtype, device)."""
        e = epoch if self.epoch_dependent else 0
        if not 0 <= e < self.epochs:
            raise error("KD716", f"the teacher store {self.directory} holds {self.epochs} epoch(s); "
                        f"epoch {epoch + 1} is not among them")
        idx = index.to("cpu", torch.int64)
        out: Dict[str, Any] = {}
        for name in self.by_teacher.get(teacher, ()):
            lay, arrays = self.layouts[name], self.arrays[name]
            dtype = getattr(torch, lay.dtype)
            if lay.form == "topk":
                top = arrays["values"].rows(e, idx)
                # format 3 keeps the tail's log-mass, format 2 the uniform logit it gives the tail
                rest = (arrays["rest"].rows(e, idx) if "rest" in arrays
                        else uniform_rest(top, arrays["tail"].rows(e, idx), lay.shape[-1]))
                value = expand_topk(top, arrays["indices"].rows(e, idx), rest, lay.shape[-1], dtype=dtype)
            else:
                value = arrays["values"].rows(e, idx).to(dtype)
            out[name] = value.to(device, non_blocking=True)
        return out

    def serve(self, distiller, teacher: str, epoch: int, batch: Any) -> bool:
        """Give ``distiller`` the records of ``teacher`` for this step's ``batch``; False when the
        store does not hold that teacher (its pass then runs). KD711 when a sample of the batch is
        not the input the store was built from."""
        if teacher not in self.by_teacher:
            return False
        call = model_call(batch, self.inputs, torch.device("cpu"))
        index = call.fields["index"].to("cpu", torch.int64)
        if batch is not self._checked_batch:  # once a step, whatever the number of teachers
            self._check_inputs(epoch, index, call, self.rebuild)
            self._checked_batch = batch
        distiller.provide_records(teacher, self.values(teacher, epoch, index, distiller._device()))
        return True


def open_for_run(spec: ir.Spec, cfg, distiller, data) -> TeacherStore:
    """The store of ``cfg.teacher_cache``, checked against this run (KD710, KD711, KD712, KD716)."""
    directory = cfg.teacher_cache
    check_storable(spec, distiller)
    store = TeacherStore(directory)
    store.inputs = cfg.inputs
    rebuild = rebuild_command(spec.file, directory, cfg, store.manifest)
    if data is None:
        raise error("KD712", f"{spec.file} has no training data for a teacher store to serve")
    store.check(fingerprint(spec, cfg, distiller, data), cfg.epochs, rebuild)
    missing = [n for n in stored_records(distiller) if n not in store.layouts]
    if missing:  # the fingerprint's records say the same; kept for stores edited by hand
        raise error("KD711", f"the teacher store {directory} lacks record '{missing[0]}'", hint=f"rebuild it: {rebuild}")
    store.check_samples(data, rebuild)
    store.rebuild = rebuild
    return store


def describe(manifest: Dict[str, Any]) -> Sequence[str]:
    """Lines that say what a store holds (for the command line)."""
    lines = []
    for name, d in manifest["records"].items():
        form = manifest["dtype"]
        if d["form"] == "topk":
            form = f"top-{d['k']} and the tail's mass" + (" (format 2)" if "rest" in d["parts"] else "")
        lines.append(f"  {name}: {d['teacher']} {list(d['shape'])} ({form})")
    return lines
