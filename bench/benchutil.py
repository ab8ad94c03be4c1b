"""Sizes for the benchmarks. PYLRCORE_BENCH_QUICK=1 shrinks the inputs (CI runs the benchmarks once
with --benchmark-disable, as correctness tests)."""

import os

QUICK = os.environ.get("PYLRCORE_BENCH_QUICK", "") not in ("", "0")


def size(full: int, quick: int) -> int:
    return quick if QUICK else full
