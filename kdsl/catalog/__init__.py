"""Built-in component declarations (plain data: importing this never imports torch).

Each submodule defines ``COMPONENTS``, a tuple of :class:`kdsl.registry.Component` whose ``impl``
names the implementation by import path.
"""

from __future__ import annotations

import importlib
from typing import Iterator

from ..registry import Component

_MODULES = (
    "logit_losses",
    "feature_losses",
    "relation_losses",
    "generic_losses",
    "connectors",
    "schedules",
    "training",
)


def builtin_components() -> Iterator[Component]:
    for name in _MODULES:
        yield from importlib.import_module(f"{__name__}.{name}").COMPONENTS
