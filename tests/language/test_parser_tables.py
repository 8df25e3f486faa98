"""The LALR tables shipped in grammar/kd.tables.json (issue #12, item 5): they are what the grammar
gives, the parser loaded from them parses and fails exactly like one built from the grammar, and
stale tables are never used."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import lark
import pytest

from kdsl.lang import parse_tables

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "grammar" / parse_tables.TABLES_FILE


@pytest.fixture(scope="module")
def built():
    return parse_tables.build_parser()


def test_shipped_tables_match_the_grammar(built):
    grammar = (ROOT / "grammar" / parse_tables.GRAMMAR_FILE).read_text(encoding="utf-8")
    shipped = SHIPPED.read_text(encoding="utf-8")
    document = json.loads(shipped)
    assert document["grammar_sha256"] == parse_tables.grammar_digest(grammar), \
        "grammar/kd.lark changed: run `python tools/build_parser.py` to regenerate grammar/kd.tables.json"
    if document["lark_version"] == lark.__version__:
        assert shipped == parse_tables.tables_json(built, grammar), \
            "grammar/kd.tables.json is stale: run `python tools/build_parser.py`"
    else:  # another lark release: kdsl builds the parser from the grammar instead (tested below)
        assert not parse_tables.shipped_tables_usable(document, grammar)


def test_the_tables_are_the_same_whatever_the_hash_seed():
    for seed in ("1", "2"):
        proc = subprocess.run([sys.executable, str(ROOT / "tools" / "build_parser.py"), "--check"],
                              capture_output=True, text=True, env=dict(os.environ, PYTHONHASHSEED=seed))
        assert proc.returncode == 0, proc.stderr


def test_kdsl_uses_the_shipped_tables():
    parser = parse_tables.lark_parser()
    assert parser.source_path == "<deserialized>"  # lark's mark of a parser loaded from tables


def _outcome(parser, text: str, start: str):
    try:
        return "tree", parser.parse(text, start=start)
    except lark.UnexpectedToken as e:
        return "token", (e.token.type, e.token.value, e.line, e.column, sorted(e.accepts or e.expected))
    except lark.UnexpectedCharacters as e:
        return "chars", (e.line, e.column, e.pos_in_stream, sorted(e.allowed or ()))


STATEMENTS = [
    ("statement", 'student = model("kdsl.zoo:resnet8x4", num_classes=100)'),
    ("statement", 'teacher t2 from "ckpt.pt" trainable'),
    ("statement", "record s = output of student.layer1.0 call 1"),
    ("statement", 'record m = input "mask" of method "pkg.heads:Head.assign" in student'),
    ("statement", "loss kd = kl_div(s, t, tau=4) * linear(0.0, 1.0, epochs=5)"),
    ("statement", "loss task = cross_entropy(s[0].logits, batch.target) * -0.1"),
    ("statement", "stage warmup epochs 3 {"),
    ("train_entry", 'data = dataset("kdsl.data:digits", batch_size=32)'),
    ("ref_call", "kdsl.zoo:resnet8(num_classes=10)"),
    ("value", "sgd(lr=0.1, momentum=[0.9, 1e-3])"),
    # errors: the expected-token sets are what kdsl's messages are made of
    ("statement", "record s = output of"),
    ("statement", "loss kd = kl_div(s, t,, tau=4)"),
    ("statement", "recrod s = output of student"),
    ("statement", "loss x = a ? b"),
    ("statement", "connector p = conv_bn(in_channels=32 out_channels=64)"),
    ("train_entry", "epochs = = 3"),
    ("value", "'single'"),
]


@pytest.mark.parametrize("start, text", STATEMENTS)
def test_loaded_parser_behaves_like_the_built_one(built, start, text):
    assert _outcome(parse_tables.lark_parser(), text, start) == _outcome(built, text, start)


def test_every_spec_parses_the_same(built):
    from kdsl.core.diagnostics import Diagnostics
    from kdsl.core.span import SourceText
    from kdsl.lang.parser import Block, cut

    def chunks(pieces):
        for p in pieces:
            if isinstance(p, Block):
                yield p.header
                yield from chunks(p.entries)
            else:
                yield p

    files = sorted(ROOT.glob("specs/**/*.kd")) + sorted(ROOT.glob("tests/diagnostics/**/*.kd"))
    assert len(files) > 40
    loaded, compared = parse_tables.lark_parser(), 0
    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace")
        source = SourceText(str(path), text)
        for chunk in chunks(cut(source, Diagnostics({str(path): text}))):
            if chunk.broken:
                continue
            piece = text[chunk.start:chunk.end]
            assert _outcome(loaded, piece, chunk.rule) == _outcome(built, piece, chunk.rule), (path, piece)
            compared += 1
    assert compared > 300


def test_stale_tables_are_not_used(tmp_path, monkeypatch):
    document = json.loads(SHIPPED.read_text(encoding="utf-8"))
    grammar = (ROOT / "grammar" / parse_tables.GRAMMAR_FILE).read_text(encoding="utf-8")
    assert parse_tables.shipped_tables_usable(document, grammar)
    assert not parse_tables.shipped_tables_usable(document, grammar + "\n// edited\n")
    assert not parse_tables.shipped_tables_usable(dict(document, lark_version="0.0.1"), grammar)
    # a grammar edited without regenerating: kdsl builds the parser from the grammar
    (tmp_path / parse_tables.GRAMMAR_FILE).write_text(grammar + "\n// edited\n", encoding="utf-8")
    (tmp_path / parse_tables.TABLES_FILE).write_text(SHIPPED.read_text(encoding="utf-8"), encoding="utf-8")
    monkeypatch.setattr(parse_tables, "_grammar_dirs", lambda: [str(tmp_path)])
    parse_tables.lark_parser.cache_clear()
    try:
        parser = parse_tables.lark_parser()
        assert parser.source_path != "<deserialized>"
        assert parser.parse("student", start="statement").data == "statement"
        (tmp_path / parse_tables.TABLES_FILE).write_text("{not json", encoding="utf-8")  # damaged: built too
        parse_tables.lark_parser.cache_clear()
        assert parse_tables.lark_parser().source_path != "<deserialized>"
    finally:
        parse_tables.lark_parser.cache_clear()


def test_the_tables_are_package_data():
    import fnmatch

    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    patterns = config["package-data"]["kdsl.grammar"]
    assert any(fnmatch.fnmatch(parse_tables.TABLES_FILE, p) for p in patterns), patterns
