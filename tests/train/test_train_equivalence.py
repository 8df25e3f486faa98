"""`kdsl train specs/digits/kd.kd` is, bit for bit, the PyTorch loop one would write by hand.

The loop below is written from the documentation only (kdsl/training/data.py's module docstring for the data
order, optim.py for the per-step cosine schedule, the spec for the loss) and shares no code with
the trainer: if the two disagree in a single bit of a single weight, the test fails.
"""

from __future__ import annotations

import math
import random

import torch
import torch.nn.functional as F

import kdsl.data
import kdsl.zoo
from kdsl.training.data import EpochSampler
from train_helpers import KD_SEED, TEACHER_PT, assert_same_weights, metrics_jsonl, student_weights

BATCH = 64
EPOCHS = 2


def hand_written_kd(seed: int, epochs: int = EPOCHS):
    """Hinton KD of digits_cnn from the shipped digits teacher, as a plain PyTorch loop.
    Returns the student's final state dict and the per-epoch mean (kd, task) terms."""
    random.seed(seed)
    torch.manual_seed(seed)
    student = kdsl.zoo.digits_cnn()  # the spec declares the student first ...
    teacher = kdsl.zoo.digits_teacher()  # ... then the teacher: initialisation draws in that order
    teacher.load_state_dict(torch.load(TEACHER_PT, map_location="cpu", weights_only=True))
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)

    train = kdsl.data.digits().train
    n = len(train)
    steps_per_epoch = math.ceil(n / BATCH)  # the last, smaller batch is kept
    optimizer = torch.optim.SGD(student.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4,
                                nesterov=False)

    def cosine(step: int) -> float:
        t = min(step / steps_per_epoch / epochs, 1.0)
        return 0.5 * (1.0 + math.cos(math.pi * t))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, cosine)
    tau = 4.0
    terms = []
    student.train()
    for epoch in range(epochs):
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch)).tolist()
        kd_sum = task_sum = 0.0
        steps = 0
        for start in range(0, n, BATCH):
            items = [train[i] for i in order[start:start + BATCH]]
            x = torch.stack([image for image, _ in items])
            y = torch.stack([label for _, label in items])
            with torch.no_grad():
                t_logits = teacher(x)
            s_logits = student(x)
            log_p_s = F.log_softmax(s_logits / tau, dim=1)
            log_p_t = F.log_softmax(t_logits / tau, dim=1)
            # KL(p_t || p_s) summed over classes and batch, divided by the batch size ("batchmean")
            kl = tau ** 2 * ((torch.exp(log_p_t) * (log_p_t - log_p_s)).sum() / s_logits.shape[0])
            ce = F.cross_entropy(s_logits, y)
            loss = kl * 0.9 + ce * 0.1
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            kd_sum += (kl * 0.9).item()
            task_sum += (ce * 0.1).item()
            steps += 1
        assert steps == steps_per_epoch
        terms.append((kd_sum / steps, task_sum / steps))
    return student.state_dict(), terms


def test_kd_run_equals_hand_written_loop_bit_for_bit(kd_run):
    expected, terms = hand_written_kd(KD_SEED)
    got = student_weights(kd_run)
    # every tensor, buffers included (BatchNorm running statistics and num_batches_tracked)
    assert_same_weights(got, expected)
    # and the logged loss terms are the same per-epoch means
    rows = metrics_jsonl(kd_run)
    assert [r["epoch"] for r in rows] == [1, 2]
    for row, (kd, task) in zip(rows, terms):
        assert math.isclose(row["train/kd"], kd, rel_tol=1e-9)
        assert math.isclose(row["train/task"], task, rel_tol=1e-9)
        assert math.isclose(row["train_loss"], kd + task, rel_tol=1e-6)
    assert rows[-1]["lr"] == 0.0  # cosine to zero at the end of the last step
    assert rows[0]["lr"] == 0.05 * 0.5 * (1 + math.cos(math.pi * 0.5))


def test_the_seed_matters(kd_run):
    other, _ = hand_written_kd(KD_SEED + 1, epochs=1)
    got = student_weights(kd_run)
    assert not torch.equal(other["conv1.weight"], got["conv1.weight"])


def test_epoch_sampler_is_the_documented_permutation():
    n, seed = 1438, 5
    sampler = EpochSampler(n, seed)
    for epoch in (0, 3):
        sampler.set_epoch(epoch)
        expected = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
        assert list(sampler) == expected.tolist()
        assert len(sampler) == n
    # two ranks: equal shares (padded by wrapping around) that together cover every sample
    shards = [EpochSampler(n + 1, seed, rank=r, world=2) for r in range(2)]
    for s in shards:
        s.set_epoch(1)
    orders = [list(s) for s in shards]
    assert len(orders[0]) == len(orders[1]) == len(shards[0]) == (n + 2) // 2
    assert set(orders[0]) | set(orders[1]) == set(range(n + 1))
    assert len(set(orders[0]) & set(orders[1])) == 1  # the one padded sample
