"""The verifier's checks of the ``train { }`` block, derived from the settings table
(:mod:`kdsl.catalog.settings`): known settings, their types and ranges, the data reference and the
data options given in ``dataset(...)``, optimizer and lr-schedule calls checked against the catalog."""

from __future__ import annotations

from typing import Dict, Optional

from kdsl.catalog.settings import DATA_OPTIONS, SPEC_SETTINGS, Setting
from kdsl.core.diagnostics import Note
from kdsl.core.resolve import REF_PATTERN, refusal
from kdsl.core.suggest import did_you_mean
from kdsl.lang import ir
from kdsl.lang.literal import try_literal
from kdsl.lang.lr_schedule import is_chain, verify_chain
from kdsl.lang.param_groups import split_groups, verify_groups

_UNKNOWN_CODE = {"optimizer": "KD304", "lr_schedule": "KD310", "batch_transform": "KD320"}


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
        settings = []
        for s in stmt.settings:
            setting = SPEC_SETTINGS.get(s.key)
            if setting is None:
                self.diags.error("KD214", f"unknown train setting '{s.key}'", s.key_span,
                                 hint=did_you_mean(s.key, list(SPEC_SETTINGS))
                                 or "settings: " + ", ".join(SPEC_SETTINGS))
            elif setting.call == "data":
                self._verify_data(s.value)
            elif setting.call is not None:
                bound_call = self._verify_call_setting(setting, s.value, use)
                s = s if bound_call is None else s.model_copy(update={"value": bound_call})
            else:
                self._verify_value(setting, s.key, s.value)
                if setting.reference:
                    self._verify_reference(setting, s.value)
            settings.append(s)
        return stmt.model_copy(update={"settings": tuple(settings)})

    def _verify_call_setting(self, setting: Setting, value, use) -> Optional[ir.Call]:
        """An optimizer or schedule call checked; the call carrying its binding, or None."""
        if not isinstance(value, ir.Call):
            self.diags.error("KD214", f"'{setting.name}' takes a call, e.g. {setting.help.split('e.g. ')[-1]}",
                             value.span)
            return None
        kind = setting.call
        if kind == "lr_schedule" and is_chain(value):
            verify_chain(self, value, use)
            return None
        original = value
        value, groups = split_groups(value) if kind == "optimizer" else (value, None)
        component = self._component(kind, value, _UNKNOWN_CODE[kind], kind.replace("_", " "))
        if component is None:
            return None
        bound_call = self._bind_call(component, value, use, inputs=False, resolve=False)
        if groups is not None:
            verify_groups(self.diags, component, groups)
        # the binding of the optimizer's own options, kept on the call as written (with its groups)
        return None if bound_call is None else original.model_copy(update={"bound": bound_call.bound})

    def _verify_reference(self, setting: Setting, value) -> None:
        """A reference setting (``collate = "pkg.module:function"``): well formed, never into a
        refused module; imported when the run starts."""
        if not (isinstance(value, ir.Const) and isinstance(value.value, str)):
            return  # its type was reported
        if not REF_PATTERN.match(value.value):
            self.diags.error("KD405", f"malformed {setting.reference} reference \"{value.value}\"", value.span,
                             hint='write it as "pkg.module:name"')
        elif refused := refusal(value.value, setting.reference, value.span):
            self.diags.add(refused)

    def _verify_value(self, setting: Setting, key: str, value) -> None:
        """A literal setting (or data option) against its type and range in the table."""
        ok, literal = try_literal(value)
        if not ok or not setting.type.accepts(literal):
            self.diags.error("KD214", f"'{key}' must be {setting.type.describe()}", value.span,
                             hint=setting.help)
            return
        problem = setting.range_problem(literal)
        if problem:
            self.diags.error("KD214", f"'{key}' {problem}", value.span)

    def _verify_data(self, value) -> None:
        if isinstance(value, ir.Const) and isinstance(value.value, str):
            ref = value.value
            span = value.span
        elif isinstance(value, ir.Call) and value.func == "dataset" and value.args and \
                isinstance(value.args[0], ir.Const) and isinstance(value.args[0].value, str):
            ref = value.args[0].value
            span = value.args[0].span
            self._verify_dataset_options(value)
        else:
            self.diags.error("KD214", "'data' takes dataset(\"pkg.module:factory\", ...) or a reference string",
                             value.span, hint='e.g. data = dataset("kdsl.data:digits", batch_size=64)')
            return
        if not REF_PATTERN.match(ref):
            self.diags.error("KD405", f"malformed data reference \"{ref}\"", span,
                             hint='write it as "pkg.module:factory"')
        elif refused := refusal(ref, "data", span):
            self.diags.add(refused)

    def _verify_dataset_options(self, call: ir.Call) -> None:
        """Options of ``dataset(...)`` are literals; the data-loader ones (batch_size, ...) are
        settings of the table and checked as such, the rest go to the data factory."""
        self._no_repeated_keywords(call.kwargs)
        if len(call.args) > 1:
            # a positional option would reach the factory by position, or (as before) be dropped
            # silently: neither is what the reader sees, so options are taken by name only
            extra = call.args[1:]
            ref = call.args[0].value if len(call.args[0].value) <= 60 else "pkg.module:factory"
            self.diags.error("KD306", f"dataset(...) takes the data reference, then options by name; "
                             f"{len(extra)} positional option{'s' if len(extra) > 1 else ''} here",
                             extra[0].span, hint=f'write name=value, e.g. dataset("{ref}", batch_size=64)')
        for kw in call.kwargs:
            if kw.name in DATA_OPTIONS:
                self._verify_value(DATA_OPTIONS[kw.name], kw.name, kw.value)
            elif not try_literal(kw.value)[0]:
                self.diags.error("KD214", "dataset options must be literal values", kw.value.span)
