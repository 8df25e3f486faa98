"""``kdsl train``: a distillation run from a spec, models and data.

Settings come from three places, later ones winning: built-in defaults, the spec's ``train { }``
block, command-line flags. A run directory holds ``checkpoint.pt`` (everything needed to resume
exactly: models, connectors, optimizer, lr schedule, RNG states, epoch, metrics), ``student.pt``
(the student's plain state dict), ``metrics.jsonl``/``metrics.csv``, ``curves.png`` and
``summary.json``; each is written atomically once per epoch.

Data order is a function of the seed and the epoch only: epoch ``e`` visits the training set in
the order ``torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + e))``
(sharded by rank under torchrun), so a resumed run sees the same batches as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import random
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Tuple

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from kdsl.compiler.models import ModelChoice, apply_model_choice
from kdsl.data import split_result
from kdsl.lang import ir
from kdsl.core.diagnostics import error
from kdsl.core.resolve import import_ref
from kdsl.lang.refs import parse_call, parse_option_call
from kdsl.catalog.binding import bind, type_problem
from kdsl.catalog.registry import REGISTRY
from kdsl.lang.literal import literal_value
from kdsl.lang.verify_train import DATA_LOADER_OPTIONS

CHECKPOINT_FORMAT = "kdsl-run/1"


# ============================================================================ configuration
@dataclass
class TrainConfig:
    data: Optional[Tuple[str, Dict[str, Any]]] = None
    epochs: int = 10
    batch_size: int = 64
    optimizer: Tuple[str, Dict[str, Any]] = ("sgd", {})
    lr: Optional[float] = None
    lr_schedule: Tuple[str, Dict[str, Any]] = ("cosine", {})
    seed: int = 0
    device: str = "auto"
    amp: Optional[str] = None
    out: Optional[str] = None
    num_workers: int = 0
    grad_clip: Optional[float] = None
    eval_teachers: bool = True
    threads: Optional[int] = None
    drop_last: bool = False
    sources: Dict[str, str] = field(default_factory=dict)

    def describe(self) -> Dict[str, Any]:
        """The settings as JSON-ready data, with where each came from (default, spec or flag)."""
        d = asdict(self)
        d["sources"] = dict(self.sources)
        return json.loads(json.dumps(d, default=str))


@dataclass
class Flags:
    """What the command line says (None: not given)."""

    student: Optional[str] = None
    teacher: Optional[str] = None
    models: List[str] = field(default_factory=list)
    teacher_ckpt: Optional[str] = None
    data: Optional[str] = None
    epochs: Optional[int] = None
    batch_size: Optional[int] = None
    lr: Optional[float] = None
    optimizer: Optional[str] = None
    device: Optional[str] = None
    amp: Optional[str] = None
    seed: Optional[int] = None
    out: Optional[str] = None
    resume: bool = False
    eval_only: bool = False
    overwrite: bool = False
    threads: Optional[int] = None


def _call_parts(expr) -> Tuple[str, List[Any], Dict[str, Any]]:
    if isinstance(expr, ir.Const):
        return str(expr.value), [], {}
    return expr.func, [literal_value(a) for a in expr.args], {k.name: literal_value(k.value) for k in expr.kwargs}


def _component_options(kind: str, name: str, args, kwargs, what: str) -> Dict[str, Any]:
    component = REGISTRY.get(kind, name)
    if component is None:
        from kdsl.core.suggest import did_you_mean

        raise error("KD701", f"unknown {what} '{name}'", hint=did_you_mean(name, REGISTRY.names(kind))
                    or f"see `kdsl list {kind.replace('_', '-')}s`")
    binding = bind(component, list(args), list(kwargs.items()), inputs=False)
    for p in binding.problems:
        raise error("KD701", f"{what}: {p.message}", hint=p.hint)
    for key, value in binding.options.items():
        message = type_problem(component, component.option(key), value)
        if message:
            raise error("KD701", f"{what}: {message}")
    return binding.options


def resolve_config(spec: ir.Spec, flags: Flags) -> TrainConfig:
    cfg = TrainConfig()
    src = {k: "default" for k in ("data", "epochs", "batch_size", "optimizer", "lr_schedule", "seed",
                                  "device", "amp", "out", "num_workers", "grad_clip", "eval_teachers")}
    for s in spec.train.settings:
        src[s.key] = "spec"
        if s.key == "data":
            ref, args, kwargs = _call_parts(s.value)
            if isinstance(s.value, ir.Call):  # dataset("ref", ...)
                ref = args[0]
            for key in DATA_LOADER_OPTIONS:
                if key in kwargs:
                    setattr(cfg, key, kwargs.pop(key))
                    src[key] = "spec"
            cfg.data = (ref, kwargs)
        elif s.key in ("optimizer", "lr_schedule"):
            name, args, kwargs = _call_parts(s.value)
            kind = s.key
            component = REGISTRY.get(kind, name)
            opts = bind(component, args, list(kwargs.items()), inputs=False).options
            setattr(cfg, s.key, (name, opts))
        else:
            setattr(cfg, s.key, literal_value(s.value))
    # flags win
    if flags.data:
        ref, args, kwargs = parse_call(flags.data, "data")
        if args:
            raise error("KD701", "data options are given by keyword: --data 'pkg.module:factory(root=\"...\")'")
        for key in DATA_LOADER_OPTIONS:
            if key in kwargs:
                setattr(cfg, key, kwargs.pop(key))
        cfg.data, src["data"] = (ref, kwargs), "flag"
    for key in ("epochs", "batch_size", "seed", "device", "amp", "out", "threads"):
        value = getattr(flags, key)
        if value is not None:
            setattr(cfg, key, value)
            src[key] = "flag"
    if flags.optimizer:
        name, args, kwargs = parse_option_call(flags.optimizer, "optimizer")
        cfg.optimizer = (name, _component_options("optimizer", name, args, kwargs, "--optimizer"))
        src["optimizer"] = "flag"
    if flags.lr is not None:
        cfg.lr = flags.lr
        src["lr"] = "flag"
    if cfg.epochs < 1:
        raise error("KD701", f"--epochs must be at least 1, got {cfg.epochs}")
    if cfg.batch_size < 1:
        raise error("KD701", f"--batch-size must be at least 1, got {cfg.batch_size}")
    if cfg.threads is not None and cfg.threads < 1:
        raise error("KD701", f"--threads must be at least 1, got {cfg.threads}")
    if cfg.lr is not None and not (cfg.lr > 0 and math.isfinite(cfg.lr)):
        raise error("KD701", f"--lr must be a positive number, got {cfg.lr}")
    if cfg.out is None:
        stem = os.path.splitext(os.path.basename(spec.file))[0] if not spec.file.startswith("<") else "run"
        cfg.out = os.path.join("runs", stem)
    cfg.sources = src
    return cfg


# ============================================================================ data
class _Indexed(Dataset):
    """Adds each sample's index (``batch.index``, which CRD's memory bank needs)."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        item = self.dataset[i]
        if isinstance(item, (tuple, list)) and len(item) >= 2:
            return item[0], item[1], i
        raise TypeError(f"dataset items must be (input, target) pairs, got {type(item).__name__}")


class EpochSampler(Sampler):
    """A permutation that depends on (seed, epoch) only, sharded across ranks (padded so that every
    rank takes the same number of steps)."""

    def __init__(self, n: int, seed: int, shuffle: bool = True, rank: int = 0, world: int = 1) -> None:
        self.n, self.seed, self.shuffle, self.rank, self.world = n, seed, shuffle, rank, world
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def order(self) -> List[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        if self.world > 1:
            per_rank = -(-self.n // self.world)
            order = (order * 2)[: per_rank * self.world] if self.shuffle else order
            order = order[self.rank::self.world]
        return order

    def __iter__(self) -> Iterator[int]:
        return iter(self.order())

    def __len__(self) -> int:
        if self.world > 1 and self.shuffle:
            return -(-self.n // self.world)
        return len(range(self.rank, self.n, self.world)) if self.world > 1 else self.n


@dataclass
class Data:
    train: DataLoader
    val: DataLoader
    train_size: int
    val_size: int
    sampler: EpochSampler
    num_classes: Optional[int] = None


def load_data(cfg: TrainConfig, rank: int, world: int) -> Data:
    if cfg.data is None:
        raise error("KD702", "no data: the spec's train block names none and --data was not given",
                    hint='add data = dataset("kdsl.data:digits") to the train block, or pass --data kdsl.data:digits')
    ref, options = cfg.data
    factory = import_ref(ref, "data")
    try:
        result = factory(**options)
    except FileNotFoundError as exc:
        raise error("KD702", f"data '{ref}': {exc}") from None
    except Exception as exc:  # noqa: BLE001
        raise error("KD702", f"data factory '{ref}' failed: {type(exc).__name__}: {exc}") from None
    train, val, num_classes = split_result(result, ref)
    if isinstance(train, DataLoader) or isinstance(val, DataLoader):
        raise error("KD702", f"data factory '{ref}' returned DataLoaders; return datasets so that "
                    "kdsl controls batching, shuffling and sharding (reproducible, resumable runs)")
    sampler = EpochSampler(len(train), cfg.seed, shuffle=True, rank=rank, world=world)
    val_sampler = EpochSampler(len(val), cfg.seed, shuffle=False, rank=rank, world=world)
    # Workers are started afresh each epoch (not persistent) and seeded from the train loader's
    # generator, which fit() re-seeds from (seed, epoch): augmentation drawn in worker processes
    # is then a function of (seed, epoch) too, and a resumed run draws the same as an
    # uninterrupted one. (With persistent workers their RNG streams would carry over epochs.)
    common = dict(batch_size=cfg.batch_size, num_workers=cfg.num_workers)
    # Both loaders get their own generator: iterating a DataLoader without one draws a seed from
    # torch's global generator, which would shift the models' initialisation (built after the first
    # validation batch is read) and any dropout/augmentation stream after each evaluation.
    g = torch.Generator().manual_seed(cfg.seed)
    train_loader = DataLoader(_Indexed(train), sampler=sampler, drop_last=cfg.drop_last, generator=g, **common)
    val_loader = DataLoader(_Indexed(val), sampler=val_sampler,
                            generator=torch.Generator().manual_seed(cfg.seed), **common)
    return Data(train_loader, val_loader, len(train), len(val), sampler, num_classes)


# ============================================================================ distributed
@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    owned: bool = False  # kdsl started the process group, so kdsl ends it

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    import torch.distributed as dist

    owned = not dist.is_initialized()
    if owned:
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")), owned)


def end_distributed(d: Dist) -> None:
    """Leave the process group together; a process that exits while its communication threads
    still run can abort ('terminate called without an active exception')."""
    if d.enabled and d.owned:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()


def _all_reduce_sum(values: List[float], d: Dist, device: torch.device) -> List[float]:
    if not d.enabled:
        return values
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def _average_grads(params: List[nn.Parameter], d: Dist) -> None:
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


def _broadcast_buffers(module: nn.Module) -> None:
    """Rank 0's buffers on every rank. DDP broadcasts them before each forward, but the last
    training step leaves each rank with its own BatchNorm statistics: without this, each rank
    would evaluate its shard of the validation set with a different model, and the metrics would
    not be those of the student.pt that rank 0 saves."""
    import torch.distributed as dist

    for buffer in module.buffers():
        dist.broadcast(buffer, 0)


# ============================================================================ helpers
def pick_device(name: str, d_local_rank: int = 0) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise error("KD704", "--device cuda was asked for, but no CUDA device is available",
                        hint="use --device cpu (or auto)")
        return torch.device("cuda", d_local_rank)
    if name != "cpu":
        raise error("KD701", f"unknown device '{name}'", hint="cpu, cuda or auto")
    return torch.device("cpu")


def autocast(device: torch.device, amp: Optional[str]):
    if amp is None:
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def rng_state(device: torch.device) -> Dict[str, Any]:
    state = {"torch": torch.random.get_rng_state(), "python": list(_py_state())}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _py_state():
    version, internal, gauss = random.getstate()
    return [version, list(internal), gauss]


def set_rng_state(state: Dict[str, Any], device: torch.device) -> None:
    torch.random.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)


def spec_fingerprint(spec: ir.Spec) -> str:
    from kdsl.runtime.distiller import _strip_spans

    return hashlib.sha256(_strip_spans(spec).encode()).hexdigest()[:16]


def param_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, device: torch.device, amp: Optional[str],
             d: Dist) -> Dict[str, float]:
    """Top-1 / top-5 accuracy (%) and mean cross-entropy of a classifier on the loader."""
    was_training = model.training
    model.eval()
    correct1 = correct5 = loss_sum = count = 0.0
    try:
        for x, y, _ in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with autocast(device, amp):
                out = model(x)
            if not isinstance(out, torch.Tensor):
                out = getattr(out, "logits", out[0] if isinstance(out, (tuple, list)) else out)
            out = out.float()
            loss_sum += torch.nn.functional.cross_entropy(out, y, reduction="sum").item()
            k = min(5, out.shape[1])
            top = out.topk(k, dim=1).indices
            hits = top.eq(y.view(-1, 1))
            correct1 += hits[:, 0].sum().item()
            correct5 += hits.any(dim=1).sum().item()
            count += y.numel()
    finally:
        model.train(was_training)
    correct1, correct5, loss_sum, count = _all_reduce_sum([correct1, correct5, loss_sum, count], d, device)
    count = max(count, 1.0)
    return {"top1": 100.0 * correct1 / count, "top5": 100.0 * correct5 / count, "loss": loss_sum / count}


# ============================================================================ the run
class Trainer:
    def __init__(self, spec: ir.Spec, flags: Flags, console) -> None:
        from kdsl.training.runlog import RunLog

        self.spec = spec
        self.flags = flags
        self.cfg = resolve_config(spec, flags)
        self.device = pick_device(self.cfg.device, int(os.environ.get("LOCAL_RANK", "0")))
        if self.cfg.amp == "fp16" and self.device.type != "cuda":
            raise error("KD705", "--amp fp16 needs a GPU", hint="use --amp bf16 on the CPU")
        if self.cfg.amp not in (None, "bf16", "fp16"):
            raise error("KD701", f"unknown --amp '{self.cfg.amp}'", hint="bf16 or fp16")
        if self.cfg.threads:
            torch.set_num_threads(self.cfg.threads)
        self.dist = init_distributed(self.device)
        self.console = console
        self.out = self.cfg.out
        self.log = RunLog(self.out, console, enabled=self.dist.main)
        self.live = console.is_terminal and self.dist.main

    # ---------------------------------------------------------------- set-up
    def prepare_out_dir(self) -> None:
        ckpt = os.path.join(self.out, "checkpoint.pt")
        if self.flags.resume or self.flags.eval_only:
            if not os.path.isdir(self.out):
                raise error("KD703", f"no run to {'resume' if self.flags.resume else 'evaluate'} in {self.out}",
                            hint="train first, or point --out at the run's directory")
            return
        if os.path.exists(ckpt) and not self.flags.overwrite:
            raise error("KD706", f"{self.out} already holds a run",
                        hint="--resume continues it, --out DIR starts a new one elsewhere, "
                        "--overwrite replaces it")
        if self.dist.main:
            try:
                os.makedirs(self.out, exist_ok=True)
                probe = os.path.join(self.out, f".write-test-{os.getpid()}")
                with open(probe, "w") as fh:
                    fh.write("")
                os.remove(probe)
            except OSError as exc:
                raise error("KD706", f"cannot write to {self.out}: {exc.strerror or exc}") from None

    def run(self) -> Dict[str, Any]:
        from kdsl.compiler.compiler import compile as compile_spec

        cfg = self.cfg
        self.prepare_out_dir()
        seed_everything(cfg.seed)
        data = load_data(cfg, self.dist.rank, self.dist.world)
        spec, given = apply_model_choice(self.spec, ModelChoice(self.flags.student, self.flags.teacher, list(self.flags.models), self.flags.teacher_ckpt))
        x0, y0, i0 = next(iter(data.val))
        for m in given.values():
            m.to(self.device)
        distiller = compile_spec(spec, example_input=x0.to(self.device),
                                 example_batch={"target": y0.to(self.device), "index": i0.to(self.device)},
                                 device=self.device, **given)
        with distiller:
            distiller.to(self.device)
            if self.flags.eval_only:
                result = self.evaluate_only(distiller, data)
            else:
                result = self.fit(distiller, data)
        end_distributed(self.dist)
        return result

    def build_optimizer(self, distiller) -> Tuple[torch.optim.Optimizer, Any, List[nn.Parameter]]:
        cfg = self.cfg
        name, options = cfg.optimizer
        options = dict(options)
        if cfg.lr is not None:
            options["lr"] = cfg.lr
        params = [p for p in distiller.parameters() if p.requires_grad]
        optimizer = REGISTRY.get("optimizer", name).load()(params, **options)
        sched_name, sched_options = cfg.lr_schedule
        scheduler = REGISTRY.get("lr_schedule", sched_name).load()(
            optimizer, epochs=cfg.epochs, steps_per_epoch=self.steps_per_epoch, **sched_options)
        return optimizer, scheduler, params

    # ---------------------------------------------------------------- evaluation
    def evaluate_teachers(self, distiller, data: Data) -> Dict[str, Dict[str, float]]:
        out = {}
        for name in distiller.teacher_names:
            model = distiller.model(name)
            out[name] = evaluate(model, data.val, self.device, self.cfg.amp, self.dist)
            out[name]["params"] = param_count(model)
        return out

    def result_rows(self, distiller, teachers, student_eval) -> List[Dict[str, Any]]:
        rows = []
        for name, m in teachers.items():
            rows.append(dict(model=name, role="teacher", params=m["params"], top1=m["top1"],
                             top5=m["top5"], loss=m["loss"]))
        rows.append(dict(model=distiller.student_name, role="student", params=param_count(distiller.student),
                         top1=student_eval["top1"], top5=student_eval["top5"], loss=student_eval["loss"]))
        return rows

    def evaluate_only(self, distiller, data: Data) -> Dict[str, Any]:
        from kdsl.compiler.weights import load_into

        path = os.path.join(self.out, "student.pt")
        if not os.path.isfile(path):
            raise error("KD703", f"no trained student in {self.out} (student.pt is missing)",
                        hint="train first, or point --out at a run directory")
        load_into(distiller.student, path, what="student")
        teachers = self.evaluate_teachers(distiller, data) if self.cfg.eval_teachers else {}
        student = evaluate(distiller.student, data.val, self.device, self.cfg.amp, self.dist)
        rows = self.result_rows(distiller, teachers, student)
        self.log.print(self.log.summary_table(rows))
        return {"teachers": teachers, "student": student}

    # ---------------------------------------------------------------- training
    def fit(self, distiller, data: Data) -> Dict[str, Any]:
        cfg = self.cfg
        d = self.dist
        self.steps_per_epoch = len(data.train)
        optimizer, scheduler, params = self.build_optimizer(distiller)
        scaler = torch.amp.GradScaler("cuda") if cfg.amp == "fp16" else None
        fingerprint = spec_fingerprint(self.spec)
        start_epoch, global_step, teachers = 0, 0, None
        t_start = time.time()
        if self.flags.resume:
            state = self.load_checkpoint(fingerprint)
            distiller.load_state_dict(state["distiller"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            if scaler is not None and state.get("scaler"):
                scaler.load_state_dict(state["scaler"])
            set_rng_state(state["rng"], self.device)
            start_epoch, global_step = state["epoch"], state["step"]
            teachers = state.get("teachers")
            self.log.history = list(state["history"])
            if start_epoch >= cfg.epochs:
                self.log.print(f"{self.out}: the run is complete ({start_epoch} epochs); nothing to resume")
            else:
                self.log.print(f"resuming {self.out} after epoch {start_epoch}")
        student = distiller.student
        runner: nn.Module = student
        extra: List[nn.Parameter] = []
        if d.enabled:
            from torch.nn.parallel import DistributedDataParallel

            runner = DistributedDataParallel(
                student, device_ids=[self.device.index] if self.device.type == "cuda" else None)
            student_params = {id(p) for p in student.parameters()}
            extra = [p for p in params if id(p) not in student_params]
        if teachers is None:
            teachers = self.evaluate_teachers(distiller, data) if cfg.eval_teachers else {}
        self.announce(distiller, data, teachers, start_epoch)
        for epoch in range(start_epoch, cfg.epochs):
            t0 = time.time()
            data.sampler.set_epoch(epoch)
            data.train.generator.manual_seed(cfg.seed * 1_000_003 + epoch)  # workers' seeds
            distiller.train()
            sums: Dict[str, torch.Tensor] = {}
            total = torch.zeros((), dtype=torch.float64, device=self.device)
            steps = 0
            with self.progress(epoch) as advance:
                for i, (x, y, idx) in enumerate(data.train):
                    x = x.to(self.device, non_blocking=True)
                    y = y.to(self.device, non_blocking=True)
                    idx = idx.to(self.device, non_blocking=True)
                    distiller.set_progress(epoch=epoch + i / self.steps_per_epoch, step=global_step,
                                           total_epochs=cfg.epochs)
                    with autocast(self.device, cfg.amp):
                        for name in distiller.used_teachers:
                            with distiller.teacher_pass(name) as teacher:
                                teacher(x)
                        with distiller.student_pass():
                            runner(x)
                        result = distiller.compute_losses(batch={"index": idx}, target=y)
                    loss = result.loss
                    optimizer.zero_grad(set_to_none=True)
                    if scaler is not None:
                        scaler.scale(loss).backward()
                    else:
                        loss.backward()
                    if extra:
                        _average_grads(extra, d)
                    if cfg.grad_clip:
                        if scaler is not None:
                            scaler.unscale_(optimizer)
                        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                    if scaler is not None:
                        scaler.step(optimizer)
                        scaler.update()
                    else:
                        optimizer.step()
                    scheduler.step()
                    global_step += 1
                    steps += 1
                    total += loss.detach().double()
                    for k, v in result.losses.items():
                        sums[k] = sums[k] + v.detach().double() if k in sums else v.detach().double()
                    if steps % 10 == 0 or i + 1 == self.steps_per_epoch:
                        self.check_finite(result, epoch, i)
                        advance(steps, {k: (v / steps).item() for k, v in sums.items()})
            if d.enabled:
                _broadcast_buffers(student)
            keys = list(sums)
            reduced = _all_reduce_sum([total.item()] + [sums[k].item() for k in keys] + [float(steps)],
                                      d, self.device)
            n = max(reduced[-1], 1.0)
            val = evaluate(student, data.val, self.device, cfg.amp, d)
            row: Dict[str, Any] = {"epoch": epoch + 1, "step": global_step,
                                   "lr": optimizer.param_groups[0]["lr"], "train_loss": reduced[0] / n}
            row.update({f"train/{k}": reduced[1 + j] / n for j, k in enumerate(keys)})
            row.update({"val_top1": val["top1"], "val_top5": val["top5"], "val_loss": val["loss"],
                        "time_s": time.time() - t0})
            self.log.add_epoch(row)
            self.log.print(self.log.epoch_line(row, cfg.epochs))
            if d.main:
                self.save(distiller, optimizer, scheduler, scaler, epoch + 1, global_step, teachers, fingerprint)
                note = self.log.write_curves(teachers)
                if note and epoch + 1 == cfg.epochs:
                    self.log.print(f"note: {note}")
            if d.enabled:
                import torch.distributed as dist

                dist.barrier()
        if d.enabled:
            self.check_ranks_agree(student)
        return self.finish(distiller, data, teachers, time.time() - t_start)

    def check_finite(self, result, epoch: int, i: int) -> None:
        if bool(torch.isfinite(result.loss.detach()).all()):
            return
        bad = [k for k, v in result.losses.items() if not bool(torch.isfinite(v.detach()).all())]
        term = self.spec.losses[[l.name for l in self.spec.losses].index(bad[0])] if bad else None
        raise error("KD707", f"loss {'term ' + repr(bad[0]) + ' ' if bad else ''}became "
                    f"{'nan' if torch.isnan(result.loss).any() else 'infinite'} at epoch {epoch + 1}, "
                    f"step {i + 1}", term.span if term else None,
                    hint=f"lower the learning rate or the term's weight; the last good checkpoint is in {self.out}")

    def check_ranks_agree(self, student: nn.Module) -> None:
        import torch.distributed as dist

        mine = torch.tensor([sum(p.detach().double().sum().item() for p in student.parameters())],
                            dtype=torch.float64, device=self.device)
        every = [torch.zeros_like(mine) for _ in range(self.dist.world)]
        dist.all_gather(every, mine)
        values = [t.item() for t in every]
        if any(v != values[0] for v in values):
            raise error("KD707", f"the ranks' students diverged (parameter sums {values})")

    @contextlib.contextmanager
    def progress(self, epoch: int):
        if not self.live:
            yield lambda steps, terms: None
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        with Progress(TextColumn(f"epoch {epoch + 1}/{self.cfg.epochs}"), BarColumn(),
                      MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("{task.fields[terms]}"),
                      console=self.console, transient=True) as bar:
            task = bar.add_task("train", total=self.steps_per_epoch, terms="")

            def advance(steps: int, terms: Dict[str, float]) -> None:
                text = "  ".join(f"{k} {v:.4f}" for k, v in terms.items())
                bar.update(task, completed=steps, terms=text)

            yield advance

    def announce(self, distiller, data: Data, teachers, start_epoch: int) -> None:
        cfg = self.cfg
        opt, opt_options = cfg.optimizer
        lr = cfg.lr if cfg.lr is not None else opt_options.get("lr", REGISTRY.get("optimizer", opt).option("lr").default)
        parts = [f"student {distiller.student_name} ({param_count(distiller.student):,} params)"]
        for name, m in teachers.items():
            parts.append(f"teacher {name} ({m['params']:,} params, top-1 {m['top1']:.2f}%)")
        self.log.print("kdsl train " + self.spec.file + ": " + ", ".join(parts))
        world = f", {self.dist.world} processes" if self.dist.enabled else ""
        self.log.print(f"  data {cfg.data[0]} ({data.train_size} train / {data.val_size} val), "
                       f"{cfg.epochs} epochs of {self.steps_per_epoch} steps, batch {cfg.batch_size}, "
                       f"{opt} lr {lr:g}, {cfg.lr_schedule[0]} schedule, seed {cfg.seed}, "
                       f"{self.device.type}{' ' + cfg.amp if cfg.amp else ''}{world} -> {self.out}")

    # ---------------------------------------------------------------- checkpoints
    def save(self, distiller, optimizer, scheduler, scaler, epoch: int, step: int, teachers, fingerprint) -> None:
        from kdsl.training.runlog import atomic_torch_save, atomic_write

        state = {
            "format": CHECKPOINT_FORMAT, "spec": fingerprint, "epoch": epoch, "step": step,
            "distiller": distiller.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict() if scaler else None,
            "rng": rng_state(self.device), "teachers": teachers, "history": self.log.history,
            "config": self.cfg.describe(),
        }
        atomic_torch_save(state, os.path.join(self.out, "checkpoint.pt"))
        atomic_torch_save({k: v.detach().cpu() for k, v in distiller.student.state_dict().items()},
                          os.path.join(self.out, "student.pt"))
        summary = {"spec": self.spec.file, "epochs_done": epoch, "teachers": teachers,
                   "history": self.log.history, "config": state["config"]}
        atomic_write(os.path.join(self.out, "summary.json"), json.dumps(summary, indent=2).encode())

    def load_checkpoint(self, fingerprint: str) -> Dict[str, Any]:
        path = os.path.join(self.out, "checkpoint.pt")
        if not os.path.isfile(path):
            raise error("KD703", f"nothing to resume: {path} does not exist",
                        hint="a run writes it at the end of its first epoch")
        try:
            state = torch.load(path, map_location=self.device, weights_only=True)
        except Exception as exc:  # noqa: BLE001
            from kdsl.compiler.weights import load_error_text

            raise error("KD703", f"cannot read {path}: {load_error_text(exc)}") from None
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
            raise error("KD703", f"{path} is not a kdsl run checkpoint")
        if state.get("spec") != fingerprint:
            raise error("KD703", f"{path} was written by a different spec",
                        hint="resume with the spec that started the run, or start a new run with --out")
        return state

    def finish(self, distiller, data: Data, teachers, seconds: float) -> Dict[str, Any]:
        from kdsl.training.runlog import atomic_write

        history = self.log.history
        last = history[-1] if history else None
        student = {"top1": last["val_top1"], "top5": last["val_top5"], "loss": last["val_loss"]} if last else \
            evaluate(distiller.student, data.val, self.device, self.cfg.amp, self.dist)
        best = max(history, key=lambda r: r["val_top1"]) if history else None
        rows = self.result_rows(distiller, teachers, student)
        self.log.print(self.log.summary_table(rows))
        if teachers:
            name, t = next(iter(teachers.items()))
            who = "the teacher" if name == "teacher" else f"teacher {name}"
            self.log.print(f"student top-1 {student['top1']:.2f}% next to {who}'s {t['top1']:.2f}% "
                           f"({student['top1'] - t['top1']:+.2f} points); best {best['val_top1']:.2f}% at "
                           f"epoch {best['epoch']}" if best else "")
        else:
            self.log.print(f"student top-1 {student['top1']:.2f}%")
        self.log.print(f"run written to {self.out} ({seconds:.1f}s): student.pt, checkpoint.pt, "
                       "metrics.jsonl, metrics.csv, curves.png, summary.json")
        summary = {"spec": self.spec.file, "epochs_done": last["epoch"] if last else 0,
                   "teachers": teachers, "student": student,
                   "best": {"epoch": best["epoch"], "top1": best["val_top1"]} if best else None,
                   "history": history, "config": self.cfg.describe(),
                   "seconds": seconds}
        if self.dist.main:
            atomic_write(os.path.join(self.out, "summary.json"), json.dumps(summary, indent=2).encode())
        return summary


def train(spec_path: str, flags: Flags, console) -> Dict[str, Any]:
    from kdsl.lang.loader import load

    spec = load(spec_path)
    return Trainer(spec, flags, console).run()
