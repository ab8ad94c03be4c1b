"""LRFinder: same curves as torch-lr-finder, the least-squares stability boundary, bitwise restore
(normal, diverged, exception, KeyboardInterrupt), batch structures, accumulation, AMP, bad input."""

from __future__ import annotations

import io
import json
import math
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

from pylrcore import LRFinder  # noqa: E402
from pylrcore.detect import Flag  # noqa: E402


def regression(n=512, d=8, seed=0, batch=32):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    y = x @ torch.randn(d, 1, generator=g) + 0.1 * torch.randn(n, 1, generator=g)
    return x, y, DataLoader(TensorDataset(x, y), batch_size=batch)


def mlp(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.BatchNorm1d(16), torch.nn.ReLU(), torch.nn.Dropout(0.1),
                               torch.nn.Linear(16, 1))


def state_of(model, opt):
    tensors = [t.detach().clone() for t in list(model.parameters()) + list(model.buffers())]
    import copy

    return tensors, io.BytesIO(), copy.deepcopy(opt.state_dict())


def assert_restored(model, opt, before_tensors, before_opt, training):
    for a, b in zip(before_tensors, list(model.parameters()) + list(model.buffers())):
        assert torch.equal(a, b)
    after = opt.state_dict()
    assert after["param_groups"] == before_opt["param_groups"]
    for k, s in before_opt["state"].items():
        for name, v in s.items():
            assert torch.equal(v, after["state"][k][name]) if torch.is_tensor(v) else v == after["state"][k][name]
    assert [m.training for m in model.modules()] == training


# ---- same curves as torch-lr-finder --------------------------------------------------------------


@pytest.mark.parametrize("step_mode", ["exp", "linear"])
def test_same_lrs_losses_and_suggestion_as_torch_lr_finder(step_mode, capsys):
    tlf = pytest.importorskip("torch_lr_finder")
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    _, _, loader = regression()
    end = 10 if step_mode == "exp" else 1.0
    m1 = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
    m2 = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
    m2.load_state_dict(m1.state_dict())
    peer = tlf.LRFinder(m1, torch.optim.SGD(m1.parameters(), lr=1e-5), torch.nn.MSELoss())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        peer.range_test(loader, end_lr=end, num_iter=80, step_mode=step_mode)
    ours = LRFinder(m2, torch.optim.SGD(m2.parameters(), lr=1e-5), torch.nn.MSELoss())
    # torch-lr-finder stops at 5x its best; pylrcore's default is its one DIVERGE_FACTOR (4).
    result = ours.range_test(loader, end_lr=end, num_iter=80, step_mode=step_mode, diverge_th=5, progress=False)
    np.testing.assert_allclose(ours.history["lr"], peer.history["lr"], rtol=1e-12)
    np.testing.assert_allclose(ours.history["loss"], peer.history["loss"], rtol=1e-6)
    fig, ax = plt.subplots()
    _, peer_lr = peer.plot(ax=ax, suggest_lr=True)
    plt.close(fig)
    from pylrcore import suggest

    assert suggest(result.lrs, result.smoothed, "torch_lr_finder").lr == pytest.approx(peer_lr, rel=1e-12)
    capsys.readouterr()


# ---- the least-squares stability boundary ----------------------------------------------------------


def test_least_squares_never_diverges_below_two_over_lambda_max_and_suggests_below_it():
    x, y, _ = regression(n=256, d=6, seed=3)
    full_batch = DataLoader(TensorDataset(x, y), batch_size=len(x))
    hessian = 2.0 / len(x) * (x.T @ x).double()  # of mean((x w - y)^2)
    boundary = 2.0 / float(torch.linalg.eigvalsh(hessian).max())
    model = torch.nn.Linear(6, 1, bias=False)
    finder = LRFinder(model, torch.optim.SGD(model.parameters(), lr=boundary * 1e-4), torch.nn.MSELoss())
    result = finder.range_test(full_batch, end_lr=boundary * 100, num_iter=120, progress=False)
    assert result.stopped_early and "diverged" in result.stop_reason
    assert result.lrs[-1] > boundary  # stopped after crossing it (a few rungs later) ...
    assert result.lrs[-1] < boundary * 10  # ... but not long after
    assert result.suggestion is not None and result.suggestion < boundary
    assert result.zone[1] < boundary


# ---- restore, bitwise, whatever happens ----------------------------------------------------------


def _prepared():
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=1e-4)
    x, y, loader = regression()
    for xb, yb in list(loader)[:3]:  # momentum buffers and BatchNorm statistics exist
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(xb), yb).backward()
        opt.step()
    model[1].eval()  # mixed training flags must come back as they were
    return model, opt, loader


class Failing:
    def __init__(self, loader, at, exc):
        self.loader, self.at, self.exc = loader, at, exc

    def __iter__(self):
        for i, b in enumerate(self.loader):
            if i == self.at:
                raise self.exc
            yield b


@pytest.mark.parametrize("case", ["normal", "diverged", "exception", "keyboard_interrupt"])
def test_everything_is_restored_bitwise(case):
    model, opt, loader = _prepared()
    before, _, before_opt = state_of(model, opt)
    training = [m.training for m in model.modules()]
    rng = torch.get_rng_state()
    finder = LRFinder(model, opt, torch.nn.MSELoss())
    if case in ("normal", "diverged"):
        end = 1e-2 if case == "normal" else 1e4
        result = finder.range_test(loader, end_lr=end, num_iter=40, progress=False)
        assert result.stopped_early == (case == "diverged")
    else:
        exc = RuntimeError("loader broke") if case == "exception" else KeyboardInterrupt()
        with pytest.raises(type(exc)):
            finder.range_test(Failing(loader, 7, exc), num_iter=40, progress=False)
    assert_restored(model, opt, before, before_opt, training)
    assert torch.equal(torch.get_rng_state(), rng)


def test_tensor_lr_keeps_its_identity_and_value():
    model = torch.nn.Linear(8, 1)
    lr = torch.tensor(1e-4, dtype=torch.float64)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    _, _, loader = regression()
    LRFinder(model, opt, torch.nn.MSELoss()).range_test(loader, num_iter=20, progress=False)
    assert opt.param_groups[0]["lr"] is lr and lr.item() == 1e-4


# ---- what the sweep does ---------------------------------------------------------------------------


def test_discriminative_lrs_are_swept_together_keeping_their_ratio():
    model = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.Linear(4, 1))
    opt = torch.optim.SGD([{"params": model[0].parameters(), "lr": 1e-5}, {"params": model[1].parameters(), "lr": 1e-3}])
    seen = []

    def step(m, batch):
        seen.append([g["lr"] for g in opt.param_groups])
        return torch.nn.functional.mse_loss(m(batch[0]), batch[1])

    _, _, loader = regression()
    LRFinder(model, opt).range_test(loader, end_lr=1.0, num_iter=10, train_step=step, progress=False)
    ratios = [b / a for a, b in seen]
    np.testing.assert_allclose(ratios, 100.0, rtol=1e-12)
    assert seen[0][0] == pytest.approx(1e-5) and seen[-1][0] == pytest.approx(1.0)


def test_accumulation_records_the_mean_of_the_micro_batches():
    values = torch.arange(1.0, 41.0).reshape(40, 1)
    loader = DataLoader(TensorDataset(values), batch_size=1)
    model = torch.nn.Linear(1, 1)

    def step(m, batch):
        return (m.weight * 0).sum() + batch[0].sum()  # the loss is the batch's value, whatever the weights

    result = LRFinder(model, torch.optim.SGD(model.parameters(), lr=1e-5)).range_test(
        loader, num_iter=10, accumulation_steps=2, smooth_f=0, diverge_th=100, train_step=step, progress=False)
    np.testing.assert_allclose(result.losses, [(2 * i + 1 + 2 * i + 2) / 2 for i in range(10)])


def test_short_loader_is_cycled_and_dict_batches_with_model_computed_loss():
    class Module(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(8, 1)

        def forward(self, inputs, labels):
            return {"loss": torch.nn.functional.mse_loss(self.linear(inputs), labels)}

    x, y, _ = regression(n=64)
    loader = [{"inputs": x[i:i + 16], "labels": y[i:i + 16]} for i in range(0, 64, 16)]  # 4 batches
    model = Module()
    result = LRFinder(model, torch.optim.SGD(model.parameters(), lr=1e-4)).range_test(loader, end_lr=1e-2, num_iter=30,
                                                                                      progress=False)
    assert len(result.lrs) == 30


def test_nan_stops_the_sweep_and_the_suggestion_uses_the_finite_part():
    calls = []

    def step(m, batch):
        calls.append(1)
        loss = torch.nn.functional.mse_loss(m(batch[0]), batch[1])
        # At step 80: the loss has fallen clearly below its noise by then (at 60 it had not yet, and
        # "never decreased" would be the right answer there).
        return loss * float("nan") if len(calls) == 80 else loss

    model = torch.nn.Linear(8, 1)
    _, _, loader = regression()
    result = LRFinder(model, torch.optim.SGD(model.parameters(), lr=1e-5)).range_test(
        loader, end_lr=1.0, num_iter=100, train_step=step, progress=False)
    assert result.stopped_early and "non-finite" in result.stop_reason
    assert len(result.lrs) == 80 and math.isnan(result.losses[-1])
    assert result.suggestion is not None and result.suggestion < result.lrs[-1]
    last = result.events[-1]
    assert last.kind == Flag.NONFINITE and last.step == 79 and last.lr == result.lrs[79]
    assert result.to_dict()["events"][-1] == {"step": 79, "lr": result.lrs[79], "kind": "NONFINITE", "value": None,
                                              "threshold": None}


# ---- detector events -------------------------------------------------------------------------------


def scripted(losses):
    """A train_step whose loss follows ``losses`` (the model still trains, so the sweep is real)."""
    calls = []

    def step(m, batch):
        value = losses[len(calls)]
        calls.append(1)
        return torch.nn.functional.mse_loss(m(batch[0]), batch[1]) * 0 + value

    return step


def test_a_loss_spike_is_an_event_at_its_step_and_lr():
    rng = np.random.default_rng(0)
    curve = 2.0 * np.exp(-np.arange(80) / 30) * (1 + 0.02 * rng.standard_normal(80)) + 0.1
    curve[50] *= 3  # one bad batch: a spike, not a divergence
    model = torch.nn.Linear(8, 1)
    _, _, loader = regression()
    result = LRFinder(model, torch.optim.SGD(model.parameters(), lr=1e-5)).range_test(
        loader, end_lr=1e-3, num_iter=80, train_step=scripted(curve.tolist()), progress=False)
    assert not result.stopped_early
    assert [(e.kind, e.step) for e in result.events] == [(Flag.SPIKE, 50)]
    spike = result.events[0]
    assert spike.lr == result.lrs[50] and spike.value > spike.threshold == 6.0
    assert "loss spike" in str(spike) and "step 50" in str(spike) and "events=1" in repr(result) and "array" not in repr(result)
    assert json.loads(result.to_json())["events"][0]["kind"] == "SPIKE"


def test_a_healthy_sweep_has_no_events_and_a_diverging_one_ends_with_the_explosion():
    _, _, loader = regression()
    model = mlp()
    finder = LRFinder(model, torch.optim.SGD(model.parameters(), lr=1e-5), torch.nn.MSELoss())
    assert finder.range_test(loader, end_lr=1e-2, num_iter=100, progress=False).events == []
    result = finder.range_test(loader, end_lr=1e4, num_iter=100, progress=False)
    assert result.stop_reason.startswith("loss diverged")
    explosion = [e for e in result.events if e.kind == Flag.EXPLOSION]
    assert len(explosion) == 1 and len(result.lrs) - 3 <= explosion[0].step < len(result.lrs)
    assert all(e.kind in (Flag.SPIKE, Flag.EXPLOSION) for e in result.events)


def test_validation_loader_mode_and_amp_and_clipping_run():
    model = torch.nn.Linear(8, 1)
    _, _, loader = regression()
    _, _, val = regression(seed=1, n=64)
    finder = LRFinder(model, torch.optim.SGD(model.parameters(), lr=1e-5), torch.nn.MSELoss())
    r = finder.range_test(loader, val_loader=val, end_lr=1.0, num_iter=15, progress=False)
    assert len(r.lrs) == 15 and np.isfinite(r.losses).all()
    r = finder.range_test(loader, end_lr=1.0, num_iter=15, amp=True, clip_grad_norm=1.0, progress=False)
    assert np.isfinite(r.losses).all()


def test_result_outputs(tmp_path):
    model = mlp()
    x, y, loader = regression()
    opt = torch.optim.SGD(model.parameters(), lr=1e-5)
    result = LRFinder(model, opt, torch.nn.MSELoss()).range_test(loader, end_lr=100, num_iter=80, progress=False)
    data = json.loads(result.to_json(str(tmp_path / "r.json")))
    assert data["suggestion"] == result.suggestion and len(data["lrs"]) == len(result.lrs)
    assert result.to_csv().splitlines()[0] == "lr,loss,smoothed"
    pytest.importorskip("matplotlib")
    result.plot(str(tmp_path / "r.png"))
    assert (tmp_path / "r.png").stat().st_size > 10_000
    result.apply(opt)
    assert opt.param_groups[0]["lr"] == result.suggestion
    assert "use about" in result.diagnosis


# ---- bad input: clear errors, model restored ------------------------------------------------------


def test_bad_input():
    model = torch.nn.Linear(8, 1)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    _, _, loader = regression()
    finder = LRFinder(model, opt, torch.nn.MSELoss())
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(ValueError, match="train_loader is empty"):
        finder.range_test([], num_iter=5, progress=False)
    with pytest.raises(ValueError, match="start_lr .* must be smaller than end_lr"):
        finder.range_test(loader, start_lr=1.0, end_lr=0.1, progress=False)
    with pytest.raises(ValueError, match="num_iter must be >= 2"):
        finder.range_test(loader, num_iter=1, progress=False)
    with pytest.raises(ValueError, match="the loss must be a scalar"):
        finder.range_test(loader, num_iter=5, train_step=lambda m, b: m(b[0]), progress=False)
    with pytest.raises(ValueError, match="at the first step"):
        finder.range_test(loader, num_iter=5, train_step=lambda m, b: m(b[0]).sum() * float("inf"), progress=False)
    with pytest.raises(ValueError, match="did not return a loss"):
        LRFinder(model, opt).range_test(loader, num_iter=5, progress=False)
    with pytest.raises(ValueError, match="smooth_f"):
        finder.range_test(loader, smooth_f=1.0, progress=False)
    with pytest.raises(ValueError, match="method must be one of"):
        finder.range_test(loader, method="best", progress=False)
    for a, b in zip(before, model.parameters()):
        assert torch.equal(a, b)
    frozen = torch.nn.Linear(2, 1).requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        LRFinder(frozen, torch.optim.SGD(frozen.parameters(), lr=0.1))
    with pytest.raises(TypeError, match="torch.nn.Module"):
        LRFinder("model", opt)  # type: ignore[arg-type]
