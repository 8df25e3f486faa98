"""Chainable learning-rate schedules, per iteration or per epoch (``train { lr_schedule = ... }``).

Each entry is a piece active on ``[begin, end)`` of its unit (``unit="iter"`` or ``"epoch"``;
``end`` defaults to the end of the stage); ``chain(a(...), b(...))`` runs pieces in order, their
effects multiplying, the way mmengine's ``param_scheduler`` list does. The pieces follow
mmengine's schedulers step for step (``linear_factor`` is ``LinearLR``, ...), the ``warmup_*``
ones Hugging Face's ``get_*_schedule_with_warmup``, ``one_cycle`` torch's ``OneCycleLR``.
"""

from kdsl.catalog.types import (FLOAT, INT, NON_NEGATIVE, POSITIVE, PROBABILITY, Param, choice, declarer,
                                each, list_of, optional)

CHAIN = "chain"  # lr_schedule = chain(piece, piece, ...): the one name that takes schedules as arguments


def _span(unit: str):
    return (Param("begin", INT, 0, "first step (in unit) the schedule acts on", NON_NEGATIVE),
            Param("end", optional(INT), None, "step (in unit) it stops at, exclusive (default: the stage's end)",
                  POSITIVE),
            Param("unit", choice("iter", "epoch"), unit, "what begin, end and the schedule's steps count"))


_piece = declarer("lr_schedule", __name__)
_EPOCH, _ITER = _span("epoch"), _span("iter")
_WARMUP = (Param("warmup", INT, 0, "steps of linear warm-up from 0", NON_NEGATIVE),
           Param("total", optional(INT), None, "steps of the whole schedule (default: its span)", POSITIVE))

COMPONENTS = (
    _piece("linear_factor", "linear_factor", "lr x a factor going linearly from start_factor to end_factor",
           "mmengine LinearLR: the factor is start_factor at begin and end_factor at end - 1; "
           "chain(linear_factor(start_factor=0.001, end=500, unit=\"iter\"), ...) is the usual warm-up.",
           options=(Param("start_factor", FLOAT, 1.0 / 3, constraint=PROBABILITY),
                    Param("end_factor", FLOAT, 1.0, constraint=PROBABILITY)) + _EPOCH),
    _piece("constant_factor", "constant_factor", "lr x factor until end",
           "mmengine ConstantLR.", options=(Param("factor", FLOAT, 1.0 / 3, constraint=PROBABILITY),) + _EPOCH),
    _piece("multistep", "multistep", "lr x gamma at each milestone",
           "mmengine MultiStepLR, torch MultiStepLR: milestones count from begin, in unit.",
           options=(Param("milestones", list_of(INT), [], constraint=each(NON_NEGATIVE)),
                    Param("gamma", FLOAT, 0.1, constraint=NON_NEGATIVE)) + _EPOCH),
    _piece("exponential", "exponential", "lr x gamma every step",
           "mmengine ExponentialLR, torch ExponentialLR.",
           options=(Param("gamma", FLOAT, 0.99, constraint=NON_NEGATIVE),) + _EPOCH),
    _piece("cosine_annealing", "cosine_annealing", "half a cosine from lr to eta_min over T_max steps",
           "mmengine CosineAnnealingLR, torch CosineAnnealingLR (recursive form: chains with a warm-up).",
           options=(Param("T_max", optional(INT), None, "steps of the half cosine (default: the span)", POSITIVE),
                    Param("eta_min", FLOAT, 0.0, constraint=NON_NEGATIVE)) + _EPOCH),
    _piece("poly", "poly", "polynomial decay from lr to eta_min over the span",
           "mmengine PolyLR: lr(t) = (lr - eta_min) * (1 - t / (end - begin - 1)) ** power + eta_min.",
           options=(Param("power", FLOAT, 1.0, constraint=NON_NEGATIVE),
                    Param("eta_min", FLOAT, 0.0, constraint=NON_NEGATIVE)) + _ITER),
    _piece("one_cycle", "one_cycle", "the 1cycle policy: up to max_lr, then far below",
           "torch OneCycleLR (two phases): sets the lr itself, whatever comes before it in a chain.",
           paper="Smith & Topin, Super-Convergence, 2017",
           options=(Param("max_lr", optional(FLOAT), None, "peak lr (default: the optimizer's)", POSITIVE),
                    Param("pct_start", FLOAT, 0.3, constraint=PROBABILITY),
                    Param("anneal", choice("cos", "linear"), "cos"),
                    Param("div_factor", FLOAT, 25.0, constraint=POSITIVE),
                    Param("final_div_factor", FLOAT, 1e4, constraint=POSITIVE)) + _ITER),
    _piece("warmup_linear", "warmup_linear", "linear warm-up from 0, then linear decay to 0",
           "transformers.get_linear_schedule_with_warmup(num_warmup_steps=warmup, "
           "num_training_steps=total).", options=_WARMUP + _ITER),
    _piece("warmup_cosine", "warmup_cosine", "linear warm-up from 0, then cosine decay",
           "transformers.get_cosine_schedule_with_warmup.",
           options=_WARMUP + (Param("cycles", FLOAT, 0.5, constraint=NON_NEGATIVE),) + _ITER),
    _piece("warmup_poly", "warmup_poly", "linear warm-up from 0, then polynomial decay to lr_end",
           "transformers.get_polynomial_decay_schedule_with_warmup.",
           options=_WARMUP + (Param("lr_end", FLOAT, 1e-7, constraint=NON_NEGATIVE),
                              Param("power", FLOAT, 1.0, constraint=NON_NEGATIVE)) + _ITER),
)
