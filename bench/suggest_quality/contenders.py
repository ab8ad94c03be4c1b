"""Every contender's pick from one raw range test.

All contenders see the same training trajectory (the same model, batches and lr ladder), so the
comparison's noise cancels. Each peer's *recorded* curve is what that peer would have recorded on
this trajectory -- its own smoothing and its own early stop, replayed exactly from its source -- and
its pick comes from its real code where it can be called on a curve (torch-lr-finder's
``LRFinder.plot(suggest_lr=True)``, Lightning's ``_LRFinder.suggestion()``), or from pylrcore's
compatibility modes, bit-exact with fastai's four rules (fastai does not install beside this torch).
pylrcore's own methods get the raw losses, as its finder records them.
"""

from __future__ import annotations

import contextlib
import io
import math
from typing import Callable, Dict, List, Optional

import numpy as np

import pylrcore

NUM_IT = 100


def torch_lr_finder_record(raw: np.ndarray) -> np.ndarray:
    """torch-lr-finder 0.2.2 ``range_test``: plain EMA (smooth_f 0.05) seeded with the first loss,
    best = running minimum, stop after recording a loss > 5 x best. NaN compares false: it goes on."""
    out: List[float] = []
    best = math.inf
    for i, loss in enumerate(raw):
        if i == 0:
            best = loss
        else:
            loss = 0.05 * loss + 0.95 * out[-1]
            if loss < best:
                best = loss
        out.append(loss)
        if loss > 5 * best:
            break
    return np.array(out)


def lightning_record(raw: np.ndarray) -> np.ndarray:
    """Lightning 2.6 ``_LRCallback``: EMA (beta 0.98) debiased by ``1 - beta**(global_step + 1)``
    with global_step already 1 at the first batch; stop (after recording) when smoothed > 4 x best
    from the second step on; best set at step 1 and whenever smaller."""
    out: List[float] = []
    avg, best = 0.0, 0.0
    for i, loss in enumerate(raw):
        step = i + 1
        avg = 0.98 * avg + 0.02 * loss
        smoothed = avg / (1 - 0.98 ** (step + 1))
        stop = step > 1 and smoothed > 4 * best
        if smoothed < best or step == 1:
            best = smoothed
        out.append(smoothed)
        if stop:
            break
    return np.array(out)


def fastai_record(raw: np.ndarray) -> np.ndarray:
    """fastai 2.7 ``Recorder`` + ``LRFinder``: AvgSmoothLoss (float32 lerp, beta 0.98, debiased),
    best from inf, stop after recording a smoothed loss > 4 x best."""
    smoothed = pylrcore.ema(raw, 0.98, kind="fastai", nonfinite="mark")
    out: List[float] = []
    best = math.inf
    for v in smoothed:
        out.append(float(v))
        if v < best:
            best = float(v)
        if v > 4 * best:
            break
    return np.array(out)


def _torch_lr_finder_pick(lrs: np.ndarray, record: np.ndarray) -> Optional[float]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch
    from torch_lr_finder import LRFinder

    model = torch.nn.Linear(1, 1)
    finder = LRFinder(model, torch.optim.SGD(model.parameters(), lr=1e-3), torch.nn.MSELoss())
    finder.history = {"lr": list(map(float, lrs[: len(record)])), "loss": list(map(float, record))}
    fig, ax = plt.subplots()
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            out = finder.plot(skip_start=10, skip_end=5, suggest_lr=True, ax=ax)
    except Exception:  # noqa: BLE001 -- the peer raises on too-short curves: no pick
        return None
    finally:
        plt.close(fig)
    lr = out[1] if isinstance(out, tuple) else None
    return float(lr) if lr is not None and math.isfinite(lr) else None


def _lightning_pick(lrs: np.ndarray, record: np.ndarray) -> Optional[float]:
    from pytorch_lightning.tuner.lr_finder import _LRFinder

    finder = _LRFinder("exponential", float(lrs[0]), float(lrs[-1]), NUM_IT)
    finder.results = {"lr": list(map(float, lrs[: len(record)])), "loss": list(map(float, record))}
    lr = finder.suggestion(skip_begin=10, skip_end=1)
    return float(lr) if lr is not None else None


def _compat(method: str) -> Callable[[np.ndarray, np.ndarray], Optional[float]]:
    def pick(lrs: np.ndarray, record: np.ndarray) -> Optional[float]:
        s = pylrcore.suggest(lrs[: len(record)], record, method, num_it=NUM_IT)
        return s.lr

    return pick


def _min_over_10(lrs: np.ndarray, record: np.ndarray) -> Optional[float]:
    """The rule users apply by eye to torch-lr-finder's plot: the lr at its minimum, / 10."""
    finite = np.isfinite(record)
    if not finite.any():
        return None
    i = int(np.nanargmin(np.where(finite, record, np.nan)))
    return float(lrs[i]) / 10


def _own(method: str) -> Callable[[np.ndarray, np.ndarray], Optional[float]]:
    def pick(lrs: np.ndarray, raw: np.ndarray) -> Optional[float]:
        return pylrcore.suggest(lrs[: len(raw)], raw, method).lr

    return pick


#: name -> (which record it reads, rule). "raw": pylrcore's finder records the raw losses.
CONTENDERS: Dict[str, tuple] = {
    **{f"pylrcore {m}": ("raw", _own(m)) for m in pylrcore.METHODS},
    "torch-lr-finder": ("torch_lr_finder", _torch_lr_finder_pick),
    "lightning": ("lightning", _lightning_pick),
    "fastai valley": ("fastai", _compat("fastai_valley")),
    "fastai steep": ("fastai", _compat("fastai_steep")),
    "fastai minimum": ("fastai", _compat("fastai_minimum")),
    "fastai slide": ("fastai", _compat("fastai_slide")),
    "minimum/10": ("torch_lr_finder", _min_over_10),
}

RECORDS = {"raw": lambda raw: raw, "torch_lr_finder": torch_lr_finder_record, "lightning": lightning_record,
           "fastai": fastai_record}


def picks(lrs: np.ndarray, raw: np.ndarray, names: Optional[List[str]] = None) -> Dict[str, Optional[float]]:
    records = {k: f(raw) for k, f in RECORDS.items()}
    out: Dict[str, Optional[float]] = {}
    for name in names or list(CONTENDERS):
        source, rule = CONTENDERS[name]
        lr = rule(lrs, records[source])
        out[name] = float(f"{lr:.4g}") if lr is not None else None  # trained at 4 significant digits
    return out
