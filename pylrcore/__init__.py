"""pylrcore: the learning-rate toolkit on a compiled C++ core.

Loss-curve tools: EMA smoothing (:mod:`pylrcore.smoothing`), LR suggestion and usable range from a
range-test curve (:mod:`pylrcore.suggestion`), streaming detection (:mod:`pylrcore.detect`), diagnosis
of a training loss history (:mod:`pylrcore.diagnosis`), and a one-pass non-finite scan of many buffers
(:mod:`pylrcore.nonfinite`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .smoothing import EMA, ema
from .suggestion import COMPAT_METHODS, DEFAULT_METHOD, DIVERGE_FACTOR, METHODS, Suggestion, gradient, suggest
from .detect import Detector, Event, Flag
from .diagnosis import Diagnosis, Finding, Symptom, diagnose
from .nonfinite import ScanResult, all_finite, scan
from . import schedules
from .schedules import Schedule
from .plateau import Plateau
from .rules import StartingLR, scale_lr_for_batch, starting_lr

__version__ = "0.1.0"

if TYPE_CHECKING:  # the lazy names below, for type checkers (importing them imports torch)
    from .torch.finder import FinderResult, LRFinder, SweepEvent
    from .torch.guard import Guard
    from .torch.parallel_sweep import SweepResult, sweep
    from .torch.scheduler import Scheduler


_TORCH_NAMES = frozenset(
    ["LRFinder", "FinderResult", "SweepEvent", "sweep", "SweepResult", "Guard", "Scheduler"]
)


def __getattr__(name: str) -> object:
    # The torch glue needs torch; ``import pylrcore`` must not import it.
    if name in _TORCH_NAMES:
        from . import torch as torch_glue

        return getattr(torch_glue, name)
    raise AttributeError(f"module 'pylrcore' has no attribute {name!r}")

__all__ = [
    "EMA",
    "ema",
    "suggest",
    "Suggestion",
    "gradient",
    "METHODS",
    "DEFAULT_METHOD",
    "COMPAT_METHODS",
    "DIVERGE_FACTOR",
    "Detector",
    "Event",
    "Flag",
    "diagnose",
    "Diagnosis",
    "Finding",
    "Symptom",
    "ScanResult",
    "all_finite",
    "scan",
    "schedules",
    "Schedule",
    "Plateau",
    "scale_lr_for_batch",
    "starting_lr",
    "StartingLR",
    "LRFinder",
    "FinderResult",
    "SweepEvent",
    "sweep",
    "SweepResult",
    "Guard",
    "Scheduler",
]
