"""Optional CUDA support. ``import pylrcore`` never needs a GPU, a driver or a CUDA runtime."""

from __future__ import annotations

from types import ModuleType
from typing import Optional

__all__ = ["is_available", "device_count", "unavailable_reason"]


def _module() -> Optional[ModuleType]:
    try:
        from . import _cuda
    except ImportError:
        return None
    return _cuda


def device_count() -> int:
    """Number of CUDA devices the compiled CUDA extension can use (0 when it was not built)."""
    mod = _module()
    return int(mod.device_count()) if mod is not None else 0


def is_available() -> bool:
    """True when pylrcore was built with its CUDA kernels and a CUDA device is usable."""
    return device_count() > 0


def unavailable_reason() -> str:
    """Why CUDA is not available ('' when it is)."""
    mod = _module()
    if mod is None:
        return "pylrcore was built without its CUDA extension (no CUDA compiler at build time, or PYLRCORE_CUDA=OFF)"
    return str(mod.unavailable_reason())
