"""EMA smoothing: the three peer forms against independent references (scipy lfilter, the peers'
own loops, the real Lightning callback), streaming == whole-array, non-finite rules, bad input."""

from __future__ import annotations

import pickle
import types
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.signal import lfilter

import pylrcore
from curves import torch_lr_finder_history

RTOL = 1e-12


def _raw(n: int = 500, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return 2.0 + np.cumsum(rng.normal(0, 0.05, n)) + rng.normal(0, 0.3, n)


@pytest.mark.parametrize("beta", [0.5, 0.9, 0.98, 0.999])
def test_debiased_matches_lfilter(beta: float) -> None:
    x = _raw()
    ref = lfilter([1 - beta], [1, -beta], x) / (1 - beta ** np.arange(1, x.size + 1))
    np.testing.assert_allclose(pylrcore.ema(x, beta), ref, rtol=RTOL)


@pytest.mark.parametrize("beta", [0.5, 0.98])
def test_lightning_matches_lfilter_with_shifted_correction(beta: float) -> None:
    x = _raw()
    ref = lfilter([1 - beta], [1, -beta], x) / (1 - beta ** np.arange(2, x.size + 2))
    out = pylrcore.ema(x, beta, kind="lightning")
    np.testing.assert_allclose(out, ref, rtol=RTOL)
    assert out[0] == pytest.approx(x[0] / (1 + beta), rel=1e-14)


@pytest.mark.parametrize("smooth_f", [0.05, 0.3])
def test_plain_matches_torch_lr_finder_loop(smooth_f: float) -> None:
    x = _raw()
    out = pylrcore.ema(x, 1 - smooth_f, kind="torch_lr_finder")
    np.testing.assert_allclose(out, torch_lr_finder_history(x, smooth_f), rtol=RTOL)
    assert out[0] == x[0]
    # and the same recursion through lfilter with the first value as initial state
    ref = lfilter([smooth_f], [1, -(1 - smooth_f)], x[1:], zi=[(1 - smooth_f) * x[0]])[0]
    np.testing.assert_allclose(out[1:], ref, rtol=RTOL)


def test_debiased_form_matches_torch_lerp_in_float64() -> None:
    torch = pytest.importorskip("torch")
    x = _raw(200)
    val, count, ref = torch.tensor(0.0, dtype=torch.float64), 0, []
    for loss in x:  # fastai's recurrence, in float64: lerp(loss, val, beta), value val / (1 - beta**count)
        count += 1
        val = torch.lerp(torch.tensor(loss, dtype=torch.float64), val, 0.98)
        ref.append(float(val) / (1 - 0.98**count))
    np.testing.assert_allclose(pylrcore.ema(x, 0.98, kind="debiased"), ref, rtol=RTOL)


@pytest.mark.parametrize("beta", [0.98, 0.9, 0.6, 0.3])
def test_fastai_form_is_fastais_float32_arithmetic_bit_for_bit(beta: float) -> None:
    """fastai's AvgSmoothLoss keeps ``val`` in a float32 tensor: torch.lerp(loss, val, beta) then
    val / (1 - beta**count). Whole-array and streaming forms equal that loop exactly."""
    torch = pytest.importorskip("torch")
    x = 0.05 + np.abs(_raw(3000)) * np.exp(-np.linspace(0, 4, 3000))  # a positive, falling loss
    val, ref = torch.tensor(0.0), []
    for count, loss in enumerate(x, 1):
        val = torch.lerp(torch.tensor(loss, dtype=torch.float32), val, beta)
        ref.append((val / (1 - beta**count)).item())
    np.testing.assert_array_equal(pylrcore.ema(x, beta, kind="fastai"), ref)
    stream = pylrcore.EMA(beta, kind="fastai")
    np.testing.assert_array_equal([stream.update(v) for v in x], ref)
    assert np.max(np.abs(np.array(ref) / pylrcore.ema(x, beta, kind="debiased") - 1)) < 2e-6  # float32 vs float64


@pytest.mark.slow  # imports Lightning
def test_lightning_form_matches_the_real_lightning_callback() -> None:
    torch = pytest.importorskip("torch")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lr_finder = pytest.importorskip("pytorch_lightning.tuner.lr_finder")
    x = _raw(120)
    cb = lr_finder._LRCallback(num_training=len(x), early_stop_threshold=None)
    trainer = types.SimpleNamespace(
        fit_loop=types.SimpleNamespace(batch_idx=0),
        accumulate_grad_batches=1,
        global_step=0,
        should_stop=False,
        strategy=types.SimpleNamespace(broadcast=lambda v: v),
    )
    for i, loss in enumerate(x):
        trainer.global_step = i + 1  # Lightning has already counted the optimizer step
        cb.on_train_batch_end(trainer, None, {"loss": torch.tensor(loss, dtype=torch.float64)}, None, i)
    np.testing.assert_allclose(pylrcore.ema(x, 0.98, kind="lightning"), cb.losses, rtol=RTOL)


@pytest.mark.parametrize("kind", ["debiased", "plain", "lightning"])
def test_streaming_equals_whole_array_and_batches(kind: str) -> None:
    # Long enough for the whole-array fast path (chunked recurrence): equal to 1e-13 of the curve's
    # scale, not bitwise (this curve crosses zero, where relative error means nothing).
    x = _raw(20_000)
    whole = pylrcore.ema(x, 0.999, kind=kind)
    one = pylrcore.EMA(0.999, kind=kind)
    streamed = [one.update(v) for v in x]
    np.testing.assert_allclose(streamed, whole, rtol=1e-13, atol=1e-13 * np.abs(x).max())
    batched = pylrcore.EMA(0.999, kind=kind)
    parts = [batched.update_many(x[:7]), batched.update_many(x[7:150]), batched.update_many(x[150:])]
    np.testing.assert_array_equal(np.concatenate(parts), streamed)  # update_many is the stream: bitwise
    assert one.count == x.size and one.value == streamed[-1]


def test_state_dict_round_trip_and_pickle_resume_exactly() -> None:
    x = _raw(100)
    a = pylrcore.EMA(0.95, kind="debiased")
    a.update_many(x[:60])
    b = pylrcore.EMA(0.95, kind="debiased")
    b.load_state_dict(a.state_dict())
    c = pickle.loads(pickle.dumps(a))
    rest = x[60:]
    expected = a.update_many(rest)
    np.testing.assert_array_equal(b.update_many(rest), expected)
    np.testing.assert_array_equal(c.update_many(rest), expected)
    assert b.state_dict() == c.state_dict() == a.state_dict()


def test_state_dict_from_another_configuration_is_refused() -> None:
    a = pylrcore.EMA(0.9)
    with pytest.raises(ValueError, match="beta"):
        pylrcore.EMA(0.5).load_state_dict(a.state_dict())
    with pytest.raises(ValueError, match="state_dict"):
        a.load_state_dict({"nope": 1})


def test_nonfinite_rules() -> None:
    x = np.array([2.0, np.nan, 4.0, np.inf, -np.inf, 6.0])
    finite = x[np.isfinite(x)]
    ref = pylrcore.ema(finite, 0.5)
    marked = pylrcore.ema(x, 0.5)
    assert np.isnan(marked[[1, 3, 4]]).all()
    np.testing.assert_array_equal(marked[[0, 2, 5]], ref)  # bad values never entered the average
    held = pylrcore.ema(x, 0.5, nonfinite="hold")
    np.testing.assert_array_equal(held, [ref[0], ref[0], ref[1], ref[1], ref[1], ref[2]])
    with pytest.raises(ValueError, match=r"index 1 .*nan"):
        pylrcore.ema(x, 0.5, nonfinite="raise")
    s = pylrcore.EMA(0.5)
    s.update_many(x)
    assert s.nonfinite_count == 3 and s.count == 3


def test_leading_nonfinite_with_hold_is_nan_until_a_value_exists() -> None:
    out = pylrcore.ema([np.nan, 1.0], 0.5, nonfinite="hold")
    assert np.isnan(out[0]) and out[1] == 1.0


@pytest.mark.parametrize("beta", [0.0, 1.0, -0.1, 1.5, float("nan"), float("inf")])
def test_beta_outside_open_unit_interval_is_refused(beta: float) -> None:
    with pytest.raises(ValueError, match="beta must be in the open interval"):
        pylrcore.ema([1.0, 2.0], beta)
    with pytest.raises(ValueError, match="beta"):
        pylrcore.EMA(beta)


@pytest.mark.parametrize(
    ("values", "error", "match"),
    [
        ([], ValueError, "losses is empty"),
        (np.ones((3, 2)), ValueError, "losses must be 1-D"),
        (np.float64(3.0), ValueError, "losses must be 1-D"),
        (np.array(["a", "b"]), TypeError, "real numbers"),
        (np.array([1 + 2j]), TypeError, "real numbers"),
        ([1.0, "x"], TypeError, "real numbers"),
    ],
)
def test_bad_losses(values: object, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        pylrcore.ema(values, 0.9)


def test_bad_kind_and_policy_are_named() -> None:
    with pytest.raises(ValueError, match="kind must be one of"):
        pylrcore.ema([1.0], 0.9, kind="boxcar")
    with pytest.raises(ValueError, match="nonfinite must be"):
        pylrcore.ema([1.0], 0.9, nonfinite="ignore")


def test_accepts_lists_float32_ints_and_torch_tensors() -> None:
    ref = pylrcore.ema([1.0, 2.0, 3.0], 0.5)
    np.testing.assert_array_equal(pylrcore.ema(np.array([1, 2, 3]), 0.5), ref)
    np.testing.assert_array_equal(pylrcore.ema(np.array([1, 2, 3], np.float32), 0.5), ref)
    torch = pytest.importorskip("torch")
    np.testing.assert_array_equal(pylrcore.ema(torch.tensor([1.0, 2.0, 3.0]), 0.5), ref)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.floats(allow_nan=True, allow_infinity=True, width=64), min_size=1, max_size=60),
    st.floats(min_value=1e-6, max_value=1 - 1e-6),
    st.sampled_from(["debiased", "plain", "lightning"]),
)
def test_property_finite_in_finite_out_and_nonfinite_marked(values: list, beta: float, kind: str) -> None:
    x = np.array(values)
    out = pylrcore.ema(x, beta, kind=kind)
    finite = np.isfinite(x)
    assert np.array_equal(np.isnan(out), ~finite) or not np.isfinite(out[finite]).all()
    # finite inputs of moderate size never produce NaN
    small = np.clip(np.nan_to_num(x, nan=0.0, posinf=1e6, neginf=-1e6), -1e6, 1e6)
    out_small = pylrcore.ema(small, beta, kind=kind)
    assert np.isfinite(out_small).all()
    lo, hi = small.min(), small.max()
    if kind != "lightning":  # convex combinations stay inside the data range
        assert (out_small >= lo - 1e-9 * max(1, abs(lo))).all() and (out_small <= hi + 1e-9 * max(1, abs(hi))).all()
