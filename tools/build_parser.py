"""Regenerate ``grammar/kd.tables.json``, the prebuilt LALR tables of ``grammar/kd.lark``.

Run ``python tools/build_parser.py`` after every edit of the grammar (and after upgrading lark):
kdsl loads the parser from these tables instead of building it at every start, which is most of
the time ``kdsl check`` takes. ``--check`` writes nothing and exits 1 when the shipped file is not
what the grammar gives. The output is the same on every run (see :mod:`kdsl.lang.parse_tables`).
"""

from __future__ import annotations

import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from kdsl.lang import parse_tables  # noqa: E402  (the checkout's kdsl, not an installed one)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="write nothing; exit 1 if the file is stale")
    args = ap.parse_args(argv)
    grammar = os.path.join(ROOT, "grammar", parse_tables.GRAMMAR_FILE)
    target = os.path.join(ROOT, "grammar", parse_tables.TABLES_FILE)
    with open(grammar, encoding="utf-8") as fh:
        text = fh.read()
    fresh = parse_tables.tables_json(parse_tables.build_parser(), text)
    try:
        with open(target, encoding="utf-8") as fh:
            shipped = fh.read()
    except FileNotFoundError:
        shipped = None
    if args.check:
        if shipped != fresh:
            print(f"{target} is stale: run python tools/build_parser.py", file=sys.stderr)
            return 1
        print(f"{target} is up to date")
        return 0
    if shipped == fresh:
        print(f"{target} is up to date")
        return 0
    tmp = target + ".tmp"
    with open(tmp, "w", encoding="utf-8", newline="\n") as fh:
        fh.write(fresh)
    os.replace(tmp, target)
    print(f"wrote {target} ({len(fresh)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
