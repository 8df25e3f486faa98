"""``kdsl lsp``: the language server (pygls, stdio), an optional extra: ``pip install kdsl[lsp]``.

The modules below the server (:mod:`~kdsl.lsp.text`, :mod:`~kdsl.lsp.names`,
:mod:`~kdsl.lsp.context`, :mod:`~kdsl.lsp.hover`, :mod:`~kdsl.lsp.complete`,
:mod:`~kdsl.lsp.convert`, :mod:`~kdsl.lsp.fixes`) are torch-free and answer from kdsl's own
passes: diagnostics come from the loader's ``check_text`` (the same as ``kdsl check``), formatting
from :mod:`kdsl.lang.fmt`, declarations from the parser's lowered statements, keywords from the
statement table, settings from the settings table and entries from the catalog registry (shown as
``kdsl list NAME`` shows them). They use lsprotocol's types; only :mod:`~kdsl.lsp.server` imports
pygls. ``import kdsl`` and ``kdsl check`` never import this package.
"""
