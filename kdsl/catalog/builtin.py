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
    "generic_losses",
    "connectors",
    "schedules",
    "training",
)


def builtin_components() -> Iterator[Component]:
    for name in MODULES:
        yield from importlib.import_module(f"kdsl.catalog.{name}").COMPONENTS
