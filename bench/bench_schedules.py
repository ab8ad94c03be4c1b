"""Full trajectory of warmup + cosine for 10^7 steps (1 and 8 param groups): pylrcore vs the numpy
closed form vs stepping torch's SequentialLR(LinearLR, CosineAnnealingLR) (10^5 steps, scaled)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from benchutil import size

from pylrcore import schedules as S

N = size(10_000_000, 20_000)
W, SF = 1000, 0.01
T = N - W
SCHED = S.warmup(W, start_factor=SF) >> S.cosine(T, eta_min=1e-6)
STEPS = np.arange(N)
GROUPS = {1: np.array([3e-4]), 8: np.geomspace(1e-5, 1e-3, 8)}


def numpy_closed_form(base: np.ndarray) -> np.ndarray:
    t = np.arange(N, dtype=np.float64)
    warm = SF + (1 - SF) * np.minimum(t, W) / W
    cos = 0.5 * (1 + np.cos(np.pi * np.clip(t - W, 0, T) / T))
    factor = np.where(t < W, warm, cos)
    floor = np.where(t < W, 0.0, 1e-6 * (1 - cos))
    return factor[:, None] * base[None, :] + floor[:, None]


@pytest.mark.benchmark(group="trajectory-1e7-warmup-cosine")
@pytest.mark.parametrize("groups", [1, 8])
def test_trajectory_pylrcore(benchmark, groups: int) -> None:
    out = benchmark(SCHED, STEPS, GROUPS[groups])
    np.testing.assert_allclose(out[:: max(1, N // 1000)], numpy_closed_form(GROUPS[groups])[:: max(1, N // 1000)],
                               rtol=1e-12, atol=1e-18)


@pytest.mark.benchmark(group="trajectory-1e7-warmup-cosine")
@pytest.mark.parametrize("groups", [1, 8])
def test_trajectory_numpy(benchmark, groups: int) -> None:
    out = benchmark(numpy_closed_form, GROUPS[groups])
    assert out.shape == (N, groups)


TORCH_STEPS = size(100_000, 2_000)


@pytest.mark.benchmark(group="trajectory-1e7-warmup-cosine")
@pytest.mark.parametrize("groups", [1, 8])
def test_trajectory_torch_stepped_scaled(benchmark, groups: int) -> None:
    """Times TORCH_STEPS steps of torch's SequentialLR; the reported time is scaled to N steps in the
    extra_info (pytest-benchmark shows the raw time of TORCH_STEPS)."""
    torch = pytest.importorskip("torch")
    base = GROUPS[groups]

    def run() -> list:
        params = [torch.nn.Parameter(torch.zeros(1)) for _ in base]
        opt = torch.optim.SGD([{"params": [p], "lr": float(b)} for p, b in zip(params, base)])
        sched = torch.optim.lr_scheduler.SequentialLR(
            opt,
            [torch.optim.lr_scheduler.LinearLR(opt, SF, 1.0, total_iters=W),
             torch.optim.lr_scheduler.CosineAnnealingLR(opt, T, eta_min=1e-6)],
            milestones=[W],
        )
        out = []
        for _ in range(TORCH_STEPS):
            out.append(sched.get_last_lr())
            opt._opt_called = True  # type: ignore[attr-defined]  # no real step: silence the order warning
            sched.step()
        return out

    out = benchmark.pedantic(run, rounds=3, iterations=1)
    benchmark.extra_info["scaled_to_steps"] = N
    benchmark.extra_info["scale"] = N / TORCH_STEPS
    ours = SCHED(np.arange(TORCH_STEPS), base)
    np.testing.assert_allclose(np.array(out), ours, rtol=1e-10, atol=1e-16)
    assert math.isfinite(out[-1][0])
