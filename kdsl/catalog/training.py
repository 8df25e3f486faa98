"""Optimizers and learning-rate schedules for ``kdsl train`` (``train { optimizer = sgd(...) }``)."""

from kdsl.catalog.settings import MAX_LR
from kdsl.catalog.types import (BOOL, FLOAT, INT, NON_NEGATIVE, PROBABILITY, STR, Param, choice,
                                declarer, each, interval, list_of)

_WARMUP = Param("warmup_epochs", FLOAT, 0.0, "linear warm-up from 0 over this many epochs", NON_NEGATIVE)
_LR = "learning rate"
# above 0, and small enough for torch to step with (1e308 overflowed a float32 step: issue #26.12)
_LR_RANGE = interval(0, MAX_LR, lo_open=True)
# mmengine's paramwise_cfg multipliers, by parameter role (a bias: named *.bias; a norm: any other 1-d)
_PARAMWISE = (Param("bias_lr_mult", FLOAT, 1.0, "lr multiplier of biases", NON_NEGATIVE),
              Param("bias_decay_mult", FLOAT, 1.0, "weight-decay multiplier of biases", NON_NEGATIVE),
              Param("norm_decay_mult", FLOAT, 1.0, "weight-decay multiplier of norm layers' parameters",
                    NON_NEGATIVE))
_DECAY = "L2 penalty (decoupled for AdamW)"
# torch.optim's Adam and AdamW check 0 <= beta < 1 for both of exactly two betas
_BETAS = each(interval(0, 1, hi_open=True), min_items=2, max_items=2)

_optimizer = declarer("optimizer", __name__)
_lr_schedule = declarer("lr_schedule", __name__)


def _adam(name: str, summary: str, doc: str, weight_decay: float, decay_norm_and_bias: bool):
    return _optimizer(name, name, summary, doc, options=(
        Param("lr", FLOAT, 1e-3, _LR, _LR_RANGE),
        Param("betas", list_of(FLOAT), [0.9, 0.999], "moment decay rates", _BETAS),
        Param("weight_decay", FLOAT, weight_decay, _DECAY, NON_NEGATIVE),
        Param("decay_norm_and_bias", BOOL, decay_norm_and_bias)) + _PARAMWISE)


COMPONENTS = (
    _optimizer("sgd", "sgd", "stochastic gradient descent with momentum",
               "torch.optim.SGD; weight decay is not applied to norm layers' and biases' parameters "
               "when decay_norm_and_bias is false.",
               options=(Param("lr", FLOAT, 0.05, _LR, _LR_RANGE),
                        Param("momentum", FLOAT, 0.9, "momentum factor", PROBABILITY),
                        Param("weight_decay", FLOAT, 5e-4, _DECAY, NON_NEGATIVE),
                        Param("nesterov", BOOL, False), Param("decay_norm_and_bias", BOOL, True)) + _PARAMWISE),
    _adam("adam", "Adam (Kingma & Ba, ICLR 2015)", "torch.optim.Adam.", 0.0, True),
    _adam("adamw", "AdamW (Loshchilov & Hutter, ICLR 2019)",
          "torch.optim.AdamW with decoupled weight decay.", 0.01, False),
    _optimizer("torch_optimizer", "torch_optimizer", "any torch.optim optimizer, its options passed through",
               "torch.optim.<type>(params, **options), e.g. torch_optimizer(type=\"RMSprop\", lr=0.01, "
               "alpha=0.9); type may also be a reference \"pkg.module:Class\" to an Optimizer subclass. "
               "The class and its options are checked against its constructor before training (KD772).",
               options=(Param("type", STR, doc="torch.optim class name, or \"pkg.module:Class\""),),
               open_options=True),
    _lr_schedule("torch_scheduler", "TorchScheduler", "any torch.optim.lr_scheduler class, options passed through",
                 "torch.optim.lr_scheduler.<type>(optimizer, **options), stepped after every optimizer step "
                 "(unit=\"iter\") or at each epoch's end (unit=\"epoch\"), e.g. "
                 "torch_scheduler(type=\"StepLR\", step_size=30, gamma=0.1); type may be a reference "
                 "\"pkg.module:Class\". Checked against the class's constructor before training (KD772).",
                 options=(Param("type", STR, doc="torch.optim.lr_scheduler class name, or \"pkg.module:Class\""),
                          Param("unit", choice("iter", "epoch"), "epoch", "when it steps")),
                 open_options=True),
    _lr_schedule("constant", "constant_lr", "keep the learning rate",
                 "lr(t) = lr, after an optional linear warm-up.", options=(_WARMUP,)),
    _lr_schedule("cosine", "cosine_lr", "cosine annealing to min_lr",
                 "lr(t) = min_lr + (lr - min_lr) * (1 + cos(pi * t / T)) / 2, updated every step "
                 "(Loshchilov & Hutter, SGDR, ICLR 2017), after an optional linear warm-up.",
                 options=(Param("min_lr", FLOAT, 0.0, "learning rate at the end", NON_NEGATIVE), _WARMUP)),
    _lr_schedule("step", "step_lr", "multiply by gamma at milestone epochs",
                 "lr(t) = lr * gamma ** (number of milestones passed); the CIFAR distillation recipe "
                 "is step(milestones=[150, 180, 210], gamma=0.1) over 240 epochs.",
                 options=(Param("milestones", list_of(INT), [150, 180, 210], "epochs at which to multiply",
                                each(NON_NEGATIVE)),
                          Param("gamma", FLOAT, 0.1, "factor applied at each milestone", NON_NEGATIVE),
                          _WARMUP)),
)
