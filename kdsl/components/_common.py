"""Helpers shared by the implementations: the base class that takes its options from the
catalog entry, and the dtype and reduction rules of the losses."""

from __future__ import annotations

import functools
import inspect
from typing import Any, ClassVar, Dict, Optional, Tuple

import torch
from torch import nn

from kdsl.catalog.types import Component, ValueType


# --------------------------------------------------------------------------------------------
# Implementations whose options are their catalog entry's
# --------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _declarations() -> Dict[str, Component]:
    from kdsl.catalog.builtin import builtin_components

    return {c.impl: c for c in builtin_components() if isinstance(c.impl, str)}


def _signature(component: Component) -> inspect.Signature:
    return inspect.Signature([
        inspect.Parameter(p.name, inspect.Parameter.POSITIONAL_OR_KEYWORD,
                          default=inspect.Parameter.empty if p.required else p.default)
        for p in component.options])


def _as_declared(value_type: ValueType, value: Any) -> Any:
    # a spec's 4 for a float option is 4.0 to the formula; a list is copied, never shared
    if value is None or isinstance(value, nn.Module):
        return value
    convert = {"float": float, "int": int, "bool": bool}.get(value_type.name)
    if convert is not None:
        return convert(value)
    return list(value) if isinstance(value, (list, tuple)) else value


class Declared(nn.Module):
    """An implementation whose constructor is its catalog entry's signature: it takes exactly
    the declared options (by keyword or in order), with the declared defaults, and keeps each as
    an attribute of the declared type (``self.tau``, a float). The class names no option or
    default itself, so the two sides agree by construction; a subclass that builds more from
    the options extends ``__init__(self, **options)`` after ``super().__init__(**options)``."""

    declaration: ClassVar[Optional[Component]] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        found = _declarations().get(f"{cls.__module__}:{cls.__qualname__}")
        if found is not None:
            cls.declaration, cls.__signature__ = found, _signature(found)
        elif "__init__" in vars(cls):  # a user's subclass with a constructor of its own
            cls.__signature__ = None
        # else a helper base, or a user's subclass that inherits the entry's options

    def __init__(self, *args: Any, **options: Any) -> None:
        super().__init__()
        declaration = type(self).declaration
        if declaration is None:
            raise TypeError(f"{type(self).__name__} has no catalog entry to take its options from")
        bound = _signature(declaration).bind(*args, **options)
        bound.apply_defaults()
        for param in declaration.options:
            setattr(self, param.name, _as_declared(param.type, bound.arguments[param.name]))


def compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """The dtype a loss computes in: the inputs' promoted dtype, but at least float32.

    Half-precision softmax, log-sum-exp, norms and sums over whole feature maps lose too many
    digits to be useful; float64 stays float64 so that the tests can compare to 1e-9.
    """
    dtype = tensors[0].dtype
    for t in tensors[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    if dtype in (torch.float16, torch.bfloat16) or not dtype.is_floating_point:
        return torch.float32
    return dtype


_FULL = (torch.float32, torch.float64)


def upcast(*tensors: torch.Tensor) -> Tuple[torch.Tensor, ...]:
    first = tensors[0].dtype
    if first in _FULL and all(t.dtype is first for t in tensors):
        return tensors  # nothing to convert: the usual case, kept cheap
    dtype = compute_dtype(*tensors)
    return tuple(t.to(dtype) for t in tensors)


def student_teacher(preds_S: torch.Tensor, preds_T: torch.Tensor, detach_teacher: bool,
                    *others: torch.Tensor) -> Tuple[torch.Tensor, ...]:
    """A distillation loss's inputs in the compute dtype (:func:`upcast`), gradients stopped at
    the teacher's ``preds_T`` unless ``detach_teacher`` is false (MMRazor's teacher_detach)."""
    if detach_teacher:
        preds_T = preds_T.detach()
    return upcast(preds_S, preds_T, *others)


def reduce(elementwise: torch.Tensor, reduction: str) -> torch.Tensor:
    """``none``, ``sum``, ``mean`` (over elements) or ``batchmean`` (sum / N)."""
    if reduction == "none":
        return elementwise
    if reduction == "sum":
        return elementwise.sum()
    if reduction == "mean":
        return elementwise.mean()
    return elementwise.sum() / elementwise.shape[0]


def flat(x: torch.Tensor) -> torch.Tensor:
    """One row per sample."""
    return x.reshape(x.shape[0], -1)
