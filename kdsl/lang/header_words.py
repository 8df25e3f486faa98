"""What the words of a model's flags and of a block's header mean, for hover (``kdsl.lsp``) and
``kdsl explain-code``'s readers: one line each, beside the grammar's quoted words that carry them
(``model_stmt``'s ``flag``, ``stage_open``, ``phase_open`` in grammar/kd.lark)."""

from __future__ import annotations

from typing import Dict

MODEL_FLAGS: Dict[str, str] = {
    "trainable": "teacher NAME ... trainable: the teacher trains with the student (online distillation); "
                 "without it a teacher is frozen: eval mode, no gradients",
    "train_mode": "teacher NAME ... train_mode: a frozen teacher run in train mode while the student trains "
                  "(BatchNorm on batch statistics, dropout active), never trained; its running statistics "
                  "are kept as loaded",
}

HEADER_WORDS: Dict[str, str] = {
    "epochs": "stage NAME epochs N: the stage runs N epochs (without it, the rest of the run)",
    "batch_size": "stage NAME batch_size B: the stage batches the data B samples per process "
                  "(without it, the run's batch_size)",
    "repeat": "phase NAME repeat N: each step runs the phase N times (1 to 1,000)",
}
