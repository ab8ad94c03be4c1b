"""torch-lr-finder's API on pylrcore.LRFinder: constructor arguments with their meaning (device moves
the model, a disk cache, torch AMP), the loader-iterator protocol, a mutable ``history`` and a
``plot()`` that returns what the peer's returns, checked against the installed peer."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from pylrcore import LRFinder  # noqa: E402
from pylrcore.torch.finder import DataLoaderIter, TrainDataLoaderIter, ValDataLoaderIter  # noqa: E402


def xor_task(n: int = 512, batch: int = 16, seed: int = 0) -> Any:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 2, (n, 8), generator=g).float()
    y = (x.sum(1, keepdim=True) % 2)
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
    opt = torch.optim.SGD(model.parameters(), lr=1e-5, momentum=0.9)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=batch)
    return model, opt, torch.nn.MSELoss(), loader


def with_momentum(model: Any, opt: Any, loader: Any) -> None:
    x, y = next(iter(loader))
    opt.zero_grad()
    torch.nn.functional.mse_loss(model(x), y).backward()
    opt.step()


def test_constructor_takes_torch_lr_finder_arguments_positionally(tmp_path):
    model, opt, crit, loader = xor_task()
    scaler = torch.amp.GradScaler("cpu")
    finder = LRFinder(model, opt, crit, "cpu", False, str(tmp_path), "torch",
                      {"device_type": "cpu", "dtype": torch.bfloat16}, scaler)
    finder.range_test(loader, None, None, 1.0, 20, "exp", 0.05, 5, 1, False)
    assert len(finder.history["lr"]) == 20 and finder.best_loss == min(finder.history["loss"])
    finder.reset()  # nothing to do: already restored; never an error


def test_device_moves_the_model_and_its_optimizer_state_for_the_test_and_back():
    """"meta" stands in for "cuda" on a CPU machine: every tensor of the test lives there."""
    model, opt, crit, loader = xor_task()
    with_momentum(model, opt, loader)
    weights = [p.detach().clone() for p in model.parameters()]
    seen = []

    def step(m: Any, batch: Any) -> Any:
        p = next(m.parameters())
        seen.append((p.device.type, opt.state[p]["momentum_buffer"].device.type, batch[0].device.type))
        raise RuntimeError("stop here")

    with pytest.raises(RuntimeError, match="stop here"):
        LRFinder(model, opt, crit, device="meta").range_test(loader, num_iter=5, train_step=step, progress=False)
    assert seen == [("meta", "meta", "meta")]
    assert all(p.device.type == "cpu" for p in model.parameters())
    assert all(torch.equal(a, b) for a, b in zip(weights, model.parameters()))
    assert opt.state[next(model.parameters())]["momentum_buffer"].device.type == "cpu"
    with pytest.raises(ValueError, match="device must be a torch device"):
        LRFinder(model, opt, crit, device="banana")


def test_memory_cache_false_keeps_the_copy_on_disk_and_removes_it(tmp_path):
    model, opt, crit, loader = xor_task()
    with_momentum(model, opt, loader)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    momentum = opt.state[next(model.parameters())]["momentum_buffer"].clone()
    during = []

    def step(m: Any, batch: Any) -> Any:
        during.append(sorted(os.listdir(tmp_path)))
        return crit(m(batch[0]), batch[1])

    LRFinder(model, opt, crit, memory_cache=False, cache_dir=str(tmp_path)).range_test(
        loader, end_lr=100, num_iter=40, train_step=step, progress=False)
    assert during[0] and during[0][0].startswith("pylrcore-snapshot-")
    assert os.listdir(tmp_path) == []
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert torch.equal(opt.state[next(model.parameters())]["momentum_buffer"], momentum)
    with pytest.raises(ValueError, match="cache_dir .* is not a folder"):
        LRFinder(model, opt, crit, memory_cache=False, cache_dir=str(tmp_path / "missing"))


def test_amp_backends():
    model, opt, crit, loader = xor_task()
    with pytest.raises(ValueError, match="apex"):
        LRFinder(model, opt, crit, amp_backend="apex")
    with pytest.raises(ValueError, match="amp_backend must be"):
        LRFinder(model, opt, crit, amp_backend="cuda")
    dtypes = []

    def step(m: Any, batch: Any) -> Any:
        out = m(batch[0])
        dtypes.append(out.dtype)
        return crit(out.float(), batch[1])

    LRFinder(model, opt, crit, amp_backend="native", amp_config={"device_type": "cpu", "dtype": torch.bfloat16}
             ).range_test(loader, num_iter=5, train_step=step, progress=False)
    assert set(dtypes) == {torch.bfloat16}


def test_the_loader_iterator_protocol():
    model, opt, crit, loader = xor_task(n=64)
    train = TrainDataLoaderIter(loader)
    assert [len(next(train)) for _ in range(len(loader) + 2)] == [2] * (len(loader) + 2)  # starts again
    val = ValDataLoaderIter(loader)
    assert sum(1 for _ in val) == len(loader) and sum(1 for _ in val) == len(loader)
    once = TrainDataLoaderIter(loader, auto_reset=False)
    with pytest.raises(StopIteration):
        for _ in range(len(loader) + 1):
            next(once)
    assert isinstance(train, DataLoaderIter) and train.dataset is loader.dataset

    class DictBatches(TrainDataLoaderIter):
        calls = 0

        def inputs_labels_from_batch(self, batch_data: Any) -> Any:
            DictBatches.calls += 1
            return batch_data["x"], batch_data["y"]

    dict_loader = [{"x": x, "y": y} for x, y in loader]
    LRFinder(model, opt, crit).range_test(DictBatches(dict_loader), num_iter=7, progress=False)
    assert DictBatches.calls == 7
    with pytest.raises(ValueError, match="Your batch type is not supported"):
        next(TrainDataLoaderIter(dict_loader))


def test_the_peers_own_iterator_subclasses_work():
    tlf = pytest.importorskip("torch_lr_finder.lr_finder")
    model, opt, crit, loader = xor_task()

    class Pairs(tlf.TrainDataLoaderIter):
        def inputs_labels_from_batch(self, batch_data: Any) -> Any:
            return batch_data[0], batch_data[1]

    finder = LRFinder(model, opt, crit)
    finder.range_test(Pairs(loader), val_loader=tlf.ValDataLoaderIter(loader), end_lr=0.1, num_iter=6, progress=False)
    assert len(finder.history["lr"]) == 6


@pytest.mark.peers
@pytest.mark.parametrize("skip_start, skip_end", [(0, 0), (0, 5), (10, 5), (3, 0), (5, 10)])
@pytest.mark.parametrize("suggest_lr", [True, False])
def test_plot_returns_what_torch_lr_finder_returns(skip_start, skip_end, suggest_lr, capsys):
    tlf = pytest.importorskip("torch_lr_finder")
    model, opt, crit, loader = xor_task()
    ours = LRFinder(model, opt, crit)
    ours.range_test(loader, end_lr=10, num_iter=30, progress=False)
    peer = tlf.LRFinder(model, opt, crit)
    peer.history = {"lr": list(ours.history["lr"]), "loss": list(ours.history["loss"])}

    def both(finder: Any) -> Any:
        fig, ax = plt.subplots()
        try:
            out = finder.plot(skip_start=skip_start, skip_end=skip_end, suggest_lr=suggest_lr, ax=ax)
        except RuntimeError as e:
            return ("error", str(e))
        finally:
            plt.close(fig)
        result = (out[1],) if isinstance(out, tuple) else ()
        return result + (len(ax.lines), len(ax.collections), ax.get_xscale(), tuple(ax.lines[0].get_xdata()))

    assert both(ours) == both(peer)


def test_plot_on_an_assigned_history_and_its_checks():
    model, opt, crit, _ = xor_task()
    finder = LRFinder(model, opt, crit)
    finder.history["loss"] = [10, 8, 4, 1, 4, 16]
    finder.history["lr"] = range(6)
    fig, ax = plt.subplots()
    ax, lr = finder.plot(skip_start=0, skip_end=0, ax=ax, log_lr=False)
    assert lr == 2  # the steepest np.gradient of the losses
    finder.history = {"lr": [1e-3, 1e-2, 1e-1], "loss": [3.0, 2.0, 4.0]}
    assert finder.plot(skip_start=0, skip_end=0, suggest_lr=False, show_lr=0.01, ax=ax) is ax
    with pytest.raises(RuntimeError, match="Need at least 17 iterations"):
        finder.plot(ax=ax)
    with pytest.raises(ValueError, match="show_lr must be float"):
        finder.plot(skip_start=0, skip_end=0, show_lr=1, ax=ax)
    with pytest.raises(ValueError, match="skip_start cannot be negative"):
        finder.plot(skip_start=-1, ax=ax)
    plt.close("all")


def test_plot_path_still_draws_pylrcore_figure(tmp_path):
    model, opt, crit, loader = xor_task()
    finder = LRFinder(model, opt, crit)
    with pytest.raises(RuntimeError, match="run range_test"):
        finder.plot(str(tmp_path / "none.png"))
    finder.range_test(loader, end_lr=10, num_iter=40, progress=False)
    finder.plot(str(tmp_path / "a.png"))
    finder.plot(path=str(tmp_path / "b.png"))
    assert (tmp_path / "a.png").stat().st_size > 0 and (tmp_path / "b.png").stat().st_size > 0
    plt.close("all")


def test_history_is_the_smoothed_curve_of_the_result():
    model, opt, crit, loader = xor_task()
    finder = LRFinder(model, opt, crit)
    result = finder.range_test(loader, end_lr=10, num_iter=40, progress=False)
    assert finder.history["lr"] == result.lrs.tolist()
    np.testing.assert_array_equal(finder.history["loss"], result.smoothed)


def test_progress_bar_like_torch_lr_finder(capsys):
    """tqdm is a dependency: progress=True (the default in a terminal) draws a bar on stderr."""
    model, opt, crit, loader = xor_task()
    LRFinder(model, opt, crit).range_test(loader, end_lr=0.1, num_iter=10, progress=True)
    assert "LR range test" in capsys.readouterr().err
    LRFinder(model, opt, crit).range_test(loader, end_lr=0.1, num_iter=10, progress=False)
    assert capsys.readouterr().err == ""
