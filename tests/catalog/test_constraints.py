"""Value constraints: declared once on the catalog's parameters, described in words, and checked by
the same function for `kdsl check`, `kdsl.build_loss`/`build_connector` and the compiler's builds."""

from __future__ import annotations

import math
from typing import Annotated

import pytest
import torch

import kdsl
from kdsl.catalog.binding import instantiate, type_problem, value_problem
from kdsl.catalog.registry import REGISTRY
from kdsl.catalog.types import (COUNT, NON_EMPTY, NON_NEGATIVE, POSITIVE, PROBABILITY, Constraint,
                                at_least, each, interval, one_or_each)

SPEC_HEAD = ("student\nteacher\nrecord s = output of student.layer1\nrecord t = output of teacher.layer1\n"
             "record zs = output of student\nrecord zt = output of teacher\n")


# --------------------------------------------------------------------------------------------
# The constraint type: words and checks
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("constraint, words", [
    (POSITIVE, "be > 0"),
    (NON_NEGATIVE, "be >= 0"),
    (PROBABILITY, "be in [0, 1]"),
    (COUNT, "be >= 1"),
    (interval(0, 1, hi_open=True), "be in [0, 1)"),
    (interval(-1.5, 2.5, lo_open=True), "be in (-1.5, 2.5]"),
    (Constraint(hi=10, hi_open=True), "be < 10"),
    (NON_EMPTY, "be non-empty"),
    (each(COUNT), "have every item >= 1"),
    (each(POSITIVE, min_items=2, max_items=2), "have 2 items with every item > 0"),
    (each(POSITIVE, max_items=3), "have at most 3 items with every item > 0"),
    (one_or_each(COUNT), "be >= 1, or a list that must be non-empty with every item >= 1"),
])
def test_constraints_describe_themselves(constraint, words):
    assert constraint.describe() == words


@pytest.mark.parametrize("constraint, good, bad", [
    (POSITIVE, [1e-12, 1, 3.5, 1e308], [0, 0.0, -1, -1e308]),
    (NON_NEGATIVE, [0, 0.0, 2], [-1e-12, -3]),
    (PROBABILITY, [0, 0.5, 1, 1.0], [-0.01, 1.01, 2]),
    (interval(0, 1, hi_open=True), [0, 0.999], [1, 1.0, -0.1]),
    (interval(0, 1, lo_open=True), [1, 1e-9], [0, 0.0]),
    (COUNT, [1, 64], [0, -3]),
])
def test_bounds_are_checked_at_their_edges(constraint, good, bad):
    for value in good:
        assert constraint.violation(value) is None, value
    for value in bad:
        found = constraint.violation(value)
        assert found is not None and found.item is None, value
        assert found.requirement == "must " + constraint.describe()


def test_list_constraints_name_the_offending_item():
    sizes = one_or_each(COUNT)
    assert sizes.violation(3) is None and sizes.violation([1, 2]) is None
    assert sizes.violation(0).requirement == "must be >= 1"
    empty = sizes.violation([])
    assert (empty.requirement, empty.value, empty.item) == ("must be non-empty", [], None)
    bad = sizes.violation([4, 0, -1])
    assert (bad.requirement, bad.value, bad.item) == ("must have every item >= 1", 0, 1)
    betas = each(interval(0, 1, hi_open=True), min_items=2, max_items=2)
    assert betas.violation((0.9, 0.999)) is None
    assert betas.violation([0.9]).requirement == "must have 2 items"
    assert betas.violation([0.9, 1.0]).item == 1
    # strings and booleans are the type's business, not a range's
    assert POSITIVE.violation("x") is None and POSITIVE.violation(None) is None


@pytest.mark.parametrize("value, words", [
    (math.inf, "must be finite"), (-math.inf, "must be finite"), (math.nan, "must be finite"),
    (2 ** 63, "must fit in 64 bits"), (-(2 ** 63) - 1, "must fit in 64 bits"),
])
def test_no_range_admits_a_number_a_tensor_cannot_hold(value, words):
    # inf passes "> 0" and NaN compares false with every bound; a 20-digit integer overflows torch
    for constraint in (POSITIVE, COUNT, Constraint(), one_or_each(COUNT)):
        found = constraint.violation(value)
        assert found is not None and found.requirement == words, (constraint, value)
        assert found.hint and ("1.8e308" in found.hint or str(2 ** 63 - 1) in found.hint)
        item = constraint.violation([1, value])
        assert item is not None and (item.requirement, item.item) == (words, 1), (constraint, value)
    assert Constraint().violation(2 ** 63 - 1) is None and Constraint().violation(-1e308) is None


# --------------------------------------------------------------------------------------------
# Every built-in declaration
# --------------------------------------------------------------------------------------------
ALL = REGISTRY.all()


@pytest.mark.parametrize("component", ALL, ids=lambda c: f"{c.kind}:{c.name}")
def test_every_default_satisfies_its_own_constraint(component):
    for p in component.options:
        if not p.required:
            assert value_problem(component, p, p.default) is None, p.name


COUNT_WORDS = ("channels", "features", "feat_dim", "num_groups", "kernel_size", "stride",
               "degree", "nce_k", "num_data")


@pytest.mark.parametrize("component", [c for c in ALL if c.origin == "kdsl"], ids=lambda c: c.name)
def test_counts_and_temperatures_are_constrained(component):
    # the formula needs them: a channel count of 0 builds an empty layer, tau = 0 divides by 0
    for p in component.options:
        int_like = p.type.name == "int" or any(a.name == "int" for a in p.type.alternatives)
        if int_like and any(w in p.name for w in COUNT_WORDS):
            assert p.constraint is not None and p.constraint.lo is not None \
                and p.constraint.lo >= 1, (component.name, p.name)
        if p.name in ("tau", "nce_t", "eps", "lr", "gamma") and component.kind == "loss":
            assert p.constraint == POSITIVE, (component.name, p.name)


def _is_numeric(t) -> bool:
    return t.name in ("float", "int") or (t.item is not None and _is_numeric(t.item)) \
        or any(_is_numeric(a) for a in t.alternatives)


# Numeric options any finite value of which means something; every other one declares its range.
UNBOUNDED = {
    "ignore_index": "any label value may mark the positions left out (torch's default is -100)",
    "dim": "a dimension: negative counts from the end",
    "start_dim": "a dimension: negative counts from the end",
    "end_dim": "a dimension: negative counts from the end",
    "mult": "l2's scale of the normalized features: its sign and size are the user's",
    "coef0": "nst's kernel constant c of (x.y + c)^d: any real",
    "value": "a schedule's weight: any real",
    "start": "a schedule's weight at the start: any real",
    "end": "a schedule's weight at the end: any real",
}


@pytest.mark.parametrize("component", [c for c in ALL if c.origin == "kdsl"],
                         ids=lambda c: f"{c.kind}:{c.name}")
def test_every_numeric_option_declares_its_range(component):
    for p in component.options:
        if _is_numeric(p.type) and p.name not in UNBOUNDED:
            assert p.constraint is not None, f"{component.kind} {component.name}: {p.name}"


@pytest.mark.parametrize("kind, name, option, value, words", [
    ("loss", "kl_div", "tau", math.inf, "'tau' of 'kl_div' must be finite, got inf"),
    ("loss", "l2", "mult", -math.inf, "'mult' of 'l2' must be finite, got -inf"),
    ("schedule", "linear", "end", math.inf, "'end' of 'linear' must be finite"),
    ("schedule", "step", "milestones", [1.0, math.inf], "must be finite, got inf (item 2)"),
    ("connector", "flatten", "start_dim", 10 ** 20, "must fit in 64 bits, got 100000000000000000000"),
    ("loss", "cross_entropy", "ignore_index", -(10 ** 20), "must fit in 64 bits"),
    ("optimizer", "sgd", "lr", math.inf, "'lr' of 'sgd' must be finite"),
])
def test_unbounded_options_are_still_finite(kind, name, option, value, words):
    component = REGISTRY.get(kind, name)
    problem = value_problem(component, component.option(option), value)
    assert problem is not None and problem.code == "KD312" and words in problem.message


def test_a_literal_beyond_float_range_is_located():
    found = check_codes("loss kd = kl_div(zs, zt, tau=1e400)\n")
    assert found == [("KD312", 7, 30, "'tau' of 'kl_div' must be finite, got inf")]
    found = check_codes("loss kd = kl_div(zs, zt) * linear(0.0, 1e400)\n")
    assert [(code, line, col) for code, line, col, _ in found] == [("KD312", 7, 40)]


# (kind, name, options that build, the option set out of range, what the message says)
OUT_OF_RANGE = [
    ("loss", "kl_div", {}, {"tau": 0}, "'tau' of 'kl_div' must be > 0, got 0"),
    ("loss", "soft_cross_entropy", {}, {"tau": -2.0}, "must be > 0"),
    ("loss", "cross_entropy", {}, {"label_smoothing": 1.5}, "must be in [0, 1], got 1.5"),
    ("loss", "dkd", {}, {"beta": -1.0}, "'beta' of 'dkd' must be >= 0"),
    ("loss", "dist", {}, {"inter_weight": -0.5}, "must be >= 0"),
    ("loss", "wsld", {}, {"tau": 0.0}, "must be > 0"),
    ("loss", "logit_std_kd", {}, {"tau": 0}, "must be > 0"),
    ("loss", "smooth_l1", {}, {"beta": -1.0}, "must be >= 0"),
    ("loss", "cosine", {}, {"eps": 0.0}, "must be > 0"),
    ("loss", "at", {}, {"p": 0}, "must be > 0"),
    ("loss", "ofd", {}, {"mul_factor": 0}, "must be > 0"),
    ("loss", "ab", {}, {"margin": -1.0}, "'margin' of 'ab' must be >= 0, got -1.0"),
    ("loss", "cwd", {}, {"tau": 0}, "must be > 0"),
    ("loss", "mgd", {}, {"alpha_mgd": -1e-5}, "must be >= 0"),
    ("loss", "nst", {}, {"degree": 0}, "must be >= 1"),
    ("loss", "vid", {"in_channels": 4, "out_channels": 4}, {"mid_channels": 0}, "must be >= 1"),
    ("loss", "vid", {"in_channels": 4, "out_channels": 4}, {"eps": -1.0}, "must be > 0"),
    ("loss", "cc", {}, {"gamma": 0}, "must be > 0"),
    ("loss", "cc", {}, {"p": -1}, "'p' of 'cc' must be >= 0"),
    ("loss", "crd", {"num_data": 10, "feat_dim": 4}, {"num_data": 1}, "must be >= 2"),
    ("loss", "crd", {"num_data": 10, "feat_dim": 4}, {"nce_m": 1.0}, "must be in [0, 1), got 1.0"),
    ("connector", "conv_bn", {"in_channels": 4, "out_channels": 8}, {"padding": -1}, "must be >= 0"),
    ("connector", "conv_bn", {"in_channels": 4, "out_channels": 8}, {"stride": 0}, "must be >= 1"),
    ("connector", "conv1x1", {"in_channels": 4}, {"out_channels": 0}, "must be >= 1, got 0"),
    ("connector", "linear", {"in_features": 4}, {"out_features": -1}, "must be >= 1"),
    ("connector", "mlp", {"in_features": 4, "out_features": 2}, {"hidden": [3, 0]},
     "must have every item >= 1, got 0 (item 2)"),
    ("connector", "norm", {}, {"num_features": 0}, "must be >= 1"),
    ("connector", "paraphraser", {"in_channels": 8}, {"factor_channels": 0}, "must be >= 1"),
    ("connector", "translator", {"in_channels": 8}, {"factor_channels": 0}, "must be >= 1"),
    ("connector", "crd_embed", {"in_features": 8}, {"feat_dim": 0}, "must be >= 1"),
    ("connector", "mgd_generator", {"student_channels": 2, "teacher_channels": 2},
     {"lambda_mgd": 1.5}, "must be in [0, 1]"),
    ("connector", "pool", {}, {"output_size": []}, "must be non-empty, got []"),
    ("connector", "pool", {}, {"output_size": 0}, "must be >= 1, got 0"),
    ("connector", "interpolate", {}, {"scale_factor": [2.0, 0.0]}, "every item > 0, got 0.0 (item 2)"),
    ("schedule", "warmup", {}, {"epochs": -1.0}, "must be >= 0"),
    ("schedule", "step", {}, {"milestones": [1.0, -2.0]}, "every item >= 0"),
    ("schedule", "step", {}, {"gamma": -0.5}, "'gamma' of 'step' must be >= 0"),
    ("optimizer", "sgd", {}, {"momentum": 1.5}, "must be in [0, 1]"),
    ("optimizer", "sgd", {}, {"lr": 0.0}, "'lr' of 'sgd' must be in (0, 1000000]"),
    ("optimizer", "sgd", {}, {"lr": 1e308}, "'lr' of 'sgd' must be in (0, 1000000]"),  # #26.12: torch overflowed
    ("optimizer", "adamw", {}, {"weight_decay": -0.1}, "must be >= 0"),
    ("optimizer", "adam", {}, {"betas": [0.9]}, "'betas' of 'adam' must have 2 items, got [0.9]"),
    ("lr_schedule", "cosine", {}, {"min_lr": -1.0}, "must be >= 0"),
    ("lr_schedule", "step", {}, {"gamma": -0.1}, "must be >= 0"),
]


@pytest.mark.parametrize("kind, name, base, bad, words", OUT_OF_RANGE,
                         ids=[f"{c[1]}-{next(iter(c[3]))}" for c in OUT_OF_RANGE])
def test_out_of_range_values_are_refused_with_the_allowed_range(kind, name, base, bad, words):
    component = REGISTRY.get(kind, name)
    (key, value), = bad.items()
    problem = value_problem(component, component.option(key), value)
    assert problem is not None and problem.code == "KD312" and words in problem.message
    assert type_problem(component, component.option(key), value) == problem.message
    # the builders reach the same check: instantiate (the compiler's path) and kdsl.build_*
    with pytest.raises(ValueError) as info:
        instantiate(component, **{**base, **bad})
    assert str(info.value) == problem.message
    if kind in ("loss", "connector"):
        build = kdsl.build_loss if kind == "loss" else kdsl.build_connector
        with pytest.raises(kdsl.KdslError) as error:
            build(name, **{**base, **bad})
        assert error.value.diagnostics[0].code == "KD312"
        assert problem.message in str(error.value)


SINGLE_OPTION_CHECKS = [c for c in OUT_OF_RANGE if c[0] == "loss" and c[1] != "vid"]


@pytest.mark.parametrize("kind, name, base, bad, words", SINGLE_OPTION_CHECKS,
                         ids=[f"{c[1]}-{next(iter(c[3]))}" for c in SINGLE_OPTION_CHECKS])
def test_the_implementations_leave_range_checks_to_the_catalog(kind, name, base, bad, words):
    # Called directly, past the catalog, a class no longer repeats the catalog's check: the
    # catalog is the one place. Checks relating two options (vid: init_pred_var > eps) stay.
    component = REGISTRY.get(kind, name)
    assert isinstance(component.load()(**{**base, **bad}), torch.nn.Module)


def test_a_value_inside_the_range_builds():
    loss = kdsl.build_loss("cross_entropy", label_smoothing=1.0)
    assert loss.label_smoothing == 1.0
    pool = kdsl.build_connector("pool", output_size=(2, 3))
    assert pool(torch.randn(1, 2, 4, 6)).shape == (1, 2, 2, 3)


# --------------------------------------------------------------------------------------------
# `kdsl check` reports them at the value, without models
# --------------------------------------------------------------------------------------------
def check_codes(body: str):
    with pytest.raises(kdsl.KdslError) as info:
        kdsl.loads(SPEC_HEAD + body)
    return [(d.code, d.span.line, d.span.column, d.message) for d in info.value.diagnostics]


def test_check_points_at_the_value_and_at_the_list_item():
    found = check_codes("loss kd = kl_div(zs, zt, tau=0)\n")
    assert found == [("KD312", 7, 30, "'tau' of 'kl_div' must be > 0, got 0")]
    found = check_codes("connector m = mlp(hidden=[8, 16, 0])\nloss e = mse(m(zs), zt)\n")
    assert [(code, line, col) for code, line, col, _ in found] == [("KD312", 7, 34)]


def test_check_reports_every_out_of_range_option_of_a_call():
    found = check_codes("loss a = dkd(zs, zt, batch.target, alpha=-1.0, tau=0)\n")
    assert [(code, message.split(" must")[0]) for code, _, _, message in found] == [
        ("KD312", "'alpha' of 'dkd'"), ("KD312", "'tau' of 'dkd'")]


# --------------------------------------------------------------------------------------------
# Plugins may declare constraints too
# --------------------------------------------------------------------------------------------
def test_plugin_constraints_from_annotated_and_from_the_decorator():
    @kdsl.register_loss("plugin_test_ranged", constraints={"scale": POSITIVE})
    class Ranged(torch.nn.Module):
        """A plugin loss with ranged options."""

        def __init__(self, scale: float = 1.0, p: Annotated[float, at_least(1)] = 2.0,
                     mode: str = "mean"):
            super().__init__()
            self.scale, self.p = scale, p

        def forward(self, preds_S, preds_T):
            return self.scale * (preds_S - preds_T).abs().pow(self.p).mean()

    try:
        component = REGISTRY.get("loss", "plugin_test_ranged")
        assert component.option("scale").constraint == POSITIVE
        assert component.option("p").constraint == at_least(1)
        assert component.option("p").type.name == "float"  # Annotated's base type
        assert component.option("mode").constraint is None
        found = check_codes("loss r = plugin_test_ranged(zs, zt, scale=0, p=0.5)\n")
        assert [(code, message) for code, _, _, message in found] == [
            ("KD312", "'scale' of 'plugin_test_ranged' must be > 0, got 0"),
            ("KD312", "'p' of 'plugin_test_ranged' must be >= 1, got 0.5")]
        with pytest.raises(kdsl.KdslError, match="KD312"):
            kdsl.build_loss("plugin_test_ranged", scale=-1.0)
        assert kdsl.build_loss("plugin_test_ranged", scale=2.0, p=1).scale == 2.0
    finally:
        REGISTRY.remove("loss", "plugin_test_ranged")


def test_plugin_constraints_must_name_options():
    class Gate(torch.nn.Module):
        """A connector without a 'width' option."""

        def __init__(self, channels: int):
            super().__init__()

    with pytest.raises(ValueError, match="constraints name options it does not take: width"):
        kdsl.register_connector("plugin_test_gate", constraints={"width": COUNT})(Gate)
    assert REGISTRY.get("connector", "plugin_test_gate") is None
