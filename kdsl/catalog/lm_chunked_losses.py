"""Chunked token losses for large vocabularies: the token divergences of :mod:`kdsl.catalog.lm_losses`
computed from the final hidden states and the LM heads' weights, a chunk of positions at a time,
so that neither model's [N, T, V] logits exist at once (no torch here).

The implementations live in :mod:`kdsl.components.lm_chunked_losses`. Each entry takes, per model,
the hidden states that enter the LM head (``output of student.ln_f`` for the zoo GPT, ``input 0 of
student.lm_head`` for a Hugging Face causal LM) and the head's weight (``param
student.lm_head.weight``), optionally its bias; the logits of a chunk are ``hidden @ weight^T +
bias``. The per-token formula, the tokens that count and the mean over them are those of the
unchunked entry of the same name without ``_chunked``.
"""

from __future__ import annotations

from dataclasses import dataclass

from kdsl.catalog.lm_losses import _GKD, _HINTON, PerToken, _IGNORE, _LABELS, _MASK, _SHIFT, _DETACH, _TAU
from kdsl.catalog.shapes import ShapeRule, rank, shape_text
from kdsl.catalog.types import COUNT, FLOAT, INT, TENSOR, Param, declarer, interval, optional

# --------------------------------------------------------------------------------------------
# Shape rules of a head given as hidden states and weight
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class HeadInputs(ShapeRule):
    """``weight`` is an LM head's [V, d] weight that maps the d features of ``hidden`` ([N, T, d]
    or [N, d]) to V logits."""

    hidden: str
    weight: str

    def check(self, infos):
        h, w = infos[self.hidden], infos[self.weight]
        if len(w.shape) != 2:
            return f"'{self.weight}' must be an LM head's weight [V, d], got {w.describe()}"
        if not h.shape or h.shape[-1] != w.shape[1]:
            return (f"'{self.weight}' {w.describe()} maps {w.shape[1]} features to {w.shape[0]} logits, "
                    f"but '{self.hidden}' {h.describe()} has {h.shape[-1] if h.shape else 0} features "
                    "(last dimension): record the hidden states that enter this head")
        return None

    def describe(self):
        return f"{self.weight} [V, d] maps the d features of {self.hidden}"


@dataclass(frozen=True)
class HeadBias(ShapeRule):
    """``bias`` has one value per row (vocabulary entry) of ``weight``."""

    bias: str
    weight: str

    def check(self, infos):
        b, w = infos[self.bias], infos[self.weight]
        if tuple(b.shape) != tuple(w.shape[:1]):
            return (f"'{self.bias}' must have shape {shape_text(w.shape[:1])}, one value per vocabulary "
                    f"entry of '{self.weight}' {w.describe()}, got {b.describe()}")
        return None

    def describe(self):
        return f"{self.bias} has one value per row of {self.weight}"


@dataclass(frozen=True)
class SameVocabulary(ShapeRule):
    """The two heads have the same vocabulary size V; the hidden states the same token positions."""

    weight_S: str
    weight_T: str
    hidden_S: str
    hidden_T: str

    def check(self, infos):
        ws, wt = infos[self.weight_S], infos[self.weight_T]
        if ws.shape[:1] != wt.shape[:1]:
            return (f"the student's and the teacher's vocabularies differ: '{self.weight_S}' "
                    f"{ws.describe()} has {ws.shape[0] if ws.shape else 0} rows, '{self.weight_T}' "
                    f"{wt.describe()} has {wt.shape[0] if wt.shape else 0} (cross-tokenizer "
                    "distillation is not supported)")
        hs, ht = infos[self.hidden_S], infos[self.hidden_T]
        if hs.shape[:-1] != ht.shape[:-1]:
            return (f"'{self.hidden_S}' and '{self.hidden_T}' must have the same token positions (all "
                    f"dimensions but the last), got {hs.describe()} and {ht.describe()}")
        return None

    def describe(self):
        return (f"{self.weight_S} and {self.weight_T} have the same vocabulary size; logits are "
                f"computed in chunks of positions, never [N, T, V] at once")


# --------------------------------------------------------------------------------------------
# Inputs and options
# --------------------------------------------------------------------------------------------
_HEAD_INPUTS = (
    Param("hidden_S", TENSOR, doc="student hidden states entering its LM head, [N, T, d_S]"),
    Param("weight_S", TENSOR, doc="student LM head weight, [V, d_S] (param student.head.weight)"),
    Param("hidden_T", TENSOR, doc="teacher hidden states entering its LM head, [N, T, d_T]"),
    Param("weight_T", TENSOR, doc="teacher LM head weight, [V, d_T]"),
    _MASK, _LABELS,
    Param("bias_S", optional(TENSOR), None, "student LM head bias, [V] (none: the head has none)"),
    Param("bias_T", optional(TENSOR), None, "teacher LM head bias, [V]"),
)
_CHUNK = Param("chunk", INT, 1024, "token positions whose logits are computed at once", COUNT)
_CHUNKED_OPTIONS = (_IGNORE, _SHIFT, _DETACH, _CHUNK)
_RULES = (rank("hidden_S", 2, 3), HeadInputs("hidden_S", "weight_S"), HeadInputs("hidden_T", "weight_T"),
          SameVocabulary("weight_S", "weight_T", "hidden_S", "hidden_T"),
          HeadBias("bias_S", "weight_S"), HeadBias("bias_T", "weight_T"),
          PerToken("mask", "hidden_S"), PerToken("labels", "hidden_S", integer=True))

_CHUNKED = """The logits z = hidden @ weight^T + bias of both models are computed for `chunk`
        token positions at a time and the loss's value and its gradients (with respect to the
        student's hidden states, head weight and bias; the teacher's too with
        detach_teacher=false) are accumulated chunk by chunk in the forward pass, so the largest
        tensors are [chunk, V] rather than [N, T, V]; the backward pass only scales the stored
        gradients. Equal to the unchunked loss on the logits hidden @ weight^T + bias, up to the
        order of floating-point sums. Records of the hidden states that enter a frozen teacher's
        head let its pass stop before the head, so its logits are never computed. Not twice
        differentiable."""


_loss = declarer("loss", __name__, inputs=_HEAD_INPUTS, rules=_RULES)


COMPONENTS = (
    _loss(
        "token_kl_chunked", "TokenKLChunked",
        "token_kl from hidden states and LM head weights, in chunks of positions (large vocabularies).",
        f"""L = (1 / |M|) sum_(n,t) in M tau^2 * KL(p_T || p_S), p = softmax(z / tau), exactly as
        token_kl. {_CHUNKED} The fused, chunked linear-plus-loss of Liger Kernel's fused linear
        cross-entropy (Hsu et al., 2024), applied to the distillation divergence.""",
        _HINTON,
        options=(_TAU,) + _CHUNKED_OPTIONS,
    ),
    _loss(
        "token_reverse_kl_chunked", "TokenReverseKLChunked",
        "token_reverse_kl from hidden states and LM head weights, in chunks of positions.",
        f"""L = (1 / |M|) sum_(n,t) in M tau^2 * KL(p_S || p_T), exactly as token_reverse_kl.
        {_CHUNKED}""",
        _GKD,
        options=(_TAU,) + _CHUNKED_OPTIONS,
    ),
    _loss(
        "token_jsd_chunked", "TokenJSDChunked",
        "token_jsd (GKD's JSD(beta)) from hidden states and LM head weights, in chunks of positions.",
        f"""JSD(beta)(p_T || p_S) = beta KL(p_T || M) + (1 - beta) KL(p_S || M), M = beta p_T + (1
        - beta) p_S, averaged over the tokens in M exactly as token_jsd. {_CHUNKED}""",
        _GKD,
        options=(Param("beta", FLOAT, 0.5, "weight of the teacher in the mixture",
                       interval(0, 1, lo_open=True, hi_open=True)), _TAU) + _CHUNKED_OPTIONS,
    ),
)
