"""The language server knows `search` (#25 item 5): after a param's value it completes `search`,
after `search` the spaces of the search-space table, and hover explains a space and the word."""

from __future__ import annotations

import pytest

pytest.importorskip("lsprotocol")

from kdsl.catalog.search import SEARCH_SPACES  # noqa: E402
from kdsl.lsp.complete import completions  # noqa: E402
from kdsl.lsp.context import context_at  # noqa: E402
from kdsl.lsp.hover import hover_text  # noqa: E402
from kdsl.lsp.names import Index  # noqa: E402

TEXT = ("student\nparam tau = 4 search log_uniform(1, 8)\nparam w = 0.5 \noverride param v = 1 search \n"
        "param x = \n")


def _labels(needle: str, delta: int):
    offset = TEXT.index(needle) + delta
    return [c.label for c in completions(context_at(TEXT, offset), Index({"t.kd": TEXT}), set())]


def test_completion_offers_search_after_a_value_and_the_spaces_after_search():
    assert _labels("0.5 ", 4)[0] == "search"
    assert _labels("search \n", 7) == list(SEARCH_SPACES)
    assert "search" not in _labels("x = ", 4)  # a value comes first


def test_hover_explains_a_space_and_the_word():
    index = Index({"t.kd": TEXT})
    text = hover_text(TEXT, TEXT.index("log_uniform") + 3, index)
    assert text.startswith("log_uniform(low, high): a number drawn uniformly in log scale")
    assert "int_uniform(low, high)" in hover_text(TEXT, TEXT.index("search") + 2, index)
