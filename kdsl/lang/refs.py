"""References to Python code: ``"pkg.module:attr"``, and calls ``pkg.module:factory(k=v)`` written
in the language's own call syntax (command-line model and data references)."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

from kdsl.core.resolve import import_ref
from kdsl.core.diagnostics import KdslError, error, exception_summary
from kdsl.core.span import Span


def _read(text: str, what: str, start: str, hint: str):
    """Parse a command-line value with the language's own parser: (tree, builder)."""
    import lark

    from kdsl.lang import parser
    from kdsl.lang.lower import Builder
    from kdsl.core.diagnostics import Diagnostics
    from kdsl.core.span import SourceText

    source = SourceText(f"<{what}>", text)
    parse = parser.parse_ref_call if start == "ref_call" else parser.parse_value
    try:
        tree = parse(text)
    except lark.UnexpectedInput:
        raise error("KD701", f"cannot read the {what} '{text}'", hint=hint) from None
    return tree, Builder(parser.Positions(source, 0), Diagnostics({source.name: text}))


def _built(build, what: str):
    """``build()``; a number too long for Python to read (``int()`` stops at 4300 digits) is a
    usage error, not an internal one."""
    try:
        return build()
    except ValueError as exc:
        detail = str(exc).split("; use sys.set_int_max_str_digits")[0]  # not a knob users have
        raise error("KD701", f"cannot read the {what}: a number in it is too long ({detail})") from None


def _literal_arguments(args, kwargs, what: str, text: str) -> Tuple[List[Any], Dict[str, Any]]:
    from kdsl.lang.literal import literal_value

    seen = set()
    for k in kwargs:  # a keyword given twice is an error (as in Python), not "the last one wins"
        if k.name in seen:
            raise error("KD307", f"'{k.name}' is given twice in the {what} '{text}'")
        seen.add(k.name)
    try:
        return [literal_value(a) for a in args], {k.name: literal_value(k.value) for k in kwargs}
    except ValueError:
        raise error("KD701", f"options of the {what} '{text}' must be literal values",
                    hint="numbers, strings, true/false/none or lists") from None


def parse_call(text: str, what: str) -> Tuple[str, List[Any], Dict[str, Any]]:
    """``pkg.module:factory(a, k=v)`` -> (ref, args, kwargs) with literal values."""
    tree, builder = _read(text, f"{what} reference", "ref_call",
                          "write pkg.module:factory or pkg.module:factory(option=value, ...)")
    args, kwargs = _built(lambda: builder.arguments(tree.children[1]), f"{what} reference")
    builder.diags.raise_if_errors()
    return (str(tree.children[0]),) + _literal_arguments(args, kwargs, f"{what} reference", text)


def parse_option_call(text: str, what: str) -> Tuple[str, List[Any], Dict[str, Any]]:
    """``sgd(lr=0.1)`` or ``sgd`` -> (name, args, kwargs) with literal values."""
    from kdsl.lang import ir

    tree, builder = _read(text, what, "value", "write name(option=value, ...), e.g. sgd(lr=0.1, momentum=0.9)")
    expr = _built(lambda: builder.expr(tree.children[0]), what)
    builder.diags.raise_if_errors()
    if isinstance(expr, ir.Name):
        return expr.name, [], {}
    if not isinstance(expr, ir.Call):
        raise error("KD701", f"the {what} '{text}' is not a call", hint="e.g. sgd(lr=0.1)")
    return (expr.func,) + _literal_arguments(expr.args, expr.kwargs, what, text)


# Model hubs whose models are not attributes of the module named in the reference.
def _hub_factory(ref: str):
    hub, _, name = ref.partition(":")
    if hub == "torchvision":
        import torchvision

        return lambda *a, **k: torchvision.models.get_model(name, *a, **k)
    if hub == "timm":
        import timm

        if callable(getattr(timm, name, None)):  # timm:create_model("resnet18", pretrained=false)
            return getattr(timm, name)
        return lambda *a, **k: timm.create_model(name, *a, **k)
    return None


def call_factory(ref: str, args, kwargs, what: str, span: Optional[Span] = None):
    hub = ref.partition(":")[0]
    if hub in ("torchvision", "timm"):
        try:
            factory = _hub_factory(ref)
        except ImportError as exc:
            raise error("KD404", f"{what} \"{ref}\" needs {hub}, which cannot be imported: {exc}",
                        span, hint=f"pip install {hub}" + (" (the release that matches your torch)"
                                                            if hub == "torchvision" else "")) from None
    else:
        factory = import_ref(ref, what, span)
    if not callable(factory):
        raise error("KD508", f"{what} reference \"{ref}\" is not callable", span)
    try:
        return factory(*args, **kwargs)
    except KdslError as exc:  # a kdsl factory's own diagnostic (kdsl.hub: KD546, ...), located here
        raise KdslError([d if d.span is not None or span is None else d.model_copy(update={"span": span})
                         for d in exc.diagnostics]) from None
    except Exception as exc:  # noqa: BLE001 - the factory's own error, shown in one line
        raise error("KD508", f"{what} factory \"{ref}\" failed: {exception_summary(exc)}", span) from None
