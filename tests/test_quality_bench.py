"""The suggestion-quality benchmark (bench/suggest_quality): its replay of each peer's recorded curve
matches the peer's real range test, its pipeline runs end to end, and the committed results still
say what bench/README.md reports (every pick trained, every confirmation sweep of the current
confirm design recorded)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")

BENCH = Path(__file__).resolve().parent.parent / "bench" / "suggest_quality"


@pytest.fixture(scope="module")
def sq():
    sys.path.insert(0, str(BENCH))
    try:
        mods = {m: importlib.import_module(m) for m in ("tasks", "harness", "contenders", "report", "run")}
        yield mods
    finally:
        sys.path.remove(str(BENCH))


def test_torch_lr_finder_replay_equals_its_real_range_test(sq):
    """The benchmark gives torch-lr-finder the curve it records: replaying its smoothing and stop on
    our raw losses equals running torch-lr-finder itself on the same model and batches."""
    from torch_lr_finder import LRFinder

    tasks, harness, contenders = sq["tasks"], sq["harness"], sq["contenders"]
    task = tasks.BY_NAME["wine_mlp_rmsprop"]
    seed = 10
    raw = np.array(harness.range_test(task.name, seed))
    model, opt = tasks.build(task, seed)
    loader = torch.utils.data.DataLoader(tasks.batches(task, seed + 1000, 100), batch_size=None)
    finder = LRFinder(model, opt, tasks.criterion(task))
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):
        finder.range_test(loader, start_lr=1e-7, end_lr=10, num_iter=100, smooth_f=0.05, diverge_th=5)
    replay = contenders.torch_lr_finder_record(raw)
    assert len(replay) == len(finder.history["loss"])
    np.testing.assert_allclose(replay, finder.history["loss"], rtol=1e-5)
    np.testing.assert_allclose(harness.range_lrs()[: len(replay)], finder.history["lr"], rtol=1e-12)


def test_lightning_replay_follows_its_callback_rules(sq):
    """Lightning's _LRCallback debiases with global_step + 1 where global_step is already 1 at the
    first batch, and stops (after recording) from the second step on."""
    contenders = sq["contenders"]
    raw = np.array([1.0, 1.0, 10.0, 100.0, 1.0])
    rec = contenders.lightning_record(raw)
    first = 0.02 * 1.0 / (1 - 0.98 ** 2)
    assert rec[0] == pytest.approx(first)
    assert len(rec) < len(raw)  # stopped on the explosion, which is recorded
    assert rec[-1] > 4 * rec[: -1].min()


def test_fastai_replay_is_the_float32_lerp(sq):
    contenders = sq["contenders"]
    raw = np.linspace(2.0, 1.0, 30)
    rec = contenders.fastai_record(raw)
    val = torch.tensor(0.0)
    expected = []
    for i, v in enumerate(raw, 1):
        val = torch.lerp(torch.tensor(v, dtype=torch.float32), val, 0.98)
        expected.append(float(val / (1 - 0.98 ** i)))
    np.testing.assert_allclose(rec, expected, rtol=1e-6)


def test_least_squares_task_trains_as_its_closed_form(sq):
    tasks, harness = sq["tasks"], sq["harness"]
    task = tasks.BY_NAME["least_squares_gd"]
    for lr in (0.01, 0.1):
        assert harness.train(task.name, lr, 0) == pytest.approx(tasks.closed_form_val_loss(task, lr, 0), rel=1e-4)


@pytest.mark.slow  # the benchmark pipeline end to end
def test_the_pipeline_runs_end_to_end_on_a_small_protocol(sq, tmp_path, monkeypatch):
    tasks, harness, run = sq["tasks"], sq["harness"], sq["run"]
    monkeypatch.setitem(tasks.PROTOCOL, "grid", [1e-3, 1e-2, 1e-1, 1.0])
    monkeypatch.setitem(tasks.PROTOCOL, "train_seeds", [0])
    monkeypatch.setitem(tasks.PROTOCOL, "range_seeds", [10])
    monkeypatch.setattr(harness, "CACHE", tmp_path)
    monkeypatch.setattr(run, "CACHE", tmp_path)
    monkeypatch.setattr(run, "Store", lambda t: harness.Store(t, tmp_path))
    names = ["pylrcore steepest", "torch-lr-finder", "lightning", "fastai valley", "minimum/10"]
    assert run.main(["--tasks", "breast_cancer_logreg_sgd", "--workers", "1", "--contenders", *names]) == 0
    summary = (tmp_path / "summary.md").read_text()
    for name in names:
        assert f"| {name} |" in summary
    assert (tmp_path / "figures" / "breast_cancer_logreg_sgd.png").stat().st_size > 0
    stored = harness.Store(tasks.BY_NAME["breast_cancer_logreg_sgd"], tmp_path)
    assert all(stored.training(lr, 0) is not None for lr in tasks.PROTOCOL["grid"])


def test_the_committed_results_cover_every_pick_the_current_rules_make(sq):
    """bench/README.md's quality table comes from results/*.json. If a rule's pick changes (the
    suggestion code changed), the pick has no training in the cache and this fails: re-run
    ``python bench/suggest_quality/run.py`` and update the table."""
    run, report, harness, tasks = sq["run"], sq["report"], sq["harness"], sq["tasks"]
    names = [n for n in [*sq["contenders"].CONTENDERS, run.CONFIRMED]]
    for task in tasks.ALL:
        store = harness.Store(task)
        assert all(store.curve(s) is not None for s in tasks.PROTOCOL["range_seeds"]), task.name
        result = report.evaluate(store, run.all_picks(store, names))
        missing = [r for r in result["rows"] if r["failure"] == "not trained"]
        assert not missing, (task.name, missing[:3])


def test_the_committed_results_hold_a_confirmation_of_the_current_design_for_every_pick(sq):
    """The confirmed contender reads the cached sweep of LRFinder.confirm's current design (its
    factors, steps and tie rule key the record): a changed design or default pick needs a re-run."""
    run, harness, tasks = sq["run"], sq["harness"], sq["tasks"]
    from pylrcore.torch.finder import CONFIRM_FACTORS, CONFIRM_STEPS, CONFIRM_TOLERANCE

    assert (harness.CONFIRM_FACTORS, harness.CONFIRM_STEPS, harness.CONFIRM_TOLERANCE) == \
        (tuple(CONFIRM_FACTORS), CONFIRM_STEPS, CONFIRM_TOLERANCE)
    for task in tasks.ALL:
        store = harness.Store(task)
        for seed in tasks.PROTOCOL["range_seeds"]:
            base = run.default_pick(store, seed)
            if base is not None:
                record = store.confirmation(seed, base)
                assert record is not None, (task.name, seed)
                assert len(record["lrs"]) == len(CONFIRM_FACTORS)
