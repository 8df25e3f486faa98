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
    yaml = pytest.importorskip("yaml")
    # PyYAML's own flow style: it writes 1e-7 as 1.0e-07, which YAML 1.1 reads back as a float
    inline = yaml.safe_dump(dict(case["kwargs"]), default_flow_style=True).strip()
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


def _convertible_cases():
    """Every reference case whose class the converter's tables know, with its format."""
    from kdsl.convert.losses import MMRAZOR, TORCHDISTILL
    from kdsl.convert.torchdistill_losses import EXPANDED
    from tests.catalog.test_reference_parity import _load, reference_dir

    params = []
    for file, fmt, known in (("loss_vectors.json", "mmrazor", set(MMRAZOR)),
                             ("torchdistill_vectors.json", "torchdistill",
                              set(TORCHDISTILL) | set(EXPANDED))):
        path = reference_dir() / file
        cases = _load(path)["cases"] if path.is_file() else []
        # a KDLoss case without targets: torchdistill's training always passes them, and so
        # does the converted spec (batch.target)
        params += [pytest.param(file, c["id"], fmt, id=f"{fmt}:{c['id']}") for c in cases
                   if c["reference_class"] in known and not (
                       c["reference_class"] == "KDLoss" and "targets" not in c["inputs"])]
    return params or [pytest.param("loss_vectors.json", "<missing>", "mmrazor", id="missing")]


@pytest.mark.parametrize("file,case_id,fmt", _convertible_cases())
def test_converted_loss_reproduces_the_reference_value(file, case_id, fmt):
    case = {c["id"]: c for c in cases_of(file)}[case_id]
    config = _mmrazor_config(case) if fmt == "mmrazor" else _torchdistill_config(case)
    spec_text, report = convert(config, fmt)
    assert not [f for f in report.findings if "loss" in f.key], report.render()
    value = _value_of_converted(spec_text, case)
    torch.testing.assert_close(value, torch.tensor(case["value"], dtype=torch.float64).reshape(()),
                               rtol=1e-9, atol=0.0)
