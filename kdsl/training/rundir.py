"""The run directory, and the format of what is in it, written and read here only.

``checkpoint.pt`` holds everything needed to resume exactly as plain data under
``"format": "kdsl-run/2"``, readable with ``torch.load(weights_only=True)``: ``epoch`` (epochs
done), ``step``, ``stage`` (the stage of the last epoch done), ``distiller`` (the distiller's
state dict: trained models, connectors, learning losses), ``optimization`` (``{stage: {phase:
{"optimizer", "scheduler", "scaler"}}}``: every phase of that stage), ``rng``, ``teachers``,
``history``, ``config`` and ``spec`` (the spec's fingerprint). A ``kdsl-run/1`` checkpoint (one
optimizer, before stages) reads as stage "main", phase "step".

``student.pt`` is the student's plain state dict; ``models/NAME.pt`` every trained model's
(the student, trainable teachers, generators); ``connectors/STAGE.pt`` the connectors after stage
STAGE, ``{NAME: state dict}`` (``connector NAME = ... from "RUN/connectors/STAGE.pt"`` loads
NAME's); ``metrics.jsonl`` /
``metrics.csv`` one row per epoch; ``curves.png``; ``summary.json``. Every file is written
atomically, and only by rank 0.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import os
from typing import Any, Dict, List, Optional

from kdsl.core.diagnostics import error
from kdsl.lang import ir
from kdsl.training.report import RunFiles

CHECKPOINT_FORMAT = "kdsl-run/2"


def atomic_write(path: str, data: bytes) -> None:
    """Write a file so that a crash leaves either the old or the new version, never half of one."""
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:  # a failed write (disk full, interrupt) leaves no temporary file behind
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def atomic_torch_save(obj: Any, path: str) -> None:
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write(path, buffer.getvalue())


def spec_fingerprint(spec: ir.Spec) -> str:
    """Identifies the spec a checkpoint was trained with (spans excluded: moving text is fine)."""
    from kdsl.runtime.distiller import _strip_spans

    return hashlib.sha256(_strip_spans(spec).encode()).hexdigest()[:16]


def _csv_value(v: Any) -> Any:
    if isinstance(v, float):
        return f"{v:.6g}"
    return "" if v is None else v


class RunDir:
    """A run directory; ``writer`` is False on every rank but 0, which then writes nothing."""

    def __init__(self, path: str, writer: bool = True) -> None:
        self.path = path
        self.writer = writer
        self.curves_written = False

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    def files(self) -> RunFiles:
        return RunFiles(out=self.path, checkpoint=self.file("checkpoint.pt"), student=self.file("student.pt"),
                        metrics_jsonl=self.file("metrics.jsonl"), metrics_csv=self.file("metrics.csv"),
                        summary=self.file("summary.json"),
                        curves=self.file("curves.png") if os.path.isfile(self.file("curves.png")) else None,
                        models=self._listing("models"), connectors=self._listing("connectors"))

    def _listing(self, folder: str) -> Dict[str, str]:
        """NAME -> path of each FOLDER/NAME.pt present."""
        where = self.file(folder)
        if not os.path.isdir(where):
            return {}
        return {n[:-3]: os.path.join(where, n) for n in sorted(os.listdir(where)) if n.endswith(".pt")}

    # ---------------------------------------------------------------- set-up
    def prepare(self, *, resume: bool, eval_only: bool, overwrite: bool) -> None:
        """Refuse to start over an existing run (unless ``overwrite``), or to resume or evaluate
        nothing; check that the directory can be written."""
        if resume or eval_only:
            if not os.path.isdir(self.path):
                raise error("KD703", f"no run to {'resume' if resume else 'evaluate'} in {self.path}",
                            hint="train first, or point --out at the run's directory")
            return
        if os.path.exists(self.file("checkpoint.pt")) and not overwrite:
            raise error("KD706", f"{self.path} already holds a run",
                        hint="--resume continues it, --out DIR starts a new one elsewhere, "
                        "--overwrite replaces it")
        if self.writer:
            try:
                os.makedirs(self.path, exist_ok=True)
                probe = self.file(f".write-test-{os.getpid()}")
                with open(probe, "w") as fh:
                    fh.write("")
                os.remove(probe)
            except OSError as exc:
                raise error("KD706", f"cannot write to {self.path}: {exc.strerror or exc}") from None

    # ---------------------------------------------------------------- metrics, curves, summary
    def write_metrics(self, history: List[Dict[str, Any]]) -> None:
        """metrics.jsonl and metrics.csv: one row per epoch, the columns in first-seen order."""
        if not self.writer:
            return
        lines = "".join(json.dumps(r, sort_keys=False) + "\n" for r in history)
        atomic_write(self.file("metrics.jsonl"), lines.encode())
        columns: List[str] = []
        for r in history:
            columns += [k for k in r if k not in columns]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for r in history:
            writer.writerow({k: _csv_value(r.get(k)) for k in columns})
        atomic_write(self.file("metrics.csv"), buffer.getvalue().encode())

    def write_curves(self, history: List[Dict[str, Any]], teachers) -> Optional[str]:
        """curves.png; None, or why it was skipped (matplotlib not installed)."""
        if not self.writer or not history:
            return None
        from kdsl.training.curves import plot_curves

        png = plot_curves(history, teachers)
        if png is None:
            return "matplotlib is not installed: skipped curves.png (pip install 'kdsl[plot]')"
        atomic_write(self.file("curves.png"), png)
        return None

    def write_summary(self, summary: Dict[str, Any]) -> None:
        if self.writer:
            atomic_write(self.file("summary.json"), json.dumps(summary, indent=2).encode())

    # ---------------------------------------------------------------- checkpoint, student
    def write_checkpoint(self, *, fingerprint: str, epoch: int, step: int, distiller, stage: str,
                         optimization: Dict[str, Any], rng: Dict[str, Any], teachers, history,
                         config: Dict[str, Any], models: Dict[str, Any]) -> None:
        """checkpoint.pt (everything to resume from the end of ``epoch``), student.pt and
        models/NAME.pt of every trained model."""
        if not self.writer:
            return
        state = {
            "format": CHECKPOINT_FORMAT, "spec": fingerprint, "epoch": epoch, "step": step, "stage": stage,
            "distiller": distiller.state_dict(), "optimization": optimization,
            "rng": rng, "teachers": teachers, "history": history, "config": config,
        }
        atomic_torch_save(state, self.file("checkpoint.pt"))
        atomic_torch_save(_plain(distiller.student), self.file("student.pt"))
        if models:
            os.makedirs(self.file("models"), exist_ok=True)
        for name, model in models.items():
            atomic_torch_save(_plain(model), os.path.join(self.file("models"), f"{name}.pt"))

    def write_connectors(self, stage: str, connectors) -> None:
        """connectors/STAGE.pt: every connector's state dict at the end of ``stage``."""
        if not self.writer:
            return
        os.makedirs(self.file("connectors"), exist_ok=True)
        state = {name: _plain(c) for name, c in connectors.items()}
        atomic_torch_save(state, os.path.join(self.file("connectors"), f"{stage}.pt"))

    def read_checkpoint(self, fingerprint: str, device) -> Dict[str, Any]:
        """checkpoint.pt, checked to be a kdsl run checkpoint of the same spec (KD703 otherwise)."""
        import torch

        path = self.file("checkpoint.pt")
        if not os.path.isfile(path):
            raise error("KD703", f"nothing to resume: {path} does not exist",
                        hint="a run writes it at the end of its first epoch")
        try:
            state = torch.load(path, map_location=device, weights_only=True)
        except Exception as exc:  # noqa: BLE001
            from kdsl.compiler.weights import load_error_text

            raise error("KD703", f"cannot read {path}: {load_error_text(exc)}") from None
        if isinstance(state, dict) and state.get("format") == "kdsl-run/1":
            state = _from_format_1(state)
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
            raise error("KD703", f"{path} is not a kdsl run checkpoint")
        if state.get("spec") != fingerprint:
            raise error("KD703", f"{path} was written by a different spec",
                        hint="resume with the spec that started the run, or start a new run with --out")
        return state

    def read_student_into(self, student) -> None:
        """The trained student.pt into ``student`` (for ``--eval-only``)."""
        from kdsl.compiler.weights import load_into

        path = self.file("student.pt")
        if not os.path.isfile(path):
            raise error("KD703", f"no trained student in {self.path} (student.pt is missing)",
                        hint="train first, or point --out at a run directory")
        load_into(student, path, what="student")

    def read_model_into(self, model, name: str) -> None:
        """models/NAME.pt into ``model`` (for ``--eval-only``)."""
        from kdsl.compiler.weights import load_into

        path = os.path.join(self.file("models"), f"{name}.pt")
        if not os.path.isfile(path):
            raise error("KD703", f"no trained '{name}' in {self.path} (models/{name}.pt is missing)",
                        hint="train first, or point --out at a run directory")
        load_into(model, path, what=f"model '{name}'")


def _plain(module) -> Dict[str, Any]:
    """A module's state dict as plain CPU tensors (loadable without kdsl)."""
    return {k: v.detach().cpu() for k, v in module.state_dict().items()}


def _from_format_1(state: Dict[str, Any]) -> Dict[str, Any]:
    """A checkpoint of the single-optimizer format: its optimizer is that of stage "main", phase
    "step" (what a spec without stages or phases runs)."""
    phase = {k: state.get(k) for k in ("optimizer", "scheduler", "scaler")}
    out = {k: v for k, v in state.items() if k not in phase}
    out.update(format=CHECKPOINT_FORMAT, stage="main", optimization={"main": {"step": phase}})
    return out
