"""Rules of thumb for a first learning rate, before (or instead of) a range test.

These are starting points, not answers: a range test (:mod:`pylrcore.suggestion`) over
:attr:`StartingLR.range` is what settles the value for a given model and data set.

- :func:`scale_lr_for_batch` moves an lr tuned at one batch size to another (linear or square-root rule).
- :func:`starting_lr` gives a typical value for an optimizer and setting, the range to sweep in a
  range test, and why.

>>> scale_lr_for_batch(0.001, 32, 128)            # batch 4x larger: lr 4x (linear rule)
0.004
>>> scale_lr_for_batch(0.001, 32, 128, rule="sqrt")  # or 2x (square-root rule)
0.002
>>> s = starting_lr("adamw", "transformer")
>>> s.lr, s.range
(0.0003, (1e-06, 0.01))
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any, Dict, Tuple

from ._checks import check_int

__all__ = ["scale_lr_for_batch", "starting_lr", "StartingLR", "OPTIMIZERS", "SETTINGS", "BATCH_RULES"]

BATCH_RULES = ("linear", "sqrt")
OPTIMIZERS = ("adam", "adamw", "sgd", "sgd_momentum")
SETTINGS = ("default", "cnn", "transformer", "fine_tuning")


def scale_lr_for_batch(lr: float, old_batch: int, new_batch: int, rule: str = "linear") -> float:
    """The lr for ``new_batch`` given one that worked at ``old_batch``.

    ``rule="linear"``: ``lr * new_batch / old_batch``, the linear scaling rule of Goyal et al.,
    "Accurate, Large Minibatch SGD: Training ImageNet in 1 Hour" (2017, arXiv:1706.02677), for SGD
    with momentum; for large batches they pair it with a gradual warmup over the first epochs.

    ``rule="sqrt"``: ``lr * sqrt(new_batch / old_batch)``, the square-root rule of Krizhevsky,
    "One weird trick for parallelizing convolutional neural networks" (2014, arXiv:1404.5997),
    argued from keeping the variance of the gradient step constant by Hoffer, Hubara and Soudry,
    "Train longer, generalize better" (2017, arXiv:1705.08741). A more cautious choice, often used
    with adaptive optimizers (Adam).

    Both are first guesses that break down at very large batches; confirm with a range test.

    >>> scale_lr_for_batch(0.1, 256, 1024)
    0.4
    >>> round(scale_lr_for_batch(0.1, 256, 64, rule="sqrt"), 12)
    0.05
    """
    if isinstance(lr, bool) or not isinstance(lr, numbers.Real):
        raise TypeError(f"lr must be a positive number (the lr tuned at old_batch), got {lr!r}")
    lr_f = float(lr)
    if not (math.isfinite(lr_f) and lr_f > 0.0):
        raise ValueError(f"lr must be a finite number > 0 (the lr tuned at old_batch), got {lr!r}")
    old = check_int(old_batch, "old_batch", minimum=1, hint="examples per step")
    new = check_int(new_batch, "new_batch", minimum=1, hint="examples per step")
    if rule == "linear":
        return lr_f * new / old
    if rule == "sqrt":
        return lr_f * math.sqrt(new / old)
    raise ValueError(f"rule must be 'linear' (Goyal et al.) or 'sqrt' (Krizhevsky; Hoffer et al.); got {rule!r}")


@dataclass(frozen=True)
class StartingLR:
    """A typical first lr, the ``(low, high)`` range to sweep in a range test, and where it comes from."""

    lr: float
    range: Tuple[float, float]
    why: str


_ADAM = "Adam's usual default of 1e-3 (Kingma & Ba; framework defaults) works out of the box for many problems"
_TRANSFORMER = (
    "transformers are usually trained with AdamW at about 1e-4 to 5e-4 (lower for larger models), "
    "always with a warmup of the first few thousand steps, then a decay"
)
_FINE_TUNE = (
    "fine-tuning a pretrained model uses an lr about 10x-100x below pretraining, typically 1e-5 to 5e-5 for the "
    "pretrained layers (backbone 1e-5), with new layers (the head) at about 1e-3 in their own param group"
)

_TABLE: Dict[Tuple[str, str], StartingLR] = {}


def _add(optimizers: Tuple[str, ...], setting: str, lr: float, low: float, high: float, why: str) -> None:
    for name in optimizers:
        _TABLE[(name, setting)] = StartingLR(lr, (low, high), why)


_add(("adam", "adamw"), "default", 1e-3, 1e-5, 1e-1, _ADAM + "; typical range 1e-4 to 1e-3")
_add(("adam", "adamw"), "cnn", 1e-3, 1e-5, 1e-1, _ADAM + "; CNNs trained with Adam typically use 1e-4 to 1e-3")
_add(("adam", "adamw"), "transformer", 3e-4, 1e-6, 1e-2, _TRANSFORMER)
_add(("adam", "adamw"), "fine_tuning", 2e-5, 1e-7, 1e-3, _FINE_TUNE)
_add(
    ("sgd",), "default", 1e-2, 1e-4, 1.0,
    "plain SGD needs a larger lr than Adam, typically 0.01 to 0.1; 0.01 is the common safe default",
)
_add(
    ("sgd_momentum",), "default", 1e-2, 1e-4, 1.0,
    "SGD with momentum 0.9: typically 0.01 to 0.1; momentum already enlarges the effective step",
)
_add(
    ("sgd", "sgd_momentum"), "cnn", 1e-1, 1e-3, 10.0,
    "CNNs (e.g. ResNets on ImageNet) are classically trained with SGD + momentum 0.9 at 0.1 for batch 256 "
    "(Goyal et al.), scaled with the batch size (scale_lr_for_batch); typical range 0.01 to 0.1",
)
_add(
    ("sgd", "sgd_momentum"), "transformer", 1e-2, 1e-5, 1.0,
    "SGD is a poor fit for transformers, which are trained with AdamW (use starting_lr('adamw', "
    "'transformer')); if SGD it must be, start near 0.01 with warmup and sweep widely",
)
_add(
    ("sgd", "sgd_momentum"), "fine_tuning", 1e-3, 1e-5, 1e-1,
    "fine-tuning uses an lr about 10x below pretraining: 0.001 where SGD pretraining used 0.01 to 0.1; "
    "new layers (the head) can take about 10x more in their own param group",
)


def _name(value: Any, name: str, choices: Tuple[str, ...]) -> str:
    key = value.strip().lower().replace("-", "_").replace(" ", "_") if isinstance(value, str) else value
    if key not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")
    return str(key)


def starting_lr(optimizer: str = "adam", setting: str = "default") -> StartingLR:
    """A typical first lr for ``optimizer`` in ``setting``, with the range to sweep in a range test.

    ``optimizer``: 'adam' | 'adamw' | 'sgd' | 'sgd_momentum'. ``setting``: 'default' | 'cnn' |
    'transformer' | 'fine_tuning'. The values are the common rules of thumb (Adam 1e-3; SGD 0.01 to
    0.1; AdamW 1e-4 to 5e-4 with warmup for transformers; 1e-5 to 5e-5 to fine-tune a pretrained
    model). ``range`` spans a few decades around them, for :func:`pylrcore.suggest` to settle.

    >>> starting_lr("adam").lr
    0.001
    >>> starting_lr("sgd_momentum", "cnn").range
    (0.001, 10.0)
    """
    opt = _name(optimizer, "optimizer", OPTIMIZERS)
    where = _name(setting, "setting", SETTINGS)
    return _TABLE[(opt, where)]
