"""Verified spec + real models -> :class:`~kdsl.runtime.distiller.Distiller`, as named passes.

Each pass takes the :class:`~kdsl.compiler.plan.Plan` and returns it with its part filled in;
:data:`PASSES` is the order, readable in one line:

1. ``import_plugins``, ``build_models`` (:mod:`.bind_models`): models passed by keyword or built
   from the spec's factory; checkpoints loaded; frozen teachers put in eval mode without
   gradients (undone on close); ``bind_generation`` (:mod:`.generation`): the ``generate``
   statement's model can generate. Errors stop here: the later passes need the models.
2. ``install_recorders``, ``install_deliveries`` (:mod:`.install`): every path resolved against
   ``named_modules()`` / ``named_parameters()`` or by import, and its hook or patch installed.
   ``build_functions`` (:mod:`.functions`): each tensor function (``detach``, ``noise``) built
   once; ``build_procedure`` (:mod:`.procedure`): the stages and phases, what each runs and trains.
3. ``dry_run`` (:mod:`.dry_run`): with ``example_input`` (or the spec's ``input``, a generator's
   output), every model a phase runs, run once (no grad; buffers and RNG restored): every
   record's shape, and records that in-place operations overwrite.
4. ``build_loss_graph``, ``check_shapes``, ``build_unused_connectors`` (:mod:`.loss_graph`): each
   loss's inputs evaluated by the one expression interpreter on the dry run's values, connectors
   built when their input shapes are known, channel counts inferred, losses and weights built,
   every loss's inputs checked against its shape rules (with a dry run; otherwise at the first
   step).
5. ``load_connector_weights``, ``resolve_inits`` (:mod:`.params`), ``resolve_scopes``
   (:mod:`.procedure`): connector weights ``from`` files, ``init`` modules matched, the scopes of
   ``optimize`` and ``freeze`` found in the models and connectors.
6. ``compile_models`` (:mod:`.compile_models`): with ``compile_models=``, torch.compile of the
   student and the frozen teachers, hooks in place; ``plan_truncation`` (:mod:`.truncate`): which
   passes stop once their records are taken.

All problems found are reported together, located in the spec. If compiling fails, everything
installed so far is removed again and passed-in models get their weights back.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Dict, Optional, Sequence

import torch
from torch import nn

from kdsl.compiler.bind_models import build_models, import_plugins, stop_if_errors
from kdsl.compiler.compile_models import compile_models
from kdsl.compiler.dry_run import dry_run
from kdsl.compiler.functions import build_functions
from kdsl.compiler.generation import bind_generation
from kdsl.compiler.install import install_deliveries, install_recorders
from kdsl.compiler.loss_graph import build_loss_graph, build_unused_connectors, check_shapes
from kdsl.compiler.params import load_connector_weights, resolve_inits
from kdsl.compiler.plan import Plan, Request, Undo
from kdsl.compiler.procedure import build_procedure, resolve_scopes
from kdsl.compiler.truncate import plan_truncation
from kdsl.core.diagnostics import Diagnostics
from kdsl.lang import ir
from kdsl.runtime.compiled import Compiled, Cuts
from kdsl.runtime.distiller import Distiller

Pass = Callable[[Plan], Plan]

PASSES: Sequence[Pass] = (
    import_plugins, build_models, bind_generation, stop_if_errors, build_functions, build_procedure,
    install_recorders, install_deliveries, dry_run,
    build_loss_graph, check_shapes, build_unused_connectors, stop_if_errors,
    load_connector_weights, resolve_scopes, resolve_inits, stop_if_errors,
    compile_models, plan_truncation,
)


def compile(spec: "ir.Spec | str | os.PathLike[str]", *, example_input: Any = None,
            example_batch: Optional[Dict[str, Any]] = None, device: Any = None,
            truncate: bool = True, compile_models: Any = False, load_weights: Sequence[str] = (),
            batch_size: Optional[int] = None, params: Any = None,
            **models: nn.Module) -> Distiller:
    """Bind a spec to models and return a :class:`~kdsl.runtime.distiller.Distiller`.

    ``models`` are passed by their names in the spec (``student=..., teacher=...``) and override
    the spec's factories; a passed model keeps its own weights (the spec's ``from "FILE"`` is
    not read for it) unless its name is in ``load_weights``. ``example_input`` (a tensor, a tuple of positional arguments, or a dict
    of keyword arguments) enables the dry run: shapes are checked and channel counts inferred
    before any training step; ``example_batch`` supplies ``batch.NAME`` fields to it.
    ``device`` moves every model there once built (before the dry run).

    ``truncate`` (default on): a pass whose remaining forward no loss needs stops once its
    records are taken (``kdsl explain`` says where; :mod:`kdsl.compiler.truncate`).
    ``compile_models``: ``True`` (or a dict of ``torch.compile`` options, e.g.
    ``{"backend": "aot_eager"}``) compiles the student and the frozen teachers with the hooks in
    place; where compiling is unavailable, KD708 is warned and they run eagerly.
    ``batch_size``: the rows a generated input (``noise(...)``) draws per step (default: the
    spec's train block; ``kdsl.train`` gives its resolved setting). ``params`` (``{"tau": 2}``)
    gives the spec's params these values, checked as the spec's own.
    """
    if not isinstance(spec, ir.Spec):
        from kdsl.lang.loader import load

        spec = load(spec, params)
    elif params:
        from kdsl.lang.loader import with_params

        spec = with_params(spec, params)
    request = Request(spec, dict(models), example_input, dict(example_batch or {}),
                      torch.device(device) if device is not None else None,
                      truncate=bool(truncate), compile_models=compile_models,
                      load_given=frozenset(load_weights), batch_size=batch_size)
    return finish(run_passes(start(request)))


def start(request: Request) -> Plan:
    """The empty plan the passes fill in."""
    return Plan(request=request, diags=Diagnostics(dict(request.spec.sources)))


def run_passes(plan: Plan, passes: Sequence[Pass] = PASSES) -> Plan:
    """Run ``passes`` in order. If one raises (the spec has errors, or the user interrupts),
    everything installed so far is undone before the exception propagates."""
    try:
        for p in passes:
            plan = p(plan)
        return plan
    except BaseException:
        plan.undo.fail()
        raise


def finish(plan: Plan) -> Distiller:
    """The distiller of a finished plan; it owns the plan's hooks and patches from now on."""
    try:
        plan.values = {}  # the dry run's tensors are not kept alive by the plan
        for lp in plan.losses.values():
            lp.values = {}
        distiller = Distiller(hand_off(plan), plan=plan)
    except BaseException:
        plan.undo.fail()
        raise
    plan.undo = Undo()  # the distiller's close() undoes it all now
    return distiller


def hand_off(plan: Plan) -> Compiled:
    """What the runtime gets of a finished plan (:class:`~kdsl.runtime.compiled.Compiled`)."""
    cuts: Cuts = {}
    for (stage, phase, model), cut in plan.cuts.items():
        if cut.stops:
            needed = frozenset(plan.records[r].recorder for r in cut.needed)
            cuts.setdefault((stage, phase), {})[model] = needed
    return Compiled(
        spec=plan.spec, models=plan.models, used_teachers=plan.used_teachers, recorders=plan.recorders,
        deliveries=[d.delivery for d in plan.deliveries], connectors=plan.connector_modules,
        terms=plan.terms, state=plan.state, procedure=plan.procedure,
        batch_size=plan.request.batch_size or _batch_size(plan.spec),
        modules=plan.modules, functions=plan.functions, scopes=plan.scopes,
        inits=[(target, source) for _, target, source in plan.inits], cuts=cuts,
        cleanups=list(plan.undo.on_close), rollout=plan.rollout)


def _batch_size(spec: ir.Spec) -> int:
    """The train block's ``batch_size`` (the rows ``noise(...)`` draws), else the default."""
    from kdsl.catalog.settings import BY_NAME
    from kdsl.lang.literal import try_literal

    setting = spec.train.get("batch_size")
    ok, value = try_literal(setting.value) if setting is not None else (False, None)
    if ok and isinstance(value, int):
        return value
    return int(BY_NAME["batch_size"].default)
