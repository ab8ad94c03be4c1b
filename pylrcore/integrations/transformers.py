"""Hugging Face ``transformers``: :class:`GuardCallback` guards every optimizer step of a ``Trainer``,
and :func:`find_lr` runs the LR range test on a Trainer's model and training data.

>>> from pylrcore.integrations.transformers import GuardCallback, find_lr   # doctest: +SKIP
>>> trainer = Trainer(model, args, train_dataset=data, callbacks=[GuardCallback()])  # doctest: +SKIP
>>> find_lr(trainer, apply=True).suggestion   # sets trainer.args.learning_rate      # doctest: +SKIP
>>> trainer.train()                                                                 # doctest: +SKIP

The callback checks each step in ``on_pre_optimizer_step``: after the backward passes and the
Trainer's gradient clipping, before ``optimizer.step()``. The loss is the one the model returns
(``outputs.loss``, read by a forward hook on training forwards), combined over the micro-batches of
an accumulated step as the Trainer combines it for its logged ``loss``. When the model returns no
loss (a ``compute_loss_func``, label smoothing), only the gradients are checked. (Tested on one
process; with several, where the Trainer averages tokens across devices, the loss each rank sees is
its share of the step's, so the guard's recorded losses would be the logged ones / world size; the
checks themselves are relative.)

A step that must not be applied has its gradients cleared, so the Trainer's ``optimizer.step()``
leaves the weights and the optimizer state bitwise unchanged. The Trainer still advances its lr
scheduler and ``global_step`` on that step (it only holds the scheduler back for a GradScaler
overflow), so a skipped step uses up its slot in the schedule.

Events go into ``trainer.state.log_history`` as ``{"guard/<kind>": value, "step": global_step}``
(value = the statistic that crossed its threshold), so they are saved with ``trainer_state.json``.
The Trainer's ``report_to`` loggers run before user callbacks and do not see them; pass
``on_event=`` (for example :class:`pylrcore.integrations.tensorboard.GuardWriter`) to send them
elsewhere too. ``TrainingDiverged`` stops ``train()`` with the diagnosis.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Mapping, Optional

import torch

from . import require

_transformers = require(("transformers",), "transformers", "pylrcore.integrations.transformers")
if not hasattr(_transformers.TrainerCallback, "on_pre_optimizer_step"):  # without it the guard would never run
    raise ImportError(f"pylrcore.integrations.transformers needs transformers>=4.45 (found "
                      f"{_transformers.__version__}); install it with pip install 'pylrcore[transformers]'")

from ..torch.finder import FinderResult, LRFinder  # noqa: E402  (after the framework check: its error names the extra)
from ..torch.guard import Guard, GuardEvent  # noqa: E402

__all__ = ["GuardCallback", "find_lr"]


class GuardCallback(_transformers.TrainerCallback):  # type: ignore[misc,name-defined]
    """Install a :class:`pylrcore.torch.Guard` on the Trainer's optimizer when training begins.

    Keyword arguments go to :class:`~pylrcore.torch.Guard` (policy, thresholds, ...). The Trainer's
    lr scheduler (its own or a pylrcore ``Scheduler`` passed in ``optimizers=``) is scaled by
    ``scale_lr``; accelerate's GradScaler is found too. ``log_events=False`` keeps events out of
    ``state.log_history``; ``on_event`` is called with every :class:`~pylrcore.torch.GuardEvent` as
    well. The guard is ``callback.guard`` once ``train()`` starts (a new one for every ``train()``).
    """

    def __init__(self, *, log_events: bool = True, on_event: Optional[Callable[[GuardEvent], None]] = None,
                 **guard_options: Any) -> None:
        super().__init__()
        for taken in ("scheduler", "scaler"):
            if taken in guard_options:
                raise TypeError(f"GuardCallback finds the Trainer's {taken} itself; do not pass {taken}=")
        self.guard_options = guard_options
        self.log_events = log_events
        self.user_on_event = on_event
        self.guard: Optional[Guard] = None
        self._losses: List[torch.Tensor] = []
        self._loss_is_partial = False  # True when each micro-batch loss is already divided by the step's item count
        self._hook: Any = None
        self._step_log: Dict[str, float] = {}

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, optimizer: Any = None,
                       lr_scheduler: Any = None, **kwargs: Any) -> None:
        if optimizer is None:
            raise ValueError("GuardCallback: the Trainer has no optimizer at on_train_begin")
        wrapped = optimizer
        optimizer = getattr(optimizer, "optimizer", optimizer)  # accelerate's AcceleratedOptimizer keeps it here
        scheduler = getattr(lr_scheduler, "scheduler", lr_scheduler)  # accelerate's AcceleratedScheduler, likewise
        scaler = getattr(wrapped, "scaler", None)
        self.guard = Guard(optimizer, model, scheduler=scheduler, scaler=scaler, on_event=self._on_event,
                           **self.guard_options)
        self._losses.clear()
        self._remove_hook()
        if isinstance(model, torch.nn.Module):
            self._hook = model.register_forward_hook(self._read_loss, with_kwargs=True)

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.guard is None:
            return
        loss = self._step_loss()
        self._step_log = {}
        try:
            self.guard.check(loss)
        except BaseException:
            self._remove_hook()  # train() ends here: no on_train_end will come
            raise
        finally:  # a TrainingDiverged still leaves its events in the log history
            if self._step_log and self.log_events:
                state.log_history.append({**self._step_log, "step": state.global_step})

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._remove_hook()

    # -- the loss ----------------------------------------------------------------------------------
    def _read_loss(self, module: torch.nn.Module, args: Any, kwargs: Dict[str, Any], output: Any) -> None:
        if not (module.training and torch.is_grad_enabled()):  # evaluation and generation forwards
            return
        loss = output.get("loss") if isinstance(output, Mapping) else getattr(output, "loss", None)
        if isinstance(loss, torch.Tensor) and loss.numel() == 1:
            self._losses.append(loss.detach().reshape(()).float())
            # The Trainer passes num_items_in_batch to models that accept it: each micro-batch loss is
            # then a share of the whole step's (they add up); otherwise each is a mean (they average).
            self._loss_is_partial = "num_items_in_batch" in kwargs

    def _step_loss(self) -> Optional[torch.Tensor]:
        losses, self._losses = self._losses, []
        if not losses:
            return None
        stacked = torch.stack(losses)  # one host read for the step, inside guard.check
        return stacked.sum() if self._loss_is_partial else stacked.mean()

    def _remove_hook(self) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None

    def _on_event(self, event: GuardEvent) -> None:
        self._step_log[f"guard/{event.kind}"] = event.value
        if self.user_on_event is not None:
            self.user_on_event(event)


def find_lr(trainer: Any, *, apply: bool = False, **range_test_options: Any) -> FinderResult:
    """Run :meth:`pylrcore.LRFinder.range_test` on ``trainer``'s model and training data.

    Batches come from ``trainer.get_train_dataloader()`` and the loss from ``trainer.compute_loss``
    (so a subclass's loss, label smoothing or ``compute_loss_func`` count). The optimizer is the
    Trainer's own when it was given one, otherwise the one ``trainer.create_optimizer()`` builds from
    ``trainer.args`` (afterwards the Trainer holds none again, as before). The model and optimizer are
    restored bitwise afterwards.

    Options go to ``range_test``; these default from the Trainer's settings: ``accumulation_steps``
    (``args.gradient_accumulation_steps``), ``clip_grad_norm`` (``args.max_grad_norm``, if > 0), and
    ``start_lr`` is 1e-7 rather than the optimizer's lr. ``apply=True`` sets
    ``trainer.args.learning_rate`` to the suggestion, which the optimizer the Trainer creates in
    ``train()`` (and its scheduler) then starts from.
    """
    own_optimizer = getattr(trainer, "optimizer", None)
    if apply and own_optimizer is not None:
        raise ValueError(
            "apply=True sets trainer.args.learning_rate, but this Trainer was given its optimizer (and scheduler), "
            "which would ignore it: build them with lr=result.suggestion instead"
        )
    args = trainer.args
    options: Dict[str, Any] = {"start_lr": 1e-7, "accumulation_steps": args.gradient_accumulation_steps,
                               "progress": False}
    if args.max_grad_norm and args.max_grad_norm > 0:
        options["clip_grad_norm"] = float(args.max_grad_norm)
    options.update(range_test_options)
    options.setdefault("train_step", lambda model, batch: trainer.compute_loss(model, dict(batch)))

    model = trainer.model
    optimizer = own_optimizer if own_optimizer is not None else trainer.create_optimizer()
    try:
        optimizer = getattr(optimizer, "optimizer", optimizer)  # an AcceleratedOptimizer from an earlier train()
        finder = LRFinder(model, optimizer, device=args.device)
        result = finder.range_test(trainer.get_train_dataloader(), **options)
    finally:
        if own_optimizer is None:
            trainer.optimizer = None  # train() creates it again, from the (maybe updated) args
    if apply:
        if result.lr is None:
            raise ValueError(f"the range test found no lr to apply: {result.diagnosis}")
        args.learning_rate = result.lr  # the confirmed lr with confirm=
    return result
