"""Typed access to config values: where the converter needs a mapping, a list, a number or a
string, anything else is a located KD760 error (never an AttributeError from deep inside)."""

from __future__ import annotations

from typing import Any, Iterator, List, Optional, Tuple

from kdsl.convert.pyconfig import Located
from kdsl.convert.report import Where, config_error


def _kind(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), "a number" if isinstance(value, (int, float)) else type(value).__name__)


def _wrong(key: str, wanted: str, value: Any, where: Where):
    return config_error("KD760", f"'{key}' must be {wanted}, not {_kind(value)}", where)


def mapping(parent: Located, key: str, path: str = "") -> Located:
    """``parent[key]`` as a mapping (an empty one when it is absent or None)."""
    value = parent.get(key) if isinstance(parent, dict) else None
    if value is None:
        return Located(where=_at(parent, key))
    if not isinstance(value, dict):
        raise _wrong(path or key, "a mapping", value, _at(parent, key))
    if not isinstance(value, Located):
        value = Located(value, where=_at(parent, key))
    return value


def items(parent: Located, key: str, path: str = "") -> Iterator[Tuple[str, Located, Where]]:
    """The entries of a mapping of mappings (``distill_losses``, ``sub_terms``), each checked."""
    table = mapping(parent, key, path)
    for name, value in table.items():
        if not isinstance(value, dict):
            raise _wrong(f"{path or key}.{name}", "a mapping", value, table.at(name))
        yield str(name), mapping(table, name, f"{path or key}.{name}"), table.at(name)


def sequence(parent: Located, key: str, path: str = "") -> List[Any]:
    """``parent[key]`` as a list (a single mapping counts as a list of one)."""
    value = parent.get(key) if isinstance(parent, dict) else None
    return as_list(value, path or key, _at(parent, key))


def as_list(value: Any, path: str, where: Where) -> List[Any]:
    """``value`` as a list: None is empty, a single mapping is a list of one."""
    if value is None:
        return []
    if isinstance(value, dict):
        return [value]
    if not isinstance(value, list):
        raise _wrong(path, "a list", value, where)
    return value


def integer(parent: Located, key: str, default: Optional[int] = None,
            path: str = "") -> Optional[int]:
    value = parent.get(key, default) if isinstance(parent, dict) else default
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _wrong(path or key, "an integer", value, _at(parent, key))
    return value


def string(parent: Located, key: str, path: str = "") -> Optional[str]:
    value = parent.get(key) if isinstance(parent, dict) else None
    if value is not None and not isinstance(value, str):
        raise _wrong(path or key, "a string", value, _at(parent, key))
    return value


def _at(parent: Any, key: str) -> Where:
    return parent.at(key) if isinstance(parent, Located) else None
