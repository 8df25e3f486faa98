"""The statement table (kdsl/lang/statements.py) is complete: every statement of the IR and every
statement rule of the grammar has an entry, every entry lowers, prints and is checked, and a
statement the table does not know is an error wherever it is met (sqlglot raises on an unhandled
node), never passed through."""

from __future__ import annotations

import re
import typing

import pytest

from kdsl.core.diagnostics import Diagnostics
from kdsl.lang import ir
from kdsl.lang.fmt import lowered_statements
from kdsl.lang.parser import grammar_path
from kdsl.lang.printer import statement_text
from kdsl.lang.statements import (BY_RULE, STATEMENTS, UnhandledStatement, statement_kind,
                                  walk_statements)
from kdsl.lang.verify import Verifier

# One line of each kind, written as the printer writes it (a new kind needs its example here).
EXAMPLES = {
    "model": 'teacher t = model("kdsl.zoo:mlp", hidden=8) from "t.pt" trainable',
    "record": "record s = input 1 of student.fc call 2",
    "deliver": 'deliver output of method "pkg.m:Head.assign" from teacher to student keep 2',
    "connector": 'connector c = linear_regressor(s_dim=8, t_dim=16) from "c.pt" frozen',
    "loss": "loss kd = kl_div(s, t, temperature=4) * 0.5",
    "train": "train {\n  epochs = 3\n}",
    "stage": "stage warm epochs 2 {\n  optimize student\n}",
    "phase": "phase gen repeat 2 {\n  loss a = mse(s, t)\n  freeze student.fc\n}",
    "optimize": "optimize student.fc, c with sgd(lr=0.1)",
    "freeze": "freeze student.layer1",
    "init": "init student.layer2 from teacher.layer2",
    "input": "input = gen(noise(100))",
    "param": 'param sizes = [1, -2.5, "x"]',
    "include": 'include "base.kd"',
    "import": 'import "pkg.losses"',
    "generate": "generate from student(max_new_tokens=8, temperature=0.7, lmbda=0.5)",
}


def _union_members(annotated) -> set:
    union = typing.get_args(annotated)[0]
    return set(typing.get_args(union))


def test_every_ir_statement_has_an_entry_and_every_entry_is_a_statement():
    assert _union_members(ir.Statement) == {e.node for e in STATEMENTS.values()}
    for entry in STATEMENTS.values():
        assert entry.node.model_fields["kind"].default == entry.kind


def test_every_grammar_statement_rule_has_an_entry():
    grammar = open(grammar_path(), encoding="utf-8").read()
    body = re.search(r"^statement:(.*?)\n\n", grammar, re.S | re.M).group(1)
    rules = set(re.findall(r"\w+", body)) - {"override_stmt"}
    assert rules == set(BY_RULE)


@pytest.mark.parametrize("kind", sorted(STATEMENTS))
def test_every_entry_lowers_prints_and_is_checked(kind):
    entry = STATEMENTS[kind]
    assert kind in EXAMPLES, f"add an example line of '{kind}' to EXAMPLES"
    nodes, problems = lowered_statements(EXAMPLES[kind] + "\n")
    assert problems == [] and len(nodes) == 1 and type(nodes[0]) is entry.node
    assert statement_text(nodes[0]) == EXAMPLES[kind]
    method = getattr(entry.check, "method", None)
    assert callable(entry.check) and (method is None or callable(getattr(Verifier, method, None))), \
        f"Verifier lacks {method}"
    assert entry.word and EXAMPLES[kind].split()[0] in entry.keywords


def test_declarations_the_verifier_names_come_from_the_table():
    from kdsl.lang.verify_names import KIND_WORD

    assert KIND_WORD == {e.node: e.declares for e in STATEMENTS.values() if e.declares}


class _Unknown(ir.Node):
    kind: typing.Literal["unknown"] = "unknown"


def test_a_statement_without_an_entry_is_an_error_not_passed_through():
    with pytest.raises(UnhandledStatement):
        statement_kind(_Unknown())
    with pytest.raises(UnhandledStatement):
        Verifier(Diagnostics()).verify_statement(_Unknown(), 0)


def test_a_grammar_rule_without_an_entry_is_an_error_not_a_syntax_message(monkeypatch):
    monkeypatch.delitem(BY_RULE, "freeze_stmt")
    with pytest.raises(UnhandledStatement):
        lowered_statements("freeze student\n")


def test_blocks_are_walked_through_the_table():
    nodes, _ = lowered_statements("stage s {\n  phase p {\n    loss a = mse(x, y)\n  }\n}\n")
    assert [n.kind for n in walk_statements(nodes)] == ["stage", "phase", "loss"]


# ------------------------------------------------------------------------------ recorder kinds
def test_every_recorder_kind_parses_prints_and_is_installed():
    from kdsl.compiler.install import INSTALLERS
    from kdsl.lang.statements import RECORDER_KINDS, recorder_kind

    assert set(INSTALLERS) == set(RECORDER_KINDS)
    whats = set(typing.get_args(ir.RecordDecl.model_fields["what"].annotation))
    assert whats == {k.what for k in RECORDER_KINDS.values()}
    for kind in RECORDER_KINDS.values():
        line = f"record r = {kind.example}"
        (node,), problems = lowered_statements(line + "\n")
        assert problems == [] and recorder_kind(node) is kind and statement_text(node) == line


def test_a_record_form_without_a_recorder_kind_is_an_error():
    from kdsl.lang.statements import recorder_kind

    odd = ir.RecordDecl(name="r", what="param", target=ir.MethodRef(ref="a.b:C.d", model="student"))
    with pytest.raises(UnhandledStatement):
        recorder_kind(odd)
