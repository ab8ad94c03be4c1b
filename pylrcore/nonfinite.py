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
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, List, Optional, Tuple

import numpy as np

from ._checks import check_int
from ._native import _core
from ._tensors import gather_host, is_tensor

__all__ = ["ScanResult", "scan", "all_finite"]



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
    available, at most ``torch.get_num_threads()`` once torch is loaded (with the environment variable
    ``PYLRCORE_SCAN_OPENMP=1`` the scan then runs on torch's OpenMP team instead of threads of its own;
    off by default: see bench/README.md); an integer >= 1 forces that many.

    Raises TypeError for something that is not a float buffer (names ``buffers[i]`` and the fix),
    ValueError for a buffer that cannot be read in place (not contiguous, on a GPU, sparse).

    >>> import numpy as np
    >>> scan([np.array([3.0, 4.0])])
    ScanResult(finite=True, sumsq=25, norm=5)
    """
    items = _as_buffer_list(buffers)
    # the core takes an unsigned 32-bit count; more threads than 4096 is never useful
    n_threads = 0 if threads is None else check_int(threads, "threads", minimum=1, maximum=4096)
    pointers, counts, codes = gather_host(items)
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


def _as_buffer_list(buffers: Any) -> List[Any]:
    if isinstance(buffers, np.ndarray) or is_tensor(buffers):
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
