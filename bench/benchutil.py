"""Sizes for the benchmarks. PYLRCORE_BENCH_QUICK=1 shrinks the inputs (CI runs the benchmarks once
with --benchmark-disable, as correctness tests)."""

import os
import statistics
import time
from typing import Callable, Dict, Tuple

QUICK = os.environ.get("PYLRCORE_BENCH_QUICK", "") not in ("", "0")


def size(full: int, quick: int) -> int:
    return quick if QUICK else full


def interleaved_times(methods: Dict[str, Callable[[], object]], rounds: int) -> Tuple[Dict[str, float], Dict[str, float]]:
    """Every method once per round, round-robin (so drifting machine load hits them alike); the
    median time of each in ms, and its fastest round (the one least disturbed by other load)."""
    times: Dict[str, list] = {name: [] for name in methods}
    for _ in range(rounds):
        for name, fn in methods.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(t) * 1e3 for name, t in times.items()}
    return medians, {name: min(t) * 1e3 for name, t in times.items()}


def interleaved_medians(methods: Dict[str, Callable[[], object]], rounds: int) -> Dict[str, float]:
    """The medians of :func:`interleaved_times`."""
    return interleaved_times(methods, rounds)[0]
