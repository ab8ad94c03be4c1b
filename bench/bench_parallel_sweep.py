"""K learning rates trained at once (pylrcore.sweep: one vmap pass per step) against what a user
would otherwise run: K trainings one after another, each a plain torch loop over the same batches.
Small MLP (20-64-64-5, batch 32) and small CNN (1x8x8 -> conv 8 -> conv 16 -> 10, batch 32), Adam,
1 thread. extra_info holds K and the steps; the ratio is sequential / sweep at the same K."""

from __future__ import annotations

import copy
from typing import Any, List

import pytest
from benchutil import size

torch = pytest.importorskip("torch")
from pylrcore.parallel_sweep import sweep  # noqa: E402

STEPS = size(60, 3)


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def mlp() -> Any:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(20, 64), torch.nn.ReLU(), torch.nn.Linear(64, 64), torch.nn.ReLU(),
                               torch.nn.Linear(64, 5))


def cnn() -> Any:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 16, 3, padding=1),
                               torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten(), torch.nn.Linear(64, 10))


def batches(kind: str) -> List[Any]:
    g = torch.Generator().manual_seed(0)
    if kind == "mlp":
        x = torch.randn(32 * 16, 20, generator=g)
        y = torch.randint(0, 5, (32 * 16,), generator=g)
    else:
        x = torch.randn(32 * 16, 1, 8, 8, generator=g)
        y = torch.randint(0, 10, (32 * 16,), generator=g)
    return list(zip(x.split(32), y.split(32)))


def sequential(model: Any, data: List[Any], lrs: List[float], steps: int) -> List[float]:
    finals = []
    for lr in lrs:
        m = copy.deepcopy(model)
        opt = torch.optim.Adam(m.parameters(), lr=lr)
        crit = torch.nn.CrossEntropyLoss()
        for t in range(steps):
            x, y = data[t % len(data)]
            opt.zero_grad()
            loss = crit(m(x), y)
            loss.backward()
            opt.step()
        finals.append(loss.item())
    return finals


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
@pytest.mark.parametrize("k", [2, 4, 8, 16])
@pytest.mark.parametrize("impl", ["pylrcore-sweep", "sequential"])
def test_parallel_sweep(benchmark, impl, k, kind):
    benchmark.group = f"parallel sweep: {kind}, K={k}, {STEPS} steps"
    model = mlp() if kind == "mlp" else cnn()
    data = batches(kind)
    lrs = [1e-4 * 100 ** (i / (k - 1)) for i in range(k)]  # 1e-4 .. 1e-2: every replica trains
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    if impl == "pylrcore-sweep":
        def run() -> List[float]:
            result = sweep(model, opt, torch.nn.CrossEntropyLoss(), data, lrs, steps=STEPS)
            assert result.vectorized
            return result.losses[:, -1].tolist()
    else:
        def run() -> List[float]:
            return sequential(model, data, lrs, STEPS)

    finals = benchmark.pedantic(run, rounds=size(5, 1), iterations=1, warmup_rounds=size(1, 0))
    reference = sequential(model, data, lrs, STEPS)
    assert finals == pytest.approx(reference, rel=1e-4, abs=1e-6)  # the same trainings, either way
    benchmark.extra_info.update(k=k, steps=STEPS)
