"""The ``generate`` statement bound to its model (pass ``bind_generation``): the model must have a
``generate`` (KD550, located at the model's name in the statement); the plan then holds the
:class:`~kdsl.runtime.generation.Rollout` the runtime applies to each step's batch."""

from __future__ import annotations

from kdsl.compiler.plan import Plan
from kdsl.lang.generation import options_of
from kdsl.runtime.generation import Rollout, can_generate


def bind_generation(plan: Plan) -> Plan:
    decl = plan.spec.generation
    if decl is None:
        return plan
    model = plan.models.get(decl.model)
    if model is None:  # not built: reported by build_models
        return plan
    if not can_generate(model):
        plan.diags.error("KD550", f"'{decl.model}' cannot generate: {type(model).__name__} has no "
                         "generate method", decl.call.func_span or decl.span,
                         hint="generate from a causal language model (kdsl.zoo:gpt, a Hugging Face "
                              "...ForCausalLM), or give the model a generate(input_ids, attention_mask, "
                              "max_new_tokens, do_sample, temperature, top_p, eos_token_id, pad_token_id)")
        return plan
    options = options_of(decl)
    plan.rollout = Rollout(decl.model, model, max_new_tokens=options["max_new_tokens"],
                           temperature=options["temperature"], top_p=options["top_p"],
                           lmbda=options["lmbda"], eos=options["eos"], pad=options["pad"])
    return plan
