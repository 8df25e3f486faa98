"""A run records the spec's git commit by reading .git files itself: a FIFO, a device or a huge
file there never blocks or floods it (#26.10: any user can make /tmp/.git/HEAD a FIFO)."""

from __future__ import annotations

import os
import threading

import pytest

from kdsl.training.environment import git_commit

SHA = "0123456789abcdef0123456789abcdef01234567"


def _commit_of(spec) -> dict:
    """git_commit(spec) run in a thread: a blocked read shows as a thread still running."""
    found = {}
    worker = threading.Thread(target=lambda: found.update(result=git_commit(str(spec))), daemon=True)
    worker.start()
    worker.join(60)  # a hang detector, not a performance bound: the read takes microseconds
    assert not worker.is_alive(), "git_commit blocked on a .git file"
    return found["result"]


def _repo(tmp_path):
    git = tmp_path / "repo" / ".git"
    (git / "refs" / "heads").mkdir(parents=True)
    spec = tmp_path / "repo" / "specs" / "kd.kd"
    spec.parent.mkdir()
    spec.write_text("student\n")
    return git, spec


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
@pytest.mark.parametrize("fifo", ["HEAD", "refs/heads/main", "packed-refs"])
def test_a_fifo_in_the_git_folder_never_blocks(tmp_path, fifo):
    git, spec = _repo(tmp_path)
    if fifo != "HEAD":
        (git / "HEAD").write_text("ref: refs/heads/main\n")
    os.mkfifo(git / fifo)
    result = _commit_of(spec)
    assert result is None or result["commit"] is None


def test_packed_refs_past_the_first_4_kb_are_found(tmp_path):
    git, spec = _repo(tmp_path)
    (git / "HEAD").write_text("ref: refs/heads/main\n")
    others = "".join(f"{i:040x} refs/tags/v{i}\n" for i in range(2000))  # ~100 kB
    (git / "packed-refs").write_text("# pack-refs with: peeled\n" + others + f"{SHA} refs/heads/main\n")
    assert _commit_of(spec)["commit"] == SHA


def test_a_device_as_head_is_not_read(tmp_path):
    git, spec = _repo(tmp_path)
    os.symlink("/dev/zero", git / "HEAD")
    assert _commit_of(spec) is None


def test_a_linked_worktree_records_its_own_branch_and_commit(tmp_path):
    """A `git worktree` checkout has a `.git` file pointing at its folder under the main
    repository (HEAD there, refs in the common folder): its commit is recorded too."""
    git, _ = _repo(tmp_path)
    (git / "refs" / "heads" / "feature").write_text(SHA + "\n")
    head_dir = git / "worktrees" / "wt"
    head_dir.mkdir(parents=True)
    (head_dir / "HEAD").write_text("ref: refs/heads/feature\n")
    (head_dir / "commondir").write_text("../..\n")
    tree = tmp_path / "wt"
    tree.mkdir()
    (tree / ".git").write_text(f"gitdir: {head_dir}\n")
    spec = tree / "kd.kd"
    spec.write_text("student\n")
    assert _commit_of(spec) == {"commit": SHA, "branch": "feature", "root": str(tree)}


def test_a_git_file_that_points_nowhere_records_nothing(tmp_path):
    (tmp_path / ".git").write_text("gitdir: /no/such/folder\n")
    spec = tmp_path / "kd.kd"
    spec.write_text("student\n")
    assert _commit_of(spec) is None
