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

from .finder import FinderResult, LRFinder, SweepEvent
from .guard import Guard, GuardEvent, TrainingDiverged
from .parallel_sweep import SweepResult, sweep
from .scheduler import Scheduler, attach

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
