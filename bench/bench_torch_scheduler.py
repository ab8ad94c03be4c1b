"""Per-step cost of Scheduler.step() (warmup + cosine) with 1 and 100 param groups, float and
tensor lrs, vs torch's LambdaLR and SequentialLR(LinearLR, CosineAnnealingLR) doing the same
schedule. Only the scheduler step is timed (the optimizer step is the same for all)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pylrcore import schedules as S

torch = pytest.importorskip("torch")
from pylrcore.torch import Scheduler  # noqa: E402

lr_scheduler = torch.optim.lr_scheduler
W, T = 1000, 10**9  # long enough never to end during the benchmark
SCHED = S.warmup(W, start_factor=0.01) >> S.cosine(T)
STEPS_PER_ROUND = 200


def make_opt(groups: int, tensor: bool):
    params = [torch.nn.Parameter(torch.zeros(1)) for _ in range(groups)]
    base = np.geomspace(1e-5, 1e-2, groups)
    opt = torch.optim.SGD(
        [{"params": [p], "lr": torch.tensor(float(b), dtype=torch.float64) if tensor else float(b)} for p, b in zip(params, base)]
    )
    opt._opt_called = True  # scheduler-only timing: silence torch's order warning
    return opt


def lam(t: int) -> float:
    if t < W:
        return 0.01 + 0.99 * t / W
    return 0.5 * (1 + math.cos(math.pi * (t - W) / T))


MAKERS = {
    "pylrcore": lambda o: Scheduler(o, SCHED),
    "torch-LambdaLR": lambda o: lr_scheduler.LambdaLR(o, lam),
    "torch-SequentialLR": lambda o: lr_scheduler.SequentialLR(
        o, [lr_scheduler.LinearLR(o, 0.01, 1.0, W), lr_scheduler.CosineAnnealingLR(o, T)], milestones=[W]),
}


@pytest.mark.parametrize("impl", list(MAKERS))
@pytest.mark.parametrize("tensor", [False, True], ids=["float-lr", "tensor-lr"])
@pytest.mark.parametrize("groups", [1, 100])
def test_scheduler_step(benchmark, impl: str, tensor: bool, groups: int) -> None:
    benchmark.group = f"scheduler.step() x{STEPS_PER_ROUND}, {groups} groups, {'tensor' if tensor else 'float'} lrs"
    opt = make_opt(groups, tensor)
    sched = MAKERS[impl](opt)

    def run() -> None:
        for _ in range(STEPS_PER_ROUND):
            sched.step()

    benchmark.pedantic(run, rounds=15 if groups == 100 and impl != "pylrcore" else 40, iterations=1, warmup_rounds=1)
    t = sched.last_epoch
    expected = SCHED(t, [float(g["initial_lr"]) for g in opt.param_groups])
    got = [float(g["lr"]) for g in opt.param_groups]
    np.testing.assert_allclose(got, expected, rtol=1e-9)  # the recursive torch forms drift a little


ONE_CYCLE_STEPS = 10**6  # one-cycle has an end: long enough never to reach it during the benchmark
ONE_CYCLE = {
    "pylrcore": lambda o: Scheduler(o, S.one_cycle(ONE_CYCLE_STEPS, max_lr=0.1)),
    "torch-OneCycleLR": lambda o: lr_scheduler.OneCycleLR(o, max_lr=0.1, total_steps=ONE_CYCLE_STEPS),
}


@pytest.mark.parametrize("impl", list(ONE_CYCLE))
@pytest.mark.parametrize("groups", [1, 100])
def test_scheduler_step_one_cycle_with_momentum(benchmark, impl: str, groups: int) -> None:
    """One-cycle cycles SGD's momentum with the lr (torch's default): the cost of writing both."""
    benchmark.group = f"one-cycle step() x{STEPS_PER_ROUND} with momentum, {groups} groups"
    params = [torch.nn.Parameter(torch.zeros(1)) for _ in range(groups)]
    opt = torch.optim.SGD([{"params": [p]} for p in params], lr=0.01, momentum=0.9)
    opt._opt_called = True  # scheduler-only timing: silence torch's order warning
    sched = ONE_CYCLE[impl](opt)

    def run() -> None:
        for _ in range(STEPS_PER_ROUND):
            sched.step()

    benchmark.pedantic(run, rounds=15 if groups == 100 and impl != "pylrcore" else 40, iterations=1, warmup_rounds=1)
    s = S.one_cycle(ONE_CYCLE_STEPS, max_lr=0.1)
    t = sched.last_epoch
    np.testing.assert_allclose([g["lr"] for g in opt.param_groups], [s(t)] * groups, rtol=1e-12)
    np.testing.assert_allclose([g["momentum"] for g in opt.param_groups], [s.momentum(t)] * groups, rtol=1e-12)
