"""Every command the README and the docs/ pages show, run as a user would (templates with
placeholders are exercised by the tests named next to them), and the README as a newcomer's path
whose links to the reference pages resolve."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import forked
from tests.conftest import run_cli_in_process

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
DOCS = {path.name: path.read_text() for path in sorted((ROOT / "docs").glob("*.md"))}
PAGES = {"README.md": README, **{f"docs/{name}": text for name, text in DOCS.items()}}
SHOWN = "\n".join(PAGES.values())  # a command "shown" is on the README or one of the docs pages
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "NO_COLOR": "1"}


def test_readme_has_no_placeholders_left():
    assert not re.search(r"\b[A-Z]+(?:_[A-Z]+)*_(?:TABLE|SECONDS|MINUTES|DELTA|TIME)\b", SHOWN)


NEWCOMER_PATH = ["Install and run the main job", "The run directory", "Write a spec", "Check it against the models",
                 "Train", "Resume", "Embed in Python", "Editors", "Coming from MMRazor or torchdistill", "Reference"]


def test_readme_is_a_newcomers_path():
    """#27.16: the README's sections are the path a newcomer takes, in order, and the references
    (diagnostics, catalog, performance, ...) are docs/ pages it links, not sections in its middle."""
    assert re.findall(r"^## (.+)$", README, re.M) == NEWCOMER_PATH
    assert len(README.splitlines()) < 600
    assert "| KD201 |" not in README and "bench/" not in README
    for name in DOCS:
        assert f"](docs/{name})" in README, f"the README does not link docs/{name}"


def _anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_links_between_readme_and_docs_resolve():
    """Every relative link of the README and the docs pages names a file that exists and, after a
    `#`, one of its headings."""
    anchors = {path: {_anchor(h) for h in re.findall(r"^#+ (.+)$", text, re.M)} for path, text in PAGES.items()}
    for path, text in PAGES.items():
        prose = re.sub(r"`[^`\n]*`", "", re.sub(r"```.*?```", "", text, flags=re.S))
        for target in re.findall(r"\]\(([^)\s]+)\)", prose):
            if re.match(r"[a-z]+:", target):
                continue
            file, _, anchor = target.partition("#")
            resolved = (ROOT / path).parent / file if file else ROOT / path
            assert resolved.exists(), (path, target)
            key = str(resolved.resolve().relative_to(ROOT))
            if anchor and key in anchors:
                assert anchor in anchors[key], (path, target, sorted(anchors[key]))


def _ci_readme_commands():
    import importlib.util

    spec = importlib.util.spec_from_file_location("readme_commands", ROOT / ".ci" / "readme_commands.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.readme_commands(README)


def test_ci_runs_exactly_the_readme_commands():
    """#27.1: `.ci/run` runs the README's two commands as they are written, and installs nothing
    before the tests that the README's install line does not."""
    assert _ci_readme_commands() == ['pip install torch==2.13.0 ".[test]" && kdsl train specs/digits/kd.kd',
                                     "python -m pytest"]
    ci = (ROOT / ".ci" / "run").read_text()
    before_tests = ci.split('eval "$test_command"')[0]
    assert 'eval "$install_and_main_job"' in before_tests
    stated = "install_and_main_job='" + _ci_readme_commands()[0] + "'"
    assert stated in before_tests and "test_command='python -m pytest'" in before_tests
    assert "pip install" not in before_tests.replace(stated, "").replace("$install_and_main_job", "")


def test_test_extra_holds_every_optional_package_the_suite_uses():
    """#27.1: after the README's install (`.[test]`) the suite needs nothing more: each optional
    extra is part of `[test]`, except the Hugging Face ones (hf, peft) and the integrations'
    (lightning, mlflow, wandb), which .ci/run installs after the README's commands for tests/hubs
    and tests/integrations (whose tests skip without them, saying so)."""
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    test_extra = set(extras["test"])
    for name, requirements in extras.items():
        if name not in ("test", "hf", "peft", "lightning", "mlflow", "wandb"):
            assert set(requirements) <= test_extra, (name, set(requirements) - test_extra)


@pytest.mark.slow(seconds=12)
def test_quick_start_main_job(tmp_path):
    """`kdsl train specs/digits/kd.kd`, from a fresh directory holding the specs: the README's
    command as it is typed, in a process of its own, its 30 epochs whole (the one such run)."""
    assert "pip install torch==2.13.0 \".[test]\" && kdsl train specs/digits/kd.kd" in README
    shutil.copytree(ROOT / "specs" / "digits", tmp_path / "specs" / "digits")
    proc = subprocess.run([sys.executable, "-m", "kdsl", "train", "specs/digits/kd.kd"], cwd=tmp_path,
                          env=ENV, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(r"student top-1 \d+\.\d\d% next to the teacher's \d+\.\d\d%", proc.stdout)
    summary = json.loads((tmp_path / "runs" / "kd" / "summary.json").read_text())
    assert summary["epochs_done"] == 30 and summary["student"]["top1"] > 95.0
    for name in ("student.pt", "checkpoint.pt", "metrics.jsonl", "metrics.csv", "curves.png"):
        assert (tmp_path / "runs" / "kd" / name).exists(), name


def test_check_command_on_all_specs():
    """`kdsl check specs/*.kd specs/digits/*.kd specs/lm/*.kd`: every shipped spec, the count the README gives."""
    specs = sorted(str(p.relative_to(ROOT)) for pattern in ("*.kd", "digits/*.kd", "lm/*.kd")
                   for p in (ROOT / "specs").glob(pattern))
    assert "kdsl check specs/*.kd specs/digits/*.kd specs/lm/*.kd" in README
    assert f"`specs/` holds {len(specs)} whole specs" in README
    code, out, err = forked.run_kdsl("check", *specs)  # a process of its own (tests/forked.py)
    assert code == 0, out + err


def test_language_tour_blocks_parse():
    """Each fenced block of the language tour parses (inside a minimal spec where needed)."""
    from kdsl.lang.lower import build_statements
    from kdsl.core.diagnostics import Diagnostics
    from kdsl.core.span import SourceText

    tour = README.split("\n## Write a spec\n")[1].split("\n## ")[0]
    blocks = re.findall(r"```\n(.*?)```", tour, re.S)
    assert len(blocks) >= 6
    for block in blocks:
        diags = Diagnostics()
        build_statements(SourceText("<readme>", block), diags)
        assert not diags.items, (block, [d.message for d in diags.items])


# Commands the README shows literally that run in seconds on a fresh clone, and what their output
# must hold. They run in one interpreter (torch imported once), through the CLI's own entry point.
LITERAL = {
    "kdsl check specs/kd.kd --dry-run": (0, ["weights not loaded", "warning[KD530]", "2x3x32x32"]),
    "kdsl explain specs/kd.kd": (0, ["where each pass stops"]),
    "kdsl --version": (0, ["kdsl ", "torch ", "Python "]),
    "kdsl explain specs/lm/fsdp.kd --world-size 2 --strategy fsdp": (0, ["memory per process: world size 2"]),
    "kdsl list models": (0, ["digits_cnn", "gpt"]),
    "kdsl list datasets": (0, ["cifar100", "text"]),
    "kdsl modules 'kdsl.zoo:digits_cnn' --input-shape 2,1,8,8": (0, ["conv"]),
    "kdsl modules 'kdsl.zoo:resnet8x4(num_classes=100)' --input-shape 2,3,32,32 --depth 2": (0, ["layer1"]),
}


def test_literal_commands_run():
    """Each through the entry point `kdsl` runs, in this process (torch imported once)."""
    import shlex

    for command in LITERAL:
        assert command in SHOWN, command
    if (ROOT / "specs" / "checkpoints").exists():
        pytest.skip("specs/checkpoints exists here: the README shows a fresh clone's output")
    for command, (code, expected) in LITERAL.items():
        rc, out, err = run_cli_in_process(*shlex.split(command)[1:], env={"COLUMNS": "200"})
        assert rc == code, (command, out, err)
        for text in expected:
            assert text in out, (command, text, out)


@pytest.mark.slow(seconds=3)
def test_best_metric_command(tmp_path):
    """`kdsl train specs/digits/kd.kd --epochs 5 --threads 1 --out runs/kd5 --best-metric val_loss`."""
    command = "kdsl train specs/digits/kd.kd --epochs 5 --threads 1 --out runs/kd5 --best-metric val_loss"
    assert command in README
    shutil.copytree(ROOT / "specs" / "digits", tmp_path / "specs" / "digits")
    code, out, err = run_cli_in_process(*command.split()[1:], cwd=tmp_path)  # the main job's test runs the real process
    assert code == 0, out + err
    summary = json.loads((tmp_path / "runs" / "kd5" / "summary.json").read_text())
    rows = summary["history"]
    assert summary["best"]["metric"] == "val_loss"
    assert summary["best"]["epoch"] == min(rows, key=lambda r: r["val_loss"])["epoch"]
    assert (tmp_path / "runs" / "kd5" / "best.pt").exists()


def test_python_api_snippet(tmp_path):
    """The README's Python example, on the zoo models, with a teacher checkpoint written here."""
    import torch

    import kdsl
    from kdsl.zoo import resnet8x4, resnet32x4

    shutil.copytree(ROOT / "specs", tmp_path / "specs")
    (tmp_path / "specs" / "checkpoints").mkdir()
    teacher = resnet32x4(num_classes=100)
    torch.save(teacher.state_dict(), tmp_path / "specs" / "checkpoints" / "resnet32x4_cifar100.pt")
    student = resnet8x4(num_classes=100)
    x0 = torch.randn(2, 3, 32, 32)
    loader = [(torch.randn(4, 3, 32, 32), torch.randint(0, 100, (4,))) for _ in range(2)]
    spec = kdsl.load(tmp_path / "specs" / "fitnets.kd")
    with kdsl.compile(spec, student=student, teacher=teacher, example_input=x0) as distiller:
        opt = torch.optim.SGD(distiller.parameters(), lr=0.05)
        for x, y in loader:
            result = distiller.step(x, target=y)
            result.loss.backward()
            assert set(result.losses) == {"hint", "kd", "task"}
            assert result.student_output.shape == (4, 100)
            opt.step()
            opt.zero_grad()


# The README's bench commands run in tests/test_bench_commands.py (a file of their own: pytest-xdist
# runs it beside this one).


# Commands the README shows that need data, a store, a package or minutes a test cannot spend
# here: (the README's text, the tests that exercise it, a string those tests must hold).
COVERED = [
    ("kdsl lsp", "tests/lsp/test_command.py", '"lsp"'),
    ("python bench/lsp_latency.py", "tests/lsp/test_bench.py", "lsp_latency"),
    ("kdsl convert CONFIG [-o OUT.kd] [--from mmrazor|torchdistill]", "tests/convert/test_convert_cli.py", '"convert"'),
    ("kdsl check SPEC --student REF --teacher REF --input-shape 2,3,32,32", "tests/cli/test_inspect_cli.py", '"check"'),
    ("kdsl check SPEC --dry-run", "tests/cli/test_check_without_weights.py", '"--dry-run"'),
    ("--load-weights", "tests/cli/test_check_without_weights.py", '"--load-weights"'),
    ("kdsl check specs/lm/kd.kd --data 'kdsl.data:text(seq_len=64)'", "tests/catalog/test_lm_specs.py",
     "kdsl.data:text(seq_len=64"),
    ("kdsl check my_lm.kd --data 'kdsl.data:prompts(path=\"train.jsonl\", tokenizer=\"models/tiny\")'",
     "tests/hubs/test_pretrained.py", "kdsl.data:prompts(path="),
    ("kdsl explain SPEC", "tests/cli/test_inspect_cli.py", '"explain"'),
    ("kdsl graph SPEC", "tests/cli/test_inspect_cli.py", '"graph"'),
    ("kdsl list [losses", "tests/catalog/test_registry.py", '"list"'),
    ("kdsl schema", "tests/language/test_roundtrip.py", '"schema"'),
    ("kdsl explain-code KD201", "tests/cli/test_check_cli.py", '"explain-code"'),
    ("kdsl fmt SPEC... [--check]", "tests/cli/test_check_cli.py", '"fmt"'),
    ("kdsl list models", "tests/cli/test_discovery.py", '"models"'),
    ("kdsl modules MODEL_REF", "tests/cli/test_discovery.py", '"modules"'),
    ("kdsl train SPEC", "tests/train", '"train"'),
    ("kdsl train my.kd --allow-random-teacher", "tests/train/test_random_teacher.py", '"--allow-random-teacher"'),
    ("kdsl train specs/kd.kd --data 'kdsl.data:cifar100(root=\"/datasets/cifar100\")'",
     "tests/train/test_data_paths.py", "test_flag_root_is_relative_to_the_working_directory"),
    ("kdsl train specs/digits/kd.kd --tensorboard --out runs/kd_tb", "tests/train/test_tensorboard.py", '"--tensorboard"'),
    ("--progress-every SECONDS", "tests/train/test_progress.py", '"--progress-every"'),
    ("kdsl train specs/digits/kd.kd --epochs 30 --threads 1 --out runs/kd --resume", "tests/train/test_progress.py",
     "test_kdsl_train_says_what_an_interrupted_run_kept"),
    ("kdsl train SPEC --resume --out DIR", "tests/train/test_resume_ux.py", '"--resume"'),
    ("--threads N", "tests/train/test_threads.py", '"--threads"'),
    ("--task classification\\|lm", "tests/train/test_train_config.py", '"task"'),
    ("--compile", "tests/train/test_train_config.py", '"compile"'),
    ("kdsl.compile(..., compile_models=True)", "tests/runtime/test_compile.py", "compile_models=True"),
    ("kdsl.compile(..., truncate=False)", "tests/runtime/test_truncation.py", "truncate=False"),
    ("--best-metric METRIC", "tests/train/test_rundir_files.py", '"--best-metric"'),
    ("kdsl teacher-cache specs/digits/kd.kd --out stores/digits_kd --threads 1", "tests/cli/test_teacher_cache_cli.py",
     '"teacher-cache"'),
    ("kdsl train specs/digits/kd.kd --teacher-cache stores/digits_kd --threads 1 --out runs/kd_store", "tests/cli/test_teacher_cache_cli.py",
     '"--teacher-cache"'),
    ("--max-size 500M", "tests/cli/test_teacher_cache_cli.py", '"--max-size"'),
    ("python bench/teacher_store.py", "tests/train/test_teacher_store.py", "topk"),
    ("python bench/teacher_cost.py", "tests/train/test_teacher_store.py", "teacher_cache"),
    ("python bench/lm_store.py", "tests/train/test_teacher_store.py", "topk"),
    ("python bench/lm_store.py --kl-error", "tests/train/test_teacher_store_tail.py", "topk_error(z_t, 5, student=z_s)"),
    ("python bench/lm_memory.py", "tests/lm/test_lm_chunked.py", "test_memory_bench_measures_both_forms"),
    ("kdsl train --no-truncate", "tests/train/test_train_config.py", '"truncate"'),
    ("python bench/lm_table.py", "tests/lm/test_lm_specs_train.py", "test_tiny_lm_train_through_the_cli"),
    ("python bench/lm_generation_table.py", "tests/lm/test_generation.py", "test_the_generation_bench_compares"),
    ("python tools/build_parser.py", "tests/language/test_parser_tables.py", "build_parser.py"),
    ("python tools/fuzz_specs.py", "tests/hardening/test_fuzz.py", "fuzz_specs"),
    ("KDSL_KILL_TRIALS=all", "tests/hardening/test_kill.py", "KDSL_KILL_TRIALS"),
    ("kdsl sweep specs/digits/kd_sweep.kd --trials 12", "tests/train/test_sweep.py", '"sweep", SWEEP_SPEC, "--trials"'),
    ("kdsl sweep specs/digits/kd_sweep.kd --trials 12 --dir sweeps/kd_sweep", "tests/train/test_sweep.py",
     "def test_two_processes_share_one_sweep"),
    ("kdsl train specs/digits/kd_sweep.kd --set tau=2 --set kd_weight=0.5", "tests/train/test_sweep.py",
     '"source": "--set"'),
    ("kdsl check specs/digits/kd_sweep.kd --set tau=0", "tests/language/test_given_params.py", '"--set", "tau=0"'),
    ("torchrun --nproc_per_node 2 -m kdsl train specs/lm/fsdp.kd", "tests/fsdp/test_fsdp_train.py",
     '"--strategy", "fsdp"'),
    ("torchrun --nproc_per_node 2 -m kdsl train specs/lm/fsdp.kd --resume", "tests/fsdp/test_fsdp_train.py",
     '"--resume"'),
    ("torchrun --nnodes 2 --node-rank 0 --nproc_per_node 8 --rdzv-endpoint node0:29500 -m kdsl train SPEC",
     "tests/fsdp/test_fsdp_launch.py", '"--rdzv-endpoint"'),
    ("python examples/integrations/hf_trainer.py digits --out runs/hf_digits", "tests/integrations/test_hf.py",
     "hf_trainer.digits_trainer"),
    ("python examples/integrations/hf_trainer.py gpt2 --out runs/hf_gpt2", "tests/integrations/test_hf.py",
     "hf_trainer.gpt2_trainer"),
    ("python examples/integrations/lightning_digits.py --out runs/pl_digits", "tests/integrations/test_lightning.py",
     "lightning_digits.trainer"),
    ("python examples/integrations/lightning_digits.py --out runs/pl_ddp --devices 2",
     "tests/integrations/test_lightning.py", '"--devices", "2"'),
    ("kdsl train specs/digits/kd.kd --log mlflow,wandb --out runs/kd_tracked", "tests/integrations/test_trackers.py",
     '"--log", "mlflow,wandb"'),
]


@pytest.mark.parametrize("readme_text, covered_by, needle", COVERED)
def test_templates_are_covered(readme_text, covered_by, needle):
    assert readme_text in SHOWN
    target = ROOT / covered_by
    assert target.exists()
    text = "".join(p.read_text() for p in ([target] if target.is_file() else target.rglob("*.py")))
    assert needle in text


def test_codes_table_lists_every_code():
    from kdsl.core.codes import CODES

    for code, entry in CODES.items():
        assert f"| {code} | {entry.title} |" in DOCS["diagnostics.md"], code


# Commands of other tools that the pages show next to kdsl's (installing and viewing TensorBoard).
OTHER_TOOLS = ("pip install tensorboard", "tensorboard --logdir ")
RUN_HERE = ("kdsl check specs/*.kd specs/digits/*.kd specs/lm/*.kd",
            "kdsl train specs/digits/kd.kd --epochs 5 --threads 1 --out runs/kd5 --best-metric val_loss")


def test_every_command_in_a_code_block_is_tested():
    """Each command line in a code block of the README or a docs page is one the tests here run
    (or CI runs: the README's two), or a template COVERED names with the tests that exercise it."""
    known = [*_ci_readme_commands(), *RUN_HERE, *LITERAL,
             *(text for text, _, _ in COVERED if text.startswith(("kdsl ", "python ", "torchrun ")))]
    for path, text in PAGES.items():
        for block in re.findall(r"```[a-z]*\n(.*?)```", text, re.S):
            for line in block.splitlines():
                command = line.split("  #")[0].strip()
                if not re.match(r"(kdsl|python|pip|tensorboard|torchrun)\b", command):
                    continue
                assert command in known or command.startswith(OTHER_TOOLS), (path, command)
