"""Learning-rate schedules: builders that compose, evaluated in closed form by the compiled core.

>>> from pylrcore import schedules as S
>>> sched = S.warmup(100) >> S.cosine(900, eta_min=1e-5)
>>> sched
warmup(100) >> cosine(900, eta_min=1e-05)
>>> round(sched(100, base_lr=0.1), 6), round(sched(1000, base_lr=0.1), 6)
(0.1, 1e-05)
>>> S.Schedule.parse(repr(sched)) == sched
True

Families (torch's parameter names where torch has the family): :func:`constant` (also torch's
``ConstantLR``), :func:`step`, :func:`multistep`, :func:`exponential`, :func:`linear`,
:func:`polynomial`, :func:`cosine`, :func:`warm_restarts`, :func:`cyclic`, :func:`one_cycle`,
:func:`swa`, :func:`inverse_sqrt`, :func:`inverse_time`, :func:`wsd`; the peers' own shapes :func:`transformers`,
:func:`timm`, :func:`cosine_decay`, :func:`piecewise_constant`, :func:`piecewise_interpolate`;
a user function :func:`lambda_` (LambdaLR, MultiplicativeLR). Composition: ``warmup(n) >> s``,
``a >> b`` (b starts when a's length is over), :func:`sequence` (explicit milestones; SequentialLR,
optax ``join_schedules``), ``a * b`` (product; torch's ChainedScheduler of multiplicative
schedulers), ``k * s`` (scaling: the whole lr, absolute floors included), :func:`per_group` (one
schedule per param group: torch's per-group lists). Migration: :func:`from_torch`,
:func:`from_transformers`, :func:`from_timm`, :func:`from_optax` (see ``docs/schedules.md``).

A schedule maps (step, base_lr) to an lr. Relative schedules scale the group's base lr; values given
as absolute lrs (``eta_min``, cyclic ``max_lr``/``base_lr``, one-cycle ``max_lr``, ``swa_lr``, timm
``lr_min``/``warmup_lr_init``) are the same for every group, as in the peers. One-cycle and cyclic
schedules also cycle the momentum (SGD ``momentum`` / Adam ``betas[0]``) by default, as torch does:
``cycle_momentum=False`` turns it off.

Differences from torch, on purpose: past ``T_max`` cosine holds ``eta_min`` (torch's recursion rises
again); past ``total_steps`` one-cycle holds its final lr (torch raises, and extrapolates at
``total_steps``); ``warmup`` starts from ``start_factor`` (default ``1/steps``), never 0, so no update
is wasted (transformers' warmups start at 0: use :func:`transformers` for its exact values).

Text form (``Schedule.parse``, ``repr``): Python-like calls of the builders joined by ``>>`` and
``*``, with numbers, strings, booleans and lists as arguments, e.g.
``"warmup(500, start_factor=0.1) >> cosine(10000, eta_min=1e-5)"`` or ``"0.5 * step(30, gamma=0.1)"``.
It is parsed, never evaluated.

Adding a family: one entry in ``_TABLE`` below (its parameters in the core's order, with defaults
and checks, and its length) and one struct in ``csrc/pylrcore/schedules.hpp`` (the names of its
modes included: ``_CHOICES``); see docs/schedules.md, "Adding a family".
"""

from __future__ import annotations

import ast
import inspect
import math
import numbers
from array import array
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
import numpy.typing as npt

from ._checks import INT64_MAX, MAX_COUNT, check_int, check_real
from ._native import _core

__all__ = [
    "Schedule",
    "constant",
    "step",
    "multistep",
    "exponential",
    "linear",
    "polynomial",
    "cosine",
    "warm_restarts",
    "cyclic",
    "one_cycle",
    "swa",
    "inverse_sqrt",
    "wsd",
    "transformers",
    "timm",
    "timm_wsd",
    "cosine_decay",
    "inverse_time",
    "piecewise_constant",
    "piecewise_interpolate",
    "warmup",
    "warmup_cosine",
    "sequence",
    "per_group",
    "lambda_",
    "from_callable",
    "timm_noise",
    "from_torch",
    "from_transformers",
    "from_timm",
    "from_optax",
]

Number = Union[int, float]
_F64 = npt.NDArray[np.float64]
_REQUIRED: Any = inspect.Parameter.empty


# ---- argument checks (eager: a bad schedule fails where it is built, not at step 10,000) ------------


def _nonneg(value: Any, name: str) -> float:
    out = check_real(value, name)
    if out < 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    return out


def _pos(value: Any, name: str) -> float:
    out = check_real(value, name)
    if out <= 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return out


def _real(value: Any, name: str) -> float:
    return check_real(value, name)


def _int(value: Any, name: str, minimum: int = 1, maximum: int = MAX_COUNT) -> int:
    """A count of steps. The core holds counts as float64 and adds them to int64 steps, so they are
    bounded by 2**62 and, above 2**53, must be exactly representable as a float64."""
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral) and float(value).is_integer():
        value = int(float(value))  # 100.0 from a config file
    out = check_int(value, name, minimum=minimum, maximum=maximum)
    if maximum == MAX_COUNT and out > 2**53 and int(float(out)) != out:
        raise ValueError(
            f"{name} = {out} is not exactly representable as a float64 (the core's parameter type); "
            "above 2**53 use a multiple of a power of two"
        )
    return out


def _count(minimum: int) -> Callable[[Any, str], int]:
    return lambda v, name: _int(v, name, minimum=minimum)


def _optional(check: Callable[[Any, str], Any]) -> Callable[[Any, str], Any]:
    return lambda v, name: None if v is None else check(v, name)


def _bool(value: Any, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def _unit_open(value: Any, name: str) -> float:
    out = check_real(value, name)
    if not 0 < out < 1:
        raise ValueError(f"{name} must be in (0, 1), got {value!r}")
    return out


def _unit(value: Any, name: str) -> float:
    out = check_real(value, name)
    if not 0 <= out <= 1:
        raise ValueError(f"{name} must be in [0, 1], got {value!r}")
    return out


def _choice(options: Sequence[str]) -> Callable[[Any, str], str]:
    def check(value: Any, name: str) -> str:
        if value not in options:
            raise ValueError(f"{name} must be one of {', '.join(map(repr, options))}; got {value!r}")
        return str(value)

    return check


def _int_list(sort_name: str, strict: bool) -> Callable[[Any, str], Tuple[int, ...]]:
    def check(value: Any, name: str) -> Tuple[int, ...]:
        if isinstance(value, (str, bytes)) or not isinstance(value, (Sequence, np.ndarray)):
            raise TypeError(f"{name} must be a list of integers, got {value!r}")
        out = [_int(m, name, minimum=0) for m in value]
        bad = any(b < a for a, b in zip(out, out[1:])) if not strict else any(b <= a for a, b in zip(out, out[1:]))
        if bad:
            raise ValueError(f"{name} must be {sort_name}, got {list(value)}")
        return tuple(out)

    return check


def _real_list(value: Any, name: str) -> Tuple[float, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, (Sequence, np.ndarray)):
        raise TypeError(f"{name} must be a list of numbers, got {value!r}")
    return tuple(_nonneg(v, name) for v in value)


# ---- the family table ------------------------------------------------------------------------------


class _P(NamedTuple):
    """One parameter: its check (normalises and names it), default, how the core gets it ('p': one
    float in order, 'ints': the node's integer list, 'tail': floats after the fixed ones) and
    whether ``repr`` writes it positionally."""

    name: str
    check: Callable[[Any, str], Any]
    default: Any = _REQUIRED
    core: Optional[Callable[[Any, Dict[str, Any]], Any]] = None
    slot: str = "p"
    positional: bool = False


class _Family(NamedTuple):
    name: str
    params: Tuple[_P, ...]
    doc: str
    length: Callable[[Dict[str, Any]], Optional[int]] = lambda q: None
    check: Optional[Callable[[Dict[str, Any]], None]] = None  # checks across parameters
    aliases: Dict[str, str] = {}  # other keyword -> parameter
    prepare: Optional[Callable[[Dict[str, Any]], None]] = None  # extra keywords (popped) before the checks
    extras: Tuple[str, ...] = ()  # keyword-only names `prepare` accepts


def _nan_if_none(v: Any, q: Dict[str, Any]) -> float:
    return math.nan if v is None else float(v)


def _code(options: Sequence[str]) -> Callable[[Any, Dict[str, Any]], float]:
    return lambda v, q: float(list(options).index(v))


# The mode parameters' names, by code: defined once, in the core (each family's `choices`).
_CHOICES: Dict[str, Dict[str, Tuple[str, ...]]] = _core.schedule_choices()
_CYCLIC_MODES = _CHOICES["cyclic"]["mode"]
_ANNEAL = _CHOICES["swa"]["anneal_strategy"]
_SHAPES = _CHOICES["wsd"]["decay_type"]
_WARMUP = _CHOICES["warmup"]["kind"]
_HF = _CHOICES["transformers"]["name"]
_TIMM = _CHOICES["timm"]["kind"]
_INTERP = _CHOICES["piecewise_interpolate"]["interpolate_type"]
_WSD_STABLE = _CHOICES["timm_wsd"]["stable_fn"]
_WSD_DECAY = _CHOICES["timm_wsd"]["decay_fn"]


def _check_linear(q: Dict[str, Any]) -> None:  # torch LinearLR's bounds
    if not 0 < q["start_factor"] <= 1:
        raise ValueError(f"start_factor must be in (0, 1] (as torch's LinearLR), got {q['start_factor']!r}")
    if not 0 <= q["end_factor"] <= 1:
        raise ValueError(f"end_factor must be in [0, 1] (as torch's LinearLR), got {q['end_factor']!r}")


def _check_cyclic(q: Dict[str, Any]) -> None:
    if q["gamma"] > 1:
        raise ValueError(f"gamma must be in (0, 1], got {q['gamma']!r}: exp_range multiplies the amplitude by gamma**step")
    if q["base_lr"] is not None and q["max_lr"] < q["base_lr"]:
        raise ValueError(f"max_lr ({q['max_lr']}) must be >= base_lr ({q['base_lr']})")


def _prepare_one_cycle(q: Dict[str, Any]) -> None:
    epochs, per_epoch = q.pop("epochs", None), q.pop("steps_per_epoch", None)
    if q.get("total_steps") is None:
        if epochs is None or per_epoch is None:  # torch's error type and rule
            raise ValueError("one_cycle needs total_steps, or epochs and steps_per_epoch (as torch's OneCycleLR)")
        q["total_steps"] = _int(epochs, "epochs") * _int(per_epoch, "steps_per_epoch")
    elif epochs is not None or per_epoch is not None:
        raise ValueError("give total_steps or epochs and steps_per_epoch, not both")


def _check_hf(q: Dict[str, Any]) -> None:
    if q["name"] == "polynomial" and q["num_training_steps"] <= q["num_warmup_steps"]:
        raise ValueError("num_training_steps must be > num_warmup_steps for the polynomial schedule")


def _hf_length(q: Dict[str, Any]) -> Optional[int]:
    return None if q["name"] in ("constant_with_warmup",) else int(q["num_training_steps"])


def _timm_length(q: Dict[str, Any]) -> Optional[int]:
    # timm's get_cycle_length: the cycles, plus the warmup when it is a prefix
    cycles = max(1, int(q["cycle_limit"]))
    if q["cycle_mul"] == 1:
        t = int(q["t_initial"]) * cycles
    else:
        t = int(math.floor(-q["t_initial"] * (q["cycle_mul"] ** cycles - 1) / (1 - q["cycle_mul"])))
    return t + int(q["warmup_t"]) if q["warmup_prefix"] else max(t, int(q["warmup_t"]))


def _MOMENTUM(lo: float, hi: float) -> Tuple[_P, ...]:  # noqa: N802 - torch's defaults differ per family
    return (
        _P("cycle_momentum", _bool, True, core=lambda v, q: float(v)),
        _P("base_momentum", _nonneg, lo),
        _P("max_momentum", _nonneg, hi),
    )

_TABLE: Dict[str, _Family] = {f.name: f for f in [
    _Family("constant", (_P("factor", _nonneg, 1.0, positional=True),
                         _P("total_iters", _optional(_count(1)), None, core=lambda v, q: 0.0 if v is None else float(v))),
            "``factor * base_lr``; with ``total_iters``, torch's ``ConstantLR``: the factor until step "
            "``total_iters``, then the base lr.",
            length=lambda q: q["total_iters"]),
    _Family("step", (_P("step_size", _count(1), positional=True), _P("gamma", _nonneg, 0.1)),
            "torch ``StepLR``: ``base_lr * gamma ** (t // step_size)``."),
    _Family("multistep", (_P("milestones", _int_list("sorted in increasing order", False), slot="ints", positional=True),
                          _P("gamma", _nonneg, 0.1)),
            "torch ``MultiStepLR``: multiply by ``gamma`` at each milestone (repeated milestones stack)."),
    _Family("exponential", (_P("gamma", _nonneg, positional=True), _P("decay_steps", _count(1), 1),
                            _P("staircase", _bool, False, core=lambda v, q: float(v)),
                            _P("end_factor", _optional(_nonneg), None, core=_nan_if_none)),
            "torch ``ExponentialLR`` (``gamma`` per step), or ``gamma ** (t / decay_steps)`` with ``staircase`` "
            "flooring the exponent and ``end_factor`` a bound (optax ``exponential_decay``; ``decay_rate`` is "
            "another name for ``gamma``).",
            aliases={"decay_rate": "gamma"}),
    _Family("linear", (_P("start_factor", _nonneg, 1.0 / 3.0), _P("end_factor", _nonneg, 1.0),
                       _P("total_iters", _count(1), 5)),
            "torch ``LinearLR``: the factor moves linearly from ``start_factor`` to ``end_factor``.",
            length=lambda q: q["total_iters"], check=_check_linear),
    _Family("polynomial", (_P("total_iters", _count(1), 5), _P("power", _pos, 1.0), _P("end_factor", _nonneg, 0.0)),
            "torch ``PolynomialLR`` (``end_factor=0``): ``(1 - min(t, T)/T) ** power``, towards ``end_factor``.",
            length=lambda q: q["total_iters"]),
    _Family("cosine", (_P("T_max", _count(1), positional=True), _P("eta_min", _nonneg, 0.0)),
            "torch ``CosineAnnealingLR`` closed form; holds ``eta_min`` (absolute) past ``T_max``.",
            length=lambda q: q["T_max"]),
    _Family("warm_restarts", (_P("T_0", _count(1), positional=True), _P("T_mult", _count(1), 1),
                              _P("eta_min", _nonneg, 0.0)),
            "torch ``CosineAnnealingWarmRestarts`` (SGDR): cycles of ``T_0 * T_mult**k`` steps."),
    _Family("cyclic", (_P("max_lr", _nonneg, positional=True), _P("step_size_up", _count(1), 2000),
                       _P("step_size_down", _optional(_count(1)), None,
                          core=lambda v, q: float(q["step_size_up"] if v is None else v)),
                       _P("mode", _choice(_CYCLIC_MODES), "triangular", core=_code(_CYCLIC_MODES)),
                       _P("gamma", _pos, 1.0),
                       _P("base_lr", _optional(_nonneg), None, core=_nan_if_none)) + _MOMENTUM(0.8, 0.9),
            "torch ``CyclicLR`` (Smith 2017). ``base_lr=None`` uses each group's base lr. Cycles the momentum "
            "between ``max_momentum`` and ``base_momentum`` against the lr, as torch (``cycle_momentum``).",
            check=_check_cyclic),
    _Family("one_cycle", (_P("total_steps", _optional(_count(2)), None, positional=True),
                          _P("max_lr", _optional(_pos), None, core=_nan_if_none),
                          _P("pct_start", _unit_open, 0.3),
                          _P("anneal_strategy", _choice(_ANNEAL), "cos", core=_code(_ANNEAL)),
                          _P("div_factor", _pos, 25.0), _P("final_div_factor", _pos, 1e4),
                          _P("three_phase", _bool, False, core=lambda v, q: float(v))) + _MOMENTUM(0.85, 0.95),
            "torch ``OneCycleLR`` (Smith & Topin). ``max_lr=None`` uses each group's base lr as the peak. "
            "Cycles the momentum from ``max_momentum`` down to ``base_momentum`` and back, as torch.",
            length=lambda q: q["total_steps"], prepare=_prepare_one_cycle, extras=("epochs", "steps_per_epoch")),
    _Family("inverse_sqrt", (_P("warmup_steps", _count(0), 0), _P("timescale", _optional(_count(1)), None,
                                                                  core=lambda v, q: float(v or q["warmup_steps"] or 10_000))),
            "transformers ``get_inverse_sqrt_schedule``: linear warmup from 0, then ``1/sqrt((t + ts - W)/ts)`` "
            "with ``ts = timescale or warmup_steps or 10000``."),
    _Family("wsd", (_P("warmup_steps", _count(0), positional=True), _P("stable_steps", _count(0), positional=True),
                    _P("decay_steps", _count(1), positional=True),
                    _P("decay_type", _choice(_SHAPES), "linear", core=_code(_SHAPES)),
                    _P("min_lr_ratio", _unit, 0.0),
                    _P("warmup_type", _choice(_SHAPES), "linear", core=_code(_SHAPES)),
                    _P("num_cycles", _nonneg, 0.5)),
            "Warmup-stable-decay (transformers ``get_wsd_schedule``): a warmup from ``min_lr_ratio``, a constant "
            "phase, then a ``linear``/``cosine``/``1-sqrt`` decay to ``min_lr_ratio``.",
            length=lambda q: q["warmup_steps"] + q["stable_steps"] + q["decay_steps"]),
    _Family("swa", (_P("swa_lr", _nonneg, positional=True), _P("anneal_epochs", _count(0), 10),
                    _P("anneal_strategy", _choice(_ANNEAL), "cos", core=_code(_ANNEAL))),
            "torch ``SWALR``: from the group's lr to ``swa_lr`` (absolute) over ``anneal_epochs``, then held.",
            length=lambda q: q["anneal_epochs"]),
    _Family("transformers", (_P("name", _choice(_HF), positional=True, core=_code(_HF)),
                             _P("num_warmup_steps", _count(0), 0), _P("num_training_steps", _count(0), 0),
                             _P("num_cycles", _nonneg, 0.5), _P("end_factor", _nonneg, 0.0), _P("power", _pos, 1.0),
                             _P("warmup_lr_rate", _optional(_nonneg), None, core=_nan_if_none)),
            "transformers ``get_scheduler(name, ...)``'s lambda, exactly (warmup from 0, ``num_cycles``); "
            "``end_factor`` is polynomial's ``lr_end / lr`` or the min-lr schedules' ``min_lr_rate``. "
            "See :func:`from_transformers` for the peer's own arguments.",
            length=_hf_length, check=_check_hf),
    _Family("timm", (_P("kind", _choice(_TIMM), positional=True, core=_code(_TIMM)),
                     _P("t_initial", _count(1), positional=True), _P("lr_min", _nonneg, 0.0),
                     _P("cycle_mul", _pos, 1.0), _P("cycle_decay", _nonneg, 1.0), _P("cycle_limit", _count(0), 1),
                     _P("warmup_t", _count(0), 0), _P("warmup_lr_init", _nonneg, 0.0),
                     _P("warmup_prefix", _bool, False, core=lambda v, q: float(v)), _P("k_decay", _pos, 1.0),
                     _P("power", _pos, 0.5), _P("lb", _real, -7.0), _P("ub", _real, 3.0)),
            "timm's ``CosineLRScheduler`` / ``TanhLRScheduler`` / ``PolyLRScheduler`` (``kind``) in steps, "
            "exactly: ``lr_min`` and ``warmup_lr_init`` absolute, ``warmup_prefix=False`` (timm's default: the "
            "decay clock runs during the warmup), ``cycle_mul`` (any > 0), ``cycle_decay``, ``cycle_limit``, "
            "``k_decay``. Noise: ``* timm_noise(...)``.",
            length=_timm_length),
    _Family("timm_wsd", (_P("t_initial", _count(1), positional=True), _P("decay_t", _count(1), positional=True),
                         _P("lr_min", _nonneg, 0.0),
                         _P("stable_fn", _choice(_WSD_STABLE), "constant", core=_code(_WSD_STABLE)),
                         _P("stable_timescale", _optional(_pos), None,
                            core=lambda v, q: float(q["warmup_t"] if v is None else v)),
                         _P("stable_power", _pos, 0.5),
                         _P("decay_fn", _choice(_WSD_DECAY), "1-sqrt", core=_code(_WSD_DECAY)),
                         _P("decay_power", _pos, 0.5), _P("decay_ratio", _unit_open, 0.1),
                         _P("warmup_t", _count(0), 0), _P("warmup_lr_init", _nonneg, 0.0)),
            "timm's ``WSDLRScheduler`` in steps: a linear warmup from ``warmup_lr_init``, a ``constant`` / "
            "``rsqrt`` / ``power`` stable phase, then the last ``decay_t`` of ``t_initial`` steps decay "
            "(``linear``, ``1-sqrt``, ``cosine``, ``power``, ``exp``) to ``lr_min`` (absolute).",
            length=lambda q: q["warmup_t"] + q["t_initial"], check=lambda q: _check_timm_wsd(q)),
    _Family("cosine_decay", (_P("decay_steps", _count(1), positional=True), _P("alpha", _nonneg, 0.0),
                             _P("exponent", _pos, 1.0)),
            "optax ``cosine_decay_schedule``: ``(1 - alpha) * (0.5 (1 + cos(pi min(t, T)/T))) ** exponent + alpha``.",
            length=lambda q: q["decay_steps"]),
    _Family("inverse_time", (_P("decay_steps", _count(1), positional=True), _P("decay_rate", _nonneg, positional=True),
                             _P("staircase", _bool, False, core=lambda v, q: float(v)), _P("power", _pos, 1.0)),
            "Inverse-time decay: ``(1 + decay_rate * t / decay_steps) ** -power``, the quotient floored with "
            "``staircase`` (keras ``InverseTimeDecay``; ``power`` is Caffe's ``inv`` policy's)."),
    _Family("piecewise_constant", (_P("boundaries", _int_list("strictly increasing", True), slot="ints", positional=True),
                                   _P("scales", _real_list, slot="tail", positional=True)),
            "optax ``piecewise_constant_schedule``: the factor is multiplied by ``scales[k]`` from step "
            "``boundaries[k]`` on.",
            check=lambda q: _same_len(q, "boundaries", "scales")),
    _Family("piecewise_interpolate", (_P("interpolate_type", _choice(_INTERP), positional=True, core=_code(_INTERP)),
                                      _P("boundaries", _int_list("strictly increasing", True), slot="ints", positional=True),
                                      _P("scales", _real_list, slot="tail", positional=True)),
            "optax ``piecewise_interpolate_schedule``: the running products of ``scales``, interpolated "
            "(``linear``/``cosine``) between boundaries, held after the last.",
            length=lambda q: q["boundaries"][-1] if q["boundaries"] else None,
            check=lambda q: _same_len(q, "boundaries", "scales")),
    _Family("warmup", (_P("steps", _count(1), positional=True),
                       _P("start_factor", _optional(_unit), None, core=lambda v, q: 1.0 / q["steps"] if v is None else v),
                       _P("kind", _choice(_WARMUP), "linear", core=_code(_WARMUP))),
            "A warmup of ``steps`` steps in front of a schedule: ``warmup(500) >> cosine(10000)``. The factor rises "
            "from ``start_factor`` (default ``1/steps``) to the schedule's value at its step 0 (``linear``, "
            "``cosine`` or ``exponential`` ramp), then the schedule runs from its own step 0.",
            check=lambda q: _check_warmup(q)),
]}


def _same_len(q: Dict[str, Any], a: str, b: str) -> None:
    if len(q[a]) != len(q[b]):
        raise ValueError(f"{a} and {b} must have the same length, got {len(q[a])} and {len(q[b])}")


def _check_timm_wsd(q: Dict[str, Any]) -> None:
    if q["decay_t"] > q["t_initial"]:
        raise ValueError(f"decay_t ({q['decay_t']}) must be <= t_initial ({q['t_initial']})")
    if q["stable_fn"] != "constant":
        if (q["stable_timescale"] or q["warmup_t"]) <= 0:
            raise ValueError(f"stable_fn={q['stable_fn']!r} needs a stable_timescale > 0 (it defaults to warmup_t)")
        if q["lr_min"] > 0:  # timm keeps max(base * stable, lr_min) per group: not one affine map of the base
            raise ValueError(f"stable_fn={q['stable_fn']!r} with lr_min > 0 is not supported (timm clamps each "
                             "group's decaying stable lr at lr_min); use lr_min=0")


def _check_warmup(q: Dict[str, Any]) -> None:
    if q["kind"] == "exponential" and q["start_factor"] == 0:
        raise ValueError("start_factor must be > 0 for an exponential warmup")


# Codes and parameter counts come from the core (one definition); the table must agree with it.
_NATIVE: Dict[str, Tuple[int, int, bool, int]] = dict(_core.schedule_families())
for _f in _TABLE.values():
    _n_fixed = sum(1 for _p in _f.params if _p.slot == "p")
    if _f.name not in _NATIVE or _NATIVE[_f.name][1] != _n_fixed:  # pragma: no cover - a build mismatch
        raise ImportError(f"schedule family {_f.name!r} differs between pylrcore/schedules.py and the compiled core; "
                          "rebuild pylrcore (tools/dev-build)")


def _build(name: str, args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> "Schedule":
    fam = _TABLE[name]
    for alias, target in fam.aliases.items():
        if alias in kwargs:
            if target in kwargs or len(args) > [p.name for p in fam.params].index(target):
                raise ValueError(f"give exactly one of {target} or {alias}, not both")
            kwargs[target] = kwargs.pop(alias)
    names = order = [p.name for p in fam.params]
    if len(args) > len(order):
        raise TypeError(f"{name}() takes at most {len(order)} positional arguments ({len(args)} given)")
    q: Dict[str, Any] = dict(zip(order, args))
    for k, v in kwargs.items():
        if k in q:
            raise TypeError(f"{name}() got multiple values for argument {k!r}")
        if k not in names and k not in fam.extras:
            raise TypeError(f"{name}() got an unexpected keyword argument {k!r}; its parameters: {', '.join(names)}")
        q[k] = v
    if fam.prepare is not None:
        fam.prepare(q)
    out: Dict[str, Any] = {}
    for p in fam.params:
        if p.name not in q:
            if p.default is _REQUIRED:
                other = [a for a, t in fam.aliases.items() if t == p.name]
                if other:
                    raise ValueError(f"give exactly one of {p.name} or {other[0]}")
                raise TypeError(f"{name}() missing required argument {p.name!r}")
            out[p.name] = p.default
        else:
            out[p.name] = p.check(q[p.name], p.name)
    if fam.check is not None:
        fam.check(out)
    return Schedule(name, out)


def _builder(name: str) -> Callable[..., "Schedule"]:
    fam = _TABLE[name]

    def build(*args: Any, **kwargs: Any) -> Schedule:
        return _build(name, args, kwargs)

    P = inspect.Parameter
    params = [P(p.name, P.POSITIONAL_OR_KEYWORD, default=p.default) for p in fam.params]
    params += [P(e, P.KEYWORD_ONLY, default=None) for e in fam.extras]
    build.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    build.__name__ = build.__qualname__ = name
    build.__doc__ = fam.doc
    return build


# ---- the Schedule object ------------------------------------------------------------------------

_COMPOSITES = ("warmup", "sequence", "product", "scale", "per_group", "callable")


class Schedule:
    """A composable learning-rate schedule. Build it with the functions of this module.

    ``schedule(steps, base_lr=1.0)``: an int step and a float base lr give a float; an array of
    steps gives an array; a sequence of per-group base lrs adds a last axis (steps x groups).
    """

    __slots__ = ("family", "params", "children", "_program")

    def __init__(self, family: str, params: Dict[str, Any], children: Sequence["Schedule"] = ()) -> None:
        self.family = family
        self.params = dict(params)
        self.children: Tuple[Schedule, ...] = tuple(children)
        self._program: Optional[Any] = None
        self._compile()  # validates eagerly, in the core too

    # -- evaluation --
    def _nodes(self) -> Tuple[List[Tuple[int, List[float], List[int], List[int]]], List[Callable[[int], float]]]:
        nodes: List[Tuple[int, List[float], List[int], List[int]]] = []
        callables: List[Callable[[int], float]] = []

        def emit(s: Schedule) -> int:
            kids = [emit(c) for c in s.children]
            if s.family == "warmup" and not kids:  # a warmup on its own ramps up to the base lr
                kids = [emit(constant())]
            if s.family == "callable":
                callables.append(s.params["_call"])
                p, ints = [float(len(callables) - 1)], []  # type: Tuple[List[float], List[int]]
            else:
                p, ints = s._core_params()
            nodes.append((_NATIVE[s.family][0], p, ints, kids))
            return len(nodes) - 1

        emit(self)
        return nodes, callables

    def _core_params(self) -> Tuple[List[float], List[int]]:
        fam = _TABLE.get(self.family)
        if fam is None:  # sequence, product, scale, per_group
            if self.family == "scale":
                return [float(self.params["factor"])], []
            return [], [int(m) for m in self.params.get("milestones", ())]
        p: List[float] = []
        ints: List[int] = []
        tail: List[float] = []
        for spec in fam.params:
            v = self.params[spec.name]
            v = spec.core(v, self.params) if spec.core is not None else v
            if spec.slot == "ints":
                ints.extend(int(i) for i in v)
            elif spec.slot == "tail":
                tail.extend(float(x) for x in v)
            else:
                p.append(float(v))
        return p + tail, ints

    def _compile(self) -> Any:
        if self._program is None:
            nodes, callables = self._nodes()
            self._program = _core.ScheduleProgram(
                [(fam, [float(v) for v in p], [int(i) for i in ints], kids) for fam, p, ints, kids in nodes], callables
            )
        return self._program

    def __call__(self, steps: Any, base_lr: Any = 1.0) -> Any:
        return self._evaluate(steps, base_lr, momentum=False)

    def momentum(self, steps: Any, base_lr: Any = 1.0) -> Any:
        """The momentum (SGD ``momentum`` / Adam ``betas[0]``) the schedule sets at ``steps``; NaN
        where it leaves the momentum alone (no cycling schedule, or ``cycle_momentum=False``)."""
        return self._evaluate(steps, base_lr, momentum=True)

    @property
    def cycles_momentum(self) -> bool:
        """Whether some part of the schedule cycles the momentum (one-cycle, cyclic)."""
        return bool(self._compile().cycles_momentum)

    def _evaluate(self, steps: Any, base_lr: Any, momentum: bool) -> Any:
        scalar_step = isinstance(steps, numbers.Integral) and not isinstance(steps, bool)
        step_arr = _steps_array(steps)
        scalar_base = isinstance(base_lr, numbers.Real) and not isinstance(base_lr, bool)
        base = np.atleast_1d(np.asarray(base_lr, dtype=np.float64))
        if base.ndim != 1 or base.size == 0:
            raise ValueError("base_lr must be a number or a 1-D sequence of per-group base lrs")
        if not (np.isfinite(base).all() and (base >= 0).all()):
            raise ValueError(f"base_lr must be finite and >= 0, got {base_lr!r}")
        out = self._compile().evaluate(step_arr, np.ascontiguousarray(base), momentum=momentum)
        if momentum:
            out = out[1]
        if scalar_base:
            out = out[:, 0]
        if scalar_step:
            return float(out[0]) if scalar_base else out[0]
        return out

    def at(self, step: int, group: int = 0) -> Tuple[float, float]:
        """The affine map at ``step``: ``lr = a * base_lr + c`` (for param group ``group``)."""
        a, c, _m = self._compile().at(_int(step, "step", minimum=0, maximum=INT64_MAX), _int(group, "group", minimum=0))
        return float(a), float(c)

    # -- composition --
    @property
    def length(self) -> Optional[int]:
        """Number of steps after which the schedule has reached its end (None: it never ends)."""
        f, q = self.family, self.params
        if f in _TABLE and f != "warmup":
            n = _TABLE[f].length(q)
            return None if n is None else int(n)
        if f == "warmup":
            rest = self.children[0].length if self.children else 0
            return None if rest is None else int(q["steps"]) + rest
        if f == "sequence":
            last = self.children[-1].length
            return None if last is None else int(q["milestones"][-1]) + last
        if f in ("scale", "product", "per_group"):
            lengths = [c.length for c in self.children]
            known = [n for n in lengths if n is not None]
            return max(known) if known else None
        return None

    def __rshift__(self, other: "Schedule") -> "Schedule":
        if not isinstance(other, Schedule):
            return NotImplemented
        if self.family == "warmup" and not self.children:
            return Schedule("warmup", self.params, [other])
        n = self.length
        if n is None:
            raise ValueError(
                f"{self!r} has no natural length, so '>>' cannot tell when the next schedule starts; "
                "use sequence([a, b], milestones=[...])"
            )
        if self.family == "sequence":  # flatten a >> b >> c into one sequence
            return sequence(list(self.children) + [other], list(self.params["milestones"]) + [n])
        return sequence([self, other], [n])

    def __mul__(self, other: Any) -> "Schedule":
        if isinstance(other, Schedule):
            left = list(self.children) if self.family == "product" else [self]
            right = list(other.children) if other.family == "product" else [other]
            return Schedule("product", {}, left + right)
        if isinstance(other, numbers.Real) and not isinstance(other, bool):
            return Schedule("scale", {"factor": _nonneg(other, "scale factor")}, [self])
        return NotImplemented

    __rmul__ = __mul__

    # -- identity, text, serialisation --
    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Schedule):
            return NotImplemented
        return (self.family, self.params, self.children) == (other.family, other.params, other.children)

    def __hash__(self) -> int:
        return hash((self.family, tuple(sorted((k, _hashable(v)) for k, v in self.params.items())), self.children))

    def __repr__(self) -> str:
        f, q = self.family, self.params
        if f == "warmup":
            head = _call_repr("warmup", q)
            if not self.children:
                return head
            child = self.children[0]
            # '>>' parses left to right: a chain on the right of '>>' needs parentheses
            text = f"({child!r})" if _chained(child) else repr(child)
            return f"{head} >> {text}"
        if f == "sequence":
            kids = ", ".join(repr(c) for c in self.children)
            return f"sequence([{kids}], milestones={list(q['milestones'])})"
        if f == "per_group":
            return f"per_group([{', '.join(repr(c) for c in self.children)}])"
        if f == "product":
            return " * ".join(_wrap(c) for c in self.children)
        if f == "scale":
            return f"{_fmt(q['factor'])} * {_wrap(self.children[0])}"
        if f == "callable":
            return f"lambda_({q['name']}{', multiplicative=True' if q['multiplicative'] else ''})"
        return _call_repr(f, q)

    def to_dict(self) -> Dict[str, Any]:
        """A JSON-ready description; ``Schedule.from_dict`` rebuilds (and re-validates) it. A user
        function is described by its name only (it cannot be rebuilt from the dict)."""
        d: Dict[str, Any] = {"family": self.family}
        d.update({k: (list(v) if isinstance(v, tuple) else v) for k, v in self.params.items() if not k.startswith("_")})
        if self.children:
            d["children"] = [c.to_dict() for c in self.children]
        return d

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "Schedule":
        if not isinstance(data, dict) or "family" not in data:
            raise ValueError("a schedule dict needs a 'family' key (from Schedule.to_dict())")
        d = dict(data)
        family = d.pop("family")
        children = [cls.from_dict(c) for c in d.pop("children", [])]
        if family == "warmup":
            w = warmup(**d)
            return w >> children[0] if children else w
        if family == "sequence":
            return sequence(children, **d)
        if family == "per_group":
            return per_group(children)
        if family == "product":
            out = children[0]
            for c in children[1:]:
                out = out * c
            return out
        if family == "scale":
            return _nonneg(d["factor"], "factor") * children[0]
        if family == "callable":
            raise ValueError(
                f"the schedule calls the user function {d.get('name')!r}, which a dict cannot rebuild; "
                "build the schedule in code (S.lambda_(fn)) and pass it instead"
            )
        if family not in _TABLE:
            raise ValueError(f"unknown schedule family {family!r}")
        return _build(family, (), d)

    @classmethod
    def parse(cls, text: str) -> "Schedule":
        """Build a schedule from its text form, e.g. ``"warmup(500) >> cosine(10000, eta_min=1e-5)"``."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        short = text if len(text) <= 80 else text[:77] + "..."
        try:
            tree = ast.parse(text.strip(), mode="eval")
            return _from_ast(tree.body, text)
        except SyntaxError as exc:
            raise ValueError(f"cannot parse schedule {short!r}: {exc.msg} at column {exc.offset}") from None
        except (RecursionError, MemoryError):  # Python's parser and _from_ast recurse per '>>' / '*' / '('
            raise ValueError(
                f"cannot parse schedule {short!r}: it nests too deeply (a few hundred '>>' at most); "
                "join many schedules with sequence([...], milestones=[...])"
            ) from None


# ---- builders (one per table entry) -----------------------------------------------------------------

constant = _builder("constant")
step = _builder("step")
multistep = _builder("multistep")
exponential = _builder("exponential")
linear = _builder("linear")
polynomial = _builder("polynomial")
cosine = _builder("cosine")
warm_restarts = _builder("warm_restarts")
cyclic = _builder("cyclic")
one_cycle = _builder("one_cycle")
swa = _builder("swa")
inverse_sqrt = _builder("inverse_sqrt")
wsd = _builder("wsd")
transformers = _builder("transformers")
timm = _builder("timm")
timm_wsd = _builder("timm_wsd")
cosine_decay = _builder("cosine_decay")
inverse_time = _builder("inverse_time")
piecewise_constant = _builder("piecewise_constant")
piecewise_interpolate = _builder("piecewise_interpolate")
warmup = _builder("warmup")


def warmup_cosine(warmup_steps: int, total_steps: int, eta_min: Number = 0.0, start_factor: Optional[Number] = None) -> Schedule:
    """Warmup then cosine decay, ``total_steps`` in all (warmup included), as transformers counts."""
    w = _int(warmup_steps, "warmup_steps")
    total = _int(total_steps, "total_steps")
    if w >= total:
        raise ValueError(f"warmup_steps ({w}) must be < total_steps ({total})")
    return warmup(w, start_factor) >> cosine(total - w, eta_min)


def sequence(schedules: Sequence[Schedule], milestones: Sequence[int]) -> Schedule:
    """torch ``SequentialLR`` / optax ``join_schedules``: schedule k runs from milestone k-1, from its
    own step 0."""
    scheds = list(schedules)
    if len(scheds) < 2 or not all(isinstance(s, Schedule) for s in scheds):
        raise ValueError("schedules must be a list of at least two Schedule objects")
    ms = [_int(m, "milestones", minimum=0) for m in milestones]
    if len(ms) != len(scheds) - 1:
        raise ValueError(f"milestones needs len(schedules) - 1 = {len(scheds) - 1} entries, got {len(ms)}")
    if any(b <= a for a, b in zip(ms, ms[1:])):
        raise ValueError(f"milestones must be strictly increasing, got {ms}")
    return Schedule("sequence", {"milestones": tuple(ms)}, scheds)


def per_group(schedules: Sequence[Schedule]) -> Schedule:
    """One schedule per param group (torch's per-group lists: ``CyclicLR(base_lr=[...], max_lr=[...])``,
    ``OneCycleLR(max_lr=[...])``, a lambda per group). It must be evaluated with as many base lrs as
    schedules; the per-step cost grows with the number of groups (one evaluation each)."""
    scheds = list(schedules)
    if not scheds or not all(isinstance(s, Schedule) for s in scheds):
        raise ValueError("schedules must be a non-empty list of Schedule objects, one per param group")
    return Schedule("per_group", {}, scheds)


class _Cumulative:
    """MultiplicativeLR's product of factors, prod(fn(k) for k in 1..t), kept as prefix products so a
    forward-stepping run calls ``fn`` once per step. Memory: 8 bytes per step reached."""

    def __init__(self, fn: Callable[[int], float]) -> None:
        self.fn = fn
        self.values = array("d", [1.0])

    def __call__(self, t: int) -> float:
        values = self.values
        while len(values) <= t:
            values.append(values[-1] * float(self.fn(len(values))))
        return values[t]


def lambda_(fn: Callable[[int], float], *, multiplicative: bool = False) -> Schedule:
    """A user function of the step, a factor of the base lr (torch ``LambdaLR``), composable with the
    rest (``warmup(100) >> lambda_(f)``, ``lambda_(f) * cosine(1000)``).

    ``multiplicative=True``: torch ``MultiplicativeLR``, ``base_lr * prod(fn(k) for k in 1..t)``.
    Cost: one Python call per evaluated step (~0.5 µs plus ``fn``), against the core's ~20 ns for a
    built-in family; with ``multiplicative`` the products are kept, so stepping forward costs one
    call per step (memory: 8 bytes per step). A schedule with a function cannot be rebuilt from
    ``to_dict()`` or its text form, and ``evaluate`` runs it on one thread.
    """
    if not callable(fn):
        raise TypeError(f"fn must be a callable of the step, got {type(fn).__name__}")
    multiplicative = _bool(multiplicative, "multiplicative")
    call = _Cumulative(fn) if multiplicative else fn
    name = getattr(fn, "__qualname__", None) or type(fn).__name__
    return Schedule("callable", {"fn": fn, "name": name, "multiplicative": multiplicative, "_call": call})


from_callable = lambda_


def timm_noise(
    noise_range_t: Union[int, Sequence[int]],
    noise_pct: Number = 0.67,
    noise_type: str = "normal",
    noise_seed: int = 42,
) -> Schedule:
    """timm's lr noise as a factor: ``schedule * timm_noise(...)`` multiplies the lr by ``1 + noise``
    where timm applies it (``noise_range_t``: a start step or ``[start, end)``), the noise drawn from
    torch's generator seeded with ``noise_seed + t`` (timm/scheduler/scheduler.py ``_add_noise``), so
    it is reproducible and equal to timm's. Evaluated in Python (needs torch): ~10 µs per step."""
    if isinstance(noise_range_t, (list, tuple)):
        if len(noise_range_t) != 2:
            raise ValueError(f"noise_range_t must be a step or [start, end), got {noise_range_t!r}")
        lo, hi = _int(noise_range_t[0], "noise_range_t", minimum=0), _int(noise_range_t[1], "noise_range_t", minimum=0)
    else:
        lo, hi = _int(noise_range_t, "noise_range_t", minimum=0), None
    pct = _pos(noise_pct, "noise_pct")
    kind = _choice(("normal", "uniform"))(noise_type, "noise_type")
    seed = _int(noise_seed, "noise_seed", minimum=0)

    def noise(t: int) -> float:
        if t < lo or (hi is not None and t >= hi):
            return 1.0
        import torch

        g = torch.Generator()
        g.manual_seed(seed + t)
        if kind == "normal":
            while True:  # timm redraws until |noise| < noise_pct
                n = torch.randn(1, generator=g).item()
                if abs(n) < pct:
                    break
        else:
            n = 2 * (torch.rand(1, generator=g).item() - 0.5) * pct
        return 1.0 + n

    where = f"[{lo}, {hi}]" if hi is not None else str(lo)
    noise.__qualname__ = f"timm_noise({where}, {pct}, {kind!r}, {seed})"
    return lambda_(noise)


# ---- migration helpers ------------------------------------------------------------------------------


def _same_or_per_group(make: Callable[[int], Schedule], groups: int) -> Schedule:
    """One schedule where every group's values agree, else one per group (torch's per-group lists)."""
    scheds = [make(g) for g in range(groups)]
    return scheds[0] if all(s == scheds[0] for s in scheds) else per_group(scheds)


_CHAINABLE = ("StepLR", "MultiStepLR", "ConstantLR", "LinearLR", "ExponentialLR", "PolynomialLR", "MultiplicativeLR",
              "CosineAnnealingLR")


def from_torch(scheduler: Any) -> Schedule:
    """The pylrcore schedule of a constructed torch scheduler: ``Scheduler(opt, S.from_torch(torch_sched))``
    gives the same lrs (and momentum) at every step. Covers LambdaLR, MultiplicativeLR, StepLR,
    MultiStepLR, ConstantLR, LinearLR, ExponentialLR, PolynomialLR, CosineAnnealingLR,
    CosineAnnealingWarmRestarts, CyclicLR (built-in modes), OneCycleLR, SWALR, SequentialLR and
    ChainedScheduler (of multiplicative schedulers; a product); per-group values become
    :func:`per_group`. ReduceLROnPlateau is not a schedule: use ``Scheduler(opt, S.constant(),
    plateau=pylrcore.Plateau(...))``."""
    name = type(scheduler).__name__
    if hasattr(scheduler, "schedule") and isinstance(getattr(scheduler, "schedule"), Schedule):
        out: Schedule = scheduler.schedule  # a pylrcore Scheduler
        return out
    if name == "ReduceLROnPlateau":
        raise ValueError("ReduceLROnPlateau reacts to a metric, it is no schedule: use "
                         "pylrcore.torch.Scheduler(opt, S.constant(), plateau=pylrcore.Plateau(mode=..., factor=...))")
    groups = len(getattr(scheduler, "base_lrs", [])) or len(scheduler.optimizer.param_groups)
    if name == "SequentialLR":
        return sequence([from_torch(s) for s in scheduler._schedulers], list(scheduler._milestones))
    if name == "ChainedScheduler":
        parts = []
        for s in scheduler._schedulers:
            kind = type(s).__name__
            if kind not in _CHAINABLE or (kind == "CosineAnnealingLR" and s.eta_min != 0):
                raise ValueError(
                    f"ChainedScheduler with {kind}{' (eta_min != 0)' if kind == 'CosineAnnealingLR' else ''}: only "
                    f"multiplicative schedulers chain into a product ({', '.join(_CHAINABLE)}; cosine with eta_min=0 "
                    "up to T_max); build the pylrcore schedule by hand"
                )
            parts.append(from_torch(s))
        out = parts[0]
        for p in parts[1:]:
            out = out * p
        return out
    if name in ("LambdaLR", "MultiplicativeLR"):
        fns = scheduler.lr_lambdas
        mult = name == "MultiplicativeLR"
        if all(f is fns[0] for f in fns):
            return lambda_(fns[0], multiplicative=mult)
        return per_group([lambda_(f, multiplicative=mult) for f in fns])
    if name == "StepLR":
        return step(scheduler.step_size, scheduler.gamma)
    if name == "MultiStepLR":
        return multistep(sorted(scheduler.milestones.elements()), scheduler.gamma)
    if name == "ConstantLR":
        if scheduler.total_iters == 0:
            raise ValueError("ConstantLR(total_iters=0) keeps the factor for ever in torch (a quirk): use S.constant(factor)")
        return constant(scheduler.factor, total_iters=scheduler.total_iters)
    if name == "LinearLR":
        return linear(scheduler.start_factor, scheduler.end_factor, scheduler.total_iters)
    if name == "ExponentialLR":
        return exponential(scheduler.gamma)
    if name == "PolynomialLR":
        return polynomial(scheduler.total_iters, scheduler.power)
    if name == "CosineAnnealingLR":
        return cosine(scheduler.T_max, scheduler.eta_min)
    if name == "CosineAnnealingWarmRestarts":
        return warm_restarts(scheduler.T_0, scheduler.T_mult, scheduler.eta_min)
    if name == "SWALR":
        pg = scheduler.optimizer.param_groups
        return _same_or_per_group(
            lambda g: swa(pg[g]["swa_lr"], scheduler.anneal_epochs, scheduler._anneal_strategy), groups)
    if name == "CyclicLR":
        if scheduler._scale_fn_custom is not None:
            raise ValueError("CyclicLR with a custom scale_fn: write it as S.lambda_(...) (pylrcore's cyclic has the "
                             "three built-in modes)")
        up = round(scheduler.total_size * scheduler.step_ratio)
        down = round(scheduler.total_size) - up
        cm = bool(scheduler.cycle_momentum)
        return _same_or_per_group(lambda g: cyclic(
            scheduler.max_lrs[g], up, down, scheduler.mode, scheduler.gamma, base_lr=scheduler.base_lrs[g],
            cycle_momentum=cm, base_momentum=scheduler.base_momentums[g] if cm else 0.8,
            max_momentum=scheduler.max_momentums[g] if cm else 0.9), groups)
    if name == "OneCycleLR":
        phases = scheduler._schedule_phases
        total = scheduler.total_steps
        pct = (phases[0]["end_step"] + 1) / total
        pg = scheduler.optimizer.param_groups
        cm = bool(scheduler.cycle_momentum)
        return _same_or_per_group(lambda g: one_cycle(
            total, pg[g]["max_lr"], pct, scheduler._anneal_func_type, pg[g]["max_lr"] / pg[g]["initial_lr"],
            pg[g]["initial_lr"] / pg[g]["min_lr"], len(phases) == 3, cycle_momentum=cm,
            base_momentum=pg[g]["base_momentum"] if cm else 0.85, max_momentum=pg[g]["max_momentum"] if cm else 0.95),
            groups)
    raise ValueError(f"from_torch does not know {name}; build the pylrcore schedule by hand (see docs/schedules.md)")


_HF_NAMES = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
             "inverse_sqrt", "reduce_lr_on_plateau", "cosine_with_min_lr", "cosine_warmup_with_min_lr",
             "warmup_stable_decay")


def from_transformers(
    name: str,
    num_warmup_steps: Optional[int] = None,
    num_training_steps: Optional[int] = None,
    *,
    lr: Optional[Number] = None,
    **kwargs: Any,
) -> Schedule:
    """transformers' ``get_scheduler(name, optimizer, num_warmup_steps, num_training_steps,
    scheduler_specific_kwargs=kwargs)`` as a pylrcore schedule, equal to it at every step.

    ``lr`` is the optimizer's ``defaults["lr"]``, needed where transformers reads it (polynomial's
    ``lr_end``, ``cosine_with_min_lr``'s ``min_lr``)."""
    name = str(getattr(name, "value", name))
    if name not in _HF_NAMES:
        raise ValueError(f"name must be one of {', '.join(map(repr, _HF_NAMES))}; got {name!r}")
    if name == "reduce_lr_on_plateau":
        raise ValueError("reduce_lr_on_plateau reacts to a metric, it is no schedule: use "
                         "pylrcore.torch.Scheduler(opt, S.constant(), plateau=pylrcore.Plateau(...))")
    if name == "constant":
        return constant()
    if num_warmup_steps is None:
        raise ValueError(f"{name} requires num_warmup_steps, please provide that argument")
    W = _int(num_warmup_steps, "num_warmup_steps", minimum=0)
    allowed = {"cosine": {"num_cycles"}, "cosine_with_restarts": {"num_cycles"}, "polynomial": {"lr_end", "power"},
               "inverse_sqrt": {"timescale"}, "cosine_with_min_lr": {"num_cycles", "min_lr", "min_lr_rate"},
               "cosine_warmup_with_min_lr": {"num_cycles", "min_lr", "min_lr_rate", "warmup_lr_rate"},
               "warmup_stable_decay": {"num_decay_steps", "num_stable_steps", "warmup_type", "decay_type",
                                       "min_lr_ratio", "num_cycles"}}.get(name, set())
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        raise TypeError(f"{name} got unexpected arguments {unknown}; it takes {sorted(allowed) or 'none'}")
    if name == "constant_with_warmup":
        return transformers(name, W)
    if name == "inverse_sqrt":
        return inverse_sqrt(W, kwargs.get("timescale"))
    if name == "warmup_stable_decay":
        if "num_decay_steps" not in kwargs:
            raise TypeError("warmup_stable_decay requires num_decay_steps")
        D = _int(kwargs["num_decay_steps"], "num_decay_steps")
        S_ = kwargs.get("num_stable_steps")
        if S_ is None:
            if num_training_steps is None:
                raise ValueError("Either num_training_steps or num_stable_steps must be specified.")
            S_ = _int(num_training_steps, "num_training_steps", minimum=0) - W - D
        return wsd(W, S_, D, kwargs.get("decay_type", "cosine"), kwargs.get("min_lr_ratio", 0.0),
                   kwargs.get("warmup_type", "linear"), kwargs.get("num_cycles", 0.5))
    if num_training_steps is None:
        raise ValueError(f"{name} requires num_training_steps, please provide that argument")
    T = _int(num_training_steps, "num_training_steps", minimum=0)
    cycles = kwargs.get("num_cycles", 1 if name == "cosine_with_restarts" else 0.5)
    if name == "polynomial":
        lr_end, power = kwargs.get("lr_end", 1e-7), kwargs.get("power", 1.0)
        if lr is None:
            raise ValueError("polynomial needs lr= (the optimizer's defaults['lr']): transformers' lr_end is absolute")
        if not _pos(lr, "lr") > lr_end:
            raise ValueError(f"lr_end ({lr_end}) must be smaller than initial lr ({lr})")
        return transformers(name, W, T, end_factor=lr_end / lr, power=power)
    if name in ("cosine_with_min_lr", "cosine_warmup_with_min_lr"):
        min_lr, rate = kwargs.get("min_lr"), kwargs.get("min_lr_rate")
        if min_lr is not None and rate is not None:
            raise ValueError("Only one of min_lr or min_lr_rate should be set")
        if min_lr is not None:
            if lr is None:
                raise ValueError(f"{name} with min_lr needs lr= (the optimizer's defaults['lr']) to make it a rate")
            rate = min_lr / _pos(lr, "lr")
        elif rate is None:
            raise ValueError("One of min_lr or min_lr_rate should be set")
        return transformers(name, W, T, num_cycles=cycles, end_factor=rate,
                            warmup_lr_rate=kwargs.get("warmup_lr_rate"))
    return transformers(name, W, T, num_cycles=cycles)


def from_timm(
    name: str, *, noise_range_t: Any = None, noise_pct: Number = 0.67, noise_type: str = "normal",
    noise_seed: int = 42, **kwargs: Any,
) -> Schedule:
    """timm's scheduler of that name (``"cosine"``, ``"tanh"``, ``"poly"``, ``"wsd"``: the classes
    ``CosineLRScheduler``, ``TanhLRScheduler``, ``PolyLRScheduler``, ``WSDLRScheduler``; ``"step"``/``"multistep"``
    without warmup) with its constructor's arguments, in steps (``step_update(t)``); the noise
    arguments add :func:`timm_noise`."""
    if name in ("cosine", "tanh", "poly"):
        out = timm(name, **kwargs)
    elif name == "wsd":
        out = timm_wsd(**kwargs)
    elif name == "step":
        out = step(kwargs.pop("decay_t"), kwargs.pop("decay_rate", 1.0))
    elif name == "multistep":  # timm applies decay k from step decay_t[k] - 1 (its convention)
        out = multistep([max(0, int(m) - 1) for m in kwargs.pop("decay_t")], kwargs.pop("decay_rate", 1.0))
    else:
        raise ValueError(f"name must be 'cosine', 'tanh', 'poly', 'wsd', 'step' or 'multistep'; got {name!r}")
    if name in ("step", "multistep") and kwargs:
        raise TypeError(f"from_timm({name!r}) supports decay_t and decay_rate only; got {sorted(kwargs)}")
    if noise_range_t is not None:
        out = out * timm_noise(noise_range_t, noise_pct, noise_type, noise_seed)
    return out


def from_optax(name: str, *args: Any, lr: Optional[Number] = None, **kwargs: Any) -> Schedule:
    """optax's schedule ``optax.<name>(*args, **kwargs)`` as a pylrcore schedule relative to ``lr``
    (default: its ``init_value``, or ``peak_value`` for warmup and one-cycle schedules), so that
    ``schedule(t, base_lr=lr) == optax_schedule(t)``. Names: constant_schedule, linear_schedule,
    polynomial_schedule, exponential_decay, cosine_decay_schedule, piecewise_constant_schedule,
    piecewise_interpolate_schedule, warmup_constant_schedule, warmup_cosine_decay_schedule,
    cosine_onecycle_schedule, linear_onecycle_schedule, join_schedules (of pylrcore schedules)."""
    try:
        sig = inspect.signature(_OPTAX[name])
    except KeyError:
        raise ValueError(f"name must be one of {', '.join(_OPTAX)}; got {name!r}") from None
    bound = sig.bind(*args, **kwargs)
    bound.apply_defaults()
    q = {k: v for k, v in bound.arguments.items() if k != "base"}
    if name == "join_schedules":
        return sequence(q["schedules"], q["boundaries"])
    refs = [q.get(k) for k in ("peak_value", "init_value", "value", "end_value")]
    ref = next((r for r in refs if r), 1.0)  # the first non-zero value sets the scale
    base = _pos(ref if lr is None else lr, "lr")
    return _OPTAX[name](base=base, **q)


def _opt_poly(init_value: float, end_value: float, power: float, transition_steps: int, transition_begin: int = 0,
              *, base: float = 1.0) -> Schedule:
    if transition_steps <= 0:
        return constant(init_value / base)
    if init_value == 0:
        if power != 1:
            raise ValueError("polynomial_schedule from init_value=0 is supported for power=1 (a linear warmup) only")
        body = warmup(transition_steps, 0.0) >> constant(end_value / base)
    else:
        body = (init_value / base) * polynomial(transition_steps, power, end_value / init_value)
    return sequence([constant(init_value / base), body], [transition_begin]) if transition_begin > 0 else body


def _opt_linear(init_value: float, end_value: float, transition_steps: int, transition_begin: int = 0,
                *, base: float = 1.0) -> Schedule:
    return _opt_poly(init_value, end_value, 1, transition_steps, transition_begin, base=base)


def _opt_exp(init_value: float, transition_steps: int, decay_rate: float, transition_begin: int = 0,
             staircase: bool = False, end_value: Optional[float] = None, *, base: float = 1.0) -> Schedule:
    if transition_steps <= 0 or decay_rate == 0:
        return constant(init_value / base)
    end = None if end_value is None else end_value / init_value
    body = (init_value / base) * exponential(decay_rate, decay_steps=transition_steps, staircase=staircase, end_factor=end)
    return sequence([constant(init_value / base), body], [transition_begin]) if transition_begin > 0 else body


def _opt_cosine(init_value: float, decay_steps: int, alpha: float = 0.0, exponent: float = 1.0,
                *, base: float = 1.0) -> Schedule:
    return (init_value / base) * cosine_decay(decay_steps, alpha, exponent)


def _opt_pc(init_value: float, boundaries_and_scales: Optional[Dict[int, float]] = None, *, base: float = 1.0) -> Schedule:
    items = sorted((boundaries_and_scales or {}).items())
    return (init_value / base) * piecewise_constant([b for b, _ in items], [s for _, s in items])


def _opt_pi(interpolate_type: str, init_value: float, boundaries_and_scales: Optional[Dict[int, float]] = None,
            *, base: float = 1.0) -> Schedule:
    items = sorted((boundaries_and_scales or {}).items())
    return (init_value / base) * piecewise_interpolate(interpolate_type, [b for b, _ in items], [s for _, s in items])


def _opt_warmup_const(init_value: float, peak_value: float, warmup_steps: int, *, base: float = 1.0) -> Schedule:
    return _opt_linear(init_value, peak_value, warmup_steps, base=base)


def _opt_warmup_cos(init_value: float, peak_value: float, warmup_steps: int, decay_steps: int, end_value: float = 0.0,
                    exponent: float = 1.0, *, base: float = 1.0) -> Schedule:
    alpha = 0.0 if peak_value == 0.0 else end_value / peak_value
    return sequence([_opt_linear(init_value, peak_value, warmup_steps, base=base),
                     _opt_cosine(peak_value, decay_steps - warmup_steps, alpha, exponent, base=base)], [warmup_steps])


def _opt_cos_1c(transition_steps: int, peak_value: float, pct_start: float = 0.3, div_factor: float = 25.0,
                final_div_factor: float = 1e4, *, base: float = 1.0) -> Schedule:
    if transition_steps <= 0:
        raise ValueError("transition_steps must be > 0")
    marks = {int(pct_start * transition_steps): div_factor, int(transition_steps): 1.0 / (div_factor * final_div_factor)}
    return _opt_pi("cosine", peak_value / div_factor, marks, base=base)


def _opt_lin_1c(transition_steps: int, peak_value: float, pct_start: float = 0.3, pct_final: float = 0.85,
                div_factor: float = 25.0, final_div_factor: float = 1e4, *, base: float = 1.0) -> Schedule:
    if transition_steps <= 0:
        raise ValueError("transition_steps must be > 0")
    marks = {int(pct_start * transition_steps): div_factor, int(pct_final * transition_steps): 1.0 / div_factor,
             transition_steps: 1.0 / final_div_factor}
    return _opt_pi("linear", peak_value / div_factor, marks, base=base)


def _opt_const(value: float, *, base: float = 1.0) -> Schedule:
    return constant(value / base)


def _opt_join(schedules: Sequence[Schedule], boundaries: Sequence[int]) -> Schedule:
    return sequence(schedules, boundaries)


_OPTAX: Dict[str, Callable[..., Schedule]] = {
    "constant_schedule": _opt_const,
    "linear_schedule": _opt_linear,
    "polynomial_schedule": _opt_poly,
    "exponential_decay": _opt_exp,
    "cosine_decay_schedule": _opt_cosine,
    "piecewise_constant_schedule": _opt_pc,
    "piecewise_interpolate_schedule": _opt_pi,
    "warmup_constant_schedule": _opt_warmup_const,
    "warmup_cosine_decay_schedule": _opt_warmup_cos,
    "cosine_onecycle_schedule": _opt_cos_1c,
    "linear_onecycle_schedule": _opt_lin_1c,
    "join_schedules": _opt_join,
}


# ---- text form ----------------------------------------------------------------------------------


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return repr(int(v)) + ".0" if v.is_integer() and abs(v) < 1e16 else repr(v)
    if isinstance(v, tuple):
        return repr([float(x) if isinstance(x, float) else x for x in v])
    return repr(v)


def _call_repr(name: str, params: Dict[str, Any]) -> str:
    """``name(positional..., keyword=value...)`` from the table, leaving out defaults."""
    args: List[str] = []
    for p in _TABLE[name].params:
        v = params[p.name]
        if p.positional:
            args.append(_fmt(v))
            continue
        if p.default is not _REQUIRED and (v is None and p.default is None or
                                           (v == p.default and type(v) is type(p.default))):
            continue
        args.append(f"{p.name}={_fmt(v)}")
    return f"{name}({', '.join(args)})"


def _chained(s: Schedule) -> bool:
    """Whether the text of s has a top-level '>>' (a warmup in front of a schedule)."""
    return s.family == "warmup" and bool(s.children)


def _wrap(s: Schedule) -> str:
    """The text of a factor of '*': parenthesised where '*' would otherwise regroup it on parsing
    (a warmup chain, and a scale or product, since '*' parses left to right)."""
    text = repr(s)
    return f"({text})" if s.family in ("scale", "product") or _chained(s) else text


def _hashable(v: Any) -> Any:
    if isinstance(v, list):
        return tuple(v)
    try:
        hash(v)
    except TypeError:
        return id(v)
    return v


def _literal(node: ast.AST, text: str) -> Any:
    try:
        return ast.literal_eval(node)
    except ValueError:
        raise ValueError(f"cannot parse schedule {text!r}: arguments must be numbers, strings, booleans or lists") from None


def _is_number(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) or (isinstance(node, ast.UnaryOp) and isinstance(node.operand, ast.Constant))


_PARSE_BUILDERS: Dict[str, Callable[..., Schedule]] = {name: _builder(name) for name in _TABLE}
_PARSE_BUILDERS["warmup_cosine"] = warmup_cosine


def _from_ast(node: ast.AST, text: str) -> Schedule:
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.RShift):
        return _from_ast(node.left, text) >> _from_ast(node.right, text)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult):
        left: Any = _literal(node.left, text) if _is_number(node.left) else _from_ast(node.left, text)
        right: Any = _literal(node.right, text) if _is_number(node.right) else _from_ast(node.right, text)
        out = left * right
        if not isinstance(out, Schedule):
            raise ValueError(f"cannot parse schedule {text!r}: '*' needs a schedule on one side")
        return out
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        name = node.func.id
        kwargs = {k.arg: _literal(k.value, text) for k in node.keywords if k.arg is not None}
        if name in ("sequence", "per_group"):
            if not (node.args and isinstance(node.args[0], ast.List)):
                raise ValueError(f"cannot parse schedule {text!r}: {name}([...]{', milestones=[...]' if name == 'sequence' else ''})")
            scheds = [_from_ast(e, text) for e in node.args[0].elts]
            if name == "per_group":
                return per_group(scheds)
            return sequence(scheds, *[_literal(a, text) for a in node.args[1:]], **kwargs)
        args = [_literal(a, text) for a in node.args]
        builder = _PARSE_BUILDERS.get(name)
        if builder is None:
            raise ValueError(
                f"cannot parse schedule {text!r}: unknown schedule {name!r}; known: {', '.join(_PARSE_BUILDERS)}")
        try:
            return builder(*args, **kwargs)
        except TypeError as exc:
            raise ValueError(f"cannot parse schedule {text!r}: {exc}") from None
    raise ValueError(f"cannot parse schedule {text!r}: expected calls like cosine(1000) joined by '>>' or '*'")


def _steps_array(steps: Any) -> npt.NDArray[np.int64]:
    if isinstance(steps, bool):
        raise TypeError("steps must be integers, got a bool")
    arr = np.asarray(steps)
    if arr.ndim > 1:
        raise ValueError(f"steps must be an integer or a 1-D array of integers, got shape {arr.shape}")
    arr = np.atleast_1d(arr)
    if arr.dtype.kind == "O":  # Python ints beyond int64 (or mixed objects): check each one
        arr = np.array([_int(v, "steps", minimum=0, maximum=INT64_MAX) for v in arr], dtype=np.int64)
    if arr.dtype.kind == "f":
        if not (np.isfinite(arr).all() and (arr == np.floor(arr)).all()):
            raise ValueError("steps must be whole numbers (integers), got non-integer values")
        if (arr >= 2.0**63).any():  # a float64 cast to int64 would wrap
            raise ValueError(f"steps must be <= 2**63 - 1, got {float(arr.max())!r}")
        if (arr < 0).any():  # refused here, before a cast that cannot hold -2**63 - 1 and below
            raise ValueError(f"steps must be >= 0, got {float(arr.min())!r}")
        arr = arr.astype(np.int64)
    elif arr.dtype.kind == "u":
        if (arr > INT64_MAX).any():  # uint64 -> int64 would wrap to a negative step
            raise ValueError(f"steps must be <= 2**63 - 1, got {int(arr.max())}")
    elif arr.dtype.kind != "i":
        raise TypeError(f"steps must be integers, got dtype {arr.dtype}")
    if (arr < 0).any():
        raise ValueError(f"steps must be >= 0, got {int(arr.min())}")
    return np.ascontiguousarray(arr, dtype=np.int64)
