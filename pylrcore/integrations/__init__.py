"""Integrations with the frameworks people train in. Each module imports its framework only when
it is imported itself (``import pylrcore`` never does), and names the extra to install when the
framework is missing:

* :mod:`pylrcore.integrations.lightning`: callbacks for a Lightning ``Trainer`` (``pip install pylrcore[lightning]``);
* :mod:`pylrcore.integrations.transformers`: a guard ``TrainerCallback`` and ``find_lr(trainer)``
  for the Hugging Face Trainer (``pip install pylrcore[transformers]``);
* :mod:`pylrcore.integrations.optuna`: ``suggest_lr(trial, ...)`` and a ``DivergencePruner``
  (``pip install pylrcore[optuna]``);
* :mod:`pylrcore.integrations.keras`: range test, schedules and a guard callback for Keras 3
  (``pip install pylrcore[keras]``);
* :mod:`pylrcore.integrations.ray`: ``suggest_lr``, ``report`` and a ``DivergenceStopper`` for Ray
  Tune trials (``pip install pylrcore[ray]``);
* :mod:`pylrcore.integrations.tensorboard`: guard events and range-test curves into a
  ``SummaryWriter`` (``pip install pylrcore[tensorboard]``).

:func:`event_logger` and :func:`log_range_test` pick TensorBoard when given a writer and plain
:mod:`logging` otherwise, so a script can log the same way with or without tensorboard installed.
"""

from __future__ import annotations

import importlib
import logging
from types import ModuleType
from typing import Any, Callable, Optional, Tuple

_log = logging.getLogger("pylrcore")


def require(modules: Tuple[str, ...], extra: str, what: str) -> ModuleType:
    """The first of ``modules`` that imports, or ImportError naming the pip extra that provides it."""
    for name in modules:
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    raise ImportError(
        f"{what} needs {' or '.join(modules)}, which is not installed; install it with "
        f"pip install 'pylrcore[{extra}]'"
    )


def event_logger(writer: Any = None, logger: Optional[logging.Logger] = None) -> Callable[[Any], None]:
    """An ``on_event`` callable for :class:`pylrcore.torch.Guard`: a TensorBoard ``GuardWriter`` when
    ``writer`` (a SummaryWriter) is given, else one WARNING line per event on ``logger``
    (default ``logging.getLogger("pylrcore")``)."""
    if writer is not None:
        from .tensorboard import GuardWriter

        return GuardWriter(writer)
    from ..torch.guard import describe_event

    target = logger or _log

    def log_event(event: Any) -> None:
        target.warning("guard step %d: %s, lr %.3g -> %s", event.step, describe_event(event), event.lr, event.action)

    return log_event


def log_range_test(result: Any, writer: Any = None, logger: Optional[logging.Logger] = None, **options: Any) -> None:
    """Report a :class:`~pylrcore.FinderResult` to TensorBoard (``writer``) or, without one, as an
    INFO line on ``logger``."""
    if writer is not None:
        from .tensorboard import log_range_test as to_tensorboard

        to_tensorboard(writer, result, **options)
        return
    (logger or _log).info("range test: %s%s", result.details, f"; {result.diagnosis}" if result.diagnosis else "")
