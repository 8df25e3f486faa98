"""``kdsl explain --world-size N [--strategy fsdp]``: the bytes each process will hold, per model,
before anything trains: parameters, gradients (of what trains) and optimizer state, under ddp
(every model whole on every process) or fsdp (each sharded model's parameters split over the
processes along their first dimension, as FSDP2 splits them; the largest piece, rank 0's, is
shown). Placements come from the spec's train block (``replicated``, ``offloaded``); connectors
and learning losses stay whole. Optimizer state counts the slots the spec's optimizer keeps per
parameter (Adam's two moments, SGD's momentum). Activations are measured, not estimated: one
training step on the dry run's batch, counting what each model's pass saves for backward
(:func:`activation_bytes`); every process keeps those of its own batch whatever the strategy."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

from kdsl.lang.literal import try_literal

# state tensors per parameter (the same shape as the parameter); a name not here: 2 (assumed)
OPTIMIZER_SLOTS = {"adam": 2, "adamw": 2, "lamb": 2, "adagrad": 1, "rmsprop": 1, "sgd": 0}


def spec_placements(spec) -> Dict[str, str]:
    out: Dict[str, str] = {}
    for key, placement in (("replicated", "replicated"), ("offloaded", "offloaded")):
        setting = spec.train.get(key) if spec.train is not None else None
        ok, names = try_literal(setting.value) if setting is not None else (False, None)
        for name in names if ok and isinstance(names, list) else []:
            out[name] = placement
    return out


def optimizer_slots(spec) -> Tuple[int, str]:
    """(state tensors per parameter, the optimizer's name) of the spec's train block (sgd by default)."""
    setting = spec.train.get("optimizer") if spec.train is not None else None
    call = setting.value if setting is not None else None
    name = getattr(call, "func", None) or "sgd"
    slots = OPTIMIZER_SLOTS.get(name, 2)
    if name == "sgd":
        momentum = next((kw.value for kw in getattr(call, "kwargs", ()) or () if kw.name == "momentum"), None)
        ok, value = try_literal(momentum) if momentum is not None else (False, 0)
        slots = 1 if ok and value else 0
    return slots, name


def shard_bytes(params, world: int) -> int:
    """Rank 0's bytes of ``params`` split along their first dimension over ``world`` processes."""
    total = 0
    for p in params:
        rows = p.shape[0] if p.dim() else 1
        per_row = p.numel() // rows if rows else 0
        total += -(-rows // world) * per_row * p.element_size()
    return total


LOSSES_ROW = "connectors, learning losses"


def activation_bytes(distiller) -> Optional[Dict[str, int]]:
    """The bytes each model's pass saves for backward in one training step on the dry run's
    example (the loss graph's and the connectors' under :data:`LOSSES_ROW`), counted by torch's
    saved-tensor hooks as they are saved: each storage once, at its full size, the models'
    parameters and the example's own tensors not counted. A frozen teacher runs without
    gradients and saves nothing. None without an example, or when the step cannot run here (a
    model on the meta device, a procedure of several phases); the step leaves no trace."""
    import torch

    from kdsl.compiler.snapshot import Snapshot
    from kdsl.runtime.values import as_call

    plan = distiller.plan
    example = plan.request.example_input
    if example is None:
        return None
    args, kwargs = as_call(example)
    batch = plan.request.example_batch or {}
    known = {_storage(t) for m in plan.models.values() for t in m.parameters()}
    known |= {_storage(t) for t in distiller.parameters()}
    known |= {_storage(t) for t in [*args, *kwargs.values(), *batch.values()] if isinstance(t, torch.Tensor)}
    saved: Dict[str, int] = {}

    def pack(t):
        key = _storage(t)
        if key not in known:
            known.add(key)
            name = plan.state.active or LOSSES_ROW
            saved[name] = saved.get(name, 0) + t.untyped_storage().nbytes()
        return t

    snapshot = Snapshot(list(plan.models.values()) + list(plan.connector_modules.values()))
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            distiller.step(*args, batch=dict(batch), target=batch.get("target"), **kwargs)
    except Exception:  # noqa: BLE001 - the table shows "-": nothing measured, nothing claimed
        return None
    finally:
        snapshot.restore()
    return saved


def _storage(t) -> int:
    return t.untyped_storage()._cdata  # the storage itself: views of one storage are one key


def example_rows(distiller) -> Optional[int]:
    """The dry run's batch size: the first dimension of the example's first tensor."""
    import torch

    from kdsl.runtime.values import as_call

    args, kwargs = as_call(distiller.plan.request.example_input)
    first = next((t for t in [*args, *kwargs.values()] if isinstance(t, torch.Tensor) and t.dim()), None)
    return int(first.shape[0]) if first is not None else None


def memory_rows(distiller, world: int, strategy: str,
                activations: Optional[Dict[str, int]] = None) -> List[Dict[str, Any]]:
    """Per model (and the connectors): placement and rank 0's parameter, gradient and optimizer
    bytes, and the activations measured (``None``: not measured)."""
    spec = distiller.plan.spec
    placements = spec_placements(spec) if strategy == "fsdp" else {}
    slots, _ = optimizer_slots(spec)
    rows = []
    models = [(distiller.student_name, distiller.student)] + \
        [(n, distiller.model(n)) for n in distiller.teacher_names]
    student_ids = {id(p) for _, m in models for p in m.parameters()}
    extra = [p for p in distiller.parameters() if id(p) not in student_ids]
    for name, model in models + [(LOSSES_ROW, None)]:
        params = list(dict.fromkeys(model.parameters())) if model is not None else extra
        if not params and not (activations or {}).get(name):
            continue
        placement = "whole" if strategy != "fsdp" or model is None else placements.get(name, "sharded")
        held = shard_bytes(params, world) if placement in ("sharded", "offloaded") else shard_bytes(params, 1)
        trained = [p for p in params if p.requires_grad]
        grads = shard_bytes(trained, world if placement == "sharded" else 1)
        rows.append({"model": name, "placement": placement,
                     "params": 0 if placement == "offloaded" else held, "cpu": held if placement == "offloaded" else 0,
                     "grads": grads, "optimizer": grads * slots,
                     "activations": None if activations is None else activations.get(name, 0)})
    return rows


def memory_table(distiller, world: int, strategy: str):
    from rich.table import Table

    slots, name = optimizer_slots(distiller.plan.spec)
    activations = activation_bytes(distiller)
    rows = example_rows(distiller) if activations is not None else None
    measured = (f"activations: saved for backward in one step on the dry run's batch"
                f"{f' of {rows}' if rows else ''}, per process" if activations is not None
                else "activations: not measured (no dry-run batch, or its step cannot run here)")
    table = Table(title=f"memory per process: world size {world}, strategy {strategy} "
                        f"(optimizer {name}: {slots} state tensor{'s' if slots != 1 else ''} per parameter; "
                        f"{measured})", title_justify="left")
    for column in ("model", "placement", "parameters", "gradients", "optimizer state", "activations", "total",
                   "on the CPU"):
        table.add_column(column, justify="left" if column in ("model", "placement") else "right")
    for r in memory_rows(distiller, world, strategy, activations):
        total = r["params"] + r["grads"] + r["optimizer"] + (r["activations"] or 0)
        table.add_row(r["model"], r["placement"], _size(r["params"]), _size(r["grads"]), _size(r["optimizer"]),
                      "-" if r["activations"] is None else _size(r["activations"]), _size(total),
                      _size(r["cpu"]) if r["cpu"] else "-")
    return table


def _size(n: Optional[int]) -> str:
    value = float(n or 0)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:,.0f} {unit}" if unit == "B" else f"{value:,.1f} {unit}"
        value /= 1024
    return f"{value:,.1f} GiB"
