"""The base of kdsl's data classes (spans, diagnostics, IR nodes): frozen pydantic models whose
validators are built on first use, and built not at all where kdsl's own front end makes them.

Building the validators of the ~60 IR classes cost about as much as a whole ``kdsl check``
(issue #27, item 5b). The loader's nodes come from the parser and the verifier, whose types the
tests pin (every spec and every golden diagnostic is loaded both ways and compared), so inside
:func:`trusted_construction` a constructor fills the fields as ``model_construct`` does, and keeps
the checks that guard against kdsl's own mistakes (an unknown or missing field raises TypeError).
Everywhere else, users' code included, a constructor validates as pydantic always does.
"""

from __future__ import annotations

import contextlib
import typing
from contextvars import ContextVar
from typing import Any, Dict, FrozenSet, Iterator

from pydantic import BaseModel, ConfigDict

_TRUSTED: ContextVar[bool] = ContextVar("kdsl_trusted_construction", default=False)
_TUPLE_FIELDS: Dict[type, FrozenSet[str]] = {}


@contextlib.contextmanager
def trusted_construction(enabled: bool = True) -> Iterator[None]:
    """Within: FrozenModel constructors skip validation (``enabled=False`` validates, for tests)."""
    token = _TRUSTED.set(enabled)
    try:
        yield
    finally:
        _TRUSTED.reset(token)


def _is_tuple(annotation: Any) -> bool:
    if typing.get_origin(annotation) is tuple:
        return True
    return typing.get_origin(annotation) is typing.Union and any(
        typing.get_origin(a) is tuple for a in typing.get_args(annotation))


def _tuple_fields(cls: type) -> FrozenSet[str]:
    """Fields typed as tuples: validation turns a list given for one into a tuple, and so do we."""
    found = _TUPLE_FIELDS.get(cls)
    if found is None:
        found = frozenset(n for n, f in cls.__pydantic_fields__.items() if _is_tuple(f.annotation))
        _TUPLE_FIELDS[cls] = found
    return found


class FrozenModel(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)

    def __init__(self, /, **data: Any) -> None:
        if not _TRUSTED.get():
            super().__init__(**data)
            return
        cls = type(self)
        fields = cls.__pydantic_fields__
        unknown = data.keys() - fields.keys()
        if unknown:
            raise TypeError(f"{cls.__name__} has no field {', '.join(sorted(unknown))}")
        values: Dict[str, Any] = {}
        for name, field in fields.items():
            if name in data:
                value = data[name]
                values[name] = tuple(value) if type(value) is list and name in _tuple_fields(cls) else value
            elif field.is_required():
                raise TypeError(f"{cls.__name__} needs field {name}")
            else:
                values[name] = field.get_default(call_default_factory=True)
        setattr_ = object.__setattr__
        setattr_(self, "__dict__", values)
        setattr_(self, "__pydantic_fields_set__", set(data))
        setattr_(self, "__pydantic_extra__", None)
        setattr_(self, "__pydantic_private__", None)
        if cls.__pydantic_post_init__:  # private attributes (Spec's sources and warnings)
            self.model_post_init(None)
