"""The built-in declarations: each module named here defines ``COMPONENTS``, a tuple of
:class:`kdsl.catalog.types.Component` whose ``impl`` names the implementation by import path."""

from __future__ import annotations

import importlib
from typing import Iterator

from kdsl.catalog.types import Component

MODULES = (
    "logit_losses",
    "feature_losses",
    "relation_losses",
    "composite_losses",
    "adaptive_losses",
    "lm_losses",
    "lm_chunked_losses",
    "paper_losses",
    "generic_losses",
    "datafree_losses",
    "adversarial_losses",
    "connectors",
    "method_connectors",
    "paper_connectors",
    "schedules",
    "training",
    "lr_schedules",
    "functions",
    "batch_transforms",
)


# The group each module's entries are listed under by `kdsl list`.
GROUPS = {
    "logit_losses": "logits",
    "feature_losses": "features",
    "adaptive_losses": "features",
    "relation_losses": "relations",
    "composite_losses": "logits and features",
    "lm_losses": "language models",
    "lm_chunked_losses": "language models",
    "paper_losses": "features",
    "adversarial_losses": "data-free",
    "datafree_losses": "data-free",
    "generic_losses": "model losses",
    "functions": "functions",
    "connectors": "connectors",
    "method_connectors": "method connectors",
    "paper_connectors": "method connectors",
    "schedules": "schedules",
    "training": "training",
    "lr_schedules": "training",
    "batch_transforms": "training",
}


def group_of(component: Component) -> str:
    """The group of a built-in entry (from the module that implements it), else "plugins"."""
    impl = component.impl if isinstance(component.impl, str) else ""
    if not impl.startswith("kdsl.components."):
        return "plugins"
    module = impl.partition(":")[0].rpartition(".")[2]
    return GROUPS.get(module, module.replace("_", " "))


def builtin_components() -> Iterator[Component]:
    for name in MODULES:
        yield from importlib.import_module(f"kdsl.catalog.{name}").COMPONENTS
