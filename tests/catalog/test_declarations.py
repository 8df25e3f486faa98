"""Declarations (``kdsl.catalog``, torch-free) and implementations (``kdsl.components``, torch)
agree: every built-in entry of every family is checked against the class or factory it names, so
an option's name, order or default written differently on the two sides fails here."""

from __future__ import annotations

import dataclasses

import pytest

from kdsl.catalog.builtin import MODULES, builtin_components
from kdsl.catalog.types import FLOAT, REQUIRED, TENSOR, Component, Param
from tests.catalog.reference import assert_implements, signature_disagreements

BUILTINS = tuple(builtin_components())


def test_every_family_and_entry_is_checked():
    families = {c.impl.partition(":")[0] for c in BUILTINS}
    assert families == {f"kdsl.components.{m}" for m in MODULES}
    assert len(MODULES) == 19 and len(BUILTINS) == 110


@pytest.mark.parametrize("component", BUILTINS, ids=lambda c: f"{c.kind}:{c.name}")
def test_implementation_takes_what_the_entry_declares(component: Component):
    assert_implements(component)


def _kl_div() -> Component:
    return next(c for c in BUILTINS if c.kind == "loss" and c.name == "kl_div")


def _with_options(component: Component, *options: Param) -> Component:
    return dataclasses.replace(component, options=options)


@pytest.mark.parametrize("change, found", [
    (lambda c: _with_options(c, dataclasses.replace(c.options[0], default=2.0), *c.options[1:]),
     "option tau: declared default 2.0, implemented 1.0"),
    (lambda c: _with_options(c, dataclasses.replace(c.options[0], default=1), *c.options[1:]),
     "option tau: declared default 1, implemented 1.0"),
    (lambda c: _with_options(c, dataclasses.replace(c.options[0], default=REQUIRED), *c.options[1:]),
     "option tau: declared default REQUIRED, implemented 1.0"),
    (lambda c: _with_options(c, *c.options[1:], c.options[0]),
     "option: declared ['reduction', 'detach_teacher', 'tau']"),
    (lambda c: _with_options(c, *c.options, Param("scale", FLOAT, 1.0)),
     "option: declared ['tau', 'reduction', 'detach_teacher', 'scale']"),
    (lambda c: dataclasses.replace(c, inputs=c.inputs + (Param("gt_labels", TENSOR),)),
     "input: declared ['preds_S', 'preds_T', 'gt_labels'], implemented ['preds_S', 'preds_T']"),
], ids=["default", "default-type", "required", "order", "extra-option", "extra-input"])
def test_a_disagreement_is_found(change, found):
    problems = signature_disagreements(change(_kl_div()))
    assert len(problems) == 1 and problems[0].startswith(found), problems


def test_an_optimizer_takes_its_parameters_first():
    sgd = next(c for c in BUILTINS if c.kind == "optimizer" and c.name == "sgd")
    assert signature_disagreements(sgd) == []
    as_loss = dataclasses.replace(sgd, kind="loss")  # params would then be an undeclared option
    assert signature_disagreements(as_loss)[0].startswith("option: declared ['lr'")


# ---- implementations built from their entries ----------------------------------------------------
def test_a_declared_class_has_its_entrys_signature():
    import inspect

    from kdsl.components.logit_losses import KLDivergence

    assert str(inspect.signature(KLDivergence)) == "(tau=1.0, reduction='batchmean', detach_teacher=True)"
    loss = KLDivergence(4)  # in the declared order, as a float
    assert loss.tau == 4.0 and type(loss.tau) is float and loss.reduction == "batchmean"
    with pytest.raises(TypeError, match="temperature"):
        KLDivergence(temperature=2.0)


def test_a_declared_list_default_is_never_shared():
    from kdsl.components.adaptive_losses import HCLLoss

    first, second = HCLLoss(), HCLLoss()
    first.output_sizes.append(8)
    assert second.output_sizes == [4, 2, 1] == HCLLoss.declaration.option("output_sizes").default
