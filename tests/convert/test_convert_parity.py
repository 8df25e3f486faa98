"""A converted spec computes the framework's loss values: configs using a loss class with a
reference case's kwargs are converted, and the spec's term (its loss, options and weight) is
evaluated on the case's inputs and compared with ../shared/reference's value."""

from __future__ import annotations

import pytest
import torch

import kdsl
from kdsl.catalog.binding import instantiate
from kdsl.catalog.registry import REGISTRY
from kdsl.convert import convert
from kdsl.lang.printer import expr_text
from tests.catalog.reference import to_tensor
from tests.catalog.test_reference_parity import cases_of

pytestmark = pytest.mark.reference

_MMRAZOR = """
model = dict(
    type='SingleTeacherDistill',
    architecture=dict(type='kdsl.zoo:resnet8x4'),
    teacher=dict(type='kdsl.zoo:resnet32x4'),
    calculate_student_loss=False,
    distiller=dict(
        student_recorders=dict({recorders}),
        distill_losses=dict(loss_case=dict(type='{cls}', **{kwargs!r})),
        loss_forward_mappings=dict(loss_case=dict({mappings}))))
"""

_TORCHDISTILL = """
models:
  student_model: {{key: 'kdsl.zoo:resnet8x4'}}
  teacher_model: {{key: 'kdsl.zoo:resnet32x4'}}
train:
  criterion:
    key: 'WeightedSumLoss'
    kwargs:
      sub_terms:
        case:
          criterion: {{key: '{cls}', kwargs: {kwargs}}}
          weight: 1.0
"""


def _mmrazor_config(case) -> str:
    names = [n for n in case["inputs"] if n != "gt_labels"]
    recorders = ", ".join(f"{n}=dict(type='ModuleOutputs', source='{n}')" for n in names)
    mappings = ", ".join(f"{n}=dict(from_student=True, recorder='{n}')" for n in names)
    return _MMRAZOR.format(recorders=recorders, cls=case["reference_class"], kwargs=case["kwargs"],
                           mappings=mappings)


def _torchdistill_config(case) -> str:
    kwargs = {k: v for k, v in case["kwargs"].items()}
    inline = "{" + ", ".join(f"{k}: {v!r}" for k, v in kwargs.items()) + "}"
    return _TORCHDISTILL.format(cls=case["reference_class"], kwargs=inline)


def _value_of_converted(spec_text: str, case) -> torch.Tensor:
    """The sum of the spec's weighted terms; the terms' distinct arguments, in the order they are
    first used, read the case's inputs in the framework's order."""
    spec = kdsl.loads(spec_text)
    arguments = list(dict.fromkeys(expr_text(a) for t in spec.losses for a in t.call.args))
    assert len(arguments) <= len(case["inputs"]), arguments
    tensors = {a: to_tensor(case["inputs"][n]) for a, n in zip(arguments, case["inputs"])}
    total = torch.zeros((), dtype=torch.float64)
    for term in spec.losses:
        options = {k.name: k.value.value for k in term.call.kwargs}
        loss = instantiate(REGISTRY.get("loss", term.call.func), **options).double()
        weight = 1.0 if term.weight is None else term.weight.value
        total = total + weight * loss(*(tensors[expr_text(a)] for a in term.call.args)).reshape(())
    return total


@pytest.mark.parametrize("file,case_id,fmt", [
    ("loss_vectors.json", "kl_divergence/tau4_batchmean", "mmrazor"),
    ("loss_vectors.json", "dkd/tau4_a1_b8", "mmrazor"),
    ("loss_vectors.json", "dist/tau4", "mmrazor"),
    ("loss_vectors.json", "ab/margin0.5", "mmrazor"),
    ("loss_vectors.json", "rkd_distance/l2normFalse", "mmrazor"),
    ("torchdistill_vectors.json", "kd/t4_a0.5", "torchdistill"),
    ("torchdistill_vectors.json", "kd/t2_a0.3_b2", "torchdistill"),
    ("torchdistill_vectors.json", "dist/b1_g1_t1", "torchdistill"),
    ("torchdistill_vectors.json", "spkd/batchmean_4d", "torchdistill"),
    ("torchdistill_vectors.json", "pkt/eps1e-3_same_dims", "torchdistill"),
    ("torchdistill_vectors.json", "at/paper_two_pairs", "torchdistill"),
    ("torchdistill_vectors.json", "ab/margin0.5_sum_two_pairs", "torchdistill"),
    ("torchdistill_vectors.json", "rkd/d25_a50_sum", "torchdistill"),
    ("torchdistill_vectors.json", "rkd/d1_a0_distance_only", "torchdistill"),
])
def test_converted_loss_reproduces_the_reference_value(file, case_id, fmt):
    case = {c["id"]: c for c in cases_of(file)}[case_id]
    config = _mmrazor_config(case) if fmt == "mmrazor" else _torchdistill_config(case)
    spec_text, report = convert(config, fmt)
    assert not [f for f in report.findings if "loss" in f.key], report.render()
    value = _value_of_converted(spec_text, case)
    torch.testing.assert_close(value, torch.tensor(case["value"], dtype=torch.float64).reshape(()),
                               rtol=1e-9, atol=0.0)
