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
    from .finder import FinderResult, LRFinder, SweepEvent
    from .guard import Guard
    from .parallel_sweep import SweepResult, sweep
    from .torch import Scheduler


def __getattr__(name: str) -> object:
    # The finder needs torch; ``import pylrcore`` must not import it.
    if name in ("LRFinder", "FinderResult", "SweepEvent"):
        from . import finder

        return getattr(finder, name)
    if name in ("sweep", "SweepResult"):
        from . import parallel_sweep

        return getattr(parallel_sweep, name)
    if name == "Guard":
        from . import guard

        return guard.Guard
    if name == "Scheduler":
        from . import torch as torch_glue

        return torch_glue.Scheduler
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
