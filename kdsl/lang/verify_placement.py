"""The check of a spec's FSDP placement (``strategy = "fsdp"``, ``replicated``, ``offloaded``):
each placement names a model of the spec, once; only a frozen teacher is offloaded; and a
``param`` record does not read a parameter that FSDP holds as one shard per process. The trainer
runs the same check with the run's settings (``--strategy`` may come from the command line)."""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

from kdsl.core.diagnostics import Diagnostics, Note
from kdsl.core.span import Span
from kdsl.lang import ir
from kdsl.lang.literal import try_literal

PLACEMENT_SETTINGS = ("replicated", "offloaded")


def _literal(expr):
    ok, value = try_literal(expr)
    return value if ok else None


def _named(value) -> List[Tuple[str, Optional[Span]]]:
    """The strings of a list setting with where each stands (the literal's span otherwise)."""
    items = value.items if isinstance(value, ir.ListExpr) else ()
    if items:
        return [(v, item.span) for item in items for v in [_literal(item)] if isinstance(v, str)]
    literal = _literal(value)
    return [(v, value.span) for v in literal if isinstance(v, str)] if isinstance(literal, list) else []


def check_placement(diags: Diagnostics, program, strategy: Optional[str] = None,
                    given: Optional[Dict[str, List[str]]] = None) -> None:
    """KD226-KD229 for ``program`` (the verified statements). ``strategy`` and ``given``
    (placement setting -> model names) replace the spec's values where a run was given others."""
    train = next((s for s in program if isinstance(s, ir.TrainDecl)), None)
    settings = {s.key: s for s in train.settings} if train is not None else {}
    if strategy is None:
        strategy = _literal(settings["strategy"].value) if "strategy" in settings else "ddp"
    models = {s.name: s for s in program if isinstance(s, ir.ModelDecl)}
    placed: Dict[str, Tuple[str, Optional[Span]]] = {}
    for key in PLACEMENT_SETTINGS:
        if given is not None and given.get(key) is not None:
            names = [(n, None) for n in given[key]]
        else:
            names = _named(settings[key].value) if key in settings else []
        for name, span in names:
            _check_one(diags, key, name, span, models, placed)
    if strategy != "fsdp":
        return
    for record in (s for s in program if isinstance(s, ir.RecordDecl) and s.what == "param"):
        if record.model in models and placed.get(record.model, ("sharded",))[0] != "replicated":
            diags.error("KD228", f"record '{record.name}' reads a parameter of '{record.model}', which "
                        "fsdp shards: each process holds only a piece of it", record.span,
                        hint=f"hold the model whole: replicated = [\"{record.model}\"] in the train block")


def _check_one(diags: Diagnostics, key: str, name: str, span: Optional[Span],
               models: Dict[str, ir.ModelDecl], placed: Dict[str, Tuple[str, Optional[Span]]]) -> None:
    model = models.get(name)
    if model is None or model.role == "generator":
        known = [n for n, m in models.items() if m.role != "generator"]
        diags.error("KD226", f"{key} names '{name}', which is no student or teacher of this spec", span,
                    hint=f"the models: {', '.join(known)}" if known else None)
        return
    if name in placed:
        diags.error("KD229", f"'{name}' is placed twice ({placed[name][0]} and {key})", span,
                    notes=[Note(message=f"'{name}' first placed", span=placed[name][1])]
                    if placed[name][1] is not None else [])
        return
    placed[name] = (key, span)
    if key == "offloaded" and not model.frozen:
        diags.error("KD227", f"'{name}' is trained, so its parameters cannot be offloaded to the CPU", span,
                    hint="offload only frozen teachers; a trained model is sharded (the default) or replicated")
