"""Lightning: :class:`GuardCallback` guards every optimizer step of a ``Trainer``.

>>> from pylrcore.integrations.lightning import GuardCallback        # doctest: +SKIP
>>> trainer = Trainer(callbacks=[GuardCallback(policy={"loss_spike": "skip"})])  # doctest: +SKIP

The callback reads each loss in ``on_before_backward`` (the mean over the micro-batches of an
accumulated step) and checks the gradients in ``on_before_optimizer_step``: after the backward
pass and, with a GradScaler (``precision="16-mixed"``), after Lightning has unscaled them. A step
that must not be applied has its gradients cleared, so Lightning's ``optimizer.step()`` changes
nothing. Events go to the Trainer's loggers as ``guard/<kind>`` metrics (value = the statistic
that crossed its threshold), and ``TrainingDiverged`` stops ``fit`` with the diagnosis.

Works with ``lightning.pytorch`` or ``pytorch_lightning``, whichever is installed.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import torch

from . import require

_pl = require(("lightning.pytorch", "pytorch_lightning"), "lightning", "pylrcore.integrations.lightning")

from ..guard import Guard, GuardEvent  # noqa: E402  (after the framework check: its error names the extra)

__all__ = ["GuardCallback"]


class GuardCallback(_pl.Callback):  # type: ignore[misc,name-defined]
    """Install a :class:`pylrcore.torch.Guard` on the Trainer's first optimizer.

    Keyword arguments go to :class:`~pylrcore.torch.Guard` (policy, thresholds, ...). A pylrcore
    ``Scheduler`` returned from ``configure_optimizers`` is found and scaled by ``scale_lr``; the
    precision plugin's GradScaler is found too. ``log_events=False`` keeps events out of the loggers.
    The guard is ``callback.guard`` after ``fit`` starts.
    """

    def __init__(self, *, log_events: bool = True, **guard_options: Any) -> None:
        super().__init__()
        for taken in ("scheduler", "scaler", "on_event"):
            if taken in guard_options:
                raise TypeError(f"GuardCallback finds {taken} itself; do not pass {taken}=")
        self.guard_options = guard_options
        self.log_events = log_events
        self.guard: Optional[Guard] = None
        self._losses: List[float] = []
        self._trainer: Any = None
        self._pending_state: Optional[Dict[str, Any]] = None  # from a checkpoint, loaded before fit starts

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        if not trainer.optimizers:
            raise ValueError("GuardCallback: the Trainer has no optimizer (configure_optimizers returned none)")
        optimizer = trainer.optimizers[0]
        optimizer = getattr(optimizer, "optimizer", optimizer)  # Lightning's wrappers keep the real one here
        scheduler = None
        for config in getattr(trainer, "lr_scheduler_configs", []) or []:
            if getattr(config.scheduler, "optimizer", None) is optimizer:
                scheduler = config.scheduler
                break
        scaler = getattr(trainer.precision_plugin, "scaler", None)
        self._trainer = trainer
        self.guard = Guard(optimizer, pl_module, scheduler=scheduler, scaler=scaler, on_event=self._on_event,
                           **self.guard_options)
        if self._pending_state:
            self.guard.load_state_dict(self._pending_state)
            self._pending_state = None

    def on_before_backward(self, trainer: Any, pl_module: Any, loss: torch.Tensor) -> None:
        self._losses.append(float(loss.detach().item()))

    def on_before_optimizer_step(self, trainer: Any, pl_module: Any, optimizer: Any) -> None:
        if self.guard is None:
            return
        losses, self._losses = self._losses, []
        loss = sum(losses) / len(losses) if losses else None
        self.guard.check(loss)

    def _on_event(self, event: GuardEvent) -> None:
        trainer = self._trainer
        if not self.log_events or trainer is None:
            return
        metrics: Dict[str, float] = {f"guard/{event.kind}": event.value}
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)

    def state_dict(self) -> Dict[str, Any]:
        return {} if self.guard is None else self.guard.state_dict()

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        if self.guard is not None and state_dict:
            self.guard.load_state_dict(state_dict)
        else:
            self._pending_state = dict(state_dict)
