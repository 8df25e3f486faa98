"""LoRA students through ``peft`` (an optional extra: ``pip install "kdsl[peft]"``).

``kdsl.hub:hf_pretrained`` and ``hf_causal_lm`` take ``lora_modules=["c_attn", ...]`` (module
names or the paths the spec writes, matched as peft's ``target_modules`` are: a path ending in
one of them) with ``lora_rank``, ``lora_alpha`` and ``lora_dropout``; :func:`apply_lora` injects
adapters in place (``peft.inject_adapter_in_model``) and freezes every other parameter, so only
the adapters train. The model keeps its class and its module paths: the spec's records and
deliveries name the modules as the user wrote them (an adapted module is peft's wrapper, whose
output is the adapted output; its own weight moves to ``.base_layer.weight``, which kdsl's
``param`` records map back). The run directory holds the adapters
(``student_adapter/adapter_model.safetensors`` and ``adapter_config.json``, loadable with
``peft.PeftModel.from_pretrained``) and a merged ``student.pt``: the adapters added into the
base weights, with the keys of the model without LoRA. Such a file (``--eval-only``, or a LoRA
student ``from "run/student.pt"``) loads into an adapted model through :func:`load_merged`.
"""

from __future__ import annotations

import copy
import json
import warnings
from typing import Any, Dict, List, Sequence, Tuple

from kdsl.core.diagnostics import error

__all__ = ["apply_lora", "has_lora", "plain_state_dict", "base_state_dict", "load_merged", "adapter_files",
           "LORA_OPTIONS"]

LORA_OPTIONS = ("lora_modules", "lora_rank", "lora_alpha", "lora_dropout")
INSTALL = 'pip install "kdsl[peft]" (peft, for LoRA students)'


def _peft() -> Any:
    try:
        import peft
    except ImportError as exc:
        raise error("KD404", f"LoRA needs peft, which cannot be imported: {exc}", hint=INSTALL) from None
    return peft


def apply_lora(model: Any, modules: Sequence[str], rank: int = 8, alpha: float = 16.0,
               dropout: float = 0.0) -> Any:
    """``model`` with LoRA adapters of ``rank`` (scaled by ``alpha / rank``, ``dropout`` on their
    input) on the modules named ``modules``, in place; every parameter but the adapters' frozen."""
    if isinstance(modules, str) or not modules or not all(isinstance(m, str) and m for m in modules):
        raise error("KD313", f"lora_modules must be a non-empty list of module names, got {modules!r}",
                    hint='e.g. lora_modules=["c_attn"] (GPT-2) or ["q_proj", "v_proj"] (Llama)')
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise error("KD313", f"lora_rank must be a positive integer, got {rank!r}")
    if not 0.0 <= float(dropout) < 1.0:
        raise error("KD313", f"lora_dropout must be in [0, 1), got {dropout!r}")
    peft = _peft()
    config = peft.LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=float(dropout),
                             target_modules=list(modules))
    try:
        with warnings.catch_warnings():  # peft sets fan_in_fan_out itself for GPT-2's Conv1D, and says so
            warnings.filterwarnings("ignore", message=".*fan_in_fan_out.*")
            peft.inject_adapter_in_model(config, model)
    except ValueError as exc:  # no module matches, or one of a kind LoRA cannot adapt
        linear = sorted({n.rpartition(".")[2] for n, m in model.named_modules() if type(m).__name__ in
                         ("Linear", "Conv1D", "Embedding", "Conv2d")})
        raise error("KD547", f"LoRA cannot adapt lora_modules={list(modules)}: "
                    f"{str(exc).splitlines()[0][:300]}",
                    hint="the model's adaptable modules include: " + ", ".join(linear[:20])) from None
    for name, p in model.named_parameters():
        p.requires_grad_("lora_" in name)
    model.kdsl_lora = config  # what the run directory's adapter_config.json records
    return model


def has_lora(model: Any) -> bool:
    """Whether ``model`` carries LoRA adapters that :func:`apply_lora` injected."""
    return getattr(model, "kdsl_lora", None) is not None


def _layers(model: Any) -> List[Tuple[str, Any]]:
    from peft.tuners.lora import LoraLayer

    return [(n, m) for n, m in model.named_modules() if isinstance(m, LoraLayer)]


def plain_state_dict(model: Any) -> Dict[str, Any]:
    """A module's state dict as plain CPU tensors, loadable without kdsl; for a LoRA model, with
    its adapters merged into the base weights, under the keys of the model without LoRA (a copy:
    ``model`` keeps training its adapters). The run directory's weights files are these."""
    if not has_lora(model):
        return {k: v.detach().cpu() for k, v in model.state_dict().items()}
    merged = copy.deepcopy(model)
    for name, layer in _layers(merged):
        layer.merge()
        parent_name, _, child = name.rpartition(".")
        parent = merged.get_submodule(parent_name) if parent_name else merged
        setattr(parent, child, layer.get_base_layer())
    return {k: v.detach().cpu() for k, v in merged.state_dict().items()}


def _base_keys(model: Any) -> Dict[str, str]:
    """The keys of the model without LoRA (``...c_attn.weight``) -> the adapted model's keys of
    the same tensors (``...c_attn.base_layer.weight``); the adapters' own keys are not in it."""
    return {k.replace(".base_layer.", "."): k for k in model.state_dict()
            if not any(part.startswith("lora_") for part in k.split("."))}


def base_state_dict(model: Any) -> Dict[str, Any]:
    """An adapted model's base weights (not merged) under the keys of the model without LoRA: the
    state a merged weights file (:func:`plain_state_dict`) must fit, key for key and shape for shape."""
    own = model.state_dict()
    return {plain: own[key] for plain, key in _base_keys(model).items()}


def load_merged(model: Any, state: Dict[str, Any]) -> None:
    """Merged weights (keys of the model without LoRA, as :func:`plain_state_dict` writes them)
    into the adapted ``model``: they become its base weights and the adapters' B matrices are
    zeroed (LoRA's own initialisation), so the model computes the merged model exactly and its
    :func:`plain_state_dict` is ``state`` again. The caller checked that ``state`` fits
    :func:`base_state_dict`."""
    import torch

    keys = _base_keys(model)
    result = model.load_state_dict({keys[k]: v for k, v in state.items()}, strict=False)
    assert not result.unexpected_keys and set(result.missing_keys).isdisjoint(keys.values()), result
    with torch.no_grad():
        for _, layer in _layers(model):
            for b in (*layer.lora_B.values(), *layer.lora_embedding_B.values()):
                (b.weight if hasattr(b, "weight") else b).zero_()


def adapter_files(weights_name: str, model: Any) -> List[Tuple[str, bytes]]:
    """For the weights file ``weights_name`` (``student.pt``) of a LoRA model: the adapter's
    files beside it (``student_adapter/adapter_model.safetensors``, ``adapter_config.json``) in
    the layout ``peft.PeftModel.from_pretrained`` reads; nothing for a model without LoRA."""
    if not has_lora(model):
        return []
    from peft import get_peft_model_state_dict
    from safetensors.torch import save

    state = get_peft_model_state_dict(model)
    # a PeftModel names its base model's modules under base_model.model
    tensors = {f"base_model.model.{k}": v.detach().cpu().contiguous() for k, v in state.items()}
    config = model.kdsl_lora.to_dict()
    config["target_modules"] = sorted(config["target_modules"] or ())
    folder = weights_name.rpartition(".")[0] + "_adapter"
    return [(f"{folder}/adapter_model.safetensors", save(tensors)),
            (f"{folder}/adapter_config.json", json.dumps(config, indent=2, default=str).encode())]
