"""Where a run executes: the device, mixed precision, and the processes of a torchrun launch.

Under ``torchrun`` (``WORLD_SIZE`` > 1) kdsl joins (or starts) the process group, gloo on the CPU
and nccl on GPUs; every collective a run needs is here, so the loop reads the same on one
process and on many.
"""

from __future__ import annotations

import contextlib
import gc
import os
from dataclasses import dataclass, field
from typing import Any, List, Optional

import torch
from torch import nn

from kdsl.core.diagnostics import error


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    owned: bool = False  # kdsl started the process group, so kdsl ends it
    meshes: List[Any] = field(default_factory=list)  # the device meshes kdsl built over the group

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise error("KD704", "--device cuda was asked for, but no CUDA device is available",
                        hint="use --device cpu (or auto)")
        return torch.device("cuda", local_rank)
    if name != "cpu":
        raise error("KD701", f"unknown device '{name}'", hint="cpu, cuda or auto")
    return torch.device("cpu")


def check_amp(amp: Optional[str], device: torch.device) -> None:
    if amp == "fp16" and device.type != "cuda":
        raise error("KD705", "--amp fp16 needs a GPU", hint="use --amp bf16 on the CPU")
    if amp not in (None, "bf16", "fp16"):
        raise error("KD701", f"unknown --amp '{amp}'", hint="bf16 or fp16")


def autocast(device: torch.device, amp: Optional[str]):
    if amp is None:
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def init_distributed(device: torch.device, timeout_s: Optional[float] = None) -> Dist:
    """Join torchrun's process group; ``timeout_s`` bounds every collective (a rank that died
    fails the others' next collective instead of leaving them waiting)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    import datetime

    import torch.distributed as dist

    owned = not dist.is_initialized()
    if owned:
        # Its functions take `group=group.WORLD` as a default, evaluated when the module is first
        # imported (FSDP imports it): imported after the group exists, they would hold the group
        # until the interpreter's teardown (see end_distributed).
        import torch.distributed.nn.functional  # noqa: F401

        timeout = datetime.timedelta(seconds=timeout_s) if timeout_s else None
        try:
            dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo", timeout=timeout)
        except (dist.DistStoreError, dist.DistNetworkError) as exc:  # a store timeout, nobody at the address
            raise missing_peers(exc, world, timeout_s) from None
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")), owned)


def missing_peers(exc: Exception, world: int, timeout_s: Optional[float]):
    """KD786 for a process group that could not form: not every process reached the rendezvous
    (the first process's address, where each connects) within the timeout."""
    where = f"{os.environ.get('MASTER_ADDR', '?')}:{os.environ.get('MASTER_PORT', '?')}"
    reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    waited = f" within {timeout_s:g} s" if timeout_s else ""
    return error("KD786", f"the rendezvous at {where} failed: {world} processes were to meet there{waited}, and "
                 f"not all did (rank {os.environ.get('RANK', '?')}: {reason})",
                 hints=["start every machine's torchrun with the same --nnodes and --rdzv-endpoint (the first "
                        "machine's address, reachable from every machine), each with its own --node-rank",
                        "--collective-timeout N bounds this wait; torchrun's agents meet before kdsl starts, and "
                        "--rdzv-conf timeout=N bounds theirs (docs/distributed.md)"])


def device_mesh(d: Dist, device: torch.device):
    """A one-dimensional device mesh over the run's processes, released by end_distributed."""
    from torch.distributed.device_mesh import init_device_mesh

    mesh = init_device_mesh(device.type, (d.world,))
    d.meshes.append(mesh)
    return mesh


def end_distributed(d: Dist) -> None:
    """Leave the process group together, and let it go: its communication threads end here,
    while the interpreter is whole.

    destroy_process_group unregisters the group, but the group (and gloo's threads) lives on
    while anything refers to it, and a device mesh does: DTensor's caches keep every mesh they
    saw. Left to the interpreter's teardown, those threads ended in no set order, and a finished
    run's process aborted now and then ('terminate called without an active exception', about
    one torchrun launch of a script calling kdsl.train in twenty). So the meshes kdsl built drop
    the group too (the mesh keeps it in ``_pg_registry``; a group once destroyed is of no use),
    and the run's models are collected: called once they are garbage."""
    if d.enabled and d.owned:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()
        for mesh in d.meshes:
            registry = getattr(mesh, "_pg_registry", None)
            if isinstance(registry, dict):
                registry.clear()
        d.meshes.clear()
        gc.collect()  # the run's sharded models, in reference cycles, refer to the group too


def barrier(d: Dist) -> None:
    if d.enabled:
        import torch.distributed as dist

        dist.barrier()


def all_reduce_sum(values: List[float], d: Dist, device: torch.device) -> List[float]:
    if not d.enabled:
        return values
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def average_grads(params: List[nn.Parameter], d: Dist) -> None:
    """Gradients of what DDP does not wrap (connectors, trainable teachers, learning losses)."""
    import torch.distributed as dist

    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= d.world
    offset = 0
    for g in grads:
        n = g.numel()
        g.copy_(flat[offset:offset + n].view_as(g))
        offset += n


def broadcast_buffers(module: nn.Module) -> None:
    """Rank 0's buffers on every rank. DDP broadcasts them before each forward, but the last
    training step leaves each rank with its own BatchNorm statistics: without this, each rank
    would evaluate its shard of the validation set with a different model, and the metrics would
    not be those of the student.pt that rank 0 saves."""
    import torch.distributed as dist

    for buffer in module.buffers():
        dist.broadcast(buffer, 0)


def check_ranks_agree(student: nn.Module, d: Dist, device: torch.device) -> None:
    """After training every rank must hold the same student (KD707 otherwise)."""
    import torch.distributed as dist

    whole = [p.full_tensor() if hasattr(p, "full_tensor") else p for p in student.parameters()]  # FSDP shards
    mine = torch.tensor([sum(p.detach().double().sum().item() for p in whole)],
                        dtype=torch.float64, device=device)
    every = [torch.zeros_like(mine) for _ in range(d.world)]
    dist.all_gather(every, mine)
    values = [t.item() for t in every]
    if any(v != values[0] for v in values):
        raise error("KD707", f"the ranks' students diverged (parameter sums {values})")


def wrap_student(student: nn.Module, params: List[nn.Parameter], d: Dist, device: torch.device,
                 sharded=None, unused: bool = False):
    """(what runs the student's forward, the trainable parameters DDP (or FSDP, ``sharded``) does
    not reduce). FSDP2 shards the student in place (:mod:`.sharding`): it runs itself, and the
    loop averages only the gradients of the parameters that stay whole. ``unused``: a delivery
    replaces one of the student's own computations, whose parameters then get no gradient (DDP
    must look for them)."""
    if not d.enabled:
        return student, []
    if sharded:
        return student, [p for p in params if not hasattr(p, "full_tensor")]
    from torch.nn.parallel import DistributedDataParallel

    runner = DistributedDataParallel(student, device_ids=[device.index] if device.type == "cuda" else None,
                                     find_unused_parameters=unused)
    student_params = {id(p) for p in student.parameters()}
    return runner, [p for p in params if id(p) not in student_params]
