"""K learning rates trained at once (pylrcore.sweep: the stacked engine, one batched pass per step)
against what a user would otherwise run: K trainings one after another, each a plain torch loop over
the same batches. Small MLP (20-64-64-5, batch 32) and small CNN (1x8x8 -> conv 8 -> conv 16 -> 10,
batch 32), Adam, 1 thread. extra_info holds K, the steps and, for the sweep, its memory: the stacked
parameters and optimizer state, and the activations autograd keeps per replica (against one model's);
the ratio is sequential / sweep at the same K. Both give the same trainings bit for bit (asserted)."""

from __future__ import annotations

import copy
from typing import Any, List

import pytest
from benchutil import size

torch = pytest.importorskip("torch")
from pylrcore.torch.parallel_sweep import sweep  # noqa: E402

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


def saved_bytes(fn: Any) -> int:
    """Bytes of the tensors autograd keeps for the backward while fn() runs its forward (storages
    counted once: an expanded batch is the batch)."""
    seen = {}

    def pack(t: Any) -> Any:
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


def memory(model: Any, opt: Any, data: List[Any], lrs: List[float]) -> dict:
    """The sweep's memory against one model's: stacked parameters and optimizer state (after one step),
    and the activations kept for one step's backward."""
    from pylrcore.torch._stacked import StackedModel
    from pylrcore.torch.parallel_sweep import _Replicas

    k = len(lrs)
    replicas = _Replicas(model, opt, lrs)
    stacked = StackedModel(model, torch.nn.CrossEntropyLoss())
    stacked.losses(replicas.params, replicas.buffers, data[0], k)  # each layer's first-use check, not counted
    activations = saved_bytes(lambda: stacked.losses(replicas.params, replicas.buffers, data[0], k).sum().backward())
    replicas.step([True] * k)
    params = sum(t.nbytes for t in replicas.params.values())
    assert replicas.stacked_optimizer is not None
    state = sum(v.nbytes for s in replicas.stacked_optimizer.states for v in s.values() if torch.is_tensor(v))
    one = copy.deepcopy(model)
    one_opt = torch.optim.Adam(one.parameters(), lr=1e-3)
    x, y = data[0]
    one_activations = saved_bytes(lambda: torch.nn.functional.cross_entropy(one(x), y).backward())
    one_opt.step()
    one_params = sum(p.nbytes for p in one.parameters())
    one_state = sum(v.nbytes for s in one_opt.state.values() for v in s.values() if torch.is_tensor(v) and v.dim())
    return {"params_bytes": params, "state_bytes": state, "activation_bytes": activations,
            "one_model_params_bytes": one_params, "one_model_state_bytes": one_state,
            "one_model_activation_bytes": one_activations}


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
            assert result.engine == "stacked"
            return result.losses[:, -1].tolist()
        benchmark.extra_info.update(memory(model, opt, data, lrs))
    else:
        def run() -> List[float]:
            return sequential(model, data, lrs, STEPS)

    finals = benchmark.pedantic(run, rounds=size(5, 1), iterations=1, warmup_rounds=size(1, 0))
    reference = sequential(model, data, lrs, STEPS)
    assert finals == reference  # the same trainings, bit for bit, either way
    benchmark.extra_info.update(k=k, steps=STEPS)


def interleaved(rounds: int, ks: List[int]) -> None:
    """Sweep and sequential alternated round by round at each (model, K), 1 thread: on a shared machine
    the load changes between two pytest-benchmark tests, here both see the same. Prints the medians, the
    ratio, the sweep's cost per K against K=2's, and its first call in this process (layer checks)."""
    import statistics
    import time

    torch.set_num_threads(1)
    print(f"{STEPS} Adam steps, batch 32, 1 thread, medians of {rounds} interleaved rounds")
    print("model | K | sweep | sequential | ratio | sweep vs K=2 | first sweep in the process")
    for kind in ("mlp", "cnn"):
        first_k = None
        for k in ks:
            model = mlp() if kind == "mlp" else cnn()
            data = batches(kind)
            lrs = [1e-4 * 100 ** (i / (k - 1)) for i in range(k)]
            opt = torch.optim.Adam(model.parameters(), lr=1e-3)
            start = time.perf_counter()
            result = sweep(model, opt, torch.nn.CrossEntropyLoss(), data, lrs, steps=STEPS)
            first = time.perf_counter() - start
            assert result.engine == "stacked"
            assert result.losses[:, -1].tolist() == sequential(model, data, lrs, STEPS)
            times: dict = {"sweep": [], "sequential": []}
            for _ in range(rounds):
                start = time.perf_counter()
                sweep(model, opt, torch.nn.CrossEntropyLoss(), data, lrs, steps=STEPS)
                times["sweep"].append(time.perf_counter() - start)
                start = time.perf_counter()
                sequential(model, data, lrs, STEPS)
                times["sequential"].append(time.perf_counter() - start)
            s, q = (statistics.median(times[n]) * 1e3 for n in ("sweep", "sequential"))
            first_k = first_k or s
            print(f"{kind} | {k} | {s:.1f} ms | {q:.1f} ms | {q / s:.2f}x | {s / first_k:.2f}x | {first * 1e3:.1f} ms",
                  flush=True)


if __name__ == "__main__":
    import sys

    interleaved(int(sys.argv[1]) if len(sys.argv) > 1 else 7,
                [int(v) for v in sys.argv[2].split(",")] if len(sys.argv) > 2 else [2, 4, 8, 16])
