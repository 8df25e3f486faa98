"""No reference in a spec or a flag ever calls into os, subprocess, sys, builtins, pickle and their
like (KD406): refused, located, before the module is imported, in every command."""

from __future__ import annotations

import sys

import pytest

from kdsl.core.diagnostics import KdslError
from kdsl.core.resolve import import_module, import_ref, refused_module
from kdsl.lang.loader import check_text
from tests.conftest import ROOT, run_cli_in_process

KD = str(ROOT / "specs" / "digits" / "kd.kd")
TAIL = ('teacher = model("kdsl.zoo:digits_teacher") from "teacher.pt"\n'
        "record s = output of student\nrecord t = output of teacher\nloss kd = kl_div(s, t, tau=4)\n")


def _codes(text: str):
    _, diags, _ = check_text(text, "evil.kd")
    return [(d.code, d.span.line if d.span else None, d.span.column if d.span else None)
            for d in diags if d.is_error]


@pytest.mark.parametrize("ref", ["os:system", "subprocess:run", "shutil:rmtree", "sys:exit",
                                 "builtins:eval", "importlib:import_module", "pickle:loads",
                                 "socket:create_connection", "ctypes:CDLL", "os.path:join",
                                 "torch.hub:load", "kdsl.data:os.system"])
def test_a_model_reference_into_a_system_module_is_refused_by_plain_check(ref):
    assert ("KD406", 1, 17) in _codes(f'student = model("{ref}", command="touch F")\n' + TAIL)


def test_data_method_function_and_import_references_are_refused_where_written():
    data = 'student = model("kdsl.zoo:digits_cnn")\n' + TAIL + \
        'train {\n  data = dataset("subprocess:Popen", batch_size=1)\n}\n'
    assert ("KD406", 7, 18) in _codes(data)
    method = 'student = model("kdsl.zoo:digits_cnn")\n' + TAIL + \
        'record m = output of method "pickle:Unpickler.load" in student\n'
    assert ("KD406", 6, 29) in _codes(method)
    plugin = 'import "ctypes"\nstudent = model("kdsl.zoo:digits_cnn")\n' + TAIL
    assert any(c == "KD406" and line == 1 for c, line, _ in _codes(plugin))


def test_nothing_is_imported_before_the_refusal():
    sys.modules.pop("telnetlib", None)  # a refused module no test imports
    with pytest.raises(KdslError) as caught:
        import_ref("telnetlib:Telnet", "model")
    assert caught.value.diagnostics[0].code == "KD406" and "telnetlib" not in sys.modules
    with pytest.raises(KdslError):
        import_module("multiprocessing.popen_fork", "plugin")


def test_a_function_imported_from_a_system_module_under_another_name_is_refused(tmp_path, monkeypatch):
    (tmp_path / "innocent_looking.py").write_text("from os import system as build\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(KdslError) as caught:
        import_ref("innocent_looking:build", "model")
    assert caught.value.diagnostics[0].code == "KD406"
    assert "leads into 'posix'" in str(caught.value) or "leads into 'os'" in str(caught.value)


def test_ordinary_references_still_resolve():
    assert refused_module("kdsl.zoo") is None and refused_module("mypkg.io") is None
    assert refused_module("os.path") == "os" and refused_module("torch.hub") == "torch.hub"
    assert callable(import_ref("kdsl.zoo:digits_cnn", "model"))
    assert callable(import_ref("torch.nn.functional:relu", "function"))


@pytest.mark.parametrize("command, flag", [
    ("check", "--student=os:system(command=\"touch {marker}\")"),
    ("explain", "--teacher=subprocess:call(args=\"touch {marker}\", shell=true)"),
    ("train", "--data=kdsl.data:os.system(command=\"touch {marker}\")"),
])
def test_flags_naming_a_system_module_are_refused_and_run_nothing(tmp_path, command, flag):
    marker = tmp_path / "ran"
    args = [command, KD, flag.format(marker=marker)]
    args += ["--dry-run"] if command == "check" else []
    args += ["--out", str(tmp_path / "run")] if command == "train" else []
    code, _, err = run_cli_in_process(*args)
    assert code == 1 and "KD406" in err and "Traceback" not in err, err
    assert not marker.exists()


def test_spec_with_a_system_reference_runs_nothing_under_dry_run(tmp_path):
    marker = tmp_path / "ran"
    spec = tmp_path / "evil.kd"
    spec.write_text(f'student = model("os:system", command="touch {marker}")\n' + TAIL)
    code, out, _ = run_cli_in_process("check", "--dry-run", str(spec))
    assert code == 1 and f"{spec}:1:17: error[KD406]" in out, out
    assert not marker.exists()
