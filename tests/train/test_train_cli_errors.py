"""`kdsl train` refuses bad input with one paragraph, never a traceback, and the exit-code rule:
2 for the command line or the machine (a bad flag value, a missing spec file, a device it lacks,
a run directory that cannot be resumed), 1 for errors in the input (a model, checkpoint or data
set that a flag names).

The refusals the CLI contract names run in one fixture, through the entry point `python -m kdsl`
runs, in this process (an interpreter importing torch cost 3.4 s of CPU each, 50 s for the
fifteen); one of them, the missing spec file, runs as a real `python -m kdsl` process, which shows
that the exit code and the paragraph are the process's. Each test reads its result. More refusals
run in this process through ``kdsl.cli.app.main`` (same code path).
"""

from __future__ import annotations

import pytest
import torch

from tests.conftest import run_cli_in_process
from train_helpers import KD_SPEC, TEACHER_PT, assert_usage_error, run_kdsl

IN_ITS_OWN_PROCESS = ("missing_spec",)

TWO_TEACHERS = f"""
student = model("kdsl.zoo:digits_cnn")
teacher t1 = model("kdsl.zoo:digits_teacher") from "{TEACHER_PT}"
teacher t2 = model("kdsl.zoo:digits_teacher") from "{TEACHER_PT}"
record s = output of student
record a = output of t1
record b = output of t2
loss k1 = kl_div(s, a, tau=4) * 0.5
loss k2 = kl_div(s, b, tau=4) * 0.5
train {{
  data = dataset("kdsl.data:digits")
}}
"""


class NotWeights:
    """A pickled object: torch.load(weights_only=True) must refuse it."""


def _cases(tmp):
    two = tmp / "two_teachers.kd"
    two.write_text(TWO_TEACHERS)
    teacher = torch.load(TEACHER_PT, weights_only=True)
    renamed = {("head.weight" if k == "fc.weight" else k): v for k, v in teacher.items()}
    torch.save(renamed, tmp / "renamed.pt")

    torch.save({"fc.weight": NotWeights()}, tmp / "object.pt")
    (tmp / "empty_run").mkdir()
    (tmp / "foreign").mkdir()
    (tmp / "foreign" / "notes.txt").write_text("the user's")
    out = str(tmp / "out")
    kd = ("train", KD_SPEC, "--out", out)
    return {
        "missing_spec": ("train", str(tmp / "no_such_spec.kd"), "--out", out),
        "student_unknown_module": kd + ("--student", "kdsl_no_such_package:net"),
        "student_unknown_attribute": kd + ("--student", "kdsl.zoo:digits_cnm"),
        "student_malformed": kd + ("--student", "kdsl.zoo digits_cnn"),
        "model_undeclared": kd + ("--model", "tacher=kdsl.zoo:digits_teacher"),
        "teacher_of_two": ("train", str(two), "--out", out, "--teacher", "kdsl.zoo:digits_teacher"),
        "teacher_ckpt_missing": kd + ("--teacher-ckpt", str(tmp / "nope.pt")),
        "teacher_ckpt_wrong_keys": kd + ("--teacher-ckpt", str(tmp / "renamed.pt")),
        "teacher_ckpt_pickle": kd + ("--teacher-ckpt", str(tmp / "object.pt")),
        "data_missing_cifar": kd + ("--data", f'kdsl.data:cifar100(root="{tmp / "cifar"}")'),
        "device_cuda": kd + ("--device", "cuda"),
        "amp_fp16": kd + ("--amp", "fp16"),
        "optimizer_unreadable": kd + ("--optimizer", "sgd(lr="),
        "epochs_zero": kd + ("--epochs", "0"),
        "lr_negative": kd + ("--lr", "-1"),
    }


def _in_process_cases(tmp):
    """More refusals, run in this process (``kdsl.cli.app.main``) to keep the suite fast."""
    out = str(tmp / "out")
    kd = ("train", KD_SPEC, "--out", out)
    return {
        "student_no_colon": kd + ("--student", "kdsl.zoo"),
        "student_bad_option": kd + ("--student", "kdsl.zoo:digits_cnn(width=0)"),
        "model_no_equals": kd + ("--model", "kdsl.zoo:digits_teacher"),
        "teacher_ckpt_of_two": ("train", str(tmp / "two_teachers.kd"), "--out", out,
                                "--teacher-ckpt", TEACHER_PT),
        "data_unknown_factory": kd + ("--data", "kdsl.data:digitz"),
        "optimizer_unknown": kd + ("--optimizer", "sgdd(lr=0.1)"),
        "optimizer_bad_option": kd + ("--optimizer", "sgd(mometum=0.9)"),
        "optimizer_bad_type": kd + ("--optimizer", 'sgd(lr="fast")'),
        "batch_size_zero": kd + ("--batch-size", "0"),
        "resume_foreign": ("train", KD_SPEC, "--out", str(tmp / "foreign"), "--resume"),
        "eval_only_no_run": ("train", KD_SPEC, "--out", str(tmp / "empty_run"), "--eval-only"),
        "resume_and_overwrite": kd + ("--resume", "--overwrite"),
        "device_unknown": kd + ("--device", "tpu"),
    }


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli_errors")
    threads = torch.get_num_threads()  # a command may set it before it refuses
    try:
        done = {name: run_kdsl(*args) if name in IN_ITS_OWN_PROCESS else run_cli_in_process(*args)
                for name, args in _cases(tmp).items()}
    finally:
        torch.set_num_threads(threads)
    done["_tmp"] = tmp
    return done


@pytest.fixture
def in_process(results, capsys):
    """Run one of the in-process cases through ``kdsl.cli.app.main``: (code, stdout, stderr)."""
    from kdsl.cli.app import main

    cases = _in_process_cases(results["_tmp"])

    def run(name: str):
        capsys.readouterr()
        with pytest.raises(SystemExit) as info:
            main(list(cases[name]))
        captured = capsys.readouterr()
        return info.value.code, captured.out, captured.err

    return run


def test_missing_spec_file(results):
    assert_usage_error(results["missing_spec"], "KD401", "no such spec file", "no_such_spec.kd")


def test_student_unknown_module(results):
    assert_usage_error(results["student_unknown_module"], "KD404", "kdsl_no_such_package",
                       "is the package installed", exit_code=1)


def test_student_unknown_attribute_suggests(results):
    assert_usage_error(results["student_unknown_attribute"], "KD503", "digits_cnm",
                       "did you mean 'digits_cnn'?", exit_code=1)


def test_student_malformed(results, in_process):
    for result in (results["student_malformed"], in_process("student_no_colon")):
        assert_usage_error(result, "KD701", "cannot read the --student reference", "pkg.module:factory")


def test_student_factory_failure(in_process):
    assert_usage_error(in_process("student_bad_option"), "KD508", "digits_cnn", "ValueError",
                       "width must be a positive integer", exit_code=1)


def test_model_undeclared_name(results, in_process):
    assert_usage_error(results["model_undeclared"], "KD701", "the spec has no model 'tacher'",
                       "did you mean 'teacher'?")
    assert_usage_error(in_process("model_no_equals"), "KD701", "--model takes NAME=REF")


def test_teacher_flags_need_one_teacher(results, in_process):
    for result, flag in ((results["teacher_of_two"], "--teacher"),
                         (in_process("teacher_ckpt_of_two"), "--teacher-ckpt")):
        assert_usage_error(result, "KD701", f"{flag} is for a spec with one teacher",
                           "this one has 2: t1, t2", "--model NAME=REF")


def test_teacher_ckpt_missing(results):
    assert_usage_error(results["teacher_ckpt_missing"], "KD509", "no such file", "nope.pt", exit_code=1)


def test_teacher_ckpt_wrong_keys_lists_them(results):
    assert_usage_error(results["teacher_ckpt_wrong_keys"], "KD509", "does not fit the teacher",
                       "missing keys: fc.weight", "unexpected keys: head.weight", exit_code=1)


def test_teacher_ckpt_pickled_object_is_refused(results):
    text = assert_usage_error(results["teacher_ckpt_pickle"], "KD509",
                              "object.pt", "weights_only=True", "NotWeights",
                              "torch.save(model.state_dict(), path)", exit_code=1)
    assert len(text) < 600  # one paragraph, not torch's page of advice


def test_data_missing_cifar_says_where_it_looked(results):
    root = results["_tmp"] / "cifar"
    assert_usage_error(results["data_missing_cifar"], "KD702", "CIFAR-100 not found", "Looked in",
                       str(root / "cifar-100-python"), str(root), "train, test", exit_code=1)


def test_data_unknown_factory(in_process):
    assert_usage_error(in_process("data_unknown_factory"), "KD503", "digitz", "did you mean 'digits'?",
                       exit_code=1)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA; KD704 is for CPU-only ones")
def test_device_cuda_without_cuda(results):
    assert_usage_error(results["device_cuda"], "KD704", "no CUDA device is available", "--device cpu")


def test_amp_fp16_on_cpu(results):
    if torch.cuda.is_available():
        pytest.skip("with CUDA, --amp fp16 on the auto device is valid")
    assert_usage_error(results["amp_fp16"], "KD705", "--amp fp16 needs a GPU", "--amp bf16")


def test_bad_optimizer(results, in_process):
    assert_usage_error(results["optimizer_unreadable"], "KD701", "cannot read the optimizer 'sgd(lr='",
                       "sgd(lr=0.1, momentum=0.9)")
    assert_usage_error(in_process("optimizer_unknown"), "KD701", "unknown --optimizer 'sgdd'",
                       "did you mean 'sgd'?")
    assert_usage_error(in_process("optimizer_bad_option"), "KD701", "'sgd' has no option 'mometum'")
    assert_usage_error(in_process("optimizer_bad_type"), "KD701", "'lr' of 'sgd' must be float")


def test_bad_numbers(results, in_process):
    assert_usage_error(results["epochs_zero"], "KD701", "--epochs must be at least 1, got 0")
    assert_usage_error(results["lr_negative"], "KD701", "--lr must be a positive number, got -1")
    assert_usage_error(in_process("batch_size_zero"), "KD701", "--batch-size must be at least 1")


def test_nothing_to_resume(in_process):
    """(--resume where no epoch was saved starts a fresh run: tests/train/test_run_manifest.py)"""
    assert_usage_error(in_process("resume_foreign"), "KD706", "not a kdsl run directory", "another --out")
    assert_usage_error(in_process("eval_only_no_run"), "KD703", "no trained student", "student.pt")


def test_resume_and_overwrite_contradict(in_process):
    assert_usage_error(in_process("resume_and_overwrite"), "KD701", "contradict")


def test_unknown_device_is_a_usage_error(in_process):
    rc, out, err = in_process("device_unknown")
    assert rc == 2 and "Traceback" not in out + err and "tpu" in err


def test_refused_runs_write_nothing(results):
    assert [p.name for p in (results["_tmp"] / "foreign").iterdir()] == ["notes.txt"]
    assert list((results["_tmp"] / "empty_run").iterdir()) == []
    out = results["_tmp"] / "out"  # shared by the refusals: at most an empty directory
    assert not out.exists() or list(out.rglob("*")) == []
