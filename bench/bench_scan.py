"""Non-finite check (+ global norm) of ResNet-50-sized float32 gradients: pylrcore.scan vs torch.

The 161 parameter tensors of ResNet-50 (25,557,032 elements, 102 MB), built by hand from the
bottleneck layout (torchvision is not needed). Every method is in the same group and asserts its
answer on the clean gradients; the checks are also shown one NaN once, outside the timing.
torch runs with 2 threads (the machine these numbers were taken on has 2 cores).

PYLRCORE_BENCH_QUICK=1 shrinks the network 8x in width (CI runs this once with --benchmark-disable).
`python bench/bench_scan.py [rounds]` runs every method round-robin instead (see interleaved()).

Measured on the 2-core VM (torch 2.13 CPU, medians): scan+sumsq ~3.1 ms back to back, ~4.3 ms
interleaved, where it runs right after a torch op whose OpenMP worker still spins on the other core
(OMP_WAIT_POLICY=PASSIVE: ~3.4 ms); flat.sum() 2.4-2.7 ms, t.sum() per tensor 2.9-3.7 ms,
_foreach_norm 3.6-4.7 ms, isfinite loop 33-38 ms.
"""

from __future__ import annotations

import math
import os
from typing import Callable, List, Tuple

import pytest

from pylrcore.nonfinite import ScanResult, all_finite, scan

torch = pytest.importorskip("torch")

QUICK = os.environ.get("PYLRCORE_BENCH_QUICK", "") not in ("", "0")
GROUP = "resnet50-grads-quick" if QUICK else "resnet50-grads-fp32"


def resnet50_shapes(width: int = 64, classes: int = 1000) -> List[Tuple[int, ...]]:
    """Parameter shapes of torchvision's resnet50 (conv weights, BN weight+bias, fc), in order."""
    shapes: List[Tuple[int, ...]] = [(width, 3, 7, 7), (width,), (width,)]
    inplanes = width
    for planes, blocks in ((width, 3), (2 * width, 4), (4 * width, 6), (8 * width, 3)):
        for block in range(blocks):
            shapes += [(planes, inplanes, 1, 1), (planes,), (planes,)]
            shapes += [(planes, planes, 3, 3), (planes,), (planes,)]
            shapes += [(4 * planes, planes, 1, 1), (4 * planes,), (4 * planes,)]
            if block == 0:  # projection shortcut
                shapes += [(4 * planes, inplanes, 1, 1), (4 * planes,), (4 * planes,)]
            inplanes = 4 * planes
    return shapes + [(classes, inplanes), (classes,)]


SHAPES = resnet50_shapes(8, 10) if QUICK else resnet50_shapes()
assert len(SHAPES) == 161
if not QUICK:
    assert sum(math.prod(s) for s in SHAPES) == 25_557_032

torch.set_num_threads(2)
_gen = torch.Generator().manual_seed(0)
GRADS = [torch.randn(*shape, generator=_gen) * 1e-3 for shape in SHAPES]
FLAT = torch.cat([g.flatten() for g in GRADS])  # the same bytes in one buffer: the plain-read floor
SUMSQ = float(FLAT.double().pow(2).sum())
NORM = math.sqrt(SUMSQ)


def detects_one_nan(check: Callable[[], bool], where: int = 100) -> bool:
    """Runs a check once with a NaN planted in GRADS[where] (no copy), then restores the value."""
    target = GRADS[where].view(-1)
    saved = float(target[7])
    target[7] = math.nan
    try:
        return not check()
    finally:
        target[7] = saved


# --- the checks -----------------------------------------------------------------------------------


def pylrcore_scan() -> ScanResult:
    return scan(GRADS)


def pylrcore_all_finite() -> bool:
    return all_finite(GRADS)


def torch_isfinite_loop() -> bool:
    return all(bool(torch.isfinite(g).all()) for g in GRADS)


def torch_cat_isfinite() -> bool:
    return bool(torch.isfinite(torch.cat([g.flatten() for g in GRADS])).all())


def torch_foreach_norm() -> float:
    return float(torch.linalg.vector_norm(torch.stack(torch._foreach_norm(GRADS))))


def torch_amp_check() -> bool:
    # What GradScaler.unscale_ runs: checks and multiplies in place (here by 1.0), so it also writes.
    found_inf = torch.zeros(1)
    torch._amp_foreach_non_finite_check_and_unscale_(GRADS, found_inf, torch.ones(1))
    return bool(found_inf.item() == 0)


def read_sum_per_tensor() -> float:
    return sum(float(g.sum()) for g in GRADS)


def read_flat_sum() -> float:
    return float(FLAT.sum())


# --- benchmarks -----------------------------------------------------------------------------------


@pytest.mark.benchmark(group=GROUP)
def test_scan_pylrcore_finite_and_norm(benchmark) -> None:
    result = benchmark(pylrcore_scan)
    assert result.finite and result.sumsq == pytest.approx(SUMSQ, rel=1e-12)
    assert detects_one_nan(lambda: pylrcore_scan().finite)


@pytest.mark.benchmark(group=GROUP)
def test_scan_pylrcore_finite_only(benchmark) -> None:
    assert benchmark(pylrcore_all_finite) is True
    assert detects_one_nan(pylrcore_all_finite)


@pytest.mark.benchmark(group=GROUP)
def test_scan_pylrcore_one_thread(benchmark) -> None:
    result = benchmark(scan, GRADS, threads=1)
    assert result.finite and result.sumsq == pytest.approx(SUMSQ, rel=1e-12)


@pytest.mark.benchmark(group=GROUP)
def test_scan_torch_isfinite_loop(benchmark) -> None:
    assert benchmark(torch_isfinite_loop) is True
    assert detects_one_nan(torch_isfinite_loop)


@pytest.mark.benchmark(group=GROUP)
def test_scan_torch_cat_isfinite(benchmark) -> None:
    assert benchmark(torch_cat_isfinite) is True
    assert detects_one_nan(torch_cat_isfinite)


@pytest.mark.benchmark(group=GROUP)
def test_scan_torch_foreach_norm(benchmark) -> None:
    # Norm only (a NaN would show as a NaN norm); float32 accumulation, hence the looser tolerance.
    assert benchmark(torch_foreach_norm) == pytest.approx(NORM, rel=1e-4)


@pytest.mark.benchmark(group=GROUP)
def test_scan_torch_amp_unscale_check(benchmark) -> None:
    assert benchmark(torch_amp_check) is True
    assert detects_one_nan(torch_amp_check)


@pytest.mark.benchmark(group=GROUP)
def test_scan_read_sum_per_tensor(benchmark) -> None:
    assert math.isfinite(benchmark(read_sum_per_tensor))


@pytest.mark.benchmark(group=GROUP)
def test_scan_read_flat_sum(benchmark) -> None:
    assert benchmark(read_flat_sum) == pytest.approx(float(FLAT.double().sum()), rel=1e-3, abs=1e-2)


# --- `python bench/bench_scan.py [rounds]`: all methods interleaved round by round ----------------
# On a shared, noisy machine a background job hits every method equally, so ratios of these
# medians are steadier than ratios between pytest-benchmark tests that ran minutes apart. It is also
# closer to a training step: the scan starts right after torch ops, not after another scan.

METHODS = {
    "pylrcore.scan (finite+sumsq)": pylrcore_scan,
    "pylrcore.all_finite": pylrcore_all_finite,
    "pylrcore.scan threads=1": lambda: scan(GRADS, threads=1),
    "torch isfinite(t).all() loop": torch_isfinite_loop,
    "torch cat + isfinite": torch_cat_isfinite,
    "torch _foreach_norm (norm only)": torch_foreach_norm,
    "torch _amp_foreach_non_finite_check": torch_amp_check,
    "read: t.sum() per tensor": read_sum_per_tensor,
    "read: flat.sum() one buffer": read_flat_sum,
}


def interleaved(rounds: int) -> None:
    from benchutil import interleaved_times

    medians = interleaved_times(METHODS, rounds)[0]
    base = medians["pylrcore.scan (finite+sumsq)"]
    print(f"{len(GRADS)} tensors, {FLAT.numel():,} elements, {FLAT.numel() * 4 / 1e6:.1f} MB, {rounds} rounds")
    for name, ms in medians.items():
        print(f"{name:38s} {ms:9.3f} ms   {ms / base:7.2f}x scan")


if __name__ == "__main__":
    import sys

    interleaved(int(sys.argv[1]) if len(sys.argv) > 1 else 30)
