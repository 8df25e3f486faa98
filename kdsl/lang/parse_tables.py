"""The LALR parser, loaded from parse tables shipped prebuilt with the grammar.

Building lark's LALR parser from ``grammar/kd.lark`` takes about 0.1-0.3 s (lark first builds a
parser for its own grammar language, then the LALR automaton for ours), more than the rest of
``kdsl check`` on a typical spec. So the automaton is built once, by ``tools/build_parser.py``,
and shipped next to the grammar as ``kd.tables.json``: lark's own pickle-free serialization
(``Lark.memo_serialize``), written as JSON. Loading it takes a few milliseconds, and the parser it
gives is lark's parser (same error classes, same expected-token sets), so every diagnostic stays
as it was.

The file records the SHA-256 of the grammar text and the lark version that built it. When either
differs from what is installed (a grammar edited without regenerating, another lark release), the
tables are not trusted and the parser is built from the grammar as before: slower, never wrong.
``tests/language/test_parser_tables.py`` fails when the shipped tables are stale.

Lark numbers its LR states and tokens in the iteration order of sets, which depends on the hash
seed; :func:`tables_json` renumbers both canonically so that the file is the same on every run.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from typing import Any, Dict, List, Tuple

START = ["statement", "train_entry", "ref_call", "value"]
LARK_OPTIONS: Dict[str, Any] = dict(parser="lalr", start=START, propagate_positions=True,
                                    maybe_placeholders=True)
GRAMMAR_FILE = "kd.lark"
TABLES_FILE = "kd.tables.json"
REGENERATE = "python tools/build_parser.py"


def _grammar_dirs() -> List[str]:
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the kdsl package
    # installed as package data (kdsl/grammar), or at the top of a checkout (grammar/)
    return [os.path.join(here, "grammar"), os.path.join(os.path.dirname(here), "grammar")]


def grammar_path() -> str:
    """The grammar file: installed as package data (kdsl/grammar), or at the top of a checkout."""
    for directory in _grammar_dirs():
        candidate = os.path.join(directory, GRAMMAR_FILE)
        if os.path.isfile(candidate):
            return candidate
    raise FileNotFoundError("kdsl's grammar file kd.lark is missing from the installation")


def tables_path() -> str:
    """Where the shipped tables are: beside the grammar file."""
    return os.path.join(os.path.dirname(grammar_path()), TABLES_FILE)


def grammar_text() -> str:
    with open(grammar_path(), encoding="utf-8") as fh:
        return fh.read()


def grammar_digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def build_parser():
    """The LALR parser built from the grammar (the slow way)."""
    import lark

    return lark.Lark(grammar_text(), **LARK_OPTIONS)


# ------------------------------------------------------------------------------ writing
def _canonical_table(table: Dict[str, Any]) -> Dict[str, Any]:
    """The serialized parse table with its tokens numbered in name order and its states in the
    order a breadth-first walk from the start states meets them (actions taken in token order)."""
    tokens, states = table["tokens"], table["states"]
    names = sorted(set(tokens.values()))
    token_id = {name: i for i, name in enumerate(names)}
    order: Dict[int, int] = {}
    queue = [table["start_states"][s] for s in sorted(table["start_states"])]
    while queue:
        state = queue.pop(0)
        if state in order:
            continue
        order[state] = len(order)
        for _, (action, arg) in sorted(states[state].items(), key=lambda kv: tokens[kv[0]]):
            if action == 0:  # a shift (or a goto on a nonterminal): arg is the next state
                queue.append(arg)
    if len(order) != len(states):
        raise RuntimeError(f"{len(states) - len(order)} LR states are unreachable from the start states")
    new_states = {}
    for old, new in sorted(order.items(), key=lambda kv: kv[1]):
        actions = sorted(((token_id[tokens[t]], (a, order[arg] if a == 0 else arg))
                          for t, (a, arg) in states[old].items()), key=lambda kv: kv[0])
        new_states[new] = dict(actions)
    return {"tokens": dict(enumerate(names)), "states": new_states,
            "start_states": {s: order[v] for s, v in sorted(table["start_states"].items())},
            "end_states": {s: order[v] for s, v in sorted(table["end_states"].items())}}


def tables_json(parser, grammar: str) -> str:
    """The text of the tables file for ``parser`` built from the grammar text ``grammar``."""
    import lark
    from lark.grammar import Rule
    from lark.lexer import TerminalDef

    data, memo = parser.memo_serialize([TerminalDef, Rule])
    data["parser"]["parser"] = _canonical_table(data["parser"]["parser"])
    document = {"grammar_sha256": grammar_digest(grammar), "lark_version": lark.__version__,
                "regenerate_with": REGENERATE, "data": data, "memo": memo}
    return json.dumps(document, indent=0, sort_keys=True, ensure_ascii=True) + "\n"


# ------------------------------------------------------------------------------ reading
def _int_keys(pairs: List[Tuple[str, Any]]) -> Dict[Any, Any]:
    # JSON keys are strings; lark's tables key states, tokens and the memo by int
    return {int(k) if k.isascii() and k.isdigit() else k: v for k, v in pairs}


def read_tables(path: str) -> Dict[str, Any]:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh, object_pairs_hook=_int_keys)


def shipped_tables_usable(document: Dict[str, Any], grammar: str) -> bool:
    """Whether tables built for this grammar by this lark release."""
    import lark

    return document.get("grammar_sha256") == grammar_digest(grammar) and \
        document.get("lark_version") == lark.__version__


@functools.lru_cache(maxsize=None)
def lark_parser():
    """kdsl's LALR parser: from the shipped tables when they match the grammar and the installed
    lark, else built from the grammar."""
    import lark

    grammar = grammar_text()
    try:
        document = read_tables(tables_path())
    except (OSError, ValueError):
        return build_parser()
    if not shipped_tables_usable(document, grammar):
        return build_parser()
    # a dict, not a file: Lark.load reads a dict as the serialized form directly (no pickle)
    return lark.Lark.load({"data": document["data"], "memo": document["memo"]})
