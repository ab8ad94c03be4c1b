"""Streaming detector: each signal at the right step, no false alarms on real training, exact resume."""

from __future__ import annotations

import inspect
import json
import math
import pickle
from dataclasses import astuple

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pylrcore
from curves import torch_mlp
from pylrcore.detect import DEFAULTS, Detector, Event, Flag

ALARMS = Flag.NONFINITE | Flag.EXPLOSION | Flag.SPIKE | Flag.OSCILLATION


def noisy(n: int, level: float = 1.0, rel_sd: float = 0.05, seed: int = 0) -> np.ndarray:
    return level * (1.0 + rel_sd * np.random.default_rng(seed).standard_normal(n))


def decaying(n: int = 3000, seed: int = 0) -> np.ndarray:
    t = np.arange(n)
    return (0.2 + 2.0 * np.exp(-t / 300.0)) * (1.0 + 0.05 * np.random.default_rng(seed).standard_normal(n))


def seen(det: Detector, flag: Flag) -> list:
    """Steps of the onsets of `flag` in the detector's event log."""
    return [e.step for e in det.events if e.kind == flag]


# --- API shape -----------------------------------------------------------------------------------


def test_flag_is_an_intflag_with_the_six_states():
    assert issubclass(Flag, int)
    assert [f.name for f in Flag] == ["NONFINITE", "EXPLOSION", "SPIKE", "PLATEAU", "OSCILLATION", "DECREASING"]
    assert pylrcore.Flag is Flag and pylrcore.Detector is Detector


def test_keyword_defaults_are_the_core_defaults():
    params = inspect.signature(Detector).parameters
    assert {k: p.default for k, p in params.items() if k != "max_events"} == DEFAULTS
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in params.values())
    assert Detector().config == DEFAULTS


def test_verdict_fields_and_repr():
    det = Detector()
    v = det.update(2.0)
    assert (v.step, v.flags, v.onset, v.smoothed, v.best, v.zscore) == (0, Flag(0), Flag(0), 2.0, 2.0, 0.0)
    assert isinstance(v.flags, Flag) and "Verdict(step=0" in repr(v)
    assert "Detector(window=7)" in repr(Detector(window=7))


# --- each signal at the right step ----------------------------------------------------------------


def test_nonfinite_reported_at_its_step_and_does_not_poison():
    x = decaying(600)
    bad = np.insert(x, [100, 100, 400], [np.nan, np.inf, -np.inf])
    det, clean = Detector(), Detector()
    out_bad, out_clean = det.update_many(bad), clean.update_many(x)
    assert out_bad.steps_with(Flag.NONFINITE).tolist() == [100, 101, 402]
    assert out_bad.steps_with(Flag.NONFINITE, onset=True).tolist() == [100, 402]
    finite = np.isfinite(bad)
    np.testing.assert_array_equal(out_bad.smoothed[finite], out_clean.smoothed)
    np.testing.assert_array_equal(out_bad.zscore[finite], out_clean.zscore)
    assert np.isnan(out_bad.zscore[~finite]).all()
    assert out_bad.smoothed[100] == out_clean.smoothed[99]  # held, not NaN
    nonfinite = [e for e in det.events if e.kind == Flag.NONFINITE]
    assert [e.step for e in nonfinite] == [100, 402] and math.isnan(nonfinite[0].value)
    assert nonfinite[1] == Event(402, Flag.NONFINITE, -math.inf, nonfinite[1].threshold)


def test_spike_train_detected_at_the_right_steps():
    x = decaying(3000, seed=1)
    spikes = [200, 203, 206, 900, 901, 1700, 2900]
    x[spikes] *= 2.0  # 20 noise sd at step 200, 14 at the end
    det = Detector()
    out = det.update_many(x)
    assert out.steps_with(Flag.SPIKE).tolist() == spikes
    spike_events = [e for e in det.events if e.kind == Flag.SPIKE]
    assert [e.step for e in spike_events] == [200, 203, 206, 900, 1700, 2900]  # 900-901 is one onset
    assert all(e.value > e.threshold == 6.0 for e in spike_events)


def test_explosion_at_the_fastai_step():
    x = np.concatenate([noisy(300, 1.0, 0.02, 2), np.exp(np.arange(200) / 40.0)])
    det = Detector()
    out = det.update_many(x)
    s = pylrcore.ema(x, 0.98)
    best = np.minimum.accumulate(np.where(np.arange(x.size) < 9, np.inf, s))
    expected = int(np.argmax(s > 4 * best))
    assert expected > 300 and seen(det, Flag.EXPLOSION) == [expected]
    assert out.flags[-1] & Flag.EXPLOSION


def test_oscillation_onset_within_one_window_and_not_on_noise():
    x = noisy(3000, 1.0, 0.01, 3)
    x[1500:] += 0.08 * (-1.0) ** np.arange(1500)
    det = Detector()
    det.update_many(x)
    (onset,) = seen(det, Flag.OSCILLATION)
    assert 1500 <= onset <= 1500 + det.config["window"]
    event = [e for e in det.events if e.kind == Flag.OSCILLATION][0]
    assert event.value >= event.threshold == 0.85

    calm = Detector()
    out = calm.update_many(noisy(100_000, 1.0, 0.2, 4))  # i.i.d. differences alternate 2/3 of the time
    assert not (np.bitwise_or.reduce(out.flags) & (Flag.OSCILLATION | Flag.SPIKE | Flag.EXPLOSION))


def test_plateau_after_progress_and_decreasing_before():
    t = np.arange(3000)
    x = np.where(t < 1500, 2.0 - 1.8 * t / 1500, 0.2) * (1 + 0.02 * np.random.default_rng(5).standard_normal(3000))
    det = Detector()
    out = det.update_many(x)
    assert 1500 <= seen(det, Flag.PLATEAU)[0] <= 1500 + det.config["window"]
    assert seen(det, Flag.DECREASING)[0] <= 2 * det.config["warmup"]
    assert out.flags[1000] & Flag.DECREASING and out.flags[-1] & Flag.PLATEAU
    # No progress, no plateau: a flat loss is "not decreasing", which is not a plateau.
    assert not seen_any(Detector(), np.full(3000, 2.3), Flag.PLATEAU)


def seen_any(det: Detector, x: np.ndarray, flag: Flag) -> bool:
    return bool(np.bitwise_or.reduce(det.update_many(x).flags) & flag)


def test_events_are_bounded():
    x = noisy(2000, 1.0, 0.02, 6)
    x[100::50] *= 2.0
    det = Detector(max_events=5)
    det.update_many(x)
    assert len(det.events) == 5 and det.events_dropped > 0
    assert det.events[-1].step == 1950


# --- real training: zero false alarms at the default thresholds ----------------------------------


def logistic_sgd(steps: int = 4000, lr: float = 0.1, batch: int = 32, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    features = rng.standard_normal((2000, 8))
    labels = (features @ rng.standard_normal(8) + 0.5 * rng.standard_normal(2000) > 0).astype(float)
    w = np.zeros(8)
    losses = np.empty(steps)
    for i in range(steps):
        idx = rng.integers(0, 2000, batch)
        z = features[idx] @ w
        losses[i] = np.mean(np.logaddexp(0.0, z) - labels[idx] * z)
        w -= lr * features[idx].T @ (1.0 / (1.0 + np.exp(-z)) - labels[idx]) / batch
    return losses


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_real_logistic_regression_sgd_raises_no_alarm(seed):
    losses = logistic_sgd(seed=seed)
    det = Detector()
    out = det.update_many(losses)
    assert not (np.bitwise_or.reduce(out.flags) & ALARMS), det.events
    assert out.flags[:500].any()  # it does see the descent (DECREASING)


@pytest.mark.slow  # real 3,000-step torch training runs
@pytest.mark.parametrize("seed", [0, 1])
def test_real_torch_mlp_raises_no_alarm_and_streams_like_batch(seed):
    losses = torch_mlp(seed=seed)
    det = Detector()
    verdicts = [det.update(float(x)) for x in losses]  # the way a training loop calls it
    flags = np.array([v.flag_bits for v in verdicts], dtype=np.uint32)
    assert not (np.bitwise_or.reduce(flags) & ALARMS), det.events
    np.testing.assert_array_equal(flags, Detector().update_many(losses).flags)


# --- streaming == batch, checkpoints ---------------------------------------------------------------


def test_streaming_equals_batch_in_pieces():
    x = decaying(2500, seed=7)
    x[[100, 1000]] = np.nan
    x[1200] *= 3
    one, pieces = Detector(), Detector()
    singles = [one.update(v) for v in x]
    parts = [pieces.update_many(chunk) for chunk in np.array_split(x, 7)]
    joined = {name: np.concatenate([getattr(p, name) for p in parts]) for name in ("step", "flags", "onset")}
    assert joined["step"].tolist() == list(range(x.size))
    assert joined["flags"].tolist() == [v.flag_bits for v in singles]
    assert joined["onset"].tolist() == [v.onset_bits for v in singles]
    smoothed = np.concatenate([p.smoothed for p in parts])
    assert smoothed.tolist() == [v.smoothed for v in singles]
    np.testing.assert_equal([astuple(e) for e in one.events], [astuple(e) for e in pieces.events])


@pytest.mark.parametrize("how", ["load_state_dict", "json", "pickle"])
def test_state_round_trip_resumes_identically(how):
    x = decaying(3000, seed=8)
    x[2000] *= 3
    a = Detector(window=64)
    a.update_many(x[:1234])
    if how == "load_state_dict":
        b = Detector(window=64)
        b.load_state_dict(a.state_dict())
    elif how == "json":
        b = Detector(window=64)
        b.load_state_dict(json.loads(json.dumps(a.state_dict())))
    else:
        b = pickle.loads(pickle.dumps(a))
    np.testing.assert_equal([astuple(e) for e in b.events], [astuple(e) for e in a.events])
    assert b.step == a.step
    ra, rb = a.update_many(x[1234:]), b.update_many(x[1234:])
    for name in ("step", "flags", "onset", "smoothed", "best", "zscore"):
        np.testing.assert_array_equal(getattr(ra, name), getattr(rb, name))
    np.testing.assert_equal([astuple(e) for e in a.events], [astuple(e) for e in b.events])


def test_load_state_dict_rejects_other_settings_and_garbage():
    a = Detector(window=64)
    a.update(1.0)
    with pytest.raises(ValueError, match="other settings.*window"):
        Detector().load_state_dict(a.state_dict())
    with pytest.raises(ValueError, match="state_dict"):
        Detector().load_state_dict({"nope": 1})
    bad = a.state_dict()
    bad["state"]["var"] = -1.0
    with pytest.raises(ValueError, match="var"):
        Detector(window=64).load_state_dict(bad)


def test_reset_forgets_everything():
    det = Detector()
    det.update_many(np.array([1.0, np.nan, 2.0]))
    det.reset()
    assert det.step == 0 and det.events == [] and det.finite_count == 0
    assert det.update(5.0).smoothed == 5.0


# --- misuse ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "losses, error, match",
    [
        ([], ValueError, "losses is empty"),
        (np.ones((3, 2)), ValueError, "losses must be 1-D"),
        (np.array(["a", "b"]), TypeError, "losses must hold real numbers"),
        (np.array([1 + 1j]), TypeError, "losses must hold real numbers"),
    ],
)
def test_update_many_rejects_bad_arrays(losses, error, match):
    with pytest.raises(error, match=match):
        Detector().update_many(losses)


@pytest.mark.parametrize(
    "settings, error, match",
    [
        ({"beta": "0.9"}, TypeError, "beta must be a real number"),
        ({"spike_z": None}, TypeError, "spike_z must be a real number"),
        ({"window": 2.5}, TypeError, "window must be an integer"),
        ({"window": 1}, ValueError, "window must be >= 2"),
        ({"warmup": -1}, ValueError, "warmup must be >= 0"),
        ({"beta": 1.0}, ValueError, "beta must be in the open interval"),
        ({"explode_factor": 1.0}, ValueError, "explode_factor must be > 1"),
        ({"oscillation_alternation": 0.6}, ValueError, "oscillation_alternation must be in .2/3, 1."),
        ({"decrease_rel": 0.005}, ValueError, "decrease_rel must be in .plateau_rel, 1."),
        ({"spike_clip": 7.0}, ValueError, "spike_clip must be in .0, spike_z."),
        ({"plateau_rel": float("nan")}, ValueError, "plateau_rel must be in .0, 1."),
        ({"max_events": -1}, ValueError, "max_events must be >= 0"),
    ],
)
def test_bad_settings_name_the_setting(settings, error, match):
    with pytest.raises(error, match=match):
        Detector(**settings)


def test_update_rejects_non_numbers():
    with pytest.raises(TypeError, match="loss"):
        Detector().update("1.0")


# --- properties --------------------------------------------------------------------------------------

finite_losses = st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=1, max_size=400)


@settings(max_examples=300, deadline=None)
@given(finite_losses, st.integers(min_value=0, max_value=60), st.integers(min_value=2, max_value=50))
def test_never_crashes_and_never_nan_for_finite_losses(losses, warmup, window):
    det = Detector(warmup=warmup, window=window)
    out = det.update_many(losses)
    assert np.isfinite(out.smoothed).all() and np.isfinite(out.best).all() and np.isfinite(out.zscore).all()
    assert not (np.bitwise_or.reduce(out.flags) & ~np.uint32(63))
    assert not (out.flags & Flag.NONFINITE).any()
    assert all(math.isfinite(v) for v in det.stats.values())
    assert ((out.onset & ~out.flags) == 0).all()  # an onset is always a state that holds
