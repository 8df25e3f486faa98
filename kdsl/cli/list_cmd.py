"""Discovery commands: ``kdsl list models``, ``kdsl list datasets``, ``kdsl modules MODEL_REF`` and
``kdsl --version``.

``list models`` shows kdsl's zoo (each factory's arguments and the first line of its doc) and the
model hubs that are installed (found with ``importlib.util.find_spec``, never imported here);
``list datasets`` the data readers of :mod:`kdsl.data`. ``modules`` builds a model from a
reference and prints its module tree: the names a ``record`` can use, each with its class, its
parameter count and, given ``--input-shape``, its output shape from one forward pass on zeros
(the hooks that see the shapes are removed on every path).
"""

from __future__ import annotations

import importlib.util
import inspect
import platform
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from kdsl.cli.render import make_console

# Model hubs a reference can name when installed: (package, example reference, what it needs). The
# examples are written in the language (`none`, `false`): they paste into a spec or --student.
INTEGRATIONS: Tuple[Tuple[str, str, str], ...] = (
    ("torchvision", "torchvision.models:resnet18(weights=none, num_classes=100)",
     "ImageNet-shaped models; pretrained weights are the user's to download"),
    ("timm", "timm:create_model(\"resnet18\", pretrained=false, num_classes=100)",
     "timm's models by name"),
    ("transformers", "transformers:AutoModelForCausalLM.from_config(...)",
     "Hugging Face models built from a config (no download)"),
    ("transformers", 'kdsl.hub:hf_pretrained(path=..., dtype="bfloat16")',
     "pretrained causal LMs from a folder or the local cache (never downloaded)"),
    ("peft", 'kdsl.hub:hf_pretrained(path=..., lora_modules=["c_attn"])', "LoRA students: only the adapters train"),
)


# ------------------------------------------------------------------------------ --version
def version_text() -> str:
    """kdsl's, torch's (from its package metadata: torch is not imported) and Python's versions."""
    from importlib import metadata

    def installed(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "not installed"

    kdsl_version = installed("kdsl").replace("not installed", "unknown (a source tree never installed)")
    return f"kdsl {kdsl_version}\ntorch {installed('torch')}\nPython {platform.python_version()}"


# ------------------------------------------------------------------------------ list
def _first_line(obj: Any) -> str:
    doc = inspect.getdoc(obj) or ""
    line = doc.strip().split("\n\n")[0].replace("\n", " ")
    return line.split(". ")[0].rstrip(".") if line else ""


def _arguments(fn: Callable) -> str:
    """A factory's arguments as a spec's call writes them: ``(num_classes=100, weights=none)``."""
    from kdsl.lang.printer import value_text

    parts = []
    for p in inspect.signature(fn).parameters.values():
        if p.kind is p.VAR_KEYWORD:
            parts.append(f"**{p.name}")
        elif p.kind is p.VAR_POSITIONAL:
            parts.append(f"*{p.name}")
        elif p.default is p.empty:
            parts.append(p.name)
        else:
            parts.append(f"{p.name}={value_text(p.default)}")
    return "(" + ", ".join(parts) + ")"


def _table(title: str, first: str, *columns: str):
    """A rich table titled on the left, its first column (the name to type) in bold."""
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    table.add_column(first, style="bold")
    for column in columns:
        table.add_column(column)
    return table


def show_models() -> None:
    from kdsl.zoo import MODELS

    console = make_console()
    table = _table("models: kdsl.zoo (reference as kdsl.zoo:NAME(args))", "name", "arguments", "what it is")
    for name, fn in MODELS.items():
        table.add_row(name, _arguments(fn), _first_line(fn))
    console.print(table)
    hubs = _table("model hubs (optional; imported only when a reference names them)", "package", "installed",
                  "example reference", "what it gives")
    for package, example, what in INTEGRATIONS:
        found = importlib.util.find_spec(package) is not None
        hubs.add_row(package, "yes" if found else f"no (pip install {package})", example, what)
    console.print(hubs)
    console.print("Any importable factory works too: --student 'my_pkg.models:Net(width=2)'. "
                  "`kdsl modules REF --input-shape ...` shows a model's module names.")


def data_readers() -> Dict[str, Callable]:
    """The readers of kdsl.data: its public functions that return a Splits (or TextSplits)."""
    import kdsl.data as data

    readers = {}
    for name in data.__all__:
        fn = getattr(data, name)
        if inspect.isfunction(fn) and str(inspect.signature(fn).return_annotation).endswith("Splits"):
            readers[name] = fn
    return readers


def show_datasets() -> None:
    console = make_console()
    table = _table("datasets: kdsl.data (reference as kdsl.data:NAME(options))", "name", "options", "what it is")
    for name, fn in data_readers().items():
        table.add_row(name, _arguments(fn), _first_line(fn))
    console.print(table)
    console.print("Every reader also takes the loader options batch_size, num_workers and drop_last "
                  "(--data 'kdsl.data:digits(batch_size=64)'). Any importable function returning "
                  "(train, val) datasets works too: --data 'my_pkg.data:load(root=\"...\")'.")


# ------------------------------------------------------------------------------ modules
@dataclass
class ModuleRow:
    """One module of the tree: its dotted name, depth, class, parameters, output shapes."""

    name: str
    depth: int
    cls: str
    params: int
    outputs: List[str] = field(default_factory=list)


def describe_value(value: Any) -> str:
    """A module output's shape: ``[2, 64, 8, 8]``, or the structure of a tuple, list or dict."""
    import torch

    if isinstance(value, torch.Tensor):
        return "[" + ", ".join(str(d) for d in value.shape) + "]"
    if isinstance(value, (tuple, list)):
        inner = ", ".join(describe_value(v) for v in value[:4]) + (", ..." if len(value) > 4 else "")
        return f"({inner})" if isinstance(value, tuple) else f"[{inner}]"
    if isinstance(value, dict) or hasattr(value, "items"):
        try:
            items = list(value.items())
        except Exception:  # noqa: BLE001 - an odd mapping: say what it is
            return type(value).__name__
        inner = ", ".join(f"{k}: {describe_value(v)}" for k, v in items[:4]) + (", ..." if len(items) > 4 else "")
        return "{" + inner + "}"
    return "none" if value is None else type(value).__name__


def module_rows(model, example: Optional[Any]) -> List[ModuleRow]:
    """Every module of ``model`` (the root is ``""``), with the shapes its calls returned while
    ``model(example)`` ran (no call when ``example`` is None). The model's mode is restored."""
    import torch

    rows = {name: ModuleRow(name, name.count(".") + 1 if name else 0, type(m).__name__,
                            sum(p.numel() for p in m.parameters()))
            for name, m in model.named_modules()}
    if example is None:
        return list(rows.values())
    handles = []

    def keep(name: str):
        return lambda _module, _inputs, output: rows[name].outputs.append(describe_value(output))

    was_training = model.training
    try:
        for name, m in model.named_modules():
            handles.append(m.register_forward_hook(keep(name)))
        model.eval()
        with torch.no_grad():
            model(example)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return list(rows.values())


def _shapes_text(outputs: Sequence[str]) -> str:
    if not outputs:
        return "not called"
    if len(set(outputs)) == 1:
        return outputs[0] + (f" (x{len(outputs)} calls)" if len(outputs) > 1 else "")
    return "; ".join(f"call {i}: {o}" for i, o in enumerate(outputs))


def show_modules(ref: str, input_shape: Optional[str], input_dtype: str, depth: Optional[int]) -> None:
    import torch
    from rich.table import Table

    from kdsl.reports.checking import parse_shape
    from kdsl.io.models import model_from_ref
    from kdsl.core.diagnostics import error

    shape = parse_shape(input_shape) if input_shape is not None else None
    model = model_from_ref(ref, "MODEL_REF")
    example = None if shape is None else torch.zeros(shape, dtype=getattr(torch, input_dtype))
    try:
        rows = module_rows(model, example)
    except Exception as exc:  # noqa: BLE001 - the user's model failed: a diagnostic, not a traceback
        raise error("KD720", f"{ref} failed on zeros of shape {list(shape)} ({input_dtype}): "
                    f"{type(exc).__name__}: {exc}",
                    hint="give the shape (and --input-dtype int64 for token ids) the model takes, "
                    "e.g. --input-shape 2,3,32,32 for CIFAR models, 2,1,8,8 for digits") from None
    console = make_console()
    title = f"{ref}: modules" + (f", outputs for input [{', '.join(map(str, shape))}]" if shape else "")
    table = Table(title=title, title_justify="left")
    table.add_column("module (record ... of MODEL.NAME)", style="bold")
    table.add_column("class")
    table.add_column("params", justify="right")
    if shape is not None:
        table.add_column("output shape")
    for row in rows:
        if depth is not None and row.depth > depth:
            continue
        label = "  " * max(0, row.depth - 1) + row.name if row.name else "(the model)"
        cells = [label, row.cls, f"{row.params:,}"]
        if shape is not None:
            cells.append(_shapes_text(row.outputs))
        table.add_row(*cells)
    console.print(table)
    if shape is None:
        console.print("Give --input-shape (e.g. 2,3,32,32) for each module's output shape.")
    console.print("A record names a module by its dotted path from the model: "
                  "`record f = output of student.layer1.0.conv1`.")
