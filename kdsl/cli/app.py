"""The command line: ``kdsl check | train | sweep | explain | graph | list | schema | explain-code | convert``.

No command prints a Python traceback; every command follows one exit-code rule (0 ok, 1 the input
has errors, 2 usage or I/O, 3 internal error, 130 interrupted), applied by ``guarded``
(:mod:`kdsl.cli.errors`). Commands that need torch import it when they run, so ``kdsl check SPEC``
stays fast. ``train`` lives in :mod:`kdsl.cli.train_cmd`, output helpers in :mod:`kdsl.cli.render`.
"""

from __future__ import annotations

import enum
import os
import sys
from typing import List, Optional

import typer

from kdsl.cli import cache_cmd, lsp_cmd, sweep_cmd, train_cmd
from kdsl.cli.check_cmd import check_specs
from kdsl.cli.errors import EXIT_ERRORS, EXIT_OK, CliError, guarded
from kdsl.cli.group import KdslGroup
from kdsl.cli.options import MODEL as _MODEL
from kdsl.cli.options import STUDENT as _STUDENT
from kdsl.cli.options import TEACHER as _TEACHER
from kdsl.cli.options import TEACHER_CKPT as _TEACHER_CKPT
from kdsl.cli.options import setting_flags
from kdsl.cli.render import echo, make_console, print_diagnostics, use_color
from kdsl.core.diagnostics import summary_line

# rich_markup_mode=None: click's plain help, which wraps each option's text beside its flag at any
# width (typer's rich panels truncated the flags of `kdsl train --help` at 80 columns)
app = typer.Typer(cls=KdslGroup, add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="kdsl: a declarative language for knowledge distillation.", rich_markup_mode=None,
                  context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 120})


def _show_version(value: bool) -> None:
    if value:
        from kdsl.cli.list_cmd import version_text

        echo(version_text())
        raise typer.Exit(EXIT_OK)


@app.callback()
def _options(version: bool = typer.Option(False, "--version", is_eager=True, callback=_show_version,
                                          help="print the versions of kdsl, torch and Python")) -> None:
    """kdsl: a declarative language for knowledge distillation."""


class OutputFormat(str, enum.Enum):
    text = "text"
    json = "json"


# ---------------------------------------------------------------------------- shared options
_SHAPE = typer.Option(None, "--input-shape", metavar="N,C,H,W", help="dry-run input shape, e.g. 2,3,32,32")
_DATA = typer.Option(None, "--data", metavar="REF(...)", help="dry-run on one batch of this data reference")
_LOAD = typer.Option(False, "--load-weights", help="read the checkpoints (`from`); by default they "
                     "are only looked for: shapes do not need weights")


# ---------------------------------------------------------------------------- check
@app.command()
@guarded
@setting_flags("check")
def check(
    specs: List[str] = typer.Argument(..., metavar="SPEC...", help="spec files to check"),
    format: OutputFormat = typer.Option(OutputFormat.text, "--format", help="text or json"),
    student: Optional[str] = _STUDENT, teacher: Optional[str] = _TEACHER, model: List[str] = _MODEL,
    teacher_ckpt: Optional[str] = _TEACHER_CKPT, input_shape: Optional[str] = _SHAPE,
    data: Optional[str] = _DATA, load_weights: bool = _LOAD,
    dry_run: bool = typer.Option(False, "--dry-run", help="build the spec's own models and dry-run "
                                 "them (the input shape from the data reader or the first layer)"),
    **settings,
) -> None:
    """Check spec files; with models, also resolve every path and dry-run the shapes.

    Without models, torch is not imported: the spec is verified, its `kdsl.*` references are looked
    up in kdsl's sources and each checkpoint is looked for (a stat); "ok" then says what was not
    examined. Exit code 0 when there are no errors, 1 when there are, 2 for bad command-line input.
    """
    raise typer.Exit(check_specs(specs, as_json=format is OutputFormat.json, student=student, teacher=teacher,
                                 models=model, teacher_ckpt=teacher_ckpt, input_shape=input_shape, data=data,
                                 load_weights=load_weights, dry_run=dry_run, params=settings.get("params")))


# ---------------------------------------------------------------------------- train
train_cmd.register(app)  # its flags come from the settings table (kdsl/catalog/settings.py)
cache_cmd.register(app)  # kdsl teacher-cache: the teacher-output store
lsp_cmd.register(app)  # kdsl lsp: the language server (pygls, an optional extra)
sweep_cmd.register(app)  # kdsl sweep: Optuna over the spec's search spaces (an optional extra)


# ---------------------------------------------------------------------------- explain, graph
class GraphFormat(str, enum.Enum):
    mermaid = "mermaid"
    dot = "dot"


def _load_or_exit(spec: str, params=None):
    from kdsl.lang.loader import check_file

    if not os.path.isfile(spec):
        raise CliError(f"no such spec file: {spec}", "KD401")
    loaded, diags, sources = check_file(spec, params)
    if loaded is None:
        print_diagnostics(diags, sources)
        echo(f"{spec}: {summary_line(diags)}")
        raise typer.Exit(EXIT_ERRORS)
    return loaded


@app.command()
@guarded
@setting_flags("explain")
def explain(
    spec: str = typer.Argument(..., metavar="SPEC"),
    student: Optional[str] = _STUDENT, teacher: Optional[str] = _TEACHER, model: List[str] = _MODEL,
    teacher_ckpt: Optional[str] = _TEACHER_CKPT, input_shape: Optional[str] = _SHAPE,
    data: Optional[str] = _DATA, load_weights: bool = _LOAD,
    world_size: Optional[int] = typer.Option(None, "--world-size", min=1, max=1_000_000, metavar="N",
                                             help="also show the bytes each of N processes holds"),
    strategy: str = typer.Option("ddp", "--strategy", metavar="ddp|fsdp",
                                 help="with --world-size: how the processes hold the models"),
    **settings,
) -> None:
    """Show the compiled plan: hooks, patched attributes, connectors, losses and their order.
    Weights are not read unless --load-weights: a missing checkpoint is a warning."""
    from kdsl.reports.checking import ModelOptions, inspect
    from kdsl.reports.explain import explain as show

    loaded = _load_or_exit(spec, settings.get("params"))
    found = inspect(loaded, ModelOptions(student, teacher, list(model), teacher_ckpt, input_shape,
                                         data, load_weights))
    if found.distiller is None:
        for note in found.notes:
            echo(note)
        print_diagnostics(found.diagnostics, loaded.sources)
        echo(f"{spec}: {summary_line(found.diagnostics)}")
        raise typer.Exit(EXIT_ERRORS)
    with found.distiller as distiller:
        console = make_console()
        for note in found.notes:
            echo(note)
        for part in show(distiller):
            console.print(part)
        from kdsl.training.optim_view import optimization_table

        table, notes = optimization_table(loaded, distiller)
        console.print(table)
        for note in notes:
            echo(note)
        if world_size is not None:
            from kdsl.reports.memory_plan import memory_table

            if strategy not in ("ddp", "fsdp"):
                raise CliError(f"unknown --strategy '{strategy}': ddp or fsdp", "KD701")

            console.print(memory_table(distiller, world_size, strategy))
    if found.diagnostics:
        print_diagnostics(found.diagnostics, loaded.sources)


@app.command()
@guarded
@setting_flags("graph")
def graph(
    spec: str = typer.Argument(..., metavar="SPEC"),
    format: GraphFormat = typer.Option(GraphFormat.mermaid, "--format", help="mermaid or dot"),
    output: Optional[str] = typer.Option(None, "--output", "-o",
                                         help="write here; .png/.svg/.pdf draws it with graphviz's dot"),
    student: Optional[str] = _STUDENT, teacher: Optional[str] = _TEACHER, model: List[str] = _MODEL,
    teacher_ckpt: Optional[str] = _TEACHER_CKPT, input_shape: Optional[str] = _SHAPE,
    data: Optional[str] = _DATA, **settings,
) -> None:
    """Print the loss graph (model -> record -> connector -> loss -> total) as Mermaid or DOT."""
    from kdsl.reports import graph as graphs
    from kdsl.reports.checking import ModelOptions, compile_with

    loaded = _load_or_exit(spec, settings.get("params"))
    opts = ModelOptions(student, teacher, list(model), teacher_ckpt, input_shape, data)
    plan = None
    if opts.any:
        distiller, diags = compile_with(loaded, opts)
        if distiller is None:
            print_diagnostics(diags, loaded.sources)
            raise typer.Exit(EXIT_ERRORS)
        with distiller:
            plan = distiller.plan
    g = graphs.build(loaded, plan)
    picture = output is not None and os.path.splitext(output)[1].lower() in (".png", ".svg", ".pdf")
    text = graphs.to_dot(g) if (format is GraphFormat.dot or picture) else graphs.to_mermaid(g)
    if output is None:
        sys.stdout.write(text)
        return
    if picture:
        import shutil
        import subprocess

        dot = shutil.which("dot")
        if dot is None:
            raise CliError(f"drawing {output} needs graphviz's `dot`, which is not installed", "KD701",
                           hint="install graphviz (apt install graphviz), or write the source: "
                           "--output graph.dot / graph.mmd")
        proc = subprocess.run([dot, f"-T{os.path.splitext(output)[1][1:].lower()}", "-o", output],
                              input=text, text=True, capture_output=True)
        if proc.returncode != 0:
            raise CliError(f"dot failed: {proc.stderr.strip()}", "KD701")
    else:
        try:
            with open(output, "w", encoding="utf-8") as fh:
                fh.write(text)
        except OSError as exc:
            raise CliError(f"cannot write {output}: {exc.strerror or exc}", "KD706") from None
    echo(f"wrote {output}", err=True)


# ---------------------------------------------------------------------------- fmt
@app.command("fmt")
@guarded
def fmt(
    specs: List[str] = typer.Argument(..., metavar="SPEC...", help="spec files to format"),
    check_only: bool = typer.Option(False, "--check", help="write nothing; show a diff and exit 1 "
                                    "if a file is not formatted"),
) -> None:
    """Rewrite spec files in the canonical layout, comments kept.

    Exit code 0 when every file is formatted, 1 for syntax errors (the file is left as it is) or,
    with --check, a file that is not formatted, 2 when a file cannot be read or written.
    """
    from kdsl.cli.fmt_cmd import run_fmt

    raise typer.Exit(run_fmt(specs, check=check_only, color=use_color(sys.stderr)))


# ---------------------------------------------------------------------------- convert
@app.command("convert")
@guarded
def convert(
    config: str = typer.Argument(..., metavar="CONFIG", help="an MMRazor .py or torchdistill .yaml config"),
    output: Optional[str] = typer.Option(None, "-o", "--output", metavar="OUT.kd",
                                         help="write the spec here (default: stdout)"),
    source: Optional[str] = typer.Option(None, "--from", metavar="mmrazor|torchdistill",
                                         help="the config's format (default: from the file)"),
) -> None:
    """Convert an MMRazor or torchdistill config to a spec, without executing it.

    The report of every key translated approximately or not at all goes to stderr (and into the
    spec as comments). Exit code 0 for an exact translation, 1 when anything was approximated or
    dropped, 2 for a config that cannot be read.
    """
    from kdsl.cli.convert_cmd import run_convert

    raise typer.Exit(run_convert(config, output, source, color=use_color(sys.stderr)))


# ---------------------------------------------------------------------------- catalog
@app.command("list")
@guarded
def list_components(
    what: str = typer.Argument("all", metavar="[losses|connectors|schedules|optimizers|lr-schedules|"
                               "models|datasets|NAME]"),
) -> None:
    """Print the component catalog as a table, or one entry whole; `models`: the model zoo and the
    installed model hubs; `datasets`: the data readers."""
    from kdsl.cli import list_cmd
    from kdsl.cli.catalog_view import show_catalog

    if what in ("models", "datasets"):
        list_cmd.show_models() if what == "models" else list_cmd.show_datasets()
        return
    show_catalog(what)


class InputDtype(str, enum.Enum):
    float32 = "float32"
    int64 = "int64"


@app.command("modules")
@guarded
def modules(
    ref: str = typer.Argument(..., metavar="MODEL_REF", help="e.g. 'kdsl.zoo:resnet8x4(num_classes=100)'"),
    input_shape: Optional[str] = typer.Option(None, "--input-shape", metavar="N,C,H,W",
                                              help="run the model once on zeros of this shape to show "
                                              "each module's output shape"),
    input_dtype: InputDtype = typer.Option(InputDtype.float32, "--input-dtype", metavar="[float32|int64]",
                                           help="the zeros' dtype (int64 for token ids)"),
    depth: Optional[int] = typer.Option(None, "--depth", min=0, metavar="N",
                                        help="show modules down to this depth (1: the model's children)"),
) -> None:
    """Print a model's module tree: the names a `record` can use, each module's class, parameter
    count and (with --input-shape) output shape."""
    from kdsl.cli.list_cmd import show_modules

    show_modules(ref, input_shape, input_dtype.value, depth)


@app.command()
@guarded
def schema() -> None:
    """Print the JSON Schema of the spec IR."""
    import json

    from kdsl.lang.ir import Spec

    echo(json.dumps(Spec.model_json_schema(), indent=2))


@app.command("explain-code")
@guarded
def explain_code(code: str = typer.Argument(..., metavar="CODE", help="e.g. KD201")) -> None:
    """Explain a diagnostic code."""
    from kdsl.core.codes import CODES, explain

    try:
        echo(explain(code))
    except KeyError:
        from kdsl.core.suggest import did_you_mean

        raise CliError(f"unknown diagnostic code '{code}'", "KD701",
                       hint=did_you_mean(code.upper(), list(CODES)) or "codes run KD100 to KD799")


# ---------------------------------------------------------------------------- entry point
def main(argv: Optional[List[str]] = None) -> None:
    """Run the typer app: every command (the ``kdsl`` entry point, :mod:`kdsl.cli.entry`, answers a
    plain ``kdsl check SPEC...`` without it; both run the same check). A reader that
    goes away (``kdsl check ... | head -1``) ends the program quietly with the status a shell gives a
    tool that SIGPIPE ended (141)."""
    from kdsl.cli.errors import EXIT_BROKEN_PIPE, quiet_broken_pipe

    try:
        app(args=argv, prog_name="kdsl")
    except BrokenPipeError:  # output written outside any command's guard
        quiet_broken_pipe()
        sys.exit(EXIT_BROKEN_PIPE)
    except SystemExit as done:
        # click answers a closed stdout by wrapping it (PacifyFlushWrapper) and exiting 1
        if type(sys.stdout).__name__ == "PacifyFlushWrapper":
            quiet_broken_pipe()
            sys.exit(EXIT_BROKEN_PIPE)
        raise done
