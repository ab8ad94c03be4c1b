"""Nothing lost: the range test puts back everything it touched — weights and buffers by name (also
buffers a module re-assigns), optimizer state, lrs, gradients, a GradScaler, training flags and every
RNG — also when a KeyboardInterrupt lands at any point of the restore itself."""

from __future__ import annotations

import os
import random
import signal
import sys
from typing import Any, Dict, List

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from pylrcore import LRFinder  # noqa: E402
from pylrcore.torch import _snapshot  # noqa: E402
from pylrcore.torch._snapshot import Snapshot  # noqa: E402


class Running(torch.nn.Module):
    """Re-assigns its buffers every training forward (out of place), as many research modules do."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(4, 1)
        self.norm = torch.nn.BatchNorm1d(4)
        self.register_buffer("running_mean", torch.zeros(4))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    def forward(self, x: Any) -> Any:
        if self.training:
            self.running_mean = 0.9 * self.running_mean + 0.1 * x.mean(0)
            self.steps = self.steps + 1
        return self.lin(self.norm(x - self.running_mean))


def data(n: int = 256, seed: int = 0) -> Any:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g) + 3
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, x.sum(1, keepdim=True)), batch_size=32)


def prepared(opt_kind: str = "sgd") -> Any:
    torch.manual_seed(0)
    model = Running()
    opt = (torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9) if opt_kind == "sgd"
           else torch.optim.Adam(model.parameters(), lr=1e-4))
    x, y = next(iter(data()))
    opt.zero_grad()
    torch.nn.functional.mse_loss(model(x), y).backward()
    opt.step()  # optimizer state exists
    opt.zero_grad()
    torch.nn.functional.mse_loss(model(x), y).backward()  # gradients exist, as left by a loop
    model.eval()
    return model, opt


def state_of(model: Any, opt: Any, scaler: Any = None) -> Dict[str, Any]:
    """Everything the range test must leave as it was, as comparable values (and object identities)."""
    out: Dict[str, Any] = {
        "names": {k: (id(v), v.clone()) for k, v in model.state_dict(keep_vars=True).items()},
        "grads": [(id(p.grad), None if p.grad is None else p.grad.clone()) for p in model.parameters()],
        "opt": {(i, k): (id(v), v.clone() if torch.is_tensor(v) else v)
                for i, p in enumerate(model.parameters()) for k, v in opt.state[p].items()},
        "groups": [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups],
        "training": [m.training for m in model.modules()],
        "torch_rng": torch.get_rng_state(),
        "numpy_rng": np.random.get_state()[1].copy(),
        "python_rng": random.getstate(),
    }
    if scaler is not None:
        out["scaler"] = scaler.state_dict()
    return out


def assert_same(a: Dict[str, Any], b: Dict[str, Any]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        x, y = a[key], b[key]
        if key in ("names", "opt"):
            assert x.keys() == y.keys(), key
            for k in x:
                assert x[k][0] == y[k][0], f"{key}[{k}] is another object"
                assert (torch.equal(x[k][1], y[k][1]) if torch.is_tensor(x[k][1]) else x[k][1] == y[k][1]), (key, k)
        elif key == "grads":
            for (ia, ga), (ib, gb) in zip(x, y):
                assert ia == ib and ((ga is None and gb is None) or torch.equal(ga, gb)), key
        elif key in ("torch_rng", "numpy_rng"):
            assert np.array_equal(np.asarray(x), np.asarray(y)), key
        else:
            assert x == y, key


def test_reassigned_buffers_come_back_by_name_as_their_own_objects():
    model, opt = prepared()
    before = state_of(model, opt)
    LRFinder(model, opt, torch.nn.MSELoss()).range_test(data(), end_lr=1, num_iter=30, progress=False)
    assert_same(before, state_of(model, opt))


def test_guard_rollback_restores_reassigned_buffers():
    from pylrcore.torch import Guard

    model, opt = prepared("adam")
    model.train()
    guard = Guard(opt, model, policy={"nonfinite_grad": "rollback"}, snapshot_every=1000)
    x, y = next(iter(data()))

    kept: Dict[str, Any] = {}
    kept_state: Dict[str, Any] = {}

    def step(poison: bool = False) -> bool:
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        if poison:
            model.lin.weight.grad[0, 0] = float("nan")
        ok = guard.check(loss)
        if not kept:  # the rollback point: taken by the first check, before its update
            kept.update({k: v.clone() for k, v in model.state_dict().items()})
            kept_state.update({k: v.clone() for k, v in opt.state[model.lin.weight].items()})
        opt.step()
        return ok

    for _ in range(5):
        step()
    assert not torch.equal(model.running_mean, kept["running_mean"])
    assert not step(poison=True)
    for k, v in model.state_dict().items():
        assert torch.equal(v, kept[k]), k
    for k, v in opt.state[model.lin.weight].items():
        assert torch.equal(v, kept_state[k]), k


def test_gradscaler_and_gradients_are_restored():
    model, opt = prepared()
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16, growth_interval=5)
    before = state_of(model, opt, scaler)
    result = LRFinder(model, opt, torch.nn.MSELoss()).range_test(data(), end_lr=1e3, num_iter=80, progress=False,
                                                                 grad_scaler=scaler)
    assert result.stopped_early  # the scaler backed off / the loss blew up during the test
    assert_same(before, state_of(model, opt, scaler))


def test_none_gradients_stay_none():
    model, opt = prepared()
    opt.zero_grad(set_to_none=True)
    LRFinder(model, opt, torch.nn.MSELoss()).range_test(data(), end_lr=1, num_iter=10, progress=False)
    assert all(p.grad is None for p in model.parameters())


def test_numpy_and_python_rng_are_restored():
    model, opt = prepared()

    class Augmenting:
        def __iter__(self) -> Any:
            while True:
                np.random.rand()
                random.random()
                yield torch.randn(8, 4), torch.randn(8, 1)

    np.random.seed(0)
    random.seed(0)
    before = state_of(model, opt)
    LRFinder(model, opt, torch.nn.MSELoss()).range_test(Augmenting(), num_iter=20, progress=False)
    assert_same(before, state_of(model, opt))
    assert np.random.rand() == np.random.RandomState(0).rand() and random.random() == random.Random(0).random()


# ---- an interrupt at every point of the restore ---------------------------------------------------


# restore() (one line: the call) and run_to_completion are the retry loop itself: a real Ctrl-C is
# held off there by the signal handler; an exception a tracer raises on their own lines is not
# something a person can cause. Every line that changes the model, its optimizer or the RNGs is covered.
_LOOP = ("restore", "run_to_completion", "_sigint_deferred", "interrupt_shield", "handler", "_inside_restore")


def _traced_restore(run: Any, on_line: Any) -> None:
    """Run ``run`` and call ``on_line()`` at every line event in _snapshot.py once a restore began."""
    active = False

    def tracer(frame: Any, event: str, arg: Any) -> Any:
        nonlocal active
        if frame.f_code is Snapshot.restore.__code__ and event == "call":
            active = True
        if frame.f_code.co_filename != _snapshot.__file__:
            return None  # no line events outside the snapshot module: keeps the 1,000 runs cheap
        if active and event == "line" and frame.f_code.co_name not in _LOOP:
            on_line()
        return tracer

    sys.settrace(tracer)
    try:
        run()
    finally:
        sys.settrace(None)


def _restore_lines(run: Any) -> int:
    """How many line events the restore executes (the points a Ctrl-C could land between)."""
    count = 0

    def on_line() -> None:
        nonlocal count
        count += 1

    _traced_restore(run, on_line)
    return count


def _interrupt_at(run: Any, n: int, how: str) -> bool:
    """Run, and at the n-th line event of the restore raise KeyboardInterrupt there (a tracer may
    raise anywhere) or send a real SIGINT. Returns whether the interrupt reached the caller."""
    seen = 0

    def on_line() -> None:
        nonlocal seen
        seen += 1
        if seen == n:
            if how == "raise":
                raise KeyboardInterrupt
            os.kill(os.getpid(), signal.SIGINT)

    try:
        _traced_restore(run, on_line)
    except KeyboardInterrupt:
        return True
    return False


@pytest.mark.slow
@pytest.mark.parametrize("how", ["raise", "signal"])
def test_an_interrupt_anywhere_in_the_restore_still_restores_everything(how):
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16, growth_interval=5)
    model, opt = prepared()

    batches = list(data())[:3]  # a list, not a DataLoader: ~1,000 runs of the test stay cheap

    def run() -> None:
        LRFinder(model, opt, torch.nn.MSELoss()).range_test(batches, end_lr=1e3, num_iter=3, progress=False,
                                                            grad_scaler=scaler)

    np.random.seed(3)
    random.seed(3)
    before = state_of(model, opt, scaler)
    points = _restore_lines(run)
    assert points > 40  # every statement of every restore step
    assert_same(before, state_of(model, opt, scaler))
    interrupted: List[int] = []
    for n in range(1, points + 1):
        if _interrupt_at(run, n, how):
            interrupted.append(n)
        assert_same(before, state_of(model, opt, scaler))
    assert len(interrupted) == points  # each interrupt is re-raised once the model is whole again


def test_a_ctrl_c_as_the_restore_starts(tmp_path):
    """The repro: SIGINT sent when the restore is entered (before any of its code ran)."""
    model, opt = prepared()
    before = state_of(model, opt)

    def tracer(frame: Any, event: str, arg: Any) -> Any:
        if event == "call" and frame.f_code is Snapshot.restore.__code__:
            sys.settrace(None)
            os.kill(os.getpid(), signal.SIGINT)
        return None

    sys.settrace(tracer)
    try:
        with pytest.raises(KeyboardInterrupt):
            LRFinder(model, opt, torch.nn.MSELoss()).range_test(data(), end_lr=10, num_iter=60, progress=False)
    finally:
        sys.settrace(None)
    assert_same(before, state_of(model, opt))
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_ctrl_c_during_the_sweep_interrupts_it_and_restores():
    model, opt = prepared()
    before = state_of(model, opt)

    def train_step(m: Any, batch: Any) -> Any:
        train_step.calls += 1  # type: ignore[attr-defined]
        if train_step.calls == 5:  # type: ignore[attr-defined]
            os.kill(os.getpid(), signal.SIGINT)
        return torch.nn.functional.mse_loss(m(batch[0]), batch[1])

    train_step.calls = 0  # type: ignore[attr-defined]
    with pytest.raises(KeyboardInterrupt):
        LRFinder(model, opt).range_test(data(), num_iter=50, train_step=train_step, progress=False)
    assert train_step.calls < 10  # type: ignore[attr-defined]
    assert_same(before, state_of(model, opt))


# ---- sizes and values ----------------------------------------------------------------------------


def test_a_huge_num_iter_builds_no_ladder():
    model, opt = prepared()
    before = state_of(model, opt)

    def train_step(m: Any, batch: Any) -> Any:
        train_step.calls += 1  # type: ignore[attr-defined]
        if train_step.calls > 20:  # type: ignore[attr-defined]
            raise RuntimeError("enough")
        return torch.nn.functional.mse_loss(m(batch[0]), batch[1])

    train_step.calls = 0  # type: ignore[attr-defined]
    with pytest.raises(RuntimeError, match="enough"):  # 10**9 lrs would be 8 GB if built up front
        LRFinder(model, opt).range_test(data(), num_iter=10**9, train_step=train_step, progress=False)
    assert_same(before, state_of(model, opt))
    with pytest.raises(ValueError, match="num_iter must be at most"):
        LRFinder(model, opt, torch.nn.MSELoss()).range_test(data(), num_iter=2**40, progress=False)
    with pytest.raises(ValueError, match="num_iter must be <= 2"):
        LRFinder(model, opt, torch.nn.MSELoss()).range_test(data(), num_iter=2**63, progress=False)
    with pytest.raises(TypeError, match="num_iter must be an integer"):
        LRFinder(model, opt, torch.nn.MSELoss()).range_test(data(), num_iter=100.0, progress=False)
    assert LRFinder(model, opt, torch.nn.MSELoss()).range_test(data(), num_iter=np.int64(10), progress=False).lrs.size


def test_ladder_values_do_not_depend_on_chunking():
    from pylrcore.torch.finder import Ladder

    ladder = Ladder(1e-7, 10.0, 10_000, "exp")
    assert np.array_equal(np.fromiter(iter(ladder), float), ladder.first(10_000))
    assert ladder[9999] == pytest.approx(10.0, rel=1e-12) and ladder[0] == 1e-7


def test_bad_values_name_the_argument():
    model, opt = prepared()
    finder = LRFinder(model, opt, torch.nn.MSELoss())
    with pytest.raises(ValueError, match="clip_grad_norm must be finite"):
        finder.range_test(data(), num_iter=5, clip_grad_norm=float("nan"), progress=False)
    with pytest.raises(ValueError, match="clip_grad_norm must be > 0"):
        finder.range_test(data(), num_iter=5, clip_grad_norm=-1.0, progress=False)
    result = finder.range_test(data(), num_iter=20, progress=False)
    with pytest.raises(ValueError, match="lr must be > 0"):
        result.apply(opt, lr=-1)
    with pytest.raises(ValueError, match="lr must be finite"):
        result.apply(opt, lr=float("inf"))


def test_to_csv_reads_back_through_the_cli(tmp_path, capsys):
    from pylrcore import cli

    model, opt = prepared()
    result = LRFinder(model, opt, torch.nn.MSELoss()).range_test(data(), end_lr=10, num_iter=50, progress=False)
    path = tmp_path / "curve.csv"
    text = result.to_csv(str(path))
    assert "np." not in text and text.splitlines()[0] == "lr,loss,smoothed"
    rows = [line.split(",") for line in text.splitlines()[1:]]
    assert [float(r[0]) for r in rows] == result.lrs.tolist()  # exact round trip of every double
    assert [float(r[1]) for r in rows] == result.losses.tolist()
    assert cli.main(["suggest", str(path)]) == 0
    assert "suggest" in capsys.readouterr().out.lower()


def test_print_shows_a_short_summary():
    model, opt = prepared()
    result = LRFinder(model, opt, torch.nn.MSELoss()).range_test(data(), end_lr=10, num_iter=300, progress=False)
    text = repr(result)
    assert text.startswith("FinderResult(suggestion=") and len(text) < 300 and "array" not in text
