"""Shared by the FSDP tests: the entry of a torchrun launch, the tiny GPT spec and its data (a text
whose windows need no padding, so that every rank's token mean is a mean over as many tokens as
the single process's, and losses compare exactly). Ranks without torchrun: tests/forked.run_ranks."""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SPEC = str(HERE / "gpt_kd_hint.kd")
ENTRY = str(HERE / "fsdp_entry.py")
TIMEOUT = 240
SEQ = 16


def corpus(folder: Path) -> str:
    """A text of 220 windows of 16 bytes (kdsl's own sources): 198 train, 22 validation."""
    text = b"".join(p.read_bytes() for p in sorted((ROOT / "kdsl" / "training").glob("*.py")))
    path = folder / "corpus.txt"
    path.write_bytes(text[: 220 * SEQ])
    return f'kdsl.data:text(path="{path}", seq_len={SEQ}, batch_size=4)'
