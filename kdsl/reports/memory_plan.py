"""``kdsl explain --world-size N [--strategy fsdp]``: the bytes each process will hold, per model,
before anything trains: parameters, gradients (of what trains) and optimizer state, under ddp
(every model whole on every process) or fsdp (each sharded model's parameters split over the
processes along their first dimension, as FSDP2 splits them; the largest piece, rank 0's, is
shown). Placements come from the spec's train block (``replicated``, ``offloaded``); connectors
and learning losses stay whole. Optimizer state counts the slots the spec's optimizer keeps per
parameter (Adam's two moments, SGD's momentum)."""

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


def memory_rows(distiller, world: int, strategy: str) -> List[Dict[str, Any]]:
    """Per model (and the connectors): placement and rank 0's parameter, gradient and optimizer bytes."""
    spec = distiller.plan.spec
    placements = spec_placements(spec) if strategy == "fsdp" else {}
    slots, _ = optimizer_slots(spec)
    rows = []
    models = [(distiller.student_name, distiller.student)] + \
        [(n, distiller.model(n)) for n in distiller.teacher_names]
    student_ids = {id(p) for _, m in models for p in m.parameters()}
    extra = [p for p in distiller.parameters() if id(p) not in student_ids]
    for name, model in models + [("connectors, learning losses", None)]:
        params = list(dict.fromkeys(model.parameters())) if model is not None else extra
        if not params:
            continue
        placement = "whole" if strategy != "fsdp" or model is None else placements.get(name, "sharded")
        held = shard_bytes(params, world) if placement in ("sharded", "offloaded") else shard_bytes(params, 1)
        trained = [p for p in params if p.requires_grad]
        grads = shard_bytes(trained, world if placement == "sharded" else 1)
        rows.append({"model": name, "placement": placement,
                     "params": 0 if placement == "offloaded" else held, "cpu": held if placement == "offloaded" else 0,
                     "grads": grads, "optimizer": grads * slots})
    return rows


def memory_table(distiller, world: int, strategy: str):
    from rich.table import Table

    slots, name = optimizer_slots(distiller.plan.spec)
    table = Table(title=f"memory per process: world size {world}, strategy {strategy} "
                        f"(optimizer {name}: {slots} state tensor{'s' if slots != 1 else ''} per parameter)",
                  title_justify="left")
    for column in ("model", "placement", "parameters", "gradients", "optimizer state", "total", "on the CPU"):
        table.add_column(column, justify="left" if column in ("model", "placement") else "right")
    for r in memory_rows(distiller, world, strategy):
        total = r["params"] + r["grads"] + r["optimizer"]
        table.add_row(r["model"], r["placement"], _size(r["params"]), _size(r["grads"]), _size(r["optimizer"]),
                      _size(total), _size(r["cpu"]) if r["cpu"] else "-")
    return table


def _size(n: Optional[int]) -> str:
    value = float(n or 0)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:,.0f} {unit}" if unit == "B" else f"{value:,.1f} {unit}"
        value /= 1024
    return f"{value:,.1f} GiB"
