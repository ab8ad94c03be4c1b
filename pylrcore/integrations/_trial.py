"""What the hyper-parameter search integrations (Optuna, Ray Tune) share: a range test inside a
trial, and the JSON-safe sample of its curve they store with the trial."""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from .._checks import check_int, check_positive
from ..torch.finder import FinderResult, LRFinder


def range_test(model: Any, optimizer: Any, criterion: Optional[Callable[..., Any]], train_loader: Any,
               multiplier: float, curve_points: int, options: Dict[str, Any]) -> Tuple[FinderResult, Optional[float], float, int]:
    """Runs the range test (``options`` passed on, no progress bar unless asked) and returns
    ``(result, suggestion * multiplier or None, multiplier, curve_points)``, the last two checked."""
    multiplier = check_positive(multiplier, "multiplier")
    curve_points = check_int(curve_points, "curve_points")
    options.setdefault("progress", False)
    result = LRFinder(model, optimizer, criterion).range_test(train_loader, **options)
    lr = None if result.lr is None else result.lr * multiplier  # the confirmed lr with confirm=
    return result, lr, multiplier, curve_points


def curve_sample(saved: Dict[str, Any], points: int) -> Dict[str, List[Any]]:
    """At most ``points`` evenly spaced points of the curve, from ``saved = result.to_dict()``
    (JSON-safe: non-finite losses are None)."""
    count = len(saved["lrs"])
    keep = np.unique(np.linspace(0, count - 1, min(points, count)).round().astype(int))
    return {"lrs": [saved["lrs"][i] for i in keep], "losses": [saved["losses"][i] for i in keep]}
