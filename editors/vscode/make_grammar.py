"""Writes syntaxes/kdsl.tmLanguage.json, the TextMate grammar of .kd files, from kdsl's tables.

    python editors/vscode/make_grammar.py          # rewrite the grammar
    python editors/vscode/make_grammar.py --check  # exit 1 if the committed grammar is stale

The statement keywords come from the statement table (kdsl/lang/statements.py), so a new statement
is highlighted as soon as the grammar is regenerated; tests/lsp/test_vscode_grammar.py checks that
the committed file is up to date. The words inside statements (``output of``, ``from``, ``with``)
come from grammar/kd.lark's quoted terminals.
"""

from __future__ import annotations

import json
import pathlib
import re
import sys

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))

from kdsl.lang.statements import STATEMENT_KEYWORDS, STATEMENTS  # noqa: E402

OUT = HERE / "syntaxes" / "kdsl.tmLanguage.json"
NAME = r"[A-Za-z_][A-Za-z0-9_]*"
CONSTANTS = ("true", "false", "none")
ROLES = STATEMENTS["model"].keywords


def _alternatives(words) -> str:
    return "|".join(sorted(set(words), key=lambda w: (-len(w), w)))


def _words(words) -> str:
    return r"\b(?:" + _alternatives(words) + r")\b"


def grammar_words() -> list:
    """The quoted words of grammar/kd.lark but the constants (a statement's first word is matched
    before, as a statement keyword; ``input`` and ``param`` also stand inside a record)."""
    lark = (ROOT / "grammar" / "kd.lark").read_text(encoding="utf-8")
    quoted = set(re.findall(r'"([a-z_]+)"', lark))
    return sorted(quoted - set(CONSTANTS))


def grammar() -> dict:
    declaring = [w for e in STATEMENTS.values() if e.declares and e.kind != "model" for w in e.keywords]
    return {
        "$schema": "https://raw.githubusercontent.com/martinring/tmlanguage/master/tmlanguage.json",
        "name": "kdsl", "scopeName": "source.kdsl", "fileTypes": ["kd"],
        "patterns": [{"include": "#comment"}, {"include": "#train"}, {"include": "#declaration"},
                     {"include": "#model"}, {"include": "#statement"}, {"include": "#expression"}],
        "repository": {
            "comment": {"name": "comment.line.number-sign.kdsl", "match": "#.*$"},
            "string": {"name": "string.quoted.double.kdsl", "begin": '"', "end": '"|$',
                       "patterns": [{"name": "constant.character.escape.kdsl", "match": r"\\."}]},
            "number": {"name": "constant.numeric.kdsl",
                       "match": r"(?<![A-Za-z0-9_.])-?(?:[0-9]+\.[0-9]*(?:[eE][-+]?[0-9]+)?|[0-9]+[eE][-+]?[0-9]+|[0-9]+)\b"},
            "constant": {"name": "constant.language.kdsl", "match": _words(CONSTANTS)},
            "declaration": {
                "match": rf"^\s*(?:(override)\s+)?({_alternatives(declaring)})\s+({NAME})",
                "captures": {"1": {"name": "storage.modifier.override.kdsl"}, "2": {"name": "keyword.control.kdsl"},
                             "3": {"name": "entity.name.variable.kdsl"}}},
            "model": {
                "match": rf"^\s*(?:(override)\s+)?({_alternatives(ROLES)})\b(?:\s+(?!=)({NAME}))?",
                "captures": {"1": {"name": "storage.modifier.override.kdsl"}, "2": {"name": "keyword.control.kdsl"},
                             "3": {"name": "entity.name.variable.kdsl"}}},
            "statement": {"name": "keyword.control.kdsl", "match": r"^\s*" + _words(STATEMENT_KEYWORDS)},
            "train": {
                "begin": r"^\s*(train)\s*(\{)", "end": r"\}",
                "beginCaptures": {"1": {"name": "keyword.control.kdsl"}, "2": {"name": "punctuation.section.block.begin.kdsl"}},
                "endCaptures": {"0": {"name": "punctuation.section.block.end.kdsl"}},
                "patterns": [{"include": "#comment"},
                             {"match": rf"^\s*({NAME})\s*(?==)", "captures": {"1": {"name": "variable.other.property.kdsl"}}},
                             {"include": "#expression"}]},
            "expression": {"patterns": [
                {"include": "#comment"}, {"include": "#string"}, {"include": "#number"}, {"include": "#constant"},
                {"name": "keyword.other.kdsl", "match": _words(grammar_words())},
                {"match": rf"\b({NAME})\s*(?=\()", "captures": {"1": {"name": "entity.name.function.call.kdsl"}}},
                {"match": rf"\b({NAME})\s*(=)(?!=)", "captures": {"1": {"name": "variable.parameter.kdsl"},
                                                                   "2": {"name": "keyword.operator.assignment.kdsl"}}},
                {"name": "keyword.operator.kdsl", "match": r"[*=]"},
                {"name": "punctuation.separator.kdsl", "match": r"[,.]"}]},
        },
    }


def main(argv=None) -> int:
    text = json.dumps(grammar(), indent=2) + "\n"
    if "--check" in (argv if argv is not None else sys.argv[1:]):
        if OUT.read_text(encoding="utf-8") != text:
            print(f"{OUT} is stale: run python editors/vscode/make_grammar.py", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
