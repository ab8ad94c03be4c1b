"""Buffers as the core reads them: (address, element count, dtype code), gathered without copies.

One home for what the CPU scan (nonfinite), the guard's gradient table, the CUDA kernels (cuda) and
the snapshot need to know about arrays and tensors: the dtype codes (``_core.DType``, defined once in
csrc/pylrcore/step/float_bits.hpp), which tensors can be read or copied by address, and the errors that
name a buffer and say how to fix it. torch is never imported here: tensors are recognised by their
attributes, and torch is taken from ``sys.modules`` once a tensor exists.
"""

from __future__ import annotations

import sys
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from ._native import _core

# Codes by dtype name (numpy's and torch's names agree for these four).
CODES: Dict[str, int] = {d.name: int(d) for d in _core.DType}
NUMPY_CODES = {np.dtype(name): code for name, code in CODES.items() if name != "bfloat16"}
SUPPORTED = "float32, float64, float16 or bfloat16"

_torch_code_cache: Dict[Any, int] = {}


def torch_codes() -> Dict[Any, int]:
    """{torch dtype: code}; empty while torch is not imported (then no object is a tensor)."""
    if not _torch_code_cache:
        torch = sys.modules.get("torch")
        if torch is None:
            return {}
        for name, code in CODES.items():
            _torch_code_cache[getattr(torch, name)] = code
    return _torch_code_cache


def is_tensor(obj: Any) -> bool:
    return hasattr(obj, "data_ptr") and hasattr(obj, "is_contiguous") and hasattr(obj, "layout")


def dense(t: Any) -> bool:
    """True when strided ``t`` covers exactly numel() elements from data_ptr(), in some dimension
    order (contiguous, channels_last, any permutation of a contiguous tensor): enough for an
    order-free reduction such as the NaN count and the sum of squares."""
    if t.is_contiguous():
        return True
    expected = 1
    for stride, size in sorted((st, sz) for st, sz in zip(t.stride(), t.shape) if sz != 1):
        if stride != expected:
            return False
        expected *= size
    return True


def plain_host(t: Any) -> bool:
    """Whether ``t``'s value is exactly its bytes, which may be copied by address: a plain tensor (or
    Parameter) in CPU memory, dense, contiguous, non-empty, with no lazy conjugate/negative bit."""
    torch = sys.modules["torch"]
    return (
        type(t) in (torch.Tensor, torch.nn.Parameter)
        and t.device.type == "cpu"
        and t.layout is torch.strided
        and not t.is_quantized
        and t.numel() > 0
        and t.is_contiguous()
        and not t.is_conj()
        and not t.is_neg()
    )


def gather_host(items: List[Any]) -> Tuple[List[int], List[int], List[int]]:
    """(address, count, dtype code) per host buffer (numpy array or CPU tensor). Runs every training
    step, so the common case (contiguous float tensors) takes a short path; anything else goes
    through :func:`describe_host`, which validates fully and raises the error that names the buffer."""
    pointers: List[int] = []
    counts: List[int] = []
    codes: List[int] = []
    torch = sys.modules.get("torch")
    tensor_type = torch.Tensor if torch is not None else ()
    by_dtype = torch_codes()
    strided = getattr(torch, "strided", None)
    for i, item in enumerate(items):
        if isinstance(item, tensor_type) and item.layout is strided and item.is_cpu and item.is_contiguous():
            code = by_dtype.get(item.dtype)
            if code is not None:
                try:
                    pointers.append(item.data_ptr())
                except RuntimeError:  # no storage (fake/functional tensor subclasses)
                    describe_host(item, f"buffers[{i}]")
                    raise
                counts.append(item.numel())
                codes.append(code)
                continue
        elif type(item) is np.ndarray and item.flags.c_contiguous:
            code = NUMPY_CODES.get(item.dtype)
            if code is not None:
                pointers.append(item.__array_interface__["data"][0])
                counts.append(item.size)
                codes.append(code)
                continue
        pointer, count, code = describe_host(item, f"buffers[{i}]")
        pointers.append(pointer)
        counts.append(count)
        codes.append(code)
    return pointers, counts, codes


def describe_host(item: Any, name: str) -> Tuple[int, int, int]:
    """(address, count, code) of a buffer the CPU scan reads in place, or the error that says why not."""
    if type(item) is np.ndarray or (not is_tensor(item) and isinstance(item, np.ndarray)):  # subclasses too
        return _describe_array(item, name)
    if is_tensor(item):
        _, pointer, count, code = describe_tensor(item, name, "cpu")
        return pointer, count, code
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


def _describe_array(arr: np.ndarray, name: str) -> Tuple[int, int, int]:
    dtype = arr.dtype
    code = NUMPY_CODES.get(dtype)
    if code is None:
        if dtype.name == "bfloat16" and dtype.itemsize == 2:  # ml_dtypes.bfloat16
            code = CODES["bfloat16"]
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


def describe_tensor(t: Any, name: str, device_type: str) -> Tuple[Any, int, int, int]:
    """(device, address, count, code) of a tensor read in place on ``device_type`` ("cpu": the CPU
    scan, "cuda": pylrcore.torch.cuda's kernels), or the error that names it and says what to do."""
    if t is None:
        raise TypeError(f"{name} is None (a parameter without .grad?); leave those out")
    if not hasattr(t, "data_ptr") or not hasattr(t, "device"):
        raise TypeError(f"{name} is a {type(t).__name__}; expected a {device_type.upper()} torch.Tensor")
    torch = sys.modules["torch"]  # a tensor exists, so torch is imported
    if t.layout is not torch.strided:
        fix = f"{name}.coalesce().values()" if t.layout is torch.sparse_coo else f"{name}.values()"
        raise ValueError(f"{name} is a sparse tensor ({t.layout}); scan its stored values instead: {fix}")
    device = t.device
    if device.type != device_type:
        if device_type == "cpu":
            raise ValueError(
                f"{name} is on {device}; scan() reads host memory. Device tensors belong to pylrcore.torch.cuda "
                f"(see pylrcore.torch.cuda.is_available()); or pass {name}.cpu() (a copy)"
            )
        hint = " (pylrcore.nonfinite.scan checks CPU tensors)" if device.type == "cpu" else ""
        raise ValueError(f"{name} is on {device}; pylrcore.torch.cuda reads CUDA tensors{hint}")
    code: Optional[int] = torch_codes().get(t.dtype)
    if code is None:
        raise TypeError(_dtype_message(name, str(t.dtype), t.dtype.is_complex, numpy=False))
    if not t.is_contiguous():
        layout = f"shape {tuple(t.shape)}" + (f", stride {t.stride()}" if hasattr(t, "stride") else "")
        raise ValueError(f"{name} is not contiguous ({layout}); pass {name}.contiguous()")
    try:
        pointer = int(t.data_ptr())
    except RuntimeError as exc:  # tensor subclasses without storage (fake/functional tensors)
        raise TypeError(f"{name} ({type(t).__name__}) has no readable storage: {exc}") from None
    return device, pointer, int(t.numel()), code


def _dtype_message(name: str, dtype: str, is_complex: bool, *, numpy: bool) -> str:
    message = f"{name} has dtype {dtype}; pylrcore reads {SUPPORTED} buffers"
    if is_complex:
        fix = f"{name}.view({name}.real.dtype)" if numpy else f"torch.view_as_real({name})"
        return f"{message}. For complex values read the real view (no copy): {fix}"
    convert = f"{name}.astype(np.float64)" if numpy else f"{name}.float()"
    return (
        f"{message}. Integers and booleans cannot be NaN/Inf; other floats (float8, long double) "
        f"need a copy: {convert}"
    )
