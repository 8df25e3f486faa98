"""The verifier's binding of each call's arguments is kept on the verified IR (torch.fx keeps what
a pass learned in ``node.meta``): every call of a catalog component carries its arguments bound by
parameter name, later stages read that binding instead of binding again, and it takes no part in
equality or the spec's fingerprint."""

from __future__ import annotations

import pytest

import kdsl
from kdsl.lang import ir
from kdsl.lang.visit import find

SPEC = """student
teacher
record s = output of student
record t = output of teacher
connector gap = pool(1, mode="avg")
loss kd = kl_div(s, preds_T=gap(t), tau=4) * linear(0.0, end=1.0, epochs=5)
loss hard = cross_entropy(s, argmax(t, 1))
stage only {
  optimize student with adam(0.01)
}
train {
  optimizer = sgd(lr=0.05, momentum=0.9)
}
"""


@pytest.fixture(scope="module")
def spec() -> kdsl.Spec:
    return kdsl.loads(SPEC, "t.kd")


def _names(keywords):
    return [k.name for k in keywords]


def test_a_loss_call_carries_inputs_by_name_positional_first(spec):
    kd = next(s for s in spec.losses if s.name == "kd")
    bound = ir.bound(kd.call)
    assert _names(bound.inputs) == ["preds_S", "preds_T"]
    assert bound.input_values["preds_S"] == ir.RecordRef(record="s")
    assert isinstance(bound.input_values["preds_T"], ir.ConnectorApply)
    assert bound.option_values == {"tau": ir.Const(value=4)}


def test_options_given_by_position_are_bound_to_their_names(spec):
    gap = spec.connector("gap")
    assert ir.bound(gap.call).option_values == {"output_size": ir.Const(value=1),
                                                 "mode": ir.Const(value="avg")}
    weight = next(s for s in spec.losses if s.name == "kd").weight
    assert _names(ir.bound(weight).options) == ["start", "end", "epochs"]
    argmax = next(find(next(s for s in spec.losses if s.name == "hard").call, ir.FunctionApply))
    assert ir.bound(argmax).input_values == {"x": ir.RecordRef(record="t")}
    assert ir.bound(argmax).option_values == {"dim": ir.Const(value=1)}


def test_connector_applications_optimizers_and_train_calls_carry_their_binding(spec):
    apply = next(find(spec.losses[0].call, ir.ConnectorApply))
    assert ir.bound(apply).input_values == {"x": ir.RecordRef(record="t")}
    optimize = spec.stages[0].statements[0]
    assert ir.bound(optimize.optimizer).option_values == {"lr": ir.Const(value=0.01)}
    optimizer = spec.train.get("optimizer").value
    assert _names(ir.bound(optimizer).options) == ["lr", "momentum"]


def test_the_binding_survives_the_json_round_trip(spec):
    again = ir.Spec.model_validate_json(spec.model_dump_json())
    assert ir.bound(again.losses[0].call) == ir.bound(spec.losses[0].call)


def test_the_binding_is_carried_not_compared_walked_or_fingerprinted(spec):
    call = spec.losses[0].call
    bare = call.model_copy(update={"bound": None})
    assert bare == call and hash(bare) == hash(call)
    assert "bound" not in spec.canonical_json()
    assert len(list(find(call, ir.RecordRef))) == 2  # s, and t inside gap(t): each once


def test_a_call_that_was_not_verified_has_no_binding():
    (loss,), _ = __import__("kdsl.lang.fmt", fromlist=["x"]).lowered_statements("loss a = mse(x, y)\n")
    with pytest.raises(ValueError, match="carries no binding"):
        ir.bound(loss.call)
