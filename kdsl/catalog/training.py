"""Optimizers and learning-rate schedules for ``kdsl train`` (``train { optimizer = sgd(...) }``)."""

from kdsl.catalog.types import BOOL, FLOAT, INT, Component, Param, list_of

_WARMUP = Param("warmup_epochs", FLOAT, 0.0, "linear warm-up from 0 over this many epochs")

COMPONENTS = (
    Component("optimizer", "sgd", "kdsl.components.training:sgd", "stochastic gradient descent with momentum",
              "torch.optim.SGD; weight decay is not applied to norm layers' and biases' parameters "
              "when decay_norm_and_bias is false.",
              options=(Param("lr", FLOAT, 0.05), Param("momentum", FLOAT, 0.9),
                       Param("weight_decay", FLOAT, 5e-4), Param("nesterov", BOOL, False),
                       Param("decay_norm_and_bias", BOOL, True))),
    Component("optimizer", "adam", "kdsl.components.training:adam", "Adam (Kingma & Ba, ICLR 2015)",
              "torch.optim.Adam.",
              options=(Param("lr", FLOAT, 1e-3), Param("betas", list_of(FLOAT), [0.9, 0.999]),
                       Param("weight_decay", FLOAT, 0.0), Param("decay_norm_and_bias", BOOL, True))),
    Component("optimizer", "adamw", "kdsl.components.training:adamw", "AdamW (Loshchilov & Hutter, ICLR 2019)",
              "torch.optim.AdamW with decoupled weight decay.",
              options=(Param("lr", FLOAT, 1e-3), Param("betas", list_of(FLOAT), [0.9, 0.999]),
                       Param("weight_decay", FLOAT, 0.01), Param("decay_norm_and_bias", BOOL, False))),
    Component("lr_schedule", "constant", "kdsl.components.training:constant_lr", "keep the learning rate",
              "lr(t) = lr, after an optional linear warm-up.", options=(_WARMUP,)),
    Component("lr_schedule", "cosine", "kdsl.components.training:cosine_lr", "cosine annealing to min_lr",
              "lr(t) = min_lr + (lr - min_lr) * (1 + cos(pi * t / T)) / 2, updated every step "
              "(Loshchilov & Hutter, SGDR, ICLR 2017), after an optional linear warm-up.",
              options=(Param("min_lr", FLOAT, 0.0), _WARMUP)),
    Component("lr_schedule", "step", "kdsl.components.training:step_lr", "multiply by gamma at milestone epochs",
              "lr(t) = lr * gamma ** (number of milestones passed); the CIFAR distillation recipe "
              "is step(milestones=[150, 180, 210], gamma=0.1) over 240 epochs.",
              options=(Param("milestones", list_of(INT), [150, 180, 210]), Param("gamma", FLOAT, 0.1),
                       _WARMUP)),
)
