"""Issue #26.13's audit of every numeric option of the catalog: each has a constraint, or is one of
the options below whose every finite value (negative included) means something. Whatever the
constraint, an infinite value (``1e400``) is refused (issue #26.12: ``sgd(lr=1e400)`` trained to NaN)."""

from __future__ import annotations

import pytest

from kdsl.catalog.binding import value_problem
from kdsl.catalog.registry import REGISTRY

# (kind, name, option): why any finite value is meaningful
SIGNED = {
    ("loss", "cross_entropy", "ignore_index"): "a label value, -100 by convention",
    ("loss", "token_jsd", "ignore_index"): "a label value",
    ("loss", "token_kl", "ignore_index"): "a label value",
    ("loss", "token_reverse_kl", "ignore_index"): "a label value",
    ("loss", "token_topk_kl", "ignore_index"): "a label value",
    ("loss", "token_jsd_chunked", "ignore_index"): "a label value",
    ("loss", "token_kl_chunked", "ignore_index"): "a label value",
    ("loss", "token_reverse_kl_chunked", "ignore_index"): "a label value",
    ("loss", "l2", "mult"): "a signed scale",
    ("loss", "nst", "coef0"): "the polynomial kernel's constant term",
    ("connector", "flatten", "start_dim"): "a dimension, negative from the end",
    ("connector", "flatten", "end_dim"): "a dimension, negative from the end",
    ("function", "argmax", "dim"): "a dimension",
    ("function", "flatten", "start_dim"): "a dimension",
    ("function", "log_softmax", "dim"): "a dimension",
    ("function", "softmax", "dim"): "a dimension",
    ("schedule", "constant", "value"): "a term weight: negative maximises (dfad's generator)",
    ("schedule", "cosine", "start"): "a term weight",
    ("schedule", "cosine", "end"): "a term weight",
    ("schedule", "linear", "start"): "a term weight",
    ("schedule", "linear", "end"): "a term weight",
    ("schedule", "step", "value"): "a term weight",
    ("schedule", "warmup", "value"): "a term weight",
}


def _numeric_options():
    for c in REGISTRY.all():
        for p in c.options:
            if p.type.name in ("int", "float"):
                yield c, p


def test_every_numeric_option_has_a_constraint_or_a_reason():
    unconstrained = {(c.kind, c.name, p.name) for c, p in _numeric_options() if p.constraint is None}
    assert unconstrained == set(SIGNED)


@pytest.mark.parametrize("component, param", [(c, p) for c, p in _numeric_options() if p.type.name == "float"],
                         ids=lambda x: getattr(x, "name", ""))
def test_no_float_option_takes_infinity(component, param):
    for value in (float("inf"), float("-inf")):
        problem = value_problem(component, param, value)
        assert problem is not None and problem.code == "KD312", (component.name, param.name)
