"""The LSP's view of a model's `train_mode` flag and a stage's `batch_size` (issue #20, items 6
and 12): hover says what they mean, and KD254's quick fix drops the flag that has no effect (never
the `trainable` that makes a teacher train)."""

from __future__ import annotations

from kdsl.lsp.fixes import fix_for
from kdsl.lsp.hover import hover_text
from kdsl.lsp.names import Index

TEXT = """student = model("kdsl.zoo:digits_cnn")
teacher = model("kdsl.zoo:digits_teacher") train_mode
teacher peer = model("kdsl.zoo:digits_cnn") trainable train_mode
record s = output of student
record t = output of teacher
stage warm epochs 1 batch_size 8 {
  loss kd = kl_div(s, t)
}
train {
  data = dataset("kdsl.data:digits", batch_size=32)
}
"""


def _hover(word: str, nth: int = 1):
    at = -1
    for _ in range(nth):
        at = TEXT.index(word, at + 1)
    return hover_text(TEXT, at + 1, Index({"a.kd": TEXT}))


def test_hover_tells_what_train_mode_and_a_stages_batch_size_mean():
    assert "BatchNorm on batch statistics" in _hover("train_mode") and "never trained" in _hover("train_mode")
    assert "the stage batches the data B samples per process" in _hover("batch_size")
    assert "the stage runs N epochs" in _hover("epochs")
    assert "batches the data" not in (_hover("batch_size", nth=2) or "")  # the data's option, not the header


def test_kd254s_fix_drops_train_mode_of_a_trained_teacher_not_its_trainable():
    title, (start, end, new) = fix_for("KD254", TEXT, "a.kd", (2, 8))
    assert TEXT[start:end] == " train_mode" and new == "" and "no effect" in title
    assert TEXT[:start].endswith("trainable")
