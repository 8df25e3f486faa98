"""What an edit costs the server, answer unchanged: a statement's parse is kept (only the statements
an edit changed are parsed again), the requests after an edit read the statements its check
parsed, positions are converted by the codecs as pygls counts them, and the cursor's token is read
from its line."""

from __future__ import annotations

import random

import pytest

pytest.importorskip("pygls", reason="the language server needs pygls (pip install 'kdsl[lsp]')")

from lsprotocol import types as lsp  # noqa: E402
from pygls.workspace.position_codec import PositionCodec  # noqa: E402

from kdsl.lang import fmt, parser  # noqa: E402
from kdsl.lang.loader import check_text  # noqa: E402
from kdsl.lsp import text as lsp_text  # noqa: E402
from kdsl.lsp.text import ClientUnits, line_tokens, remember_parsed, token_at, tokens, window  # noqa: E402

SPEC = 'student = model("kdsl.zoo:resnet8", num_classes=10)\nrecord s = output of student\n'


def test_an_edit_parses_only_the_statements_it_changed(monkeypatch):
    texts = []
    real = parser._parse
    monkeypatch.setattr(parser, "_parse_kept", parser.functools.lru_cache(maxsize=8)(
        lambda text, rule: texts.append(text) or real(text, rule)))
    first = check_text(SPEC + "loss l = mse(s, s)\n", "/p/a.kd")[1]
    texts.clear()
    edited = check_text(SPEC + "loss l = mse(s, sx)\n", "/p/a.kd")[1]
    assert texts == ["loss l = mse(s, sx)"]  # the two statements above it were kept
    assert [d.code for d in first] == [] and [d.code for d in edited] == ["KD201"]
    texts.clear()
    again = check_text(SPEC + "loss l = mse(s, sx)\n", "/p/a.kd")[1]
    assert texts == [] and again == edited  # all kept: the same diagnostics
    broken = SPEC + "loss l = mse(s,, s)\n"  # a kept syntax error reports as lark raised it
    syntax = check_text(broken, "/p/a.kd")[1]
    assert [d.code for d in syntax] == ["KD103"] and check_text(broken, "/p/a.kd")[1] == syntax


def test_requests_after_a_check_read_the_statements_it_parsed(monkeypatch):
    parsed: dict = {}
    _, _, sources = check_text(SPEC, "/p/b.kd", parsed=parsed)
    remember_parsed(sources, parsed)
    monkeypatch.setattr(fmt, "lowered_statements", lambda *a: pytest.fail("parsed again"))
    kept = lsp_text.parsed_statements(SPEC, "/p/b.kd")
    assert kept == parsed["/p/b.kd"] and [type(s).__name__ for s in kept] == ["ModelDecl", "RecordDecl"]
    monkeypatch.undo()
    assert lsp_text.parsed_statements(SPEC + "\n", "/p/b.kd") == kept  # another text: parsed


@pytest.mark.parametrize("encoding", [lsp.PositionEncodingKind.Utf8, lsp.PositionEncodingKind.Utf16,
                                      lsp.PositionEncodingKind.Utf32, None])
def test_positions_convert_as_pygls_converts_them(encoding):
    rng = random.Random(7)
    codec, units = PositionCodec(encoding) if encoding else PositionCodec(), ClientUnits(encoding)
    for _ in range(300):
        line = "".join(rng.choice(["a", "\u00e9", "\u20ac", "\U0001F600"]) for _ in range(rng.randint(0, 9)))
        assert units.count(line) == codec.client_num_units(line)
        for u in range(units.count(line) + 1):  # a unit inside a character counts it whole
            assert units.characters(line, u) == codec.position_from_client_units(
                [line], lsp.Position(0, u)).character


def test_the_cursors_token_from_its_line_is_the_windows():
    text = 'loss a = f("x\\\ny z")\nrecord r = output of student  # note\n'
    for offset in range(len(text) + 1):
        assert token_at(line_tokens(text, offset), offset) == \
            token_at(tokens(text, *window(text, offset)), offset), offset
    assert token_at(line_tokens(text, text.index("y z")), text.index("y z")).kind == "string"
