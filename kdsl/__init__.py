"""kdsl: a declarative language for knowledge distillation, compiled to PyTorch hooks.

::

    import kdsl
    spec = kdsl.load("specs/fitnets.kd")
    with kdsl.compile(spec, student=student, teacher=teacher, example_input=x0) as distiller:
        result = distiller.step(x, target=y)
        result.loss.backward()

    result = kdsl.train("specs/digits/kd.kd", epochs=1, threads=1)   # what `kdsl train` runs
    result.final["top1"], result.files.student

Importing kdsl does not import torch; ``compile``, ``Distiller``, ``train`` and the builders do, on
first use.
"""

import gc as _gc

# Importing kdsl makes ~10,000 containers (classes, functions, dicts) that live as long as the
# process: the collector's passes over them while they are made cost a tenth of a plain
# `kdsl check` (issue #27, item 5b).
_collecting = _gc.isenabled()
_gc.disable()
try:
    from kdsl.core.diagnostics import Diagnostic as Diagnostic
    from kdsl.core.diagnostics import KdslError as KdslError
    from kdsl.core.diagnostics import Note as Note
    from kdsl.lang.ir import Spec as Spec
    from kdsl.lang.loader import check as check
    from kdsl.lang.loader import load as load
    from kdsl.lang.loader import loads as loads
    from kdsl.catalog.types import Infer as Infer
    from kdsl.catalog.registry import register_connector as register_connector
    from kdsl.catalog.registry import register_function as register_function
    from kdsl.catalog.registry import register_loss as register_loss
    from kdsl.core.span import Span as Span
    from kdsl.convert import convert as convert
finally:
    if _collecting:
        _gc.enable()

__version__ = "0.1.0"

# Names whose modules import torch: loaded on first access (PEP 562).
_LAZY = {
    "compile": ("kdsl.compiler.compiler", "compile"),
    "Distiller": ("kdsl.runtime.distiller", "Distiller"),
    "StepResult": ("kdsl.runtime.distiller", "StepResult"),
    "build_loss": ("kdsl.components.build", "build_loss"),
    "build_connector": ("kdsl.components.build", "build_connector"),
    "train": ("kdsl.training.api", "train"),
    "RunResult": ("kdsl.training.report", "RunResult"),
    "Reporter": ("kdsl.training.report", "Reporter"),
}

__all__ = ["Diagnostic", "Distiller", "Infer", "KdslError", "Note", "Reporter", "RunResult", "Span", "Spec",
           "StepResult", "build_connector", "build_loss", "check", "compile", "convert", "load", "loads",
           "register_connector", "register_function", "register_loss", "train"]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'kdsl' has no attribute '{name}'")
