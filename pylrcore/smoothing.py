"""Exponential moving averages of a loss curve: whole-array and streaming, in the peers' four forms.

``kind`` selects the form (see "Smoothing forms" in docs/suggestion.md):

- ``"debiased"``: ``a_i = beta*a_{i-1} + (1-beta)*x_i``, ``s_i = a_i / (1 - beta**(i+1))``.
- ``"fastai"``: the same average as fastai computes it, in float32 (``torch.lerp`` on a float32
  tensor, then a float32 division): equal to fastai's recorded losses bit for bit, within ~1e-6 of
  ``"debiased"``.
- ``"plain"`` (alias ``"torch_lr_finder"``): ``s_0 = x_0``, ``s_i = (1-beta)*x_i + beta*s_{i-1}``;
  torch-lr-finder's ``smooth_f`` is ``1 - beta``.
- ``"lightning"``: like debiased but divided by ``1 - beta**(i+2)`` (Lightning's off-by-one), so
  ``s_0 = x_0 / (1 + beta)``.

Non-finite losses never enter the average. ``nonfinite`` says what is output at their index:
``"mark"`` (NaN there, later values unaffected), ``"hold"`` (repeat the last smoothed value) or
``"raise"`` (ValueError naming the index).
"""

from __future__ import annotations

from typing import Any, Dict, Union

from ._checks import MAX_COUNT, FloatArray, as_curve, check_beta, check_int
from ._native import _core

__all__ = ["ema", "EMA", "KINDS"]

_KIND_ALIASES = {
    "debiased": _core.EmaKind.debiased,
    "fastai": _core.EmaKind.fastai,
    "plain": _core.EmaKind.plain,
    "torch_lr_finder": _core.EmaKind.plain,
    "lightning": _core.EmaKind.lightning,
}
KINDS = tuple(_KIND_ALIASES)
#: What :meth:`EMA.state_dict` holds besides the settings: the core's EmaState fields.
_STATE_KEYS = tuple(_core.Ema(0.5, _core.EmaKind.plain)._get_state())
_POLICIES = {"mark": _core.NonFinite.mark, "hold": _core.NonFinite.hold, "raise": _core.NonFinite.raise_}


def ema_kind_code(kind: str) -> Any:
    try:
        return _KIND_ALIASES[kind]
    except (KeyError, TypeError):
        raise ValueError(f"kind must be one of {', '.join(map(repr, KINDS))}; got {kind!r}") from None


def _policy(nonfinite: str) -> Any:
    try:
        return _POLICIES[nonfinite]
    except (KeyError, TypeError):
        raise ValueError(f"nonfinite must be 'mark', 'hold' or 'raise'; got {nonfinite!r}") from None


def ema(losses: Any, beta: float = 0.98, *, kind: str = "debiased", nonfinite: str = "mark") -> FloatArray:
    """Smooth a whole loss curve; ``out[i]`` is the smoothed value after ``losses[:i+1]``.

    >>> ema([1.0, 1.0, 1.0], beta=0.9).tolist()
    [1.0, 1.0, 1.0]
    >>> ema([2.0, 4.0], beta=0.5, kind="plain").tolist()
    [2.0, 3.0]
    """
    x = as_curve(losses, "losses")
    return _core.ema(x, check_beta(beta), ema_kind_code(kind), _policy(nonfinite))


class EMA:
    """Streaming EMA with O(1) state; ``update(loss)`` costs one native call.

    >>> s = EMA(beta=0.5, kind="plain")
    >>> s.update(2.0), s.update(4.0)
    (2.0, 3.0)
    >>> restored = EMA(beta=0.5, kind="plain"); restored.load_state_dict(s.state_dict())
    >>> restored.update(6.0) == s.update(6.0)
    True
    """

    def __init__(self, beta: float = 0.98, *, kind: str = "debiased", nonfinite: str = "mark") -> None:
        self._native = _core.Ema(check_beta(beta), ema_kind_code(kind), _policy(nonfinite))
        self._kind_name = kind
        self._nonfinite_name = nonfinite
        # The per-step hot path: the native bound method itself, so a call has no Python frame.
        self.update = self._native.update  # type: ignore[method-assign]

    def update(self, loss: float) -> float:
        """Add one loss; returns the smoothed value (the non-finite policy decides what a NaN/Inf does)."""
        return self._native.update(loss)

    def update_many(self, losses: Any) -> FloatArray:
        """Feed a whole array (same values as :meth:`update` on each); the loop runs without the GIL."""
        return self._native.update_many(as_curve(losses, "losses"))

    def reset(self) -> None:
        """Forget every loss seen (the settings stay)."""
        self._native.reset()

    @property
    def value(self) -> float:
        """The smoothed value now (NaN before the first finite loss)."""
        return self._native.value

    @property
    def beta(self) -> float:
        return self._native.beta

    @property
    def kind(self) -> str:
        """The EMA form, one of :data:`KINDS` (see :func:`ema`)."""
        return self._kind_name

    @property
    def nonfinite(self) -> str:
        """What a NaN/Inf loss does: ``"mark"``, ``"hold"`` or ``"raise"``."""
        return self._nonfinite_name

    @property
    def count(self) -> int:
        """How many losses were averaged in."""
        return self._native.count

    @property
    def nonfinite_count(self) -> int:
        """How many NaN/Inf losses were seen."""
        return self._native.nonfinite_count

    def state_dict(self) -> Dict[str, Union[float, int, str]]:
        """Everything needed to resume exactly (plain Python values)."""
        return {"beta": self.beta, "kind": self._kind_name, "nonfinite": self._nonfinite_name, **self._native._get_state()}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`; ``beta`` and ``kind`` must match this EMA's."""
        try:
            fields = {key: state[key] for key in _STATE_KEYS}
        except (KeyError, TypeError):
            raise ValueError("state must be a dict returned by EMA.state_dict()") from None
        if state.get("beta", self.beta) != self.beta or ema_kind_code(state.get("kind", self._kind_name)) != self._native.kind:
            raise ValueError(
                f"state was saved from EMA(beta={state.get('beta')}, kind={state.get('kind')!r}); "
                f"this one has beta={self.beta}, kind={self._kind_name!r}"
            )
        try:
            for key in ("average", "beta_power", "last"):
                fields[key] = float(fields[key])
        except (TypeError, ValueError):
            raise ValueError("state['average'], ['beta_power'] and ['last'] must be numbers (from EMA.state_dict())") from None
        # the core increments these counters at every update: bounded so that none can wrap
        for key in ("count", "nonfinite_count"):
            fields[key] = check_int(fields[key], f"state[{key!r}]", maximum=MAX_COUNT)
        self._native._set_state(fields)

    def __getstate__(self) -> Dict[str, Any]:
        return self.state_dict()

    def __setstate__(self, state: Dict[str, Any]) -> None:
        EMA.__init__(self, state["beta"], kind=state["kind"], nonfinite=state["nonfinite"])
        self.load_state_dict(state)

    def __repr__(self) -> str:
        return (
            f"EMA(beta={self.beta}, kind={self._kind_name!r}, nonfinite={self._nonfinite_name!r}, "
            f"count={self.count}, value={self.value:.6g})"
        )
