"""Plateau against torch.optim.lr_scheduler.ReduceLROnPlateau: same decisions, same per-group lrs."""

from __future__ import annotations

import copy
import doctest
import math
import pickle
import zlib
from typing import Any, Dict, List, Tuple

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import pylrcore
from pylrcore import Plateau
from pylrcore import plateau as plateau_module

REL = 1e-12
STEPS = 2000
N_CONFIGS = 48


def optimizer(base_lrs: List[float]) -> torch.optim.Optimizer:
    groups = [{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": lr} for lr in base_lrs]
    return torch.optim.SGD(groups, lr=base_lrs[0])


def torch_lrs(opt: torch.optim.Optimizer) -> List[float]:
    return [float(g["lr"]) for g in opt.param_groups]


def metrics(kind: str, rng: np.random.Generator, n: int = STEPS) -> List[float]:
    t = np.arange(n, dtype=float)
    if kind == "noisy_decreasing":
        x = 2.0 * np.exp(-t / 400.0) + 0.05 * rng.standard_normal(n)
    elif kind == "flat":
        x = 1.0 + 1e-5 * rng.standard_normal(n)  # changes near the rel threshold 1e-4
    elif kind == "increasing":
        x = 0.1 + t / n + 0.02 * rng.standard_normal(n)
    elif kind == "steps":  # improvements in bursts, then long plateaus; rounded so ties occur
        x = np.round(np.repeat(rng.uniform(0.5, 2.0, n // 25 + 1).cumsum()[::-1], 25)[:n], 2)
    elif kind == "with_nan":
        x = 1.5 * np.exp(-t / 600.0) + 0.05 * rng.standard_normal(n)
        x[rng.random(n) < 0.05] = np.nan
        x[rng.random(n) < 0.005] = np.inf
        x[rng.random(n) < 0.005] = -np.inf if rng.random() < 0.3 else np.nan
    else:  # pragma: no cover
        raise AssertionError(kind)
    return [float(v) for v in x]


KINDS = ["noisy_decreasing", "flat", "increasing", "steps", "with_nan"]


def random_config(rng: np.random.Generator, n_groups: int) -> Dict[str, Any]:
    threshold_mode = str(rng.choice(["rel", "abs"]))
    thresholds = [0.0, 1e-5, 1e-4, 1e-2, 0.1] if threshold_mode == "rel" else [0.0, 1e-4, 1e-3, 0.05, 0.3]
    min_lr: Any
    if rng.random() < 0.5:
        min_lr = [float(rng.choice([0.0, 1e-6, 1e-4, 1e-3, 0.02])) for _ in range(n_groups)]
    else:
        min_lr = float(rng.choice([0.0, 1e-5, 1e-3]))
    return {
        "mode": str(rng.choice(["min", "max"])),
        "factor": float(rng.choice([0.1, 0.5, float(rng.uniform(0.05, 0.95))])),
        "patience": int(rng.integers(0, 11)),
        "threshold": float(rng.choice(thresholds)),
        "threshold_mode": threshold_mode,
        "cooldown": int(rng.integers(0, 6)),
        "min_lr": min_lr,
        # eps large enough to stop reductions well above min_lr in many runs
        "eps": float(rng.choice([0.0, 1e-8, 1e-5, 1e-4, 1e-3, 5e-3])),
    }


def rel_err(a: List[float], b: List[float]) -> float:
    worst = 0.0
    for x, y in zip(a, b):
        if x != y:
            worst = max(worst, abs(x - y) / max(abs(x), abs(y)))
    return worst


def run_pair(config: Dict[str, Any], base: List[float], xs: List[float]) -> Tuple[int, float]:
    """Step Plateau and torch side by side; return (reductions, worst relative lr error)."""
    opt = optimizer(base)
    ref = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, **config)
    ours = Plateau(**config)
    ours.lrs(base)
    worst = 0.0
    for i, x in enumerate(xs):
        reduced = ours.step(x)
        ref.step(x)
        assert ours.num_bad_epochs == ref.num_bad_epochs, (i, config)
        assert ours.cooldown_counter == ref.cooldown_counter, (i, config)
        assert ours.last_epoch == ref.last_epoch
        assert ours.best == ref.best or (math.isnan(ours.best) and math.isnan(ref.best)), (i, config)
        if reduced:
            assert ref.num_bad_epochs == 0 and ref.cooldown_counter == config["cooldown"]
        err = rel_err(ours.lrs(), torch_lrs(opt))
        assert err <= REL, (i, config, ours.lrs(), torch_lrs(opt))
        worst = max(worst, err)
    return ours.num_reductions, worst


@pytest.mark.parametrize("seed", range(N_CONFIGS))
def test_matches_torch_on_random_configs_and_sequences(seed: int) -> None:
    rng = np.random.default_rng(1000 + seed)
    n_groups = int(rng.integers(1, 5))
    config = random_config(rng, n_groups)
    base = [float(v) for v in 10.0 ** rng.uniform(-4, 0, n_groups)]
    kind = KINDS[seed % len(KINDS)]
    reductions, worst = run_pair(config, base, metrics(kind, rng))
    assert worst <= REL


def test_parity_suite_exercises_reductions_eps_and_min_lr() -> None:
    """The random suite is not vacuous: reductions happen, eps and min_lr both stop some of them."""
    total = clipped = eps_stops = 0
    for seed in range(N_CONFIGS):
        rng = np.random.default_rng(1000 + seed)
        n_groups = int(rng.integers(1, 5))
        config = random_config(rng, n_groups)
        base = [float(v) for v in 10.0 ** rng.uniform(-4, 0, n_groups)]
        xs = metrics(KINDS[seed % len(KINDS)], rng)
        p = Plateau(**config)
        for x in xs:
            p.step(x)
        lrs = p.lrs(base)
        total += p.num_reductions
        mins = config["min_lr"] if isinstance(config["min_lr"], list) else [config["min_lr"]] * n_groups
        clipped += sum(lr == m for lr, m in zip(lrs, mins))
        stopped = [lr > m and lr - max(lr * p.factor, m) <= p.eps for lr, m in zip(lrs, mins)]
        eps_stops += sum(stopped) if p.num_reductions > 0 else 0
    assert total > 500
    assert clipped > 5
    assert eps_stops > 5


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("mode", ["min", "max"])
@pytest.mark.parametrize("threshold_mode", ["rel", "abs"])
def test_matches_torch_each_kind_mode_threshold_mode(kind: str, mode: str, threshold_mode: str) -> None:
    rng = np.random.default_rng(zlib.crc32(f"{kind}/{mode}/{threshold_mode}".encode()))
    config = dict(mode=mode, threshold_mode=threshold_mode, patience=3, cooldown=2, factor=0.5,
                  threshold=1e-4 if threshold_mode == "rel" else 1e-3, min_lr=[1e-4, 0.0, 3e-3], eps=1e-6)
    reductions, worst = run_pair(config, [0.1, 0.01, 1.0], metrics(kind, rng))
    assert worst <= REL


@settings(max_examples=150, deadline=None)
@given(
    xs=st.lists(st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=32), st.sampled_from([1.0, 2.0])),
                min_size=1, max_size=60),
    mode=st.sampled_from(["min", "max"]),
    threshold_mode=st.sampled_from(["rel", "abs"]),
    threshold=st.sampled_from([0.0, 1e-4, 0.5]),
    patience=st.integers(0, 4),
    cooldown=st.integers(0, 3),
    factor=st.floats(0.01, 0.99),
    eps=st.sampled_from([0.0, 1e-8, 1e-2]),
)
def test_matches_torch_on_arbitrary_metric_streams(
    xs: List[float], mode: str, threshold_mode: str, threshold: float, patience: int, cooldown: int,
    factor: float, eps: float,
) -> None:
    config = dict(mode=mode, threshold_mode=threshold_mode, threshold=threshold, patience=patience,
                  cooldown=cooldown, factor=factor, eps=eps, min_lr=[0.0, 1e-3])
    run_pair(config, [0.5, 0.01], [float(x) for x in xs])


@pytest.mark.parametrize("seed", range(6))
def test_state_round_trip_resumes_identically(seed: int) -> None:
    rng = np.random.default_rng(7 + seed)
    config = random_config(rng, 3)
    base = [0.3, 0.05, 1.0]
    xs = metrics(KINDS[seed % len(KINDS)], rng)
    cut = int(rng.integers(1, STEPS - 1))
    opt = optimizer(base)
    ref = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, **config)
    ours = Plateau(**config)
    ours.lrs(base)
    for x in xs[:cut]:
        ours.step(x)
        ref.step(x)
    state = ours.state_dict()
    resumed = Plateau.from_dict(copy.deepcopy(state["config"]))
    resumed.load_state_dict(copy.deepcopy(state))
    pickled = pickle.loads(pickle.dumps(ours))
    for x in xs[cut:]:
        ref.step(x)
        a, b, c = ours.step(x), resumed.step(x), pickled.step(x)
        assert a == b == c
        assert ours.lrs() == resumed.lrs() == pickled.lrs()
        assert rel_err(resumed.lrs(), torch_lrs(opt)) <= REL
    assert resumed.state_dict() == ours.state_dict()


def test_base_lrs_may_be_bound_late_and_rebound() -> None:
    rng = np.random.default_rng(3)
    xs = metrics("steps", rng, 500)
    config = dict(patience=2, factor=0.3, min_lr=1e-5, eps=1e-6)
    early, late = Plateau(**config), Plateau(**config)
    early.lrs([0.1, 0.2])
    for x in xs:
        early.step(x)
        late.step(x)
    assert late.num_reductions > 3
    assert late.lrs([0.1, 0.2]) == early.lrs()
    assert late.lrs([1.0]) != early.lrs()  # rebinding replays on the new base lrs
    assert late.num_groups == 1
    late.reset()
    assert late.lrs() == [1.0] and late.num_reductions == 0 and late.scale == 1.0


def test_multiplier_use_scales_another_schedule() -> None:
    p = Plateau(patience=0, factor=0.5, min_lr=[0.0, 0.2], eps=1.0)  # no schedule lrs given: eps plays no part
    assert p.scales == [1.0, 1.0]
    p.step(1.0)
    for _ in range(3):
        assert p.step(2.0)
    assert p.scale == 0.125 and p.scales == [0.125, 0.125]
    assert p.scaled_lrs([1.0, 1.0]) == [0.125, 0.2]  # max(schedule * scale, min_lr)
    # a scalar min_lr: any number of groups; one shared scale until the groups are known
    q = Plateau(min_lr=0.01)
    assert q.scales == [1.0] and q.scaled_lrs([0.5, 0.001, 2.0]) == [0.5, 0.01, 2.0]
    with pytest.raises(ValueError, match="schedule_lrs"):
        p.scaled_lrs([1.0])


def test_given_the_schedule_lrs_each_group_scale_follows_torchs_eps_rule() -> None:
    p = Plateau(patience=0, factor=0.5, eps=1e-3)
    p.step(1.0, [1.0, 1e-3])
    assert p.step(2.0, [1.0, 1e-3])  # group 1 would move by 5e-4 <= eps: it keeps its scale
    assert p.scales == [0.5, 1.0] and p.scaled_lrs([1.0, 1e-3]) == [0.5, 1e-3]
    with pytest.raises(ValueError, match="groups' scales differ"):
        p.scale
    with pytest.raises(ValueError, match="schedule_lrs has 3 entries"):
        p.step(2.0, [1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match=r"schedule_lrs\[1\]"):
        p.step(2.0, [1.0, float("nan")])
    assert p.last_epoch == 2  # the refused steps changed nothing
    restored = Plateau(patience=0, factor=0.5, eps=1e-3)
    restored.load_state_dict(p.state_dict())
    assert restored.scales == [0.5, 1.0] and restored.step(3.0, [1.0, 1e-3]) == p.step(3.0, [1.0, 1e-3])
    assert restored.scales == p.scales == [0.25, 1.0]
    # a checkpoint saved while the scale was one number loads as one shared scale
    legacy = {k: v for k, v in Plateau(patience=0).state_dict().items() if k != "scales"}
    old = Plateau(patience=0)
    old.load_state_dict({**legacy, "scale": 0.25})
    assert old.scales == [0.25]


def test_nan_metric_is_a_bad_epoch_never_a_new_best() -> None:
    p = Plateau(patience=1)
    assert not p.step(float("nan"))
    assert p.num_bad_epochs == 1 and p.best == math.inf
    assert p.step(float("nan"))
    assert not p.step(0.5) and p.best == 0.5


def test_accepts_tensor_and_numpy_metrics() -> None:
    p = Plateau(patience=0)
    p.step(torch.tensor(1.0))
    p.step(np.float32(0.5))
    assert p.best == 0.5
    with pytest.raises(TypeError, match="metric"):
        p.step(torch.ones(3))
    with pytest.raises(TypeError, match="metric"):
        p.step("0.5")


def test_repr_and_config_round_trip() -> None:
    p = Plateau(mode="max", factor=0.5, patience=3, threshold=0.01, threshold_mode="abs", cooldown=2,
                min_lr=[0.0, 1e-4], eps=0.0)
    r = repr(p)
    assert r.startswith("Plateau(mode='max', factor=0.5, patience=3") and "min_lr=[0.0, 0.0001]" in r
    assert "num_reductions=0" in r
    assert Plateau.from_dict(p.to_dict()).to_dict() == p.to_dict()
    assert Plateau().to_dict() == {"mode": "min", "factor": 0.1, "patience": 10, "threshold": 1e-4,
                                   "threshold_mode": "rel", "cooldown": 0, "min_lr": 0.0, "eps": 1e-8}
    with pytest.raises(TypeError, match="'patiense'"):
        Plateau.from_dict({"patiense": 3})
    assert pylrcore.Plateau is Plateau and "Plateau" in pylrcore.__all__


def test_load_state_dict_checks_config_and_contents() -> None:
    p = Plateau(patience=2)
    with pytest.raises(ValueError, match="config"):
        p.load_state_dict(Plateau(patience=3).state_dict())
    with pytest.raises(ValueError, match="state"):
        p.load_state_dict({"best": 1.0})
    bad = p.state_dict()
    bad["num_bad_epochs"] = -1
    with pytest.raises(ValueError, match="num_bad_epochs"):
        p.load_state_dict(bad)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(factor=1.0), "factor"),
        (dict(factor=1.5), "factor"),
        (dict(factor=0.0), "factor"),
        (dict(factor=-0.1), "factor"),
        (dict(factor=float("nan")), "factor"),
        (dict(patience=-1), "patience"),
        (dict(patience=1.5), "patience"),
        (dict(cooldown=-2), "cooldown"),
        (dict(mode="minimum"), "mode"),
        (dict(mode=None), "mode"),
        (dict(threshold_mode="relative"), "threshold_mode"),
        (dict(threshold=float("nan")), "threshold"),
        (dict(threshold=-1e-4), "threshold"),
        (dict(threshold="1e-4"), "threshold"),
        (dict(eps=float("inf")), "eps"),
        (dict(eps=-1.0), "eps"),
        (dict(min_lr=-1e-3), "min_lr"),
        (dict(min_lr=[0.0, -1e-3]), "min_lr"),
        (dict(min_lr=[]), "min_lr"),
        (dict(min_lr=float("nan")), "min_lr"),
        (dict(min_lr="0"), "min_lr"),
    ],
)
def test_bad_settings_raise_naming_the_parameter(kwargs: Dict[str, Any], name: str) -> None:
    with pytest.raises((ValueError, TypeError), match=name):
        Plateau(**kwargs)


def test_min_lr_list_of_the_wrong_length_raises() -> None:
    p = Plateau(min_lr=[0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="min_lr"):
        p.lrs([0.1, 0.1])
    with pytest.raises(ValueError, match="base_lrs"):
        Plateau().lrs()
    with pytest.raises(ValueError, match=r"base_lrs\[1\]"):
        Plateau().lrs([0.1, -1.0])


def test_docstring_examples() -> None:
    result = doctest.testmod(plateau_module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


def test_a_group_without_a_min_lr_is_refused_by_the_core_not_read_out_of_bounds():
    p = Plateau(mode="min", factor=0.5, min_lr=[0.01, 0.02])
    assert p._core.reduce_lr(1.0, 1) == 0.5
    with pytest.raises(ValueError, match="group 2 has no min_lr"):
        p._core.reduce_lr(1.0, 2)
    with pytest.raises(ValueError, match="group 5 has no min_lr"):
        p._core.scaled_lr(1.0, 5)


def test_keyword_defaults_are_the_core_defaults() -> None:
    """Plateau's signature (torch's names) and the core's PlateauConfig hold the same defaults."""
    import inspect

    from pylrcore._native import _core

    core = _core.plateau_defaults()
    p = {k: v.default for k, v in inspect.signature(Plateau).parameters.items()}
    assert (p["mode"] == "max") == core["maximize"] and (p["threshold_mode"] == "abs") == core["absolute"]
    assert all(p[k] == core[k] for k in ("factor", "patience", "threshold", "cooldown", "eps"))
