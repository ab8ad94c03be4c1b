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


def torch_trajectory(make, base_lrs, steps=STEPS, momentum=False):
    """torch's lrs (and the momentum it writes into the groups) over ``steps`` steps."""
    params = [torch.nn.Parameter(torch.zeros(1)) for _ in base_lrs]
    opt = torch.optim.SGD([{"params": [p], "lr": lr} for p, lr in zip(params, base_lrs)], lr=base_lrs[0], momentum=0.5)
    sched = make(opt)
    out = [list(sched.get_last_lr())]
    mom = [[g["momentum"] for g in opt.param_groups]]
    for _ in range(steps - 1):
        opt.step()
        sched.step()
        out.append(list(sched.get_last_lr()))
        mom.append([g["momentum"] for g in opt.param_groups])
    return (np.array(out), np.array(mom)) if momentum else np.array(out)


def check(schedule, make, base_lrs, steps=STEPS, upto=None, momentum=False):
    ref, ref_m = torch_trajectory(make, base_lrs, steps, momentum=True)
    ours = schedule(np.arange(steps), base_lrs)
    n = steps if upto is None else upto
    tol = RTOL * np.abs(ref[:n]) + ATOL_PER_LR * np.asarray(base_lrs)
    bad = np.abs(ours[:n] - ref[:n]) > tol
    assert not bad.any(), f"first mismatch at step {np.argwhere(bad)[0]}: {ours[:n][bad][:3]} vs {ref[:n][bad][:3]}"
    if momentum:  # the momentum torch cycles, to the same tolerance
        ours_m = schedule.momentum(np.arange(steps), base_lrs)
        bad = np.abs(ours_m[:n] - ref_m[:n]) > RTOL * np.abs(ref_m[:n]) + 1e-15
        assert not bad.any(), f"momentum differs first at step {np.argwhere(bad)[0]}: {ours_m[:n][bad][:3]} vs {ref_m[:n][bad][:3]}"
    else:
        assert not schedule.cycles_momentum


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
    lo, hi = sorted(rng.uniform(0.5, 0.99, size=2))
    # torch's defaults: momentum cycled (0.8 - 0.9), and with other bounds
    check(S.cyclic(mx, step_size_up=up, step_size_down=down, mode=mode, gamma=g),
          lambda o: lr_scheduler.CyclicLR(o, base_lr=base, max_lr=mx, step_size_up=up, step_size_down=down,
                                          mode=mode, gamma=g), base, momentum=True)
    check(S.cyclic(mx, step_size_up=up, step_size_down=down, mode=mode, gamma=g, base_momentum=lo, max_momentum=hi),
          lambda o: lr_scheduler.CyclicLR(o, base_lr=base, max_lr=mx, step_size_up=up, step_size_down=down,
                                          mode=mode, gamma=g, base_momentum=lo, max_momentum=hi), base, momentum=True)
    check(S.cyclic(mx, step_size_up=up, step_size_down=down, mode=mode, gamma=g, cycle_momentum=False),
          lambda o: lr_scheduler.CyclicLR(o, base_lr=base, max_lr=mx, step_size_up=up, step_size_down=down,
                                          mode=mode, gamma=g, cycle_momentum=False), base)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("three_phase", [False, True])
@pytest.mark.parametrize("anneal", ["cos", "linear"])
def test_one_cycle(seed, three_phase, anneal):
    rng, base = rng_for(seed)
    total = int(rng.integers(STEPS, 3000))
    pct, div, fdiv = float(rng.uniform(0.05, 0.45)), float(rng.uniform(5, 50)), float(10 ** rng.uniform(2, 5))
    lo, hi = sorted(rng.uniform(0.5, 0.99, size=2))
    check(S.one_cycle(total, pct_start=pct, anneal_strategy=anneal, div_factor=div, final_div_factor=fdiv,
                      three_phase=three_phase),
          lambda o: lr_scheduler.OneCycleLR(o, max_lr=base, total_steps=total, pct_start=pct, anneal_strategy=anneal,
                                            div_factor=div, final_div_factor=fdiv, three_phase=three_phase),
          base, momentum=True)
    check(S.one_cycle(total, pct_start=pct, anneal_strategy=anneal, three_phase=three_phase, base_momentum=lo,
                      max_momentum=hi),
          lambda o: lr_scheduler.OneCycleLR(o, max_lr=base, total_steps=total, pct_start=pct, anneal_strategy=anneal,
                                            three_phase=three_phase, base_momentum=lo, max_momentum=hi),
          base, momentum=True)
    check(S.one_cycle(total, pct_start=pct, anneal_strategy=anneal, three_phase=three_phase, cycle_momentum=False),
          lambda o: lr_scheduler.OneCycleLR(o, max_lr=base, total_steps=total, pct_start=pct, anneal_strategy=anneal,
                                            three_phase=three_phase, cycle_momentum=False), base)


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
        ("warmup(10, start_factor=2) >> cosine(5)", "start_factor must be in"),
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


@pytest.mark.parametrize(
    "family, params, at, name",
    [
        ("exponential", [0.5, 1, 0, math.nan], 2, "staircase"),
        ("inverse_time", [10, 0.5, 0, 1], 2, "staircase"),
        ("cyclic", [0.01, 10, 10, 0, 1.0, math.nan, 1, 0.8, 0.9], 6, "cycle_momentum"),
        ("one_cycle", [1000, math.nan, 0.3, 0, 25, 1e4, 0, 1, 0.85, 0.95], 6, "three_phase"),
        ("one_cycle", [1000, math.nan, 0.3, 0, 25, 1e4, 0, 1, 0.85, 0.95], 7, "cycle_momentum"),
        ("timm", [0, 100, 0, 1, 1, 1, 0, 0, 0, 1, 1, -7, 7], 8, "warmup_prefix"),
    ],
)
def test_boolean_parameters_reaching_the_core_must_be_0_or_1(family, params, at, name):
    from pylrcore import _core

    code = _core.schedule_families()[family][0]
    for ok in (0.0, 1.0):  # what the Python table passes for False / True
        _core.ScheduleProgram([(code, params[:at] + [ok] + params[at + 1:], [], [])])
    with pytest.raises(ValueError, match=f"{family}: {name} must be 0 or 1"):
        _core.ScheduleProgram([(code, params[:at] + [2.0] + params[at + 1:], [], [])])


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


@pytest.mark.slow  # imports transformers
@pytest.mark.parametrize("seed", range(4))
def test_inverse_sqrt_matches_transformers(seed):
    tr = _transformers()
    rng, base = rng_for(seed)
    W = int(rng.integers(0, 500))
    ts = None if seed % 2 else int(rng.integers(1, 5000))
    check(S.inverse_sqrt(W, timescale=ts), lambda o: tr.get_inverse_sqrt_schedule(o, W, timescale=ts), base)


@pytest.mark.slow  # imports transformers
@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("decay", ["linear", "cosine", "1-sqrt"])
def test_wsd_matches_transformers(seed, decay):
    tr = _transformers()
    rng, base = rng_for(seed)
    W, St, D = int(rng.integers(1, 300)), int(rng.integers(0, 1000)), int(rng.integers(1, 1000))
    m = float(rng.uniform(0, 0.5))
    check(S.wsd(W, St, D, decay_type=decay, min_lr_ratio=m),
          lambda o: tr.get_wsd_schedule(o, W, D, num_stable_steps=St, decay_type=decay, min_lr_ratio=m), base)


# --- issue 11 item 7: every family at steps up to 2**63 - 1, against an exact reference --------------
# The reference follows the documented formulas with Python's unbounded ints and exact fractions for
# every position (step // period, step % period, step / length); only the final transcendental is a
# float. Any int64 overflow, float64 rounding of a position or hang in the core shows up here.

from bisect import bisect_right  # noqa: E402
from fractions import Fraction  # noqa: E402


def _exact(s, t):
    """(a, c) of schedule ``s`` at step ``t``: lr = max(0, a * base_lr + c)."""
    f, q = s.family, s.params
    if f == "constant":
        return q["factor"], 0.0
    if f == "step":
        return q["gamma"] ** (t // q["step_size"]), 0.0
    if f == "multistep":
        return q["gamma"] ** bisect_right(list(q["milestones"]), t), 0.0
    if f == "exponential":
        e = t // q["decay_steps"] if q["staircase"] else float(Fraction(t, q["decay_steps"]))
        return q["gamma"] ** e, 0.0
    if f in ("linear", "polynomial", "cosine"):
        T = q["T_max"] if f == "cosine" else q["total_iters"]
        x = Fraction(min(t, T), T)
        if f == "linear":
            return q["start_factor"] + (q["end_factor"] - q["start_factor"]) * float(x), 0.0
        if f == "polynomial":
            return q["end_factor"] + (1 - q["end_factor"]) * float(1 - x) ** q["power"], 0.0
        w = 0.5 * (1 + math.cos(math.pi * float(x)))
        return w, q["eta_min"] * (1 - w)
    if f == "warm_restarts":
        t_cur, t_i = t, q["T_0"]
        if q["T_mult"] == 1:  # equal cycles (the loop below would take t / T_0 turns)
            t_cur = t % t_i
        while t_cur >= t_i:
            t_cur, t_i = t_cur - t_i, t_i * q["T_mult"]
        w = 0.5 * (1 + math.cos(math.pi * float(Fraction(t_cur, t_i))))
        return w, q["eta_min"] * (1 - w)
    if f == "cyclic":
        up = q["step_size_up"]
        down = q["step_size_down"] if q["step_size_down"] is not None else up
        k, r = divmod(t, up + down)
        x, ratio = Fraction(r, up + down), Fraction(up, up + down)
        sf = float(x / ratio if x <= ratio else (x - 1) / (ratio - 1))
        scale = {"triangular": 1.0, "triangular2": 2.0 ** -k, "exp_range": q["gamma"] ** t}[q["mode"]]
        w = sf * scale
        if q["base_lr"] is None:
            return 1 - w, q["max_lr"] * w
        return 0.0, q["base_lr"] + (q["max_lr"] - q["base_lr"]) * w
    if f == "one_cycle":
        total, pct = q["total_steps"], q["pct_start"]
        initial = 1 / q["div_factor"]
        min_v = initial / q["final_div_factor"]
        ends = [pct * total - 1, 2 * pct * total - 2, total - 1] if q["three_phase"] else [pct * total - 1, total - 1]
        values = [(initial, 1.0), (1.0, initial), (initial, min_v)] if q["three_phase"] else [(initial, 1.0), (1.0, min_v)]
        tt, start = min(t, total - 1), 0.0
        for k, (end, (v0, v1)) in enumerate(zip(ends, values)):
            if tt <= end or k == len(ends) - 1:
                x = float((Fraction(tt) - Fraction(start)) / (Fraction(end) - Fraction(start)))
                rel = v1 + (v0 - v1) / 2 * (math.cos(math.pi * x) + 1) if q["anneal_strategy"] == "cos" else (v1 - v0) * x + v0
                break
            start = end
        return (rel, 0.0) if q["max_lr"] is None else (0.0, q["max_lr"] * rel)
    if f == "inverse_sqrt":
        W = q["warmup_steps"]
        ts = q["timescale"] if q["timescale"] is not None else (W or 10_000)
        if t < W:
            return float(Fraction(t, max(1, W))), 0.0
        return 1 / math.sqrt(float(Fraction(t + ts - W, ts))), 0.0
    if f == "wsd":
        W, St, D, m = q["warmup_steps"], q["stable_steps"], q["decay_steps"], q["min_lr_ratio"]
        if t < W:
            g = float(Fraction(t, W))
        elif t < W + St:
            g = 1.0
        elif t < W + St + D:
            x = float(Fraction(t - W - St, D))
            g = {"linear": 1 - x, "cosine": 0.5 * (1 + math.cos(math.pi * x)), "1-sqrt": 1 - math.sqrt(x)}[q["decay_type"]]
        else:
            g = 0.0
        return g * (1 - m) + m, 0.0
    if f == "warmup":
        child = s.children[0] if s.children else S.constant()
        W = q["steps"]
        if t >= W:
            return _exact(child, t - W)
        sf = q["start_factor"] if q["start_factor"] is not None else 1 / W
        x = float(Fraction(t, W))
        factor = {"linear": sf + (1 - sf) * x, "cosine": sf + (1 - sf) * (0.5 - 0.5 * math.cos(math.pi * x)),
                  "exponential": sf ** (1 - x)}[q["kind"]]
        a, c = _exact(child, 0)
        return factor * a, factor * c
    if f == "sequence":
        ms = list(q["milestones"])
        k = bisect_right(ms, t)
        return _exact(s.children[k], t - (ms[k - 1] if k else 0))
    if f == "product":
        a, c = 1.0, 0.0
        for child in s.children:
            ca, cc = _exact(child, t)
            a, c = a * ca, c * ca + a * cc
        return a, c
    if f == "scale":
        a, c = _exact(s.children[0], t)
        return q["factor"] * a, q["factor"] * c
    raise AssertionError(f)


_BIG = 2**62
_HUGE_SCHEDULES = [
    S.constant(0.5),
    S.step(7, gamma=0.999999),
    S.step(2**40 + 3, gamma=0.9),
    S.multistep([3, 2**40, 2**62], gamma=0.5),
    S.exponential(0.9999999),
    S.exponential(decay_rate=0.5, decay_steps=2**40 + 1, staircase=True),
    S.linear(0.1, 1.0, total_iters=_BIG),
    S.polynomial(total_iters=_BIG, power=2.0, end_factor=0.01),
    S.cosine(_BIG, eta_min=1e-4),
    S.cosine(1000),
    S.warm_restarts(_BIG, T_mult=2),
    S.warm_restarts(7, T_mult=5, eta_min=1e-3),
    S.warm_restarts(100, T_mult=1000),
    S.warm_restarts(10, T_mult=2**40),
    S.warm_restarts(3),
    S.cyclic(0.1, step_size_up=1999, step_size_down=3001),
    S.cyclic(0.1, step_size_up=_BIG, mode="triangular2", base_lr=0.01),
    S.cyclic(0.1, step_size_up=10, mode="exp_range", gamma=0.9999999),
    S.one_cycle(_BIG),
    S.one_cycle(1000, max_lr=0.1, three_phase=True, anneal_strategy="linear"),
    S.inverse_sqrt(warmup_steps=_BIG),
    S.inverse_sqrt(warmup_steps=100, timescale=7),
    S.wsd(_BIG // 4, _BIG // 4, _BIG // 2, decay_type="1-sqrt", min_lr_ratio=0.1),
    S.wsd(10, 2**61, 2**61, decay_type="cosine"),
    S.warmup(_BIG) >> S.cosine(_BIG),
    S.warmup(1000, kind="exponential", start_factor=0.01) >> S.warm_restarts(7, T_mult=3),
    S.sequence([S.cosine(10), S.warm_restarts(5, T_mult=2), S.step(3)], milestones=[10, 2**61]),
    0.5 * (S.cosine(_BIG, eta_min=0.001) * S.exponential(0.999999)),
]
_HUGE_STEPS = [0, 1, 2**31, 2**53 + 1, 2**61 - 1, 2**61, 2**61 + 1, 2**62 - 1, _BIG, _BIG + 1, _BIG + 12345,
               3 * 2**61 + 17, 2**63 - 2, 2**63 - 1]


@pytest.mark.parametrize("schedule", _HUGE_SCHEDULES, ids=repr)
def test_every_family_at_steps_up_to_2_63_matches_an_exact_reference(schedule):
    base = 0.5
    steps = np.array(_HUGE_STEPS, dtype=np.int64)
    got = schedule(steps, base)
    for t, value in zip(_HUGE_STEPS, got):
        a, c = _exact(schedule, t)
        want = max(0.0, a * base + c)
        assert value == pytest.approx(want, rel=1e-9, abs=1e-12), (t, value, want)
        assert schedule(t, base) == value  # the scalar path agrees with the block path
        sa, sc = schedule.at(t)
        assert max(0.0, sa * base + sc) == pytest.approx(want, rel=1e-9, abs=1e-12)


def test_warm_restarts_repro_07_values():
    # the three cases of the reproduction, and the one that hung
    for T0, Tm, t in [(2**62, 2, 2**62), (7, 5, 2**62 + 12345), (100, 1000, 2 * 10**17), (10, 2**40, 2**62)]:
        s = S.warm_restarts(T0, T_mult=Tm)
        a, c = _exact(s, t)
        assert s(t) == pytest.approx(a + c, rel=1e-12, abs=1e-15)


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: S.cosine(2**60 + 1), "not exactly representable"),
        (lambda: S.cosine(2**63), r"T_max must be <= 2\*\*62"),
        (lambda: S.warm_restarts(10, T_mult=2**63), r"T_mult must be <= 2\*\*62"),
        (lambda: S.cosine(2**62) >> S.cosine(2**62) >> S.cosine(2**62), r"milestones must be <= 2\*\*62"),
        (lambda: S.cyclic(0.1, mode="exp_range", gamma=1.5), "gamma must be in"),
        (lambda: S.cosine(10).at(2**63), r"step must be <= 2\*\*63 - 1"),
        (lambda: S.cosine(10)(2**63), r"steps must be <= 2\*\*63 - 1"),
        (lambda: S.cosine(10)(np.array([2**64 - 1], dtype=np.uint64)), r"steps must be <= 2\*\*63 - 1"),
        (lambda: S.cosine(10)(np.array([1e19])), r"steps must be <= 2\*\*63 - 1"),
    ],
)
def test_counts_and_steps_beyond_int64_are_refused_by_name(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_numpy_integers_are_counts_and_steps():
    s = S.cosine(np.int64(100), eta_min=np.float32(0.5))
    assert s.at(np.int64(100)) == pytest.approx((0.0, 0.5))
    assert s(np.uint64(50)) == s(50)


@pytest.mark.parametrize(
    "schedule",
    [
        0.5 * (0.5 * S.cosine(100)),  # repro 14: "0.5 * 0.5 * cosine(100)" did not parse
        S.warmup(10) >> (S.warmup(10) >> S.constant(0.5)),  # repro 14: parsed as a different schedule
        S.cosine(100) * (0.5 * S.exponential(0.9)),
        0.5 * (S.cosine(10) * S.exponential(0.9)),
        S.warmup(3) >> (S.warmup(4) >> (S.warmup(5) >> S.cosine(9))),
    ],
    ids=repr,
)
def test_nested_repr_parses_back_to_the_same_schedule(schedule):
    again = S.Schedule.parse(repr(schedule))
    assert again == schedule
    steps = np.arange(40)
    np.testing.assert_array_equal(again(steps, 0.1), schedule(steps, 0.1))


def test_per_group_at_names_a_group_it_has_no_schedule_for() -> None:
    # at(step, group) on a per_group schedule reads that group's schedule: a group beyond the list
    # is a clear error (it used to read past the list in the core and crash the process).
    s = S.per_group([S.constant(), S.cosine(10)])
    assert s.at(3, group=1) == S.cosine(10).at(3)
    with pytest.raises(ValueError, match=r"group must be < 2 \(per_group has one schedule per param group\), got 5"):
        s.at(3, group=5)
    assert (S.warmup(5) >> s).at(8, group=1) == (S.warmup(5) >> S.cosine(10)).at(8)
    with pytest.raises(ValueError, match="group must be < 2"):
        (S.warmup(5) >> s).at(8, group=2)
