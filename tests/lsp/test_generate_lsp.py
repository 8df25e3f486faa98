"""The language server knows the generate statement: its keyword completes at a line's start, its
options complete and hover inside the call (read from kdsl.lang.generation.OPTIONS)."""

from __future__ import annotations

from kdsl.lang.generation import OPTIONS
from kdsl.lsp.complete import completions
from kdsl.lsp.context import context_at
from kdsl.lsp.hover import hover_text
from kdsl.lsp.names import Index

SPEC = 'student = model("kdsl.zoo:gpt")\n'


def test_generate_completes_and_hovers():
    start = SPEC + "gen"
    labels = [c.label for c in completions(context_at(start, len(start)), Index({"a.kd": start}), set())]
    assert "generate" in labels
    text = SPEC + "generate from student(max_new_tokens=4, "
    items = completions(context_at(text, len(text)), Index({"a.kd": text}), set())
    options = [c.label for c in items if c.label.endswith("=")]
    assert options == [f"{n}=" for n in OPTIONS if n != "max_new_tokens"]
    full = text + "lmbda=0.5)\n"
    at = full.index("lmbda") + 1
    hover = hover_text(full, at, Index({"a.kd": full}))
    assert hover.startswith("`lmbda: float = 1.0`") and "GKD" in hover
    assert "completes the batch's prompts" in hover_text(full, full.index("generate") + 2, Index({"a.kd": full}))
