"""The one resolver of references to Python code: ``"pkg.module"`` and ``"pkg.module:attr.path"``.

Every place that turns a name in a spec or on the command line into a Python object (plugins,
catalog implementations, model and data factories, method and function records, deliveries) goes
through here, so the same failure always gets the same code:

- KD405 the reference is malformed (not ``pkg.module:name``);
- KD404 the module cannot be imported (missing, or its own import raised);
- KD503 the module has no such attribute (with a did-you-mean over its public names);
- KD406 the reference leads into a module that runs commands, touches files or sockets, or loads
  code (:data:`REFUSED_MODULES`): refused before anything is imported.
"""

from __future__ import annotations

import importlib
import re
import types
from dataclasses import dataclass
from typing import Any, Optional, Tuple

from kdsl.core.diagnostics import Diagnostic, KdslError, error, make
from kdsl.core.span import Span

_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
MODULE_PATTERN = re.compile(rf"^{_IDENT}(\.{_IDENT})*$")
REF_PATTERN = re.compile(rf"^{_IDENT}(\.{_IDENT})*:{_IDENT}(\.{_IDENT})*$")

# A spec is code, but no model, data set, optimizer or function it names is ever a function of
# these: they run commands, read or write files, open sockets, load code or reach into the
# interpreter (`model("os:system", command="...")` once ran the command under `check --dry-run`).
# A reference into one of them, or through one (`pkg.mod:os.system`, when pkg.mod imports os), is
# refused before its module is imported; so is a resolved object defined in one (a function
# imported under another name).
REFUSED_MODULES = frozenset({
    "builtins", "__builtin__", "os", "posix", "nt", "sys", "subprocess", "shutil",
    "importlib", "pkgutil", "zipimport", "runpy", "code", "codeop", "site", "pickle", "_pickle",
    "cPickle", "marshal", "shelve", "dill", "cloudpickle", "joblib", "socket", "_socket", "ssl",
    "socketserver", "http", "urllib", "ftplib", "smtplib", "telnetlib", "xmlrpc", "webbrowser",
    "ctypes", "_ctypes", "cffi", "mmap", "pty", "tty", "termios", "fcntl", "resource", "signal",
    "_signal", "multiprocessing", "_posixsubprocess", "threading", "_thread", "asyncio",
    "concurrent", "tempfile", "pathlib", "io", "_io", "glob", "fileinput", "gc", "inspect",
    "torch.hub", "torch.utils.cpp_extension", "torch.package",
})


def refused_module(module_name: str) -> Optional[str]:
    """The entry of :data:`REFUSED_MODULES` that ``module_name`` is, or is inside, or None."""
    parts = module_name.split(".")
    for depth in range(1, len(parts) + 1):
        prefix = ".".join(parts[:depth])
        if prefix in REFUSED_MODULES:
            return prefix
    return None


def _refused_in(ref: str) -> Optional[str]:
    """The refused module a reference (or a bare module path) names or passes through, by its
    text alone: the module part, or any attribute on the way (``kdsl.data:os.system``)."""
    module_name, _, attr_path = ref.partition(":")
    found = refused_module(module_name)
    if found is None and attr_path:
        steps = attr_path.split(".")[:-1]
        found = next((refused_module(s) for s in steps if refused_module(s)), None)
    return found


def refusal(ref: str, what: str, span: Optional[Span] = None) -> Optional[Diagnostic]:
    """KD406 for a reference into a refused module (decided from its text: nothing is imported),
    or None."""
    found = _refused_in(ref)
    return None if found is None else _refused_diagnostic(ref, what, found, span)


def _refused_diagnostic(ref: str, what: str, found: str, span: Optional[Span]) -> Diagnostic:
    return make("KD406", f"{what} reference \"{ref}\" leads into '{found}', which kdsl never calls",
                span, hint="a spec names models, data sets and functions of your own code or a "
                "model library; modules that run commands, touch files or load code (os, "
                "subprocess, sys, builtins, importlib, pickle, socket, ctypes, ...) are refused")


def refuse_system_reference(ref: str, what: str, span: Optional[Span] = None) -> None:
    """Raise :func:`refusal`'s KD406, if any."""
    refused = refusal(ref, what, span)
    if refused is not None:
        raise KdslError([refused])


def _refuse_resolved(ref: str, what: str, obj: Any, span: Optional[Span]) -> None:
    """After a step of the walk: an object that is, or was defined in, a refused module (a name
    imported from one, ``from os import system``) is refused too."""
    home = obj.__name__ if isinstance(obj, types.ModuleType) else getattr(obj, "__module__", None)
    found = refused_module(home) if isinstance(home, str) else None
    if found is not None:
        raise KdslError([_refused_diagnostic(ref, what, found, span)])


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
    refuse_system_reference(name, what or "import", span)
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
    refuse_system_reference(ref, what, span)
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
        _refuse_resolved(ref, what, obj, span)
        chain.append(obj)
    return Resolved(ref, module, owner, parts[-1], obj, tuple(chain))


def import_ref(ref: str, what: str, span: Optional[Span] = None) -> Any:
    """The object named by ``"pkg.module:attr.sub"``; a located KD405/KD404/KD503 error otherwise."""
    return resolve(ref, what, span).obj
