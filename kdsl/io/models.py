"""Models named outside the spec: command-line references (``--student``, ``--teacher``,
``--model NAME=REF``) built from ``pkg.module:factory(k=v)`` text, and ``--teacher-ckpt``."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from torch import nn

from kdsl.core.diagnostics import error
from kdsl.io.checkpoint_file import check_checkpoint_path
from kdsl.lang import ir
from kdsl.lang.refs import call_factory, parse_call


@dataclass
class ModelChoice:
    """Models chosen outside the spec (None: keep the spec's own)."""

    student: Optional[str] = None
    teacher: Optional[str] = None
    models: List[str] = field(default_factory=list)
    teacher_ckpt: Optional[str] = None


def model_from_ref(text: str, what: str) -> nn.Module:
    ref, args, kwargs = parse_call(text, what)
    model = call_factory(ref, args, kwargs, what)
    if not isinstance(model, nn.Module):
        raise error("KD508", f"{what} '{text}' built a {type(model).__name__}, not an nn.Module")
    return model


def apply_model_choice(spec: ir.Spec, flags: ModelChoice) -> Tuple[ir.Spec, Dict[str, nn.Module]]:
    """Models named on the command line, and the spec with a --teacher-ckpt swapped in."""
    from kdsl.core.suggest import did_you_mean

    given: Dict[str, nn.Module] = {}
    teachers = spec.teachers
    names = [m.name for m in spec.models]

    def only_teacher(flag: str) -> ir.ModelDecl:
        if len(teachers) != 1:
            raise error("KD701", f"{flag} is for a spec with one teacher; this one has {len(teachers)}"
                        + (": " + ", ".join(t.name for t in teachers) if teachers else ""),
                        hint="use --model NAME=REF for a particular model" if teachers else
                        "the spec declares no teacher")
        return teachers[0]

    if flags.student:
        given[spec.student.name] = model_from_ref(flags.student, "--student")
    if flags.teacher:
        given[only_teacher("--teacher").name] = model_from_ref(flags.teacher, "--teacher")
    for item in flags.models:
        name, sep, ref = item.partition("=")
        name = name.strip()
        if not sep or not name or not ref.strip():
            raise error("KD701", f"--model takes NAME=REF, got '{item}'",
                        hint="e.g. --model t2=kdsl.zoo:wrn_40_2(num_classes=100)")
        if name not in names:
            raise error("KD701", f"--model {name}=...: the spec has no model '{name}'",
                        hint=did_you_mean(name, names) or "models: " + ", ".join(names))
        given[name] = model_from_ref(ref.strip(), f"--model {name}")
    if flags.teacher_ckpt:
        target = only_teacher("--teacher-ckpt")
        path = os.path.abspath(flags.teacher_ckpt)
        if "\x00" not in path and not os.path.exists(path):
            raise error("KD509", f"--teacher-ckpt: no such file: {flags.teacher_ckpt}")
        check_checkpoint_path(path)  # a directory, FIFO or device is refused here, unopened
        statements = tuple(s.model_copy(update={"checkpoint": path, "checkpoint_span": None})
                           if isinstance(s, ir.ModelDecl) and s.name == target.name else s
                           for s in spec.statements)
        new = spec.model_copy(update={"statements": statements})
        new._sources.update(spec.sources)
        spec = new
    return spec, given


def refuse_random_teachers(spec: ir.Spec, student=None, teacher=None, models=None,
                           teacher_ckpt: Optional[str] = None) -> None:
    """KD730 for a frozen teacher that would train from random weights (the rule of
    :mod:`kdsl.lang.teacher_weights`), with the caller's choices counted: a module passed in keeps
    its own weights, a ``--teacher``/``--model`` reference is judged by its options, and
    ``teacher_ckpt`` gives the single teacher weights. Raised before anything is built or written;
    ``allow_random_teacher`` skips the call."""
    from kdsl.lang.teacher_weights import HINT, loads_weights, ref_loads_weights

    given = {}  # teacher name -> a module (True) or a reference text
    teachers = spec.teachers
    if teacher is not None and len(teachers) == 1:
        given[teachers[0].name] = teacher
    items = models.items() if isinstance(models, dict) else \
        (tuple(s.strip() for s in str(m).partition("=")[::2]) for m in (models or ()))
    for name, value in items:
        given[name] = value
    for decl in teachers:
        if not decl.frozen or decl.checkpoint is not None or (teacher_ckpt and len(teachers) == 1):
            continue
        value = given.get(decl.name)
        if isinstance(value, nn.Module):
            continue
        if isinstance(value, str):
            ref, _, kwargs = parse_call(value, f"--model {decl.name}")
            if ref_loads_weights(ref, kwargs):
                continue
        elif loads_weights(decl):
            continue
        raise error("KD730", f"teacher '{decl.name}' loads no weights: training would distil from a "
                    "randomly initialised teacher", decl.name_span, hint=HINT)
