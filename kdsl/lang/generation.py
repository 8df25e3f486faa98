"""The ``generate`` statement: a model completes the batch's prompts during training, and the
losses then score the generated sequences under every model (on-policy and sequence-level
distillation of language models)::

    generate from student(max_new_tokens=6, temperature=1.0, top_p=1.0, lmbda=0.5)

* GKD (Agarwal et al., ICLR 2024): ``generate from student(lmbda=0.5)`` with ``token_jsd(...,
  beta=...)``: a fraction ``lmbda`` of the steps train on the student's own samples, the others
  on the data's completions;
* sequence-level KD (Kim and Rush, EMNLP 2016): ``generate from teacher(temperature=0)`` with
  ``model_loss(s.loss)``: the student learns the teacher's greedy answers as targets;
* MiniLLM-style (Gu et al., ICLR 2024): ``generate from student`` with ``token_reverse_kl``: the
  reverse KL on the student's samples (its token-level form; not the policy-gradient estimator).

Its options (:data:`OPTIONS`) are literals; the statement stands at the top level, at most once.
The model must be able to generate: a causal language model (``kdsl.zoo:gpt``, a Hugging Face
causal LM); ``kdsl check`` refuses a model that is known not to (KD231), and compiling refuses
one without a ``generate`` method (KD550). The runtime is :mod:`kdsl.runtime.generation`.
"""

from __future__ import annotations

from typing import Any, Dict, NamedTuple, Optional

from kdsl.core.diagnostics import Note
from kdsl.core.suggest import did_you_mean
from kdsl.lang import ir
from kdsl.lang.literal import try_literal

__all__ = ["OPTIONS", "Option", "lower", "text", "check", "options_of", "generating_factory"]


class Option(NamedTuple):
    """One option of ``generate``: its type, default, inclusive range and what it does."""

    kind: type
    default: Any
    low: Optional[float]
    high: Optional[float]
    doc: str


OPTIONS: Dict[str, Option] = {
    "max_new_tokens": Option(int, 16, 1, 4096, "the most tokens generated after each prompt"),
    "temperature": Option(float, 1.0, 0.0, 100.0, "divides the logits before sampling; 0 is greedy"),
    "top_p": Option(float, 1.0, 0.0, 1.0, "nucleus sampling: draw from the smallest set of tokens whose "
                    "probability reaches top_p (1: every token)"),
    "lmbda": Option(float, 1.0, 0.0, 1.0, "the fraction of steps that generate (GKD's lambda); the other "
                    "steps train on the data's completions"),
    "eos": Option(int, None, 0, None, "the token that ends a completion (kept in it); none: the model's "
                  "own (a Hugging Face generation config's), else max_new_tokens always"),
    "pad": Option(int, 0, 0, None, "the token id that pads the generated batch"),
}

# factories of kdsl that make causal language models, and kdsl's that make none (a factory of
# another package is asked when the models are built: KD550)
GENERATING = ("kdsl.zoo:gpt", "kdsl.hub:hf_causal_lm", "kdsl.hub:hf_pretrained")


def generating_factory(decl: ir.ModelDecl) -> Optional[bool]:
    """Whether the model a declaration makes can generate: True, False, or None (not known
    without building it)."""
    if decl.role == "generator":
        return False
    if decl.factory is None:
        return None
    ref = decl.factory.ref
    if ref in GENERATING:
        return True
    if ref == "kdsl.hub:hf_model":
        cls = next((k.value for k in decl.factory.kwargs if k.name == "model"), None)
        ok, value = try_literal(cls) if cls is not None else (False, None)
        return bool(ok and isinstance(value, str) and value.endswith(("CausalLM", "Seq2SeqLM")))
    return False if ref.startswith("kdsl.") else None


def lower(b, t, span) -> ir.GenerateDecl:
    child = t.children[0]
    if getattr(child, "data", None) is None:  # `generate from student`: every option's default
        where = b.span(child)
        return ir.GenerateDecl(call=ir.Call(func=str(child), func_span=where, span=where), span=span)
    return ir.GenerateDecl(call=b.call(child), span=span)


def text(p, g: ir.GenerateDecl) -> str:
    if not g.call.args and not g.call.kwargs:
        return f"generate from {g.call.func}"
    return f"generate from {p.visit(g.call)}"


def options_of(g: ir.GenerateDecl) -> Dict[str, Any]:
    """The statement's options, defaults filled in (a verified statement's values are literals)."""
    out = {name: o.default for name, o in OPTIONS.items()}
    for k in g.call.kwargs:
        ok, value = try_literal(k.value)
        if ok:
            out[k.name] = float(value) if OPTIONS[k.name].kind is float else value
    return out


def _check_option(v, k: ir.Keyword) -> None:
    option = OPTIONS.get(k.name)
    if option is None:
        v.diags.error("KD232", f"generate has no option '{k.name}'", k.span or k.value.span,
                      hint=did_you_mean(k.name, list(OPTIONS)) or "options: " + ", ".join(OPTIONS))
        return
    ok, value = try_literal(k.value)
    if value is None and ok and option.default is None:
        return
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok or not number or (option.kind is int and not isinstance(value, int)):
        v.diags.error("KD232", f"generate's {k.name} takes {'an integer' if option.kind is int else 'a number'}",
                      k.value.span, hint=f"{k.name}: {option.doc}")
        return
    if (option.low is not None and value < option.low) or (option.high is not None and value > option.high) \
            or (k.name == "top_p" and value == 0):
        bounds = f"({option.low}, {option.high}]" if k.name == "top_p" else \
            f"[{option.low}, {option.high if option.high is not None else 'inf'}]"
        v.diags.error("KD232", f"generate's {k.name} is {value}, outside {bounds}", k.value.span,
                      hint=f"{k.name}: {option.doc}")


def check(v, g: ir.GenerateDecl, use) -> ir.GenerateDecl:
    """The model generates (KD231), the options are known literals in range (KD232), one
    statement per spec (KD233)."""
    call = g.call
    first = getattr(v, "_generate_first", None)
    if first is not None:
        v.diags.error("KD233", "a second 'generate'", g.span, hint="a spec generates from one model",
                      notes=[Note(message="the first 'generate'", span=first.span)])
    v._generate_first = first or g
    for arg in call.args:
        v.diags.error("KD232", "generate's options are named", arg.span,
                      hint="e.g. generate from student(max_new_tokens=16, temperature=1.0)")
    seen = set()
    for k in call.kwargs:
        if k.name in seen:
            v.diags.error("KD232", f"generate's {k.name} is given twice", k.value.span)
        seen.add(k.name)
        _check_option(v, k)
    if call.method is not None or not v._model_ref(call.func, call.func_span, use.position):
        return g
    decl = v.models[call.func]
    if generating_factory(decl) is False:
        made = "a generator of inputs" if decl.role == "generator" else f"model(\"{decl.factory.ref}\")"
        v.diags.error("KD231", f"'{call.func}' cannot generate text: it is {made}", call.func_span,
                      hint="generate from a causal language model (kdsl.zoo:gpt, kdsl.hub:hf_causal_lm, "
                           "kdsl.hub:hf_pretrained)",
                      notes=[Note(message=f"'{call.func}' declared", span=decl.name_span)])
    return g

