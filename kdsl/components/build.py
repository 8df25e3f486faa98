"""``kdsl.build_loss`` / ``kdsl.build_connector``: catalog components as plain ``nn.Module``s."""

from __future__ import annotations

from typing import Any

from torch import nn

from kdsl.core.diagnostics import Diagnostics, error
from kdsl.catalog.binding import bind, instantiate, value_problem
from kdsl.catalog.registry import REGISTRY
from kdsl.core.suggest import did_you_mean


def _build(kind: str, code: str, name: str, options: dict) -> nn.Module:
    component = REGISTRY.get(kind, name)
    if component is None:
        raise error(code, f"unknown {kind} '{name}'", hint=did_you_mean(name, REGISTRY.names(kind))
                    or f"see `kdsl list {'losses' if kind == 'loss' else kind + 's'}`")
    diags = Diagnostics()
    binding = bind(component, [], list(options.items()), inputs=False, inferable_ok=False)
    for p in binding.problems:
        diags.error(p.code, p.message, hint=p.hint)
    for key, value in binding.options.items():
        param = component.option(key)
        if param is None:
            continue
        if param.type.name == "module":
            if not isinstance(value, nn.Module):
                diags.error("KD309", f"'{key}' of '{name}' must be an nn.Module, got {type(value).__name__}")
        elif not isinstance(value, nn.Module):
            problem = value_problem(component, param, value)
            if problem:
                diags.error(problem.code, problem.message, hint=problem.hint)
    diags.raise_if_errors()
    try:
        return instantiate(component, **options)
    except Exception as exc:  # noqa: BLE001
        raise error("KD513" if kind == "loss" else "KD510",
                    f"cannot build {kind} '{name}': {type(exc).__name__}: {exc}") from None


def build_loss(name: str, **options: Any) -> nn.Module:
    """The loss ``name`` of the catalog as an ``nn.Module``; its ``forward`` takes the inputs
    positionally in the documented order (``kdsl list NAME``)."""
    return _build("loss", "KD301", name, options)


def build_connector(name: str, **options: Any) -> nn.Module:
    """The connector ``name`` of the catalog as an ``nn.Module`` (every channel count given)."""
    return _build("connector", "KD302", name, options)
