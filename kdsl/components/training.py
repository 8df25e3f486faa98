"""Optimizers and learning-rate schedules named in the catalog (``kdsl/catalog/training.py``).

Learning-rate schedules are per-step ``LambdaLR``s: the factor is a function of fractional epochs,
so a resumed run continues exactly where it stopped (the scheduler's state is its step count).
"""

from __future__ import annotations

import builtins
import importlib
import inspect
import math
from fnmatch import fnmatchcase
from typing import Any, Dict, Iterable, List, Sequence

import torch


def _groups(params: Iterable, weight_decay: float, decay_norm_and_bias: bool, bias_lr_mult: float = 1.0,
            bias_decay_mult: float = 1.0, norm_decay_mult: float = 1.0, groups: Sequence[dict] = ()) -> List[dict]:
    """Parameter groups, each with an ``lr_mult`` of the optimizer's lr.

    First the ``groups`` by name pattern (:mod:`kdsl.lang.param_groups`: a parameter joins the
    first whose pattern it matches), then the rest by role, with mmengine's ``paramwise_cfg``
    multipliers: a bias (a parameter named ``*.bias`` when names are given, as ``(name, parameter)``
    pairs) gets lr x bias_lr_mult and weight decay x bias_decay_mult; any other one-dimensional
    parameter is a norm layer's and gets weight decay x norm_decay_mult (x 0 when
    decay_norm_and_bias is false, biases too). Empty groups are left out."""
    named = [item if isinstance(item, tuple) else ("", item) for item in params]
    named = [(n, p) for n, p in named if p.requires_grad]
    custom = [([], g["lr_mult"], g["decay_mult"], g["pattern"]) for g in groups]
    off = 0.0 if not decay_norm_and_bias else 1.0
    roles = {"weight": ([], 1.0, 1.0, "weights"), "bias": ([], bias_lr_mult, bias_decay_mult * off, "biases"),
             "norm": ([], 1.0, norm_decay_mult * off, "norms")}
    for name, p in named:
        k = next((i for i, g in enumerate(groups) if fnmatchcase(name, g["pattern"])), None)
        if k is not None:
            custom[k][0].append(p)
            continue
        role = "weight" if p.ndim > 1 else "bias" if name.rpartition(".")[2] == "bias" or (not name and not off) else "norm"
        roles[role][0].append(p)
    parts = [c for c in custom if c[0]] + list(roles.values())
    if all(lr_mult == 1.0 and (decay == 1.0 or not weight_decay) for _, lr_mult, decay, _ in parts):
        return [{"params": [p for _, p in named], "weight_decay": weight_decay, "lr_mult": 1.0, "name": "all"}]
    # `name` says what the group holds (kdsl explain shows it); torch keeps extra keys of a group
    return [{"params": ps, "weight_decay": weight_decay * decay, "lr_mult": lr_mult, "name": label}
            for ps, lr_mult, decay, label in parts if ps]


def _with_lr(groups: List[dict], lr: float) -> List[dict]:
    for g in groups:
        g["lr"] = lr * g.pop("lr_mult")
    return groups


def sgd(params, lr: float = 0.05, momentum: float = 0.9, weight_decay: float = 5e-4,
        nesterov: bool = False, decay_norm_and_bias: bool = True, bias_lr_mult: float = 1.0,
        bias_decay_mult: float = 1.0, norm_decay_mult: float = 1.0, **given) -> torch.optim.Optimizer:
    """``given``: what kdsl passes besides the entry's options, ``groups`` (:mod:`kdsl.lang.param_groups`)."""
    paramwise = dict(bias_lr_mult=bias_lr_mult, bias_decay_mult=bias_decay_mult, norm_decay_mult=norm_decay_mult,
                     **given)
    return torch.optim.SGD(_with_lr(_groups(params, weight_decay, decay_norm_and_bias, **paramwise), lr),
                           lr=lr, momentum=momentum, nesterov=nesterov)


def adam(params, lr: float = 1e-3, betas=(0.9, 0.999), weight_decay: float = 0.0,
         decay_norm_and_bias: bool = True, bias_lr_mult: float = 1.0, bias_decay_mult: float = 1.0,
         norm_decay_mult: float = 1.0, **given) -> torch.optim.Optimizer:
    paramwise = dict(bias_lr_mult=bias_lr_mult, bias_decay_mult=bias_decay_mult, norm_decay_mult=norm_decay_mult,
                     **given)
    return torch.optim.Adam(_with_lr(_groups(params, weight_decay, decay_norm_and_bias, **paramwise), lr),
                            lr=lr, betas=tuple(betas))


def adamw(params, lr: float = 1e-3, betas=(0.9, 0.999), weight_decay: float = 0.01,
          decay_norm_and_bias: bool = False, bias_lr_mult: float = 1.0, bias_decay_mult: float = 1.0,
          norm_decay_mult: float = 1.0, **given) -> torch.optim.Optimizer:
    paramwise = dict(bias_lr_mult=bias_lr_mult, bias_decay_mult=bias_decay_mult, norm_decay_mult=norm_decay_mult,
                     **given)
    return torch.optim.AdamW(_with_lr(_groups(params, weight_decay, decay_norm_and_bias, **paramwise), lr),
                             lr=lr, betas=tuple(betas))


def _per_step(optimizer, steps_per_epoch: int, warmup_epochs: float, factor):
    steps_per_epoch = max(1, int(steps_per_epoch))

    def fn(step: int) -> float:
        epoch = step / steps_per_epoch
        scale = factor(epoch)
        if warmup_epochs > 0 and epoch < warmup_epochs:
            scale *= (step + 1) / (warmup_epochs * steps_per_epoch)
        return scale

    return torch.optim.lr_scheduler.LambdaLR(optimizer, fn)


def constant_lr(optimizer, *, epochs: int, steps_per_epoch: int, warmup_epochs: float = 0.0):
    return _per_step(optimizer, steps_per_epoch, warmup_epochs, lambda e: 1.0)


def cosine_lr(optimizer, *, epochs: int, steps_per_epoch: int, min_lr: float = 0.0,
              warmup_epochs: float = 0.0):
    base = optimizer.param_groups[0]["lr"]
    floor = min_lr / base if base else 0.0

    def factor(e: float) -> float:
        t = min(max(e / max(epochs, 1e-12), 0.0), 1.0)
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * t))

    return _per_step(optimizer, steps_per_epoch, warmup_epochs, factor)


def step_lr(optimizer, *, epochs: int, steps_per_epoch: int, milestones=(150, 180, 210),
            gamma: float = 0.1, warmup_epochs: float = 0.0):
    ms = sorted(milestones)
    return _per_step(optimizer, steps_per_epoch, warmup_epochs,
                     lambda e: gamma ** sum(1 for m in ms if e >= m - 1e-9))


# ---------------------------------------------------------------- torch.optim by reference
_WHERE = {"optimizer": ("torch.optim", torch.optim.Optimizer),
          "lr_schedule": ("torch.optim.lr_scheduler", torch.optim.lr_scheduler.LRScheduler)}
# what kdsl passes itself: the parameters, the optimizer, and a scheduler's own step count
_GIVEN = {"optimizer": ("params",), "lr_schedule": ("optimizer", "last_epoch", "verbose")}


def torch_class(kind: str, type: str) -> type:
    """The class ``type`` names: a class name of torch.optim (torch.optim.lr_scheduler for a
    schedule) or a reference ``"pkg.module:Class"``; KD772 when it is not one of that kind."""
    from kdsl.core.diagnostics import error
    from kdsl.core.resolve import import_ref
    from kdsl.core.suggest import did_you_mean

    module_name, base = _WHERE[kind]
    if ":" in type:
        cls = import_ref(type, f"{kind.replace('_', ' ')} class")
    else:
        module = importlib.import_module(module_name)
        cls = getattr(module, type, None) if not type.startswith("_") else None
        if cls is None:
            names = [n for n, c in vars(module).items() if isinstance(c, builtins.type) and issubclass(c, base)
                     and c is not base and not n.startswith("_")]
            raise error("KD772", f"{module_name}.{type} does not exist",
                        hint=did_you_mean(type, names) or f"classes: {', '.join(sorted(names))}")
    if not (isinstance(cls, builtins.type) and issubclass(cls, base)):
        raise error("KD772", f"{type} is not a {base.__module__}.{base.__name__} class")
    return cls


def check_torch_options(kind: str, cls: type, options: Dict[str, Any]) -> None:
    """KD772 when ``cls`` takes no option of ``options`` or needs one they lack."""
    from kdsl.core.diagnostics import error
    from kdsl.core.suggest import did_you_mean

    params = list(inspect.signature(cls.__init__).parameters.values())[1:]
    named = [p for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    names = [p.name for p in named if p.name not in _GIVEN[kind]]
    if not any(p.kind is p.VAR_KEYWORD for p in params):
        for key in options:
            if key not in names:
                raise error("KD772", f"{cls.__module__}.{cls.__name__} has no option '{key}'",
                            hint=did_you_mean(key, names) or f"it takes {', '.join(names) or 'no options'}")
    missing = [p.name for p in named if p.default is p.empty and p.name not in options and p.name in names]
    if missing:
        raise error("KD772", f"{cls.__module__}.{cls.__name__} needs the option{'s' if len(missing) > 1 else ''} "
                    f"{', '.join(repr(m) for m in missing)}")


def torch_optimizer(params, type: str, **options) -> torch.optim.Optimizer:
    """Any torch.optim optimizer (or one by reference), over the parameters, one group."""
    cls = torch_class("optimizer", type)
    check_torch_options("optimizer", cls, options)
    return cls([p for p in params if p.requires_grad], **options)


class TorchScheduler:
    """A torch.optim.lr_scheduler class stepped after every optimizer step (``unit="iter"``) or
    after each epoch's last one (``unit="epoch"``), as torch's examples step it."""

    def __init__(self, optimizer, *, epochs: int, steps_per_epoch: int, type: str, unit: str = "epoch",
                 **options) -> None:
        cls = torch_class("lr_schedule", type)
        check_torch_options("lr_schedule", cls, options)
        self.scheduler = cls(optimizer, **options)
        self.unit, self.steps_per_epoch, self.iterations = unit, max(1, int(steps_per_epoch)), 0

    def step(self) -> None:
        self.iterations += 1
        if self.unit == "iter" or self.iterations % self.steps_per_epoch == 0:
            self.scheduler.step()

    def state_dict(self) -> Dict[str, Any]:
        return {"iterations": self.iterations, "scheduler": self.scheduler.state_dict()}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.iterations = state["iterations"]
        self.scheduler.load_state_dict(state["scheduler"])
