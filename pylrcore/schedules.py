"""Learning-rate schedules: builders that compose, evaluated in closed form by the compiled core.

>>> from pylrcore import schedules as S
>>> sched = S.warmup(100) >> S.cosine(900, eta_min=1e-5)
>>> sched
warmup(100) >> cosine(900, eta_min=1e-05)
>>> round(sched(100, base_lr=0.1), 6), round(sched(1000, base_lr=0.1), 6)
(0.1, 1e-05)
>>> S.Schedule.parse(repr(sched)) == sched
True

Families (torch's parameter names where torch has the family): :func:`constant`, :func:`step`,
:func:`multistep`, :func:`exponential`, :func:`linear`, :func:`polynomial`, :func:`cosine`,
:func:`warm_restarts`, :func:`cyclic`, :func:`one_cycle`, :func:`inverse_sqrt`, :func:`wsd`.
Composition: ``warmup(n) >> s`` (a warmup in front of any schedule), ``a >> b`` (b starts when a's
length is over), :func:`sequence` (explicit milestones), ``a * b`` (product), ``k * s`` (scaling).

A schedule maps (step, base_lr) to an lr. Relative schedules scale the group's base lr; values given
as absolute lrs (``eta_min``, cyclic ``max_lr``/``base_lr``, one-cycle ``max_lr``) are the same for
every group, as in torch.

Differences from torch, on purpose: past ``T_max`` cosine holds ``eta_min`` (torch's recursion rises
again); past ``total_steps`` one-cycle holds its final lr (torch raises, and extrapolates at
``total_steps``); warmup starts from ``start_factor`` (default ``1/steps``), never 0, so no update is
wasted (transformers' warmups start at 0).

Text form (``Schedule.parse``, ``repr``): Python-like calls of the builders joined by ``>>`` and
``*``, with numbers, strings, booleans and lists as arguments, e.g.
``"warmup(500, start_factor=0.1) >> cosine(10000, eta_min=1e-5)"`` or ``"0.5 * step(30, gamma=0.1)"``.
It is parsed, never evaluated.
"""

from __future__ import annotations

import ast
import numbers
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import numpy.typing as npt

from ._arrays import INT64_MAX, MAX_COUNT, check_int, check_real
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
    "inverse_sqrt",
    "wsd",
    "warmup",
    "warmup_cosine",
    "sequence",
]

Number = Union[int, float]
_F64 = npt.NDArray[np.float64]

# family name -> (core family code, parameter names in core order)
_FAMILIES: Dict[str, int] = {
    "constant": 0,
    "step": 1,
    "multistep": 2,
    "exponential": 3,
    "linear": 4,
    "polynomial": 5,
    "cosine": 6,
    "warm_restarts": 7,
    "cyclic": 8,
    "one_cycle": 9,
    "inverse_sqrt": 10,
    "wsd": 11,
    "warmup": 20,
    "sequence": 21,
    "product": 22,
    "scale": 23,
}
_CYCLIC_MODES = {"triangular": 0, "triangular2": 1, "exp_range": 2}
_ANNEAL = {"cos": 0, "linear": 1}
_DECAY = {"linear": 0, "cosine": 1, "1-sqrt": 2}
_WARMUP = {"linear": 0, "cosine": 1, "exponential": 2}


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


def _choice(value: Any, name: str, options: Dict[str, int]) -> str:
    if value not in options:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, options))}; got {value!r}")
    return str(value)


# ---- the Schedule object ------------------------------------------------------------------------


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
    def _nodes(self) -> List[Tuple[int, List[float], List[int], List[int]]]:
        nodes: List[Tuple[int, List[float], List[int], List[int]]] = []

        def emit(s: Schedule) -> int:
            kids = [emit(c) for c in s.children]
            if s.family == "warmup" and not kids:  # a warmup on its own ramps up to the base lr
                kids = [emit(constant())]
            p, ints = s._core_params()
            nodes.append((_FAMILIES[s.family], p, ints, kids))
            return len(nodes) - 1

        emit(self)
        return nodes

    def _core_params(self) -> Tuple[List[float], List[int]]:
        f, q = self.family, self.params
        nan = float("nan")
        if f == "constant":
            return [q["factor"]], []
        if f == "step":
            return [q["step_size"], q["gamma"]], []
        if f == "multistep":
            return [q["gamma"]], list(q["milestones"])
        if f == "exponential":
            return [q["gamma"], q["decay_steps"], float(q["staircase"])], []
        if f == "linear":
            return [q["start_factor"], q["end_factor"], q["total_iters"]], []
        if f == "polynomial":
            return [q["total_iters"], q["power"], q["end_factor"]], []
        if f == "cosine":
            return [q["T_max"], q["eta_min"]], []
        if f == "warm_restarts":
            return [q["T_0"], q["T_mult"], q["eta_min"]], []
        if f == "cyclic":
            down = q["step_size_down"] if q["step_size_down"] is not None else q["step_size_up"]
            base = nan if q["base_lr"] is None else q["base_lr"]
            return [q["max_lr"], base, q["step_size_up"], down, _CYCLIC_MODES[q["mode"]], q["gamma"]], []
        if f == "one_cycle":
            mx = nan if q["max_lr"] is None else q["max_lr"]
            return [
                mx,
                q["total_steps"],
                q["pct_start"],
                _ANNEAL[q["anneal_strategy"]],
                q["div_factor"],
                q["final_div_factor"],
                float(q["three_phase"]),
            ], []
        if f == "inverse_sqrt":
            ts = q["timescale"] if q["timescale"] is not None else (q["warmup_steps"] or 10_000)
            return [q["warmup_steps"], ts], []
        if f == "wsd":
            return [q["warmup_steps"], q["stable_steps"], q["decay_steps"], _DECAY[q["decay_type"]], q["min_lr_ratio"]], []
        if f == "warmup":
            sf = q["start_factor"] if q["start_factor"] is not None else 1.0 / q["steps"]
            return [q["steps"], sf, _WARMUP[q["kind"]]], []
        if f == "sequence":
            return [], list(q["milestones"])
        if f == "product":
            return [], []
        if f == "scale":
            return [q["factor"]], []
        raise AssertionError(f)

    def _compile(self) -> Any:
        if self._program is None:
            self._program = _core.ScheduleProgram(
                [(fam, [float(v) for v in p], [int(i) for i in ints], kids) for fam, p, ints, kids in self._nodes()]
            )
        return self._program

    def __call__(self, steps: Any, base_lr: Any = 1.0) -> Any:
        scalar_step = isinstance(steps, numbers.Integral) and not isinstance(steps, bool)
        step_arr = _steps_array(steps)
        scalar_base = isinstance(base_lr, numbers.Real) and not isinstance(base_lr, bool)
        base = np.atleast_1d(np.asarray(base_lr, dtype=np.float64))
        if base.ndim != 1 or base.size == 0:
            raise ValueError("base_lr must be a number or a 1-D sequence of per-group base lrs")
        if not (np.isfinite(base).all() and (base >= 0).all()):
            raise ValueError(f"base_lr must be finite and >= 0, got {base_lr!r}")
        out = self._compile().evaluate(step_arr, np.ascontiguousarray(base))
        if scalar_base:
            out = out[:, 0]
        if scalar_step:
            return float(out[0]) if scalar_base else out[0]
        return out

    def at(self, step: int) -> Tuple[float, float]:
        """The affine map at ``step``: ``lr = a * base_lr + c``."""
        a, c = self._compile().at(_int(step, "step", minimum=0, maximum=INT64_MAX))
        return float(a), float(c)

    # -- composition --
    @property
    def length(self) -> Optional[int]:
        """Number of steps after which the schedule has reached its end (None: it never ends)."""
        f, q = self.family, self.params
        if f in ("linear", "polynomial"):
            return int(q["total_iters"])
        if f == "cosine":
            return int(q["T_max"])
        if f == "one_cycle":
            return int(q["total_steps"])
        if f == "wsd":
            return int(q["warmup_steps"] + q["stable_steps"] + q["decay_steps"])
        if f == "warmup":
            rest = self.children[0].length if self.children else 0
            return None if rest is None else int(q["steps"]) + rest
        if f == "sequence":
            last = self.children[-1].length
            return None if last is None else int(q["milestones"][-1]) + last
        if f == "scale":
            return self.children[0].length
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
            head = _call_repr("warmup", q, _DEFAULTS["warmup"], positional=("steps",))
            if not self.children:
                return head
            child = self.children[0]
            # '>>' parses left to right: a warmup in front of a warmup-led chain needs parentheses
            text = f"({child!r})" if child.family == "warmup" and child.children else repr(child)
            return f"{head} >> {text}"
        if f == "sequence":
            kids = ", ".join(repr(c) for c in self.children)
            return f"sequence([{kids}], milestones={list(q['milestones'])})"
        if f == "product":
            return " * ".join(_wrap(c) for c in self.children)
        if f == "scale":
            return f"{_fmt(q['factor'])} * {_wrap(self.children[0])}"
        return _call_repr(f, q, _DEFAULTS[f], positional=_POSITIONAL.get(f, ()))

    def to_dict(self) -> Dict[str, Any]:
        """A JSON-ready description; ``Schedule.from_dict`` rebuilds (and re-validates) it."""
        d: Dict[str, Any] = {"family": self.family}
        d.update({k: (list(v) if isinstance(v, tuple) else v) for k, v in self.params.items()})
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
        if family == "product":
            out = children[0]
            for c in children[1:]:
                out = out * c
            return out
        if family == "scale":
            return _nonneg(d["factor"], "factor") * children[0]
        builder = _BUILDERS.get(family)
        if builder is None:
            raise ValueError(f"unknown schedule family {family!r}")
        return builder(**d)

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


# ---- builders -------------------------------------------------------------------------------------


def constant(factor: Number = 1.0) -> Schedule:
    """``factor * base_lr`` at every step."""
    return Schedule("constant", {"factor": _nonneg(factor, "factor")})


def step(step_size: int, gamma: Number = 0.1) -> Schedule:
    """torch ``StepLR``: ``base_lr * gamma ** (t // step_size)``."""
    return Schedule("step", {"step_size": _int(step_size, "step_size"), "gamma": _nonneg(gamma, "gamma")})


def multistep(milestones: Sequence[int], gamma: Number = 0.1) -> Schedule:
    """torch ``MultiStepLR``: multiply by ``gamma`` at each milestone (repeated milestones stack)."""
    if isinstance(milestones, (str, bytes)) or not isinstance(milestones, Sequence):
        raise TypeError(f"milestones must be a list of integers, got {milestones!r}")
    ms = [_int(m, "milestones", minimum=0) for m in milestones]
    if ms != sorted(ms):
        raise ValueError(f"milestones must be sorted in increasing order, got {list(milestones)}")
    return Schedule("multistep", {"milestones": tuple(ms), "gamma": _nonneg(gamma, "gamma")})


def exponential(
    gamma: Optional[Number] = None, *, decay_rate: Optional[Number] = None, decay_steps: int = 1, staircase: bool = False
) -> Schedule:
    """torch ``ExponentialLR`` (``gamma`` per step), or ``decay_rate ** (t / decay_steps)`` with
    ``staircase`` flooring the exponent (TensorFlow/optax ``exponential_decay``)."""
    if (gamma is None) == (decay_rate is None):
        raise ValueError("give exactly one of gamma (per-step factor) or decay_rate (per decay_steps)")
    rate = gamma if gamma is not None else decay_rate
    name = "gamma" if gamma is not None else "decay_rate"
    if not isinstance(staircase, bool):
        raise TypeError(f"staircase must be True or False, got {staircase!r}")
    return Schedule(
        "exponential",
        {"gamma": _nonneg(rate, name), "decay_steps": _int(decay_steps, "decay_steps"), "staircase": staircase},
    )


def linear(start_factor: Number = 1.0 / 3.0, end_factor: Number = 1.0, total_iters: int = 5) -> Schedule:
    """torch ``LinearLR``: the factor moves linearly from ``start_factor`` to ``end_factor``."""
    return Schedule(
        "linear",
        {
            "start_factor": _nonneg(start_factor, "start_factor"),
            "end_factor": _nonneg(end_factor, "end_factor"),
            "total_iters": _int(total_iters, "total_iters"),
        },
    )


def polynomial(total_iters: int = 5, power: Number = 1.0, end_factor: Number = 0.0) -> Schedule:
    """torch ``PolynomialLR`` (``end_factor=0``): ``(1 - min(t, T)/T) ** power``, towards ``end_factor``."""
    return Schedule(
        "polynomial",
        {
            "total_iters": _int(total_iters, "total_iters"),
            "power": _pos(power, "power"),
            "end_factor": _nonneg(end_factor, "end_factor"),
        },
    )


def cosine(T_max: int, eta_min: Number = 0.0) -> Schedule:  # noqa: N803 - torch's name
    """torch ``CosineAnnealingLR`` closed form; holds ``eta_min`` past ``T_max``."""
    return Schedule("cosine", {"T_max": _int(T_max, "T_max"), "eta_min": _nonneg(eta_min, "eta_min")})


def warm_restarts(T_0: int, T_mult: int = 1, eta_min: Number = 0.0) -> Schedule:  # noqa: N803
    """torch ``CosineAnnealingWarmRestarts`` (SGDR): cycles of ``T_0 * T_mult**k`` steps."""
    return Schedule(
        "warm_restarts",
        {"T_0": _int(T_0, "T_0"), "T_mult": _int(T_mult, "T_mult"), "eta_min": _nonneg(eta_min, "eta_min")},
    )


def cyclic(
    max_lr: Number,
    step_size_up: int = 2000,
    step_size_down: Optional[int] = None,
    mode: str = "triangular",
    gamma: Number = 1.0,
    base_lr: Optional[Number] = None,
) -> Schedule:
    """torch ``CyclicLR`` (Smith 2017). ``base_lr=None`` uses each group's base lr."""
    mx = _nonneg(max_lr, "max_lr")
    base = None if base_lr is None else _nonneg(base_lr, "base_lr")
    if _pos(gamma, "gamma") > 1:
        raise ValueError(f"gamma must be in (0, 1], got {gamma!r}: exp_range multiplies the amplitude by gamma**step")
    if base is not None and mx < base:
        raise ValueError(f"max_lr ({max_lr}) must be >= base_lr ({base_lr})")
    return Schedule(
        "cyclic",
        {
            "max_lr": mx,
            "step_size_up": _int(step_size_up, "step_size_up"),
            "step_size_down": None if step_size_down is None else _int(step_size_down, "step_size_down"),
            "mode": _choice(mode, "mode", _CYCLIC_MODES),
            "gamma": _pos(gamma, "gamma"),
            "base_lr": base,
        },
    )


def one_cycle(
    total_steps: int,
    max_lr: Optional[Number] = None,
    pct_start: Number = 0.3,
    anneal_strategy: str = "cos",
    div_factor: Number = 25.0,
    final_div_factor: Number = 1e4,
    three_phase: bool = False,
) -> Schedule:
    """torch ``OneCycleLR`` (Smith & Topin). ``max_lr=None`` uses each group's base lr as the peak."""
    pct = check_real(pct_start, "pct_start")
    if not 0 < pct < 1:
        raise ValueError(f"pct_start must be in (0, 1), got {pct_start!r}")
    if not isinstance(three_phase, bool):
        raise TypeError(f"three_phase must be True or False, got {three_phase!r}")
    return Schedule(
        "one_cycle",
        {
            "total_steps": _int(total_steps, "total_steps", minimum=2),
            "max_lr": None if max_lr is None else _pos(max_lr, "max_lr"),
            "pct_start": pct,
            "anneal_strategy": _choice(anneal_strategy, "anneal_strategy", _ANNEAL),
            "div_factor": _pos(div_factor, "div_factor"),
            "final_div_factor": _pos(final_div_factor, "final_div_factor"),
            "three_phase": three_phase,
        },
    )


def inverse_sqrt(warmup_steps: int = 0, timescale: Optional[int] = None) -> Schedule:
    """transformers ``get_inverse_sqrt_schedule``: linear warmup, then ``1/sqrt((t + ts - W)/ts)``
    with ``ts = timescale or warmup_steps or 10000``."""
    return Schedule(
        "inverse_sqrt",
        {
            "warmup_steps": _int(warmup_steps, "warmup_steps", minimum=0),
            "timescale": None if timescale is None else _int(timescale, "timescale"),
        },
    )


def wsd(
    warmup_steps: int, stable_steps: int, decay_steps: int, decay_type: str = "linear", min_lr_ratio: Number = 0.0
) -> Schedule:
    """Warmup-stable-decay (transformers ``get_wsd_schedule``): linear warmup from ``min_lr_ratio``,
    a constant phase, then a ``linear``/``cosine``/``1-sqrt`` decay to ``min_lr_ratio``."""
    ratio = check_real(min_lr_ratio, "min_lr_ratio")
    if not 0 <= ratio <= 1:
        raise ValueError(f"min_lr_ratio must be in [0, 1], got {min_lr_ratio!r}")
    return Schedule(
        "wsd",
        {
            "warmup_steps": _int(warmup_steps, "warmup_steps", minimum=0),
            "stable_steps": _int(stable_steps, "stable_steps", minimum=0),
            "decay_steps": _int(decay_steps, "decay_steps"),
            "decay_type": _choice(decay_type, "decay_type", _DECAY),
            "min_lr_ratio": ratio,
        },
    )


def warmup(steps: int, start_factor: Optional[Number] = None, kind: str = "linear") -> Schedule:
    """A warmup of ``steps`` steps in front of a schedule: ``warmup(500) >> cosine(10000)``.

    The factor rises from ``start_factor`` (default ``1/steps``) to the schedule's value at its step 0
    (``linear``, ``cosine`` or ``exponential`` ramp), then the schedule runs from its own step 0.
    """
    n = _int(steps, "steps")
    sf = None if start_factor is None else _nonneg(start_factor, "start_factor")
    if sf is not None and sf > 1:
        raise ValueError(f"start_factor must be <= 1, got {start_factor!r}")
    return Schedule("warmup", {"steps": n, "start_factor": sf, "kind": _choice(kind, "kind", _WARMUP)})


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


_BUILDERS: Dict[str, Callable[..., Schedule]] = {
    "constant": constant,
    "step": step,
    "multistep": multistep,
    "exponential": exponential,
    "linear": linear,
    "polynomial": polynomial,
    "cosine": cosine,
    "warm_restarts": warm_restarts,
    "cyclic": cyclic,
    "one_cycle": one_cycle,
    "inverse_sqrt": inverse_sqrt,
    "wsd": wsd,
    "warmup": warmup,
    "warmup_cosine": warmup_cosine,
}

_DEFAULTS: Dict[str, Dict[str, Any]] = {
    "constant": {"factor": 1.0},
    "step": {"gamma": 0.1},
    "multistep": {"gamma": 0.1},
    "exponential": {"decay_steps": 1, "staircase": False},
    "linear": {"start_factor": 1.0 / 3.0, "end_factor": 1.0, "total_iters": 5},
    "polynomial": {"total_iters": 5, "power": 1.0, "end_factor": 0.0},
    "cosine": {"eta_min": 0.0},
    "warm_restarts": {"T_mult": 1, "eta_min": 0.0},
    "cyclic": {"step_size_up": 2000, "step_size_down": None, "mode": "triangular", "gamma": 1.0, "base_lr": None},
    "one_cycle": {"max_lr": None, "pct_start": 0.3, "anneal_strategy": "cos", "div_factor": 25.0,
                  "final_div_factor": 1e4, "three_phase": False},
    "inverse_sqrt": {"warmup_steps": 0, "timescale": None},
    "wsd": {"decay_type": "linear", "min_lr_ratio": 0.0},
    "warmup": {"start_factor": None, "kind": "linear"},
}
_POSITIONAL: Dict[str, Tuple[str, ...]] = {
    "step": ("step_size",),
    "multistep": ("milestones",),
    "exponential": ("gamma",),
    "cosine": ("T_max",),
    "warm_restarts": ("T_0",),
    "cyclic": ("max_lr",),
    "one_cycle": ("total_steps",),
    "wsd": ("warmup_steps", "stable_steps", "decay_steps"),
}


# ---- text form ----------------------------------------------------------------------------------


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return repr(int(v)) + ".0" if v.is_integer() and abs(v) < 1e16 else repr(v)
    if isinstance(v, tuple):
        return repr(list(v))
    return repr(v)


def _call_repr(name: str, params: Dict[str, Any], defaults: Dict[str, Any], positional: Tuple[str, ...]) -> str:
    args = [_fmt(params[k]) for k in positional]
    for k, v in params.items():
        if k in positional or (k in defaults and defaults[k] == v and type(defaults[k]) is type(v)):
            continue
        if k in defaults and defaults[k] is None and v is None:
            continue
        args.append(f"{k}={_fmt(v)}")
    if name == "exponential" and params.get("decay_steps", 1) != 1 or name == "exponential" and params["staircase"]:
        args[0] = f"decay_rate={_fmt(params['gamma'])}"
    return f"{name}({', '.join(args)})"


def _wrap(s: Schedule) -> str:
    """The text of a factor of '*': parenthesised where '*' would otherwise regroup it on parsing
    (a warmup chain, and a scale or product, since '*' parses left to right)."""
    text = repr(s)
    grouped = s.family in ("scale", "product") or (s.family in ("warmup", "sequence") and (s.children or s.family == "sequence"))
    return f"({text})" if grouped else text


def _hashable(v: Any) -> Any:
    return tuple(v) if isinstance(v, list) else v


def _literal(node: ast.AST, text: str) -> Any:
    try:
        return ast.literal_eval(node)
    except ValueError:
        raise ValueError(f"cannot parse schedule {text!r}: arguments must be numbers, strings, booleans or lists") from None


def _from_ast(node: ast.AST, text: str) -> Schedule:
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.RShift):
        return _from_ast(node.left, text) >> _from_ast(node.right, text)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult):
        left: Any = _literal(node.left, text) if isinstance(node.left, (ast.Constant, ast.UnaryOp)) else _from_ast(node.left, text)
        right: Any = _literal(node.right, text) if isinstance(node.right, (ast.Constant, ast.UnaryOp)) else _from_ast(node.right, text)
        out = left * right
        if not isinstance(out, Schedule):
            raise ValueError(f"cannot parse schedule {text!r}: '*' needs a schedule on one side")
        return out
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        name = node.func.id
        kwargs = {k.arg: _literal(k.value, text) for k in node.keywords if k.arg is not None}
        if name == "sequence":
            if not (node.args and isinstance(node.args[0], ast.List)):
                raise ValueError(f"cannot parse schedule {text!r}: sequence([...], milestones=[...])")
            scheds = [_from_ast(e, text) for e in node.args[0].elts]
            return sequence(scheds, *[_literal(a, text) for a in node.args[1:]], **kwargs)
        args = [_literal(a, text) for a in node.args]
        builder = _BUILDERS.get(name)
        if builder is None:
            raise ValueError(f"cannot parse schedule {text!r}: unknown schedule {name!r}; known: {', '.join(_BUILDERS)}")
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
