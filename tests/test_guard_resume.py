"""The guard keeps its word: a resumed run equals the uninterrupted one bitwise (rollback point
included), ``scale_lr`` really scales what each torch scheduler computes from (or is refused), and a
state dict that cannot be loaded changes nothing."""

from __future__ import annotations

import copy
import io
import warnings
from typing import Any, Dict, List, Tuple

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from pylrcore import schedules as S  # noqa: E402
from pylrcore.torch import Guard, Scheduler, TrainingDiverged  # noqa: E402

L = torch.optim.lr_scheduler
X = torch.randn(2048, 20, generator=torch.Generator().manual_seed(1))
Y = (X @ torch.randn(20, 3, generator=torch.Generator().manual_seed(2))).argmax(1)


def build(policy: Any, snapshot_every: int) -> Tuple[Any, Any, Any, Any]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(20, 32), torch.nn.BatchNorm1d(32), torch.nn.ReLU(), torch.nn.Linear(32, 3))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    sched = Scheduler(opt, S.warmup(20) >> S.cosine(400, eta_min=1e-5))
    guard = Guard(opt, model, policy=policy, scheduler=sched, snapshot_every=snapshot_every)
    return model, opt, sched, guard


def train(parts: Any, gen: Any, start: int, stop: int, inject: Dict[str, Any]) -> None:
    model, opt, sched, guard = parts
    for step in range(start, stop):
        idx = torch.randint(0, len(X), (32,), generator=gen)
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(X[idx]), Y[idx])
        if step in inject.get("spike", ()):
            loss = loss * 30
        loss.backward()
        if step in inject.get("nan_grad", ()):
            model[0].weight.grad[0, 0] = float("nan")
        guard.check(loss)
        opt.step()
        sched.step()


def fingerprint(parts: Any) -> List[Any]:
    model, opt, _, guard = parts
    return ([v.clone() for v in model.state_dict().values()]
            + [v.clone() for s in opt.state.values() for v in s.values() if torch.is_tensor(v)]
            + [g["lr"] for g in opt.param_groups]
            + [(e.step, e.kind, e.action, e.value) for e in guard.events] + [guard.summary()])


def same(a: List[Any], b: List[Any]) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) if torch.is_tensor(x) else x == y for x, y in zip(a, b))


ROLLBACK = {"nonfinite_grad": "rollback", "loss_spike": "rollback"}


@pytest.mark.parametrize("policy, snapshot_every, inject, cut", [
    ("skip", 100, {"nan_grad": {160}, "spike": {200}}, 130),
    ("scale_lr", 100, {"nan_grad": {160}, "spike": {200}}, 130),
    (ROLLBACK, 50, {"nan_grad": {160}}, 130),   # checkpoint between the rollback point and the rollback
    (ROLLBACK, 50, {"nan_grad": {160}}, 151),   # checkpoint just after a new rollback point
    (ROLLBACK, 50, {"nan_grad": {260}}, 130),
    (ROLLBACK, 100, {"nan_grad": {120}}, 60),
    (ROLLBACK, 50, {"nan_grad": {160, 170}}, 165),  # checkpoint inside an incident (two rollbacks)
])
def test_a_resumed_run_equals_the_uninterrupted_one_bitwise(policy, snapshot_every, inject, cut):
    total = 300
    full = build(policy, snapshot_every)
    train(full, torch.Generator().manual_seed(7), 0, total, inject)
    assert full[3].events  # the injected faults were acted on

    part = build(policy, snapshot_every)
    gen = torch.Generator().manual_seed(7)
    train(part, gen, 0, cut, inject)
    blob = io.BytesIO()
    model, opt, sched, guard = part
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                "guard": guard.state_dict(), "gen": gen.get_state()}, blob)
    blob.seek(0)
    saved = torch.load(blob, weights_only=False)
    resumed = build(policy, snapshot_every)  # fresh objects, as after a restart
    resumed[0].load_state_dict(saved["model"])
    resumed[1].load_state_dict(saved["opt"])
    resumed[2].load_state_dict(saved["sched"])
    resumed[3].load_state_dict(saved["guard"])
    gen2 = torch.Generator()
    gen2.set_state(saved["gen"])
    train(resumed, gen2, cut, total, inject)
    assert same(fingerprint(full), fingerprint(resumed))


def test_max_rollbacks_counts_one_incident():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    guard = Guard(opt, model, policy={"nonfinite_grad": "rollback"}, snapshot_every=5, max_rollbacks=2)

    def step(nan: bool) -> None:
        opt.zero_grad()
        loss = model(torch.ones(2, 4)).pow(2).mean()
        loss.backward()
        if nan:
            model.weight.grad[0, 0] = float("nan")
        guard.check(loss)
        opt.step()

    for incident in range(4):  # separated by clean stretches: each incident gets its own allowance
        for _ in range(10):
            step(False)
        step(True)
        step(True)
    assert guard.rollbacks == 8
    with pytest.raises(TrainingDiverged, match="max_rollbacks=2"):
        step(True)  # a third rollback to the same point


# ---- scale_lr and torch schedulers ------------------------------------------------------------------

CASES = {
    "pylrcore cosine": lambda o: Scheduler(o, S.cosine(60)),
    "LambdaLR": lambda o: L.LambdaLR(o, lambda t: 1 / (1 + t)),
    "MultiplicativeLR": lambda o: L.MultiplicativeLR(o, lambda t: 0.97),
    "CosineAnnealingLR": lambda o: L.CosineAnnealingLR(o, 60, eta_min=0.0),
    "CosineAnnealingWarmRestarts": lambda o: L.CosineAnnealingWarmRestarts(o, 15),
    "StepLR": lambda o: L.StepLR(o, 10, 0.5),
    "ExponentialLR": lambda o: L.ExponentialLR(o, 0.97),
    "PolynomialLR": lambda o: L.PolynomialLR(o, 80, 2.0),
    "OneCycleLR": lambda o: L.OneCycleLR(o, max_lr=0.1, total_steps=60),
    "CyclicLR": lambda o: L.CyclicLR(o, 0.01, 0.1, step_size_up=10),
    "LinearLR": lambda o: L.LinearLR(o, 0.1, 1.0, 30),
    "SequentialLR": lambda o: L.SequentialLR(o, [L.LinearLR(o, 0.1, 1.0, 10), L.CosineAnnealingLR(o, 50)], [10]),
    "ChainedScheduler": lambda o: L.ChainedScheduler([L.LinearLR(o, 0.1, 1.0, 10), L.ExponentialLR(o, 0.98)]),
}


def lr_trajectory(make: Any, inject_at: Any, steps: int = 60) -> np.ndarray:
    torch.manual_seed(0)
    m = torch.nn.Linear(4, 1)
    o = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
    sched = make(o)
    guard = Guard(o, policy={"nonfinite_grad": "scale_lr"}, scheduler=sched)
    lrs = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SequentialLR's own deprecation chatter
        for t in range(steps):
            o.zero_grad()
            m(torch.ones(2, 4)).sum().backward()
            if t == inject_at:
                m.weight.grad[0, 0] = float("nan")
            guard.check()
            o.step()
            sched.step()
            lrs.append(o.param_groups[0]["lr"])
    return np.array(lrs)


@pytest.mark.parametrize("name", list(CASES))
def test_scale_lr_stays_scaled_under_every_torch_scheduler(name):
    base = lr_trajectory(CASES[name], None)
    got = lr_trajectory(CASES[name], 20)
    mask = base[21:] > 1e-12
    np.testing.assert_allclose(got[21:][mask] / base[21:][mask], 0.5, rtol=1e-9)


def test_a_scheduler_the_guard_cannot_scale_is_refused_when_the_policy_scales():
    class Homemade:
        def __init__(self, opt: Any) -> None:
            self.opt = opt

        def step(self) -> None:
            self.opt.param_groups[0]["lr"] = 0.1

    o = torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=0.1)
    with pytest.raises(TypeError, match="cannot scale the lr of a Homemade"):
        Guard(o, policy={"explosion": "scale_lr"}, scheduler=Homemade(o))
    Guard(o, scheduler=Homemade(o))  # the default policy never scales: any scheduler is fine


# ---- loading a state dict: all or nothing ----------------------------------------------------------


def guard_after_some_steps(policy: Any = "skip") -> Any:
    parts = build(policy, 10)
    train(parts, torch.Generator().manual_seed(3), 0, 40, {"nan_grad": {25}})
    return parts[3]


@pytest.mark.parametrize("corrupt, error, match", [
    (lambda s: s["core"].update(step=2**63 - 1), ValueError, "step count"),
    (lambda s: s["core"]["loss"].update(smooth_count=-1), ValueError, "step count"),
    (lambda s: s.update(skipped="many"), ValueError, "skipped"),
    (lambda s: s.update(events=[{"step": 1}]), ValueError, "returned by Guard.state_dict"),
    (lambda s: s.pop("core"), ValueError, "missing core"),
    (lambda s: s.update(foo=1), ValueError, "unknown keys 'foo'"),
    (lambda s: s["policy"].update(explosion="record"), ValueError, "other settings"),
])
def test_a_bad_state_dict_changes_nothing(corrupt, error, match):
    guard = guard_after_some_steps()
    other = guard_after_some_steps()
    before = guard.state_dict()
    bad = copy.deepcopy(other.state_dict())
    bad["events"] = bad["events"][:1]  # differs from `guard`'s, so a partial load would show
    corrupt(bad)
    with pytest.raises(error, match=match):
        guard.load_state_dict(bad)
    after = guard.state_dict()
    assert repr(after) == repr(before)


@pytest.mark.parametrize("corrupt, match", [
    (lambda core: core.update(foo=1), "unknown key 'foo'"),
    (lambda core: core["norm"].pop("var"), r"state\['norm'\]: missing 'var'"),
    (lambda core: core["log_loss"].update(var=-1.0), "var finite and >= 0"),
])
def test_the_core_state_is_read_key_by_key(corrupt, match):
    """The core's state crosses as nested dicts of its own field names (csrc/glue.hpp): an unknown or
    missing key and an impossible value are refused, and nothing changes."""
    guard = guard_after_some_steps()
    before = guard.state_dict()
    bad = copy.deepcopy(before)
    corrupt(bad["core"])
    with pytest.raises(ValueError, match=match):
        guard.load_state_dict(bad)
    assert repr(guard.state_dict()) == repr(before)


def test_the_rollback_point_travels_in_the_state_dict():
    guard = guard_after_some_steps(ROLLBACK)
    state = guard.state_dict()
    assert state["snapshot"] is not None and state["snapshot_core"]["step"] > 0
    assert set(state["snapshot"]["model"]) == set(dict(guard.model.named_parameters()) | dict(guard.model.named_buffers()))
    fresh = build(ROLLBACK, 10)[3]
    fresh.load_state_dict(state)
    assert repr(fresh.state_dict()) == repr(state)
    no_model = Guard(fresh.optimizer, policy="skip")
    with pytest.raises(ValueError, match="other settings"):
        no_model.load_state_dict(state)
