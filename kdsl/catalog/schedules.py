"""Loss-weight schedules (``loss kd = kl_div(...) * linear(0.0, 1.0, epochs=5)``)."""

from kdsl.catalog.types import FLOAT, NON_NEGATIVE, Param, declarer, each, list_of, optional

_EPOCHS = Param("epochs", optional(FLOAT), None, "epochs to go from start to end (default: the whole run)",
                NON_NEGATIVE)

_schedule = declarer("schedule", __name__)

COMPONENTS = (
    _schedule("constant", "Constant", "the same weight throughout",
              "w(t) = value.", options=(Param("value", FLOAT, 1.0),)),
    _schedule("linear", "Linear", "linear ramp from start to end",
              "w(t) = start + (end - start) * min(t / epochs, 1), t in (fractional) epochs.",
              options=(Param("start", FLOAT, 0.0), Param("end", FLOAT, 1.0), _EPOCHS)),
    _schedule("warmup", "Warmup", "ramp from 0 to value, then hold",
              "w(t) = value * min(t / epochs, 1), as DKD warms up its loss weight "
              "(Zhao et al., Decoupled Knowledge Distillation, CVPR 2022).",
              options=(Param("value", FLOAT, 1.0), Param("epochs", FLOAT, 5.0, constraint=NON_NEGATIVE))),
    _schedule("cosine", "Cosine", "half-cosine from start to end",
              "w(t) = end + (start - end) * (1 + cos(pi * min(t / epochs, 1))) / 2.",
              options=(Param("start", FLOAT, 1.0), Param("end", FLOAT, 0.0), _EPOCHS)),
    _schedule("step", "Step", "multiply by gamma at each milestone",
              "w(t) = value * gamma ** (number of milestones m with t >= m).",
              options=(Param("value", FLOAT, 1.0),
                       Param("milestones", list_of(FLOAT), [], constraint=each(NON_NEGATIVE)),
                       Param("gamma", FLOAT, 0.1, constraint=NON_NEGATIVE))),
)
