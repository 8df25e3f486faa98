"""Which Python code a spec's ``method "..."`` and ``function "..."`` targets may name.

Recording or delivering a method or function patches it process-wide, and resolving the reference
imports its module, which runs that module's code. A spec is code (like a Python config), but a
record that names ``os:system`` or ``subprocess:Popen.__init__`` is not something a reader of the
spec expects, so by default a target must lie in *the models' own code*: the top-level package of
a module that defines the class (or a base class) of one of the models' submodules (``torch``,
``torchvision``, ``mmdet``, the user's ``mypkg``), or kdsl itself. A spec reaches anything else
only by saying so: ``import "os"`` allows ``os:system`` (an import also allows the modules inside
the imported package). The check reads module names only: a refused target is never imported.
"""

from __future__ import annotations

from typing import Iterable, Optional, Set

from torch import nn

from kdsl.compiler.plan import Plan
from kdsl.core.diagnostics import Diagnostic, make
from kdsl.core.span import Span

_NEVER_THE_MODELS = frozenset({"builtins"})  # every class's base `object` lives here


def models_code(models: Iterable[nn.Module]) -> Set[str]:
    """The top-level packages of the modules that define the models' classes and their bases,
    with ``kdsl``."""
    roots = {"kdsl"}
    seen: Set[type] = set()
    for model in models:
        for module in model.modules():
            for klass in type(module).__mro__:
                if klass in seen:
                    continue
                seen.add(klass)
                root = (getattr(klass, "__module__", None) or "").split(".")[0]
                if root and root not in _NEVER_THE_MODELS:
                    roots.add(root)
    return roots


def _inside(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def outside_reach(plan: Plan, ref: str, kind: str, span: Optional[Span]) -> Optional[Diagnostic]:
    """KD520 when ``ref`` (``pkg.module:name``) lies outside the models' code and outside every
    module the spec imports; None when it may be resolved."""
    module = ref.partition(":")[0].strip()
    if not module or ":" not in ref:
        return None  # malformed: the resolver says so (KD405)
    if plan.reach is None:
        plan.reach = models_code(plan.models.values())
    if any(_inside(module, root) for root in plan.reach):
        return None
    imported = [imp.module for imp in plan.spec.imports]
    if any(_inside(module, name) for name in imported):
        return None
    shown = ", ".join(sorted(plan.reach))
    return make("KD520", f"{kind} \"{ref}\" is outside the models' code, so the spec may not "
                f"patch it", span,
                hints=[f"if the spec means to reach it, import its module: import \"{module}\"",
                       f"the models' code: the packages {shown}"])
