"""Schedules users migrate from: each peer's own object (torch, transformers, optax where installed)
built and stepped side by side with the pylrcore schedule that S.from_torch / S.from_transformers /
S.from_optax / S.from_timm make of it, 2,000+ steps, to 1e-12 relative + 1e-14 x base lr, momentum
included. timm does not install next to the CPU torch here (it pulls another torch), so its families
are checked against formulas re-derived from its sources (cited at `timm_reference`)."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest

from pylrcore import schedules as S

torch = pytest.importorskip("torch")
from pylrcore.torch import Scheduler  # noqa: E402

L = torch.optim.lr_scheduler
STEPS = 2500
RTOL, ATOL = 1e-12, 1e-14
BASE = [1e-4, 3e-3, 0.05]


def make_opt(base=BASE, cls=torch.optim.SGD, **kw):
    params = [torch.nn.Parameter(torch.zeros(2)) for _ in base]
    if cls is torch.optim.SGD:
        kw.setdefault("momentum", 0.9)
    return cls([{"params": [p], "lr": b} for p, b in zip(params, base)], lr=base[0], **kw)


def assert_close(ours, ref, base, what, step):
    ours, ref = np.asarray(ours, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    tol = RTOL * np.abs(ref) + ATOL * np.asarray(base)
    assert (np.abs(ours - ref) <= tol).all(), f"{what} at step {step}: {ours.tolist()} vs {ref.tolist()}"


def momenta(opt):
    return [g["betas"][0] if "betas" in g else g["momentum"] for g in opt.param_groups]


def side_by_side(make_ref, schedule=None, steps=STEPS, base=BASE, cls=torch.optim.SGD, momentum=False):
    """Steps torch's scheduler and a pylrcore Scheduler (of `schedule`, or from_torch of the reference)
    on twin optimizers; compares the lrs (and momentum) at every step. Returns the schedule."""
    a, b = make_opt(base, cls), make_opt(base, cls)
    ref = make_ref(b)
    if schedule is None:
        schedule = S.from_torch(ref)
    ours = Scheduler(a, schedule)
    for t in range(steps):
        assert_close([g["lr"] for g in a.param_groups], [g["lr"] for g in b.param_groups], base, "lr", t)
        if momentum:
            assert_close(momenta(a), momenta(b), [1.0] * len(base), "momentum", t)
        a.step(), b.step()
        ours.step(), ref.step()
    return schedule


# ---- torch -----------------------------------------------------------------------------------------


def test_cyclic_per_group_lists_and_momentum():
    s = side_by_side(lambda o: L.CyclicLR(o, base_lr=[1e-5, 1e-4, 1e-3], max_lr=[1e-3, 1e-2, 0.1], step_size_up=300,
                                          step_size_down=500, mode="triangular2", base_momentum=[0.7, 0.8, 0.85],
                                          max_momentum=[0.9, 0.95, 0.99]), momentum=True)
    assert s.family == "per_group"
    side_by_side(lambda o: L.CyclicLR(o, base_lr=1e-4, max_lr=0.01, step_size_up=100, mode="exp_range", gamma=0.999),
                 cls=torch.optim.Adam, momentum=True)


@pytest.mark.parametrize("three_phase", [False, True])
def test_one_cycle_per_group_max_lr_and_momentum(three_phase):
    s = side_by_side(lambda o: L.OneCycleLR(o, max_lr=[0.01, 0.1, 1.0], total_steps=STEPS, pct_start=0.27,
                                            three_phase=three_phase, base_momentum=[0.8, 0.85, 0.9]),
                     momentum=True)
    assert s.family == "per_group"
    side_by_side(lambda o: L.OneCycleLR(o, max_lr=0.1, epochs=5, steps_per_epoch=STEPS // 5, anneal_strategy="linear",
                                        three_phase=three_phase), cls=torch.optim.AdamW, momentum=True)


def test_lambda_and_multiplicative_lr_per_group():
    f = lambda t: 1.0 / (1.0 + 0.01 * t)  # noqa: E731
    g = lambda t: 0.5 * (1 + math.cos(math.pi * min(t, 1000) / 1000))  # noqa: E731
    s = side_by_side(lambda o: L.LambdaLR(o, [f, g, f]))
    assert s.family == "per_group"
    side_by_side(lambda o: L.LambdaLR(o, g))
    side_by_side(lambda o: L.MultiplicativeLR(o, lambda t: 0.999 if t % 3 else 1.001))
    # composable: a warmup in front of a user function, a product with a built-in family
    s = S.warmup(10) >> S.lambda_(f)
    assert s(15, 2.0) == pytest.approx(2.0 * f(5), rel=1e-15)
    p = S.lambda_(f) * S.cosine(100)
    assert p(30) == pytest.approx(f(30) * S.cosine(100)(30), rel=1e-15)


def test_constant_linear_swa_and_their_validation():
    side_by_side(lambda o: L.ConstantLR(o, factor=0.25, total_iters=700))
    side_by_side(lambda o: L.LinearLR(o, start_factor=0.05, end_factor=0.7, total_iters=1700))
    for strategy in ("cos", "linear"):
        side_by_side(lambda o: torch.optim.swa_utils.SWALR(o, swa_lr=0.02, anneal_epochs=300, anneal_strategy=strategy))
    side_by_side(lambda o: torch.optim.swa_utils.SWALR(o, swa_lr=[0.001, 0.002, 0.003], anneal_epochs=0))
    for bad in ({"start_factor": 0}, {"start_factor": 1.1}, {"end_factor": 1.5}):
        with pytest.raises(ValueError, match="as torch's LinearLR"):
            S.linear(**bad)
        with pytest.raises(ValueError):
            L.LinearLR(make_opt(), **bad)
    with pytest.raises(ValueError, match="total_steps, or epochs and steps_per_epoch"):
        S.one_cycle(total_steps=None)
    with pytest.raises(ValueError):
        L.OneCycleLR(make_opt(), max_lr=0.1, total_steps=None)


def test_sequential_and_chained_schedulers():
    side_by_side(lambda o: L.SequentialLR(o, [L.LinearLR(o, 0.01, 1.0, 200), L.CosineAnnealingLR(o, 1500, eta_min=1e-6),
                                              L.ExponentialLR(o, 0.999)], milestones=[200, 1700]))
    s = side_by_side(lambda o: L.ChainedScheduler([L.ExponentialLR(o, 0.9995), L.StepLR(o, 300, 0.7),
                                                   L.LinearLR(o, 0.2, 1.0, 400)]))
    assert s.family == "product"
    # cosine chains multiplicatively up to T_max (its recursion is additive past it)
    side_by_side(lambda o: L.ChainedScheduler([L.CosineAnnealingLR(o, STEPS), L.MultiStepLR(o, [100, 900], 0.5)]))
    with pytest.raises(ValueError, match="only multiplicative schedulers"):
        S.from_torch(L.ChainedScheduler([L.CosineAnnealingLR(make_opt(), 10, eta_min=0.1)]))
    with pytest.raises(ValueError, match="Plateau"):
        S.from_torch(L.ReduceLROnPlateau(make_opt()))


@pytest.mark.parametrize("make", [
    lambda o: L.StepLR(o, 170, 0.8),
    lambda o: L.MultiStepLR(o, [100, 400, 400, 1000], 0.5),
    lambda o: L.ExponentialLR(o, 0.9991),
    lambda o: L.PolynomialLR(o, 1900, power=2.0),
    lambda o: L.CosineAnnealingLR(o, STEPS, eta_min=1e-6),  # torch rises again past T_max; pylrcore holds
    lambda o: L.CosineAnnealingWarmRestarts(o, 90, T_mult=2, eta_min=1e-7),
], ids=["StepLR", "MultiStepLR", "ExponentialLR", "PolynomialLR", "CosineAnnealingLR", "CosineAnnealingWarmRestarts"])
def test_from_torch_every_closed_form_family(make):
    side_by_side(make)


# ---- transformers --------------------------------------------------------------------------------

HF_CASES = [
    ("constant", None, None, {}),
    ("constant_with_warmup", 0, None, {}),
    ("constant_with_warmup", 150, None, {}),
    ("linear", 0, 2200, {}),
    ("linear", 100, 2200, {}),
    ("cosine", 100, 2200, {}),
    ("cosine", 0, 2000, {"num_cycles": 1.75}),
    ("cosine_with_restarts", 100, 2200, {}),
    ("cosine_with_restarts", 50, 2400, {"num_cycles": 3.3}),
    ("polynomial", 100, 2000, {"lr_end": 1e-5, "power": 2.0}),
    ("polynomial", 0, 2000, {}),
    ("inverse_sqrt", 100, None, {}),
    ("inverse_sqrt", 0, None, {"timescale": 300}),
    ("cosine_with_min_lr", 100, 2200, {"min_lr_rate": 0.1}),
    ("cosine_with_min_lr", 100, 2200, {"min_lr": 1e-3, "num_cycles": 0.7}),
    ("cosine_warmup_with_min_lr", 100, 2200, {"min_lr_rate": 0.05}),
    ("cosine_warmup_with_min_lr", 100, 2200, {"min_lr_rate": 0.05, "warmup_lr_rate": 0.1}),
    ("warmup_stable_decay", 100, 2200, {"num_decay_steps": 600}),
    ("warmup_stable_decay", 100, None, {"num_decay_steps": 600, "num_stable_steps": 900, "warmup_type": "cosine",
                                        "decay_type": "1-sqrt", "min_lr_ratio": 0.1}),
    ("warmup_stable_decay", 0, 2000, {"num_decay_steps": 1000, "decay_type": "linear", "warmup_type": "1-sqrt"}),
]


@pytest.mark.parametrize("case", HF_CASES, ids=lambda c: f"{c[0]}-{c[1]}-{sorted(c[3].items())}")
def test_from_transformers_matches_get_scheduler(case):
    transformers = pytest.importorskip("transformers")
    name, W, T, kw = case
    lr = BASE[0]
    schedule = S.from_transformers(name, W, T, lr=lr, **kw)
    side_by_side(lambda o: transformers.get_scheduler(name, o, num_warmup_steps=W, num_training_steps=T,
                                                      scheduler_specific_kwargs=kw), schedule)


def test_from_transformers_refuses_what_it_cannot_express():
    with pytest.raises(ValueError, match="Plateau"):
        S.from_transformers("reduce_lr_on_plateau")
    with pytest.raises(ValueError, match="lr="):
        S.from_transformers("polynomial", 10, 100)
    with pytest.raises(TypeError, match="unexpected"):
        S.from_transformers("linear", 10, 100, num_cycles=2)


# ---- timm (re-derived formulas) ------------------------------------------------------------------


def timm_reference(kind, t, base, t_initial, lr_min=0.0, cycle_mul=1.0, cycle_decay=1.0, cycle_limit=1, warmup_t=0,
                   warmup_lr_init=0.0, warmup_prefix=False, k_decay=1.0, power=0.5, lb=-7.0, ub=3.0):
    """timm's `_get_lr(t)` re-derived from huggingface/pytorch-image-models timm/scheduler/cosine_lr.py
    (CosineLRScheduler, commit 16664ea), tanh_lr.py (TanhLRScheduler, 0d4c04f: its warmup aims at the
    value at warmup_t unless warmup_prefix) and poly_lr.py (PolyLRScheduler, 23f09af)."""

    def decayed(t):
        if warmup_prefix:
            t = t - warmup_t
        if cycle_mul != 1:
            i = math.floor(math.log(1 - t / t_initial * (1 - cycle_mul), cycle_mul))
            t_i = cycle_mul ** i * t_initial
            t_curr = t - (1 - cycle_mul ** i) / (1 - cycle_mul) * t_initial
        else:
            i = t // t_initial
            t_i = t_initial
            t_curr = t - t_initial * i
        if i >= cycle_limit:
            return lr_min
        top = base * cycle_decay ** i
        if kind == "cosine":
            return lr_min + 0.5 * (top - lr_min) * (1 + math.cos(math.pi * t_curr ** k_decay / t_i ** k_decay))
        if kind == "tanh":
            tr = t_curr / t_i
            return lr_min + 0.5 * (top - lr_min) * (1 - math.tanh(lb * (1.0 - tr) + ub * tr))
        return lr_min + (top - lr_min) * (1 - t_curr ** k_decay / t_i ** k_decay) ** power

    if t < warmup_t:
        target = decayed(warmup_t) if kind == "tanh" and not warmup_prefix else base
        return warmup_lr_init + t * ((target - warmup_lr_init) / warmup_t)
    return decayed(t)


TIMM_CASES = [
    ("cosine", {"t_initial": 800, "lr_min": 1e-6, "warmup_t": 50, "warmup_lr_init": 1e-6}),
    ("cosine", {"t_initial": 800, "lr_min": 1e-6, "warmup_t": 50, "warmup_lr_init": 1e-6, "warmup_prefix": True}),
    ("cosine", {"t_initial": 300, "cycle_mul": 1.5, "cycle_decay": 0.7, "cycle_limit": 5, "k_decay": 1.5}),
    ("cosine", {"t_initial": 300, "cycle_mul": 0.9, "cycle_decay": 0.8, "cycle_limit": 4}),
    ("cosine", {"t_initial": 250, "cycle_limit": 3, "k_decay": 0.7, "lr_min": 1e-5}),
    ("tanh", {"t_initial": 900, "lr_min": 1e-6, "warmup_t": 100, "warmup_lr_init": 1e-5}),
    ("tanh", {"t_initial": 600, "cycle_limit": 3, "lb": -5.0, "ub": 4.0, "warmup_t": 40, "warmup_prefix": True}),
    ("poly", {"t_initial": 1200, "power": 0.9, "lr_min": 1e-6, "warmup_t": 30, "k_decay": 2.0}),
    ("poly", {"t_initial": 500, "cycle_mul": 2.0, "cycle_limit": 3, "cycle_decay": 0.5}),
]


def timm_wsd_reference(t, base, t_initial, decay_t, lr_min=0.0, stable_fn="constant", stable_timescale=None,
                       stable_power=0.5, decay_fn="1-sqrt", decay_power=0.5, decay_ratio=0.1, warmup_t=0,
                       warmup_lr_init=0.0):
    """timm's WSDLRScheduler `_get_lr(t)` re-derived from timm/scheduler/wsd_lr.py (timm 1.0.31)."""
    if t < warmup_t:
        return warmup_lr_init + t * ((base - warmup_lr_init) / warmup_t)
    ts = t - warmup_t
    scale = stable_timescale if stable_timescale is not None else warmup_t
    stable = 1.0 if stable_fn == "constant" else (1.0 + ts / scale) ** -(0.5 if stable_fn == "rsqrt" else stable_power)
    lr = max(base * stable, lr_min)
    t_decay = ts - (t_initial - decay_t)
    if t_decay <= 0:
        return lr
    frac = min(t_decay / decay_t, 1.0)
    d = {"linear": 1 - frac, "1-sqrt": 1 - math.sqrt(frac), "cosine": 0.5 * (1 + math.cos(math.pi * frac)),
         "power": 1 - frac ** decay_power, "exp": (decay_ratio ** frac - decay_ratio) / (1 - decay_ratio)}[decay_fn]
    return lr_min + (lr - lr_min) * d


WSD_CASES = [
    {"t_initial": 2000, "decay_t": 400, "lr_min": 1e-6, "warmup_t": 100, "warmup_lr_init": 1e-6},
    {"t_initial": 2000, "decay_t": 700, "stable_fn": "rsqrt", "warmup_t": 100, "decay_fn": "linear"},
    {"t_initial": 2100, "decay_t": 500, "stable_fn": "power", "stable_timescale": 50, "stable_power": 0.3,
     "decay_fn": "exp", "decay_ratio": 0.05},
    {"t_initial": 2000, "decay_t": 2000, "decay_fn": "power", "decay_power": 2.0, "lr_min": 1e-5},
    {"t_initial": 1900, "decay_t": 300, "decay_fn": "cosine", "warmup_t": 10},
]


@pytest.mark.parametrize("kw", WSD_CASES, ids=lambda c: str(sorted(c.items())))
def test_timm_wsd_matches_the_re_derived_formula(kw):
    s = S.from_timm("wsd", **kw)
    ours = s(np.arange(STEPS), BASE)
    for t in range(STEPS):
        assert_close(ours[t], [timm_wsd_reference(t, b, **kw) for b in BASE], BASE, "timm wsd", t)
    with pytest.raises(ValueError, match="lr_min > 0 is not supported"):
        S.timm_wsd(1000, 100, lr_min=1e-6, stable_fn="rsqrt", warmup_t=10)


@pytest.mark.parametrize("case", TIMM_CASES, ids=lambda c: f"{c[0]}-{sorted(c[1].items())}")
def test_timm_families_match_the_re_derived_formulas(case):
    kind, kw = case
    s = S.from_timm(kind, **kw)
    steps = np.arange(STEPS)
    base = np.array(BASE)
    ours = s(steps, base)
    for t in steps:
        ref = [timm_reference(kind, int(t), b, **kw) for b in BASE]
        assert_close(ours[t], ref, BASE, f"timm {kind}", t)


def test_timm_noise_is_timms_seeded_draw():
    s = S.from_timm("cosine", t_initial=1000, noise_range_t=[100, 900], noise_pct=0.5, noise_seed=7)
    steps = np.arange(1100)
    got = s(steps, 0.1)
    for t in steps:
        ref = timm_reference("cosine", int(t), 0.1, 1000)
        if 100 <= t < 900:  # timm/scheduler/scheduler.py `_add_noise`: a generator seeded with seed + t
            g = torch.Generator()
            g.manual_seed(7 + int(t))
            while True:
                n = torch.randn(1, generator=g).item()
                if abs(n) < 0.5:
                    break
            ref = ref + ref * n
        assert got[t] == pytest.approx(ref, rel=1e-12, abs=1e-16)
    assert np.array_equal(s(steps, 0.1), got)  # reproducible


# ---- optax ----------------------------------------------------------------------------------------


@pytest.fixture
def optax():
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    yield pytest.importorskip("optax")
    jax.config.update("jax_enable_x64", False)


OPTAX_CASES = [
    ("constant_schedule", (0.3,), {}),
    ("linear_schedule", (0.1, 0.001, 1500), {"transition_begin": 200}),
    ("linear_schedule", (0.0, 0.1, 300), {}),
    ("polynomial_schedule", (0.1, 0.001, 2.0, 1800), {}),
    ("exponential_decay", (0.1, 100, 0.9), {"end_value": 0.01}),
    ("exponential_decay", (0.1, 100, 0.9), {"staircase": True, "transition_begin": 300}),
    ("exponential_decay", (0.001, 50, 1.01), {"end_value": 0.01}),
    ("cosine_decay_schedule", (0.1, 1800), {"alpha": 0.05, "exponent": 2.0}),
    ("piecewise_constant_schedule", (0.1, {300: 0.5, 900: 0.1, 1500: 2.0}), {}),
    ("piecewise_interpolate_schedule", ("linear", 0.1, {0: 0.5, 300: 0.5, 900: 0.1, 1500: 2.0}), {}),
    ("piecewise_interpolate_schedule", ("cosine", 0.1, {300: 0.5, 900: 0.1, 1500: 2.0}), {}),
    ("warmup_constant_schedule", (0.0, 0.1, 250), {}),
    ("warmup_cosine_decay_schedule", (0.0, 0.1, 250, 2200), {"end_value": 1e-4, "exponent": 1.5}),
    ("cosine_onecycle_schedule", (2000, 0.1), {"pct_start": 0.25}),
    ("linear_onecycle_schedule", (2000, 0.1), {}),
]


@pytest.mark.parametrize("case", OPTAX_CASES, ids=lambda c: f"{c[0]}-{c[1][:1]}")
def test_from_optax_matches_optax(optax, case):
    name, args, kw = case
    ref_fn = getattr(optax, name)(*args, **kw)
    assert S.from_optax(name, *args, **kw)(np.arange(50), 1.0).shape == (50,)  # lr defaults to the peak/init
    lr = 0.1
    s = S.from_optax(name, *args, lr=lr, **kw)
    steps = np.arange(STEPS)
    ours = s(steps, lr)
    import jax

    ref = np.asarray(jax.vmap(ref_fn)(steps), dtype=np.float64)  # some optax schedules take one count at a time
    tol = RTOL * np.abs(ref) + ATOL * lr
    bad = np.abs(ours - ref) > tol
    assert not bad.any(), f"first difference at step {np.argwhere(bad)[0]}: {ours[bad][:3]} vs {ref[bad][:3]}"


def test_from_optax_join_schedules(optax):
    parts = [optax.linear_schedule(0.0, 0.1, 100), optax.cosine_decay_schedule(0.1, 1000, alpha=0.01),
             optax.constant_schedule(0.001)]
    ref_fn = optax.join_schedules(parts, [100, 1100])
    s = S.from_optax("join_schedules", [S.from_optax("linear_schedule", 0.0, 0.1, 100, lr=0.1),
                                        S.from_optax("cosine_decay_schedule", 0.1, 1000, alpha=0.01, lr=0.1),
                                        S.from_optax("constant_schedule", 0.001, lr=0.1)], [100, 1100])
    steps = np.arange(STEPS)
    np.testing.assert_allclose(s(steps, 0.1), np.asarray(ref_fn(steps)), rtol=RTOL, atol=ATOL * 0.1)


# ---- every new family at huge steps ------------------------------------------------------------------

_BIG = 2**62
NEW_FAMILIES = [
    S.constant(0.5, total_iters=_BIG),
    S.exponential(0.999, end_factor=0.01),
    S.exponential(1.001, end_factor=10.0),
    S.swa(0.01, anneal_epochs=_BIG),
    S.transformers("cosine_with_restarts", 10, _BIG, num_cycles=3.3),
    S.transformers("polynomial", 10, _BIG, end_factor=0.01, power=2.0),
    S.transformers("cosine_warmup_with_min_lr", 10, _BIG, end_factor=0.1),
    S.timm("cosine", _BIG, cycle_mul=1.5, cycle_limit=1000, warmup_t=10, warmup_lr_init=1e-6),
    S.timm("cosine", 1000, cycle_mul=0.5, cycle_limit=100),
    S.timm("tanh", 7, cycle_limit=2**40),
    S.timm("poly", _BIG, k_decay=2.0),
    S.cosine_decay(_BIG, alpha=0.1, exponent=3.0),
    S.inverse_time(2**40 + 7, 0.5, staircase=True, power=0.75),
    S.inverse_time(7, 2.0),
    S.timm_wsd(_BIG, _BIG // 2, stable_fn="rsqrt", decay_fn="exp", warmup_t=1000, warmup_lr_init=1e-6),
    S.piecewise_constant([10, 2**61, _BIG], [0.5, 0.5, 4.0]),
    S.piecewise_interpolate("cosine", [0, 2**61, _BIG], [0.5, 0.1, 2.0]),
    S.per_group([S.cosine(_BIG), S.one_cycle(_BIG, three_phase=True)]),
    S.one_cycle(_BIG, max_lr=0.1) * S.constant(0.5),
    S.wsd(_BIG // 4, _BIG // 4, _BIG // 2, warmup_type="1-sqrt", decay_type="cosine", num_cycles=2.0),
]


@pytest.mark.parametrize("schedule", NEW_FAMILIES, ids=repr)
def test_new_families_at_steps_up_to_2_63(schedule):
    steps = np.array([0, 1, 2**31, 2**53 + 1, 2**61, 2**62 - 1, _BIG, _BIG + 12345, 2**63 - 1], dtype=np.int64)
    groups = 2 if schedule.family == "per_group" else 1
    base = [0.5] * groups
    got = schedule(steps, base)
    assert np.isfinite(got).all() and (got >= 0).all()
    for i, t in enumerate(steps.tolist()):
        assert np.array_equal(schedule(t, base), got[i])  # the scalar path agrees with the block path
    assert np.isfinite(schedule.momentum(steps, base)[:, -1]).all() == schedule.cycles_momentum


INVERSE_TIME_CASES = [(1000, 0.5, False), (7, 2.0, True), (1, 0.01, False), (100, 0.0, True)]


@pytest.mark.parametrize("case", INVERSE_TIME_CASES, ids=str)
@pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")
def test_inverse_time_matches_keras_inverse_time_decay(case):
    decay_steps, decay_rate, staircase = case
    steps = np.arange(0, 20 * decay_steps + 3, max(1, decay_steps // 7), dtype=np.int64)
    got = S.inverse_time(decay_steps, decay_rate, staircase=staircase)(steps, 0.1)
    quotient = steps // decay_steps if staircase else steps / decay_steps
    np.testing.assert_allclose(got, 0.1 / (1 + decay_rate * quotient), rtol=1e-15)  # keras' formula, in float64
    np.testing.assert_allclose(S.inverse_time(decay_steps, decay_rate, power=0.5)(steps, 0.1),
                               0.1 * (1 + decay_rate * steps / decay_steps) ** -0.5, rtol=1e-15)
    os.environ.setdefault("KERAS_BACKEND", "torch")
    keras = pytest.importorskip("keras")
    peer = keras.optimizers.schedules.InverseTimeDecay(0.1, decay_steps, decay_rate, staircase=staircase)
    want = np.array([float(keras.ops.convert_to_numpy(peer(int(t)))) for t in steps])
    np.testing.assert_allclose(got, want, rtol=2e-7)  # keras computes in float32


TIMM_CLASSES = {"cosine": "CosineLRScheduler", "tanh": "TanhLRScheduler", "poly": "PolyLRScheduler"}


@pytest.mark.parametrize("case", TIMM_CASES, ids=lambda c: f"{c[0]}-{sorted(c[1].items())}")
def test_timm_families_match_timm_where_it_is_installed(case):
    """timm's own classes, stepped with step_update(t), where timm is importable (it does not install
    next to torch 2.13 CPU; run once by hand with timm 1.0.31's scheduler modules: equal to 4e-16)."""
    sched_mod = pytest.importorskip("timm.scheduler")
    kind, kw = case
    opt = make_opt()
    ref = getattr(sched_mod, TIMM_CLASSES[kind])(opt, t_in_epochs=False, **kw)
    ours = S.from_timm(kind, **kw)(np.arange(STEPS), BASE)
    for t in range(STEPS):
        ref.step_update(t)
        assert_close(ours[t], [g["lr"] for g in opt.param_groups], BASE, f"timm {kind}", t)


def test_docs_schedules_md_examples_run():
    """The code blocks of docs/schedules.md, with an optimizer and a torch scheduler to migrate from."""
    import pathlib
    import re

    text = (pathlib.Path(__file__).parent.parent / "docs" / "schedules.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) >= 2
    optimizer = make_opt()
    env = {"optimizer": optimizer, "torch_scheduler": L.StepLR(make_opt(), 10)}
    for block in blocks:
        exec(compile(block, "docs/schedules.md", "exec"), env)


# ---- PyTorch's own test targets (test/optim/test_lrscheduler.py: the expected values, our code) -------


def _targets(schedule, lrs, moms=None, cls=torch.optim.SGD, base=(0.05, 0.5)):
    opt = make_opt(list(base), cls)
    sched = Scheduler(opt, schedule)
    for t in range(len(lrs)):
        for g in opt.param_groups:
            assert g["lr"] == pytest.approx(lrs[t], rel=1e-12, abs=1e-14), (t, g["lr"], lrs[t])
            if moms is not None:
                m = g["betas"][0] if "betas" in g else g["momentum"]
                assert m == pytest.approx(moms[t], rel=1e-12, abs=1e-14), (t, m, moms[t])
        opt.step(), sched.step()


def _cos(start, end, pct):
    return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)


def test_torch_targets_cyclic():
    _targets(S.cyclic(5, 4, base_lr=1, base_momentum=1, max_momentum=5),
             [1, 2, 3, 4, 5, 4, 3, 2, 1, 2, 3], [5, 4, 3, 2, 1, 2, 3, 4, 5, 4, 3])
    _targets(S.cyclic(5, 4, base_lr=1, mode="triangular2", cycle_momentum=False),
             [1, 2, 3, 4, 5, 4, 3, 2, 1, 1.5, 2.0, 2.5, 3.0, 2.5, 2.0, 1.5, 1, 1.25, 1.50, 1.75, 2.00, 1.75])
    xs = [0, 0.25, 0.5, 0.75, 1, 0.75, 0.50, 0.25, 0, 0.25, 0.5, 0.75, 1]
    _targets(S.cyclic(5, 4, base_lr=1, mode="exp_range", gamma=0.9, cycle_momentum=False),
             [1 + x * 4 * 0.9**i for i, x in enumerate(xs)])


def test_torch_targets_one_cycle():
    _targets(S.one_cycle(10, 25, pct_start=0.4, anneal_strategy="linear", final_div_factor=4, three_phase=True,
                         base_momentum=1, max_momentum=22),
             [1, 9, 17, 25, 17, 9, 1, 0.75, 0.5, 0.25], [22, 15, 8, 1, 8, 15, 22, 22, 22, 22])
    _targets(S.one_cycle(10, 25, final_div_factor=2, base_momentum=1, max_momentum=22),
             [1, 13, 25] + [_cos(25, 0.5, k / 7.0) for k in range(1, 7)] + [0.5],
             [22, 11.5, 1] + [_cos(1, 22, k / 7.0) for k in range(1, 7)] + [22])
    _targets(S.one_cycle(10, 25, final_div_factor=2, anneal_strategy="linear", base_momentum=1, max_momentum=22),
             [1, 13, 25, 21.5, 18, 14.5, 11, 7.5, 4, 0.5], [22, 11.5, 1, 4, 7, 10, 13, 16, 19, 22], cls=torch.optim.Adam)


def test_torch_targets_lambda_multiplicative_and_swa():
    opt = make_opt([0.05, 0.4])
    sched = Scheduler(opt, S.from_torch(L.LambdaLR(make_opt([0.05, 0.4]), [lambda x: 0.9**x, lambda x: 0.8**x])))
    for t in range(10):
        assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.05 * 0.9**t, 0.4 * 0.8**t], rel=1e-12)
        opt.step(), sched.step()
    opt = make_opt([0.05, 0.4])
    sched = Scheduler(opt, S.per_group([S.lambda_(lambda t: 0.9, multiplicative=True),
                                        S.lambda_(lambda t: 0.8, multiplicative=True)]))
    for t in range(10):
        assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.05 * 0.9**t, 0.4 * 0.8**t], rel=1e-12)
        opt.step(), sched.step()
    _targets(S.swa(0.01, anneal_epochs=1), [0.05] + [0.01] * 5, base=(0.05, 0.05))
