"""One pass over many buffers: any NaN/Inf, where the first one is, and the sum of squares.

Meant to run every training step on all gradients (a NaN guard, a global gradient norm): the
buffers are read in place, without copies, each byte once, split over threads when large.

Accepted buffers: numpy arrays and CPU torch tensors that are C-contiguous, of dtype float32,
float64, float16 or bfloat16 (numpy bfloat16 from ``ml_dtypes`` too). torch is never imported by
this module; tensors are recognised by their attributes.

Exactness: NaN/Inf are found from the exponent bits (the largest finite values are finite). The
sum of squares is accumulated in double from squares that are exact for float32/16 and bfloat16,
with a worst-case relative error of 1.1e-13 whatever the size (measured: ~3e-16 on 2e7 float32).
With a NaN present ``sumsq`` is NaN, otherwise with an infinity it is inf; float64 inputs above
~1.3e154 can make it overflow to inf while ``finite`` stays True. The result is bit-identical for
any number of threads.

>>> import numpy as np
>>> r = scan([np.ones(4, np.float32), np.array([3.0, np.nan, np.inf])])
>>> r.finite, r.first_bad, r.nonfinite_count
(False, (1, 1), 2)
>>> scan([np.full(4, 0.5, np.float16)]).norm
1.0
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from ._arrays import check_int
from ._native import _core

__all__ = ["ScanResult", "scan", "all_finite"]

# Dtype codes of csrc/pylrcore/scan.hpp (enum class DType).
_F32, _F64, _F16, _BF16 = 0, 1, 2, 3
_NUMPY_CODES = {np.dtype(np.float32): _F32, np.dtype(np.float64): _F64, np.dtype(np.float16): _F16}
_TORCH_NAMES = {"float32": _F32, "float64": _F64, "float16": _F16, "bfloat16": _BF16}
_SUPPORTED = "float32, float64, float16 or bfloat16"


@dataclass(frozen=True, repr=False)
class ScanResult:
    """Outcome of :func:`scan`.

    ``first_bad`` is ``(buffer index, flat element index)`` of the first NaN/Inf, in buffer order
    then element (C) order, or None when everything is finite. ``sumsq`` is None when the scan was
    run with ``sumsq=False``.
    """

    finite: bool
    first_bad: Optional[Tuple[int, int]]
    nonfinite_count: int
    sumsq: Optional[float]

    @property
    def norm(self) -> Optional[float]:
        """The global L2 norm, ``sqrt(sumsq)`` (NaN/inf like sumsq; None if sumsq was not asked for)."""
        return None if self.sumsq is None else math.sqrt(self.sumsq)

    def __repr__(self) -> str:
        parts = [f"finite={self.finite}"]
        if not self.finite:
            parts += [f"first_bad={self.first_bad}", f"nonfinite_count={self.nonfinite_count}"]
        if self.sumsq is not None:
            parts += [f"sumsq={self.sumsq:.6g}", f"norm={self.norm:.6g}"]
        return f"ScanResult({', '.join(parts)})"


def scan(buffers: Any, *, sumsq: bool = True, threads: Optional[int] = None) -> ScanResult:
    """Check ``buffers`` for NaN/Inf in one pass, optionally summing the squares of all elements.

    ``buffers``: a list (or any iterable, e.g. a generator of ``p.grad``) of numpy arrays and CPU
    torch tensors, or a single array/tensor. ``sumsq=False`` skips the squares (a cheaper integer
    test). ``threads``: None chooses from the input size (one thread per 8 MiB) and the CPUs
    available; an integer >= 1 forces that many.

    Raises TypeError for something that is not a float buffer (names ``buffers[i]`` and the fix),
    ValueError for a buffer that cannot be read in place (not contiguous, on a GPU, sparse).

    >>> import numpy as np
    >>> scan([np.array([3.0, 4.0])])
    ScanResult(finite=True, sumsq=25, norm=5)
    """
    items = _as_buffer_list(buffers)
    # the core takes an unsigned 32-bit count; more threads than 4096 is never useful
    n_threads = 0 if threads is None else check_int(threads, "threads", minimum=1, maximum=4096)
    pointers, counts, codes = _gather(items)
    # `items` holds every buffer until the native call returns (it runs without the GIL).
    finite, bad_buffer, bad_index, bad_count, total = _core.scan(pointers, counts, codes, bool(sumsq), n_threads)
    return ScanResult(
        finite=bool(finite),
        first_bad=None if finite else (int(bad_buffer), int(bad_index)),
        nonfinite_count=int(bad_count),
        sumsq=float(total) if sumsq else None,
    )


def all_finite(buffers: Any, *, threads: Optional[int] = None) -> bool:
    """True when no element of ``buffers`` is NaN or +-Inf (``scan(buffers, sumsq=False).finite``).

    >>> import numpy as np
    >>> all_finite([np.zeros(3), np.array([np.finfo(np.float32).max], np.float32)])
    True
    """
    return scan(buffers, sumsq=False, threads=threads).finite


# --- gathering (address, count, dtype code) without copying --------------------------------------


def _gather(items: List[Any]) -> Tuple[List[int], List[int], List[int]]:
    """(address, count, dtype code) per buffer. Runs every training step, so the common case (CPU
    strided contiguous float tensors) takes a short path; anything else goes through _describe,
    which validates fully and raises the error that names the buffer."""
    pointers: List[int] = []
    counts: List[int] = []
    codes: List[int] = []
    torch = sys.modules.get("torch")  # never imported here: if absent, no item is a tensor
    tensor_type = torch.Tensor if torch is not None else ()
    torch_codes = _torch_codes(torch) if torch is not None else {}
    strided = getattr(torch, "strided", None)
    for i, item in enumerate(items):
        if isinstance(item, tensor_type) and item.layout is strided and item.is_cpu and item.is_contiguous():
            code = torch_codes.get(item.dtype)
            if code is not None:
                try:
                    pointers.append(item.data_ptr())
                except RuntimeError:  # no storage (fake/functional tensor subclasses)
                    _describe(item, i)
                    raise
                counts.append(item.numel())
                codes.append(code)
                continue
        elif type(item) is np.ndarray and item.flags.c_contiguous:
            code = _NUMPY_CODES.get(item.dtype)
            if code is not None:
                pointers.append(item.__array_interface__["data"][0])
                counts.append(item.size)
                codes.append(code)
                continue
        pointer, count, code = _describe(item, i)
        pointers.append(pointer)
        counts.append(count)
        codes.append(code)
    return pointers, counts, codes



def _is_tensor(obj: Any) -> bool:
    return hasattr(obj, "data_ptr") and hasattr(obj, "is_contiguous") and hasattr(obj, "layout")


def _as_buffer_list(buffers: Any) -> List[Any]:
    if isinstance(buffers, np.ndarray) or _is_tensor(buffers):
        return [buffers]  # one buffer; its index in the result is 0
    if isinstance(buffers, dict):
        raise TypeError(
            "buffers is a dict; pass its values, e.g. scan(list(buffers.values())) "
            "(first_bad then indexes that list)"
        )
    if isinstance(buffers, (str, bytes)) or not isinstance(buffers, Iterable):
        raise TypeError(
            f"buffers must be a list of numpy arrays / CPU torch tensors (or one of them), "
            f"got {type(buffers).__name__}"
        )
    return list(buffers)


def _describe(item: Any, i: int) -> Tuple[int, int, int]:
    if type(item) is np.ndarray:
        return _describe_array(item, i)
    if _is_tensor(item):
        return _describe_tensor(item, i)
    if isinstance(item, np.ndarray):  # ndarray subclasses (np.memmap, ...)
        return _describe_array(item, i)
    name = f"buffers[{i}]"
    if item is None:
        raise TypeError(
            f"{name} is None (a parameter without .grad?); leave those out, e.g. "
            "[p.grad for p in model.parameters() if p.grad is not None]"
        )
    if isinstance(item, (list, tuple, float, int)):
        raise TypeError(
            f"{name} is a {type(item).__name__}, not an array; scan() reads arrays in place. "
            "If buffers is a single flat list of numbers, pass [np.asarray(buffers, dtype=np.float64)]"
        )
    raise TypeError(f"{name} is a {type(item).__name__}; each buffer must be a numpy array or a CPU torch tensor")


def _describe_array(arr: np.ndarray, i: int) -> Tuple[int, int, int]:
    name = f"buffers[{i}]"
    dtype = arr.dtype
    code = _NUMPY_CODES.get(dtype)
    if code is None:
        if dtype.name == "bfloat16" and dtype.itemsize == 2:  # ml_dtypes.bfloat16
            code = _BF16
        elif dtype.kind == "f" and not dtype.isnative:
            raise ValueError(
                f"{name} has byte-swapped dtype {dtype.str!r}; pass "
                f"{name}.astype({name}.dtype.newbyteorder('='))"
            )
        else:
            raise TypeError(_dtype_message(name, str(dtype), dtype.kind == "c", numpy=True))
    if not arr.flags.c_contiguous:
        raise ValueError(
            f"{name} is not C-contiguous (shape {arr.shape}, strides {arr.strides}); "
            f"pass np.ascontiguousarray({name})"
        )
    return arr.ctypes.data if arr.size else 0, int(arr.size), code


def _describe_tensor(t: Any, i: int) -> Tuple[int, int, int]:
    name = f"buffers[{i}]"
    torch = sys.modules["torch"]  # a tensor exists, so torch is imported
    if t.layout is not torch.strided:
        fix = f"{name}.coalesce().values()" if t.layout is torch.sparse_coo else f"{name}.values()"
        raise ValueError(f"{name} is a sparse tensor ({t.layout}); scan its stored values instead: {fix}")
    device = t.device
    if device.type != "cpu":
        raise ValueError(
            f"{name} is on {device}; scan() reads host memory. Device tensors belong to pylrcore.cuda "
            f"(see pylrcore.cuda.is_available()); or pass {name}.cpu() (a copy)"
        )
    code = _torch_codes(torch).get(t.dtype)
    if code is None:
        raise TypeError(_dtype_message(name, str(t.dtype), t.dtype.is_complex, numpy=False))
    if not t.is_contiguous():
        raise ValueError(
            f"{name} is not contiguous (shape {tuple(t.shape)}, stride {t.stride()}); pass {name}.contiguous()"
        )
    try:
        pointer = int(t.data_ptr())
    except RuntimeError as exc:  # tensor subclasses without storage (fake/functional tensors)
        raise TypeError(f"{name} ({type(t).__name__}) has no readable storage: {exc}") from None
    return pointer, int(t.numel()), code


_torch_code_cache: Dict[Any, int] = {}


def _torch_codes(torch: Any) -> Dict[Any, int]:
    if not _torch_code_cache:
        for attr, code in _TORCH_NAMES.items():
            _torch_code_cache[getattr(torch, attr)] = code
    return _torch_code_cache


def _dtype_message(name: str, dtype: str, is_complex: bool, *, numpy: bool) -> str:
    message = f"{name} has dtype {dtype}; scan() reads {_SUPPORTED} buffers"
    if is_complex:
        fix = f"{name}.view({name}.real.dtype)" if numpy else f"torch.view_as_real({name})"
        return f"{message}. For complex values scan the real view (no copy): {fix}"
    convert = f"{name}.astype(np.float64)" if numpy else f"{name}.float()"
    return (
        f"{message}. Integers and booleans cannot be NaN/Inf; other floats (float8, long double) "
        f"need a copy: {convert}"
    )
