"""Parameter groups of a built-in optimizer by name pattern (mmengine's ``custom_keys``):
``sgd(lr=0.01, groups=[group("student.layer1.*", lr_mult=0.1), group("*.bias", decay_mult=0.0)])``.

A parameter joins the first group whose pattern (``fnmatch``, on the distiller's parameter names:
``student.layer1.0.conv1.weight``) it matches; its lr is the optimizer's x lr_mult and its weight
decay the optimizer's x decay_mult. Parameters no pattern matches are grouped by role as the
optimizer's options say (bias_lr_mult, ...). The verifier checks each ``group(...)`` here; the
run's options hold ``groups`` as ``[{"pattern": ..., "lr_mult": ..., "decay_mult": ...}]``.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

from kdsl.lang import ir
from kdsl.lang.literal import try_literal

GROUPS = "groups"  # the optimizer keyword that takes the list of group(...) calls
GROUP = "group"
_MULTS = ("lr_mult", "decay_mult")
_EXAMPLE = 'groups=[group("student.layer1.*", lr_mult=0.1), group("*.bias", decay_mult=0.0)]'


def split_groups(call: ir.Call) -> Tuple[ir.Call, Optional[ir.Keyword]]:
    """An optimizer call without its ``groups=`` keyword, and that keyword."""
    kw = next((k for k in call.kwargs if k.name == GROUPS), None)
    if kw is None:
        return call, None
    return call.model_copy(update={"kwargs": tuple(k for k in call.kwargs if k is not kw)}), kw


def verify_groups(diags, component, kw: ir.Keyword) -> None:
    """``groups=[group("PATTERN", lr_mult=X, decay_mult=Y), ...]`` of a built-in optimizer."""
    if component is not None and component.option("bias_lr_mult") is None:
        diags.error("KD214", f"'{component.name}' takes no groups: parameter groups are an option of the "
                    "built-in optimizers (sgd, adam, adamw)", kw.span)
        return
    items = kw.value.items if isinstance(kw.value, ir.ListExpr) else None
    if items is None:
        diags.error("KD214", "groups= takes a list of group(...) calls", kw.value.span, hint=f"e.g. {_EXAMPLE}")
        return
    for item in items:
        _verify_group(diags, item)


def _verify_group(diags, item) -> None:
    if not (isinstance(item, ir.Call) and item.func == GROUP and item.method is None):
        diags.error("KD214", "each item of groups= is a group(\"PATTERN\", lr_mult=..., decay_mult=...)",
                    item.span, hint=f"e.g. {_EXAMPLE}")
        return
    if len(item.args) != 1 or not (isinstance(item.args[0], ir.Const) and isinstance(item.args[0].value, str)):
        diags.error("KD214", "group(...) takes one pattern of parameter names, a string, first",
                    item.span, hint='e.g. group("student.fc.*", lr_mult=10.0)')
    for k in item.kwargs:
        ok, value = try_literal(k.value)
        if k.name not in _MULTS:
            diags.error("KD305", f"'group' has no option '{k.name}'", k.span, hint="options: lr_mult, decay_mult")
        elif not ok or isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            diags.error("KD309", f"'{k.name}' of 'group' must be a number >= 0", k.value.span)


def groups_value(kw: ir.Keyword) -> List[Dict[str, Any]]:
    """The run's value of a verified ``groups=``."""
    return [{"pattern": item.args[0].value, **{m: 1.0 for m in _MULTS},
             **{k.name: float(try_literal(k.value)[1]) for k in item.kwargs}} for item in kw.value.items]


def group_calls(spec) -> List[ir.Call]:
    """Every ``group(...)`` the spec writes (where a warning about a pattern points)."""
    from kdsl.lang.visit import find

    return [c for c in find(spec, ir.Call) if c.func == GROUP and c.args and isinstance(c.args[0], ir.Const)]
