# Type stubs for the compiled core (pylrcore._core). Hand-written; keep in sync with csrc/bindings.cpp.
from typing import Any, Dict, Optional, Tuple

import numpy as np
import numpy.typing as npt

_F64 = npt.NDArray[np.float64]
_ArrayLike = npt.ArrayLike

class EmaKind:
    plain: EmaKind
    debiased: EmaKind
    lightning: EmaKind
    def __int__(self) -> int: ...

class NonFinite:
    mark: NonFinite
    hold: NonFinite
    raise_: NonFinite
    def __int__(self) -> int: ...

def ema(losses: _ArrayLike, beta: float, kind: EmaKind, nonfinite: NonFinite) -> _F64: ...

class Ema:
    def __init__(self, beta: float, kind: EmaKind = ..., nonfinite: NonFinite = ...) -> None: ...
    def update(self, loss: float, index_for_errors: int = 0) -> float: ...
    def update_many(self, losses: _ArrayLike) -> _F64: ...
    def reset(self) -> None: ...
    @property
    def value(self) -> float: ...
    @property
    def beta(self) -> float: ...
    @property
    def kind(self) -> EmaKind: ...
    @property
    def nonfinite(self) -> NonFinite: ...
    @property
    def count(self) -> int: ...
    @property
    def nonfinite_count(self) -> int: ...
    def get_state(self) -> Tuple[float, float, int, int, float]: ...
    def set_state(self, average: float, beta_power: float, count: int, nonfinite: int, last: float) -> None: ...

def gradient(y: _ArrayLike, x: Optional[_ArrayLike] = None, edge_order: int = 1) -> _F64: ...

def suggest(
    lrs: _ArrayLike,
    losses: _ArrayLike,
    method: int,
    beta: float,
    diverge_factor: float,
    zone_lo: float,
    zone_hi: float,
    min_points: int,
    lr_diff: int,
    thresh: float,
    adjust: float,
    skip_start: int,
    skip_end: int,
    num_it: int,
) -> Dict[str, Any]: ...

# @@stubs@@
