"""Streaming detection on a training-loss stream: one ``update(loss)`` per step, O(1) time, fixed state.

The state is a few numbers and a ring of the last ``window`` losses; :meth:`Detector.state_dict`
checkpoints all of it.

Each update returns a :class:`Verdict` (a small native object) with the step index, the states
holding now (``flags``), those that began at this step (``onset``), the smoothed loss, the best
smoothed loss and the z-score of the raw loss. States are bits of :class:`Flag`:

``NONFINITE``    the loss is NaN or +-Inf (reported; it never enters any statistic).
``EXPLOSION``    smoothed > best + (k-1) * max(|best|, 1e-3 * |start|), k = ``explode_factor``: fastai's
                 ``smoothed > 4 * best`` for positive losses, still meaningful when best <= 0. best
                 counts from the 10th loss (``start`` is the smoothed value there).
``SPIKE``        z-score of the raw loss against a short EMA mean and an EMA of the squared error
                 (both winsorised, so one spike cannot hide the next) above ``spike_z``.
``PLATEAU``      progress was made (best ``plateau_progress`` below start), and the least-squares trend
                 over the last ``window`` losses is flat: |change per window| / level < ``plateau_rel``
                 (+ 2 standard errors, so pure noise around a level counts as flat).
``OSCILLATION``  successive differences alternate in sign (rate >= ``oscillation_alternation``,
                 where i.i.d. noise gives 2/3) with amplitude >= ``oscillation_amplitude`` * level.
``DECREASING``   the trend falls by more than ``decrease_rel`` of the level per window, by 4 standard errors.

SPIKE and the window states start after ``warmup`` losses (at least 10). Window states have
hysteresis, so a statistic near its threshold does not produce a stream of onsets.

Onsets are also kept in :attr:`Detector.events` as :class:`Event` records, so a caller can log
events without repeating itself every step. Expected outcomes are values; only misuse raises.

>>> det = Detector(warmup=5)
>>> v = det.update(1.0)
>>> v.step, v.flags
(0, <Flag: 0>)
>>> det.update(float("nan")).onset
<Flag.NONFINITE: 1>
>>> det.events
[Event(step=1, kind=<Flag.NONFINITE: 1>, value=nan, threshold=nan)]
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any, Dict, List

import numpy as np
import numpy.typing as npt

from ._checks import MAX_COUNT, FloatArray, as_curve, as_settings, check_int
from ._native import _core

__all__ = ["Detector", "Event", "Flag", "Verdict", "Verdicts", "DEFAULTS"]

Flag = _core.Flag
Verdict = _core.Verdict

#: Default detector settings (read from the compiled core, where they are defined and documented).
DEFAULTS: Dict[str, float] = dict(_core.detector_defaults())


@dataclass(frozen=True)
class Event:
    """A state that began at ``step``; ``value`` crossed ``threshold`` (see the module docstring).

    ``value`` is the loss for NONFINITE, the smoothed loss for EXPLOSION, the z-score for SPIKE,
    the relative change per window for PLATEAU/DECREASING and the alternation rate for OSCILLATION.
    """

    step: int
    kind: Flag
    value: float
    threshold: float


@dataclass(frozen=True)
class Verdicts:
    """Per-step results of :meth:`Detector.update_many` as arrays (``flags``/``onset`` are uint32 bitmasks)."""

    step: npt.NDArray[np.int64]
    flags: npt.NDArray[np.uint32]
    onset: npt.NDArray[np.uint32]
    smoothed: FloatArray
    best: FloatArray
    zscore: FloatArray

    def __len__(self) -> int:
        return int(self.step.shape[0])

    def steps_with(self, flag: Flag, *, onset: bool = False) -> npt.NDArray[np.int64]:
        """Steps where ``flag`` holds (or, with ``onset=True``, begins)."""
        bits = self.onset if onset else self.flags
        steps: npt.NDArray[np.int64] = self.step[(bits & np.uint32(int(flag))) != 0]
        return steps


class Detector:
    """Streaming detector; ``update(loss)`` is one native call (no Python frame in between).

    All settings are keyword-only; the defaults are those of the compiled core (:data:`DEFAULTS`).
    ``max_events`` bounds :attr:`events` (the most recent onsets are kept; ``events_dropped`` counts
    the rest).

    >>> det = Detector(warmup=10)
    >>> verdicts = det.update_many([1.0] * 20 + [50.0])
    >>> verdicts.steps_with(Flag.SPIKE).tolist()
    [20]
    >>> restored = Detector(warmup=10); restored.load_state_dict(det.state_dict())
    >>> restored.update(1.0).zscore == det.update(1.0).zscore
    True
    """

    def __init__(
        self,
        *,
        beta: float = 0.98,
        explode_factor: float = 4.0,
        spike_beta: float = 0.9,
        spike_var_beta: float = 0.99,
        spike_z: float = 6.0,
        spike_clip: float = 3.0,
        warmup: int = 50,
        window: int = 100,
        plateau_rel: float = 0.01,
        plateau_progress: float = 0.1,
        decrease_rel: float = 0.02,
        oscillation_alternation: float = 0.85,
        oscillation_amplitude: float = 0.01,
        max_events: int = 1000,
    ) -> None:
        arguments = locals()
        settings = {name: arguments[name] for name in DEFAULTS}  # every detector setting is an argument above
        self._native = _core.Detector(as_settings(settings, DEFAULTS, "Detector"), check_int(max_events, "max_events"))
        # The per-step hot path: the native bound method itself, so a call has no Python frame.
        self.update = self._native.update  # type: ignore[method-assign]

    def update(self, loss: float) -> Verdict:
        """Feed one loss; returns this step's verdict (flags, onset, smoothed, best, zscore)."""
        return self._native.update(loss)

    def reset(self) -> None:
        """Forget every loss seen and every event (the settings stay)."""
        self._native.reset()

    @property
    def step(self) -> int:
        """How many losses were fed (the next loss's step index)."""
        return self._native.step

    @property
    def finite_count(self) -> int:
        """How many of them were finite."""
        return self._native.finite_count

    @property
    def max_events(self) -> int:
        """The bound on :attr:`events`."""
        return self._native.max_events

    @property
    def events_dropped(self) -> int:
        """Onsets dropped from :attr:`events` because of ``max_events``."""
        return self._native.events_dropped

    def update_many(self, losses: Any) -> Verdicts:
        """Feed a whole array (same results as calling :meth:`update` on each); the loop runs without the GIL."""
        first = self.step
        flags, onset, smoothed, best, zscore = self._native._update_many(as_curve(losses, "losses"))
        steps = np.arange(first, first + flags.shape[0], dtype=np.int64)
        return Verdicts(steps, flags, onset, smoothed, best, zscore)

    @property
    def config(self) -> Dict[str, Any]:
        """The settings in effect."""
        return dict(self._native._config())

    @property
    def stats(self) -> Dict[str, float]:
        """Window statistics now: ``rate`` (change per window / level) and ``rate_se``, ``alternation``,
        ``amplitude`` (mean |difference| / level), ``progress`` ((start - best) / |start|), ``explode_at``."""
        return dict(self._native._stats())

    @property
    def events(self) -> List[Event]:
        """Onsets so far (the most recent ``max_events``), oldest first."""
        return [Event(step, Flag(kind), value, threshold) for step, kind, value, threshold in self._native._events()]

    def state_dict(self) -> Dict[str, Any]:
        """Everything needed to resume exactly: settings, statistics and the event log (plain Python values)."""
        return {
            "config": self.config,
            "max_events": self.max_events,
            "state": dict(self._native._get_state()),
            "events": [tuple(e) for e in self._native._events()],
            "events_dropped": self.events_dropped,
        }

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`; the settings must match this detector's."""
        try:
            config, values, events = state["config"], state["state"], state["events"]
            dropped = int(state.get("events_dropped", 0))
        except (KeyError, TypeError, ValueError):
            raise ValueError("state must be a dict returned by Detector.state_dict()") from None
        mine = self.config
        if dict(config) != mine:
            changed = sorted(k for k in set(mine) | set(config) if mine.get(k) != config.get(k))
            raise ValueError(
                f"state was saved from a Detector with other settings ({', '.join(changed)}); "
                f"create it with Detector(**state['config']) first"
            )
        if not isinstance(values, dict) or not all(_is_number_or_numbers(v) for v in values.values()):
            raise ValueError("state['state'] must be a dict of numbers, as returned by Detector.state_dict()")
        for key, value in values.items():  # counters the core increments: bounded so none can wrap
            if isinstance(value, numbers.Integral):
                check_int(value, f"state['state'][{key!r}]", minimum=-MAX_COUNT, maximum=MAX_COUNT)
        self._native._set_state(values, [tuple(e) for e in events], dropped)

    def __getstate__(self) -> Dict[str, Any]:
        return self.state_dict()

    def __setstate__(self, state: Dict[str, Any]) -> None:
        Detector.__init__(self, **state["config"], max_events=state["max_events"])
        self.load_state_dict(state)

    def __repr__(self) -> str:
        changed = {k: v for k, v in self.config.items() if v != DEFAULTS[k]}
        args = ", ".join(f"{k}={v!r}" for k, v in changed.items())
        state = self._native._get_state()
        where = f"step={self.step}"
        if state["smooth_count"]:
            where += f", smoothed={state['smooth_last']:.6g}, best={state['best']:.6g}"
        return f"Detector({args})<{where}>"


def _is_number_or_numbers(value: Any) -> bool:
    if isinstance(value, (list, tuple)):
        return all(isinstance(v, numbers.Real) for v in value)
    return isinstance(value, numbers.Real)
