"""Reduce-on-plateau: the decisions of ``torch.optim.lr_scheduler.ReduceLROnPlateau``, on the compiled core.

:class:`Plateau` is fed one metric per epoch (``step(metric)``) and answers whether the learning
rate was reduced at that step. The rules are torch's (2.13), in torch's order:

- *better*: ``a < best*(1-threshold)`` (min, rel), ``a < best-threshold`` (min, abs),
  ``a > best*(1+threshold)`` (max, rel), ``a > best+threshold`` (max, abs); ``best`` starts at
  ``+inf`` (min) or ``-inf`` (max). A better metric becomes ``best`` and clears the bad-epoch count;
  any other metric adds a bad epoch. **A NaN metric is never better** (all comparisons with NaN are
  false), so it counts as a bad epoch, as in torch.
- during cooldown the counter goes down by one and the bad-epoch count is cleared;
- when the bad-epoch count exceeds ``patience``: a reduction, then ``cooldown`` starts and the count is cleared.

A reduction can be used in two ways:

(a) **alone, as torch does it**: :meth:`Plateau.lrs` tracks each group's lr from its base lr; at a
    reduction ``new = max(old*factor, min_lr_g)``, applied only if ``old - new > eps``.
(b) **as a multiplier on another schedule**: each group's scale (:attr:`Plateau.scales`) starts at 1
    and is multiplied by ``factor`` at a reduction; the lr of group ``g`` at step ``t`` is
    ``lr_g = max(schedule_g(t) * scale_g, min_lr_g)`` (:meth:`Plateau.scaled_lrs`). Pass the
    schedule's current lrs to ``step(metric, schedule_lrs)`` and torch's eps rule applies to each
    group's lr: a group whose lr would change by no more than ``eps`` keeps its scale. These are the
    only per-group lr scales in pylrcore; :class:`pylrcore.Scheduler` reads them.

>>> p = Plateau(patience=1, factor=0.5)
>>> [p.step(m) for m in [3.0, 3.0, 3.0, 2.0]]
[False, False, True, False]
>>> p.lrs([0.1, 0.02]), p.scale
([0.05, 0.01], 0.5)
>>> p.scaled_lrs([1.0, 0.2])
[0.5, 0.1]
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Dict, List, Optional, Sequence, Union

from ._checks import MAX_COUNT, check_int
from ._native import _core

__all__ = ["Plateau", "MODES", "THRESHOLD_MODES"]

MODES = ("min", "max")
THRESHOLD_MODES = ("rel", "abs")

_CONFIG_KEYS = ("mode", "factor", "patience", "threshold", "threshold_mode", "cooldown", "min_lr", "eps")
_STATE_KEYS = ("best", "num_bad_epochs", "cooldown_counter", "last_epoch", "num_reductions")


def _real(value: Any, name: str, hint: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number ({hint}), got {value!r}")
    return float(value)


def _choice(value: Any, name: str, choices: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")
    return value


def _lr_list(values: Any, name: str) -> List[float]:
    if isinstance(values, (str, bytes)) or not hasattr(values, "__len__"):
        raise TypeError(f"{name} must be a list of numbers, one per param group, got {values!r}")
    out = []
    for i, v in enumerate(values):
        x = _real(v, f"{name}[{i}]", "a learning rate")
        if not (math.isfinite(x) and x >= 0.0):
            raise ValueError(f"{name}[{i}] = {v!r} must be a finite number >= 0")
        out.append(x)
    if not out:
        raise ValueError(f"{name} is empty; pass one number per param group")
    return out


def _metric(metric: Any) -> float:
    if isinstance(metric, (str, bytes)):
        raise TypeError(f"metric must be a real number (e.g. the validation loss), got {metric!r}")
    try:
        return float(metric)  # a 0-d tensor or numpy scalar too, as torch does
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(
            f"metric must be a real number or a one-element tensor (e.g. loss.item()), got {metric!r}"
        ) from None


class Plateau:
    """Reduce the lr when ``metric`` stops improving; same decisions as torch's ``ReduceLROnPlateau``.

    Parameters are torch's: ``mode`` ('min' | 'max'), ``factor`` in (0, 1), ``patience`` >= 0
    (bad epochs tolerated), ``threshold`` >= 0 with ``threshold_mode`` ('rel' | 'abs'), ``cooldown``
    >= 0 (epochs ignored after a reduction), ``min_lr`` (a number, or a list with one per param
    group) and ``eps`` >= 0 (smallest change applied in use (a)). See the module docstring for the
    two ways of using a reduction.
    """

    def __init__(
        self,
        mode: str = "min",
        factor: float = 0.1,
        patience: int = 10,
        threshold: float = 1e-4,
        threshold_mode: str = "rel",
        cooldown: int = 0,
        min_lr: Union[float, Sequence[float]] = 0.0,
        eps: float = 1e-8,
    ) -> None:
        mode = _choice(mode, "mode", MODES)
        threshold_mode = _choice(threshold_mode, "threshold_mode", THRESHOLD_MODES)
        factor_f = _real(factor, "factor", "in (0, 1), e.g. 0.1 or 0.5")
        if not (0.0 < factor_f < 1.0):
            raise ValueError(
                f"factor must be in the open interval (0, 1), got {factor!r}: the lr is multiplied by it "
                "at each reduction (e.g. 0.1 or 0.5)"
            )
        patience_i = check_int(patience, "patience", hint="the number of bad epochs tolerated, e.g. 10")
        cooldown_i = check_int(cooldown, "cooldown", hint="epochs to wait after a reduction, e.g. 0")
        threshold_f = _real(threshold, "threshold", "e.g. 1e-4")
        if not (math.isfinite(threshold_f) and threshold_f >= 0.0):
            raise ValueError(f"threshold must be a finite number >= 0 (e.g. 1e-4), got {threshold!r}")
        eps_f = _real(eps, "eps", "e.g. 1e-8")
        if not (math.isfinite(eps_f) and eps_f >= 0.0):
            raise ValueError(f"eps must be a finite number >= 0 (e.g. 1e-8), got {eps!r}")
        self._min_lr_is_list = isinstance(min_lr, (list, tuple))
        if self._min_lr_is_list:
            min_lrs = _lr_list(min_lr, "min_lr")
        else:
            value = _real(min_lr, "min_lr", "a lower bound on the lr, or a list with one per param group")
            if not (math.isfinite(value) and value >= 0.0):
                raise ValueError(f"min_lr must be a finite number >= 0 (a lower bound on the lr), got {min_lr!r}")
            min_lrs = [value]
        self._mode = mode
        self._threshold_mode = threshold_mode
        config = {
            "maximize": mode == "max",
            "factor": factor_f,
            "patience": patience_i,
            "threshold": threshold_f,
            "absolute": threshold_mode == "abs",
            "cooldown": cooldown_i,
            "eps": eps_f,
        }
        self._core = _core.Plateau(config, min_lrs)

    # -- configuration -------------------------------------------------------------------------
    @property
    def mode(self) -> str:
        return self._mode

    @property
    def threshold_mode(self) -> str:
        return self._threshold_mode

    @property
    def factor(self) -> float:
        return float(self._core._config()["factor"])

    @property
    def patience(self) -> int:
        return int(self._core._config()["patience"])

    @property
    def threshold(self) -> float:
        return float(self._core._config()["threshold"])

    @property
    def cooldown(self) -> int:
        return int(self._core._config()["cooldown"])

    @property
    def eps(self) -> float:
        return float(self._core._config()["eps"])

    @property
    def min_lr(self) -> Union[float, List[float]]:
        """As given: a number, or a list with one per param group."""
        values = list(self._core.min_lrs)
        return values if self._min_lr_is_list else values[0]

    @property
    def num_groups(self) -> Optional[int]:
        """Param groups, when known (a list ``min_lr``, or base lrs given to :meth:`lrs`), else None."""
        if self._min_lr_is_list:
            return len(self._core.min_lrs)
        return len(self._core.base_lrs) if self._core.tracking else None

    def to_dict(self) -> Dict[str, Any]:
        """The configuration (constructor arguments); :meth:`from_dict` rebuilds an equal, fresh Plateau."""
        return {
            "mode": self.mode,
            "factor": self.factor,
            "patience": self.patience,
            "threshold": self.threshold,
            "threshold_mode": self.threshold_mode,
            "cooldown": self.cooldown,
            "min_lr": self.min_lr,
            "eps": self.eps,
        }

    @classmethod
    def from_dict(cls, config: Dict[str, Any]) -> "Plateau":
        if not isinstance(config, dict):
            raise TypeError(f"config must be a dict as returned by Plateau.to_dict(), got {type(config).__name__}")
        unknown = [k for k in config if k not in _CONFIG_KEYS]
        if unknown:
            raise TypeError(f"config: unknown setting {unknown[0]!r}; known: {', '.join(_CONFIG_KEYS)}")
        return cls(**config)

    # -- stepping ------------------------------------------------------------------------------
    def step(self, metric: Any, schedule_lrs: Optional[Sequence[float]] = None) -> bool:
        """Record one epoch's metric; True if the lr was reduced at this step.

        ``schedule_lrs`` (use (b)): the other schedule's lrs now, one per param group; a reduction
        then leaves a group's scale alone where it would change the group's lr by no more than
        ``eps``. Without them every group's scale takes the factor.
        """
        value = _metric(metric)
        if schedule_lrs is None:
            return bool(self._core.step(value))
        return bool(self._core.step(value, _lr_list(schedule_lrs, "schedule_lrs")))

    def reset(self) -> None:
        """Back to the start: best, counters, scale; tracked lrs back to their base lrs."""
        self._core.reset()

    @property
    def best(self) -> float:
        return float(self._core.best)

    @property
    def num_bad_epochs(self) -> int:
        return int(self._core.num_bad_epochs)

    @property
    def cooldown_counter(self) -> int:
        return int(self._core.cooldown_counter)

    @property
    def in_cooldown(self) -> bool:
        return bool(self._core.in_cooldown)

    @property
    def last_epoch(self) -> int:
        """Metrics seen (torch's ``last_epoch``)."""
        return int(self._core.last_epoch)

    @property
    def num_reductions(self) -> int:
        return int(self._core.num_reductions)

    # -- use (a): the lrs torch would set ------------------------------------------------------
    def lrs(self, base_lrs: Optional[Sequence[float]] = None) -> List[float]:
        """Each group's current lr under torch's rule, starting from ``base_lrs``.

        The first call binds the base lrs (reductions already made are replayed on them, so it may
        come at any time); later calls may omit them. Different base lrs rebind.
        """
        if base_lrs is not None:
            base = _lr_list(base_lrs, "base_lrs")
            if not self._core.tracking or list(self._core.base_lrs) != base:
                self._core.set_base_lrs(base)
        elif not self._core.tracking:
            raise ValueError("base_lrs is needed on the first call to lrs(): pass one lr per param group")
        return list(self._core.current_lrs)

    # -- use (b): a multiplier on another schedule ---------------------------------------------
    @property
    def scale(self) -> float:
        """The scale every group shares: ``factor ** num_reductions`` (formed by repeated
        multiplication) unless the eps rule kept some group's; then read :attr:`scales`."""
        scales = self._core.scales
        if any(v != scales[0] for v in scales):
            raise ValueError(f"the groups' scales differ (the eps rule kept some): {list(scales)}; read .scales")
        return float(scales[0])

    @property
    def scales(self) -> List[float]:
        """The scale of each param group; a single shared entry while the number of groups is unknown
        (a number ``min_lr`` and no ``schedule_lrs`` given to :meth:`step` yet)."""
        scales = list(self._core.scales)
        groups = self.num_groups
        return scales * groups if len(scales) == 1 and groups else scales

    def scaled_lrs(self, schedule_lrs: Sequence[float]) -> List[float]:
        """``max(schedule_lr_g * scale_g, min_lr_g)`` for each group's lr from another schedule."""
        lrs = _lr_list(schedule_lrs, "schedule_lrs")
        if self._min_lr_is_list and len(lrs) != len(self._core.min_lrs):
            raise ValueError(
                f"schedule_lrs has {len(lrs)} entries but min_lr was given for {len(self._core.min_lrs)} "
                "param groups; pass one entry per group"
            )
        return [float(self._core.scaled_lr(lr, g)) for g, lr in enumerate(lrs)]

    # -- checkpoints ---------------------------------------------------------------------------
    def state_dict(self) -> Dict[str, Any]:
        """Configuration and state; :meth:`load_state_dict` resumes exactly where this left off."""
        state: Dict[str, Any] = {"config": self.to_dict()}
        state.update(self._core._get_state())
        state["scales"] = list(self._core.scales)
        tracking = bool(self._core.tracking)
        state["base_lrs"] = list(self._core.base_lrs) if tracking else None
        state["lrs"] = list(self._core.current_lrs) if tracking else None
        return state

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        if isinstance(state, dict) and "scale" in state and "scales" not in state:
            state = {**state, "scales": [state["scale"]]}  # saved before the scales were per group
        if not isinstance(state, dict) or any(k not in state for k in ("config", *_STATE_KEYS, "scales", "base_lrs", "lrs")):
            raise ValueError("state must be a dict returned by Plateau.state_dict()")
        if state["config"] != self.to_dict():
            raise ValueError(
                f"state was saved from Plateau with config {state['config']}; this one has {self.to_dict()}. "
                "Build it with Plateau.from_dict(state['config']) first"
            )
        base, lrs = state["base_lrs"], state["lrs"]
        if (base is None) != (lrs is None):
            raise ValueError("state: base_lrs and lrs must both be lists or both be None")
        core_state = {k: state[k] for k in _STATE_KEYS}
        for key in ("num_bad_epochs", "cooldown_counter", "last_epoch", "num_reductions"):
            # counters the core increments (and replays): bounded so that none can wrap
            core_state[key] = check_int(core_state[key], f"state[{key!r}]", maximum=MAX_COUNT)
        self._core._set_state(
            core_state,
            [] if base is None else _lr_list(base, "base_lrs"),
            [] if lrs is None else _lr_list(lrs, "lrs"),
            _lr_list(state["scales"], "scales"),
        )

    def __getstate__(self) -> Dict[str, Any]:
        return self.state_dict()

    def __setstate__(self, state: Dict[str, Any]) -> None:
        Plateau.__init__(self, **state["config"])
        self.load_state_dict(state)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.to_dict().items())
        return (
            f"Plateau({args}; last_epoch={self.last_epoch}, best={self.best!r}, "
            f"num_bad_epochs={self.num_bad_epochs}, cooldown_counter={self.cooldown_counter}, "
            f"num_reductions={self.num_reductions}, scales={self.scales!r})"
        )
