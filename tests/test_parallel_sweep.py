"""The parallel lr sweep: every replica trains as that model alone would at its lr (optimizer state,
momentum, Adam moments, BatchNorm buffers per replica), one batched pass or replica by replica when
vmap cannot run the model, diverging replicas stopped, and the user's model left exactly as it was."""

from __future__ import annotations

import copy
import math
import json
from typing import Any, List

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from procs import DDP_HEAD, run_ranks  # noqa: E402

from pylrcore.torch.parallel_sweep import sweep  # noqa: E402

OPTIMIZERS = {
    "sgd": lambda p, lr: torch.optim.SGD(p, lr=lr),
    "momentum": lambda p, lr: torch.optim.SGD(p, lr=lr, momentum=0.9, nesterov=True, weight_decay=1e-3),
    "adam": lambda p, lr: torch.optim.Adam(p, lr=lr),
    "adamw": lambda p, lr: torch.optim.AdamW(p, lr=lr, weight_decay=0.05),
}


def data(n: int = 512, batch: int = 32, seed: int = 0) -> Any:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 10, generator=g)
    y = (x @ torch.randn(10, 3, generator=g)).argmax(1)
    return list(torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=batch))


def mlp(batchnorm: bool = False) -> Any:
    torch.manual_seed(0)
    layers: List[Any] = [torch.nn.Linear(10, 32)]
    if batchnorm:
        layers.append(torch.nn.BatchNorm1d(32))
    layers += [torch.nn.ReLU(), torch.nn.Linear(32, 3)]
    return torch.nn.Sequential(*layers)


def alone(model: Any, make_opt: Any, lr: float, batches: List[Any], steps: int) -> List[float]:
    """The reference: this model trained by itself at lr, on the same batches."""
    model = copy.deepcopy(model)
    return trained_alone(model, make_opt(model.parameters(), lr), batches, steps)


@pytest.mark.parametrize("kind", list(OPTIMIZERS))
@pytest.mark.parametrize("vectorize", [True, False])
def test_each_replica_trains_as_it_would_alone(kind, vectorize):
    batches = data()
    model = mlp(batchnorm=True)
    lrs = [1e-3, 1e-2, 5e-2]
    result = sweep(model, OPTIMIZERS[kind](model.parameters(), 1.0), torch.nn.CrossEntropyLoss(), batches, lrs,
                   steps=40, vectorize=vectorize)
    assert result.vectorized == vectorize
    assert result.engine == ("stacked" if vectorize else "sequential")
    for r, lr in enumerate(lrs):
        # stacked kernels (each checked against the replica loop) or replica by replica: bit for bit
        assert result.losses[r].tolist() == alone(model, OPTIMIZERS[kind], lr, batches, 40)


def trained_alone(model: Any, opt: Any, batches: List[Any], steps: int, criterion: Any = None) -> Any:
    """The reference for any model and optimizer (already built on model): losses and final parameters."""
    criterion = criterion or torch.nn.functional.cross_entropy
    model.train()
    out = []
    for t in range(steps):
        x, y = batches[t % len(batches)]
        opt.zero_grad()
        loss = criterion(model(x), y)
        loss.backward()
        opt.step()
        out.append(loss.item())
    return out


def images(n: int = 256, batch: int = 16, seed: int = 0) -> Any:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 7, 7, generator=g)
    y = (x.mean((1, 2, 3)) > 0).long() + (x[:, 0].mean((1, 2)) > 0).long()
    return list(zip(x.split(batch), y.split(batch)))


def small_cnn() -> Any:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 5, 3, padding=1), torch.nn.BatchNorm2d(5), torch.nn.ReLU(),
        torch.nn.Conv2d(5, 8, 3, stride=2), torch.nn.Tanh(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(8, 7), torch.nn.GELU(), torch.nn.Linear(7, 3))


STACKED_CASES = {
    # kernels with other sums when batched: grouped conv backward, a tiny bmm (naive loop), sigmoid's tail
    "cnn-momentum": (small_cnn, lambda p, lr: torch.optim.SGD(p, lr=lr, momentum=0.9, dampening=0.1,
                                                              weight_decay=1e-3)),
    "cnn-adam-amsgrad": (small_cnn, lambda p, lr: torch.optim.Adam(p, lr=lr, amsgrad=True, weight_decay=1e-3)),
    "tiny-sigmoid-adamw": (lambda: torch.nn.Sequential(torch.nn.Linear(10, 5), torch.nn.Sigmoid(),
                                                       torch.nn.Dropout(0.0), torch.nn.Linear(5, 3)),
                           lambda p, lr: torch.optim.AdamW(p, lr=lr, maximize=False)),
    "inplace-relu-sgd": (lambda: torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(inplace=True), torch.nn.AvgPool2d(2), torch.nn.Flatten(),
        torch.nn.Sequential(torch.nn.Linear(16, 6), torch.nn.ReLU(inplace=True)), torch.nn.Linear(6, 3)),
                         lambda p, lr: torch.optim.SGD(p, lr=lr)),
    "maximize-nesterov": (lambda: torch.nn.Sequential(torch.nn.Linear(10, 16), torch.nn.LeakyReLU(),
                                                      torch.nn.Linear(16, 3), torch.nn.LogSoftmax(dim=1)),
                          lambda p, lr: torch.optim.SGD(p, lr=lr, momentum=0.5, nesterov=True, maximize=True)),
}


@pytest.mark.parametrize("case", list(STACKED_CASES))
def test_the_stacked_engine_is_bit_equal_for_convolutions_odd_sizes_and_optimizer_settings(case):
    make_model, make_opt = STACKED_CASES[case]
    torch.manual_seed(0)
    model = make_model()
    conv = isinstance(model[0], torch.nn.Conv2d)
    batches = images() if conv else data()
    criterion: Any = torch.nn.CrossEntropyLoss()
    if case == "maximize-nesterov":  # maximize: climb the negative log likelihood of LogSoftmax outputs
        criterion = torch.nn.NLLLoss()
    lrs = [1e-3, 3e-3, 1e-2]
    steps = 12
    result = sweep(model, make_opt(model.parameters(), 1.0), criterion, batches, lrs, steps=steps)
    assert result.engine == "stacked"
    for r, lr in enumerate(lrs):
        reference = copy.deepcopy(model)
        expected = trained_alone(reference, make_opt(reference.parameters(), lr), batches, steps, criterion)
        assert result.losses[r].tolist() == expected, f"replica {r}"


def test_a_short_last_batch_and_more_steps_than_batches_stay_bit_for_bit():
    batches = data(n=200, batch=32)  # 6 batches of 32 and one of 8: each layer checks the new shape too
    model = mlp(batchnorm=True)
    result = sweep(model, OPTIMIZERS["adamw"](model.parameters(), 1.0), torch.nn.CrossEntropyLoss(), batches,
                   [1e-3, 2e-2], steps=17)
    assert result.engine == "stacked"
    for r, lr in enumerate([1e-3, 2e-2]):
        assert result.losses[r].tolist() == alone(model, OPTIMIZERS["adamw"], lr, batches, 17)


def test_hooked_modules_are_left_to_vmap():
    batches = data()
    model = mlp()
    seen = []
    handle = model[0].register_forward_hook(lambda module, args, out: seen.append(out.shape))
    try:
        result = sweep(model, torch.optim.SGD(model.parameters(), lr=1.0), torch.nn.CrossEntropyLoss(), batches,
                       [1e-2, 1e-1], steps=3)
    finally:
        handle.remove()
    assert result.engine == "vmap" and seen  # the hook ran, as the user's model would run it


def test_param_groups_keep_their_lr_ratios_and_settings_bit_for_bit():
    batches = data()
    model = mlp(batchnorm=True)

    def make(m: Any, lr: float) -> Any:
        return torch.optim.Adam([{"params": m[0].parameters(), "lr": lr},
                                 {"params": list(m[1].parameters()) + list(m[3].parameters()), "lr": lr / 10,
                                  "weight_decay": 0.1}], lr=lr)

    result = sweep(model, make(model, 0.02), torch.nn.CrossEntropyLoss(), batches, [0.01, 0.03], steps=15)
    assert result.engine == "stacked"
    for r, lr in enumerate([0.01, 0.03]):
        reference = copy.deepcopy(model)
        assert result.losses[r].tolist() == trained_alone(reference, make(reference, lr), batches, 15)


def test_other_optimizers_and_unknown_layers_still_run_batched():
    class Scale(torch.nn.Module):  # a layer the stacked engine does not know: vmap runs the model
        def forward(self, x: Any) -> Any:
            return x * 0.5

    batches = data()
    torch.manual_seed(0)
    custom = torch.nn.Sequential(torch.nn.Linear(10, 16), Scale(), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    make = OPTIMIZERS["adam"]
    result = sweep(custom, make(custom.parameters(), 1.0), torch.nn.CrossEntropyLoss(), batches, [1e-3, 1e-2], steps=20)
    assert result.engine == "vmap" and result.vectorized
    for r, lr in enumerate([1e-3, 1e-2]):  # vmap's batched matmuls may sum in another order: ~1 ulp a step
        np.testing.assert_allclose(result.losses[r], alone(custom, make, lr, batches, 20), rtol=1e-5, atol=1e-7)
    model = mlp()

    def rmsprop(p: Any, lr: float) -> Any:
        return torch.optim.RMSprop(p, lr=lr, momentum=0.5)

    result = sweep(model, rmsprop(model.parameters(), 1.0), torch.nn.CrossEntropyLoss(), batches, [1e-3, 1e-2],
                   steps=20)
    assert result.engine == "stacked"  # the model stacked, the optimizer as per-replica param groups
    for r, lr in enumerate([1e-3, 1e-2]):
        reference = copy.deepcopy(model)
        assert result.losses[r].tolist() == trained_alone(reference, rmsprop(reference.parameters(), lr), batches, 20)


def test_replicas_continue_from_the_optimizers_state():
    batches = data()
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for x, y in batches[:5]:  # momentum buffers exist
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    reference = copy.deepcopy(model)
    ref_opt = torch.optim.SGD(reference.parameters(), lr=0.02, momentum=0.9)
    ref_opt.load_state_dict(copy.deepcopy(opt.state_dict()))  # (load_state_dict shares the tensors)
    for group in ref_opt.param_groups:
        group["lr"] = 0.02
    expected = trained_alone(reference, ref_opt, batches, 20)
    result = sweep(model, opt, torch.nn.CrossEntropyLoss(), batches, [0.02], steps=20, vectorize=False)
    assert result.losses[0].tolist() == expected


def test_a_model_vmap_cannot_run_falls_back_with_a_note():
    class Branchy(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(10, 3)

        def forward(self, x: Any) -> Any:
            out = self.lin(x)
            if out.sum() > 0:  # data-dependent control flow: vmap refuses it
                return out * 1.0
            return out

    batches = data()
    torch.manual_seed(0)
    model = Branchy()
    opt = torch.optim.Adam(model.parameters(), lr=1.0)
    result = sweep(model, opt, torch.nn.CrossEntropyLoss(), batches, [1e-3, 1e-2], steps=15)
    assert not result.vectorized and "vmap could not run this model" in result.note
    forced = sweep(model, opt, torch.nn.CrossEntropyLoss(), batches, [1e-3, 1e-2], steps=15, vectorize=False)
    np.testing.assert_array_equal(result.losses, forced.losses)
    assert result.losses[1].tolist() == alone(model, OPTIMIZERS["adam"], 1e-2, batches, 15)


def test_a_diverging_replica_is_stopped_and_the_others_go_on():
    batches = data()
    model = mlp()
    result = sweep(model, torch.optim.SGD(model.parameters(), lr=1.0), torch.nn.CrossEntropyLoss(), batches,
                   [0.05, 500.0], steps=60)
    assert result.diverged_at[0] is None and result.diverged_at[1] is not None
    stop = result.diverged_at[1]
    assert np.isnan(result.losses[1, stop + 1:]).all() and np.isfinite(result.losses[0]).all()
    assert result.best_lr == 0.05 and result.scores[1] == np.inf
    assert result.diagnoses[0] is not None
    json.dumps(result.to_dict())


def test_dropout_draws_differently_per_replica():
    batches = data()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(10, 64), torch.nn.ReLU(), torch.nn.Dropout(0.5), torch.nn.Linear(64, 3))
    result = sweep(model, torch.optim.SGD(model.parameters(), lr=1.0), torch.nn.CrossEntropyLoss(), batches,
                   [0.01, 0.01], steps=5)
    assert result.vectorized and result.losses[0, 0] != result.losses[1, 0]


def test_the_users_model_optimizer_and_rng_are_restored():
    batches = data()
    model = mlp(batchnorm=True)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = batches[0]
    torch.nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    state = copy.deepcopy(opt.state_dict())
    grads = [p.grad.clone() for p in model.parameters()]
    rng = torch.get_rng_state()
    sweep(model, opt, torch.nn.CrossEntropyLoss(), batches, [1e-3, 1e-1, 10.0], steps=10,
          val_loader=batches[:2])
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    after = opt.state_dict()
    assert all(torch.equal(a, b) for s, t in zip(state["state"].values(), after["state"].values())
               for a, b in zip(s.values(), t.values()))
    assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), grads))
    assert torch.equal(torch.get_rng_state(), rng) and not model.training


def test_validation_scores_rank_the_replicas(tmp_path):
    batches = data()
    model = mlp()
    result = sweep(model, torch.optim.Adam(model.parameters(), lr=1.0), torch.nn.CrossEntropyLoss(), batches[:12],
                   [1e-5, 1e-3, 3e-2], steps=40, val_loader=batches[12:])
    assert result.val_losses is not None and np.array_equal(result.scores, result.val_losses)
    assert result.best_lr == [1e-5, 1e-3, 3e-2][int(np.argmin(result.val_losses))]
    assert result.best_lr != 1e-5  # barely moved
    import matplotlib

    matplotlib.use("Agg")
    result.plot(str(tmp_path / "sweep.png"))
    assert (tmp_path / "sweep.png").stat().st_size > 0


def test_bad_arguments_name_themselves():
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="lrs must be one or more learning rates > 0"):
        sweep(model, opt, torch.nn.CrossEntropyLoss(), data(), [], steps=5)
    with pytest.raises(ValueError, match="lrs must be one or more learning rates > 0"):
        sweep(model, opt, torch.nn.CrossEntropyLoss(), data(), [0.1, -1.0], steps=5)
    with pytest.raises(TypeError, match="lrs"):
        sweep(model, opt, torch.nn.CrossEntropyLoss(), data(), ["a"], steps=5)
    with pytest.raises(ValueError, match="steps must be >= 1"):
        sweep(model, opt, torch.nn.CrossEntropyLoss(), data(), [0.1], steps=0)
    other = torch.nn.Linear(2, 2)
    with pytest.raises(ValueError, match="not the model's"):
        sweep(model, torch.optim.SGD(other.parameters(), lr=0.1), torch.nn.CrossEntropyLoss(), data(), [0.1], steps=2)


def test_the_finder_confirms_its_suggestion_by_training():
    from pylrcore import LRFinder

    batches = data()
    model = mlp()
    finder = LRFinder(model, torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9), torch.nn.CrossEntropyLoss())
    found = finder.range_test(batches, end_lr=10, num_iter=80, progress=False)
    checked = finder.confirm(batches, steps=30)
    # The default design (bench/suggest_quality/confirm_designs.py): x 1/10 .. 4.6 at third decades.
    factors = [0.1, 10 ** (-2 / 3), 10 ** (-1 / 3), 1, 10 ** (1 / 3), 10 ** (2 / 3)]
    assert checked.lrs.tolist() == pytest.approx([found.suggestion * f for f in factors])
    assert checked.best_lr in checked.lrs.tolist()
    # The confirmed lr is the smallest within 5% of the best score (the tie rule toward safety).
    finite = checked.scores[np.isfinite(checked.scores)]
    near = [lr for lr, sc in zip(checked.lrs, checked.scores) if np.isfinite(sc) and sc <= finite.min() * 1.05]
    assert checked.best_lr == min(near)
    assert finder.confirm(batches, steps=30, tolerance=0).best_lr == checked.lrs[int(np.argmin(checked.scores))]
    with pytest.raises(RuntimeError, match="run range_test"):
        LRFinder(model, torch.optim.SGD(model.parameters(), lr=1e-4)).confirm(batches)


def test_range_test_confirm_and_what_uses_its_lr(tmp_path, capsys):
    from pylrcore import LRFinder, cli

    batches = data()
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    result = LRFinder(model, opt, torch.nn.CrossEntropyLoss()).range_test(batches, end_lr=10, num_iter=80,
                                                                          progress=False, confirm=20)
    assert result.confirmation is not None and result.confirmation.losses.shape == (6, 20)
    assert result.lr == result.confirmed_lr == result.confirmation.best_lr
    assert json.loads(json.dumps(result.to_dict()))["confirmed_lr"] == result.confirmed_lr
    result.apply(opt)
    assert opt.param_groups[0]["lr"] == result.confirmed_lr  # apply() uses the confirmed lr
    plain = LRFinder(model, opt, torch.nn.CrossEntropyLoss()).range_test(batches, end_lr=10, num_iter=80, progress=False)
    assert plain.confirmation is None and plain.lr == plain.suggestion
    with pytest.raises(ValueError, match="confirm must be >= 1"):
        LRFinder(model, opt, torch.nn.CrossEntropyLoss()).range_test(batches, num_iter=10, progress=False, confirm=-3)
    script = tmp_path / "job.py"
    script.write_text(
        "import torch\n"
        "def make():\n"
        "    torch.manual_seed(0)\n"
        "    x = torch.randn(512, 10); y = (x[:, :3].sum(1) > 0).long()\n"
        "    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=32)\n"
        "    m = torch.nn.Sequential(torch.nn.Linear(10, 32), torch.nn.ReLU(), torch.nn.Linear(32, 2))\n"
        "    return m, torch.optim.SGD(m.parameters(), lr=1e-4, momentum=0.9), torch.nn.CrossEntropyLoss(), loader\n")
    assert cli.main(["find", f"{script}:make", "--png", "", "--confirm", "15"]) == 0
    out = capsys.readouterr().out
    assert "confirmation: 15 steps at 6 lrs in one parallel sweep" in out and "-> train with lr" in out


def test_the_sweep_keeps_the_smallest_lr_within_its_tolerance():
    """tolerance: best_lr is the smallest lr whose score is within tolerance x |best| of the best;
    diverged copies never count; lrs need not be sorted."""
    from pylrcore.torch.parallel_sweep import _best_index

    lrs = [0.3, 0.01, 0.1, 1.0]
    scores = np.array([1.00, 1.04, 1.06, np.inf])
    assert _best_index(lrs, scores, 0.0) == 0
    assert _best_index(lrs, scores, 0.05) == 1  # 0.01 is within 5% of the best (0.3's)
    assert _best_index(lrs, scores, 0.03) == 0
    assert _best_index(lrs, np.array([np.inf] * 4), 0.05) is None
    assert _best_index([0.2, 0.1], np.array([0.5, 0.5]), 0.0) == 1  # an exact tie: the smaller lr
    assert _best_index([1.0, 2.0], np.array([-2.0, -1.95]), 0.05) == 0  # |best| for a negative loss
    assert _best_index([2.0, 1.0], np.array([-2.0, -1.95]), 0.05) == 1
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    lrs = [0.05, 0.2, 0.8]
    strict = sweep(model, opt, torch.nn.CrossEntropyLoss(), data(), lrs, steps=10)
    loose = sweep(model, opt, torch.nn.CrossEntropyLoss(), data(), lrs, steps=10, tolerance=10.0)
    assert strict.best_lr == lrs[int(np.argmin(strict.scores))]
    assert loose.best_lr == min(lr for lr, sc in zip(lrs, loose.scores) if np.isfinite(sc))
    np.testing.assert_array_equal(strict.scores, loose.scores)
    for bad in (-0.1, math.inf, math.nan):
        with pytest.raises(ValueError, match="tolerance"):
            sweep(model, opt, torch.nn.CrossEntropyLoss(), data(), lrs, steps=2, tolerance=bad)


SPLIT_WORKER = DDP_HEAD + r"""
from pylrcore import sweep
g = torch.Generator().manual_seed(0)  # the same batches on every rank: the copies are compared on them
x = torch.randn(256, 10, generator=g)
y = (x[:, :3].sum(1) > 0).long()
batches = list(zip(x.split(32), y.split(32)))
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(10, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
before = [p.detach().clone() for p in model.parameters()]
result = sweep(model, torch.optim.Adam(model.parameters(), lr=1.0), torch.nn.CrossEntropyLoss(), batches,
               [1e-4, 1e-3, 1e-2, 1e-1, 30.0], steps=12, vectorize=False)
restored = all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
with open(out, "w") as fh:
    json.dump({"result": result.to_dict(), "restored": restored}, fh)
dist.barrier()
dist.destroy_process_group()
os._exit(0)  # gloo's threads can abort the interpreter's teardown (see test_finder_distributed.py)
"""


@pytest.mark.slow
def test_replicas_are_shared_out_over_ranks_and_every_rank_gets_the_whole_result(tmp_path):
    if not torch.distributed.is_available():
        pytest.skip("torch.distributed is not available")
    r0, r1 = run_ranks(SPLIT_WORKER, tmp_path)
    assert r0["result"] == r1["result"] and r0["restored"] and r1["restored"]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 10, generator=g)
    y = (x[:, :3].sum(1) > 0).long()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(10, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    alone = sweep(model, torch.optim.Adam(model.parameters(), lr=1.0), torch.nn.CrossEntropyLoss(),
                  list(zip(x.split(32), y.split(32))), [1e-4, 1e-3, 1e-2, 1e-1, 30.0], steps=12, vectorize=False)
    assert r0["result"]["losses"] == alone.to_dict()["losses"]  # one process or two: the same trainings
    assert r0["result"]["best_lr"] == alone.best_lr
