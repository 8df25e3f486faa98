"""Hugging Face ``transformers`` models built from a config given inline, with no download.

A model reference takes literal options only, so a config object cannot be written in a spec; these
factories build it from keyword options instead::

    student = model("kdsl.hub:hf_causal_lm", config="GPT2Config", n_layer=2, n_embd=64, n_head=2,
                    vocab_size=256, n_positions=64)
    teacher = model("kdsl.hub:hf_model", model="AutoModelForMaskedLM", config="BertConfig",
                    num_hidden_layers=2, hidden_size=64, num_attention_heads=2,
                    intermediate_size=128, vocab_size=256) from "bert_teacher.pt"

The weights are random until a ``from "FILE"`` (a state dict, or a ``.safetensors`` file) loads
them; nothing is fetched from the Hub. ``transformers`` is imported when one of these is called,
never when kdsl is imported (``pip install transformers``). torchvision and timm models need no
helper: ``torchvision.models:resnet18(weights=None)`` and ``timm:create_model("resnet18",
pretrained=false)`` are references as they are.
"""

from __future__ import annotations

from typing import Any

from kdsl.core.diagnostics import error
from kdsl.core.suggest import did_you_mean

__all__ = ["hf_model", "hf_causal_lm"]


def _transformers() -> Any:
    try:
        import transformers
    except ImportError as exc:
        raise error("KD404", f"kdsl.hub needs transformers, which cannot be imported: {exc}",
                    hint="pip install transformers (CPU is enough; nothing is downloaded)") from None
    return transformers


def _class(transformers: Any, name: str, what: str, suffix: str) -> Any:
    cls = getattr(transformers, name, None) if isinstance(name, str) and name.isidentifier() else None
    if cls is None:
        known = [n for n in dir(transformers) if n.endswith(suffix) and not n.startswith("_")]
        raise error("KD508", f"transformers has no {what} '{name}'",
                    hint=did_you_mean(str(name), known) or f"e.g. {known[0] if known else suffix}")
    return cls


def hf_model(config: str = "GPT2Config", model: str = "AutoModel", **options: Any) -> Any:
    """A ``transformers`` model of class ``model`` (an ``AutoModel...`` class, or a model class
    such as ``GPT2LMHeadModel``) built from ``transformers.<config>(**options)``, randomly
    initialised: no file is downloaded. ``options`` are the config's fields (``n_layer=2``...)."""
    transformers = _transformers()
    config_cls = _class(transformers, config, "config class", "Config")
    model_cls = _class(transformers, model, "model class", "Model")
    cfg = config_cls(**options)
    build = getattr(model_cls, "from_config", None)
    # Auto classes build from a config with from_config; a concrete model class takes it directly
    return build(cfg) if callable(build) and model_cls.__name__.startswith("Auto") else model_cls(cfg)


def hf_causal_lm(config: str = "GPT2Config", **options: Any) -> Any:
    """A causal language model (``AutoModelForCausalLM``) from ``transformers.<config>(**options)``,
    randomly initialised, no download: e.g. ``config="GPT2Config", n_layer=2, n_embd=64, n_head=2,
    vocab_size=256``. It returns ``.logits`` (and ``.loss`` when called with ``labels``)."""
    return hf_model(config, "AutoModelForCausalLM", **options)
