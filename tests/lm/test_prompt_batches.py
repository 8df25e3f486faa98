"""The prompt/completion batch layout (kdsl.prompt_batches): completion-only labels, right-padded
sequences, left-padded prompts."""

import torch

from kdsl.prompt_batches import PromptExample, collate
from kdsl.text_data import IGNORE_INDEX, default_inputs


def test_labels_cover_the_completion_only_and_prompts_are_left_padded():
    batch = collate([PromptExample([5, 6], [7, 8, 9]), PromptExample([1, 2, 3], [4])], pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8, 9], [1, 2, 3, 4, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]]
    i = IGNORE_INDEX
    assert batch["labels"].tolist() == [[i, i, 7, 8, 9], [i, i, i, 4, i]]
    assert batch["prompt_ids"].tolist() == [[0, 5, 6], [1, 2, 3]]
    assert batch["prompt_mask"].tolist() == [[0, 1, 1], [1, 1, 1]]
    assert all(t.dtype == torch.int64 for t in batch.values())


def test_prompt_fields_are_never_model_inputs():
    batch = collate([PromptExample([1], [2])])
    assert default_inputs(list(batch)) == ("input_ids", "attention_mask")
