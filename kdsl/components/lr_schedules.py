"""Chainable learning-rate schedules (``kdsl/catalog/lr_schedules.py``), stepped per iteration or
per epoch, and the chain that runs them.

A schedule piece changes the learning rate of every parameter group the way mmengine's parameter
schedulers do: each piece is active on ``[begin, end)`` of its unit (iterations or epochs), counts
its own steps (``t``, 0 at ``begin``) and maps the group's current lr to the next one. A chain of
pieces applies them in order, so their effects multiply (a warm-up over a step decay) exactly as
mmengine's ``param_scheduler`` list does. The closed-form pieces (one-cycle, the Hugging Face
warm-up schedules) set the lr from the group's initial lr instead. Pure Python: the chain only
reads and writes ``optimizer.param_groups``.
"""

from __future__ import annotations

import inspect
import math
from typing import Any, Dict, List, Optional, Sequence



class Piece:
    """One schedule of a chain, active on ``[begin, end)`` in ``unit`` steps (``end`` None: the
    end of the stage)."""

    def __init__(self, begin: int = 0, end: Optional[int] = None, unit: str = "epoch") -> None:
        self.begin, self.end, self.unit = int(begin), end, unit

    def span(self, stage_steps: int) -> int:
        """Where the piece stops, in its unit, in a stage of ``stage_steps`` of that unit."""
        return int(self.end) if self.end is not None else stage_steps

    def prepare(self, stage_steps: int) -> None:
        """Settle the spans that default to the stage (called once the stage's length is known)."""
        self.stop = self.span(stage_steps)
        self.length = self.stop - self.begin  # steps the piece is active for

    def value(self, lr: float, initial: float, t: int) -> float:  # pragma: no cover - overridden
        raise NotImplementedError


class LinearFactor(Piece):
    """lr x a factor going linearly from start_factor (t = 0) to end_factor (t = end - begin - 1)."""

    def __init__(self, start_factor: float = 1.0 / 3, end_factor: float = 1.0, begin: int = 0,
                 end: Optional[int] = None, unit: str = "epoch") -> None:
        super().__init__(begin, end, unit)
        self.start, self.finish = float(start_factor), float(end_factor)

    def value(self, lr, initial, t):
        if t == 0:
            return lr * self.start
        total = self.length - 1
        if t > total:
            return lr
        return lr * (1.0 + (self.finish - self.start) / (total * self.start + (t - 1) * (self.finish - self.start)))


class ConstantFactor(Piece):
    """lr x factor until the piece's end, then lr."""

    def __init__(self, factor: float = 1.0 / 3, begin: int = 0, end: Optional[int] = None,
                 unit: str = "epoch") -> None:
        super().__init__(begin, end, unit)
        self.factor = float(factor)

    def value(self, lr, initial, t):
        if t == 0:
            return lr * self.factor
        return lr / self.factor if t == self.length - 1 else lr


class MultiStep(Piece):
    """lr x gamma at each milestone (counted from begin, in the piece's unit)."""

    def __init__(self, milestones: Sequence[int] = (), gamma: float = 0.1, begin: int = 0,
                 end: Optional[int] = None, unit: str = "epoch") -> None:
        super().__init__(begin, end, unit)
        self.milestones, self.gamma = [int(m) for m in milestones], float(gamma)

    def value(self, lr, initial, t):
        return lr * self.gamma ** self.milestones.count(t)


class Exponential(Piece):
    """lr x gamma every step after the first."""

    def __init__(self, gamma: float = 0.99, begin: int = 0, end: Optional[int] = None,
                 unit: str = "epoch") -> None:
        super().__init__(begin, end, unit)
        self.gamma = float(gamma)

    def value(self, lr, initial, t):
        return lr if t == 0 else lr * self.gamma


class CosineAnnealing(Piece):
    """Half a cosine from lr to eta_min over T_max steps (default: the piece's span)."""

    def __init__(self, T_max: Optional[int] = None, eta_min: float = 0.0, begin: int = 0,
                 end: Optional[int] = None, unit: str = "epoch") -> None:
        super().__init__(begin, end, unit)
        self.t_max, self.eta_min = T_max, float(eta_min)

    def prepare(self, stage_steps):
        super().prepare(stage_steps)
        self.period = int(self.t_max) if self.t_max is not None else self.length

    def value(self, lr, initial, t):
        T, lo = self.period, self.eta_min
        if t == 0:
            return lr
        if (t - 1 - T) % (2 * T) == 0:
            return lr + (initial - lo) * (1 - math.cos(math.pi / T)) / 2
        return (1 + math.cos(math.pi * t / T)) / (1 + math.cos(math.pi * (t - 1) / T)) * (lr - lo) + lo


class Poly(Piece):
    """Polynomial decay from lr to eta_min over the piece's span."""

    def __init__(self, power: float = 1.0, eta_min: float = 0.0, begin: int = 0,
                 end: Optional[int] = None, unit: str = "iter") -> None:
        super().__init__(begin, end, unit)
        self.power, self.eta_min = float(power), float(eta_min)

    def value(self, lr, initial, t):
        if t == 0:
            return lr
        return (lr - self.eta_min) * (1 - 1 / (self.length - 1 - t + 1)) ** self.power + self.eta_min


class ClosedForm(Piece):
    """A piece that sets the lr from the group's initial lr, whatever came before it."""

    def factor(self, initial: float, t: int) -> float:  # pragma: no cover - overridden
        raise NotImplementedError

    def value(self, lr, initial, t):
        return initial * self.factor(initial, t)


class OneCycle(ClosedForm):
    """The 1cycle policy (Smith & Topin 2017) with torch's OneCycleLR's two phases: from
    max_lr/div_factor up to max_lr over pct_start of the steps, then down to
    max_lr/div_factor/final_div_factor."""

    def __init__(self, max_lr: Optional[float] = None, pct_start: float = 0.3, anneal: str = "cos",
                 div_factor: float = 25.0, final_div_factor: float = 1e4, begin: int = 0,
                 end: Optional[int] = None, unit: str = "iter") -> None:
        super().__init__(begin, end, unit)
        self.max_lr, self.pct_start, self.anneal = max_lr, float(pct_start), anneal
        self.div_factor, self.final_div_factor = float(div_factor), float(final_div_factor)

    def value(self, lr, initial, t):
        peak = self.max_lr if self.max_lr is not None else initial
        low = peak / self.div_factor
        phases = ((float(self.pct_start * self.length) - 1, low, peak),
                  (self.length - 1, peak, low / self.final_div_factor))
        start_step = 0.0
        for i, (end_step, start, end) in enumerate(phases):
            if t <= end_step or i == len(phases) - 1:
                pct = (t - start_step) / (end_step - start_step)
                if self.anneal == "cos":
                    return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
                return (end - start) * pct + start
            start_step = end_step
        raise AssertionError("unreachable")


class _Warmup(ClosedForm):
    """Hugging Face's schedules: lr x t / warmup for t < warmup, then the decay of the subclass
    over the rest of the piece's span (``total`` steps)."""

    def __init__(self, warmup: int = 0, total: Optional[int] = None, begin: int = 0,
                 end: Optional[int] = None, unit: str = "iter") -> None:
        super().__init__(begin, end, unit)
        self.warmup, self.total = int(warmup), total

    def prepare(self, stage_steps):
        super().prepare(stage_steps)
        self.total_steps = int(self.total) if self.total is not None else self.length

    def factor(self, initial, t):
        if t < self.warmup:
            return float(t) / float(max(1, self.warmup))
        return self.decay(initial, t)


class WarmupLinear(_Warmup):
    """transformers.get_linear_schedule_with_warmup."""

    def decay(self, initial, t):
        return max(0.0, float(self.total_steps - t) / float(max(1, self.total_steps - self.warmup)))


class WarmupCosine(_Warmup):
    """transformers.get_cosine_schedule_with_warmup."""

    def __init__(self, warmup: int = 0, total: Optional[int] = None, cycles: float = 0.5, begin: int = 0,
                 end: Optional[int] = None, unit: str = "iter") -> None:
        super().__init__(warmup, total, begin, end, unit)
        self.cycles = float(cycles)

    def decay(self, initial, t):
        progress = float(t - self.warmup) / float(max(1, self.total_steps - self.warmup))
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * float(self.cycles) * 2.0 * progress)))


class WarmupPoly(_Warmup):
    """transformers.get_polynomial_decay_schedule_with_warmup."""

    def __init__(self, warmup: int = 0, total: Optional[int] = None, lr_end: float = 1e-7, power: float = 1.0,
                 begin: int = 0, end: Optional[int] = None, unit: str = "iter") -> None:
        super().__init__(warmup, total, begin, end, unit)
        self.lr_end, self.power = float(lr_end), float(power)

    def decay(self, initial, t):
        if t > self.total_steps:
            return self.lr_end / initial
        remaining = 1 - (t - self.warmup) / (self.total_steps - self.warmup)
        return ((initial - self.lr_end) * remaining ** self.power + self.lr_end) / initial


class _Counter:
    """A piece's place in the chain: how many of its unit's steps have passed (mmengine's
    ``_global_step``) and how many of them fell in ``[begin, end)`` (``last_step``)."""

    def __init__(self, piece: Piece) -> None:
        self.piece, self.passed, self.t = piece, -1, -1

    def advance(self, groups: List[Dict[str, Any]]) -> None:
        self.passed += 1
        if self.piece.begin <= self.passed < self.piece.stop:
            self.t += 1
            for g in groups:
                g["lr"] = self.piece.value(g["lr"], g["initial_lr"], self.t)


class Chain:
    """Pieces run in order over a stage of ``epochs`` x ``steps_per_epoch`` optimizer steps.

    ``step()`` is called after each optimizer step: the iteration pieces advance, and at the end
    of an epoch the epoch pieces. The state is the number of steps taken; loading it replays them
    from the initial learning rates, so a resumed run has the exact lrs of an unbroken one.
    """

    def __init__(self, optimizer, pieces: Sequence[Piece], *, epochs: int, steps_per_epoch: int) -> None:
        self.optimizer, self.pieces = optimizer, list(pieces)
        self.steps_per_epoch = max(1, int(steps_per_epoch))
        for piece in self.pieces:
            piece.prepare(epochs if piece.unit == "epoch" else epochs * self.steps_per_epoch)
        for g in optimizer.param_groups:
            g.setdefault("initial_lr", g["lr"])
        self._start()

    def _start(self) -> None:
        for g in self.optimizer.param_groups:
            g["lr"] = g["initial_lr"]
        self.iterations = 0
        self.counters = [_Counter(p) for p in self.pieces]
        for c in self.counters:
            c.advance(self.optimizer.param_groups)

    def step(self) -> None:
        self.iterations += 1
        end_of_epoch = self.iterations % self.steps_per_epoch == 0
        for c in self.counters:
            if c.piece.unit == "iter" or end_of_epoch:
                c.advance(self.optimizer.param_groups)

    def state_dict(self) -> Dict[str, Any]:
        return {"iterations": self.iterations}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self._start()
        for _ in range(int(state["iterations"])):
            self.step()


def _schedule(piece: type):
    """The catalog's implementation of a piece: ``(optimizer, **options, epochs=, steps_per_epoch=)``
    -> a chain of that one piece, as every lr schedule of the catalog is built; ``.piece`` is the
    class, which ``chain(...)`` builds its pieces from."""

    def build(optimizer, *, epochs: int, steps_per_epoch: int, **options: Any) -> Chain:
        return Chain(optimizer, [piece(**options)], epochs=epochs, steps_per_epoch=steps_per_epoch)

    own = list(inspect.signature(piece).parameters.values())
    kw = inspect.Parameter.KEYWORD_ONLY
    build.__signature__ = inspect.Signature(
        [inspect.Parameter("optimizer", inspect.Parameter.POSITIONAL_OR_KEYWORD)] + own
        + [inspect.Parameter("epochs", kw, annotation=int), inspect.Parameter("steps_per_epoch", kw, annotation=int)])
    build.__name__ = build.__qualname__ = piece.__name__
    build.__doc__ = piece.__doc__
    build.piece = piece
    return build


linear_factor = _schedule(LinearFactor)
constant_factor = _schedule(ConstantFactor)
multistep = _schedule(MultiStep)
exponential = _schedule(Exponential)
cosine_annealing = _schedule(CosineAnnealing)
poly = _schedule(Poly)
one_cycle = _schedule(OneCycle)
warmup_linear = _schedule(WarmupLinear)
warmup_cosine = _schedule(WarmupCosine)
warmup_poly = _schedule(WarmupPoly)
