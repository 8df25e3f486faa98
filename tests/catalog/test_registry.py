"""The registry as a whole: the contract names, documentation, torch-free declarations,
`kdsl.build_loss`/`build_connector`, plugins, and `kdsl list`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

import kdsl
from kdsl.catalog.types import Component
from kdsl.catalog.binding import bind
from kdsl.catalog.registry import REGISTRY
from tests.conftest import run_cli_in_process

ROOT = Path(__file__).resolve().parents[2]

LOSSES = {"kl_div", "soft_cross_entropy", "cross_entropy", "dkd", "dist", "wsld", "logit_std_kd",
          "l2", "l1", "mse", "smooth_l1", "cosine", "at", "ofd", "ab", "ft", "cwd", "pkd", "mgd", "fsp",
          "nst", "vid", "ickd", "rkd_distance", "rkd_angle", "pkt", "sp", "cc", "crd"}
CONNECTORS = {"conv_bn", "conv1x1", "linear", "mlp", "norm", "ofd_margin", "paraphraser", "translator",
              "crd_embed", "mgd_generator", "pool", "interpolate", "flatten", "torch_nn",
              "abf", "byot", "fbkd_student", "fbkd_teacher"}
SCHEDULES = {"constant", "linear", "warmup", "cosine", "step"}


def test_contract_names_are_all_there():
    assert LOSSES <= set(REGISTRY.names("loss"))
    assert CONNECTORS == set(REGISTRY.names("connector"))
    assert SCHEDULES == set(REGISTRY.names("schedule"))
    assert {"sgd", "adam", "adamw"} <= set(REGISTRY.names("optimizer"))
    assert {"constant", "cosine", "step"} <= set(REGISTRY.names("lr_schedule"))


@pytest.mark.parametrize("component", REGISTRY.all(), ids=lambda c: f"{c.kind}:{c.name}")
def test_every_entry_is_documented_and_loads(component: Component):
    assert component.summary.strip() and component.doc.strip()
    if component.kind == "loss" and component.name in LOSSES - {"cross_entropy", "l1", "mse", "smooth_l1", "cosine"}:
        assert component.paper or "20" in component.doc, "a distillation loss names its paper"
    impl = component.load()
    assert callable(impl)
    for rule in component.rules:
        assert set(rule.names) <= {p.name for p in component.inputs}, rule
    for inf in component.infer:
        assert component.option(inf.option) is not None, inf
    for p in component.options:
        if not p.required:
            assert p.type.accepts(p.default), (p.name, p.default)


def test_declarations_do_not_import_torch():
    program = ("import sys, kdsl; from kdsl.catalog.registry import REGISTRY; n = len(REGISTRY.all()); "
               "print(n, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", program], cwd=ROOT, capture_output=True, text=True,
                         env={"PYTHONPATH": str(ROOT)}).stdout.split()
    assert int(out[0]) >= len(LOSSES) + len(CONNECTORS) and out[1] == "False"


def test_build_loss_takes_inputs_positionally():
    kd = kdsl.build_loss("kl_div", tau=4.0)
    s, t = torch.randn(3, 5, dtype=torch.float64), torch.randn(3, 5, dtype=torch.float64)
    value = kd(s, t)
    ref = torch.nn.functional.kl_div(torch.log_softmax(s / 4, 1), torch.softmax(t / 4, 1),
                                     reduction="batchmean") * 16
    assert torch.allclose(value, ref, atol=1e-12)


def test_build_connector():
    conv = kdsl.build_connector("conv1x1", in_channels=4, out_channels=8)
    assert conv(torch.randn(2, 4, 3, 3)).shape == (2, 8, 3, 3)
    margin = kdsl.build_connector("ofd_margin", bn=torch.nn.BatchNorm2d(4))
    assert margin(torch.randn(2, 4, 3, 3)).shape == (2, 4, 3, 3)


@pytest.mark.parametrize("call, code, text", [
    (lambda: kdsl.build_loss("kl_dv"), "KD301", "did you mean 'kl_div'?"),
    (lambda: kdsl.build_loss("kl_div", tua=2.0), "KD305", "did you mean 'tau'?"),
    (lambda: kdsl.build_loss("kl_div", tau="hot"), "KD309", "'tau' of 'kl_div' must be float"),
    (lambda: kdsl.build_loss("kl_div", tau=-1.0), "KD312", "'tau' of 'kl_div' must be > 0, got -1.0"),
    (lambda: kdsl.build_loss("kl_div", reduction="batchmaen"), "KD309", "did you mean 'batchmean'?"),
    (lambda: kdsl.build_connector("conv1x1", in_channels=0, out_channels=8), "KD312",
     "'in_channels' of 'conv1x1' must be >= 1, got 0"),
    (lambda: kdsl.build_connector("mlp", in_features=4, out_features=2, hidden=(8, -2)), "KD312",
     "'hidden' of 'mlp' must have every item >= 1, got -2 (item 2)"),
    (lambda: kdsl.build_connector("conv1x1", out_channels=8), "KD308", "in_channels"),
    (lambda: kdsl.build_connector("ofd_margin", bn=3), "KD309", "nn.Module"),
])
def test_build_errors(call, code, text):
    with pytest.raises(kdsl.KdslError) as e:
        call()
    assert e.value.diagnostics[0].code == code and text in str(e.value)


def test_bind_reports_every_kind_of_problem():
    kl = REGISTRY.get("loss", "kl_div")
    b = bind(kl, ["s", "t", "x"], [("tau", 1), ("tau", 2), ("taw", 3)], inputs=True)
    assert [p.code for p in b.problems] == ["KD306", "KD307", "KD305"]
    b = bind(kl, [], [], inputs=True)
    assert [p.code for p in b.problems] == ["KD308", "KD308"]


def test_plugin_registration_reads_signatures():
    @kdsl.register_loss("plugin_test_scaled_l1")
    class ScaledL1(torch.nn.Module):
        """Scaled mean absolute error."""

        def __init__(self, scale: float = 1.0, mode: str = "mean"):
            super().__init__()
            self.scale = scale

        def forward(self, preds_S, preds_T, weights=None):
            return self.scale * (preds_S - preds_T).abs().mean()

    try:
        c = REGISTRY.get("loss", "plugin_test_scaled_l1")
        assert [p.name for p in c.inputs] == ["preds_S", "preds_T", "weights"]
        assert not c.inputs[2].required and c.inputs[0].required
        assert [(p.name, p.type.name, p.default) for p in c.options] == [("scale", "float", 1.0), ("mode", "str", "mean")]
        assert c.summary == "Scaled mean absolute error." and c.origin == __name__
        with pytest.raises(ValueError, match="already registered"):
            kdsl.register_loss("plugin_test_scaled_l1")(ScaledL1)
        kdsl.register_loss("plugin_test_scaled_l1", replace=True)(ScaledL1)
        spec = kdsl.loads("student\nteacher\nrecord s = output of student\nrecord t = output of teacher\n"
                          "loss l = plugin_test_scaled_l1(s, t, scale=2.0)\n")
        assert spec.losses[0].component == "plugin_test_scaled_l1"
        with pytest.raises(kdsl.KdslError, match="must be float"):
            kdsl.loads("student\nrecord s = output of student\nloss l = plugin_test_scaled_l1(s, s, scale=\"x\")\n")
    finally:
        REGISTRY.remove("loss", "plugin_test_scaled_l1")


def test_a_plugin_extending_a_builtin_loss_takes_its_options():
    from kdsl.components.logit_losses import KLDivergence

    @kdsl.register_loss("plugin_test_halved_kl")
    class HalvedKL(KLDivergence):
        """Half of kl_div."""

        def forward(self, preds_S, preds_T):
            return super().forward(preds_S, preds_T) / 2

    try:
        c = REGISTRY.get("loss", "plugin_test_halved_kl")
        assert [(p.name, p.default) for p in c.options] == [
            ("tau", 1.0), ("reduction", "batchmean"), ("detach_teacher", True)]
        loss = kdsl.build_loss("plugin_test_halved_kl", tau=2)
        assert isinstance(loss, HalvedKL) and loss.tau == 2.0
        s, t = torch.randn(3, 5), torch.randn(3, 5)
        assert torch.allclose(loss(s, t), kdsl.build_loss("kl_div", tau=2)(s, t) / 2)
    finally:
        REGISTRY.remove("loss", "plugin_test_halved_kl")

    @kdsl.register_loss("plugin_test_scaled_kl")
    class ScaledKL(KLDivergence):
        """kl_div at tau 2, scaled."""

        def __init__(self, scale: float = 3.0):
            super().__init__(tau=2.0)
            self.scale = scale

    try:
        c = REGISTRY.get("loss", "plugin_test_scaled_kl")
        assert [(p.name, p.default) for p in c.options] == [("scale", 3.0)]
        loss = kdsl.build_loss("plugin_test_scaled_kl")
        assert (loss.tau, loss.scale) == (2.0, 3.0)
    finally:
        REGISTRY.remove("loss", "plugin_test_scaled_kl")


def test_plugin_package_seen_by_check_and_compile(cli):
    code, out, err = cli("check", "examples/plugin/plugin_demo.kd")
    assert code == 0, out + err
    spec = kdsl.load(ROOT / "examples" / "plugin" / "plugin_demo.kd")
    x = torch.rand(4, 1, 8, 8)
    with kdsl.compile(spec, example_input=x) as distiller:
        assert type(distiller.connectors["gate"]).__name__ == "ChannelGate"
        assert distiller.connectors["gate"].gate.shape == (16,)  # inferred from the student's layer2
        result = distiller.step(x, target=torch.randint(0, 10, (4,)))
        result.loss.backward()
        assert distiller.connectors["gate"].gate.grad is not None


def test_list_command():
    cli = run_cli_in_process  # the entry point a process runs, in this one: no interpreter start per call
    code, out, _ = cli("list")
    assert code == 0
    for name in ("kl_div", "crd", "conv_bn", "torch_nn", "warmup", "sgd", "cosine"):
        assert name in out
    code, out, _ = cli("list", "connectors")
    assert code == 0 and "ofd_margin" in out and "kl_div" not in out
    code, out, _ = cli("list", "kl_div")
    assert code == 0 and "kl_div(preds_S: tensor, preds_T: tensor, *, tau: float = 1.0" in out
    assert "Hinton" in out and "shape rules" in out
    assert "tau: float = 1.0  softmax temperature; must be > 0" in out
    code, out, _ = cli("list", "vid")
    assert "(inferred when omitted)" in out
    assert "in_channels: int (inferred when omitted)  channels of preds_S; must be >= 1" in out
    code, out, _ = cli("list", "adam")
    assert "betas: list[float] = [0.9, 0.999]  moment decay rates; must have 2 items with every " \
           "item in [0, 1)" in out
    code, _, err = cli("list", "kl_dv")
    assert code == 2 and "did you mean 'kl_div'?" in err
