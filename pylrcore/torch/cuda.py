"""Optional CUDA support: gradient checks and the range test's loss curve without a host sync.

``import pylrcore`` and ``import pylrcore.torch.cuda`` never need a GPU, a driver, a CUDA runtime or
torch; torch is imported inside the functions that take tensors.

:class:`GradCheck` registers many CUDA tensors (the gradients) once; each call is one kernel
launch on the current stream that reads every element once, counts NaN/Inf from the exponent bits
(the largest finite values are finite), finds the first one, and sums the squares in double for a
global norm. The results land in device tensors (``found_inf``, ``sumsq``, ``info``), ready for
torch ops and fused optimizers; nothing waits for the GPU until you read them.

:class:`LossTracker` keeps the LR range test's smoothed loss, best value and stop step on the
device; ``request()`` queues a copy to pinned host memory and ``poll()`` picks it up when it has
arrived, so a range test reads the curve every k steps without stalling the GPU.

Status: built and tested through CPU twins of the same code (tests/cpp), but not yet run on a GPU
(none was available), so nothing else uses these paths yet. The planned hook-up, for the GPU run:

* ``Guard`` with CUDA gradients: a :class:`GradCheck` on the gradients instead of the CPU table
  and the torch fallback; ``_cuda.DeviceGuard(device, loss_config, norm_config, actions,
  max_consecutive_skips, core_state, stream).decide(loss_ptr, ..., found_inf, clip, grad_scale,
  record_row, stream)`` after it, with ``optimizer.found_inf`` / ``optimizer.grad_scale`` set to
  those device tensors (fused/capturable optimizers skip and clip without a sync; with a GradScaler
  its own stay); decision records copied back without blocking, raise/rollback/scale_lr applied up
  to k steps late.
* ``LRFinder`` on CUDA: ``LossTracker(num_iter, beta=1 - smooth_f, kind="plain", diverge_th=...)``,
  ``append(loss)`` each iteration (after the device all-reduce under DDP), ``request()`` every
  ``sync_every`` iterations, stop when ``poll()`` shows a stop step, ``history()`` at the end.
* Still to build: the schedule evaluated on the device at a device step counter, writing every
  group's 0-d lr tensor in place.

>>> import pylrcore.torch.cuda
>>> isinstance(pylrcore.torch.cuda.is_available(), bool)
True
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any, Iterable, List, Optional, Tuple

import numpy as np

from .._checks import check_int, check_real
from .._tensors import describe_tensor
from ..nonfinite import ScanResult
from ..smoothing import ema_kind_code
from ..suggestion import DIVERGE_FACTOR

if TYPE_CHECKING:
    import torch

__all__ = [
    "is_available",
    "device_count",
    "unavailable_reason",
    "GradCheck",
    "LossTracker",
    "LossTrackerState",
]

# Dtype codes of csrc/pylrcore/step/float_bits.hpp (enum class DType).


def _module() -> Optional[ModuleType]:
    try:
        from .. import _cuda
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


def _require() -> ModuleType:
    mod = _module()
    if mod is None or int(mod.device_count()) == 0:
        raise RuntimeError(f"pylrcore.torch.cuda is not available here: {unavailable_reason()}")
    return mod


def _stream(device: "torch.device") -> int:
    import torch

    return int(torch.cuda.current_stream(device).cuda_stream)


# --- tensors -> (device, addresses, counts, dtype codes), with errors that name the argument -------


def _describe(t: Any, name: str) -> Tuple[Any, int, int, int]:
    """(device, address, count, code) of one CUDA tensor, or the error that says what is wrong."""
    return describe_tensor(t, name, "cuda")


def _gather(tensors: Iterable[Any], name: str) -> Tuple[Any, List[int], List[int], List[int]]:
    if isinstance(tensors, (str, bytes)) or not isinstance(tensors, Iterable) or hasattr(tensors, "data_ptr"):
        raise TypeError(f"{name} must be a list of CUDA tensors, got {type(tensors).__name__}")
    device = None
    addresses: List[int] = []
    counts: List[int] = []
    codes: List[int] = []
    for i, t in enumerate(tensors):
        d, address, count, code = _describe(t, f"{name}[{i}]")
        if device is None:
            device = d
        elif d != device:
            raise ValueError(f"{name}[{i}] is on {d} but {name}[0] is on {device}; one table per device")
        addresses.append(address)
        counts.append(count)
        codes.append(code)
    if device is None:
        raise ValueError(f"{name} is empty; pass at least one tensor (its device is the table's)")
    return device, addresses, counts, codes


# --- the gradient check ---------------------------------------------------------------------------


class GradCheck:
    """NaN/Inf check and sum of squares of many CUDA tensors, one kernel launch per call, no sync.

    ``GradCheck(tensors)`` uploads the table once (addresses, sizes, dtypes; a one-time sync).
    ``check(tensors)`` queues one launch on the current stream; pass the tensors each time (new
    ``.grad`` tensors after ``zero_grad(set_to_none=True)`` are re-pointed asynchronously), or
    nothing when they are the same tensors (CUDA graphs, ``set_to_none=False``). Results, written
    in place on the device by every check:

    * ``found_inf``: float32 0-d, 1.0 if some element is NaN/Inf (a fused optimizer's
      ``found_inf``), else 0.0;
    * ``sumsq``: float64 0-d, the sum of squares (NaN/inf like :func:`pylrcore.nonfinite.scan`);
    * ``info``: int64 ``[count, first bad tensor, first bad element]`` (-1s when none).

    The sum is deterministic: the same bits for the same data, whatever the grid (see
    csrc/pylrcore/step/chunk_check.hpp). One check at a time per GradCheck (ordered on one stream).
    """

    def __init__(self, tensors: Iterable["torch.Tensor"]) -> None:
        device, addresses, counts, codes = _gather(tensors, "tensors")
        mod = _require()
        import torch

        self.device: torch.device = device
        self._layout = (counts, codes)
        self._addresses = addresses
        self._table = mod.CheckTable(device.index, addresses, counts, codes, _stream(device))
        self.found_inf = torch.zeros((), dtype=torch.float32, device=device)
        self.sumsq = torch.zeros((), dtype=torch.float64, device=device)
        self.info = torch.full((3,), -1, dtype=torch.int64, device=device)

    def check(self, tensors: Optional[Iterable["torch.Tensor"]] = None) -> None:
        """Queue the check (and a re-point if ``tensors`` moved) on the current stream."""
        stream = _stream(self.device)
        if tensors is not None:
            device, addresses, counts, codes = _gather(tensors, "tensors")
            if device != self.device or (counts, codes) != self._layout:
                raise ValueError(
                    "tensors differ from the registered table in device, number, sizes or dtypes; "
                    "make a new GradCheck for them"
                )
            if addresses != self._addresses:
                self._table.repoint(addresses, stream)
                self._addresses = addresses
        self._table.check(self.found_inf.data_ptr(), self.sumsq.data_ptr(), self.info.data_ptr(), stream)

    __call__ = check

    def norm(self) -> "torch.Tensor":
        """The global L2 norm as a 0-d float64 device tensor (no sync)."""
        return self.sumsq.sqrt()

    def result(self) -> ScanResult:
        """The last check's outcome on the host. Waits for the GPU: for logs, not every step."""
        count, tensor, element = (int(v) for v in self.info.tolist())
        return ScanResult(
            finite=count == 0,
            first_bad=None if count == 0 else (tensor, element),
            nonfinite_count=count,
            sumsq=float(self.sumsq.item()),
        )

    def __repr__(self) -> str:
        return f"GradCheck({len(self._addresses)} tensors on {self.device}, {self._table.chunks} chunks)"


# --- the range test's loss tracker ----------------------------------------------------------------


@dataclass(frozen=True)
class LossTrackerState:
    """The tracker's state at some step. ``stop_step`` is the first step that diverged
    (smoothed > diverge_th x best) or was non-finite, -1 while the run goes on."""

    steps: int
    finite: int
    smoothed: float
    best: float
    best_step: int
    diverged_step: int
    nonfinite_step: int
    stop_step: int

    @property
    def stopped(self) -> bool:
        return self.stop_step >= 0


def _check_ema(beta: Any, kind: Any, diverge_th: Any) -> Tuple[float, int, float]:
    b = check_real(beta, "beta")
    if not 0.0 <= b < 1.0:
        raise ValueError(f"beta must be in [0, 1) (0: no smoothing; torch-lr-finder's smooth_f is 1 - beta), got {beta!r}")
    code = int(ema_kind_code(kind))  # smoothing's names and codes
    th = check_real(diverge_th, "diverge_th")  # finite
    if not th > 1.0:
        raise ValueError(f"diverge_th must be a finite number > 1, got {diverge_th!r}")
    return b, code, th


def _loss_address(loss: Any, device: Any) -> Tuple[int, int]:
    """(address, dtype code) of a one-element CUDA loss tensor on `device`."""
    d, address, count, code = _describe(loss, "loss")
    if count != 1:
        raise ValueError(f"loss must hold one value (a 0-d tensor), got {count} elements; pass loss.detach().mean()?")
    if d != device:
        raise ValueError(f"loss is on {d} but the tracker is on {device}")
    return address, code


class LossTracker:
    """The LR range test's loss curve on the device: smoothing, best, divergence, first NaN/Inf.

    ``append(loss)`` queues a one-thread kernel that reads the 0-d loss tensor where it lies.
    ``request()`` queues a copy of the state to pinned host memory; ``poll()`` returns it once it
    has arrived (None before), never blocking. ``state()`` and ``history()`` wait for the GPU.
    The rules are :class:`pylrcore.torch.finder.LRFinder`'s: ``beta = 1 - smooth_f`` with
    ``kind="plain"`` (torch-lr-finder) or ``"debiased"`` (fastai); the smoothed curve is
    :class:`pylrcore.EMA`'s, bit for bit, on the same (float64-widened) losses.
    """

    def __init__(
        self,
        capacity: int,
        *,
        beta: float = 0.95,
        kind: str = "plain",
        diverge_th: float = DIVERGE_FACTOR,
        device: Any = None,
    ) -> None:
        n = check_int(capacity, "capacity", minimum=1)
        b, code, th = _check_ema(beta, kind, diverge_th)
        mod = _require()
        import torch

        self.device = torch.device("cuda", torch.cuda.current_device()) if device is None else torch.device(device)
        if self.device.type != "cuda":
            raise ValueError(f"device must be a CUDA device, got {self.device}")
        if self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        self._tracker = mod.LossTracker(self.device.index, {"beta": b, "kind": code, "diverge_th": th}, n, _stream(self.device))

    def append(self, loss: "torch.Tensor") -> None:
        address, code = _loss_address(loss, self.device)
        self._tracker.append(address, code, _stream(self.device))

    def request(self) -> None:
        self._tracker.request_snapshot(_stream(self.device))

    def poll(self) -> Optional[LossTrackerState]:
        state = self._tracker.poll()
        return None if state is None else LossTrackerState(**state)

    def state(self) -> LossTrackerState:
        return LossTrackerState(**self._tracker.state(_stream(self.device)))

    def history(self) -> Tuple[np.ndarray, np.ndarray]:
        """(losses, smoothed) as float64 arrays, one entry per recorded step. Waits for the GPU."""
        losses, smoothed = self._tracker.history(_stream(self.device))
        return np.asarray(losses, dtype=np.float64), np.asarray(smoothed, dtype=np.float64)

    def reset(self) -> None:
        self._tracker.reset(_stream(self.device))
