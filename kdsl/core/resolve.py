"""The one resolver of references to Python code: ``"pkg.module"`` and ``"pkg.module:attr.path"``.

Every place that turns a name in a spec or on the command line into a Python object (plugins,
catalog implementations, model and data factories, method and function records, deliveries) goes
through here, so the same failure always gets the same code:

- KD405 the reference is malformed (not ``pkg.module:name``);
- KD404 the module cannot be imported (missing, or its own import raised);
- KD503 the module has no such attribute (with a did-you-mean over its public names).
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from typing import Any, Optional, Tuple

from kdsl.core.diagnostics import error
from kdsl.core.span import Span

_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
MODULE_PATTERN = re.compile(rf"^{_IDENT}(\.{_IDENT})*$")
REF_PATTERN = re.compile(rf"^{_IDENT}(\.{_IDENT})*:{_IDENT}(\.{_IDENT})*$")


@dataclass(frozen=True)
class Resolved:
    """What a reference names: ``obj``, found as attribute ``name`` of ``owner``.

    ``chain`` holds every object on the way, the module first, so a caller can say which part of
    the path is of the wrong kind (a method looked up on a function, say).
    """

    ref: str
    module: Any
    owner: Any
    name: str
    obj: Any
    chain: Tuple[Any, ...]


def import_module(name: str, what: Optional[str] = None, span: Optional[Span] = None) -> Any:
    """Import module ``name`` (needed for ``what``, when given); KD404 on failure."""
    purpose = f" for {what}" if what else ""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        missing = exc.name or name
        raise error("KD404", f"cannot import \"{name}\"{purpose}: no module named '{missing}'", span,
                    hint="is the package installed, or on PYTHONPATH?") from None
    except Exception as exc:  # noqa: BLE001 - the user's module failed while importing
        raise error("KD404", f"importing \"{name}\"{purpose} failed: {type(exc).__name__}: {exc}",
                    span) from None


def split_ref(ref: str, what: str, span: Optional[Span] = None) -> Tuple[str, Tuple[str, ...]]:
    """``"pkg.mod:a.b"`` -> ``("pkg.mod", ("a", "b"))``; KD405 when malformed."""
    if not REF_PATTERN.match(ref):
        raise error("KD405", f"malformed {what} reference \"{ref}\"", span,
                    hint="write it as pkg.module:name, e.g. kdsl.zoo:resnet8x4")
    module_name, _, attr_path = ref.partition(":")
    return module_name, tuple(attr_path.split("."))


def _public_names(obj: Any):
    names = getattr(obj, "__all__", None)
    if isinstance(names, (list, tuple)) and all(isinstance(n, str) for n in names):
        return list(names)
    return [n for n in dir(obj) if not n.startswith("_")]


def resolve(ref: str, what: str, span: Optional[Span] = None, *, check=None) -> Resolved:
    """Resolve ``"pkg.module:attr.path"``.

    ``check(owner_path, obj, next_part)``, when given, is called before each attribute step after
    the first, so a caller can refuse a path early with its own, more precise message.
    """
    module_name, parts = split_ref(ref, what, span)
    module = import_module(module_name, f'{what} "{ref}"', span)
    obj: Any = module
    owner: Any = module
    chain = [module]
    for i, part in enumerate(parts):
        if check is not None and i:
            check(f"{module_name}:{'.'.join(parts[:i])}", obj, part)
        if not hasattr(obj, part):
            from kdsl.core.suggest import did_you_mean

            where = module_name + ("." + ".".join(parts[:i]) if i else "")
            raise error("KD503", f"'{where}' has no attribute '{part}'", span,
                        hint=did_you_mean(part, _public_names(obj)))
        owner = obj
        obj = getattr(obj, part)
        chain.append(obj)
    return Resolved(ref, module, owner, parts[-1], obj, tuple(chain))


def import_ref(ref: str, what: str, span: Optional[Span] = None) -> Any:
    """The object named by ``"pkg.module:attr.sub"``; a located KD405/KD404/KD503 error otherwise."""
    return resolve(ref, what, span).obj
