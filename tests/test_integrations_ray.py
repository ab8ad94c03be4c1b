"""The Ray Tune integration: the guard and stopper alone, then a real sweep on a local Ray cluster
started by the test (two workers, loopback only): four function trials whose lr comes from a range
test, one forced to diverge and stopped by the DivergenceStopper, the best one inside the usable
range; then two class-API trials, the diverging one stopped the same way."""

from __future__ import annotations

import math
import os
import signal
from pathlib import Path

import numpy as np
import pytest
from toy_tasks import linear_regression

torch = pytest.importorskip("torch")
ray = pytest.importorskip("ray")
tune = pytest.importorskip("ray.tune")

from pylrcore.integrations.ray import (  # noqa: E402
    ATTR_PREFIX,
    GUARD_PREFIX,
    DivergenceStopper,
    RangeTestFailed,
    TrialGuard,
    search_space,
    suggest_lr,
)

# slow: a Ray cluster; CI runs it (pytest -m "not slow" leaves it out)
pytestmark = pytest.mark.slow

TESTS = Path(__file__).resolve().parent


def test_suggest_lr_sets_the_lr_and_the_next_result_carries_the_range_test():
    model, optimizer, loader = linear_regression()
    before = [p.detach().clone() for p in model.parameters()]
    guard = TrialGuard()
    lr = suggest_lr(model, optimizer, torch.nn.MSELoss(), loader, end_lr=10, num_iter=60, multiplier=0.5, guard=guard)
    assert optimizer.param_groups[0]["lr"] == lr
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters())) and not optimizer.state
    first, second = guard.metrics(1.0), guard.metrics(0.9)
    assert first[ATTR_PREFIX + "lr"] == lr == 0.5 * first[ATTR_PREFIX + "suggestion"]
    assert first[ATTR_PREFIX + "zone_low"] < first[ATTR_PREFIX + "suggestion"] < first[ATTR_PREFIX + "zone_high"]
    curve = first[ATTR_PREFIX + "curve"]
    assert 10 <= len(curve["lrs"]) == len(curve["losses"]) <= 50
    assert ATTR_PREFIX + "curve" not in second and second[ATTR_PREFIX + "lr"] == lr  # the curve once, the rest always
    assert first[GUARD_PREFIX + "diverged"] == 0 and first[GUARD_PREFIX + "events"] == 0


def test_no_lr_found_is_an_error_naming_the_diagnosis():
    model, optimizer, loader = linear_regression()
    with torch.no_grad():
        model.weight.zero_()
    never_falls = lambda output, target: (output * 0).sum() + 1.0  # noqa: E731
    guard = TrialGuard()
    with pytest.raises(RangeTestFailed, match="never decreased"):
        suggest_lr(model, optimizer, never_falls, loader, end_lr=10, num_iter=20, guard=guard)
    assert guard.range_test[ATTR_PREFIX + "suggestion"] is None


def test_the_guard_and_the_stopper_agree_with_the_optuna_pruner_rule():
    optuna_mod = pytest.importorskip("optuna")
    from pylrcore.integrations.optuna import DivergencePruner

    rng = np.random.default_rng(0)
    noisy_descent = 2.0 * np.exp(-np.arange(60) / 20) + 0.3 * rng.random(60)
    exploding = np.concatenate([np.linspace(2.0, 1.0, 20), 1.5 ** np.arange(1, 20)])
    pruner = DivergencePruner()
    first = next(k for k in range(1, len(exploding) + 1) if pruner.divergence(exploding[:k]))
    stopper, guard = DivergenceStopper("loss"), TrialGuard()
    assert not any(stopper("calm", {"loss": float(v)}) for v in noisy_descent)
    stops = [stopper("wild", {"loss": float(v)}) for v in exploding]
    verdicts = [guard.metrics(v)[GUARD_PREFIX + "diverged"] for v in exploding]
    assert stops.index(True) + 1 == first == verdicts.index(1) + 1  # the same report as Optuna's pruner
    assert "exploded" in stopper.reasons["wild"] and guard.counts["explosion"] == 1
    assert optuna_mod is not None


def test_the_stopper_stops_non_finite_values_and_guard_verdicts():
    stopper = DivergenceStopper("loss")
    assert not stopper("a", {"loss": 1.0})
    assert stopper("a", {"loss": math.nan}) and "non-finite" in stopper.reasons["a"]
    assert stopper("b", {"loss": 1.0, GUARD_PREFIX + "diverged": 1})
    assert not stopper("c", {"other": 1.0})  # a result without the metric is no verdict
    maximise = DivergenceStopper("accuracy", mode="max")
    assert not any(maximise("d", {"accuracy": float(v)}) for v in 1.5 ** np.arange(30))
    assert maximise("d", {"accuracy": math.inf}) and not maximise.stop_all()
    guard = TrialGuard()
    assert guard.metrics(math.inf)[GUARD_PREFIX + "nonfinite_loss"] == 1 and "non-finite" in guard.reason


def test_search_space_is_a_log_uniform_multiplier():
    space = search_space(0.3, 3.0)
    domain = space["lr_multiplier"]
    assert isinstance(domain, tune.search.sample.Float) and (domain.lower, domain.upper) == (0.3, 3.0)
    samples = [domain.sample() for _ in range(200)]
    assert all(0.3 <= s <= 3.0 for s in samples) and 0.6 < np.median(samples) < 1.6  # log-uniform: median ~0.95
    with pytest.raises(ValueError):
        search_space(3.0, 0.3)


@pytest.mark.slow
# Ray's own modules warn from inside its code (deprecations in its dependencies): not pylrcore's.
@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning", "ignore::UserWarning",
                            "ignore::ResourceWarning", "ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_sweep_on_a_local_ray_cluster(tmp_path, monkeypatch):
    import procs

    root = procs.pylrcore_env()["PYTHONPATH"]
    # The workers (started by the raylet with this environment) import pylrcore and the trainable.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([root, str(TESTS)]))
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")  # no network beyond loopback
    # Ray puts the driver's working directory first on its workers' sys.path: from a source checkout
    # that is the unbuilt pylrcore/ folder (no _core). Start the cluster from a scratch folder.
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(TESTS))
    from ray_trainable import Regression
    from ray_trainable import regression as trainable

    steps = 24
    stopper = DivergenceStopper("loss")
    # Tune's fit() sets its own SIGINT/SIGUSR1 handlers and ray.init a SIGTERM one, and neither puts
    # the old ones back: later tests in this process (Ctrl-C during a restore) need Python's own.
    signals = [s for s in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGUSR1", None)) if s is not None]
    handlers = {s: signal.getsignal(s) for s in signals}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        tuner = tune.Tuner(
            tune.with_resources(trainable, {"cpu": 1}),
            param_space={"lr_multiplier": tune.grid_search([0.3, 0.5, 1.0, 1000.0]), "steps": steps},
            tune_config=tune.TuneConfig(metric="loss", mode="min"),
            run_config=tune.RunConfig(name="sweep", storage_path=str(tmp_path), stop=stopper, verbose=0),
        )
        grid = tuner.fit()
        # The class API on the same cluster: a guard of its own, the same stopper with an iteration cap.
        class_stopper = DivergenceStopper("loss")
        classes = tune.Tuner(
            tune.with_resources(Regression, {"cpu": 1}),
            param_space={"lr_multiplier": tune.grid_search([1.0, 1000.0])},
            tune_config=tune.TuneConfig(metric="loss", mode="min"),
            run_config=tune.RunConfig(name="classes", storage_path=str(tmp_path), verbose=0,
                                      stop=tune.stopper.CombinedStopper(
                                          class_stopper, tune.stopper.MaximumIterationStopper(steps))),
        ).fit()
    finally:
        ray.shutdown()
        for s, handler in handlers.items():
            signal.signal(s, handler)
    assert len(grid) == 4 and not grid.errors
    by_multiplier = {r.config["lr_multiplier"]: r for r in grid}
    wild = by_multiplier[1000.0]
    assert wild.metrics[GUARD_PREFIX + "diverged"] == 1
    assert wild.metrics["training_iteration"] < steps  # stopped by the stopper, not by its own loop
    assert stopper.reasons and all("non-finite" in r or "exploded" in r or "guard" in r for r in stopper.reasons.values())
    for m in (0.3, 0.5, 1.0):
        assert by_multiplier[m].metrics["training_iteration"] == steps
        assert by_multiplier[m].metrics[GUARD_PREFIX + "diverged"] == 0
    best = grid.get_best_result(metric="loss", mode="min", filter_nan_and_inf=True)
    m = best.metrics
    assert best.config["lr_multiplier"] != 1000.0
    assert m[ATTR_PREFIX + "zone_low"] <= m[ATTR_PREFIX + "lr"] <= m[ATTR_PREFIX + "zone_high"]
    # Two workers ran the trials; each trial's results (with the range test's curve in its first
    # result) are in its folder under storage_path.
    pids = {int(r.metrics_dataframe["pid"].iloc[0]) for r in grid}
    assert len(pids) >= 2
    first = best.metrics_dataframe.iloc[0]
    assert any(c.startswith(ATTR_PREFIX + "curve") for c in best.metrics_dataframe.columns) and first[ATTR_PREFIX + "lr"] > 0
    # The class trainables: the calm one ran to the cap, the wild one was stopped early.
    assert len(classes) == 2 and not classes.errors
    by_multiplier = {r.config["lr_multiplier"]: r.metrics for r in classes}
    assert by_multiplier[1.0]["training_iteration"] == steps and by_multiplier[1.0][GUARD_PREFIX + "diverged"] == 0
    assert by_multiplier[1000.0]["training_iteration"] < steps and by_multiplier[1000.0][GUARD_PREFIX + "diverged"] == 1
    assert len(class_stopper.reasons) == 1 and by_multiplier[1.0][ATTR_PREFIX + "lr"] > 0
