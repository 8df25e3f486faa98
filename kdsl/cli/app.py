"""The command line: ``kdsl check | train | explain | graph | list | schema | explain-code``.

No command prints a Python traceback: problems are diagnostics (exit 1 for a spec's errors in
``check``, 2 for bad input on the command line), and an unexpected failure is a one-paragraph
internal-error message (set ``KDSL_DEBUG=1`` to see the traceback). Commands that need torch
import it when they run, so ``kdsl check SPEC`` stays fast.
"""

from __future__ import annotations

import enum
import functools
import os
import sys
from typing import List, Optional

import typer

from kdsl.core.diagnostics import Diagnostic, KdslError, render, summary_line, to_json

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="kdsl: a declarative language for knowledge distillation.",
                  context_settings={"help_option_names": ["-h", "--help"]})

EXIT_OK, EXIT_ERRORS, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 3


def use_color(stream=None) -> bool:
    stream = stream or sys.stdout
    if os.environ.get("NO_COLOR"):
        return False
    if os.environ.get("FORCE_COLOR"):
        return True
    return hasattr(stream, "isatty") and stream.isatty()


def echo(text: str = "", err: bool = False) -> None:
    stream = sys.stderr if err else sys.stdout
    stream.write(text + "\n")
    stream.flush()


def make_console(stream=None):
    """A rich console: wide when not on a terminal (logs, pipes, tests), coloured only on one."""
    from rich.console import Console

    stream = stream or sys.stdout
    terminal = hasattr(stream, "isatty") and stream.isatty()
    return Console(file=stream, highlight=False, soft_wrap=True, no_color=not use_color(stream),
                   width=None if terminal else 160)


def print_diagnostics(diags: List[Diagnostic], sources, err: bool = False) -> None:
    if diags:
        stream = sys.stderr if err else sys.stdout
        echo(render(diags, sources, color=use_color(stream)), err=err)


class CliError(Exception):
    """A command-line problem: printed as one paragraph, exit code 2."""

    def __init__(self, message: str, code: str = "KD701", hint: Optional[str] = None):
        super().__init__(message)
        self.code, self.hint = code, hint


def guarded(command):
    """Turn every failure inside a command into a message and an exit code, never a traceback."""

    @functools.wraps(command)
    def run(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except CliError as e:
            _fail(str(e), e.code, e.hint)
            raise typer.Exit(EXIT_USAGE)
        except KdslError as e:
            print_diagnostics(e.diagnostics, e.sources, err=True)
            raise typer.Exit(EXIT_USAGE)
        except KeyboardInterrupt:
            echo("interrupted", err=True)
            raise typer.Exit(130)
        except Exception as e:  # noqa: BLE001 - the last line of defence: no tracebacks for users
            if os.environ.get("KDSL_DEBUG"):
                raise
            echo(f"kdsl: internal error: {type(e).__name__}: {e}. This is a bug in kdsl; "
                 "run again with KDSL_DEBUG=1 to see the traceback, and please report it.", err=True)
            raise typer.Exit(EXIT_INTERNAL)

    return run


class OutputFormat(str, enum.Enum):
    text = "text"
    json = "json"


# ---------------------------------------------------------------------------- shared options
_STUDENT = typer.Option(None, "--student", help="student model, pkg.module:factory(k=v)")
_TEACHER = typer.Option(None, "--teacher", help="teacher model reference")
_MODEL = typer.Option([], "--model", help="NAME=REF for any model of the spec")
_TEACHER_CKPT = typer.Option(None, "--teacher-ckpt", help="teacher weights (replaces `from`)")
_SHAPE = typer.Option(None, "--input-shape", help="dry-run input shape, e.g. 2,3,32,32")
_DATA = typer.Option(None, "--data", help="dry-run on one batch of this data reference")


# ---------------------------------------------------------------------------- check
@app.command()
@guarded
def check(
    specs: List[str] = typer.Argument(..., metavar="SPEC...", help="spec files to check"),
    format: OutputFormat = typer.Option(OutputFormat.text, "--format", help="text or json"),
    student: Optional[str] = _STUDENT, teacher: Optional[str] = _TEACHER, model: List[str] = _MODEL,
    teacher_ckpt: Optional[str] = _TEACHER_CKPT, input_shape: Optional[str] = _SHAPE,
    data: Optional[str] = _DATA,
) -> None:
    """Check spec files; with models, also resolve every path and dry-run the shapes.

    Exit code 0 when there are no errors, 1 when there are, 2 for bad command-line input.
    """
    from kdsl.lang.loader import check_file

    with_models = any(v is not None for v in (student, teacher, input_shape, data, teacher_ckpt)) or bool(model)
    all_diags: List[Diagnostic] = []
    all_sources = {}
    for path in specs:
        if not os.path.isfile(path):
            raise CliError(f"no such spec file: {path}", "KD401")
        spec, diags, sources = check_file(path)
        all_sources.update(sources)
        if spec is not None and with_models:
            from kdsl.compiler.checking import check_with_models

            diags = diags + check_with_models(spec, student=student, teacher=teacher, models=model,
                                              input_shape=input_shape, data=data, teacher_ckpt=teacher_ckpt,
                                              table=format is OutputFormat.text)
        all_diags += diags
        if format is OutputFormat.text:
            print_diagnostics(diags, sources)
            echo(f"{path}: {summary_line(diags) if diags else 'ok'}")
    if format is OutputFormat.json:
        echo(to_json(all_diags))
    raise typer.Exit(EXIT_ERRORS if any(d.is_error for d in all_diags) else EXIT_OK)


# ---------------------------------------------------------------------------- train
class Device(str, enum.Enum):
    cpu = "cpu"
    cuda = "cuda"
    auto = "auto"


class Amp(str, enum.Enum):
    bf16 = "bf16"
    fp16 = "fp16"


@app.command()
@guarded
def train(
    spec: str = typer.Argument(..., metavar="SPEC", help="the spec file"),
    student: Optional[str] = _STUDENT, teacher: Optional[str] = _TEACHER, model: List[str] = _MODEL,
    teacher_ckpt: Optional[str] = _TEACHER_CKPT,
    data: Optional[str] = typer.Option(None, "--data", help="data reference, e.g. kdsl.data:cifar100(root=\"data\")"),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="number of epochs"),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="samples per batch (per process)"),
    lr: Optional[float] = typer.Option(None, "--lr", help="learning rate (replaces the optimizer's)"),
    optimizer: Optional[str] = typer.Option(None, "--optimizer", help="e.g. 'sgd(lr=0.05, momentum=0.9)'"),
    device: Optional[Device] = typer.Option(None, "--device", help="cpu, cuda or auto"),
    amp: Optional[Amp] = typer.Option(None, "--amp", help="mixed precision: bf16 (CPU, GPU) or fp16 (GPU)"),
    seed: Optional[int] = typer.Option(None, "--seed", help="random seed"),
    out: Optional[str] = typer.Option(None, "--out", help="run directory (default runs/SPEC_NAME)"),
    resume: bool = typer.Option(False, "--resume", help="continue the run in --out"),
    eval_only: bool = typer.Option(False, "--eval-only", help="evaluate the run's student and the teachers"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace a run already in --out"),
    threads: Optional[int] = typer.Option(None, "--threads", help="torch CPU threads (1 suits small models on a busy machine)"),
) -> None:
    """Train the student of SPEC: flags override the spec's train block, which overrides defaults.

    Writes DIR/checkpoint.pt and DIR/student.pt every epoch (atomically), metrics.jsonl,
    metrics.csv, curves.png and summary.json. Under `torchrun --nproc_per_node N` it trains with
    DistributedDataParallel.
    """
    if not os.path.isfile(spec):
        raise CliError(f"no such spec file: {spec}", "KD401")
    if resume and overwrite:
        raise CliError("--resume and --overwrite contradict each other")
    from kdsl.training.trainer import Flags
    from kdsl.training.trainer import train as run_training

    flags = Flags(student=student, teacher=teacher, models=list(model), teacher_ckpt=teacher_ckpt,
                  data=data, epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer,
                  device=device.value if device else None, amp=amp.value if amp else None, seed=seed,
                  out=out, resume=resume, eval_only=eval_only, overwrite=overwrite, threads=threads)
    run_training(spec, flags, make_console())


# ---------------------------------------------------------------------------- explain, graph
class GraphFormat(str, enum.Enum):
    mermaid = "mermaid"
    dot = "dot"


def _load_or_exit(spec: str):
    from kdsl.lang.loader import check_file

    if not os.path.isfile(spec):
        raise CliError(f"no such spec file: {spec}", "KD401")
    loaded, diags, sources = check_file(spec)
    if loaded is None:
        print_diagnostics(diags, sources)
        echo(f"{spec}: {summary_line(diags)}")
        raise typer.Exit(EXIT_ERRORS)
    return loaded


@app.command()
@guarded
def explain(
    spec: str = typer.Argument(..., metavar="SPEC"),
    student: Optional[str] = _STUDENT, teacher: Optional[str] = _TEACHER, model: List[str] = _MODEL,
    teacher_ckpt: Optional[str] = _TEACHER_CKPT, input_shape: Optional[str] = _SHAPE,
    data: Optional[str] = _DATA,
) -> None:
    """Show the compiled plan: hooks, patched attributes, connectors, losses and their order."""
    from kdsl.compiler.checking import ModelOptions, compile_with
    from kdsl.compiler.explain import explain as show

    loaded = _load_or_exit(spec)
    distiller, diags = compile_with(loaded, ModelOptions(student, teacher, list(model), teacher_ckpt,
                                                        input_shape, data))
    if distiller is None:
        print_diagnostics(diags, loaded.sources)
        echo(f"{spec}: {summary_line(diags)}")
        raise typer.Exit(EXIT_ERRORS)
    with distiller:
        show(distiller, make_console())


@app.command()
@guarded
def graph(
    spec: str = typer.Argument(..., metavar="SPEC"),
    format: GraphFormat = typer.Option(GraphFormat.mermaid, "--format", help="mermaid or dot"),
    output: Optional[str] = typer.Option(None, "--output", "-o",
                                         help="write here; .png/.svg/.pdf draws it with graphviz's dot"),
    student: Optional[str] = _STUDENT, teacher: Optional[str] = _TEACHER, model: List[str] = _MODEL,
    teacher_ckpt: Optional[str] = _TEACHER_CKPT, input_shape: Optional[str] = _SHAPE,
    data: Optional[str] = _DATA,
) -> None:
    """Print the loss graph (model -> record -> connector -> loss -> total) as Mermaid or DOT."""
    from kdsl.compiler import graph as graphs
    from kdsl.compiler.checking import ModelOptions, compile_with

    loaded = _load_or_exit(spec)
    opts = ModelOptions(student, teacher, list(model), teacher_ckpt, input_shape, data)
    shapes = None
    if opts.any:
        distiller, diags = compile_with(loaded, opts)
        if distiller is None:
            print_diagnostics(diags, loaded.sources)
            raise typer.Exit(EXIT_ERRORS)
        with distiller:
            shapes = distiller.shapes
    g = graphs.build(loaded, shapes)
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


# ---------------------------------------------------------------------------- catalog
@app.command("list")
@guarded
def list_components(
    what: str = typer.Argument("all", metavar="[losses|connectors|schedules|optimizers|lr-schedules|NAME]"),
) -> None:
    """Print the component catalog as a table, or one entry whole."""
    from kdsl.cli.catalog_view import show_catalog

    show_catalog(what)


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
def _fail(message: str, code: str, hint: Optional[str] = None) -> int:
    from kdsl.core.diagnostics import make

    print_diagnostics([make(code, message, hint=hint)], {}, err=True)
    return EXIT_USAGE


def main(argv: Optional[List[str]] = None) -> None:
    app(args=argv, prog_name="kdsl")
