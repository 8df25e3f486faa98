"""`kdsl lsp` as a command: it says how to install pygls when pygls is missing, and neither
`import kdsl` nor `kdsl check` imports the server (pygls) or torch through it."""

from __future__ import annotations

import subprocess
import sys

from typer.testing import CliRunner

from kdsl.cli.app import app


def test_lsp_without_pygls_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "pygls", None)  # find_spec answers None: not installed
    result = CliRunner().invoke(app, ["lsp"])
    assert result.exit_code == 1  # as for KD726, the other missing optional package
    assert "error[KD727]: the language server needs pygls" in result.output
    assert "pip install 'kdsl[lsp]'" in result.output


_PROBE = """
import sys
from kdsl.cli.app import main
sys.argv = ["kdsl", "check", "specs/kd.kd"]
try:
    main()
except SystemExit:
    pass
print(sorted({m.split(".")[0] for m in sys.modules if m.split(".")[0] in ("pygls", "lsprotocol", "torch")}))
"""


def test_kdsl_check_never_imports_the_server():
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"


def test_the_server_is_torch_free():
    pytest_import = "import sys, kdsl.lsp.server; print('torch' in sys.modules)"
    try:
        import pygls  # noqa: F401
    except ImportError:
        return  # the server cannot be imported without its extra; the first test covers that
    out = subprocess.run([sys.executable, "-c", pytest_import], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
