"""Schedules: every torch family against torch.optim.lr_scheduler stepped on a dummy optimizer
(seeded random configurations, >= 2000 steps, per-group base lrs), families torch lacks against
formulas written here, composition, text and dict round trips, bad input."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from pylrcore import schedules as S

torch = pytest.importorskip("torch")
lr_scheduler = torch.optim.lr_scheduler

STEPS = 2000
RTOL, ATOL_PER_LR = 1e-12, 1e-14


def torch_trajectory(make, base_lrs, steps=STEPS):
    params = [torch.nn.Parameter(torch.zeros(1)) for _ in base_lrs]
    opt = torch.optim.SGD([{"params": [p], "lr": lr} for p, lr in zip(params, base_lrs)], lr=base_lrs[0])
    sched = make(opt)
    out = [list(sched.get_last_lr())]
    for _ in range(steps - 1):
        opt.step()
        sched.step()
        out.append(list(sched.get_last_lr()))
    return np.array(out)


def check(schedule, make, base_lrs, steps=STEPS, upto=None):
    ref = torch_trajectory(make, base_lrs, steps)
    ours = schedule(np.arange(steps), base_lrs)
    n = steps if upto is None else upto
    tol = RTOL * np.abs(ref[:n]) + ATOL_PER_LR * np.asarray(base_lrs)
    bad = np.abs(ours[:n] - ref[:n]) > tol
    assert not bad.any(), f"first mismatch at step {np.argwhere(bad)[0]}: {ours[:n][bad][:3]} vs {ref[:n][bad][:3]}"


def rng_for(seed):
    rng = np.random.default_rng(seed)
    base = list(10 ** rng.uniform(-5, -1, size=int(rng.integers(1, 4))))
    return rng, base


SEEDS = range(6)


@pytest.mark.parametrize("seed", SEEDS)
def test_step(seed):
    rng, base = rng_for(seed)
    s, g = int(rng.integers(1, 400)), float(rng.uniform(0.1, 0.99))
    check(S.step(s, gamma=g), lambda o: lr_scheduler.StepLR(o, s, gamma=g), base)


@pytest.mark.parametrize("seed", SEEDS)
def test_multistep_with_repeated_milestones(seed):
    rng, base = rng_for(seed)
    ms = sorted(int(m) for m in rng.integers(0, STEPS, size=5))
    ms.append(ms[-1])  # repeats stack, as torch's Counter does
    g = float(rng.uniform(0.1, 0.9))
    check(S.multistep(ms, gamma=g), lambda o: lr_scheduler.MultiStepLR(o, ms, gamma=g), base)


@pytest.mark.parametrize("seed", SEEDS)
def test_exponential(seed):
    rng, base = rng_for(seed)
    g = float(rng.uniform(0.995, 0.99999))
    check(S.exponential(g), lambda o: lr_scheduler.ExponentialLR(o, gamma=g), base)


@pytest.mark.parametrize("seed", SEEDS)
def test_linear(seed):
    rng, base = rng_for(seed)
    sf, ef, T = float(rng.uniform(0.01, 1)), float(rng.uniform(0, 1)), int(rng.integers(1, 3000))
    check(S.linear(sf, ef, T), lambda o: lr_scheduler.LinearLR(o, sf, ef, total_iters=T), base)


@pytest.mark.parametrize("seed", SEEDS)
def test_polynomial(seed):
    rng, base = rng_for(seed)
    T, p = int(rng.integers(1, 3000)), float(rng.uniform(0.5, 3))
    check(S.polynomial(T, power=p), lambda o: lr_scheduler.PolynomialLR(o, total_iters=T, power=p), base)


@pytest.mark.parametrize("seed", SEEDS)
def test_cosine_up_to_T_max(seed):
    rng, base = rng_for(seed)
    T, eta = int(rng.integers(10, 3000)), float(10 ** rng.uniform(-8, -6))
    check(S.cosine(T, eta_min=eta), lambda o: lr_scheduler.CosineAnnealingLR(o, T, eta_min=eta), base, upto=min(T + 1, STEPS))


def test_cosine_holds_eta_min_past_T_max_where_torch_rises_again():
    ours = S.cosine(4)(np.arange(9), 1.0)
    assert np.allclose(ours, [1, 0.853553, 0.5, 0.146447, 0, 0, 0, 0, 0], atol=1e-6)
    ref = torch_trajectory(lambda o: lr_scheduler.CosineAnnealingLR(o, 4), [1.0], 9)[:, 0]
    assert ref[8] == pytest.approx(1.0)  # the quirk we do not reproduce


@pytest.mark.parametrize("seed", SEEDS)
def test_warm_restarts(seed):
    rng, base = rng_for(seed)
    T0, Tm, eta = int(rng.integers(1, 300)), int(rng.integers(1, 4)), float(10 ** rng.uniform(-8, -6))
    check(S.warm_restarts(T0, T_mult=Tm, eta_min=eta),
          lambda o: lr_scheduler.CosineAnnealingWarmRestarts(o, T0, T_mult=Tm, eta_min=eta), base)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("mode", ["triangular", "triangular2", "exp_range"])
def test_cyclic(seed, mode):
    rng, base = rng_for(seed)
    mx = max(base) * 10
    up, down, g = int(rng.integers(1, 500)), int(rng.integers(1, 500)), float(rng.uniform(0.999, 1.0))
    check(S.cyclic(mx, step_size_up=up, step_size_down=down, mode=mode, gamma=g),
          lambda o: lr_scheduler.CyclicLR(o, base_lr=base, max_lr=mx, step_size_up=up, step_size_down=down,
                                          mode=mode, gamma=g, cycle_momentum=False), base)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("three_phase", [False, True])
@pytest.mark.parametrize("anneal", ["cos", "linear"])
def test_one_cycle(seed, three_phase, anneal):
    rng, base = rng_for(seed)
    total = int(rng.integers(STEPS, 3000))
    pct, div, fdiv = float(rng.uniform(0.05, 0.45)), float(rng.uniform(5, 50)), float(10 ** rng.uniform(2, 5))
    check(S.one_cycle(total, pct_start=pct, anneal_strategy=anneal, div_factor=div, final_div_factor=fdiv,
                      three_phase=three_phase),
          lambda o: lr_scheduler.OneCycleLR(o, max_lr=base, total_steps=total, pct_start=pct, anneal_strategy=anneal,
                                            div_factor=div, final_div_factor=fdiv, three_phase=three_phase,
                                            cycle_momentum=False), base)


@pytest.mark.parametrize("seed", SEEDS)
def test_warmup_then_cosine_equals_sequential_lr(seed):
    rng, base = rng_for(seed)
    W, T, sf = int(rng.integers(1, 500)), int(rng.integers(STEPS, 4000)), float(rng.uniform(0.001, 0.5))

    def make(o):
        return lr_scheduler.SequentialLR(
            o, [lr_scheduler.LinearLR(o, sf, 1.0, total_iters=W), lr_scheduler.CosineAnnealingLR(o, T)], milestones=[W])

    check(S.warmup(W, start_factor=sf) >> S.cosine(T), make, base)


# ---- families torch lacks: formulas written here ---------------------------------------------------


def test_inverse_sqrt_matches_transformers_formula():
    W, t = 100, np.arange(3000)
    ref = np.where(t < W, t / max(1, W), 1 / np.sqrt(np.maximum(t + W - W, 1e-300) / W))
    np.testing.assert_allclose(S.inverse_sqrt(W)(t), ref, rtol=1e-12)
    ref = 1 / np.sqrt((t + 10000) / 10000)
    np.testing.assert_allclose(S.inverse_sqrt()(t), ref, rtol=1e-12)


@pytest.mark.parametrize("decay", ["linear", "cosine", "1-sqrt"])
def test_wsd_matches_formula(decay):
    W, St, D, m = 50, 200, 100, 0.1
    t = np.arange(500)
    x = np.clip((t - W - St) / D, 0, 1)
    d = {"linear": 1 - x, "cosine": 0.5 * (1 + np.cos(np.pi * x)), "1-sqrt": 1 - np.sqrt(x)}[decay]
    f = np.where(t < W, t / W, np.where(t < W + St, 1.0, np.where(t < W + St + D, d, 0.0)))
    np.testing.assert_allclose(S.wsd(W, St, D, decay_type=decay, min_lr_ratio=m)(t), f * (1 - m) + m, rtol=1e-12)


def test_staircase_and_exponential_warmup():
    t = np.arange(100)
    np.testing.assert_allclose(S.exponential(decay_rate=0.5, decay_steps=10, staircase=True)(t), 0.5 ** (t // 10))
    np.testing.assert_allclose(S.exponential(decay_rate=0.5, decay_steps=10)(t), 0.5 ** (t / 10), rtol=1e-14)
    w = (S.warmup(20, start_factor=1e-3, kind="exponential") >> S.constant())(t)
    np.testing.assert_allclose(w[:20], 1e-3 ** (1 - t[:20] / 20), rtol=1e-12)
    assert (w[20:] == 1).all()


def test_warmup_default_never_starts_at_zero_and_reaches_the_schedule():
    s = S.warmup(10) >> S.cosine(100)
    lr = s(np.arange(12), 0.5)
    assert lr[0] == pytest.approx(0.05) and lr[10] == 0.5 and (np.diff(lr[:11]) > 0).all()


# ---- composition --------------------------------------------------------------------------------


def test_sequence_and_shift_operator_run_each_schedule_from_its_own_step_zero():
    a, b = S.linear(0.1, 1.0, 10), S.step(5, gamma=0.5)
    seq = a >> b
    assert seq == S.sequence([a, b], [10])
    t = np.arange(30)
    np.testing.assert_array_equal(seq(t), np.where(t < 10, a(t), b(np.maximum(t - 10, 0))))


def test_product_and_scaling():
    t = np.arange(200)
    c, e = S.cosine(150, eta_min=0.01), S.exponential(0.99)
    np.testing.assert_allclose((c * e)(t, 0.3), c(t, 0.3) * e(t), rtol=1e-14)
    np.testing.assert_allclose((0.5 * c)(t, 0.3), 0.5 * c(t, 0.3), rtol=1e-15)
    with pytest.raises(ValueError, match="at most one schedule with an absolute floor"):
        S.cosine(10, eta_min=0.1) * S.cosine(20, eta_min=0.1)


def test_per_group_base_lrs_evaluated_together():
    s = S.warmup(10) >> S.one_cycle(100)
    out = s(np.arange(110), [1e-5, 1e-3])
    assert out.shape == (110, 2)
    np.testing.assert_allclose(out[:, 1], out[:, 0] * 100, rtol=1e-13)


def test_never_nan_or_negative_and_holds_after_the_end():
    t = np.arange(0, 10**9, 10**7)
    for s in (S.one_cycle(1000), S.cosine(10), S.wsd(1, 2, 3), S.polynomial(50, power=0.5), S.linear(1.0, 0.0, 5),
              S.cyclic(1.0, 3), S.warm_restarts(7, T_mult=3), S.inverse_sqrt(10), S.exponential(0.5)):
        out = s(t, 0.1)
        assert np.isfinite(out).all() and (out >= 0).all(), repr(s)


def test_scalar_and_array_calls():
    s = S.cosine(100)
    assert isinstance(s(5, 0.1), float)
    assert s(np.arange(3), 0.1).shape == (3,)
    assert s(5, [0.1, 0.2]).shape == (2,)
    assert s(np.arange(3), [0.1, 0.2]).shape == (3, 2)


# ---- text and dict forms ------------------------------------------------------------------------

EXAMPLES = [
    "warmup(500) >> cosine(10000, eta_min=1e-05)",
    "warmup(100, start_factor=0.1, kind='cosine') >> one_cycle(1000, max_lr=0.1, three_phase=True)",
    "0.5 * step(30)",
    "multistep([10, 20, 20], gamma=0.5)",
    "exponential(decay_rate=0.5, decay_steps=10, staircase=True)",
    "cyclic(0.1, step_size_up=10, mode='exp_range', gamma=0.99)",
    "wsd(10, 80, 10, decay_type='1-sqrt', min_lr_ratio=0.1)",
    "sequence([linear(0.1, 1.0, 10), cosine(100), constant(factor=0.01)], milestones=[10, 110])",
    "cosine(100) * warm_restarts(10, T_mult=2)",
    "inverse_sqrt(warmup_steps=100)",
]


@pytest.mark.parametrize("text", EXAMPLES)
def test_text_repr_and_json_round_trips(text):
    s = S.Schedule.parse(text)
    assert S.Schedule.parse(repr(s)) == s
    again = S.Schedule.from_dict(json.loads(json.dumps(s.to_dict())))
    assert again == s and hash(again) == hash(s)
    np.testing.assert_array_equal(again(np.arange(300), [0.1, 0.01]), s(np.arange(300), [0.1, 0.01]))


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("cosine(0)", "T_max must be >= 1"),
        ("cosine(1.5)", "T_max must be an integer"),
        ("step(0)", "step_size must be >= 1"),
        ("one_cycle(0)", "total_steps must be >= 2"),
        ("one_cycle(100, pct_start=0)", "pct_start must be in"),
        ("one_cycle(100, pct_start=1.2)", "pct_start must be in"),
        ("multistep([30, 10])", "sorted"),
        ("cyclic(0.001, base_lr=0.01)", "max_lr"),
        ("warmup_cosine(100, 100)", "warmup_steps .* must be < total_steps"),
        ("exponential(-0.5)", "gamma must be >= 0"),
        ("cosine(10, eta_min=-1)", "eta_min must be >= 0"),
        ("wsd(1, 2, 3, min_lr_ratio=2)", "min_lr_ratio"),
        ("warmup(10, start_factor=2) >> cosine(5)", "start_factor must be <= 1"),
        ("cosine(10) >> step(5) >> cosine(3)", "no natural length"),
        ("nothing(1)", "unknown schedule"),
        ("__import__('os').system('x')", "cannot parse"),
        ("cosine(10) +", "cannot parse"),
    ],
)
def test_bad_schedules_fail_where_they_are_built(text, match):
    with pytest.raises((ValueError, TypeError), match=match):
        S.Schedule.parse(text)


def test_bad_parameters_from_python():
    with pytest.raises(ValueError, match="eta_min must be finite"):
        S.cosine(10, eta_min=math.nan)
    with pytest.raises(TypeError, match="T_max must be an integer"):
        S.cosine("10")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="exactly one of gamma"):
        S.exponential()
    with pytest.raises(ValueError, match="mode must be one of"):
        S.cyclic(1.0, mode="sawtooth")
    with pytest.raises(ValueError, match="milestones needs"):
        S.sequence([S.cosine(5), S.cosine(5)], [])


@pytest.mark.parametrize("steps", [-1, [0, -5], 1.5, np.array([0.5])])
def test_bad_steps(steps):
    with pytest.raises(ValueError, match="steps"):
        S.cosine(10)(steps)


@pytest.mark.parametrize("base", [-0.1, math.nan, math.inf, [[0.1]], []])
def test_bad_base_lr(base):
    with pytest.raises(ValueError, match="base_lr"):
        S.cosine(10)(0, base)


# ---- against transformers' own functions (installed with the test extras; skipped without) -------


def _transformers():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pytest.importorskip("transformers.optimization")


@pytest.mark.parametrize("seed", range(4))
def test_inverse_sqrt_matches_transformers(seed):
    tr = _transformers()
    rng, base = rng_for(seed)
    W = int(rng.integers(0, 500))
    ts = None if seed % 2 else int(rng.integers(1, 5000))
    check(S.inverse_sqrt(W, timescale=ts), lambda o: tr.get_inverse_sqrt_schedule(o, W, timescale=ts), base)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("decay", ["linear", "cosine", "1-sqrt"])
def test_wsd_matches_transformers(seed, decay):
    tr = _transformers()
    rng, base = rng_for(seed)
    W, St, D = int(rng.integers(1, 300)), int(rng.integers(0, 1000)), int(rng.integers(1, 1000))
    m = float(rng.uniform(0, 0.5))
    check(S.wsd(W, St, D, decay_type=decay, min_lr_ratio=m),
          lambda o: tr.get_wsd_schedule(o, W, D, num_stable_steps=St, decay_type=decay, min_lr_ratio=m), base)
