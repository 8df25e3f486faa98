"""kdsl's typer command group: click's usage errors in kdsl's diagnostic format. Apart from
:mod:`kdsl.cli.errors` because it needs typer, which ``kdsl check SPEC`` answers without
(:mod:`kdsl.cli.entry`)."""

from __future__ import annotations

from typer.core import TyperGroup

from kdsl.cli.errors import EXIT_OK, exit_code_for
from kdsl.cli.render import echo, print_diagnostics
from kdsl.core.diagnostics import Diagnostic, make


class KdslGroup(TyperGroup):
    """typer's command group, with click's usage errors (an unknown flag, a flag value of the wrong
    type, a missing argument) given kdsl's format: a KD701 diagnostic with a hint, exit 2, like
    every other bad command-line input (``--epoch 5`` got click's "Error: No such option")."""

    def main(self, *args, standalone_mode: bool = True, **kwargs):
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        import sys

        from typer.core import _click

        errors = _click.exceptions
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except errors.NoArgsIsHelpError as e:  # `kdsl` alone: the help, as click shows it
            e.show()
            sys.exit(e.exit_code)
        except errors.UsageError as e:
            diag = usage_diagnostic(e)
            print_diagnostics([diag], {}, err=True)
            sys.exit(exit_code_for([diag]))
        except errors.ClickException as e:
            e.show()
            sys.exit(e.exit_code)
        except errors.Abort:
            echo("Aborted!", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else EXIT_OK)


def usage_diagnostic(e) -> Diagnostic:
    """A click usage error as a KD701 diagnostic: what was wrong, and what was meant or where the
    command's options are listed."""
    command = e.ctx.command_path if e.ctx is not None else "kdsl"
    listed = f"`{command} -h` lists its options"
    name = getattr(e, "option_name", None)
    if name and hasattr(e, "possibilities"):  # an unknown flag
        from kdsl.core.suggest import did_you_mean

        flags = [p for p in (e.possibilities or ()) if p.startswith("-")]
        return make("KD701", f"{command}: no such option: {name}", hint=did_you_mean(name, flags) or listed)
    return make("KD701", f"{command}: {e.format_message()}", hint=listed)
