"""Building components (connectors, losses, schedules) from their calls in the spec: options as
Python values, sizes left out inferred from the shapes the dry run saw (KD510 when they cannot
be), and the module built on the student's device and dtype."""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Tuple

import torch
from torch import nn

from kdsl.catalog.binding import instantiate
from kdsl.catalog.shapes import TensorInfo
from kdsl.catalog.types import Component
from kdsl.compiler.paths import resolve_module_ref
from kdsl.compiler.plan import Plan
from kdsl.core.diagnostics import KdslError, error
from kdsl.lang import ir
from kdsl.lang.literal import literal_value

Target = Callable[[int], Optional[int]]  # dimension -> size of the tensor an output is compared with


class NotInferred(KdslError):
    """KD510 for a size that could not be inferred (yet): the loss graph retries the loss once
    another loss has built the connector with the size known (inference reaches a fixed point
    whatever the order of the losses)."""


def no_target(dim: int) -> Optional[int]:
    return None


def size_of(info: Optional[TensorInfo], inf) -> Optional[int]:
    """The size an Infer reads from a tensor: one dimension, or elements per sample (flat)."""
    if info is None:
        return None
    if inf.flat:
        size = 1
        for d in info.shape[1:]:
            size *= d
        return size
    if -len(info.shape) <= inf.dim < len(info.shape):
        return info.shape[inf.dim]
    return None


def options_of(plan: Plan, call: ir.Call) -> Dict[str, Any]:
    """Literal and module options of a call as Python values, as the verifier bound them."""
    return {name: _option_value(plan, value) for name, value in ir.bound(call).option_values.items()}


def _option_value(plan: Plan, expr) -> Any:
    if isinstance(expr, ir.ModuleRef):
        return resolve_module_ref(plan.models, expr)
    return literal_value(expr)


def device_dtype(plan: Plan) -> Tuple[torch.device, torch.dtype]:
    """Where the student's parameters are: connectors and losses are built there."""
    for p in plan.models[plan.spec.student.name].parameters():
        return p.device, p.dtype
    return torch.device("cpu"), torch.get_default_dtype()


def build_component(plan: Plan, component: Component, options: Dict[str, Any], span, what: str,
                    code: str) -> nn.Module:
    """``component(**options)`` as a module on the student's device; ``code`` when it refuses."""
    try:
        module = instantiate(component, **options)  # checks inferred options' ranges too
    except KdslError:
        raise
    except Exception as exc:  # noqa: BLE001 - the component rejected its options
        raise error(code, f"cannot build {what} ({component.name}): {type(exc).__name__}: {exc}",
                    span) from None
    if not isinstance(module, nn.Module):
        raise error(code, f"{component.name} did not build an nn.Module", span)
    device, dtype = device_dtype(plan)
    module.to(device=device)
    if dtype.is_floating_point and dtype != torch.get_default_dtype():
        module.to(dtype=dtype)
    return module


def infer_options(plan: Plan, component: Component, options: Dict[str, Any],
                  infos: Dict[str, Optional[TensorInfo]], target: Target, span, what: str) -> None:
    """Fill in the sizes ``options`` leaves out from the inputs' shapes (or the target's)."""
    for inf in component.infer:
        if inf.option in options:
            continue
        if inf.source == "target":
            size = target(inf.dim)
            source_text = "the tensor its output is compared with"
        else:
            src = component.inputs[0].name if inf.source == "input" else inf.source
            size = size_of(infos.get(src), inf)
            source_text = f"its input '{src}'"
        if size is None:
            raise NotInferred(error("KD510", f"{what} ({component.name}) leaves out '{inf.option}', which is "
                        f"inferred from {source_text}", span, hint=_infer_hint(plan, inf)).diagnostics)
        options[inf.option] = size


def _infer_hint(plan: Plan, inf) -> str:
    if not plan.request.dry:
        return (f"give {inf.option}=..., or pass example_input to kdsl.compile "
                "(--input-shape or --data on the command line) so it can be inferred")
    if inf.source == "target":
        return (f"give {inf.option}=...: kdsl infers it only where a loss compares the "
                "output directly with a tensor of known shape")
    return f"give {inf.option}=...: the input's shape is not known"
