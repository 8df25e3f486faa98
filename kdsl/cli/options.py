"""Options that several commands share: the models named on the command line, and the setting
flags of a command, built from the settings table (:mod:`kdsl.catalog.settings`).

A command that takes training settings lists its fixed parameters and calls
:func:`with_setting_flags`: every setting whose ``commands`` name the command becomes an option of
the right type, its choices and its help text (no line per flag in the command), and the
setting's range is checked once, by :func:`kdsl.training.config.resolve_config` (a KD701 message,
the same for every command).
"""

from __future__ import annotations

import enum
import inspect
import typing
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import typer

from kdsl.catalog.settings import Setting, command_flags

STUDENT = typer.Option(None, "--student", metavar="REF", help="student model, pkg.module:factory(k=v)")
TEACHER = typer.Option(None, "--teacher", metavar="REF", help="teacher model reference")
MODEL = typer.Option([], "--model", metavar="NAME=REF", help="NAME=REF for any model of the spec")
TEACHER_CKPT = typer.Option(None, "--teacher-ckpt", metavar="PATH", help="teacher weights (replaces `from`)")

_PYTHON_TYPES = {"int": int, "float": float, "str": str, "bool": bool}
_METAVARS = {"int": "N", "float": "NUMBER", "str": "TEXT"}  # how the help shows a flag's value

# A fixed parameter of a command: (name, annotation, typer default).
Fixed = Tuple[str, Any, Any]


def setting_option(setting: Setting, help_text: Optional[str] = None):
    """(annotation, typer option) of a setting's flag: None when not given, so that the spec's
    value (or the default) stays and its source is recorded right."""
    t, text = setting.type, help_text or setting.flag_help()
    if t is None:  # a call, given as text in the language's syntax
        return Optional[str], typer.Option(None, setting.flag, help=text, show_default=False,
                                           metavar="REF(...)" if setting.call == "data" else "CALL")
    if t.name == "choice":  # typer shows an Enum's values as the allowed choices
        choices = enum.Enum(setting.name.title(), {str(c): str(c) for c in t.choices}, type=str)
        return Optional[choices], typer.Option(None, setting.flag, help=text,
                                               metavar="[" + "|".join(str(c) for c in t.choices) + "]")
    if t.name == "list" and t.item is not None and t.item.name == "choice":
        # comma-separated text, split by resolve_config (--log mlflow,wandb)
        return Optional[str], typer.Option(None, setting.flag, help=text, metavar="A,B")
    if t.name == "list":  # a repeated flag: --set a=1 --set b=2
        return Optional[List[str]], typer.Option(None, setting.flag, help=text, metavar="NAME=VALUE")
    if t.name == "bool":  # a switch pair, shown without a value
        name = setting.flag[2:]
        return Optional[bool], typer.Option(None, f"--{name}/--no-{name}", help=text)
    return Optional[_PYTHON_TYPES[t.name]], typer.Option(None, setting.flag, help=text, metavar=_METAVARS[t.name])


def with_setting_flags(command: Callable, name: str, fixed: Sequence[Fixed],
                       help_texts: Mapping[str, str] = {}) -> Callable:
    """``command`` (taking ``fixed``'s parameters and ``**settings``) with the signature typer
    reads: ``fixed``, then one option per setting flag of ``kdsl NAME``; ``help_texts`` replaces
    a setting's help where this command uses it differently."""
    params = [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=d, annotation=a)
              for n, a, d in fixed]
    for setting in command_flags(name):
        annotation, default = setting_option(setting, help_texts.get(setting.name))
        params.append(inspect.Parameter(setting.name, inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                        default=default, annotation=annotation))
    command.__signature__ = inspect.Signature(params, return_annotation=None)
    command.__annotations__ = {p.name: p.annotation for p in params}
    return command


def setting_flags(name: str) -> Callable[[Callable], Callable]:
    """A decorator: the command (its own parameters, then ``**settings``) takes the setting flags
    of ``kdsl NAME`` too, as :func:`with_setting_flags` gives them (``check``, ``explain`` and
    ``graph`` take ``--set`` this way)."""
    def add(command: Callable) -> Callable:
        hints = typing.get_type_hints(command)
        fixed = [(p.name, hints.get(p.name, p.annotation), p.default)
                 for p in inspect.signature(command).parameters.values() if p.kind is not p.VAR_KEYWORD]
        return with_setting_flags(command, name, fixed)
    return add


def given_settings(settings: Mapping[str, Any]) -> Dict[str, Any]:
    """The setting flags the caller gave, as ``kdsl.train`` takes them (a choice as its text)."""
    return {k: v.value if isinstance(v, enum.Enum) else v for k, v in settings.items() if v is not None}
