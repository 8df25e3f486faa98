"""The verifier's checks of the ``train { }`` block: known settings, their types and ranges, the
data reference, optimizer and lr-schedule calls checked against the catalog."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional

from kdsl.catalog.types import BOOL, FLOAT, INT, STR, ValueType, choice, optional
from kdsl.core.diagnostics import Note
from kdsl.core.resolve import REF_PATTERN
from kdsl.core.suggest import did_you_mean
from kdsl.lang import ir
from kdsl.lang.literal import try_literal


@dataclass(frozen=True)
class TrainKey:
    type: Optional[ValueType]  # None: a call checked by ``kind``
    doc: str
    kind: Optional[str] = None  # registry kind for call values
    minimum: Optional[int] = None


TRAIN_SETTINGS: Dict[str, TrainKey] = {
    "data": TrainKey(None, 'the data: dataset("pkg.module:factory", batch_size=64, ...) or "pkg.module:factory"'),
    "epochs": TrainKey(INT, "number of epochs", minimum=1),
    "batch_size": TrainKey(INT, "samples per batch (per process)", minimum=1),
    "optimizer": TrainKey(None, "the optimizer, e.g. sgd(lr=0.05, momentum=0.9)", kind="optimizer"),
    "lr_schedule": TrainKey(None, "the learning-rate schedule, e.g. cosine()", kind="lr_schedule"),
    "seed": TrainKey(INT, "random seed", minimum=0),
    "device": TrainKey(choice("cpu", "cuda", "auto"), "where to train"),
    "amp": TrainKey(optional(choice("bf16", "fp16")), "mixed precision"),
    "out": TrainKey(STR, "output directory"),
    "num_workers": TrainKey(INT, "data-loader worker processes", minimum=0),
    "grad_clip": TrainKey(optional(FLOAT), "clip the gradient norm to this value"),
    "eval_teachers": TrainKey(BOOL, "evaluate the teachers once per run"),
    "threads": TrainKey(INT, "torch's CPU threads (small models on a busy machine train faster on 1)", minimum=1),
}
DATA_LOADER_OPTIONS = ("batch_size", "num_workers", "drop_last")



class TrainBlockChecks:
    """Mixed into the Verifier (which provides ``diags``, ``_component``, ``_bind_call`` and
    ``_no_repeated_keywords``)."""

    def _check_train_block(self, block: ir.TrainDecl) -> None:
        seen: Dict[str, ir.TrainSetting] = {}
        for s in block.settings:
            if s.key in seen:
                self.diags.error("KD214", f"'{s.key}' is set twice in this train block", s.key_span,
                                 notes=[Note(message=f"'{s.key}' first set", span=seen[s.key].key_span)])
            seen[s.key] = s

    # ================================================================ train block
    def _verify_train(self, stmt: ir.TrainDecl, use):
        for s in stmt.settings:
            key = TRAIN_SETTINGS.get(s.key)
            if key is None:
                self.diags.error("KD214", f"unknown train setting '{s.key}'", s.key_span,
                                 hint=did_you_mean(s.key, list(TRAIN_SETTINGS))
                                 or "settings: " + ", ".join(TRAIN_SETTINGS))
                continue
            if s.key == "data":
                self._verify_data(s.value)
            elif key.kind is not None:
                if not isinstance(s.value, ir.Call):
                    self.diags.error("KD214", f"'{s.key}' takes a call, e.g. {key.doc.split('e.g. ')[-1]}",
                                     s.value.span)
                    continue
                code = "KD304" if key.kind == "optimizer" else "KD310"
                component = self._component(key.kind, s.value, code, key.kind.replace("_", " "))
                if component is not None:
                    self._bind_call(component, s.value, use, inputs=False, resolve=False)
            else:
                ok, value = try_literal(s.value)
                if not ok or not key.type.accepts(value):
                    self.diags.error("KD214", f"'{s.key}' must be {key.type.describe()}", s.value.span,
                                     hint=key.doc)
                elif key.minimum is not None and value is not None and value < key.minimum:
                    self.diags.error("KD214", f"'{s.key}' must be at least {key.minimum}", s.value.span)
        return stmt

    def _verify_data(self, value) -> None:
        if isinstance(value, ir.Const) and isinstance(value.value, str):
            ref = value.value
            span = value.span
        elif isinstance(value, ir.Call) and value.func == "dataset" and value.args and \
                isinstance(value.args[0], ir.Const) and isinstance(value.args[0].value, str):
            ref = value.args[0].value
            span = value.args[0].span
            self._no_repeated_keywords(value.kwargs)
            for extra in tuple(value.args[1:]) + tuple(k.value for k in value.kwargs):
                if not try_literal(extra)[0]:
                    self.diags.error("KD214", "dataset options must be literal values", extra.span)
        else:
            self.diags.error("KD214", "'data' takes dataset(\"pkg.module:factory\", ...) or a reference string",
                             value.span, hint='e.g. data = dataset("kdsl.data:digits", batch_size=64)')
            return
        if not REF_PATTERN.match(ref):
            self.diags.error("KD405", f"malformed data reference \"{ref}\"", span,
                             hint='write it as "pkg.module:factory"')
