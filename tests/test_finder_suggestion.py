"""The range test's suggestion on real sweeps (issue 11, items 12-14): no lr when the sweep's end_lr
is too low, the slide method on long sweeps, one divergence factor and one divergence lr."""

from __future__ import annotations

import json

import re

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import pylrcore  # noqa: E402
from pylrcore import LRFinder  # noqa: E402
from pylrcore.torch.finder import FinderResult  # noqa: E402


def _classifier_sweep(num_iter: int, end_lr: float = 10.0, start_lr: float = 1e-5, seed: int = 0,
                      method: str = "steepest") -> FinderResult:
    """Repro 10's setup: a 32-128-2 MLP, SGD with momentum, shuffled batches of 64."""
    torch.manual_seed(seed)
    x = torch.randn(4096, 32)
    y = (x[:, :4].sum(1) > 0).long()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=64, shuffle=True)
    model = torch.nn.Sequential(torch.nn.Linear(32, 128), torch.nn.ReLU(), torch.nn.Linear(128, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=start_lr, momentum=0.9)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: extra threads only spin on shared, busy cores
    try:
        return LRFinder(model, optimizer, torch.nn.CrossEntropyLoss()).range_test(
            loader, end_lr=end_lr, num_iter=num_iter, method=method, progress=False)
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("num_iter", [100, 300, 1000])
def test_slide_on_long_sweeps_stays_in_the_usable_range(num_iter: int) -> None:
    """Repro 10: slide suggested 0.57 and 0.69 at 300 and 1000 iterations, far above the usable
    range (up to 0.06 and 0.02) and next to the divergence."""
    result = _classifier_sweep(num_iter, method="slide")
    assert result.suggestion is not None and result.zone is not None
    assert result.zone[0] <= result.suggestion <= result.zone[1]
    assert result.suggestion < result.lrs[-1] / 10


def test_a_sweep_whose_end_lr_is_too_low_gives_no_lr_and_says_so() -> None:
    """Nothing is learned between 1e-7 and 1e-5: before, a wiggle of the noise gave a confident lr."""
    result = _classifier_sweep(100, start_lr=1e-7, end_lr=1e-5)
    assert result.suggestion is None and result.zone is None
    assert result.details.status == "never_decreased"
    assert "end_lr is too low" in result.details.reason and "1e-05" in result.details.reason
    assert "end_lr 1e-05" in result.diagnosis and "too low" in result.diagnosis


def test_the_divergence_lr_is_named_once_and_the_default_factor_is_the_one_factor() -> None:
    result = _classifier_sweep(100)
    assert "> 4 x best" in result.stop_reason  # range_test's default diverge_th is DIVERGE_FACTOR
    assert result.details.diverged_at is not None
    text = f"{result.details}\n{result.diagnosis}"
    assert len(re.findall(r"diverged at lr", text)) == 1, text
    assert "stay well below the lr where it diverged" in result.diagnosis
    # The analysis used the finder's factor: the same curve through suggest() reads the same.
    again = pylrcore.suggest(result.lrs, result.losses, result.method)
    assert again.lr == result.suggestion and again.diverged_at == result.details.diverged_at


def test_real_sweeps_of_models_that_learn_still_get_an_lr() -> None:
    rows = []
    for seed in range(3):
        result = _classifier_sweep(100, start_lr=1e-6, seed=seed)
        rows.append(result.suggestion)
        assert result.suggestion is not None, result.details.reason
        assert result.zone[0] <= result.suggestion <= result.zone[1]
    assert max(rows) / min(rows) < 10  # the seeds agree within a decade


def test_the_divergence_lr_is_printed_once(capsys):
    """The demo names where the loss diverged in the suggestion's line only; the detector's own
    explosion onset (another smoothing, another lr) stays in result.events but is not printed."""
    from pylrcore.cli import demo

    demo.run_torch(png=None, check=False)
    out = capsys.readouterr().out
    assert out.count("diverged at lr") == 1 and "event: explosion" not in out


def test_one_divergence_predicate_for_the_stop_and_the_cut() -> None:
    """divergence.hpp's rule: smoothed > best + (k - 1) |best| -- k x best for a positive best, and
    still meaningful for a best <= 0 (k x best would fire at once for a negative best)."""
    from pylrcore._native import _core

    assert _core.divergence_threshold(2.0, 4.0) == 8.0
    assert _core.divergence_threshold(-2.0, 4.0) == 4.0
    assert _core.divergence_threshold(0.0, 4.0) == 0.0
    # The same curve through the finder's stop rule and suggest()'s cut: a loss of -1 that rises
    # steadily. k x best (= -4) would call it diverged at the very next point.
    lrs = np.logspace(-6, 1, 60)
    raw = -1.0 + np.concatenate([np.zeros(40), np.linspace(0.0, 30.0, 20)])
    s = pylrcore.suggest(lrs, raw, "steepest", beta=0.5)
    assert s.diverged_at is not None and s.diverged_at > 40


def test_the_stop_is_a_value_and_stop_reason_its_text() -> None:
    result = _classifier_sweep(100)
    stop = result.stop
    assert stop is not None and stop.kind == "diverged" and result.stopped_early
    assert stop.step == len(result.lrs) - 1 and stop.lr == result.lrs[-1]
    assert stop.value == result.smoothed[-1] > stop.threshold == pylrcore._native._core.divergence_threshold(stop.best, 4.0)
    assert str(stop) == result.stop_reason and result.stop_reason.startswith("loss diverged (smoothed")
    assert "loss diverged" in stop.short
    saved = json.loads(result.to_json())["stop"]
    assert saved["kind"] == "diverged" and saved["step"] == stop.step and saved["threshold"] == stop.threshold
