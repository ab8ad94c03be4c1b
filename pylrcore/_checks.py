"""Argument checks shared by the public functions: one place that names the argument and the fix.

Curves are 1-D sequences of real numbers: lists, tuples, numpy arrays, or CPU torch tensors.
They are converted to contiguous float64 (integer and float16/32 inputs convert exactly).
"""

from __future__ import annotations

import math
import numbers
import operator
from typing import Any, Dict

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


def _to_numpy(values: Any, name: str) -> np.ndarray:
    if hasattr(values, "detach") and hasattr(values, "device"):  # a torch tensor, without importing torch
        if str(values.device) != "cpu":
            raise ValueError(f"{name} is on {values.device}; pass {name}.cpu() (curves are read on the host)")
        values = values.detach().numpy() if str(values.dtype) != "torch.bfloat16" else values.detach().float().numpy()
    try:
        return np.asarray(values)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be a 1-D sequence of real numbers: {exc}") from None


def as_curve(values: Any, name: str, *, min_size: int = 1) -> FloatArray:
    """Validate and convert a 1-D curve (losses, lrs) to contiguous float64 (a strided view such as a
    column ``a[:, 0]`` is copied)."""
    arr = _to_numpy(values, name)
    kind = arr.dtype.kind
    if kind not in "fiu":
        raise TypeError(
            f"{name} must hold real numbers (a float or integer dtype), got dtype {arr.dtype}; "
            f"convert it with np.asarray({name}, dtype=float)"
        )
    if arr.ndim != 1:
        raise ValueError(
            f"{name} must be 1-D, got shape {arr.shape}; pass one curve at a time "
            f"(e.g. {name}.ravel() if it is a column)"
        )
    if arr.size < min_size:
        what = "is empty" if arr.size == 0 else f"has {arr.size} points"
        raise ValueError(f"{name} {what}; at least {min_size} are needed")
    return np.ascontiguousarray(arr, dtype=np.float64)


def same_length(a: np.ndarray, a_name: str, b: np.ndarray, b_name: str) -> None:
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"{a_name} and {b_name} must have the same length, got {a.shape[0]} and {b.shape[0]}")


def check_beta(beta: Any, name: str = "beta") -> float:
    try:
        value = float(beta)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a float in (0, 1), got {beta!r}") from None
    if not (0.0 < value < 1.0):
        raise ValueError(
            f"{name} must be in the open interval (0, 1), got {beta!r} "
            "(the weight of the running average, e.g. 0.98; torch-lr-finder's smooth_f=0.05 is beta=0.95)"
        )
    return value


#: The largest integer the core holds (int64). Counts that the core adds to, multiplies or
#: increments are bounded lower by their callers (see ``MAX_COUNT``).
INT64_MAX = 2**63 - 1
#: Bound for counts the core combines (step + warmup, skip_start + skip_end, counter + 1): 2**62
#: leaves room for any such sum in int64 and is far beyond any real run.
MAX_COUNT = 2**62


def check_int(value: Any, name: str, *, minimum: int = 0, maximum: int = INT64_MAX, hint: str = "") -> int:
    """An integer (not a bool, not a float; numpy integers are fine) in [minimum, maximum];
    ``hint`` says what the number means. Every integer that reaches the core passes here, so none
    wraps around or overflows on the way in."""
    what = f" ({hint})" if hint else ""
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be an integer{what}, got {value!r}")
    try:
        out = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer{what}, got {value!r}") from None
    if out < minimum:
        raise ValueError(f"{name} must be >= {minimum}{what}, got {out}")
    if out > maximum:
        bound = {INT64_MAX: "2**63 - 1", MAX_COUNT: "2**62"}.get(maximum, str(maximum))
        raise ValueError(f"{name} must be <= {bound}{what}, got {out}")
    return out


def check_real(value: Any, name: str) -> float:
    """A finite real number: Python or numpy numbers and 0-d tensors (anything with __float__), not
    bools or strings."""
    if isinstance(value, (bool, str, bytes)) or not hasattr(type(value), "__float__"):
        raise TypeError(f"{name} must be a number, got {value!r}")
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(out):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return out


def check_positive(value: Any, name: str, *, allow_zero: bool = False) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number, got {value!r}") from None
    ok = out >= 0 if allow_zero else out > 0
    if not (ok and np.isfinite(out)):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")
    return out


def as_settings(values: Dict[str, Any], defaults: Dict[str, Any], what: str) -> Dict[str, Any]:
    """Check names and types of keyword settings (ints stay ints, the rest become floats).

    Ranges, and how settings relate, are checked by the core, whose errors name the setting too.
    """
    out: Dict[str, Any] = {}
    for name, value in values.items():
        if name not in defaults:
            raise TypeError(f"{what} got an unknown setting {name!r}; known: {', '.join(defaults)}")
        if isinstance(defaults[name], int):
            out[name] = check_int(value, name, minimum=-MAX_COUNT, maximum=MAX_COUNT)
        elif isinstance(value, numbers.Real) and not isinstance(value, bool):
            out[name] = float(value)
        else:
            raise TypeError(f"{name} must be a real number (default {defaults[name]}), got {value!r}")
    return out
