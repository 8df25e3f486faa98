"""kdsl: a declarative language for knowledge distillation, compiled to PyTorch hooks.

::

    import kdsl
    spec = kdsl.load("specs/fitnets.kd")
    with kdsl.compile(spec, student=student, teacher=teacher, example_input=x0) as distiller:
        result = distiller.step(x, target=y)
        result.loss.backward()

Importing kdsl does not import torch; ``compile``, ``Distiller`` and the builders do, on first use.
"""

from .diagnostics import Diagnostic as Diagnostic
from .diagnostics import KdslError as KdslError
from .diagnostics import Note as Note
from .ir import Spec as Spec
from .loader import check as check
from .loader import load as load
from .loader import loads as loads
from .registry import Infer as Infer
from .registry import register_connector as register_connector
from .registry import register_loss as register_loss
from .span import Span as Span

__version__ = "0.1.0"

# Names whose modules import torch: loaded on first access (PEP 562).
_LAZY = {
    "compile": ("kdsl.compiler", "compile"),
    "Distiller": ("kdsl.runtime", "Distiller"),
    "StepResult": ("kdsl.runtime", "StepResult"),
    "build_loss": ("kdsl.build", "build_loss"),
    "build_connector": ("kdsl.build", "build_connector"),
}

__all__ = ["Diagnostic", "Distiller", "Infer", "KdslError", "Note", "Span", "Spec", "StepResult",
           "build_connector", "build_loss", "check", "compile", "load", "loads",
           "register_connector", "register_loss"]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'kdsl' has no attribute '{name}'")
