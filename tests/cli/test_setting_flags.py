"""Every command's setting flags are built from the settings table (issue #19.4): the flags a
command takes are the table's entries that name it, their ranges are the table's (checked once, by
`resolve_config`), and click's own usage errors get kdsl's format (issue #27.10)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from kdsl.catalog.settings import BY_NAME, command_flags
from kdsl.cli import cache_cmd, train_cmd
from kdsl.cli.app import app

ROOT = Path(__file__).resolve().parents[2]
KD = str(ROOT / "specs" / "digits" / "kd.kd")


def kdsl(*args: str):
    result = CliRunner().invoke(app, list(args), env={"NO_COLOR": "1", "COLUMNS": "200"}, prog_name="kdsl")
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize("command, fixed", [("train", train_cmd._FIXED), ("teacher-cache", cache_cmd._FIXED)])
def test_a_commands_setting_flags_are_the_tables(command, fixed):
    params = {p.name: p for p in get_command(app).commands[command].params}
    settings = set(params) - {name for name, _, _ in fixed}
    assert settings == {s.name for s in command_flags(command)}
    for name in settings:
        assert BY_NAME[name].flag in params[name].opts
    assert not settings & {name for name, _, _ in fixed}  # no setting written by hand


def test_teacher_cache_epochs_allow_what_the_table_allows(tmp_path):
    """`teacher-cache --epochs` stopped at 100,000 (a hand-written click range); the table allows
    1,000,000 (digits has no randomness: one stored epoch serves them all, refused here by size)."""
    most = BY_NAME["epochs"].maximum
    code, out, err = kdsl("teacher-cache", KD, "--out", str(tmp_path / "s"), "--epochs", str(int(most)),
                          "--max-size", "1K", "--threads", "1")
    assert code == 1 and "KD715" in err, out + err
    code, _, err = kdsl("teacher-cache", KD, "--out", str(tmp_path / "s"), "--epochs", str(int(most) + 1))
    assert code == 2 and err.startswith("error[KD701]: --epochs must be at most 1000000, got 1000001"), err


@pytest.mark.parametrize("args, fragments", [
    (["train", KD, "--epoch", "5"], ("error[KD701]: kdsl train: no such option: --epoch", "did you mean '--epochs'?")),
    (["teacher-cache", KD, "--out", "x", "--seedd", "1"], ("no such option: --seedd", "did you mean '--seed'?")),
    (["train", KD, "--epochs", "x"], ("error[KD701]: kdsl train: Invalid value for '--epochs'",
                                      "`kdsl train -h` lists its options")),
    (["train"], ("error[KD701]: kdsl train: Missing argument 'SPEC'",)),
])
def test_click_usage_errors_get_kdsls_format(args, fragments):
    code, out, err = kdsl(*args)
    assert code == 2, out + err
    assert "Usage:" not in err and "Error:" not in err, err
    for fragment in fragments:
        assert fragment in err, err


@pytest.mark.parametrize("args, fragment", [
    (["--lr", "1e308"], "--lr must be at most 1000000, got 1e+308"),  # issue #26.12: exit 3 before
    (["--optimizer", "sgd(lr=1e400)"], "'lr' of 'sgd' must be finite, got inf"),  # trained to NaN
    (["--optimizer", "sgd(lr=1e308)"], "'lr' of 'sgd' must be in (0, 1000000], got 1e+308"),
])
def test_absurd_learning_rates_are_refused_before_training(tmp_path, args, fragment):
    code, out, err = kdsl("train", KD, *args, "--out", str(tmp_path / "run"))
    assert code == 2 and err.startswith("error[KD701]") and fragment in err, out + err
    assert not (tmp_path / "run").exists()
