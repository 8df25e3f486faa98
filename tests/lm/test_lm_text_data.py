"""kdsl.data:text: windows, masks and labels; the split by file; determinism; the stdlib corpus."""

from __future__ import annotations

import pytest
import torch

from kdsl.data import text
from kdsl.text_data import IGNORE_INDEX, stdlib_files, windows


def test_windows_pad_the_tail_and_drop_a_lone_token():
    ids, mask, labels = windows(list(range(1, 12)), 4, pad_id=0)  # 11 tokens: 4 + 4 + 3
    assert ids.tolist() == [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 0]]
    assert mask.tolist() == [[1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 1, 0]]
    assert labels.tolist() == [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, IGNORE_INDEX]]
    ids, mask, labels = windows(list(range(1, 10)), 4)  # 9 tokens: the 9th alone has no target
    assert ids.shape == (2, 4) and int(mask.sum()) == 8
    with pytest.raises(ValueError, match="seq_len"):
        windows([1, 2, 3], 1)


def _corpus(tmp_path):
    folder = tmp_path / "corpus"
    folder.mkdir()
    for i in range(12):
        (folder / f"f{i:02d}.py").write_bytes(bytes([65 + i]) * (20 + i))
    (folder / "notes.txt").write_text("not matched by the pattern")
    return folder


def test_folder_split_by_file_and_items(tmp_path):
    folder = _corpus(tmp_path)
    s = text(path=folder, seq_len=8)
    assert s.task == "lm" and s.num_classes == 256 and s.input_shape == (8,)
    assert s.val.files == ["f04.py"] and len(s.train.files) == 11  # the 5th of every 10
    assert not set(s.train.files) & set(s.val.files)
    item = s.train[0]
    assert set(item) == {"input_ids", "attention_mask", "labels"}
    assert all(v.dtype == torch.int64 and v.shape == (8,) for v in item.values())
    # windows never cross files: f00.py (20 bytes of "A") gives 8 + 8 + 4, the last padded
    assert s.train.input_ids[:3].eq(65).sum() == 20 and s.train.attention_mask[2].tolist() == [1] * 4 + [0] * 4
    assert (s.train.labels[2, 4:] == IGNORE_INDEX).all()
    # every byte is a token, except a file's last one when it would stand alone (f05.py: 25 = 3 * 8 + 1)
    assert s.train.tokens == sum(20 + i for i in range(12) if i != 4) - 1


def test_deterministic_and_hashed(tmp_path):
    folder = _corpus(tmp_path)
    a, b = text(path=folder, seq_len=8), text(path=folder, seq_len=8)
    assert torch.equal(a.train.input_ids, b.train.input_ids) and a.val.corpus_sha256 == b.val.corpus_sha256
    (folder / "f04.py").write_bytes(b"changed")
    assert text(path=folder, seq_len=8).val.corpus_sha256 != a.val.corpus_sha256


def test_single_file_keeps_a_tenth_for_validation(tmp_path):
    f = tmp_path / "one.txt"
    f.write_bytes(b"x" * 200)
    s = text(path=f, seq_len=10)
    assert (len(s.train), len(s.val)) == (18, 2)


def test_stdlib_corpus_is_sorted_and_capped():
    files = stdlib_files(max_bytes=30_000, max_file_bytes=10_000)
    assert [p.name for p in files] == sorted(p.name for p in files)
    sizes = [p.stat().st_size for p in files]
    assert max(sizes) <= 10_000 and sum(sizes[:-1]) < 30_000 <= sum(sizes) + 10_000
    s = text(seq_len=32, max_bytes=30_000, max_file_bytes=10_000)
    assert s.train.files + s.val.files and len(s.train) > 0


def test_bad_arguments(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        text(path=tmp_path / "missing")
    with pytest.raises(ValueError, match="seq_len"):
        text(path=tmp_path, seq_len=1)
    with pytest.raises(TypeError, match="tokenizer"):
        text(path=tmp_path, tokenizer=3)
