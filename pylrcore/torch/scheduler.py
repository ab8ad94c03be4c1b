"""The scheduler: a real ``torch.optim.lr_scheduler.LRScheduler`` driven by a pylrcore
:class:`~pylrcore.schedules.Schedule`, and :func:`attach` for loops that never call ``scheduler.step()``.

>>> import torch
>>> from pylrcore import schedules as S
>>> from pylrcore.torch import Scheduler
>>> model = torch.nn.Linear(4, 1)
>>> opt = torch.optim.SGD([{"params": [model.weight], "lr": 1e-3}, {"params": [model.bias], "lr": 1e-2}])
>>> sched = Scheduler(opt, S.warmup(10) >> S.cosine(90))
>>> for _ in range(10):
...     opt.step(); sched.step()
>>> [round(lr, 6) for lr in sched.get_last_lr()]
[0.001, 0.01]

Each ``step()`` is one native call that evaluates every param group's lr in closed form at the new
step (so resuming from ``state_dict()`` continues the identical trajectory), then one write per
group. A group whose ``lr`` is a 0-d CPU tensor (capturable / fused / compiled optimizers) is updated
in place, keeping the tensor's identity, so ``torch.compile`` does not recompile; other tensors are
filled in place with ``fill_``.

With ``plateau=Plateau(...)`` a per-group scale multiplies the schedule:
``lr_g = max(min_lr_g, schedule_g(t) * scale_g)``. At each reduction the plateau decides, each
group's scale is multiplied by ``factor`` unless that would change its lr by no more than ``eps``
(torch's rule), so with a constant schedule the lrs are exactly ``ReduceLROnPlateau``'s. ``step(metric)`` reports the metric to the plateau and then
advances the schedule (a drop-in for ``ReduceLROnPlateau.step(metric)``); ``report(metric)`` only
reports it (for a per-iteration schedule with a per-epoch metric).
"""

from __future__ import annotations

import warnings
from typing import Any, Dict, List, Optional, Union

import numpy as np
import torch
from torch.optim.lr_scheduler import LRScheduler

from .._checks import MAX_COUNT, check_int, check_positive
from .._native import _core
from ..plateau import Plateau
from ..schedules import Schedule

__all__ = ["Scheduler", "attach"]

# the 0-d lr tensors the core writes in place, by their dtype codes (_core.DType, defined once in C++)
_SCALAR_KINDS = {torch.float32: int(_core.DType.float32), torch.float64: int(_core.DType.float64)}


#: Scheduler.state_dict's keys; "plateau" only with one, "_scales" only in checkpoints from before
#: the plateau owned the per-group scales.
_STATE_KEYS = frozenset({"last_epoch", "_step_count", "_is_initial", "base_lrs", "_lr_factor", "schedule", "plateau", "_scales"})


class Scheduler(LRScheduler):
    """``LRScheduler`` whose lrs come from a pylrcore schedule; per-group base lrs from the optimizer."""

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        schedule: Union[Schedule, str],
        *,
        plateau: Optional[Plateau] = None,
        last_epoch: int = -1,
    ) -> None:
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
        if isinstance(schedule, str):
            schedule = Schedule.parse(schedule)
        if not isinstance(schedule, Schedule):
            raise TypeError(
                f"schedule must be a pylrcore Schedule or its text form, got {type(schedule).__name__}; "
                "build one with pylrcore.schedules (e.g. warmup(500) >> cosine(10000))"
            )
        if plateau is not None and not isinstance(plateau, Plateau):
            raise TypeError(f"plateau must be a pylrcore.Plateau, got {type(plateau).__name__}")
        last_epoch = check_int(last_epoch, "last_epoch", minimum=-1, maximum=MAX_COUNT)
        if last_epoch >= 0 and any("initial_lr" not in g for g in optimizer.param_groups):
            # torch raises a KeyError here; say what resuming needs instead
            raise ValueError(
                f"last_epoch={last_epoch} resumes a schedule, but the optimizer's param groups have no 'initial_lr'; "
                "load the optimizer's state_dict first, or use load_state_dict() on a Scheduler built with last_epoch=-1"
            )
        self.schedule = schedule
        self.plateau = plateau
        self._program = schedule._compile()
        self._values = np.zeros(len(optimizer.param_groups))
        self._lr_factor = 1.0  # scale(): the guard's rescaling, on top of the plateau's per-group scales
        self._hook: Optional[Any] = None
        super().__init__(optimizer, last_epoch)  # sets initial_lr/base_lrs, then the initial step()

    # -- the per-step path --
    def _prepare(self) -> None:
        """Per-group arrays for the native call, rebuilt when the groups change."""
        all_groups = self.optimizer.param_groups
        self._base = np.array([float(b) for b in self.base_lrs], dtype=np.float64)
        bad = ~(np.isfinite(self._base) & (self._base >= 0))
        if bad.any():  # the core would clamp a NaN lr to 0: refuse it instead
            i = int(np.argmax(bad))
            raise ValueError(
                f"the base lr of param group {i} is {float(self._base[i])!r} (optimizer.param_groups[{i}]['lr'] or "
                f"'initial_lr'); set a finite lr >= 0 in the optimizer before creating the Scheduler"
            )
        if len(self._base) > len(all_groups):
            raise ValueError(
                f"the optimizer has {len(all_groups)} param groups but the scheduler knows {len(self._base)} base lrs; "
                "param groups were removed: create a new Scheduler"
            )
        # Groups added after the scheduler (optimizer.add_param_group, e.g. Lightning's
        # BackboneFinetuning) are left alone, as torch's schedulers leave them; a plateau still
        # reduces them (as ReduceLROnPlateau does every group).
        groups = all_groups[:len(self._base)]
        self._group_count = len(all_groups)
        min_lr = 0.0 if self.plateau is None else self.plateau.min_lr
        mins = np.broadcast_to(np.asarray(min_lr, dtype=np.float64), self._base.shape)
        self._min = np.ascontiguousarray(mins)
        self._refresh_scales()
        self._values = np.zeros(len(groups))
        self._momentum: Optional[np.ndarray] = None
        if self._program.cycles_momentum:  # one-cycle / cyclic: momentum or beta1 follows, as in torch
            defaults = self.optimizer.defaults
            if "momentum" not in defaults and "betas" not in defaults:
                raise ValueError(
                    f"the schedule cycles the momentum, but {type(self.optimizer).__name__} has neither 'momentum' "
                    "nor 'betas' (as torch's OneCycleLR/CyclicLR refuse): build it with cycle_momentum=False"
                )
            self._use_beta1 = "betas" in defaults
            self._momentum = np.zeros(len(groups))
            self._scheduled_groups = list(groups)
        self._float_groups: List[int] = []
        self._native: List[int] = []  # tensor groups written by address
        self._native_tensors: List[torch.Tensor] = []
        self._filled: List[int] = []  # other tensors: fill_
        for i, g in enumerate(groups):
            lr = g["lr"]
            if not isinstance(lr, torch.Tensor):
                self._float_groups.append(i)
            elif lr.device.type == "cpu" and lr.dim() == 0 and lr.dtype in _SCALAR_KINDS and not lr.requires_grad:
                self._native.append(i)
                self._native_tensors.append(lr)
            else:
                self._filled.append(i)
        self._float_dicts = [groups[i] for i in self._float_groups]  # zip-able with their values
        self._groups_list = all_groups  # optimizer.load_state_dict() replaces it (and every group dict in it)
        self._all_float = len(self._float_groups) == len(groups)
        self._addresses = [t.data_ptr() for t in self._native_tensors]
        self._kinds = [_SCALAR_KINDS[t.dtype] for t in self._native_tensors]
        self._native_values = np.zeros(len(self._native))

    def _refresh_scales(self) -> None:
        """The per-group multipliers the core applies: the plateau's scales (their only owner) times
        the factor of :meth:`scale`."""
        count = len(self._base)
        scales = self.plateau.scales if self.plateau is not None else [1.0]
        if len(scales) == 1:
            scales = scales * count
        if len(scales) != count:
            raise ValueError(
                f"the plateau scales {len(scales)} param groups but the scheduler drives {count}; "
                "give the Plateau a min_lr list with one entry per scheduled group"
            )
        self._scales = np.asarray(scales, dtype=np.float64) * self._lr_factor

    def _ensure_layout(self) -> None:
        """Per-group arrays up to date with the optimizer's groups (built on first use)."""
        if not hasattr(self, "_base") or self._layout_changed():
            self._prepare()

    def _layout_changed(self) -> bool:
        groups = self.optimizer.param_groups
        if groups is not self._groups_list or len(groups) != self._group_count:
            return True
        for i, t in zip(self._native, self._native_tensors):
            if groups[i]["lr"] is not t:
                return True
        return False

    def _write(self) -> None:
        self._ensure_layout()
        if self._momentum is None:  # the common case: no momentum argument to convert
            self._program.step_values(self.last_epoch, self._base, self._min, self._scales, self._values)
        else:
            self._program.step_values_momentum(self.last_epoch, self._base, self._min, self._scales, self._values,
                                               self._momentum)
            self._write_momentum(self._momentum)
        if self._all_float:  # the common case: one native call evaluates and writes every group
            _core.write_group_lrs(self._float_dicts, self._values)
            return
        values = self._values.tolist()
        groups = self.optimizer.param_groups
        for i in self._float_groups:
            groups[i]["lr"] = values[i]
        if self._native:
            self._native_values[:] = self._values[self._native]
            _core.write_scalars(self._addresses, self._kinds, self._native_values)
        for i in self._filled:
            groups[i]["lr"].fill_(values[i])

    def _write_momentum(self, values: np.ndarray) -> None:
        """torch's OneCycleLR/CyclicLR write: ``betas = (m, beta2)`` or ``momentum = m``; a tensor beta1
        is filled in place (its identity kept, for compiled and capturable optimizers)."""
        if not self._use_beta1:  # SGD-like: every group in one native call (NaN ones left alone)
            _core.write_group_values(self._scheduled_groups, "momentum", values)
            return
        groups = self.optimizer.param_groups
        for g, m in enumerate(values.tolist()):
            if m != m:  # NaN: this part of the schedule leaves the momentum alone
                continue
            group = groups[g]
            if self._use_beta1:
                betas = group["betas"]
                if isinstance(betas[0], torch.Tensor):
                    with torch.no_grad():
                        betas[0].fill_(m)
                else:
                    group["betas"] = (m, *betas[1:])
            else:
                group["momentum"] = m

    def step(self, metrics: Any = None, epoch: Optional[int] = None) -> None:  # type: ignore[override]
        """Advance one step. With ``metrics``, report it to the plateau first (``ReduceLROnPlateau`` style)."""
        if epoch is not None or (metrics is not None and self.plateau is None):
            raise TypeError(
                "step(epoch) is not supported (torch deprecated it): call step() once per step, without arguments"
                + ("; a metric needs plateau=pylrcore.Plateau(...)" if epoch is None else "")
            )
        if metrics is not None:
            self.report(metrics)
        if self._step_count == 1 and not hasattr(self.optimizer.step, "_wrapped_by_lr_sched"):
            warnings.warn(  # torch's checks and wording, so filters written for torch's warnings apply
                "Seems like `optimizer.step()` has been overridden after learning rate scheduler "
                "initialization. Please, make sure to call `optimizer.step()` before "
                "`lr_scheduler.step()`.",
                UserWarning,
                stacklevel=2,
            )
        elif self._step_count == 1 and not getattr(self.optimizer, "_opt_called", False):
            warnings.warn(
                "Detected call of `lr_scheduler.step()` before `optimizer.step()`. "
                "In PyTorch 1.1.0 and later, you should call them in the opposite order: "
                "`optimizer.step()` before `lr_scheduler.step()`.  Failure to do this "
                "will result in PyTorch skipping the first value of the learning rate schedule.",
                UserWarning,
                stacklevel=2,
            )
        if self.last_epoch >= MAX_COUNT:  # the core's steps are int64; stop well before they wrap
            raise OverflowError(f"the schedule is at step {self.last_epoch}, the last one pylrcore counts (2**62)")
        self._step_count += 1
        self.last_epoch += 1
        self._write()

    def report(self, metric: Any) -> bool:
        """Report a metric to the plateau (without advancing the schedule); True if it reduced the lr."""
        if self.plateau is None:
            raise ValueError("this Scheduler has no plateau: pass plateau=pylrcore.Plateau(...) to use metrics")
        self._ensure_layout()
        unscaled = np.zeros_like(self._base)
        self._program.step_values(max(self.last_epoch, 0), self._base, np.zeros_like(self._base),
                                  np.ones_like(self._base) * self._lr_factor, unscaled)
        # The plateau owns the per-group scales and applies torch's eps rule to the lrs they give.
        reduced = self.plateau.step(metric, unscaled.tolist())
        if reduced:
            self._refresh_scales()
            self._write()  # the new scale applies at once, as ReduceLROnPlateau's does
            self._reduce_unscheduled_groups()
        return reduced

    def _reduce_unscheduled_groups(self) -> None:
        """A plateau reduction for groups added after the scheduler: their own lr x factor, not below
        min_lr, unless the change is under eps (ReduceLROnPlateau's rule)."""
        assert self.plateau is not None
        min_lr = self.plateau.min_lr
        for i, group in enumerate(self.optimizer.param_groups[len(self._base):], start=len(self._base)):
            floor = float(min_lr[i]) if isinstance(min_lr, (list, tuple)) and i < len(min_lr) else (
                float(min_lr) if not isinstance(min_lr, (list, tuple)) else 0.0)
            lr = group["lr"]
            old = float(lr) if not isinstance(lr, torch.Tensor) else float(lr.detach())
            new = max(old * self.plateau.factor, floor)
            if old - new > self.plateau.eps:
                if isinstance(lr, torch.Tensor):
                    with torch.no_grad():
                        lr.fill_(new)
                else:
                    group["lr"] = new

    def scale(self, factor: float) -> None:
        """Multiply every group's lr by ``factor`` from now on: the schedule itself is scaled (the
        factor is kept with the plateau's in ``state_dict()``), so the next ``step()`` does not
        overwrite it. Used by the training guard's ``scale_lr`` response."""
        value = check_positive(factor, "factor")
        self._ensure_layout()
        self._lr_factor *= value
        self._refresh_scales()
        self._write()  # applies at once, like a plateau reduction

    def get_lr(self) -> List[Union[float, torch.Tensor]]:  # the LRScheduler contract: lrs at last_epoch
        if not hasattr(self, "_base"):
            self._prepare()
        out = np.zeros_like(self._base)
        self._program.step_values(max(self.last_epoch, 0), self._base, self._min, self._scales, out)
        return [float(v) for v in out]

    def get_last_lr(self) -> List[Union[float, torch.Tensor]]:
        """The lrs of the last step, typed like each group's ``lr`` (tensors are copies)."""
        out: List[Union[float, torch.Tensor]] = []
        for value, group in zip(self._values.tolist(), self.optimizer.param_groups):
            lr = group["lr"]
            out.append(lr.detach().clone() if isinstance(lr, torch.Tensor) else value)
        return out

    @property
    def _last_lr(self) -> List[Union[float, torch.Tensor]]:  # read by torch utilities and Lightning
        return self.get_last_lr()

    @_last_lr.setter
    def _last_lr(self, value: Any) -> None:  # LRScheduler internals may assign it; values live in _values
        pass

    # -- checkpoints --
    def state_dict(self) -> Dict[str, Any]:
        """What resumes this scheduler exactly, as plain values: the step (``last_epoch``, torch's
        ``_step_count`` and ``_is_initial``), the scheduled groups' ``base_lrs``, the factor of
        :meth:`scale` (``_lr_factor``), the schedule (``to_dict``) and, with a plateau, its settings
        and state (the per-group scales among them). Everything else is rebuilt from the optimizer."""
        state: Dict[str, Any] = {
            "last_epoch": self.last_epoch,
            "_step_count": self._step_count,
            "_is_initial": getattr(self, "_is_initial", False),
            "base_lrs": [float(b) for b in self.base_lrs],
            "_lr_factor": float(self._lr_factor),
            "schedule": self.schedule.to_dict(),
        }
        if self.plateau is not None:
            state["plateau"] = {"config": self.plateau.to_dict(), "state": self.plateau.state_dict()}
        return state

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        if not isinstance(state_dict, dict):
            raise TypeError(f"state_dict must be a dict from Scheduler.state_dict(), got {type(state_dict).__name__}")
        unknown = sorted(map(str, set(state_dict) - _STATE_KEYS))
        missing = sorted({"last_epoch", "base_lrs", "schedule"} - set(state_dict))
        if unknown or missing:
            problem = f"unknown keys {unknown}" if unknown else f"missing keys {missing}"
            raise ValueError(f"state_dict has {problem}; pass a dict returned by Scheduler.state_dict()")
        state = dict(state_dict)
        state["last_epoch"] = check_int(state["last_epoch"], "state_dict['last_epoch']", minimum=-1, maximum=MAX_COUNT)
        base = state["base_lrs"]
        # One lr per scheduled group; groups added to the optimizer later are not scheduled (as in torch).
        if not isinstance(base, (list, tuple)) or not 1 <= len(base) <= len(self.optimizer.param_groups):
            raise ValueError(
                f"state_dict['base_lrs'] must be a list with one lr per scheduled param group (1 to "
                f"{len(self.optimizer.param_groups)})"
            )
        state["base_lrs"] = [check_positive(b, f"state_dict['base_lrs'][{i}]", allow_zero=True) for i, b in enumerate(base)]
        saved = state.pop("schedule", None)
        if saved is not None and saved != self.schedule.to_dict():
            # torch adopts whatever the state holds; the state carries the whole schedule, so the
            # saved one replaces this Scheduler's (a schedule with a user function cannot be rebuilt)
            self.schedule = Schedule.from_dict(saved)
            self._program = self.schedule._compile()
            if hasattr(self, "_base"):
                del self._base
        plateau = state.pop("plateau", None)
        # Saved before the plateau owned the per-group scales: they were the plateau's when it had
        # one, else the factor of scale(), the same for every group.
        legacy = state.pop("_scales", None)
        if legacy is not None and plateau is None:
            state["_lr_factor"] = legacy[0]
        if plateau is not None:
            if self.plateau is None:
                self.plateau = Plateau.from_dict(plateau["config"])
            saved_plateau = plateau["state"] if legacy is None else {**plateau["state"], "scales": list(legacy)}
            self.plateau.load_state_dict(saved_plateau)
        state["_lr_factor"] = check_positive(state.get("_lr_factor", 1.0), "state_dict['_lr_factor']")
        self.__dict__.update(state)
        if hasattr(self, "_base"):
            del self._base  # rebuilt from the loaded base_lrs at the next write
        self._write()  # the optimizer gets the lrs of the restored step

    # -- attach --
    def detach(self) -> None:
        """Stop advancing automatically after ``optimizer.step()`` (see :func:`attach`)."""
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
            if getattr(self.optimizer, "_pylrcore_attached", None) is self:
                del self.optimizer._pylrcore_attached


def attach(
    optimizer: torch.optim.Optimizer, schedule: Union[Schedule, str], *, plateau: Optional[Plateau] = None
) -> Scheduler:
    """Drive ``optimizer``'s lrs with ``schedule``, advancing after every ``optimizer.step()``.

    For loops that never call ``scheduler.step()``. Returns the :class:`Scheduler`; ``.detach()``
    stops it. A step that a ``GradScaler`` skips (inf/NaN gradients) never calls ``optimizer.step()``,
    so the schedule does not advance on it.
    """
    current = getattr(optimizer, "_pylrcore_attached", None)
    if current is not None:  # two schedules would both advance and overwrite each other's lrs
        raise ValueError(
            f"a schedule is already attached to this optimizer ({current.schedule!r}); "
            "call .detach() on the Scheduler that attach() returned before attaching another"
        )
    sched = Scheduler(optimizer, schedule, plateau=plateau)
    optimizer._pylrcore_attached = sched  # type: ignore[attr-defined]
    optimizer._opt_called = True  # type: ignore[attr-defined]  # the hook runs after each real step

    def advance(_opt: Any, _args: Any, _kwargs: Any) -> None:
        sched.step()

    sched._hook = optimizer.register_step_post_hook(advance)
    return sched

