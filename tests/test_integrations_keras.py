"""The Keras integration, on the PyTorch backend: the range test restores the model and optimizer
bit for bit and reproduces the seed's Keras finder; a pylrcore schedule drives a Keras optimizer and
survives save/load; the guard callback records, stops and scales on real ``fit`` runs."""

from __future__ import annotations

import os

import numpy as np
import pytest

# Before keras is imported: the backend is chosen once, at import (torch is installed for the rest).
os.environ.setdefault("KERAS_BACKEND", "torch")
keras = pytest.importorskip("keras")
pytest.importorskip("torch")

# Keras's torch backend converts tensors with np.array(tensor), which numpy >= 2.x flags as
# deprecated from inside keras (torch's __array__ has no copy keyword): not pylrcore's to fix.
# slow: Keras training (and a JAX subprocess); CI runs it (pytest -m "not slow" leaves it out)
pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")]

from pylrcore import schedules as S  # noqa: E402
from pylrcore.integrations.keras import FinderCallback, GuardCallback, KerasSchedule, LRFinder, find  # noqa: E402


def data(n=512, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 8)).astype("float32")
    y = (x @ rng.normal(size=(8, 1)) + 0.1 * rng.normal(size=(n, 1))).astype("float32")
    return x, y


def seed_model(optimizer=None):
    """Seed 000's model: Dense(64, relu) + Dense(1), Adam, MSE."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(64, activation="relu"), keras.layers.Dense(1)])
    model.compile(optimizer=optimizer or keras.optimizers.Adam(), loss="mse")
    return model


def values(variables):
    return [np.array(keras.ops.convert_to_numpy(v.value), copy=True) for v in variables]


def bitwise_equal(a, b):
    return len(a) == len(b) and all(x.dtype == y.dtype and x.tobytes() == y.tobytes() for x, y in zip(a, b))


def test_the_range_test_restores_weights_and_optimizer_variables_bit_for_bit(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    x, y = data()
    model = seed_model(keras.optimizers.Adam(learning_rate=1e-3))
    model.fit(x, y, batch_size=32, epochs=1, steps_per_epoch=3, verbose=0)  # moments and step count not zero
    weights, opt_state = values(model.variables), values(model.optimizer.variables)
    # From 1e-4: the curve starting at the trained lr (1e-3) is noise until it diverges, and pylrcore
    # rightly makes no pick there; the restore is checked either way.
    result = find(model, x, y, start_lr=1e-4, num_iter=60, end_lr=10)
    assert result.suggestion is not None and len(result.lrs) > 20
    assert bitwise_equal(values(model.variables), weights)
    assert bitwise_equal(values(model.optimizer.variables), opt_state)
    assert float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)) == pytest.approx(1e-3, rel=1e-6)
    assert list(tmp_path.iterdir()) == []  # the copy stayed in memory
    # Training goes on from the restored state exactly as it would have without the test.
    twin = seed_model(keras.optimizers.Adam(learning_rate=1e-3))
    twin.fit(x, y, batch_size=32, epochs=1, steps_per_epoch=3, verbose=0)
    a = model.train_on_batch(x[:32], y[:32])
    b = twin.train_on_batch(x[:32], y[:32])
    assert a == b and bitwise_equal(values(model.variables), values(twin.variables))


def test_an_unbuilt_model_and_optimizer_are_built_first_and_left_as_new():
    x, y = data()
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.layers.Dense(16, activation="relu"), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.01), loss="mse")
    result = find(model, x, y, num_iter=30)
    assert model.built and model.optimizer.built and len(result.lrs) >= 2
    assert int(keras.ops.convert_to_numpy(model.optimizer.iterations)) == 0


def test_the_seed_recipe_beside_its_own_moving_average_pick(capsys):
    """Seed 000 sweeps 1e-7..1 over one epoch of train_on_batch with Adam and picks the steepest
    descent of a 10-point moving average of the raw losses. The same curve through pylrcore."""
    x, y = data(n=3200)
    model = seed_model()
    result = find(model, x, y, batch_size=32, start_lr=1e-7, end_lr=1, num_iter=100)
    losses, lrs = result.losses, result.lrs
    # The seed's rule, on pylrcore's recorded curve (its finite part).
    ma = np.convolve(losses, np.ones(10) / 10, mode="valid")
    seed_lr = float(lrs[int(np.argmin(np.gradient(ma)))])
    low, high = result.zone
    with capsys.disabled():
        print(f"\nseed-000 recipe: pylrcore suggests {result.suggestion:.3g} (usable {low:.3g}..{high:.3g}); "
              f"the seed's 10-point moving-average steepest descent picks {seed_lr:.3g}; {result.diagnosis}")
    assert low <= result.suggestion <= high
    # The seed's pick lies within a decade of the usable range (its window lags ~5 points behind).
    assert low / 10 <= seed_lr <= high
    # The suggestion trains: a fresh model at that lr ends far below where it started.
    model = seed_model(keras.optimizers.Adam(learning_rate=result.suggestion))
    before = model.evaluate(x, y, verbose=0)
    model.fit(x, y, batch_size=32, epochs=2, verbose=0)
    assert model.evaluate(x, y, verbose=0) < 0.2 * before


def test_pydataset_generator_and_the_object_form():
    x, y = data()

    class Batches(keras.utils.PyDataset):
        def __len__(self):
            return 16

        def __getitem__(self, i):
            return x[32 * i:32 * (i + 1)], y[32 * i:32 * (i + 1)]

    model = seed_model()
    before = values(model.variables)
    from_dataset = LRFinder(model).range_test(Batches(), num_iter=40, shuffle=False)
    from_arrays = find(model, x, y, num_iter=40, shuffle=False)
    # Same batches in the same order: the same curve.
    np.testing.assert_array_equal(from_dataset.losses, from_arrays.losses)
    gen = ((x[i:i + 32], y[i:i + 32]) for i in range(0, 320, 32))  # 10 batches, then it ends
    short = find(model, gen, num_iter=40)
    assert len(short.lrs) == 10 and not short.stopped_early
    assert bitwise_equal(values(model.variables), before)
    # A torch DataLoader yields [x, y] lists, read as (x, y) like Keras's fit reads them.
    import torch

    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y)),
                                         batch_size=32)
    from_loader = find(model, loader, num_iter=40, shuffle=False)
    np.testing.assert_allclose(from_loader.losses, from_arrays.losses, rtol=1e-6)
    payload = from_dataset.to_json()
    assert '"suggestion"' in payload


def test_an_optimizer_driven_by_a_schedule_keeps_it():
    x, y = data()
    sched = KerasSchedule(S.warmup(10) >> S.cosine(100), base_lr=1e-3)
    model = seed_model(keras.optimizers.Adam(learning_rate=sched))
    model.optimizer.build(model.trainable_variables)
    state = values(model.optimizer.variables)
    result = find(model, x, y, num_iter=100)  # 40 noisy points: no fall clear of the noise, hence no pick
    assert result.suggestion is not None and result.stopped_early  # the sweep's lrs, not the schedule's
    assert model.optimizer._learning_rate is sched
    assert bitwise_equal(values(model.optimizer.variables), state)  # the sweep's lr variable is gone again


def test_misuse_is_refused_clearly():
    x, y = data()
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(1)])
    with pytest.raises(ValueError, match="compile"):
        find(model, x, y)
    model.compile(optimizer="sgd", loss="mse")
    with pytest.raises(ValueError, match="start_lr"):
        find(model, x, y, start_lr=1.0, end_lr=0.1)
    with pytest.raises(ValueError, match="y and sample_weight"):
        find(model, iter([(x, y)]), y)


# ---- schedules ---------------------------------------------------------------------------------


def test_a_pylrcore_schedule_drives_the_keras_optimizer_step_by_step():
    x, y = data()
    schedule = S.warmup(5) >> S.cosine(20, eta_min=1e-5)
    seen = []

    class Record(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            seen.append(float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)))

    model = seed_model(keras.optimizers.SGD(learning_rate=KerasSchedule(schedule, base_lr=0.05)))
    model.fit(x, y, batch_size=32, epochs=2, verbose=0, callbacks=[Record()])
    expected = schedule(np.arange(len(seen)), 0.05)
    np.testing.assert_allclose(seen, expected, rtol=1e-6)  # float32 on the Keras side


def test_the_schedule_serialises_and_reloads_with_a_saved_model(tmp_path):
    sched = KerasSchedule(S.warmup(100, start_factor=0.1) >> S.cosine(900, eta_min=1e-5), base_lr=3e-3)
    again = KerasSchedule.from_config(sched.get_config())
    assert again.schedule == sched.schedule and again.base_lr == sched.base_lr
    assert KerasSchedule("warmup(100) >> cosine(900)").schedule == S.warmup(100) >> S.cosine(900)
    model = seed_model(keras.optimizers.Adam(learning_rate=sched))
    x, y = data()
    model.fit(x, y, epochs=1, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    restored = loaded.optimizer._learning_rate
    assert isinstance(restored, KerasSchedule) and restored.schedule == sched.schedule
    for step in (0, 50, 100, 500, 2000):
        assert float(keras.ops.convert_to_numpy(restored(step))) == pytest.approx(sched.schedule(step, 3e-3), rel=1e-6)


def test_the_traced_lookup_matches_the_eager_values():
    sched = KerasSchedule(S.one_cycle(50, max_lr=0.1), base_lr=0.01)
    steps = keras.ops.convert_to_tensor(np.arange(70), dtype="int32")
    traced = keras.ops.convert_to_numpy(sched.lookup(steps))
    eager = np.asarray([float(keras.ops.convert_to_numpy(sched(int(s)))) for s in range(70)], dtype=np.float32)
    np.testing.assert_array_equal(traced, eager)  # the last value is held after the end
    with pytest.raises(ValueError, match="steps="):
        KerasSchedule(S.exponential(0.9)).lookup(steps)


# ---- the guard -----------------------------------------------------------------------------------


def poisoned(n_bad_from=None):
    x, y = data(n=640)
    if n_bad_from is not None:
        y = y.copy()
        y[n_bad_from:n_bad_from + 32] = np.nan
    return x, y


@pytest.mark.parametrize("policy", ["record", "stop"])
def test_the_guard_sees_a_nan_loss_and_stops_when_told(policy):
    x, y = poisoned(n_bad_from=320)  # batch 10 of 20 has NaN targets
    model = seed_model(keras.optimizers.Adam(1e-3))
    told = []
    guard = GuardCallback(policy, on_event=told.append)  # e.g. pylrcore.integrations.event_logger(writer)
    seen = []
    history = model.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0,
                        callbacks=[guard, keras.callbacks.LambdaCallback(on_train_batch_end=lambda b, logs: seen.append(dict(logs)))])
    assert [e.kind for e in guard.events][:1] == ["nonfinite_loss"] and guard.events[0].step == 10
    assert seen[10]["guard/nonfinite_loss"] == 1.0 and seen[9]["guard/events"] == 0.0
    assert history.history["guard/nonfinite_loss"] == [1.0]
    assert len(seen) == (11 if policy == "stop" else 20)
    assert guard.events[0].action == ("stopped training" if policy == "stop" else "recorded")
    assert told == guard.events and "non-finite loss" in guard.summary()


def test_the_guard_recovers_batch_losses_and_scales_the_lr_on_an_explosion():
    x, y = data(n=640)
    # An lr far too large for SGD: the loss explodes within a few batches.
    model = seed_model(keras.optimizers.SGD(learning_rate=0.5))
    guard = GuardCallback("scale", factor=0.1, warmup=10)
    model.fit(x, y, batch_size=32, epochs=3, shuffle=False, verbose=0, callbacks=[guard])
    kinds = [e.kind for e in guard.events]
    assert "explosion" in kinds or "nonfinite_loss" in kinds
    scaled = [e for e in guard.events if e.action.startswith("lr scaled")]
    assert scaled and float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)) == pytest.approx(
        0.5 * 0.1 ** len(scaled), rel=1e-5)
    assert "lr 0.5" in guard.summary()
    # The batch losses the guard reads are Keras's per-batch losses, not the running mean.
    model = seed_model(keras.optimizers.SGD(learning_rate=1e-3))
    guard = GuardCallback()
    recorded = []
    guard.detector.update = (lambda update: lambda v: (recorded.append(v), update(v))[1])(guard.detector.update)
    model.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0)  # warm the train function
    truth = []

    class Truth(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            xb, yb = x[32 * batch:32 * (batch + 1)], y[32 * batch:32 * (batch + 1)]
            truth.append(float(np.mean((self.model.predict_on_batch(xb) - yb) ** 2)))

    model.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0, callbacks=[Truth(), guard])
    np.testing.assert_allclose(recorded, truth, rtol=1e-4)


def test_guard_settings_are_checked():
    with pytest.raises(ValueError, match="policy"):
        GuardCallback("raise")
    with pytest.raises(ValueError, match="factor"):
        GuardCallback("scale", factor=2.0)
    x, y = data()
    model = seed_model(keras.optimizers.SGD(learning_rate=KerasSchedule(S.cosine(10), base_lr=0.1)))
    with pytest.raises(ValueError, match="float learning rate"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[GuardCallback("scale")])


# ---- another backend -----------------------------------------------------------------------------


@pytest.mark.slow  # a subprocess with a second framework
@pytest.mark.parametrize("backend, module", [("jax", "jax"), ("tensorflow", "tensorflow")])
def test_the_same_code_on_another_backend(backend, module):
    """Keras picks its backend once per process: the checks run in a subprocess (tests/keras_backend_check.py)."""
    import importlib.util
    import json
    import subprocess
    import sys

    from procs import pylrcore_env, scratch_dir

    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed (CI installs jax[cpu]; TensorFlow is ~600 MB)")
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "keras_backend_check.py")
    done = subprocess.run([sys.executable, script, backend], capture_output=True, text=True, env=pylrcore_env(),
                          cwd=scratch_dir(), timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["backend"] == backend and out["restored"] and out["stopped_early"]
    assert out["zone"][0] <= out["suggestion"] <= out["zone"][1]
    # A schedule-driven optimizer is still swept (inside the traced step) and keeps its schedule.
    assert out["schedule_sweep_stopped_early"] and out["schedule_kept"]
    # The schedule inside the traced train step: the lrs used are the schedule's, step for step.
    assert out["expected_lrs_match"] and out["schedule_replay_max_diff"] == 0.0
    assert out["guard_events"] == [[10, "nonfinite_loss", "stopped training"]] and out["guard_batches"] == 11


# ---- the finder as a callback --------------------------------------------------------------------


def test_the_finder_callback_trains_from_the_same_start_at_the_suggestion():
    x, y = data()
    model = seed_model(keras.optimizers.Adam(1e-3))
    finder = FinderCallback(x, y, num_iter=60, multiplier=0.5)
    model.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0, callbacks=[finder])
    assert finder.result.suggestion is not None and finder.lr == 0.5 * finder.result.suggestion
    # A twin built at that lr, without a range test, ends bit for bit where the callback's run did.
    twin = seed_model(keras.optimizers.Adam(finder.lr))
    twin.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0)
    assert bitwise_equal(values(model.variables), values(twin.variables))
    # With a KerasSchedule the suggestion becomes its base lr: the schedule keeps its shape.
    sched = KerasSchedule(S.warmup(5) >> S.cosine(50), base_lr=1.0)
    model = seed_model(keras.optimizers.SGD(sched))
    finder = FinderCallback(x, y, num_iter=60)
    model.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[finder])
    assert model.optimizer._learning_rate is sched and sched.base_lr == finder.lr == finder.result.suggestion
