"""Rules of thumb: batch-size scaling and starting learning rates."""

from __future__ import annotations

import dataclasses
import doctest
import math
from typing import Any, Dict

import pytest

import pylrcore
from pylrcore import StartingLR, scale_lr_for_batch, starting_lr
from pylrcore import rules


def test_linear_rule_is_proportional_to_batch() -> None:
    assert scale_lr_for_batch(0.001, 32, 128) == pytest.approx(0.004, rel=1e-15)
    assert scale_lr_for_batch(0.1, 256, 8192) == pytest.approx(3.2, rel=1e-15)  # Goyal et al.: 0.1 * k/256
    assert scale_lr_for_batch(0.4, 1024, 256) == pytest.approx(0.1, rel=1e-15)
    assert scale_lr_for_batch(0.01, 64, 64) == 0.01


def test_sqrt_rule_and_the_seed_example() -> None:
    # 32 -> 128 (4x): "LR can go from 0.001 to ~0.002-0.004": sqrt gives the low end, linear the high
    assert scale_lr_for_batch(0.001, 32, 128, rule="sqrt") == pytest.approx(0.002, rel=1e-15)
    assert scale_lr_for_batch(1.0, 10, 20, rule="sqrt") == pytest.approx(math.sqrt(2.0), rel=1e-15)
    assert scale_lr_for_batch(1e-3, 100, 25, rule="sqrt") == pytest.approx(5e-4, rel=1e-15)


def test_round_trip_scaling_is_identity() -> None:
    for rule in ("linear", "sqrt"):
        there = scale_lr_for_batch(3e-4, 48, 1000, rule=rule)
        assert scale_lr_for_batch(there, 1000, 48, rule=rule) == pytest.approx(3e-4, rel=1e-14)


@pytest.mark.parametrize(
    "args, kwargs, name, exc",
    [
        ((0.0, 32, 64), {}, "lr", ValueError),
        ((-1e-3, 32, 64), {}, "lr", ValueError),
        ((float("nan"), 32, 64), {}, "lr", ValueError),
        (("0.1", 32, 64), {}, "lr", TypeError),
        ((0.1, 0, 64), {}, "old_batch", ValueError),
        ((0.1, 32, -4), {}, "new_batch", ValueError),
        ((0.1, 32.0, 64), {}, "old_batch", TypeError),
        ((0.1, 32, True), {}, "new_batch", TypeError),
        ((0.1, 32, 64), {"rule": "square"}, "rule", ValueError),
    ],
)
def test_scale_lr_for_batch_errors_name_the_argument(args: Any, kwargs: Dict[str, Any], name: str, exc: type) -> None:
    with pytest.raises(exc, match=name):
        scale_lr_for_batch(*args, **kwargs)


def test_starting_lr_values_follow_the_rules_of_thumb() -> None:
    assert starting_lr("adam").lr == 1e-3
    assert starting_lr("adam", "default").lr == 1e-3
    assert 0.01 <= starting_lr("sgd").lr <= 0.1
    assert 0.01 <= starting_lr("sgd_momentum", "cnn").lr <= 0.1
    t = starting_lr("adamw", "transformer")
    assert 1e-4 <= t.lr <= 5e-4 and "warmup" in t.why
    f = starting_lr("adamw", "fine_tuning")
    assert 1e-5 <= f.lr <= 5e-5 and "1e-3" in f.why  # backbone small, head larger
    assert "adamw" in starting_lr("sgd", "transformer").why.lower()


@pytest.mark.parametrize("optimizer", rules.OPTIMIZERS)
@pytest.mark.parametrize("setting", rules.SETTINGS)
def test_every_combination_has_a_consistent_entry(optimizer: str, setting: str) -> None:
    s = starting_lr(optimizer, setting)
    assert isinstance(s, StartingLR)
    low, high = s.range
    assert 0 < low < s.lr < high and high / low >= 100  # a range test sweeps a few decades around it
    assert s.why
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.lr = 1.0  # type: ignore[misc]


def test_names_are_forgiving_about_case_and_dashes() -> None:
    assert starting_lr("AdamW", "fine-tuning") == starting_lr("adamw", "fine_tuning")
    assert starting_lr("SGD-momentum", "CNN") == starting_lr("sgd_momentum", "cnn")


@pytest.mark.parametrize(
    "args, name",
    [(("adagrad",), "optimizer"), (("adam", "rnn"), "setting"), ((None,), "optimizer"), (("sgd", 3), "setting")],
)
def test_unknown_names_raise_naming_the_argument(args: Any, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        starting_lr(*args)


def test_exported() -> None:
    for name in ("scale_lr_for_batch", "starting_lr", "StartingLR"):
        assert name in pylrcore.__all__ and hasattr(pylrcore, name)


def test_docstring_examples() -> None:
    result = doctest.testmod(rules, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
