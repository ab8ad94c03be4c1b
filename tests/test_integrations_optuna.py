"""The Optuna integration: suggest_lr sets a trial's lr from a range test and keeps the result as
user attributes; the DivergencePruner prunes NaN/Inf and exploding losses and leaves the rest to the
pruner it wraps; two worker processes share one study through a journal file."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from procs import pylrcore_env
from toy_tasks import linear_regression

torch = pytest.importorskip("torch")
optuna = pytest.importorskip("optuna")

from pylrcore.integrations.optuna import ATTR_PREFIX, DivergencePruner, suggest_lr  # noqa: E402

# slow: Optuna studies, with worker subprocesses; CI runs it (pytest -m "not slow" leaves it out)
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
FINDER_ATTRS = {"suggestion", "lr", "multiplier", "zone", "diagnosis", "stop_reason", "curve"}


@pytest.fixture(autouse=True)
def quiet_optuna():
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def test_suggest_lr_sets_the_lr_records_the_result_and_restores_the_model():
    model, optimizer, loader = linear_regression()
    before = [p.detach().clone() for p in model.parameters()]
    trial = optuna.create_study().ask()
    lr = suggest_lr(trial, model, optimizer, torch.nn.MSELoss(), loader, end_lr=10, num_iter=60, multiplier=0.5)
    attrs = {k[len(ATTR_PREFIX):]: v for k, v in trial.user_attrs.items() if k.startswith(ATTR_PREFIX)}
    assert set(attrs) == FINDER_ATTRS
    assert lr == attrs["lr"] == 0.5 * attrs["suggestion"] and optimizer.param_groups[0]["lr"] == lr
    assert attrs["zone"][0] < attrs["suggestion"] < attrs["zone"][1] and attrs["stop_reason"]
    curve = attrs["curve"]
    assert 10 <= len(curve["lrs"]) == len(curve["losses"]) <= 50 and curve["lrs"] == sorted(curve["lrs"])
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters())) and not optimizer.state


def test_suggest_lr_keeps_the_groups_lr_ratios():
    model, _, loader = linear_regression()
    optimizer = torch.optim.SGD([{"params": [model.weight], "lr": 1e-5}, {"params": [model.bias], "lr": 1e-4}])
    lr = suggest_lr(optuna.create_study().ask(), model, optimizer, torch.nn.MSELoss(), loader, end_lr=10, num_iter=40)
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([lr, 10 * lr], rel=1e-12)


def test_suggest_lr_prunes_a_trial_whose_range_test_finds_nothing():
    model, optimizer, loader = linear_regression()
    with torch.no_grad():
        model.weight.zero_()
    study = optuna.create_study()
    trial = study.ask()
    # A loss that does not depend on the weights never falls: no lr to suggest.
    never_falls = lambda output, target: (output * 0).sum() + 1.0  # noqa: E731
    with pytest.raises(optuna.TrialPruned, match="never decreased"):
        suggest_lr(trial, model, optimizer, never_falls, loader, end_lr=10, num_iter=20)
    assert trial.user_attrs[ATTR_PREFIX + "suggestion"] is None and trial.user_attrs[ATTR_PREFIX + "lr"] is None


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_the_pruner_prunes_a_non_finite_value_at_once(bad):
    pruner = DivergencePruner()
    study = optuna.create_study(pruner=pruner)
    trial = study.ask()
    trial.report(1.0, 0)
    assert not trial.should_prune()
    trial.report(bad, 1)
    assert trial.should_prune() and "non-finite" in pruner.reasons[trial.number]


def test_the_pruner_prunes_an_explosion_and_not_a_noisy_descent():
    pruner = DivergencePruner()
    rng = np.random.default_rng(0)
    noisy_descent = 2.0 * np.exp(-np.arange(60) / 20) + 0.3 * rng.random(60)
    exploding = np.concatenate([np.linspace(2.0, 1.0, 20), 1.0 * 1.5 ** np.arange(1, 20)])
    assert not any(pruner.divergence(noisy_descent[:k]) for k in range(1, 61))
    first = next(k for k in range(1, len(exploding) + 1) if pruner.divergence(exploding[:k]))
    assert 20 < first < 30 and "exploded" in pruner.divergence(exploding[:first])
    # Through Optuna: pruned at the same report.
    study = optuna.create_study(pruner=pruner)
    trial = study.ask()
    pruned_at = None
    for step, value in enumerate(exploding):
        trial.report(float(value), step)
        if trial.should_prune():
            pruned_at = step + 1
            break
    assert pruned_at == first


def test_the_pruner_asks_the_wrapped_pruner_otherwise_and_ignores_rises_when_maximising():
    class Always(optuna.pruners.BasePruner):
        def prune(self, study, trial):
            return True

    study = optuna.create_study(pruner=DivergencePruner(Always()))
    trial = study.ask()
    trial.report(1.0, 0)
    assert trial.should_prune()
    rising = 1.5 ** np.arange(30)
    assert DivergencePruner().divergence(rising, minimize=True)
    assert not DivergencePruner().divergence(rising, minimize=False)
    study = optuna.create_study(direction="maximize", pruner=DivergencePruner())
    trial = study.ask()
    for step, value in enumerate(rising):
        trial.report(float(value), step)
    assert not trial.should_prune()
    with pytest.raises(TypeError, match="optuna pruner"):
        DivergencePruner(object())
    with pytest.raises(ValueError):
        DivergencePruner(explode_factor=0.5)


def test_two_processes_share_one_study_through_a_journal_file(tmp_path):
    journal = str(tmp_path / "journal.log")
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(journal))
    study = optuna.create_study(study_name="shared", storage=storage)
    study.enqueue_trial({}, user_attrs={"diverge": True})  # trains at 1000x the suggested lr
    env = pylrcore_env()
    workers = [subprocess.Popen([sys.executable, str(ROOT / "tests" / "optuna_worker.py"), journal, "shared", "3",
                                 str(seed)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
               for seed in (1, 2)]
    outputs = [w.communicate(timeout=120)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs

    trials = optuna.load_study(study_name="shared", storage=storage).trials
    assert len(trials) == 6
    state = optuna.trial.TrialState
    for t in trials:  # every trial ran its range test and kept the result
        assert FINDER_ATTRS <= {k[len(ATTR_PREFIX):] for k in t.user_attrs if k.startswith(ATTR_PREFIX)}
        assert t.user_attrs[ATTR_PREFIX + "suggestion"] > 0
    diverged = [t for t in trials if t.user_attrs.get("diverge")]
    assert len(diverged) == 1 and diverged[0].state == state.PRUNED
    assert diverged[0].user_attrs["pruned_because"]
    assert diverged[0].user_attrs[ATTR_PREFIX + "multiplier"] == 1000.0
    others = [t for t in trials if not t.user_attrs.get("diverge")]
    assert all(t.state == state.COMPLETE and math.isfinite(t.value) for t in others)
    assert {t.user_attrs["worker"] for t in others} == {1, 2}  # both processes ran trials of the one study
