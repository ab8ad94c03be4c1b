"""Lightning: :class:`FinderCallback` runs pylrcore's LR range test inside ``fit`` and applies the
suggestion; :class:`GuardCallback` guards every optimizer step of a ``Trainer``.

>>> trainer = Trainer(callbacks=[FinderCallback(end_lr=1.0, num_iter=100)])  # doctest: +SKIP

Unlike Lightning's own ``LearningRateFinder``, the range test uses correct bias correction, stops
on NaN, restores the model, optimizer and RNG exactly, and records a full curve also when it runs
mid-training (``milestones=(3,)``: at the start of epoch 3; Lightning's records nothing once
``global_step > 0``).

>>> from pylrcore.integrations.lightning import GuardCallback        # doctest: +SKIP
>>> trainer = Trainer(callbacks=[GuardCallback(policy={"loss_spike": "skip"})])  # doctest: +SKIP

The callback reads each loss in ``on_before_backward`` (for an accumulated step, the mean over its
micro-batches) and checks the gradients in ``on_before_optimizer_step``: after the backward
pass and, with a GradScaler (``precision="16-mixed"``), after Lightning has unscaled them. A step
that must not be applied has its gradients cleared, so Lightning's ``optimizer.step()`` changes
nothing. Events go to the Trainer's loggers as ``guard/<kind>`` metrics (value = the statistic
that crossed its threshold), and ``TrainingDiverged`` stops ``fit`` with the diagnosis.

Works with ``lightning.pytorch`` or ``pytorch_lightning``, whichever is installed.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch

from . import require

_pl = require(("lightning.pytorch", "pytorch_lightning"), "lightning", "pylrcore.integrations.lightning")

from ..torch.guard import Guard, GuardEvent  # noqa: E402
from ..suggestion import DIVERGE_FACTOR  # noqa: E402  (after the framework check: its error names the extra)

__all__ = ["GuardCallback", "FinderCallback", "LightningFinderView"]


class FinderCallback(_pl.Callback):  # type: ignore[misc,name-defined]
    """Run a range test at the start of training (``milestones=(0,)``) and/or at the start of the
    given epochs, on the Trainer's model, first optimizer and training data, through the module's
    own ``training_step``; then apply the suggestion.

    Lightning's ``LearningRateFinder`` arguments are accepted with their meaning: ``min_lr`` /
    ``max_lr`` (the sweep's range; pylrcore's own names ``start_lr`` / ``end_lr`` too),
    ``num_training_steps`` (``num_iter``), ``mode`` (``"exponential"`` or ``"linear"``),
    ``early_stop_threshold`` (stop when the smoothed loss passes this x its best; ``None`` never
    stops early), ``update_attr`` (``apply``) and ``attr_name`` (the module attribute or ``hparams``
    entry to set; ``""`` finds ``lr`` or ``learning_rate``). The early stop defaults to 4x, as
    Lightning's; the range to pylrcore's (from the optimizer's lr to 10): pass ``min_lr=1e-8, max_lr=1``
    for Lightning's. ``callback.optimal_lr`` has Lightning's ``results``, ``suggestion()`` and
    ``plot()``; every run's full :class:`~pylrcore.FinderResult` is in ``callback.results``.

    Applying sets the optimizer's lr (group ratios kept), scales the ``base_lrs`` of the optimizer's
    lr schedulers (a pylrcore ``Scheduler`` rescales its schedule) and sets the module's attribute.
    The curve figure goes to a TensorBoard logger (``add_figure``) or to
    ``<log_dir>/lr_finder_<step>.png``; the suggestion is logged as ``lr_finder/suggestion``.
    ``Trainer(accumulate_grad_batches=k)`` gives one point per optimizer step (k micro-batches); a
    ``training_step`` that returns None skips its batch, as in training. Manual optimization and
    several optimizers are refused with a clear error.

    Other keyword arguments go to :meth:`pylrcore.LRFinder.range_test` (``method``, ``smooth_f``,
    ...). ``self.log`` calls inside ``training_step`` are silenced during the test.
    """

    SUPPORTED_MODES = ("linear", "exponential")

    def __init__(self, min_lr: Optional[float] = None, max_lr: Optional[float] = None,
                 num_training_steps: Optional[int] = None, mode: str = "exponential",
                 early_stop_threshold: Optional[float] = DIVERGE_FACTOR, update_attr: bool = True, attr_name: str = "", *,
                 milestones: Tuple[int, ...] = (0,), apply: Optional[bool] = None, plot: bool = True,
                 **range_test_options: Any) -> None:
        super().__init__()
        if not milestones or any(isinstance(m, bool) or not isinstance(m, int) or m < 0 for m in milestones):
            raise ValueError(f"milestones must be epochs (integers >= 0), got {milestones!r}")
        if not isinstance(mode, str) or mode.lower() not in self.SUPPORTED_MODES:
            raise ValueError(f"`mode` should be either of {self.SUPPORTED_MODES}, got {mode!r}")
        if not isinstance(attr_name, str):
            raise TypeError(f"attr_name must be a string (the module attribute to set), got {attr_name!r}")
        options = dict(range_test_options)
        for lightning_name, ours, value in (("min_lr", "start_lr", min_lr), ("max_lr", "end_lr", max_lr),
                                            ("num_training_steps", "num_iter", num_training_steps)):
            if value is not None:
                if ours in options:
                    raise TypeError(f"pass {lightning_name}= or {ours}=, not both")
                options[ours] = value
        if "step_mode" not in options:
            options["step_mode"] = "exp" if mode.lower() == "exponential" else "linear"
        if "diverge_th" not in options:
            options["diverge_th"] = math.inf if early_stop_threshold is None else early_stop_threshold
        options.setdefault("progress", False)
        self.milestones = tuple(sorted(set(milestones)))
        self.apply = update_attr if apply is None else apply
        self.attr_name = attr_name
        self.plot = plot
        self.options = options
        self.results: List[Any] = []
        #: Lightning's view of the last run: ``.results``, ``.suggestion()``, ``.plot()``.
        self.optimal_lr: Optional[LightningFinderView] = None

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        if 0 in self.milestones and trainer.current_epoch == 0:
            self._run(trainer, pl_module)

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        epoch = trainer.current_epoch
        if epoch > 0 and epoch in self.milestones:
            self._run(trainer, pl_module)

    def _run(self, trainer: Any, pl_module: Any) -> None:
        from ..torch.finder import LRFinder

        if not getattr(pl_module, "automatic_optimization", True):
            raise ValueError("FinderCallback runs the range test through training_step with automatic optimization; "
                             "this module uses manual optimization: run pylrcore.LRFinder with train_step= yourself")
        if len(trainer.optimizers) > 1:
            raise ValueError(f"FinderCallback supports one optimizer; configure_optimizers returned "
                             f"{len(trainer.optimizers)} (run pylrcore.LRFinder on the one to tune)")
        optimizer = _real_optimizer(trainer.optimizers[0]) if trainer.optimizers else None
        if optimizer is None:
            raise ValueError("FinderCallback: the Trainer has no optimizer (configure_optimizers returned none)")
        loader = trainer.train_dataloader
        if isinstance(loader, (list, tuple, dict)):
            raise ValueError("FinderCallback: the range test needs one training dataloader, got several")
        if self.attr_name and not _has_attr(pl_module, self.attr_name):
            raise AttributeError(f"FinderCallback: attr_name={self.attr_name!r} is neither an attribute of the module "
                                 "nor an entry of its hparams")
        counter = [0]
        spare: List[Any] = []  # batches to use when training_step skips one (returns None)

        def train_step(model: Any, batch: Any) -> torch.Tensor:
            for _ in range(_MAX_SKIPPED):
                out = pl_module.training_step(pl_module._apply_batch_transfer_handler(batch), counter[0])
                counter[0] += 1
                if out is not None:
                    break
                if not spare:
                    spare.append(_batches(loader))
                batch = next(spare[0])
            else:
                raise ValueError(f"FinderCallback: training_step returned None for {_MAX_SKIPPED} batches in a row")
            loss = out["loss"] if isinstance(out, dict) else out
            if not isinstance(loss, torch.Tensor):
                raise ValueError("FinderCallback: training_step must return the loss (a tensor or a dict with 'loss')")
            return loss

        options = dict(self.options)
        options.setdefault("accumulation_steps", int(getattr(trainer, "accumulate_grad_batches", 1) or 1))
        with _silenced_logging(pl_module):
            result = LRFinder(pl_module, optimizer).range_test(loader, train_step=train_step, **options)
        self.results.append(result)
        self.optimal_lr = LightningFinderView(result, options.get("step_mode", "exp"))
        step = trainer.global_step
        if result.suggestion is not None:
            for logger in trainer.loggers:
                logger.log_metrics({"lr_finder/suggestion": float(result.suggestion)}, step=step)
            if self.apply:
                self._apply(trainer, pl_module, optimizer, result)
        if self.plot and trainer.is_global_zero:
            self._plot(trainer, result, step)

    def _apply(self, trainer: Any, pl_module: Any, optimizer: torch.optim.Optimizer, result: Any) -> None:
        groups = optimizer.param_groups
        before = [float(g["lr"]) for g in groups]
        result.apply(optimizer)  # the suggestion on group 0, the groups' ratios kept
        schedulers = [s for s in _schedulers_of(trainer, optimizer) if hasattr(s, "base_lrs")]
        for sched in schedulers:
            # A schedule multiplies its base lr: the suggestion (a constant-lr measurement) replaces the
            # base, and the current lr keeps the schedule's factor at this step (warmup included).
            factor = result.lr / float(sched.base_lrs[0])
            sched.base_lrs = [float(b) * factor for b in sched.base_lrs]
            for group, base, lr in zip(groups, sched.base_lrs, before):
                group["initial_lr"] = base
                if isinstance(group["lr"], torch.Tensor):
                    with torch.no_grad():
                        group["lr"].fill_(lr * factor)
                else:
                    group["lr"] = lr * factor
            if hasattr(sched, "schedule"):  # pylrcore Scheduler: rebuild its per-group arrays, write now
                sched.load_state_dict(sched.state_dict())
        value = float(result.lr)  # the suggestion, or the confirmed lr with confirm=
        for name in (self.attr_name,) if self.attr_name else ("lr", "learning_rate"):
            if hasattr(pl_module, name) and (self.attr_name or isinstance(getattr(pl_module, name), (int, float))):
                setattr(pl_module, name, value)
            hparams = getattr(pl_module, "hparams", None)
            if hparams is not None and name in hparams:
                hparams[name] = value

    def _plot(self, trainer: Any, result: Any, step: int) -> None:
        try:
            import matplotlib

            matplotlib.use("Agg", force=False)
        except ImportError:
            return  # plotting is optional (pip install 'pylrcore[plot]')
        import os

        import matplotlib.pyplot as plt

        ax = result.plot()
        figure = ax.figure
        experiment = getattr(trainer.logger, "experiment", None)
        if experiment is not None and hasattr(experiment, "add_figure"):
            experiment.add_figure("lr_finder", figure, global_step=step)
        else:
            folder = trainer.log_dir or trainer.default_root_dir
            os.makedirs(folder, exist_ok=True)
            figure.savefig(os.path.join(folder, f"lr_finder_{step}.png"), dpi=100)
        plt.close(figure)


# A training_step that skips this many batches in a row is not going to return a loss.
_MAX_SKIPPED = 1000


def _batches(loader: Any) -> Any:
    while True:
        yield from loader


def _has_attr(module: Any, name: str) -> bool:
    hparams = getattr(module, "hparams", None)
    return hasattr(module, name) or (hparams is not None and name in hparams)


class LightningFinderView:
    """Lightning's ``_LRFinder`` surface over a pylrcore result: ``results`` (``{"lr": [...], "loss":
    [...]}`` with the loss smoothed as Lightning smooths it), ``suggestion(skip_begin, skip_end)``
    (Lightning's own rule, exactly) and ``plot(suggest, show, ax)``."""

    def __init__(self, result: Any, step_mode: str) -> None:
        from ..smoothing import ema

        self.result = result
        self.mode = "exponential" if step_mode == "exp" else "linear"
        losses = np.asarray(result.losses, dtype=np.float64)
        self.results: Dict[str, Any] = {"lr": result.lrs.tolist(),
                                        "loss": ema(losses, 0.98, kind="lightning").tolist() if losses.size else []}
        self._optimal_idx: Optional[int] = None

    def suggestion(self, skip_begin: int = 10, skip_end: int = 1) -> Optional[float]:
        from ..suggestion import suggest

        lrs, losses = self.results["lr"], self.results["loss"]
        if len(lrs) < 2:
            return None
        found = suggest(lrs, losses, "lightning", skip_start=skip_begin, skip_end=skip_end)
        self._optimal_idx = found.index
        return found.lr

    def plot(self, suggest: bool = False, show: bool = False, ax: Any = None) -> Any:
        import matplotlib.pyplot as plt

        lrs, losses = self.results["lr"], self.results["loss"]
        fig = None
        if ax is None:
            fig, ax = plt.subplots()
        else:
            fig = ax.figure
        ax.plot(lrs, losses)
        if self.mode == "exponential":
            ax.set_xscale("log")
        ax.set_xlabel("Learning rate")
        ax.set_ylabel("Loss")
        if suggest:
            lr = self.suggestion()
            if lr is not None and self._optimal_idx is not None:
                ax.plot(lrs[self._optimal_idx], losses[self._optimal_idx], markersize=10, marker="o", color="red")
        if show:
            plt.show()
        return fig


class _silenced_logging:
    """Turn the module's self.log/self.log_dict into no-ops while the range test calls training_step."""

    def __init__(self, module: Any) -> None:
        self.module = module

    def __enter__(self) -> None:
        self.saved = {name: self.module.__dict__.get(name) for name in ("log", "log_dict")}
        self.module.log = lambda *a, **k: None
        self.module.log_dict = lambda *a, **k: None

    def __exit__(self, *exc: Any) -> None:
        for name, value in self.saved.items():
            if value is None:
                self.module.__dict__.pop(name, None)
            else:
                self.module.__dict__[name] = value


def _schedulers_of(trainer: Any, optimizer: Any) -> List[Any]:
    """The lr schedulers configured for ``optimizer`` (configure_optimizers' order)."""
    configs = getattr(trainer, "lr_scheduler_configs", None) or []
    return [c.scheduler for c in configs if getattr(c.scheduler, "optimizer", None) is optimizer]


def _real_optimizer(optimizer: Any) -> Any:
    return getattr(optimizer, "optimizer", optimizer)  # Lightning's wrappers keep the real one here


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
        optimizer = _real_optimizer(trainer.optimizers[0])
        scheduler = next(iter(_schedulers_of(trainer, optimizer)), None)
        scaler = getattr(trainer.precision_plugin, "scaler", None)
        self._trainer = trainer
        self.guard = Guard(optimizer, pl_module, scheduler=scheduler, scaler=scaler,
                           on_event=self._on_event if self.log_events else None, **self.guard_options)
        if self._pending_state:
            self.guard.load_state_dict(self._pending_state)
            self._pending_state = None

    def on_before_backward(self, trainer: Any, pl_module: Any, loss: torch.Tensor) -> None:
        self._losses.append(loss.item())

    def on_before_optimizer_step(self, trainer: Any, pl_module: Any, optimizer: Any) -> None:
        if self.guard is None:
            return
        # Lightning divides each micro-batch loss by accumulate_grad_batches before backward: their
        # sum is the step's loss (the mean over its micro-batches, the value Lightning logs).
        losses, self._losses = self._losses, []
        loss = sum(losses) if losses else None
        self.guard.check(loss)

    def _on_event(self, event: GuardEvent) -> None:
        trainer = self._trainer
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
