"""``kdsl lsp``: the language server on stdin/stdout, for editors (:mod:`kdsl.lsp.server`).

pygls is an optional extra (``pip install 'kdsl[lsp]'``); without it the command says so (KD727).
"""

from __future__ import annotations

import importlib.util

import typer

from kdsl.cli.errors import CliError, guarded


def lsp() -> None:
    """Run the kdsl language server over stdio (editors start it: VS Code, Neovim, Helix, Emacs).

    Diagnostics as you type, hover, completion, go to definition, references, rename, outline,
    formatting and quick fixes for "did you mean" hints.
    """
    if importlib.util.find_spec("pygls") is None:
        raise CliError("the language server needs pygls, which is not installed", "KD727",
                       hint="pip install 'kdsl[lsp]'")
    from kdsl.lsp.server import main

    main()


def register(app: typer.Typer) -> None:
    app.command(name="lsp")(guarded(lsp))
