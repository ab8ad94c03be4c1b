"""The PyTorch tier: everything in pylrcore that touches a model, an optimizer or a tensor.

The modules one level up are framework-free (numpy in, numpy out); the ones here drive them from a
training loop:

- :mod:`~pylrcore.torch.finder`: :class:`LRFinder`, the LR range test (sweep, suggest, restore);
- :mod:`~pylrcore.torch.parallel_sweep`: :func:`sweep`, K learning rates trained in one batched pass;
- :mod:`~pylrcore.torch.scheduler`: :class:`Scheduler`, a ``torch.optim`` scheduler driven by a
  pylrcore schedule, and :func:`attach`;
- :mod:`~pylrcore.torch.guard`: :class:`Guard`, the per-step NaN / explosion guard;
- :mod:`~pylrcore.torch.cuda`: the same checks and loss tracking on the GPU, without host syncs.

``pylrcore.LRFinder``, ``pylrcore.Guard``, ``pylrcore.Scheduler`` and ``pylrcore.sweep`` are these
same objects, imported lazily so that ``import pylrcore`` does not import torch.
"""

from typing import TYPE_CHECKING, List

if TYPE_CHECKING:
    from .finder import FinderResult, LRFinder, SweepEvent
    from .guard import Guard, GuardEvent, TrainingDiverged
    from .parallel_sweep import SweepResult, sweep
    from .scheduler import Scheduler, attach

# Each name's module, imported on first use: ``import pylrcore.torch.cuda`` (which works on raw
# device pointers) must not import torch, and ``pylrcore.torch`` need not load the finder to give
# the guard.
_HOMES = {
    "LRFinder": "finder", "FinderResult": "finder", "SweepEvent": "finder",
    "Guard": "guard", "GuardEvent": "guard", "TrainingDiverged": "guard",
    "sweep": "parallel_sweep", "SweepResult": "parallel_sweep",
    "Scheduler": "scheduler", "attach": "scheduler",
}


def __getattr__(name: str) -> object:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'pylrcore.torch' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"{__name__}.{home}"), name)


def __dir__() -> List[str]:
    return sorted(set(globals()) | set(_HOMES))


__all__ = [
    "LRFinder",
    "FinderResult",
    "SweepEvent",
    "sweep",
    "SweepResult",
    "Scheduler",
    "attach",
    "Guard",
    "GuardEvent",
    "TrainingDiverged",
]
