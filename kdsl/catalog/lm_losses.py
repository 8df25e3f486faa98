"""Language-model distillation losses: token-level divergences of [N, T, V] logits, TinyBERT's
hidden-state and attention MSE, MiniLM's self-attention relation loss (no torch here).

The implementations live in :mod:`kdsl.components.lm_losses`. The vocabulary is the last
dimension of the logits and every other dimension is a token position ([N, T, V], or [N, V] for
one token per sample). The token losses average over the tokens that count: those where
``mask`` (``batch.attention_mask``) is non-zero and, when ``labels`` are given, whose label is
not ``ignore_index`` (-100, the label Hugging Face collators give padding and prompt tokens).
Neither reference framework (torchdistill, MMRazor) covers language models.
"""

from __future__ import annotations

from dataclasses import dataclass
from kdsl.catalog.shapes import PairRule, Problem, ShapeRule, not_integer, rank, same_shape, shape_text
from kdsl.catalog.types import (BOOL, COUNT, FLOAT, INT, LABELS, POSITIVE, TENSOR, Constraint,
                                Param, choice, declarer, interval, optional)


_HINTON = "Hinton, Vinyals and Dean, Distilling the Knowledge in a Neural Network, 2015"
_GKD = ("Agarwal et al., On-Policy Distillation of Language Models: Learning from Self-Generated "
        "Mistakes (GKD), ICLR 2024")
_TINYBERT = "Jiao et al., TinyBERT: Distilling BERT for Natural Language Understanding, " \
            "Findings of EMNLP 2020"
_MINILM = "Wang et al., MiniLM: Deep Self-Attention Distillation for Task-Agnostic Compression " \
          "of Pre-Trained Transformers, NeurIPS 2020"


# --------------------------------------------------------------------------------------------
# Shape rules of token tensors (the words "vocabulary" and "sequence" in their messages)
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SameTokens(PairRule):
    """Student and teacher logits have the same vocabulary size (last dimension) and the same
    token positions (every other dimension: batch size and sequence length)."""

    def check(self, infos):
        sa, sb = infos[self.a].shape, infos[self.b].shape
        got = f"got {shape_text(sa)} and {shape_text(sb)}"
        if not sa or not sb:
            return f"'{self.a}' and '{self.b}' must be logits [N, T, V], {got}"
        if sa[-1] != sb[-1]:
            # two tokenizers: no connector maps one vocabulary's tokens onto the other's
            return Problem(f"the vocabulary sizes differ: '{self.a}' has {sa[-1]} tokens and '{self.b}' "
                           f"{sb[-1]} (last dimension), {got}; distilling between two tokenizers "
                           "(cross-tokenizer distillation) is not supported: give both models one "
                           "tokenizer's vocabulary", "KD545")
        if sa[:-1] != sb[:-1]:
            what = "batch size and sequence length" if len(sa) == len(sb) == 3 else "token positions"
            return (f"'{self.a}' and '{self.b}' must have the same {what} (all dimensions but the "
                    f"last), {got}")
        return None

    def describe(self):
        return f"{self.a} and {self.b} have the same vocabulary size and sequence length"


@dataclass(frozen=True)
class PerToken(ShapeRule):
    """``per_token`` holds one value per token position of ``tokens`` (its shape without the
    last dimension: [N, T] for [N, T, V] logits); ``integer`` asks for integer labels."""

    per_token: str
    tokens: str
    integer: bool = False

    def check(self, infos):
        mine, theirs = infos[self.per_token], infos[self.tokens]
        want = tuple(theirs.shape[:-1])
        wrong_dtype = not_integer(self.per_token, mine, "token labels") if self.integer else None
        if wrong_dtype:
            return wrong_dtype
        if tuple(mine.shape) != want:
            return (f"'{self.per_token}' must have shape {shape_text(want)}, one value per token of "
                    f"'{self.tokens}' {theirs.describe()}, got {mine.describe()}")
        return None

    def describe(self):
        return f"{self.per_token} has one value per token of {self.tokens}"


@dataclass(frozen=True)
class AttentionMask(ShapeRule):
    """``mask`` [N, T] masks the tokens of attention maps ``maps`` [N, H, T, T]."""

    mask: str
    maps: str

    def check(self, infos):
        mask, maps = infos[self.mask], infos[self.maps]
        want = (maps.shape[0], maps.shape[-1]) if len(maps.shape) == 4 else None
        if want is not None and tuple(mask.shape) != want:
            return (f"'{self.mask}' must have shape {shape_text(want)} (batch size and sequence length "
                    f"of '{self.maps}' {maps.describe()}), got {mask.describe()}")
        return None

    def describe(self):
        return f"{self.mask} has the batch size and sequence length of {self.maps}"


@dataclass(frozen=True)
class SquareMaps(ShapeRule):
    """``a`` is [N, H, T, T]: a T x T map per head."""

    a: str

    def check(self, infos):
        shape = infos[self.a].shape
        if len(shape) != 4 or shape[2] != shape[3]:
            return f"'{self.a}' must be attention maps [N, H, T, T], got {shape_text(shape)}"
        return None

    def describe(self):
        return f"{self.a} is [N, H, T, T]"


def token_rules(*, labels: bool = True):
    """The rules of a token loss on logits ``preds_S``/``preds_T`` with ``mask`` (and ``labels``)."""
    rules = (SameTokens("preds_S", "preds_T"), rank("preds_S", 2, 3),
             PerToken("mask", "preds_S"))
    return rules + ((PerToken("labels", "preds_S", integer=True),) if labels else ())


# --------------------------------------------------------------------------------------------
# Shared inputs and options
# --------------------------------------------------------------------------------------------
_S = Param("preds_S", TENSOR, doc="student logits, [N, T, V]")
_T = Param("preds_T", TENSOR, doc="teacher logits, [N, T, V]")
_MASK = Param("mask", optional(TENSOR), None,
              "tokens that count (non-zero), [N, T], e.g. batch.attention_mask")
_LABELS = Param("labels", optional(LABELS), None,
                "token labels, [N, T]; tokens labelled ignore_index do not count")
_TOKEN_INPUTS = (_S, _T, _MASK, _LABELS)
_TAU = Param("tau", FLOAT, 1.0, "softmax temperature", POSITIVE)
_IGNORE = Param("ignore_index", INT, -100, "label of the tokens left out (with labels)")
_SHIFT = Param("shift", BOOL, False,
               "causal LM: position t predicts token t + 1, so the last position and the first "
               "label / mask entry are dropped")
_DETACH = Param("detach_teacher", BOOL, True, "stop gradients at the teacher's logits")
_TOKEN_OPTIONS = (_IGNORE, _SHIFT, _DETACH)

_MEAN_OVER_TOKENS = """M is the set of tokens that count (mask non-zero, label not
        ignore_index; all tokens when neither is given) and the loss is the mean of the per-token
        divergence over M (0, with zero gradients, when M is empty). shift=true drops the last
        position of the logits and the first of labels and mask (causal LMs, whose position t
        predicts token t + 1)."""


_loss = declarer("loss", __name__, inputs=_TOKEN_INPUTS)


COMPONENTS = (
    _loss(
        "token_kl", "TokenKL",
        "Token-level forward KL: Hinton's KD at every token, averaged over the unmasked tokens.",
        f"""With p_T = softmax(z_T / tau) and p_S = softmax(z_S / tau) over the vocabulary at each
        token, L = (1 / |M|) sum_(n,t) in M tau^2 * KL(p_T || p_S) = tau^2 sum_v p_T,v (log p_T,v
        - log p_S,v). {_MEAN_OVER_TOKENS} The mode-covering direction: the student spreads
        mass over everything the teacher deems likely. On [N, V] logits without a mask it equals
        kl_div(tau=tau). Hinton, Vinyals and Dean, "Distilling the Knowledge in a Neural
        Network", 2015; token-level (word-level) KD as in Kim and Rush, "Sequence-Level
        Knowledge Distillation", EMNLP 2016.""",
        _HINTON,
        options=(_TAU,) + _TOKEN_OPTIONS,
        rules=token_rules(),
    ),
    _loss(
        "token_reverse_kl", "TokenReverseKL",
        "Token-level reverse KL(p_S || p_T), averaged over the unmasked tokens (mode seeking).",
        f"""L = (1 / |M|) sum_(n,t) in M tau^2 * KL(p_S || p_T) = tau^2 sum_v p_S,v (log p_S,v -
        log p_T,v), p = softmax(z / tau) over the vocabulary. {_MEAN_OVER_TOKENS} The
        mode-seeking direction: the student is penalized for mass where the teacher has little,
        which suits a small student and generation (MiniLLM, Gu et al., ICLR 2024; GKD, Agarwal
        et al., ICLR 2024). Gradients reach the student through both factors of p_S.""",
        _GKD,
        options=(_TAU,) + _TOKEN_OPTIONS,
        rules=token_rules(),
    ),
    _loss(
        "token_jsd", "TokenJSD",
        "GKD's generalized Jensen-Shannon divergence JSD(beta) per token, over unmasked tokens.",
        f"""With P = p_T, Q = p_S (softmax(z / tau) over the vocabulary) and the mixture
        M_beta = beta P + (1 - beta) Q, JSD(beta)(P || Q) = beta KL(P || M_beta) + (1 - beta)
        KL(Q || M_beta), Eq. (GKD Sec. 3) of Agarwal et al.; L = (1 / |M|) sum over the tokens
        in M. {_MEAN_OVER_TOKENS} beta = 0.5 is the symmetric Jensen-Shannon divergence
        (bounded by log 2); beta near 0 behaves like forward KL and near 1 like reverse KL, up to
        a factor (use token_kl and token_reverse_kl for the limits themselves). The mixture is
        computed in log space (log-sum-exp), so it is finite where either distribution
        underflows. Unlike token_kl there is no tau^2 factor (as in GKD and TRL's
        generalized_jsd_loss). Agarwal et al., "On-Policy Distillation of Language Models:
        Learning from Self-Generated Mistakes", ICLR 2024.""",
        _GKD,
        options=(Param("beta", FLOAT, 0.5, "weight of the teacher in the mixture",
                       interval(0, 1, lo_open=True, hi_open=True)), _TAU) + _TOKEN_OPTIONS,
        rules=token_rules(),
    ),
    _loss(
        "token_topk_kl", "TokenTopKKL",
        "Top-k logit KD: forward KL over the teacher's k most likely tokens, both renormalized.",
        f"""At each token, I is the set of the k largest teacher logits (ties broken by
        torch.topk). Both distributions are renormalized over I: p_T^k = softmax(z_T[I] / tau),
        p_S^k = softmax(z_S[I] / tau), and L = (1 / |M|) sum_(n,t) in M tau^2 * KL(p_T^k ||
        p_S^k). {_MEAN_OVER_TOKENS} This is the variant that renormalizes the student over the
        teacher's top-k as well (the student's mass outside I is not penalized), as when only
        the teacher's top-k logits are stored; k = V is token_kl. tail="bucket" keeps the
        mass outside I as one more category instead: with p = softmax(z_T / tau) and q =
        softmax(z_S / tau) unrenormalized, L = tau^2 [sum_(i in I) p_i log(p_i / q_i) + p_rest
        log(p_rest / q_rest)], p_rest = 1 - sum_(i in I) p_i and q_rest likewise, a KL over k +
        1 categories that penalizes the student's excess mass outside I (it is at most
        token_kl, which it equals when k = V). A top-k teacher store keeps the tail's mass, so on
        its logits this loss equals the one on the full logits at tau = 1 (the classes outside
        I there share one logit). Needs k <= V (checked at the first step).""",
        _HINTON,
        options=(Param("k", INT, 50, "teacher's most likely tokens kept", COUNT), _TAU)
        + _TOKEN_OPTIONS + (Param("tail", choice("renormalize", "bucket"), "renormalize",
                                  "the mass outside the top k: dropped, both sides renormalized "
                                  "over the top k, or kept as one more category"),),
        rules=token_rules(),
    ),
    _loss(
        "hidden_mse", "HiddenMSE",
        "TinyBERT's hidden-state (and embedding) loss: MSE of token features over unmasked tokens.",
        """L_hidn = MSE(H_S W_h, H_T): with H_S W_h the student's hidden states [N, T, d]
        mapped to the teacher's width d by a linear connector (hidden_mse(proj(h_s), h_t),
        connector proj = linear()) and H_T the teacher's, L = sum over the tokens in M and the d
        features of (s - t)^2 / (|M| d). Without a mask M is every token and L is
        F.mse_loss, TinyBERT's code (which does not mask padding); the embedding-layer loss is
        the same formula on the embeddings' outputs. Jiao et al., "TinyBERT: Distilling BERT for
        Natural Language Understanding", Findings of EMNLP 2020, Eq. (8)-(9).""",
        _TINYBERT,
        inputs=(Param("preds_S", TENSOR, doc="student hidden states mapped to the teacher's "
                      "width, [N, T, d]"),
                Param("preds_T", TENSOR, doc="teacher hidden states, [N, T, d]"), _MASK),
        rules=(same_shape("preds_S", "preds_T"), rank("preds_S", 3), PerToken("mask", "preds_S")),
    ),
    _loss(
        "attention_mse", "AttentionMSE",
        "TinyBERT's attention loss: MSE of the heads' attention matrices (scores) per layer.",
        """L_attn = (1 / h) sum_i MSE(A_S,i, A_T,i), A_i the [T, T] attention matrix of head i
        (the scaled scores QK^T / sqrt(d_k) before softmax, as TinyBERT uses), i.e. the mean of
        (A_S - A_T)^2 over the [N, h, T, T] entries. Entries <= masked_below (BERT adds -10000
        at padded keys) count as 0 on both sides, as TinyBERT's code does; none keeps them.
        With a mask, only the pairs (query, key) of two unmasked tokens count: L = sum over them
        / (h * sum_n |M_n|^2). Student and teacher need the same number of heads (TinyBERT maps
        each student layer to one teacher layer with as many heads). Jiao et al., "TinyBERT:
        Distilling BERT for Natural Language Understanding", Findings of EMNLP 2020, Eq.
        (7).""",
        _TINYBERT,
        inputs=(Param("preds_S", TENSOR, doc="student attention scores, [N, h, T, T]"),
                Param("preds_T", TENSOR, doc="teacher attention scores, [N, h, T, T]"),
                Param("mask", optional(TENSOR), None, "tokens that count (non-zero), [N, T]")),
        options=(Param("masked_below", optional(FLOAT), -100.0,
                       "entries <= this count as 0 (TinyBERT's code); none: keep all",
                       Constraint(hi=0, hi_open=True)),),
        rules=(same_shape("preds_S", "preds_T"), SquareMaps("preds_S"),
               AttentionMask("mask", "preds_S")),
    ),
    _loss(
        "minilm", "MiniLMLoss",
        "MiniLM's self-attention transfer: KL of attention and of value-relation distributions.",
        """For the last Transformer layer, A = softmax(Q K^T / sqrt(d_k)) are the attention
        distributions and VR = softmax(V V^T / sqrt(d_k)) the value relations, [N, h, T, T] per
        head. L_AT = (1 / (h |x|)) sum_a sum_t KL(A_T,a,t || A_S,a,t) and L_VR the same for VR,
        each KL over the keys of one query row t; L = L_AT + L_VR, averaged over the batch. With
        a mask, the mean runs over the unmasked query rows only (the distributions should give
        masked keys zero probability already). scores=true takes the pre-softmax matrices
        (Q K^T / sqrt(d_k), V V^T / sqrt(d_k)) and applies the softmax here, masked keys left
        out. Student and teacher need the same number of heads; their hidden sizes may differ,
        which is the point of transferring relations. Wang et al., "MiniLM: Deep Self-Attention
        Distillation for Task-Agnostic Compression of Pre-Trained Transformers", NeurIPS 2020,
        Eq. (5)-(7).""",
        _MINILM,
        inputs=(Param("attn_S", TENSOR, doc="student attention distributions, [N, h, T, T]"),
                Param("attn_T", TENSOR, doc="teacher attention distributions, [N, h, T, T]"),
                Param("value_S", TENSOR, doc="student value relations, [N, h, T, T]"),
                Param("value_T", TENSOR, doc="teacher value relations, [N, h, T, T]"),
                Param("mask", optional(TENSOR), None, "tokens that count (non-zero), [N, T]")),
        options=(Param("scores", BOOL, False,
                       "inputs are pre-softmax scores; the softmax is taken here"),
                 _DETACH),
        rules=(same_shape("attn_S", "attn_T"), same_shape("value_S", "value_T"),
               same_shape("attn_S", "value_S"), SquareMaps("attn_S"),
               AttentionMask("mask", "attn_S")),
    ),
)
