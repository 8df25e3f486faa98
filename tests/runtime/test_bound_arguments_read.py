"""Later stages read the verifier's binding of a call (kept on the IR) instead of binding its
arguments again: what they build follows the binding."""

from __future__ import annotations

import pytest

import kdsl
from kdsl.compiler.components import options_of
from kdsl.compiler.functions import bind_function
from kdsl.lang import ir
from kdsl.lang.visit import find

SPEC = """student
teacher
record s = output of student
record t = output of teacher
connector gap = pool(1, mode="avg")
loss hard = cross_entropy(s, argmax(t, 1))
"""


def _rebound(node, **options):
    bound = ir.bound(node)
    return node.model_copy(update={"bound": ir.Bound.of(bound.input_values, {
        k: ir.Const(value=v) for k, v in options.items()})})


def test_options_are_read_from_the_binding():
    spec = kdsl.loads(SPEC, "t.kd")
    call = spec.connector("gap").call
    assert options_of(None, call) == {"output_size": 1, "mode": "avg"}
    assert options_of(None, _rebound(call, output_size=2)) == {"output_size": 2}


def test_a_function_is_built_from_its_binding():
    spec = kdsl.loads(SPEC, "t.kd")
    app = next(find(spec.losses[0].call, ir.FunctionApply))
    assert bind_function(app).module.dim == 1
    assert bind_function(_rebound(app, dim=0)).module.dim == 0
    with pytest.raises(ValueError, match="carries no binding"):
        bind_function(app.model_copy(update={"bound": None}))
