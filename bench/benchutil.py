"""Sizes for the benchmarks. PYLRCORE_BENCH_QUICK=1 shrinks the inputs (CI runs the benchmarks once
with --benchmark-disable, as correctness tests)."""

import os
import statistics
import time
from typing import Callable, Dict, Optional, Tuple

QUICK = os.environ.get("PYLRCORE_BENCH_QUICK", "") not in ("", "0")


def size(full: int, quick: int) -> int:
    return quick if QUICK else full


def interleaved_times(methods: Dict[str, Callable[[], object]], rounds: int, setup: Optional[Callable[[], object]] = None,
                      warmup: int = 0) -> Tuple[Dict[str, float], Dict[str, float]]:
    """Every method once per round, round-robin (so drifting machine load hits them alike); the
    median time of each in ms, and its fastest round (the one least disturbed by other load).
    ``setup`` (if given) runs before every call of a method, untimed; the first ``warmup`` rounds run
    the same way but are not counted."""
    times: Dict[str, list] = {name: [] for name in methods}
    for round_ in range(warmup + rounds):
        for name, fn in methods.items():
            if setup is not None:
                setup()
            start = time.perf_counter()
            fn()
            elapsed = time.perf_counter() - start
            if round_ >= warmup:
                times[name].append(elapsed)
    medians = {name: statistics.median(t) * 1e3 for name, t in times.items()}
    return medians, {name: min(t) * 1e3 for name, t in times.items()}
