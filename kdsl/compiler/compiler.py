"""Verified spec + real models -> :class:`~kdsl.runtime.distiller.Distiller`.

1. models: passed by keyword, or built from the spec's factory; checkpoints loaded; frozen
   teachers put in eval mode without gradients (undone on close);
2. records and deliveries: every path resolved against ``named_modules()`` /
   ``named_parameters()`` or by import, and their hooks and patches installed;
3. with ``example_input``, a dry run of every model (no grad; buffers and RNG restored) records
   every shape, finds records that in-place operations overwrite, and lets connectors' and
   losses' channel counts be inferred;
4. connectors, losses and weights are built, and every loss's inputs checked against its shape
   rules (with a dry run; otherwise at the first step).

All problems found are reported together, located in the spec. If compiling fails, everything
installed so far is removed again.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from kdsl.lang import ir
from kdsl.compiler.weights import load_into
from kdsl.core.diagnostics import Diagnostics, KdslError, Note, error, make
from kdsl.runtime.hooks import (PATCHES, CallRecorder, Delivery, ModuleInputRecorder, ModuleOutputRecorder,
                    ParamRecorder, PassState, Recorder, function_aliases, resolve_callable,
                    signature_of)
from kdsl.lang.refs import call_factory
from kdsl.catalog.types import Component
from kdsl.catalog.registry import REGISTRY
from kdsl.runtime.distiller import Distiller, ExprCompiler, LossTerm, describe_value, frozen_cleanup, info_of
from kdsl.catalog.shapes import TensorInfo, check_rules
from kdsl.core.resolve import import_module
from kdsl.core.span import Span
from kdsl.core.suggest import rank_candidates
from kdsl.lang.literal import literal_value


class _Unavailable(Exception):
    """A value the dry run does not have (no example input, or a batch field not given)."""


class _Skip(Exception):
    """A loss that depends on something already reported broken: not reported again."""


def compile(spec: "ir.Spec | str | os.PathLike[str]", *, example_input: Any = None,
            example_batch: Optional[Dict[str, Any]] = None, device: Any = None,
            **models: nn.Module) -> Distiller:
    """Bind a spec to models and return a :class:`~kdsl.runtime.distiller.Distiller`.

    ``models`` are passed by their names in the spec (``student=..., teacher=...``) and override
    the spec's factories. ``example_input`` (a tensor, a tuple of positional arguments, or a dict
    of keyword arguments) enables the dry run: shapes are checked and channel counts inferred
    before any training step; ``example_batch`` supplies ``batch.NAME`` fields to it.
    ``device`` moves every model there once built (before the dry run).
    """
    if not isinstance(spec, ir.Spec):
        from kdsl.lang.loader import load

        spec = load(spec)
    return _Compiler(spec, models, example_input, example_batch, device).run()


def _size(info: Optional[TensorInfo], inf) -> Optional[int]:
    """The size an Infer reads from a tensor: one dimension, or elements per sample (flat)."""
    if info is None:
        return None
    if inf.flat:
        size = 1
        for d in info.shape[1:]:
            size *= d
        return size
    if -len(info.shape) <= inf.dim < len(info.shape):
        return info.shape[inf.dim]
    return None


def expr_text_short(expr) -> str:
    from kdsl.lang.printer import expr_text

    return expr_text(expr)


def _records_in(node) -> List[str]:
    """Names of the records an expression (or a call) reads, through connectors and selections."""
    if isinstance(node, ir.RecordRef):
        return [node.record]
    found: List[str] = []
    for child in list(getattr(node, "args", ())) + [k.value for k in getattr(node, "kwargs", ())] + \
            list(getattr(node, "items", ())) + ([node.value] if isinstance(node, ir.Select) else []):
        found += _records_in(child)
    return found


def module_candidates(model: nn.Module) -> List[str]:
    return [n for n, _ in model.named_modules() if n]


def suggest_path(path: str, candidates: Sequence[str]) -> Tuple[Optional[str], List[str]]:
    """Best suggestion for a wrong module path (ties broken by module order), and close others."""
    best = rank_candidates(path, candidates, limit=6)
    if not best:
        return None, []
    order = {c: i for i, c in enumerate(candidates)}
    prefix = lambda c: -len(os.path.commonprefix([c, path]))  # noqa: E731
    best.sort(key=lambda c: (prefix(c), order.get(c, 0)))
    return best[0], best[1:3]


def _as_call(example: Any) -> Tuple[tuple, dict]:
    if isinstance(example, dict):
        return (), dict(example)
    if isinstance(example, (tuple, list)):
        return tuple(example), {}
    return (example,), {}


class _Snapshot:
    """Buffers of modules and the RNG states, restored after a dry run."""

    def __init__(self, modules: Sequence[nn.Module]) -> None:
        self.buffers = [(b, b.detach().clone()) for m in modules for b in m.buffers()]
        self.cpu_rng = torch.random.get_rng_state()
        self.cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and \
            torch.cuda.is_initialized() else None

    def restore(self) -> None:
        with torch.no_grad():
            for b, saved in self.buffers:
                b.copy_(saved)
        torch.random.set_rng_state(self.cpu_rng)
        if self.cuda_rng is not None:
            torch.cuda.set_rng_state_all(self.cuda_rng)


class _Compiler:
    def __init__(self, spec: ir.Spec, given: Dict[str, nn.Module], example_input: Any,
                 example_batch: Optional[Dict[str, Any]], device: Any = None) -> None:
        self.spec = spec
        self.device = torch.device(device) if device is not None else None
        self.given = given
        self.example_input = example_input
        self.example_batch = dict(example_batch or {})
        self.diags = Diagnostics(dict(spec.sources))
        self.cleanups: List[Callable[[], None]] = []
        self.on_failure: List[Callable[[], None]] = []  # undone only if compiling fails
        self.state = PassState()
        self.models: Dict[str, nn.Module] = {}
        self.recorders: Dict[str, Recorder] = {}
        self.deliveries: List[Delivery] = []
        self.connectors: Dict[str, nn.Module] = {}
        self.loss_modules: Dict[str, nn.Module] = {}
        self.values: Dict[str, Any] = {}  # record -> dry-run value
        self.dry = example_input is not None
        self.dry_failed = False
        self.broken: set = set()  # records and connectors already reported
        self.built: Dict[str, Dict[str, Any]] = {}  # connector/loss -> options, inferred, shapes

    # ================================================================ driver
    def run(self) -> Distiller:
        try:
            self.import_plugins()
            self.build_models()
            self.diags.raise_if_errors()
            # from here on every problem is collected: a bad path does not hide a shape error
            self.install_records()
            self.install_deliveries()
            if self.dry:
                self.dry_run()
            terms = self.build_graph() if not self.dry_failed else []
            self.diags.raise_if_errors()
            used = {r.model for r in self.spec.records} | {d.source for d in self.spec.deliveries}
            distiller = Distiller(
                spec=self.spec, models=self.models,
                frozen=[m.name for m in self.spec.teachers if m.frozen], recorders=self.recorders,
                deliveries=self.deliveries, connectors=self.connectors, terms=terms,
                state=self.state, used_teachers=sorted(used), cleanups=self.cleanups)
            distiller.shapes = {k: info_of(v) for k, v in self.values.items()}
            distiller.value_descriptions = {k: describe_value(v) for k, v in self.values.items()}
            distiller.built = self.built
            return distiller
        except BaseException:
            self.cleanup()
            for undo in reversed(self.on_failure):
                undo()
            raise

    def cleanup(self) -> None:
        for fn in reversed(self.cleanups):
            try:
                fn()
            except Exception:  # noqa: BLE001 - restore as much as possible
                pass
        self.cleanups = []

    def import_plugins(self) -> None:
        for imp in self.spec.imports:
            try:
                import_module(imp.module, span=imp.module_span)
            except KdslError as exc:
                self.diags.extend(exc.diagnostics)

    # ================================================================ models
    def build_models(self) -> None:
        names = [m.name for m in self.spec.models]
        for extra in sorted(set(self.given) - set(names)):
            from kdsl.core.suggest import did_you_mean

            self.diags.error("KD514", f"kdsl.compile got a model '{extra}' that the spec does not declare",
                             hint=did_you_mean(extra, names) or "the spec declares " +
                             ", ".join(f"'{n}'" for n in names))
        for decl in self.spec.models:
            model = self.given.get(decl.name)
            if model is None and decl.factory is None:
                self.diags.error(
                    "KD507", f"model '{decl.name}' was not given and has no factory", decl.name_span,
                    hint=f"pass {decl.name}=... to kdsl.compile (--{decl.role} on the command line), "
                    f"or write {decl.name} = model(\"pkg.module:factory\")")
                continue
            if model is None:
                try:
                    f = decl.factory
                    model = call_factory(f.ref, [literal_value(a) for a in f.args],
                                         {k.name: literal_value(k.value) for k in f.kwargs},
                                         f"model '{decl.name}'", f.ref_span or f.span)
                except KdslError as exc:
                    self.diags.extend(exc.diagnostics)
                    continue
            if not isinstance(model, nn.Module):
                self.diags.error("KD508", f"model '{decl.name}' is a {type(model).__name__}, not an nn.Module",
                                 decl.name_span)
                continue
            if decl.checkpoint:
                base = os.path.dirname(decl.checkpoint_span.file) if decl.checkpoint_span and \
                    not decl.checkpoint_span.file.startswith("<") else ""
                path = decl.checkpoint if os.path.isabs(decl.checkpoint) else os.path.join(base, decl.checkpoint)
                if decl.name in self.given:
                    # a passed-in model gets its own weights back if compiling fails
                    saved = {k: v.detach().clone() for k, v in model.state_dict().items()}
                    self.on_failure.append(lambda m=model, w=saved: m.load_state_dict(w))
                try:
                    load_into(model, path, decl.checkpoint_span, what=f"{decl.role} '{decl.name}'")
                except KdslError as exc:
                    self.diags.extend(exc.diagnostics)
                    continue
            if self.device is not None:
                model.to(self.device)
            for other, m in self.models.items():
                if m is model:
                    self.diags.error("KD515", f"'{decl.name}' and '{other}' are the same model object",
                                     decl.name_span, hint="pass a separate model for each")
            self.models[decl.name] = model
        if self.diags.has_errors:
            return
        for decl in self.spec.teachers:
            if decl.frozen:
                self.cleanups.append(frozen_cleanup(self.models[decl.name]))

    # ================================================================ paths
    def module(self, model_name: str, path: Sequence[str], span: Optional[Span],
               what: str = "module") -> Optional[nn.Module]:
        model = self.models[model_name]
        dotted = ".".join(path)
        if not dotted:
            return model
        try:
            return model.get_submodule(dotted)
        except AttributeError:
            pass
        params = dict(model.named_parameters())
        buffers = dict(model.named_buffers())
        hints = []
        if dotted in params or dotted in buffers:
            hints.append(f"'{dotted}' is a {'parameter' if dotted in params else 'buffer'}: "
                         f"record it with `param {model_name}.{dotted}`")
        else:
            best, others = suggest_path(dotted, module_candidates(model))
            if best:
                hints.append(f"did you mean '{best}'?")
                if others:
                    hints.append("also close: " + ", ".join(f"'{o}'" for o in others))
            else:
                top = [n for n, _ in model.named_children()]
                hints.append(f"{model_name}'s top-level modules: " + ", ".join(top[:12]))
        self.diags.error("KD501", f"{model_name} ({type(model).__name__}) has no {what} '{dotted}'",
                         span, hints=hints)
        return None

    def resolve_module_ref(self, ref: ir.ModuleRef) -> nn.Module:
        module = self.module(ref.model, ref.path, ref.span)
        if module is None:
            raise KdslError(self.diags.items[-1:])
        return module

    # ================================================================ records
    def install_records(self) -> None:
        for rec in self.spec.records:
            try:
                recorder = self._recorder(rec)
            except KdslError as exc:
                self.diags.extend(exc.diagnostics)
                continue
            if recorder is not None:
                self.recorders[rec.name] = recorder
                self.cleanups.append(recorder.remove)

    def _recorder(self, rec: ir.RecordDecl) -> Optional[Recorder]:
        target = rec.target
        common = dict(name=rec.name, model=rec.model, span=rec.span, state=self.state,
                      invocation=rec.invocation, description=rec.describe())
        if rec.what == "param":
            model = self.models[rec.model]
            dotted = target.dotted
            tensors = dict(model.named_parameters())
            tensors.update(dict(model.named_buffers()))
            if dotted not in tensors:
                best, others = suggest_path(dotted, list(tensors))
                hints = [f"did you mean '{best}'?"] if best else []
                self.diags.error("KD502", f"{rec.model} ({type(model).__name__}) has no parameter '{dotted}'",
                                 target.span, hints=hints)
                return None
            return ParamRecorder(tensor=tensors[dotted], **common)
        if isinstance(target, ir.ModulePath):
            module = self.module(rec.model, target.path, target.span)
            if module is None:
                return None
            if rec.what == "output":
                recorder: Recorder = ModuleOutputRecorder(**common)
            else:
                recorder = ModuleInputRecorder(selector=rec.input, **common)
            recorder.install(module)
            return recorder
        kind = "method" if isinstance(target, ir.MethodRef) else "function"
        owner, name, raw = resolve_callable(target.ref, kind, target.ref_span or target.span)
        sig = signature_of(raw)
        skip_self = kind == "method" and not isinstance(raw, staticmethod)
        if rec.what == "input" and isinstance(rec.input, str) and sig is not None and \
                rec.input not in sig.parameters and not any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values()):
            from kdsl.core.suggest import did_you_mean

            self.diags.error("KD512", f"{target} has no parameter '{rec.input}'", rec.span,
                             hint=did_you_mean(rec.input, list(sig.parameters)))
            return None
        recorder = CallRecorder(what=rec.what, selector=rec.input if rec.what == "input" else None,
                                signature=sig, skip_self=skip_self, **common)
        self._patch(owner, name, raw, kind, recorder)
        return recorder

    def _patch(self, owner, name, raw, kind, listener) -> None:
        listener.handles.append(PATCHES.add(owner, name, listener))
        listener.places = [(owner, name)]  # for `kdsl explain`
        if kind == "function":
            func = PATCHES.original(owner, name)  # not an installed dispatcher (already patched)
            for alias_owner, alias in function_aliases(func, list(self.models.values())):
                if alias_owner is owner and alias == name:
                    continue
                listener.handles.append(PATCHES.add(alias_owner, alias, listener))
                listener.places.append((alias_owner, alias))

    # ================================================================ deliveries
    def install_deliveries(self) -> None:
        for d in self.spec.deliveries:
            kind = "method" if isinstance(d.target, ir.MethodRef) else "function"
            try:
                owner, name, raw = resolve_callable(d.target.ref, kind, d.target.ref_span or d.target.span)
            except KdslError as exc:
                self.diags.extend(exc.diagnostics)
                continue
            delivery = Delivery(f"{d.target}", d.source, d.dest, d.keep, d.span, self.state)
            self._patch(owner, name, raw, kind, delivery)
            self.deliveries.append(delivery)
            self.cleanups.append(delivery.remove)

    # ================================================================ dry run
    def _pass_order(self) -> List[str]:
        used = {r.model for r in self.spec.records} | {d.source for d in self.spec.deliveries}
        return [t.name for t in self.spec.teachers if t.name in used] + [self.spec.student.name]

    def dry_run(self) -> None:
        args, kwargs = _as_call(self.example_input)
        snapshot = _Snapshot(list(self.models.values()))
        try:
            with torch.no_grad():
                for name in self._pass_order():
                    decl = self.spec.model(name)
                    self.state.active = name
                    try:
                        self.models[name](*args, **kwargs)
                    except KdslError as exc:
                        self.diags.extend(exc.diagnostics)
                        self.dry_failed = True
                        return
                    except Exception as exc:  # noqa: BLE001 - the user's model rejected the input
                        self.dry_failed = True
                        shapes = "; ".join(describe_value(a) for a in args)
                        self.diags.error("KD516", f"the example input could not be run through {decl.role} "
                                         f"'{name}': {type(exc).__name__}: {exc}", decl.name_span,
                                         hint=f"example input: {shapes}")
                        return
                    finally:
                        self.state.active = None
            for d in self.deliveries:
                try:
                    d.finish_step()
                except KdslError as exc:
                    self.diags.extend(exc.diagnostics)
            for r in self.recorders.values():
                r.check_overwrites()
            self.state.calibrating = False
            for name, r in self.recorders.items():
                try:
                    from kdsl.runtime.hooks import check_missing

                    self.values[name] = check_missing(r.read(), r)
                except KdslError as exc:
                    self.broken.add(name)
                    for d in exc.diagnostics:
                        if d.code == "KD607":
                            rec = self.spec.record(name)
                            model = self.spec.model(rec.model)
                            whose = f"the {model.role}'s" if model.name == model.role else \
                                f"{model.role} '{model.name}''s"
                            d = make("KD506", f"record '{name}': {rec.describe()} never ran in "
                                     f"{whose} forward pass on the example input",
                                     rec.target.span, hint="is it used in forward()? (modules built but "
                                     "never called, or skipped in this mode, record nothing)")
                        self.diags.add(d)
        finally:
            self.state.active = None
            for r in self.recorders.values():  # the values live on in self.values, not in them
                r.clear()
            snapshot.restore()

    # ================================================================ connectors, losses, weights
    def _device_dtype(self) -> Tuple[torch.device, torch.dtype]:
        for p in self.models[self.spec.student.name].parameters():
            return p.device, p.dtype
        return torch.device("cpu"), torch.get_default_dtype()

    def _options(self, component: Component, call: ir.Call, span) -> Dict[str, Any]:
        """Literal and module options of a call as Python values (positional ones by order)."""
        options: Dict[str, Any] = {}
        names = [p.name for p in component.options]
        for i, a in enumerate(call.args if component.kind != "loss" else ()):
            options[names[i]] = self._option_value(a)
        for k in call.kwargs:
            if component.kind == "loss" and component.input(k.name) is not None:
                continue
            options[k.name] = self._option_value(k.value)
        return options

    def _option_value(self, expr) -> Any:
        if isinstance(expr, ir.ModuleRef):
            return self.resolve_module_ref(expr)
        return literal_value(expr)

    def _build(self, component: Component, options: Dict[str, Any], span, what: str, code: str):
        try:
            module = component.load()(**options)
        except KdslError:
            raise
        except Exception as exc:  # noqa: BLE001 - the component rejected its options
            raise error(code, f"cannot build {what} ({component.name}): {type(exc).__name__}: {exc}",
                        span) from None
        if not isinstance(module, nn.Module):
            raise error(code, f"{component.name} did not build an nn.Module", span)
        device, dtype = self._device_dtype()
        module.to(device=device)
        if dtype.is_floating_point and dtype != torch.get_default_dtype():
            module.to(dtype=dtype)
        return module

    def _infer(self, component: Component, options: Dict[str, Any], infos: Dict[str, Optional[TensorInfo]],
               target: Callable[[int], Optional[int]], span, what: str) -> None:
        for inf in component.infer:
            if inf.option in options:
                continue
            if inf.source == "target":
                size = target(inf.dim)
                source_text = "the tensor its output is compared with"
            else:
                src = component.inputs[0].name if inf.source == "input" else inf.source
                size = _size(infos.get(src), inf)
                source_text = f"its input '{src}'"
            if size is None:
                if not self.dry:
                    hint = (f"give {inf.option}=..., or pass example_input to kdsl.compile "
                            "(--input-shape or --data on the command line) so it can be inferred")
                elif inf.source == "target":
                    hint = (f"give {inf.option}=...: kdsl infers it only where a loss compares the "
                            "output directly with a tensor of known shape")
                else:
                    hint = f"give {inf.option}=...: the input's shape is not known"
                raise error("KD510", f"{what} ({component.name}) leaves out '{inf.option}', which is "
                            f"inferred from {source_text}", span, hint=hint)
            options[inf.option] = size

    def _value(self, expr, target: Callable[[int], Optional[int]] = lambda d: None) -> Any:
        """Evaluate an expression on the dry run's values, building connectors on first use."""
        if isinstance(expr, ir.Const):
            return expr.value
        if isinstance(expr, ir.ListExpr):
            return [self._value(i) for i in expr.items]
        if isinstance(expr, ir.RecordRef):
            if expr.record not in self.values:
                raise _Unavailable()
            return self.values[expr.record]
        if isinstance(expr, ir.BatchRef):
            if expr.field not in self.example_batch:
                raise _Unavailable()
            return self.example_batch[expr.field]
        if isinstance(expr, ir.ModuleRef):
            return self.resolve_module_ref(expr)
        if isinstance(expr, ir.Select):
            value = self._value(expr.value)
            try:
                if expr.by == "attr":
                    return value[expr.key] if isinstance(value, dict) else getattr(value, expr.key)
                return value[expr.key]
            except (KeyError, IndexError, AttributeError, TypeError) as exc:
                text = f".{expr.key}" if expr.by == "attr" else f"[{expr.key!r}]"
                raise error("KD610", f"cannot select {text} of {describe_value(value)}: {exc}",
                            expr.span) from None
        if isinstance(expr, ir.ConnectorApply):
            return self._apply(expr, target)
        raise AssertionError(f"unresolved expression {expr.kind}")

    def _apply(self, expr: ir.ConnectorApply, target) -> Any:
        if expr.connector in self.broken:
            raise _Skip()
        decl = self.spec.connector(expr.connector)
        component = REGISTRY.get("connector", decl.component)
        values: List[Any] = []
        available = True
        for a in expr.args:
            try:
                values.append(self._value(a))
            except _Unavailable:
                available = False
                values.append(None)
        if expr.connector not in self.connectors:
            options = self._options(component, decl.call, decl.span)
            infos = {p.name: info_of(v) for p, v in zip(component.inputs, values)}
            given = set(options)
            self._infer(component, options, infos, target, decl.span, f"connector '{decl.name}'")
            self.built[expr.connector] = {"options": dict(options), "inferred": sorted(set(options) - given),
                                          "input": infos.get(component.inputs[0].name) if component.inputs else None}
            try:
                self.connectors[expr.connector] = self._build(component, options, decl.span,
                                                              f"connector '{decl.name}'", "KD510")
            except KdslError:
                self.broken.add(expr.connector)
                raise
        if not available:
            raise _Unavailable()
        self._check_declared_sizes(expr, decl, component, values)
        module = self.connectors[expr.connector]
        was_training = module.training
        module.eval()
        snapshot = _Snapshot([module])  # a dry run leaves no trace: buffers and RNG come back
        try:
            with torch.no_grad():
                out = module(*values, **{k.name: self._value(k.value) for k in expr.kwargs})
            self.built[expr.connector].setdefault("output", info_of(out))
            return out
        except KdslError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise error("KD602", f"connector '{decl.name}' ({decl.component}) failed on the dry run: "
                        f"{type(exc).__name__}: {exc}", expr.span,
                        hint="input: " + "; ".join(describe_value(v) for v in values)) from None
        finally:
            snapshot.restore()
            module.train(was_training)

    def _check_declared_sizes(self, expr, decl, component, values) -> None:
        """A size the spec gives (``in_channels=32``) that the input contradicts: say so plainly,
        before torch's own error from inside the connector."""
        built = self.built.get(expr.connector, {})
        options = built.get("options", {})
        for inf in component.infer:
            if inf.source == "target" or inf.option in built.get("inferred", ()) or inf.option not in options:
                continue
            name = component.inputs[0].name if inf.source == "input" else inf.source
            index = [p.name for p in component.inputs].index(name) if name in [p.name for p in component.inputs] else 0
            info = info_of(values[index]) if index < len(values) else None
            actual = _size(info, inf)
            if actual is not None and actual != options[inf.option]:
                what = "features per sample" if inf.flat else ("channels" if inf.dim == 1 else f"size {actual} in dimension {inf.dim}")
                raise error("KD505", f"connector '{decl.name}' ({decl.component}) has {inf.option}="
                            f"{options[inf.option]}, but its input {expr_text_short(expr.args[index])} "
                            f"has {actual} {what} {info.describe()}", expr.span,
                            hint=f"set {inf.option}={actual}, or leave it out to have it inferred",
                            notes=[Note(message=f"'{decl.name}' declared", span=decl.span)])

    def build_graph(self) -> List[LossTerm]:
        terms: List[LossTerm] = []
        exprs = ExprCompiler(self.recorders, self.connectors, self.resolve_module_ref)
        for loss in self.spec.losses:
            try:
                terms.append(self._term(loss, exprs))
            except KdslError as exc:
                self.diags.extend(exc.diagnostics)
            except _Skip:
                pass
        for con in self.spec.connectors:  # declared but never applied: still built and trained
            if con.name not in self.connectors and con.name not in self.broken and not self.diags.has_errors:
                component = REGISTRY.get("connector", con.component)
                try:
                    options = self._options(component, con.call, con.span)
                    self._infer(component, options, {}, lambda d: None, con.span, f"connector '{con.name}'")
                    self.connectors[con.name] = self._build(component, options, con.span,
                                                            f"connector '{con.name}'", "KD510")
                except KdslError as exc:
                    self.diags.extend(exc.diagnostics)
        return terms

    def _term(self, loss: ir.LossDecl, exprs: ExprCompiler) -> LossTerm:
        component = REGISTRY.get("loss", loss.component)
        call = loss.call
        if any(r not in self.recorders or r in self.broken for r in _records_in(call)):
            raise _Skip()  # a record it reads failed to resolve or to run: reported already
        bound: Dict[str, Any] = {}
        for p, a in zip(component.inputs, call.args):
            bound[p.name] = a
        for k in call.kwargs:
            if component.input(k.name) is not None:
                bound[k.name] = k.value
        values: Dict[str, Any] = {}
        infos: Dict[str, Optional[TensorInfo]] = {}
        complete = True

        def target_of(name: str) -> Callable[[int], Optional[int]]:
            def dim_of(dim: int) -> Optional[int]:
                for rule in component.rules:
                    partner = rule.partner_dim(name, dim)
                    if partner and infos.get(partner[0]) is not None:
                        shape = infos[partner[0]].shape
                        if -len(shape) <= partner[1] < len(shape):
                            return shape[partner[1]]
                return None
            return dim_of

        for name, expr in self._evaluation_order(bound):
            try:
                values[name] = self._value(expr, target_of(name))
                infos[name] = info_of(values[name])
            except _Unavailable:
                complete = False
        options = self._options(component, call, loss.span)
        given = set(options)
        self._infer(component, options, infos, lambda d: None, loss.span, f"loss '{loss.name}'")
        self.built[loss.name] = {"options": {k: v for k, v in options.items() if not hasattr(v, "forward")},
                                 "inferred": sorted(set(options) - given), "inputs": dict(infos)}
        module = self._build(component, options, loss.span, f"loss '{loss.name}'", "KD513")
        weight = self._weight(loss)
        fns = [exprs(bound[p.name]) if p.name in bound else None for p in component.inputs]
        term = LossTerm(loss, module, fns, [p.name for p in component.inputs], component.rules, weight)
        known = {k: v for k, v in infos.items() if v is not None}
        if known:
            problems = check_rules(component.rules, known)
            for p in problems:
                self.diags.error("KD505", f"loss '{loss.name}' ({loss.component}): {p}", loss.span,
                                 notes=self._shape_notes(bound, infos))
            if not problems and complete:
                term.checked = True
                self._try_loss(term, [values.get(p.name) for p in component.inputs])
        return term

    def _evaluation_order(self, bound: Dict[str, Any]) -> List[Tuple[str, Any]]:
        """Plain inputs first, then connector applications, those whose output size is inferred
        from another input last (the partner's shape must be known by then)."""
        def rank(item) -> int:
            expr = item[1]
            if not isinstance(expr, ir.ConnectorApply):
                return 0
            if expr.connector in self.connectors:
                return 1
            decl = self.spec.connector(expr.connector)
            component = REGISTRY.get("connector", decl.component)
            given = {k.name for k in decl.call.kwargs} | {p.name for p, _ in zip(component.options, decl.call.args)}
            needs_target = any(i.source == "target" and i.option not in given for i in component.infer)
            return 2 if needs_target else 1
        return sorted(bound.items(), key=rank)

    def _shape_notes(self, bound: Dict[str, Any], infos: Dict[str, Optional[TensorInfo]]) -> List[Note]:
        notes = []
        for name, expr in bound.items():
            info = infos.get(name)
            if info is not None:
                notes.append(Note(message=f"'{name}' has shape {info.describe()} ({info.dtype})",
                                  span=expr.span))
        return notes

    def _try_loss(self, term: LossTerm, values: List[Any]) -> None:
        """Run the loss once on the dry-run values to catch errors before training."""
        snapshot = _Snapshot([term.module])
        try:
            with torch.no_grad():
                term.module(*values)
        except Exception as exc:  # noqa: BLE001
            self.diags.error("KD601", f"loss '{term.name}' ({term.component}) fails on the dry-run "
                             f"values: {type(exc).__name__}: {exc}", term.span,
                             hint="inputs: " + "; ".join(f"{n} = {describe_value(v)}"
                                                         for n, v in zip(term.input_names, values)))
        finally:
            snapshot.restore()

    def _weight(self, loss: ir.LossDecl) -> Any:
        w = loss.weight
        if w is None:
            return 1.0
        if isinstance(w, ir.Const):
            return float(w.value)
        component = REGISTRY.get("schedule", w.func)
        options = self._options(component, w, w.span)
        return component.load()(**options)
