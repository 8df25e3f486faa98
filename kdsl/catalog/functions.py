"""Tensor functions usable in any expression of a spec (no torch here).

``loss deit = cross_entropy(s_dist, argmax(t_logits, dim=1))``, ``kl_div(s, detach(p))``,
``input = gen(noise(100))``. A function's inputs are values computed at run time (records,
connector outputs, other functions); its options are literals. Implementations are in
:mod:`kdsl.components.functions`; plugins add their own with ``@kdsl.register_function``.
"""

from kdsl.catalog.types import COUNT, FLOAT, INT, POSITIVE, TENSOR, Param, declarer, optional

_X = Param("x", TENSOR, doc="the input tensor")
_DIM = Param("dim", INT, 1, "the dimension (1: classes of [N, C] logits)")
_TAU = Param("tau", FLOAT, 1.0, "temperature", constraint=POSITIVE)
_DML = "Zhang et al., Deep Mutual Learning, CVPR 2018"
_DEIT = ("Touvron et al., Training data-efficient image transformers & distillation through "
         "attention, ICML 2021")


_function = declarer("function", __name__, inputs=(_X,))


COMPONENTS = (
    _function("detach", "Detach", "stop gradients: the value, as a constant",
              """detach(x) = x with no gradient flowing back through it (torch's Tensor.detach).
              Deep mutual learning distils each peer towards the other's detached output (Zhang
              et al., Deep Mutual Learning, CVPR 2018): kl_div(s_logits, detach(p_logits)).""",
              paper=_DML),
    _function("argmax", "Argmax", "index of the largest entry along dim (hard labels)",
              """argmax(x, dim) = the int64 index of the largest entry along ``dim``. DeiT's
              hard-label distillation is cross_entropy(s_dist, argmax(t_logits, dim=1))
              (Touvron et al., Training data-efficient image transformers, ICML 2021). The index
              carries no gradient.""",
              options=(_DIM,), paper=_DEIT),
    _function("softmax", "Softmax", "softmax along dim, with an optional temperature",
              "softmax(x / tau) along dim.",
              options=(_DIM, _TAU)),
    _function("log_softmax", "LogSoftmax", "log-softmax along dim, with an optional temperature",
              "log_softmax(x / tau) along dim.",
              options=(_DIM, _TAU)),
    _function("flatten", "Flatten", "flatten all dimensions from start_dim on",
              "flatten(x, start_dim) = x reshaped to [N, prod(rest)] for start_dim 1.",
              options=(Param("start_dim", INT, 1, "the first dimension flattened"),)),
    _function("noise", "Noise", "standard normal noise, one row per sample of the batch",
              """noise(dim) = a [batch_size, dim] tensor of N(0, 1) samples, drawn from torch's
              generator each time the step evaluates it (seeded by the run's seed). The batch size
              is the train block's batch_size. The latent input of a generator in data-free
              distillation: input = gen(noise(100)).""",
              inputs=(),
              options=(Param("dim", INT, doc="latent dimension", constraint=COUNT),
                       Param("batch_size", optional(INT), None,
                             "rows (default: the run's batch size)", constraint=COUNT))),
)
