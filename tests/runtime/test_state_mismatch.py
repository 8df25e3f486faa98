"""`kdsl.io.weights.mismatch_hints`: the one lister of what keeps a state from loading into a
module, worded by its two users (a checkpoint, KD509; `init A from B`, KD518)."""

import torch
from torch import nn

from kdsl.compiler.params import init_problems
from kdsl.io.weights import mismatch_hints

LABELS = ("missing keys: ", "unexpected keys: ", "shape mismatches: ")


def test_each_kind_of_problem_gets_one_hint_in_a_fixed_order():
    want = {"a": torch.zeros(2), "b": torch.zeros(3)}
    have = {"b": torch.zeros(4), "c": torch.zeros(1)}
    assert mismatch_hints(want, have, LABELS, "{key}: checkpoint {have} vs model {want}") == [
        "missing keys: a", "unexpected keys: c", "shape mismatches: b: checkpoint (4,) vs model (3,)"]


def test_a_fitting_state_gives_no_hints():
    state = {"w": torch.zeros(2, 2)}
    assert mismatch_hints(state, dict(state), LABELS, "{key}") == []


def test_long_listings_stop_after_six_keys():
    want = {f"k{i}": torch.zeros(1) for i in range(9)}
    assert mismatch_hints(want, {}, LABELS, "{key}") == ["missing keys: k0, k1, k2, k3, k4, k5 and 3 more"]


def test_init_problems_word_the_same_findings_for_two_modules():
    assert init_problems(nn.Linear(2, 3), nn.Linear(2, 4)) == [
        "shapes differ: weight: (4, 2) into (3, 2), bias: (4,) into (3,)"]
    assert init_problems(nn.Sequential(nn.Linear(2, 2)), nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))) == [
        "the target lacks 1.weight, 1.bias"]
    assert init_problems(nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2)), nn.Sequential(nn.Linear(2, 2))) == [
        "the source lacks 1.weight, 1.bias"]
