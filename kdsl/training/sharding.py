"""FSDP2 sharding of a run's models (``strategy = "fsdp"`` under torchrun).

Each sharded model is cut into units with :func:`torch.distributed.fsdp.fully_shard` (by default
every child of the model's ``ModuleList`` s, e.g. each transformer block; ``shard_units``
overrides it with module path patterns), then the model itself is the root unit. Parameters
become DTensor shards in place: module paths and parameter names stay, so every recorder,
delivery and patch kdsl installed before keeps working (FSDP2 swaps each unit's class for a
subclass of it, which inherits the patched methods). What stays whole on every rank - the
connectors, learning losses and ``replicated`` models - has its gradients averaged by the loop,
as under DDP.

The run's files stay those of a DDP run: before a checkpoint every rank takes part in gathering
the full state (:func:`gathered`), which rank 0 writes; a resumed run loads it whole and shards
again, so a run resumes at any world size (:func:`local_optimizer_state` cuts the optimizer's
state to this rank's shards).
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from torch import nn

from kdsl.core.diagnostics import Diagnostic, KdslError, error, make
from kdsl.training.distributed import device_mesh


@dataclass
class Sharding:
    """The models a run sharded, by name, with their placement and units."""

    placements: Dict[str, str] = field(default_factory=dict)
    units: Dict[str, List[str]] = field(default_factory=dict)
    models: Dict[str, nn.Module] = field(default_factory=dict)  # the sharded ones (offloaded too)


def is_dtensor(t: Any) -> bool:
    from torch.distributed.tensor import DTensor

    return isinstance(t, DTensor)


def unit_paths(model: nn.Module, patterns: Optional[Sequence[str]] = None) -> List[str]:
    """The module paths of ``model``'s units, deepest first (the order fully_shard needs): those
    matching ``patterns``, else every child of every ``ModuleList``."""
    if patterns:
        paths = [n for n, _ in model.named_modules() if n and any(path_matches(n, p) for p in patterns)]
    else:
        paths = [f"{n}.{i}" if n else str(i) for n, m in model.named_modules()
                 if isinstance(m, nn.ModuleList) for i in range(len(m))]
    return sorted(paths, key=lambda p: -p.count("."))


def path_matches(path: str, pattern: str) -> bool:
    """A module path against a pattern whose ``*`` stands for one path segment's characters
    (``blocks.*`` is each block, not every module inside one) and ``**`` for any run of them."""
    regex = "".join(".*" if part == "**" else "[^.]*" if part == "*" else re.escape(part)
                    for part in re.split(r"(\*\*|\*)", pattern))
    return re.fullmatch(regex, path) is not None


def placement_of(name: str, cfg) -> str:
    if name in (cfg.offloaded or []):
        return "offloaded"
    if name in (cfg.replicated or []):
        return "replicated"
    return "sharded"


def check_placements(spec, cfg) -> None:
    """The spec's placement check (KD226-KD229, :mod:`kdsl.lang.verify_placement`) with the run's
    settings, which may come from flags: its first error as KD780, located in the spec."""
    from kdsl.core.diagnostics import Diagnostics
    from kdsl.lang.verify_placement import check_placement

    diags = Diagnostics()
    check_placement(diags, spec.statements, cfg.strategy,
                    {"replicated": cfg.replicated, "offloaded": cfg.offloaded})
    first = next((d for d in diags.items if d.is_error), None)
    if first is not None:
        raise error("KD780", f"{first.message} ({first.code})", first.span,
                    hint=first.hints[0] if first.hints else None)


def param_view_errors(plan, placements: Dict[str, str], patterns: Optional[Sequence[str]]) -> List[Diagnostic]:
    """KD541 for each delivered or recorded value that the dry run saw sharing its storage with a
    parameter inside a unit of a sharded (or offloaded) model. FSDP2 gathers a unit's parameters
    for its forward and frees them when the forward returns (it reshards after forward), so such
    a view points to freed memory by the time the student's pass or a loss reads it. The root
    unit's own parameters (embeddings, head) stay gathered through the step: views of them are safe.
    Any other delivery is safe: the value is a tensor the teacher's pass computed, and the
    student's unit whose call it answers still gathers, reshards and reduces as it would."""
    out: List[Diagnostic] = []
    for view in plan.param_views:
        if placements.get(view.model, "sharded") == "replicated" or view.model not in plan.models:
            continue
        units = unit_paths(plan.models[view.model], patterns)  # deepest first: the parameter's own unit
        unit = next((u for u in units if view.param.startswith(u + ".")), None)
        if unit is None:
            continue
        out.append(make("KD541", f"{view.what}: a view of {view.model}'s parameter '{view.param}', which "
                        f"fsdp frees when unit '{view.model}.{unit}' finishes its forward, before the value is read",
                        view.span, hints=[f"return a copy from the model's code (e.g. `.clone()`), or hold the "
                                          f"model whole: replicated = [\"{view.model}\"] in the train block"]))
    return out


def check_param_views(distiller, cfg) -> None:
    """The run's :func:`param_view_errors` (placements and units may come from flags), raised."""
    placements = {n: placement_of(n, cfg) for n in [distiller.student_name, *distiller.teacher_names]}
    problems = param_view_errors(distiller.plan, placements, cfg.shard_units)
    if problems:
        raise KdslError(problems)


def shard(spec, distiller, cfg, device: torch.device, d) -> Sharding:
    """Shard the student and every teacher in place, each by its placement (default: sharded)."""
    from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, fully_shard

    check_placements(spec, cfg)
    check_param_views(distiller, cfg)
    mesh = device_mesh(d, device)
    precision = MixedPrecisionPolicy()
    if cfg.amp is not None:  # low-precision parameters in the passes, fp32 gradient reductions
        low = torch.bfloat16 if cfg.amp == "bf16" else torch.float16
        precision = MixedPrecisionPolicy(param_dtype=low, reduce_dtype=torch.float32)
    out = Sharding()
    for name in [distiller.student_name, *distiller.teacher_names]:
        placement = out.placements[name] = placement_of(name, cfg)
        if placement == "replicated":
            continue
        model = distiller.model(name)
        options: Dict[str, Any] = {"mesh": mesh, "mp_policy": precision}
        if placement == "offloaded":
            options["offload_policy"] = CPUOffloadPolicy(pin_memory=device.type == "cuda")
        units = unit_paths(model, cfg.shard_units)
        for path in units:
            fully_shard(model.get_submodule(path), **options)
        fully_shard(model, **options)
        out.units[name], out.models[name] = units, model
    return out


def for_run(spec, distiller, cfg, device: torch.device, d, note) -> Optional[Sharding]:
    """The run's sharding under ``strategy = "fsdp"`` and torchrun; None otherwise (one process
    holds every model whole: a note says so)."""
    if cfg.strategy != "fsdp":
        return None
    if not d.enabled:
        note("strategy fsdp: one process holds every model whole (FSDP shards over the "
                     "processes of a torchrun launch)")
        return None
    return shard(spec, distiller, cfg, device, d)


def replicated_params(params: Sequence[nn.Parameter]) -> List[nn.Parameter]:
    """The parameters FSDP does not reduce (plain tensors): the loop averages their gradients."""
    return [p for p in params if not is_dtensor(p)]


def clip_grad_norm(params: Sequence[nn.Parameter], max_norm: float) -> torch.Tensor:
    """``torch.nn.utils.clip_grad_norm_`` over sharded and whole gradients together: the squares
    of each rank's shards summed over the ranks, plus those of the whole (already averaged)
    gradients once; every gradient scaled by ``max_norm / (norm + 1e-6)`` when that is below 1."""
    import torch.distributed as dist

    grads = [p.grad for p in params if p.grad is not None]
    sharded = [g.to_local() for g in grads if is_dtensor(g)]
    whole = [g for g in grads if not is_dtensor(g)]
    shard_sq = sum((g.double().pow(2).sum() for g in sharded), torch.zeros((), dtype=torch.float64))
    if dist.is_initialized():
        dist.all_reduce(shard_sq)
    whole_sq = sum((g.double().pow(2).sum() for g in whole), torch.zeros((), dtype=torch.float64))
    norm = (shard_sq + whole_sq).sqrt()
    coef = (max_norm / (norm + 1e-6)).clamp(max=1.0)
    for g in sharded + whole:
        g.mul_(coef.to(g.dtype))
    return norm


def full_state_dict(module: nn.Module) -> Dict[str, torch.Tensor]:
    """``module.state_dict()`` with every shard gathered whole (a collective: every rank calls it)."""
    return {k: (v.full_tensor() if is_dtensor(v) else v).detach().clone()
            for k, v in module.state_dict().items()}


def full_optimizer_state(optimizer: torch.optim.Optimizer) -> Dict[str, Any]:
    """``optimizer.state_dict()`` with every sharded state tensor gathered whole (collective)."""
    state = optimizer.state_dict()
    gathered = {i: {k: (v.full_tensor() if is_dtensor(v) else v) for k, v in s.items()}
                for i, s in state["state"].items()}
    return {**state, "state": gathered}


def local_optimizer_state(optimizer: torch.optim.Optimizer, state: Dict[str, Any]) -> Dict[str, Any]:
    """A whole optimizer state cut to this rank's shards of the optimizer's sharded parameters
    (no communication: each rank keeps its own chunk)."""
    from torch.distributed.tensor import distribute_tensor

    params = [p for g in optimizer.param_groups for p in g["params"]]
    if not any(is_dtensor(p) for p in params):
        return state
    local = {}
    for i, s in state["state"].items():
        p = params[int(i)] if int(i) < len(params) else None
        local[i] = {k: distribute_tensor(v.to(p.device_mesh.device_type), p.device_mesh, p.placements,
                                         src_data_rank=None)
                    if p is not None and is_dtensor(p) and torch.is_tensor(v) and v.shape == p.shape else v
                    for k, v in s.items()}
    return {**state, "state": local}


@contextlib.contextmanager
def gathered(sharding: Optional[Sharding], optimizers: Sequence[torch.optim.Optimizer]) -> Iterator[None]:
    """Within it, the sharded models' and the optimizers' ``state_dict()`` give whole tensors, as
    in a DDP run: what rank 0 writes to the run directory. Every rank enters it (it gathers)."""
    if sharding is None or not sharding.models:
        yield
        return
    patched: List[Tuple[Any, Any]] = []
    for model in sharding.models.values():
        patched.append((model, _fixed_state_dict(full_state_dict(model))))
    for optimizer in optimizers:
        whole = full_optimizer_state(optimizer)
        patched.append((optimizer, lambda whole=whole: whole))
    try:
        for owner, method in patched:
            owner.state_dict = method
        yield
    finally:
        for owner, _ in patched:
            del owner.state_dict


def _fixed_state_dict(full: Dict[str, torch.Tensor]):
    """A ``state_dict`` method returning ``full``, with the signature nn.Module's recursion uses."""
    def state_dict(*args, destination=None, prefix: str = "", keep_vars: bool = False):
        out = destination if destination is not None else {}
        for k, v in full.items():
            out[prefix + k] = v
        return out
    return state_dict


def local_bytes(module: nn.Module) -> int:
    """The bytes of ``module``'s parameters this rank holds on its device (its shards)."""
    total = 0
    for p in module.parameters():
        t = p.to_local() if is_dtensor(p) else p
        total += t.numel() * t.element_size()
    return total


def even_forwards(model: nn.Module, batches: int, d) -> int:
    """How many more forwards this rank must run so that every rank runs as many as the one
    with the most ``batches``: a sharded model's forward is a collective (its all-gathers)."""
    if not (d.enabled and any(is_dtensor(p) for p in model.parameters())):
        return 0
    import torch.distributed as dist

    most = torch.tensor([batches], dtype=torch.int64)
    dist.all_reduce(most, op=dist.ReduceOp.MAX)
    return int(most.item()) - batches


def rank_memory(sharding: Optional[Sharding], distiller, d, device: torch.device) -> Dict[str, Any]:
    """summary.json's ``ranks``: each rank's parameter bytes per model (its shards) and its peak
    memory (CUDA: the allocator's peak; CPU: the process's peak resident set). Every rank calls it."""
    names = [distiller.student_name, *distiller.teacher_names]
    mine = [float(local_bytes(distiller.model(n))) for n in names] + [float(_peak_bytes(device))]
    every = [mine]
    if d.enabled:
        import torch.distributed as dist

        t = torch.tensor(mine, dtype=torch.float64, device=device)
        gathered_t = [torch.zeros_like(t) for _ in range(d.world)]
        dist.all_gather(gathered_t, t)
        every = [g.tolist() for g in gathered_t]
    models = {n: {"placement": sharding.placements.get(n, "sharded") if sharding else "whole",
                  "units": len(sharding.units.get(n, [])) if sharding else 0,
                  "param_bytes": [int(r[i]) for r in every]} for i, n in enumerate(names)}
    return {"world": d.world, "strategy": "fsdp" if sharding else "ddp" if d.enabled else "single",
            "models": models, "peak_bytes": [int(r[-1]) for r in every]}


def _peak_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # kilobytes on Linux
