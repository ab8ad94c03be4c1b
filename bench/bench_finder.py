"""The finder's own cost, against torch-lr-finder on the same model, data and sweep.

- Per-iteration overhead: (range test over N iterations) - (a bare loop of the same N training steps),
  on the tiny MLP of the reference measurements (32-64-64-10, batch 64, SGD, 1 thread). The
  benchmark times whole runs; extra_info holds the overhead per iteration.
- Fixed cost: snapshot + restore of an 8.4M-parameter model with SGD momentum state (68 MB), an
  in-place change of the weights between them and a check after. torch-lr-finder is timed with the
  reset() its users must call; each is timed with the memory as the previous round left it, and
  given back to the OS before each round (with or without pylrcore's one cached snapshot mapping). "copy" is one plain torch copy of the same state into
  buffers already in use: the unit of the goal (two such copies are what keeping identity needs).
"""

from __future__ import annotations

import ctypes
import warnings

import pytest
from benchutil import interleaved_times, size

torch = pytest.importorskip("torch")
tlf = pytest.importorskip("torch_lr_finder")
from pylrcore import LRFinder  # noqa: E402

N = size(400, 20)


def tiny():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 64), torch.nn.ReLU(),
                                torch.nn.Linear(64, 10))
    x = torch.randn(4096, 32)
    y = torch.randint(0, 10, (4096,))
    data = torch.utils.data.TensorDataset(x, y)
    sampler = torch.utils.data.BatchSampler(torch.utils.data.SequentialSampler(data), 64, drop_last=False)
    loader = torch.utils.data.DataLoader(data, batch_size=None, sampler=sampler)  # one gather per batch
    return model, loader


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def bare_loop(model, loader, n):
    opt = torch.optim.SGD(model.parameters(), lr=1e-6)
    crit = torch.nn.CrossEntropyLoss()
    it = iter(loader)
    for _ in range(n):
        try:
            xb, yb = next(it)
        except StopIteration:
            it = iter(loader)
            xb, yb = next(it)
        opt.zero_grad()
        loss = crit(model(xb), yb)
        loss.backward()
        opt.step()
    return n


@pytest.mark.benchmark(group="finder: tiny MLP, N iterations (overhead = run - bare)")
@pytest.mark.parametrize("impl", ["bare", "pylrcore", "torch-lr-finder"])
def test_finder_iterations(benchmark, impl):
    model, batches = tiny()
    crit = torch.nn.CrossEntropyLoss()

    def run():
        if impl == "bare":
            return bare_loop(model, batches, N)
        opt = torch.optim.SGD(model.parameters(), lr=1e-6)
        if impl == "pylrcore":
            r = LRFinder(model, opt, crit).range_test(batches, end_lr=1e-2, num_iter=N, progress=False)
            return len(r.lrs)
        finder = tlf.LRFinder(model, opt, crit)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            finder.range_test(batches, end_lr=1e-2, num_iter=N)
        finder.reset()
        return len(finder.history["lr"])

    assert benchmark.pedantic(run, rounds=15, iterations=1, warmup_rounds=2) == N
    benchmark.extra_info["iterations"] = N


def big():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(2048, 2048), torch.nn.ReLU(), torch.nn.Linear(2048, 2048))  # 8.4M
    opt = torch.optim.SGD(model.parameters(), lr=1e-6, momentum=0.9)
    x, y = torch.randn(8, 2048), torch.randn(8, 2048)
    torch.nn.functional.mse_loss(model(x), y).backward()
    opt.step()  # momentum buffers exist: the snapshot has optimizer state to keep
    return model, opt


def _trim_heap(release_spare: bool = True):
    """Give free memory back to the OS, as in a process that has not just freed a model-sized block:
    glibc's heap (malloc_trim) and, with ``release_spare``, pylrcore's spare snapshot mapping (the one
    a released snapshot leaves, kept MADV_FREE for the next); None where there is no glibc."""
    from pylrcore._native import _core

    try:
        libc = ctypes.CDLL("libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    if not release_spare:
        return lambda: (trim(0), None)[-1]
    return lambda: (trim(0), _core.Arena.release_spare(), None)[-1]


# heap state -> what is given back before each round (None: nothing, rounds back to back)
HEAPS = {"reused": None, "trimmed": True, "trimmed-spare-kept": False}


@pytest.mark.benchmark(group="finder: fixed cost (snapshot + restore), 8.4M params + momentum")
@pytest.mark.parametrize("heap", list(HEAPS))
@pytest.mark.parametrize("impl", ["bare", "copy", "pylrcore", "torch-lr-finder"])
def test_finder_fixed_cost(benchmark, impl, heap):
    """pylrcore: the snapshot range_test takes and its restore. torch-lr-finder: its state cache
    (taken when the finder is built) and the reset() its users must call. bare: the change and the
    check alone (fixed cost = run - bare). copy: bare plus one ``copy_`` of the whole state (68 MB)
    into tensors allocated once (a bare copy of the state = copy - bare).

    heap="reused": rounds back to back, so torch-lr-finder's copies land in the memory its previous
    round freed (glibc keeps it) and pylrcore's snapshot in the mapping the previous one released (it
    keeps one, see csrc/pylrcore/step/snapshot.hpp). heap="trimmed": both go back to the OS before each
    round (untimed): the first range test of a process, every byte of the snapshot in fresh pages.
    heap="trimmed-spare-kept": glibc's heap goes back, pylrcore's one spare mapping stays (a later
    range test in a process that freed its heap meanwhile; the kernel may still reclaim the spare
    under memory pressure): pylrcore's cached memory is what separates it from "trimmed"."""
    if size(1, 0) == 0:
        pytest.skip("quick mode: the 8.4M model is only timed in full runs")
    setup = None if HEAPS[heap] is None else _trim_heap(HEAPS[heap])
    if HEAPS[heap] is not None and setup is None:
        pytest.skip("malloc_trim needs glibc")
    assert benchmark.pedantic(fixed_cost_round(impl), setup=setup, rounds=15, iterations=1, warmup_rounds=1)


def fixed_cost_round(impl):
    """One round of test_finder_fixed_cost for ``impl``, on its own model (returns the check)."""
    from pylrcore.torch._snapshot import Snapshot

    model, opt = big()
    crit = torch.nn.MSELoss()
    before = model[0].weight.detach().clone()
    scratch = before.clone()
    state = [t.detach() for t in model.parameters()] + [s["momentum_buffer"] for s in opt.state.values()]
    kept = [t.clone() for t in state]

    def run():
        if impl == "pylrcore":
            snap = Snapshot(model, opt).take()  # what range_test takes: model, state, grads, RNG
            snap.detach_grads()
            with torch.no_grad():
                model[0].weight.add_(1.0)  # what a sweep does to the weights
            snap.restore()
        elif impl == "torch-lr-finder":
            finder = tlf.LRFinder(model, opt, crit)
            with torch.no_grad():
                model[0].weight.add_(1.0)
            finder.reset()
        else:
            if impl == "copy":
                torch._foreach_copy_(kept, state)
            scratch.add_(0.0)  # the same pass over 16 MB, leaving the values as they are
            return torch.equal(scratch, before)
        return torch.equal(model[0].weight, before)

    return run


# --- `python bench/bench_finder.py [rounds]`: the fixed cost, methods interleaved round by round ------


def _asserting(run):
    """``run``, failing if its check does (the check is part of the timed call)."""

    def checked():
        assert run()

    return checked


def interleaved(rounds: int) -> None:
    """Medians of the fixed-cost rounds with the methods taking turns (a load that drifts during the
    run then weighs on all of them alike), in both memory states."""
    from pylrcore._native import _core

    torch.set_num_threads(1)
    impls = ["bare", "copy", "pylrcore", "torch-lr-finder"]
    for heap, release_spare in HEAPS.items():
        trim = None if release_spare is None else _trim_heap(release_spare)
        runs = {impl: _asserting(fixed_cost_round(impl)) for impl in impls}
        med, _ = interleaved_times(runs, rounds, setup=trim, warmup=1)
        bare = med["bare"]
        net = {impl: med[impl] - bare for impl in impls}
        print(f"heap {heap}, {rounds} rounds, medians (net = minus bare {bare:.2f} ms)")
        for impl in impls[1:]:
            print(f"  {impl:16s} {med[impl]:8.2f} ms  net {net[impl]:7.2f} ms  "
                  f"{net[impl] / net['copy']:5.2f}x a copy of the state")
        print(f"  pylrcore / torch-lr-finder: net {net['pylrcore'] / net['torch-lr-finder']:.2f}, "
              f"gross {med['pylrcore'] / med['torch-lr-finder']:.2f}; pylrcore's cached spare mapping after "
              f"the run: {_core.Arena.spare_bytes() / 2**20:.0f} MiB")


if __name__ == "__main__":
    import sys

    interleaved(int(sys.argv[1]) if len(sys.argv) > 1 else 15)
