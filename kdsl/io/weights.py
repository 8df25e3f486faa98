"""Reading model weights: plain state dicts and the usual wrappers, always ``weights_only``.

Accepted: a state dict; ``{"state_dict": ...}``, ``{"model": ...}``, ``{"student": ...}``; kdsl's
own run checkpoints (``checkpoint.pt``: the trained model's weights in it); a ``module.`` prefix
(DistributedDataParallel), and ``.safetensors`` files when safetensors is installed. Mismatched
keys are listed in the error. A LoRA model's merged weights (a LoRA run's ``student.pt``) load
into a model with the same adapters (:func:`kdsl.lora.load_merged`).
"""

from __future__ import annotations

from typing import Dict, List, Mapping, Optional, Tuple

import torch
from torch import nn

from kdsl.core.diagnostics import error
from kdsl.core.span import Span
from kdsl.io.checkpoint_file import check_checkpoint_path, load_checkpoint, load_error_text
from kdsl.lora import base_state_dict, has_lora, load_merged

_WRAPPERS = ("state_dict", "model", "student", "model_state_dict", "module")


def read_state_dict(path: str, span: Optional[Span] = None, key: Optional[str] = None
                    ) -> Dict[str, torch.Tensor]:
    """The state dict in ``path``; with ``key`` (a connector's name), the entry of that name when
    the file holds several (``{"para": {...}, ...}``, or flat ``para.weight`` keys, as a run's
    ``connectors/STAGE.pt`` does)."""
    if path.endswith(".safetensors"):
        return _read_safetensors(path, span)
    obj = load_checkpoint(path, span)
    if isinstance(obj, dict) and str(obj.get("format", "")).startswith("kdsl-run/"):
        obj = _run_student(obj, path, span)
    if key is not None and isinstance(obj, dict):
        if isinstance(obj.get(key), dict):
            obj = obj[key]
        elif obj and any(str(k).startswith(key + ".") for k in obj):
            obj = {k[len(key) + 1:]: v for k, v in obj.items() if str(k).startswith(key + ".")}
    for _ in range(3):
        if isinstance(obj, dict) and not _is_state_dict(obj):
            inner = next((obj[k] for k in _WRAPPERS if k in obj and isinstance(obj[k], dict)), None)
            if inner is None:
                keys = ", ".join(list(map(str, obj))[:8])
                raise error("KD509", f"{path} holds no state dict (top-level keys: {keys})", span,
                            hint="expected a state dict, or one under 'state_dict', 'model' or 'student'")
            obj = inner
    if not isinstance(obj, dict):
        raise error("KD509", f"{path} holds a {type(obj).__name__}, not a state dict", span)
    return obj


def _read_safetensors(path: str, span: Optional[Span]) -> Dict[str, torch.Tensor]:
    check_checkpoint_path(path, span)
    try:
        from safetensors.torch import load_file
    except ImportError:
        raise error("KD509", f"{path} is a safetensors file but safetensors is not installed", span,
                    hint="pip install safetensors") from None
    try:
        return load_file(path)
    except Exception as exc:  # noqa: BLE001
        raise error("KD509", f"cannot read {path}: {load_error_text(exc)}", span) from None


def _run_student(state: dict, path: str, span: Optional[Span]) -> Dict[str, torch.Tensor]:
    """The trained model's weights in a kdsl run checkpoint (``checkpoint.pt`` of ``kdsl train``)."""
    models: Dict[str, Dict[str, torch.Tensor]] = {}
    weights = state.get("distiller")
    if not weights and isinstance(state.get("shards"), dict):  # an fsdp run's (kdsl.training.dist_checkpoint)
        raise error("KD509", f"{path} is the checkpoint of a sharded run: its models are in the shards it "
                    f"names ({state['shards'].get('dir')}), not in it", span,
                    hint="load the student.pt written next to it")
    if not isinstance(weights, dict):
        raise error("KD509", f"{path} is a kdsl run checkpoint without the models' weights "
                    f"('distiller' is {type(weights).__name__}, not a dict)", span,
                    hint="load the student.pt written next to it")
    for key, value in weights.items():
        if isinstance(key, str) and key.startswith("models.") and isinstance(value, torch.Tensor):
            name, _, rest = key[len("models."):].partition(".")
            models.setdefault(name, {})[rest] = value
    if len(models) != 1:
        raise error("KD509", f"{path} is a kdsl run checkpoint holding {len(models)} trained models"
                    + (f" ({', '.join(models)})" if models else ""), span,
                    hint="load the student.pt written next to it")
    return next(iter(models.values()))


def _is_state_dict(obj: dict) -> bool:
    return bool(obj) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def _strip_prefix(state: Dict[str, torch.Tensor], model: nn.Module) -> Dict[str, torch.Tensor]:
    own = set(model.state_dict())
    for prefix in ("module.", "model.", "architecture.", "student."):
        if state and all(k.startswith(prefix) for k in state) and not (set(state) & own):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def load_into(model: nn.Module, path: str, span: Optional[Span] = None, what: str = "model",
              key: Optional[str] = None) -> None:
    """Load a checkpoint into ``model`` strictly; a located KD509 error lists what does not match.
    ``key`` selects one entry of a file holding several (see :func:`read_state_dict`)."""
    state = _strip_prefix(read_state_dict(path, span, key), model)
    merged = _merged_weights_of_lora(model, state)
    want = base_state_dict(model) if merged else model.state_dict()
    hints = mismatch_hints(want, state, ("missing keys: ", "unexpected keys: ", "shape mismatches: "),
                           "{key}: checkpoint {have} vs model {want}")
    if hints:
        raise error("KD509", f"checkpoint {path} does not fit the {what}", span, hints=hints)
    if merged:
        load_merged(model, state)
    else:
        model.load_state_dict(state, strict=True)


def _merged_weights_of_lora(model: nn.Module, state: Mapping[str, torch.Tensor]) -> bool:
    """Whether ``state`` is a LoRA model's merged weights (a run's ``student.pt``: the keys of
    the model without LoRA) to load into ``model``, which carries adapters."""
    return has_lora(model) and not any(".base_layer." in k or ".lora_" in k for k in state)


def mismatch_hints(want: Mapping[str, torch.Tensor], have: Mapping[str, torch.Tensor],
                   labels: Tuple[str, str, str], shape_text: str) -> List[str]:
    """What keeps the state ``have`` from loading into a module whose state is ``want``: one hint
    per kind of problem (``labels`` lead them in: keys only ``want`` has, keys only ``have`` has,
    shapes that differ), each listing at most six keys; empty when it fits. ``shape_text``
    formats one shape mismatch from ``key``, ``have`` and ``want``."""
    missing = [k for k in want if k not in have]
    unexpected = [k for k in have if k not in want]
    shapes = [shape_text.format(key=k, have=tuple(have[k].shape), want=tuple(want[k].shape))
              for k in want if k in have and tuple(want[k].shape) != tuple(have[k].shape)]
    return [f"{label}{_listing(keys)}" for label, keys in zip(labels, (missing, unexpected, shapes)) if keys]


def _listing(keys: List[str]) -> str:
    return ", ".join(keys[:6]) + (f" and {len(keys) - 6} more" if len(keys) > 6 else "")
