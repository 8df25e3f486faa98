"""The one rule for a teacher that would teach from random weights.

A frozen teacher (the default: not ``trainable``) is there to be learnt from, so its weights must
come from somewhere: a ``from "FILE"`` checkpoint, or a factory that loads them itself (an option
such as torchvision's ``weights=...``, timm's ``pretrained=true``, or Hugging Face's
``from_pretrained``). A teacher without a factory is passed in by the caller with its own weights.
Anything else is randomly initialised, and a student distilled from it learns noise.

The verifier warns (KD258) and ``kdsl.train`` refuses (KD730) unless ``allow_random_teacher`` is
set; both read :func:`loads_weights`. Torch-free.
"""

from __future__ import annotations

from typing import Any, Iterable, List, Mapping

from kdsl.lang import ir
from kdsl.lang.literal import try_literal

# Factory options that, given a true value, make the factory load trained weights itself.
PRETRAINED_OPTIONS = ("pretrained", "weights", "checkpoint_path", "pretrained_model_name_or_path")
# Factories that always load trained weights (kdsl's own: a pretrained Hugging Face model).
PRETRAINED_FACTORIES = ("kdsl.hub:hf_pretrained",)
SETTING = "allow_random_teacher"
HINT = ('load its weights: ... from "FILE.pt" (or --teacher-ckpt FILE), use a pretrained factory '
        "option, make it trainable, or, if random weights are meant, set allow_random_teacher = "
        "true in the train block (--allow-random-teacher)")


def ref_loads_weights(ref: str, options: Mapping[str, Any]) -> bool:
    """Whether the factory ``ref`` called with ``options`` loads trained weights by itself."""
    if "from_pretrained" in ref.rpartition(":")[2].split(".") or ref in PRETRAINED_FACTORIES:
        return True
    return any(name in options and options[name] not in (None, False, "", 0)
               for name in PRETRAINED_OPTIONS)


def loads_weights(decl: ir.ModelDecl) -> bool:
    """Whether the model of ``decl`` gets trained weights: a checkpoint, a caller-given model (no
    factory), or a factory that loads them. An option whose value is not a literal counts as
    loading (nothing to judge it by)."""
    if decl.checkpoint is not None or decl.factory is None:
        return True
    options = {}
    for k in decl.factory.kwargs:
        ok, value = try_literal(k.value)
        options[k.name] = value if ok else True
    return ref_loads_weights(decl.factory.ref, options)


def random_teachers(models: Iterable[ir.ModelDecl]) -> List[ir.ModelDecl]:
    """The frozen teachers among ``models`` that would start from random weights."""
    return [m for m in models if m.frozen and not loads_weights(m)]


def allowed_in(statements: Iterable[ir.Node]) -> bool:
    """Whether a train block among ``statements`` sets ``allow_random_teacher = true``."""
    for s in statements:
        if isinstance(s, ir.TrainDecl):
            setting = s.get(SETTING)
            if setting is not None:
                ok, value = try_literal(setting.value)
                return ok and value is True
    return False


def warn_random_teachers(diags, statements: List[ir.Node]) -> None:
    """KD258 for each frozen teacher of ``statements`` without weights, unless the train block
    allows it."""
    if allowed_in(statements):
        return
    models = [s for s in statements if isinstance(s, ir.ModelDecl)]
    for m in random_teachers(models):
        diags.warning("KD258", f"teacher '{m.name}' loads no weights: it would teach from random "
                      "initialisation", m.name_span, hint=HINT)
