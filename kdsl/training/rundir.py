"""The run directory, and the format of what is in it, written and read here only.

``checkpoint.pt`` holds everything needed to resume exactly as plain data under
``"format": "kdsl-run/2"``, readable with ``torch.load(weights_only=True)``: ``epoch`` (epochs
done), ``step``, ``stage`` (the stage of the last epoch done), ``distiller`` (the distiller's
state dict: trained models, connectors, learning losses), ``optimization`` (``{stage: {phase:
{"optimizer", "scheduler", "scaler"}}}``: every phase of that stage), ``rng``, ``teachers``,
``history``, ``config``, ``spec`` (the spec's fingerprint) and ``world`` (its processes). A
``kdsl-run/1`` checkpoint reads as stage "main", phase "step". Under strategy fsdp over several
processes its models and optimizers are DCP shards it names (``shards``, :mod:`.dist_checkpoint`).

``student.pt`` is the student's plain state dict (of the last epoch; a LoRA student's merged, its
adapters in ``student_adapter/``); ``best.pt`` the student's at the best epoch by the validation
metric (:func:`kdsl.training.metrics.best_epoch`, setting ``best_metric``); ``models/NAME.pt``
every trained model's (the student, trainable teachers, generators); ``connectors/STAGE.pt`` the
connectors after stage STAGE, ``{NAME: state dict}`` (``connector NAME = ... from
"RUN/connectors/STAGE.pt"`` loads NAME's); ``metrics.jsonl`` / ``metrics.csv`` one row per epoch;
``validation.jsonl`` one row per validation within an epoch (``val_every``); ``curves.png``;
``summary.json``; ``spec/`` the spec and the files it includes as they were read
(:func:`kdsl.training.environment.spec_files`), written when the run starts; ``environment.json``
one entry per process that trained the run (versions, device, threads, command, git commit);
``tensorboard/`` the event files of ``--tensorboard``. Files are atomic, written by rank 0 only.

``kdsl-run.json`` (the manifest) lists every path kdsl wrote in the directory (a folder whose whole
content is kdsl's, ``tensorboard/``, ends with ``/``); a path is listed before it is first written.
It is what makes a directory kdsl's: a non-empty directory without one is refused (KD706), a file
in the place of a run file that the manifest does not list is never replaced, and a fresh run
(``--overwrite``, or after a run killed before its first checkpoint) removes exactly what the
manifest lists, nothing else. A run that fails or is interrupted before its first checkpoint
removes what it wrote, and the directory if it made it. A directory of a kdsl from before the
manifest (``checkpoint.pt``, no manifest) is adopted with its fixed names.

With ``checkpoint_every = N``, ``checkpoint.pt`` is also written every N steps within an epoch,
alone, with ``"within": {"steps", "sums"}`` (the steps of the epoch after ``epoch`` done, and their
loss sums): a resumed run skips those steps' batches and continues bit for bit; the other files
stay the last epoch's.

``checkpoint.pt`` is the run's one commit point: each epoch writes every other file first and the
checkpoint last, so a kill at any instant leaves a checkpoint that is whole, and other files that
belong to it or to the epoch after it. ``best.pt`` alone is written *after* the checkpoint, and
only at an epoch that improves the metric: its weights are then the checkpoint's own student, so a
kill between the two leaves a checkpoint from which best.pt is rebuilt, and a kill before the
checkpoint leaves the previous best.pt, which the checkpoint's history still names. Those are
derived from the checkpoint, and ``--resume`` and ``--eval-only`` repair any that disagree with it
(:meth:`RunDir.weights_agree`, :meth:`RunDir.metrics_agree`, :meth:`RunDir.summary_agrees`);
temporary files of a killed writer (``NAME.tmp-PID``, NAME listed in the manifest) are removed when
a run directory is prepared.

For the kill test (tests/hardening/test_kill.py) every atomic write passes three *write points*
(half of the temporary file written, the temporary file complete, the file renamed into place):
``KDSL_KILL_AT=N`` ends the process with ``os._exit(137)`` at its Nth point, as a SIGKILL would,
and ``KDSL_KILL_TRACE=FILE`` appends each point's number and name to FILE. Unset (always, outside
that test), they cost one environment lookup per file written (:mod:`.write_points`).
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import os
from typing import Any, Dict, List, Optional, Tuple

from kdsl.core.diagnostics import error
from kdsl.lora import adapter_files, plain_state_dict
from kdsl.lang import ir
from kdsl.training.checkpoint_format import (DAMAGED_HINT, CHECKPOINT_FORMAT, from_format_1,
                                            checkpoint_problem)
from kdsl.training.report import RunFiles
from kdsl.training.run_manifest import MANIFEST, PROBE, TEMPORARY, RunManifest, relative, writer_gone
from kdsl.training.write_points import write_point

def atomic_write(path: str, data: bytes) -> None:
    """Write a file so that a crash leaves either the old or the new version, never half of one."""
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as fh:
            half = len(data) // 2
            fh.write(data[:half])
            fh.flush()
            write_point("write", path)
            fh.write(data[half:])
            fh.flush()
            os.fsync(fh.fileno())
        write_point("rename", path)
        os.replace(tmp, path)
        write_point("renamed", path)
    except BaseException:  # a failed write (disk full, interrupt) leaves no temporary file behind
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def atomic_torch_save(obj: Any, path: str) -> None:
    atomic_write(path, _torch_bytes(obj))


def _torch_bytes(obj: Any) -> bytes:
    """``torch.save`` of ``obj``, as bytes."""
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def spec_fingerprint(spec: ir.Spec) -> str:
    """Identifies the spec a checkpoint was trained with (spans excluded: moving text is fine)."""
    return hashlib.sha256(spec.canonical_json().encode()).hexdigest()[:16]


def _csv_value(v: Any) -> Any:
    return f"{v:.6g}" if isinstance(v, float) else ("" if v is None else v)


class RunDir:
    """A run directory; ``writer`` is False on every rank but 0, which then writes nothing."""

    def __init__(self, path: str, writer: bool = True) -> None:
        self.path = path
        self.writer = writer
        self.manifest = RunManifest(path, atomic_write)  # what kdsl wrote here (kdsl-run.json)
        self.made: List[str] = []  # the folders prepare() made (abandon() removes them if empty)
        self.fresh = False  # begin() started a new run here

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    def files(self) -> RunFiles:
        return RunFiles(out=self.path, checkpoint=self.file("checkpoint.pt"), student=self.file("student.pt"),
                        metrics_jsonl=self.file("metrics.jsonl"), metrics_csv=self.file("metrics.csv"),
                        summary=self.file("summary.json"),
                        curves=self._present("curves.png"), models=self._listing("models"),
                        connectors=self._listing("connectors"), best=self._present("best.pt"),
                        environment=self._present("environment.json"), spec=self._present("spec"),
                        tensorboard=self._present("tensorboard"))

    def _present(self, name: str) -> Optional[str]:
        return self.file(name) if os.path.exists(self.file(name)) else None

    def _listing(self, folder: str) -> Dict[str, str]:
        """NAME -> path of each FOLDER/NAME.pt present."""
        where = self.file(folder)
        if not os.path.isdir(where):
            return {}
        return {n[:-3]: os.path.join(where, n) for n in sorted(os.listdir(where)) if n.endswith(".pt")}

    # ---------------------------------------------------------------- set-up
    def prepare(self, *, resume: bool, eval_only: bool, overwrite: bool) -> None:
        """Refuse a directory that is not kdsl's (a non-empty one without a manifest), to start over
        an existing run (unless ``overwrite``), or to evaluate nothing; check that the directory can
        be written. Writes nothing but the directory itself: the old run of ``overwrite`` is removed
        by :meth:`begin`, once the new run is known to start. A ``resume`` without a checkpoint
        prepares a fresh run (the caller then starts one: see :meth:`has_checkpoint`)."""
        if os.path.exists(self.path) and not os.path.isdir(self.path):
            raise error("KD706", f"--out {self.path} is a file, not a directory", hint="pass a directory")
        if self.writer:  # rank 0 judges the directory: the others may already see its first files
            self.manifest.read()
        if eval_only:
            if not os.path.isdir(self.path):
                raise error("KD703", f"no run to evaluate in {self.path}",
                            hint="train first, or point --out at the run's directory")
            self.remove_leftovers()
            return
        if resume and self.has_checkpoint():
            self.remove_leftovers()
            return
        if self.has_checkpoint() and not overwrite and not resume:
            raise error("KD706", f"{self.path} already holds a run",
                        hint="--resume continues it, --out DIR starts a new one elsewhere, "
                        "--overwrite replaces it")
        if self.writer:
            self._make_writable()
            self.remove_leftovers()

    def _make_writable(self) -> None:
        """Make the directory (and its missing parents, which :meth:`abandon` removes again)
        and check that a file can be written in it."""
        missing, here = [], os.path.abspath(self.path)
        while not os.path.exists(here) and os.path.dirname(here) != here:
            missing.append(here)
            here = os.path.dirname(here)
        try:
            os.makedirs(self.path, exist_ok=True)
            self.made = missing
            probe = self.file(f"{PROBE}-{os.getpid()}")
            with open(probe, "w") as fh:
                fh.write("")
            os.remove(probe)
        except OSError as exc:
            raise error("KD706", f"cannot write to {self.path}: {exc.strerror or exc}") from None

    def begin(self, fresh: bool) -> None:
        """The run starts writing: a ``fresh`` one first removes every file the manifest lists
        (an old run replaced with --overwrite, or one killed before its first checkpoint), so that
        nothing of it survives; files kdsl did not write stay. Then the manifest is written."""
        if not self.writer:
            return
        if fresh:
            self.manifest.clear()
            self.fresh = True
        self.manifest.paths = self.manifest.paths or set()
        self.manifest.save()

    def claim(self, name: str) -> str:
        """The path of the run file ``name`` (``a/b.pt``; a folder ``tensorboard/``), listed in the
        manifest before it is written. KD706 when a file kdsl did not write is in its place: kdsl
        never replaces one."""
        return self.manifest.add(name)

    def abandon(self) -> None:
        """After a run that failed (or was interrupted) before saving its first epoch: remove what
        it wrote, and the folders it made, so that a failure leaves nothing behind."""
        if not self.writer or self.has_checkpoint():
            return
        if self.fresh:
            self.manifest.clear()
            self.manifest.delete()
        for folder in self.made:  # innermost first
            with contextlib.suppress(OSError):
                os.rmdir(folder)  # only an empty one

    def remove_leftovers(self) -> List[str]:
        """Remove the temporary files (``NAME.tmp-PID``) that a writer killed mid-write left, for
        the NAMEs the manifest lists (a file named so that kdsl did not write is not touched);
        the paths removed. A live process's are kept."""
        removed: List[str] = []
        if not self.writer or not os.path.isdir(self.path):
            return removed
        owned = (self.manifest.paths or set()) | {MANIFEST}
        folders = {os.path.dirname(n) for n in owned}
        for folder in sorted(folders):
            where = self.file(folder) if folder else self.path
            names = os.listdir(where) if os.path.isdir(where) else []
            for name in names:
                m = TEMPORARY.search(name)
                # a temporary file of a live writer is no leftover
                if not m or relative(os.path.join(folder, name[:m.start()])) not in owned or \
                        not writer_gone(int(m.group(1))):
                    continue
                with contextlib.suppress(OSError):
                    os.remove(os.path.join(where, name))
                    removed.append(os.path.join(where, name))
        return removed

    # ---------------------------------------------------------------- reproduction
    def write_spec(self, files: Dict[str, bytes], replace: bool) -> None:
        """spec/: the spec and its includes (``{relative path: bytes}``). A resumed run
        (``replace`` False) keeps the files that started it (the fingerprint says they agree), and
        writes them only if they are missing; a new run replaces any that an old one left."""
        if not self.writer or (os.path.isdir(self.file("spec")) and not replace):
            return
        for name, data in files.items():
            self.write_file(os.path.join("spec", name), data)

    def record_session(self, facts: Dict[str, Any], fresh: bool) -> None:
        """environment.json, with ``facts`` (this process's) appended to the sessions already there;
        ``fresh``: a new run, which starts the list over (an --overwrite leaves no old session)."""
        if not self.writer:
            return
        from kdsl.training.environment import environment_record

        previous = None
        if not fresh:
            with contextlib.suppress(OSError, ValueError):
                previous = json.loads(_read_bytes(self.file("environment.json")) or b"null")
        record = environment_record(previous, facts)
        self.write_file("environment.json", json.dumps(record, indent=2, default=str).encode())

    # ---------------------------------------------------------------- metrics, curves, summary
    def write_metrics(self, history: List[Dict[str, Any]]) -> None:
        """metrics.jsonl and metrics.csv: one row per epoch, the columns in first-seen order."""
        if not self.writer:
            return
        jsonl, csv_text = _metrics_texts(history)
        self.write_file("metrics.jsonl", jsonl)
        self.write_file("metrics.csv", csv_text)

    def metrics_agree(self, history: List[Dict[str, Any]]) -> bool:
        """Whether metrics.jsonl and metrics.csv hold exactly ``history`` (a checkpoint's)."""
        return all(_read_bytes(self.file(n)) == text
                   for n, text in zip(("metrics.jsonl", "metrics.csv"), _metrics_texts(history)))

    def write_validations(self, rows: List[Dict[str, Any]]) -> None:
        """validation.jsonl: one row per validation within an epoch (``val_every``)."""
        if self.writer:
            self.write_file("validation.jsonl", _jsonl(rows))

    def validations_agree(self, rows: List[Dict[str, Any]]) -> bool:
        """Whether validation.jsonl holds exactly ``rows`` (a checkpoint's; none: no file)."""
        return _read_bytes(self.file("validation.jsonl")) == (_jsonl(rows) if rows else None)

    def write_curves(self, history: List[Dict[str, Any]], teachers, start_lr: Optional[float] = None) -> Optional[str]:
        """curves.png (``start_lr``: the learning rate of the run's first step, when known); None,
        or why it was skipped (matplotlib not installed)."""
        if not self.writer or not history:
            return None
        from kdsl.training.curves import plot_curves

        png = plot_curves(history, teachers, start_lr)
        if png is None:
            return "matplotlib is not installed: skipped curves.png (pip install 'kdsl[plot]')"
        self.write_file("curves.png", png)
        return None

    def write_summary(self, summary: Dict[str, Any]) -> None:
        if self.writer:
            self.write_file("summary.json", json.dumps(summary, indent=2).encode())

    def summary_agrees(self, epoch: int, history: List[Dict[str, Any]]) -> bool:
        """Whether summary.json is of ``epoch`` epochs done, with ``history`` (a checkpoint's)."""
        try:
            with open(self.file("summary.json"), "rb") as fh:
                summary = json.loads(fh.read())
        except (OSError, ValueError):
            return False
        return (isinstance(summary, dict) and summary.get("epochs_done") == epoch
                and summary.get("history") == json.loads(json.dumps(history)))

    def weights_agree(self, name: str, module) -> bool:
        """Whether the weights file ``name`` (``student.pt``, ``models/NAME.pt``) holds exactly
        ``module``'s state dict, tensor for tensor."""
        import torch

        try:
            saved = torch.load(self.file(name), map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001 - missing, cut short, damaged: it disagrees
            return False
        mine = plain_state_dict(module)
        return (isinstance(saved, dict) and list(saved) == list(mine)
                and all(isinstance(saved[k], torch.Tensor) and saved[k].dtype == v.dtype
                        and saved[k].shape == v.shape and torch.equal(saved[k], v) for k, v in mine.items()))

    def write_weights(self, name: str, module) -> None:
        """``module``'s plain state dict to the weights file ``name`` (under the run directory); a
        LoRA model's merged, its adapters beside (:func:`kdsl.lora.adapter_files`)."""
        if self.writer:
            self.write_file(name, _torch_bytes(plain_state_dict(module)))
            for extra, data in adapter_files(name, module):
                self.write_file(extra, data)

    def remove(self, name: str) -> bool:
        """Remove the file ``name`` of the run directory; whether there was one."""
        if not self.writer or not os.path.isfile(self.file(name)) or not self.manifest.owns(name):
            return False
        os.remove(self.file(name))
        self.manifest.discard(name)
        return True

    def write_file(self, name: str, data: bytes) -> None:
        """The run file ``name`` (``a/b.pt``), listed in the manifest first, written atomically:
        the one way anything is written into a run directory."""
        path = self.claim(name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        atomic_write(path, data)

    # ---------------------------------------------------------------- checkpoint, student
    def write_checkpoint(self, *, fingerprint: str, epoch: int, step: int, distiller, stage: str,
                         optimization: Dict[str, Any], rng: Dict[str, Any], teachers, history,
                         config: Dict[str, Any], models: Dict[str, Any],
                         within: Optional[Dict[str, Any]] = None,
                         validations: Optional[List[Dict[str, Any]]] = None,
                         world: int = 1, shards: Optional[Dict[str, Any]] = None) -> None:
        """student.pt, models/NAME.pt of every trained model, then checkpoint.pt (everything to
        resume from the end of ``epoch``): the checkpoint last, as the epoch's commit point.
        ``within`` (``{"steps", "sums"}``, checkpoint_every): the checkpoint alone, ``steps`` into
        the epoch after ``epoch``, with the loss sums of those steps. ``shards``: the models' and
        optimizers' state is in DCP shards (:mod:`.dist_checkpoint`), which the checkpoint names."""
        if not self.writer:
            return
        if within is None:
            self.write_weights("student.pt", distiller.student)
            for name, model in models.items():
                self.write_weights(os.path.join("models", f"{name}.pt"), model)
        state = {
            "format": CHECKPOINT_FORMAT, "spec": fingerprint, "epoch": epoch, "step": step, "stage": stage,
            "distiller": {} if shards else distiller.state_dict(), "optimization": {} if shards else optimization,
            "rng": rng, "teachers": teachers, "history": history, "config": config, "world": world,
        }
        for key, value in (("within", within), ("shards", shards)):
            if value is not None:
                state[key] = value
        if validations:
            state["validations"] = validations  # val_every's rows so far (validation.jsonl)
        self.write_file("checkpoint.pt", _torch_bytes(state))

    def write_connectors(self, stage: str, connectors) -> None:
        """connectors/STAGE.pt: every connector's state dict at the end of ``stage``."""
        if not self.writer:
            return
        state = {name: plain_state_dict(c) for name, c in connectors.items()}
        self.write_file(os.path.join("connectors", f"{stage}.pt"), _torch_bytes(state))

    def read_checkpoint(self, fingerprint: str, device) -> Dict[str, Any]:
        """checkpoint.pt, checked to be a well-formed kdsl run checkpoint of the same spec (KD703
        naming what is wrong otherwise)."""
        state = self.load_run_checkpoint(device)
        if state["spec"] != fingerprint:
            raise error("KD703", f"{self.file('checkpoint.pt')} was written by a different spec",
                        hint="resume with the spec that started the run, or start a new run with --out")
        return state

    def load_run_checkpoint(self, device) -> Dict[str, Any]:
        """checkpoint.pt, checked to be a well-formed kdsl run checkpoint (of any spec)."""
        from kdsl.io.checkpoint_file import load_checkpoint

        path = self.file("checkpoint.pt")
        if not os.path.isfile(path):
            raise error("KD703", f"nothing to resume: {path} does not exist",
                        hint="a run writes it at the end of its first epoch")
        from kdsl.training.dist_checkpoint import merge_shards

        state = merge_shards(self.path, load_checkpoint(path, code="KD703", map_location=device), path)
        if isinstance(state, dict) and state.get("format") == "kdsl-run/1":
            state = from_format_1(state)
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
            found = state.get("format") if isinstance(state, dict) else type(state).__name__
            raise error("KD703", f"{path} is not a kdsl run checkpoint (format {found!r}, "
                        f"expected {CHECKPOINT_FORMAT!r})", hint=DAMAGED_HINT)
        problem = checkpoint_problem(state)
        if problem:
            raise error("KD703", f"{path} is damaged: {problem}", hint=DAMAGED_HINT)
        return state

    def has_checkpoint(self) -> bool:
        return os.path.isfile(self.file("checkpoint.pt"))

    def read_student_into(self, student) -> None:
        """The trained student.pt into ``student`` (for ``--eval-only``)."""
        from kdsl.io.weights import load_into

        path = self.file("student.pt")
        if not os.path.isfile(path):
            raise error("KD703", f"no trained student in {self.path} (student.pt is missing)",
                        hint="train first, or point --out at a run directory")
        load_into(student, path, what="student")

    def read_model_into(self, model, name: str) -> None:
        """models/NAME.pt into ``model`` (for ``--eval-only``)."""
        from kdsl.io.weights import load_into

        path = os.path.join(self.file("models"), f"{name}.pt")
        if not os.path.isfile(path):
            raise error("KD703", f"no trained '{name}' in {self.path} (models/{name}.pt is missing)",
                        hint="train first, or point --out at a run directory")
        load_into(model, path, what=f"model '{name}'")


def _read_bytes(path: str) -> Optional[bytes]:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError:
        return None


def _metrics_texts(history: List[Dict[str, Any]]) -> Tuple[bytes, bytes]:
    """(metrics.jsonl, metrics.csv) of ``history``: one row per epoch, columns in first-seen order."""
    lines = _jsonl(history).decode()
    columns: List[str] = []
    for r in history:
        columns += [k for k in r if k not in columns]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for r in history:
        writer.writerow({k: _csv_value(r.get(k)) for k in columns})
    return lines.encode(), buffer.getvalue().encode()


def _jsonl(rows: List[Dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r, sort_keys=False) + "\n" for r in rows).encode()

