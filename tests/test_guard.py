"""pylrcore.torch.Guard in real training loops: a bad step never reaches the weights (bitwise), a
healthy run raises nothing, spikes are found at the right steps, and every response does what it
says (skip, scale the lr — also through a schedule and a checkpoint —, roll back, raise)."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from pylrcore import schedules as S  # noqa: E402
from pylrcore.torch import Guard, GuardEvent, Scheduler, TrainingDiverged  # noqa: E402

OPTIMIZERS = {
    "sgd-momentum": lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, weight_decay=1e-4),
    "adam": lambda ps: torch.optim.Adam(ps, lr=1e-3),
    "adamw-foreach": lambda ps: torch.optim.AdamW(ps, lr=1e-3, foreach=True),
    "adamw-fused": lambda ps: torch.optim.AdamW(ps, lr=1e-3, fused=True),
}


def problem(seed=0, n=512):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 10, generator=gen)
    y = (torch.tanh(x @ torch.randn(10, 1, generator=gen)) + 0.3 * torch.randn(n, 1, generator=gen) > 0).long().squeeze(1)
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(10, 32), torch.nn.ReLU(), torch.nn.Linear(32, 2))
    return model, x, y, gen


def snapshot(model, opt):
    params = [p.detach().clone() for p in model.parameters()]
    state = {id(p): {k: (v.clone() if torch.is_tensor(v) else v) for k, v in s.items()} for p, s in opt.state.items()}
    return params, state


def same(a, b):
    pa, sa = a
    pb, sb = b
    if not all(torch.equal(x, y) for x, y in zip(pa, pb)) or sa.keys() != sb.keys():
        return False
    for key in sa:
        for name, v in sa[key].items():
            w = sb[key][name]
            if torch.is_tensor(v) and not torch.equal(v, w):
                return False
    return True


def train(model, opt, x, y, gen, steps, *, guard=None, hooked=False, inject=None, set_to_none=True, batch=64):
    """A plain loop; `inject(step, model)` may poison the gradients after backward. Returns the
    states just before and after each poisoned step."""
    around = {}
    for step in range(steps):
        idx = torch.randint(0, x.shape[0], (batch,), generator=gen)
        opt.zero_grad(set_to_none=set_to_none)
        loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
        loss.backward()
        poisoned = inject is not None and inject(step, model)
        if poisoned:
            around[step] = [snapshot(model, opt)]
        if guard is not None and not hooked:
            guard.check(loss)
        elif guard is not None:
            guard.observe(loss)
        opt.step()
        if poisoned:
            around[step].append(snapshot(model, opt))
    return around


@pytest.mark.parametrize("name", OPTIMIZERS)
@pytest.mark.parametrize("hooked", [False, True], ids=["check", "hook"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")], ids=["nan", "inf", "-inf"])
def test_a_poisoned_gradient_element_is_skipped_bitwise_and_training_goes_on(name, hooked, value):
    model, x, y, gen = problem()
    opt = OPTIMIZERS[name](model.parameters())
    guard = Guard(opt, model)
    if hooked:
        guard.install()

    def inject(step, m):
        if step == 30:
            m[2].weight.grad[1, 7] = value
            return True
        return False

    around = train(model, opt, x, y, gen, 60, guard=guard, hooked=hooked, inject=inject)
    before, after = around[30]
    assert same(before, after), "the poisoned step changed parameters or optimizer state"
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert [(e.step, e.kind, e.action, e.value) for e in guard.events] == [(30, "nonfinite_grad", "skip", 1.0)]
    assert guard.skipped == 1 and guard.step == 60
    if name != "sgd-momentum":  # Adam's step counters did not count the skipped step
        assert all(int(s["step"]) == 59 for s in opt.state.values())


@pytest.mark.slow  # a 10,000-step training run
def test_zero_false_positives_on_a_healthy_noisy_run_of_10000_steps():
    model, x, y, gen = problem(seed=3, n=4096)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    guard = Guard(opt, model)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(model, opt, x, y, gen, 10_000, guard=guard, batch=32)  # batch 32: a noisy loss
    finally:
        torch.set_num_threads(threads)
    assert guard.events == [] and guard.skipped == 0
    assert guard.summary() == "10000 steps checked, no events."
    losses = np.asarray(guard.losses)
    assert losses[-1000:].mean() < 0.7 * losses[:100].mean()  # it did train, with noise
    assert losses[-1000:].std() > 0.05


def test_an_lr_blow_up_mid_run_is_an_explosion_within_a_few_dozen_steps():
    """The lr raised 100x at step 1500 of a healthy SGD-momentum run: the loss leaves its level for
    good and the long-run explosion rule raises within ~60 steps (the level needs a few steps to
    pass the threshold, then 20 in a row), with nothing before the fault. (Adam, AdamW and other
    tasks: tests/test_soak.py.)"""
    factor = 100.0
    model, x, y, gen = problem(seed=2, n=2048)
    opt = OPTIMIZERS["sgd-momentum"](model.parameters())
    guard = Guard(opt, model)
    with pytest.raises(TrainingDiverged) as info:
        for step in range(3000):
            if step == 1500:
                for group in opt.param_groups:
                    group["lr"] *= factor
            idx = torch.randint(0, x.shape[0], (32,), generator=gen)
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
            loss.backward()
            guard.check(loss)
            opt.step()
    event = info.value.event
    assert event.kind in ("explosion", "skip_limit") and 1500 < event.step <= 1560, (event.step, event.kind)
    assert all(e.step > 1500 for e in guard.events if e.kind not in ("loss_spike", "grad_spike"))
    if event.kind == "explosion":
        assert event.value > event.threshold and "loss explosion (recent loss level" in str(info.value)


def test_a_resumed_guard_decides_like_the_uninterrupted_one_through_a_pending_explosion():
    """The explosion rule's state (level, reference, noise, the steps above the threshold) is in
    state_dict(): a guard resumed in the middle of a rise, before the explosion fires, fires at the
    same step, and ends in the same state, as the one that never stopped."""
    rng = np.random.default_rng(3)
    losses = 0.05 + 2.0 * np.exp(-np.arange(3000) / 300) * np.exp(0.5 * rng.standard_normal(3000))
    losses[2000:] *= 40.0
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    whole = Guard(opt, check_grads=False, policy="record")
    first = Guard(opt, check_grads=False, policy="record")
    at = 0
    while first._core._get_state()["explosion"]["above"] < 5:  # stop 5 steps into the rise
        whole.check(float(losses[at]))
        first.check(float(losses[at]))
        at += 1
    saved = pickle.loads(pickle.dumps(first.state_dict()))
    assert 2000 < at < 2100 and not [e for e in first.events if e.kind == "explosion"]  # not fired yet
    resumed = Guard(opt, check_grads=False, policy="record")
    resumed.load_state_dict(saved)
    for value in losses[at:]:
        whole.check(float(value))
        resumed.check(float(value))
    assert [e.step for e in whole.events if e.kind == "explosion"] == [e.step for e in resumed.events
                                                                       if e.kind == "explosion"] != []
    assert repr(resumed.events) == repr(whole.events)
    assert repr(resumed._core._get_state()) == repr(whole._core._get_state())


def test_a_synthetic_spike_train_is_found_at_the_right_steps():
    rng = np.random.default_rng(0)
    steps = 3000
    losses = 2.0 * np.exp(-np.arange(steps) / 1500) + 0.3 + 0.02 * rng.standard_normal(steps)
    spikes = [400, 401, 1200, 2000, 2600]
    losses[spikes] *= 3.0
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=0.1)
    guard = Guard(opt, check_grads=False)
    for value in losses:
        guard.check(float(value))
    assert [e.step for e in guard.events if e.kind == "loss_spike"] == spikes
    assert all(e.value > e.threshold == 6.0 for e in guard.events)


def test_gradient_norm_spikes_are_found_on_the_log_norm():
    rng = np.random.default_rng(1)
    p = torch.nn.Parameter(torch.zeros(1000))
    opt = torch.optim.SGD([p], lr=0.1)
    guard = Guard(opt, check_loss=False)
    spikes = {300: 20.0, 700: 8.0}
    for step in range(1000):
        scale = 1e-4 * math.exp(0.2 * rng.standard_normal()) * spikes.get(step, 1.0)  # a tiny norm: scale-free test
        p.grad = torch.from_numpy(rng.standard_normal(1000).astype(np.float32) * np.float32(scale))
        guard.check()
    assert [e.step for e in guard.events] == [300, 700]
    assert all(e.kind == "grad_spike" and e.action == "record" for e in guard.events)


def test_the_norm_is_the_global_norm_for_mixed_dtypes_none_grads_and_channels_last():
    conv = torch.nn.Conv2d(3, 8, 3).to(memory_format=torch.channels_last)
    extra = [torch.nn.Parameter(torch.randn(5, dtype=torch.float64)), torch.nn.Parameter(torch.randn(7).bfloat16()),
             torch.nn.Parameter(torch.randn(4).half()), torch.nn.Parameter(torch.randn(3))]  # the last: no grad
    conv(torch.randn(2, 3, 8, 8).to(memory_format=torch.channels_last)).square().sum().backward()
    assert not conv.weight.grad.is_contiguous()
    for e in extra[:3]:
        e.grad = torch.randn_like(e)
    opt = torch.optim.SGD(list(conv.parameters()) + extra, lr=0.1)
    seen = []
    guard = Guard(opt, on_event=seen.append)
    assert guard.check() is True
    grads = [p.grad.double() for p in list(conv.parameters()) + extra[:3]]
    expected = float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])))
    decision_norm = guard._core._get_state()  # the norm detector saw ln(norm)
    assert decision_norm["norm"]["last"] == pytest.approx(math.log(expected), rel=1e-12)
    assert seen == []


@pytest.mark.parametrize("set_to_none", [True, False])
def test_the_gradient_table_follows_reallocated_and_reused_gradients(set_to_none):
    model, x, y, gen = problem()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    guard = Guard(opt)
    rebuilt = 0
    for step in range(20):
        opt.zero_grad(set_to_none=set_to_none)
        torch.nn.functional.cross_entropy(model(x[:64]), y[:64]).backward()
        before = guard._table.refs[:]
        guard.check()
        rebuilt += before != guard._table.refs
        total = torch.nn.utils.get_total_norm([p.grad for p in model.parameters()])
        assert math.exp(guard._core._get_state()["norm"]["last"]) == pytest.approx(float(total), rel=1e-6)
        opt.step()
    assert rebuilt == (20 if set_to_none else 1)  # reused gradients: the table is built once


def test_sparse_gradients_are_handled():
    emb = torch.nn.Embedding(50, 4, sparse=True)
    opt = torch.optim.SGD(emb.parameters(), lr=0.1)
    guard = Guard(opt)
    emb(torch.tensor([1, 1, 3])).sum().backward()  # index 1 twice: uncoalesced duplicates
    assert guard.check() is True
    dense = emb.weight.grad.to_dense()
    assert math.exp(guard._core._get_state()["norm"]["last"]) == pytest.approx(float(dense.double().norm()), rel=1e-12)
    emb.weight.grad = torch.sparse_coo_tensor([[2]], [[float("nan")] * 4], (50, 4), check_invariants=True)
    before = emb.weight.detach().clone()
    assert guard.check() is False
    opt.step()
    assert torch.equal(before, emb.weight)


def test_scale_lr_lowers_every_group_from_the_next_step_through_a_schedule_and_a_checkpoint():
    model, x, y, gen = problem()
    opt = torch.optim.SGD([{"params": model[0].parameters(), "lr": 0.1},
                           {"params": model[2].parameters(), "lr": torch.tensor(0.01)}])
    lr_tensor = opt.param_groups[1]["lr"]
    sched = Scheduler(opt, S.warmup(5) >> S.cosine(100))
    guard = Guard(opt, model, scheduler=sched, policy={"nonfinite_grad": "scale_lr"}, lr_factor=0.25)
    reference = Scheduler(torch.optim.SGD([{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": 0.1},
                                           {"params": [torch.nn.Parameter(torch.zeros(1))], "lr": 0.01}]),
                          S.warmup(5) >> S.cosine(100))
    for step in range(40):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x[:64]), y[:64]).backward()
        if step == 20:
            model[0].bias.grad[0] = float("nan")
        guard.check()
        opt.step()
        sched.step()
        reference.optimizer.step()
        reference.step()
        factor = 0.25 if step >= 20 else 1.0
        got = [float(g["lr"]) for g in opt.param_groups]
        want = [factor * lr for lr in reference.get_last_lr()]
        assert got == pytest.approx(want, rel=1e-6), step
    assert opt.param_groups[1]["lr"] is lr_tensor  # tensor lrs keep their identity
    assert guard.lr_scale == 0.25 and [e.action for e in guard.events] == ["scale_lr"]

    # The scaling survives a checkpoint of the scheduler (and the guard's own state round-trips).
    saved_sched, saved_guard = sched.state_dict(), pickle.loads(pickle.dumps(guard.state_dict()))
    opt2 = torch.optim.SGD([{"params": model[0].parameters(), "lr": 0.1},
                            {"params": model[2].parameters(), "lr": 0.01}])
    sched2 = Scheduler(opt2, S.warmup(5) >> S.cosine(100))
    sched2.load_state_dict(saved_sched)
    guard2 = Guard(opt2, model, scheduler=sched2, policy={"nonfinite_grad": "scale_lr"}, lr_factor=0.25)
    guard2.load_state_dict(saved_guard)
    assert [float(g["lr"]) for g in opt2.param_groups] == pytest.approx([float(g["lr"]) for g in opt.param_groups])
    assert repr(guard2.events) == repr(guard.events) and guard2.step == guard.step and guard2.lr_scale == 0.25
    sched.step()
    sched2.step()
    assert [float(g["lr"]) for g in opt2.param_groups] == pytest.approx([float(g["lr"]) for g in opt.param_groups])


def test_scale_lr_with_a_torch_scheduler_scales_its_base_lrs_too():
    p = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.SGD([p], lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 1.0 / (1 + t))
    guard = Guard(opt, scheduler=sched, policy={"nonfinite_grad": "scale_lr"}, lr_factor=0.1)
    p.grad = torch.tensor([1.0, float("nan"), 0.0])
    assert guard.check() is False
    opt.step()
    sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1 * 0.1 / 2)


def test_rollback_restores_the_last_good_snapshot_and_lowers_the_lr():
    model, x, y, gen = problem()
    model.register_buffer("calls", torch.zeros(1))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    guard = Guard(opt, model, policy={"explosion": "rollback", "nonfinite_grad": "rollback"}, snapshot_every=10)
    kept = None
    for step in range(35):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x[:64]), y[:64])
        loss.backward()
        model.calls += 1
        if step == 30:
            kept = snapshot(model, opt), model.calls.clone()  # the snapshot taken at step 30's check
        if step == 33:
            model[0].weight.grad[0, 0] = float("nan")
        guard.check(loss)
        opt.step()
        if step == 33:
            restored = snapshot(model, opt)
    assert same(kept[0], restored)
    assert [(e.step, e.kind, e.action) for e in guard.events] == [(33, "nonfinite_grad", "rollback")]
    assert guard.rollbacks == 1 and opt.param_groups[0]["lr"] == pytest.approx(0.025)


def test_rollback_needs_the_model_and_is_limited():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(ValueError, match="pass model="):
        Guard(opt, policy="rollback")
    p = torch.nn.Parameter(torch.zeros(2))
    model = torch.nn.Linear(2, 1)
    guard = Guard(torch.optim.SGD([p], lr=0.1), model, policy={"nonfinite_grad": "rollback"}, max_rollbacks=1)
    p.grad = torch.ones(2)
    guard.check()
    p.grad = torch.full((2,), float("nan"))
    guard.check()
    p.grad = torch.full((2,), float("nan"))
    with pytest.raises(TrainingDiverged, match="rollback impossible"):
        guard.check()


def test_raise_carries_the_diagnosis_and_summary_and_leaves_no_gradients():
    model, x, y, gen = problem()
    opt = torch.optim.SGD(model.parameters(), lr=8.0)  # far too high: the loss explodes
    guard = Guard(opt, model, warmup=10)
    with pytest.raises(TrainingDiverged) as info:
        for _ in range(500):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x[:256]) * 50, y[:256])
            loss.backward()
            guard.check(loss)
            opt.step()
    err = info.value
    assert err.event.kind in ("explosion", "nonfinite_loss", "skip_limit")
    assert err.diagnosis is not None and "lr" in str(err).lower()
    assert "likely too high" in err.summary
    assert all(p.grad is None for p in model.parameters())


def test_too_many_consecutive_skips_stop_with_a_clear_message():
    p = torch.nn.Parameter(torch.zeros(2))
    guard = Guard(torch.optim.SGD([p], lr=0.1), max_consecutive_skips=5)
    for _ in range(5):
        p.grad = torch.full((2,), float("nan"))
        assert guard.check() is False
    p.grad = torch.full((2,), float("nan"))
    with pytest.raises(TrainingDiverged, match="6 consecutive steps not applied"):
        guard.check()


def test_grad_scaler_overflows_are_recorded_not_counted_as_divergence():
    model, x, y, gen = problem()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)
    guard = Guard(opt, model, scaler=scaler)
    for step in range(30):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x[:64]), y[:64])
        scaler.scale(loss).backward()
        if step in (3, 4):
            model[0].weight.grad[0, 0] = float("inf")  # what an fp16 overflow looks like
        before = snapshot(model, opt)
        guard.check(loss)  # unscales the gradients itself
        scaler.step(opt)  # must not unscale again (it would raise)
        scaler.update()
        if step in (3, 4):
            assert same(before, snapshot(model, opt))
    kinds = [(e.step, e.kind, e.action) for e in guard.events]
    assert kinds == [(3, "amp_overflow", "record"), (4, "amp_overflow", "record")]
    assert guard.skipped == 0 and scaler.get_scale() == 2.0**14
    assert "GradScaler" in guard.summary()


def test_policies_are_validated_with_the_fix_in_the_message():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(ValueError, match="cannot be 'record'"):
        Guard(opt, policy={"nonfinite_grad": "record"})
    with pytest.raises(ValueError, match="unknown or fixed event kind 'amp_overflow'"):
        Guard(opt, policy={"amp_overflow": "skip"})
    with pytest.raises(ValueError, match="policy must be one of"):
        Guard(opt, policy="ignore")
    with pytest.raises(ValueError, match="lr_factor"):
        Guard(opt, lr_factor=2)
    with pytest.raises(TypeError, match="unknown setting 'alpha'"):
        Guard(opt, loss_detector={"alpha": 1})
    with pytest.raises(ValueError, match="both False"):
        Guard(opt, check_loss=False, check_grads=False)
    assert Guard(opt, policy="record").policy["nonfinite_grad"] == "skip"  # a NaN update is never let through


def test_bad_losses_are_refused_with_the_fix():
    p = torch.nn.Parameter(torch.zeros(3))
    guard = Guard(torch.optim.SGD([p], lr=0.1), check_grads=False)
    with pytest.raises(ValueError, match=r"one element, got shape \(3,\).*loss.mean\(\)"):
        guard.check(torch.ones(3))
    with pytest.raises(TypeError, match="1-element tensor or a real number"):
        guard.check("1.0")
    # Only the value is read: a detached loss, or one that does not require grad, is fine.
    assert guard.check(torch.tensor(1.0)) is True
    assert guard.check(torch.tensor([2.0], requires_grad=True) * 1) is True


def test_a_guard_built_before_the_params_sees_groups_added_later():
    first = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.SGD([first], lr=0.1)
    guard = Guard(opt)
    later = torch.nn.Parameter(torch.zeros(3))
    opt.add_param_group({"params": [later]})
    first.grad = torch.ones(2)
    later.grad = torch.tensor([0.0, float("nan"), 0.0])
    assert guard.check() is False and guard.events[0].kind == "nonfinite_grad"
    empty = torch.optim.SGD([{"params": []}], lr=0.1)
    with pytest.raises(ValueError, match="no parameters yet"):
        Guard(empty).check()


def test_integer_gradients_are_refused_by_name():
    p = torch.nn.Parameter(torch.zeros(2))
    guard = Guard(torch.optim.SGD([p], lr=0.1))
    p.grad = torch.ones(2)
    guard.check()
    # A complex parameter's gradient: the scan names it and the fix.
    c = torch.nn.Parameter(torch.zeros(2, dtype=torch.complex64))
    c.grad = torch.ones(2, dtype=torch.complex64)
    guard2 = Guard(torch.optim.SGD([c], lr=0.1))
    with pytest.raises(TypeError, match=r"buffers\[0\] has dtype torch.complex64.*view_as_real"):
        guard2.check()


def test_the_summary_reads_like_the_symptom_table():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=3e-3)
    guard = Guard(opt, check_grads=False, policy={"loss_spike": "skip"}, warmup=20)
    rng = np.random.default_rng(0)
    for step in range(1500):
        value = 1.0 + 0.01 * rng.standard_normal()
        if step in (1200, 1250, 1300, 1350, 1400, 1410, 1420):
            value = 3.0
        guard.check(value)
    text = guard.summary()
    assert text.startswith("7 loss spikes (skipped) between steps 1200–1420")
    assert "LR 0.003 is likely too high; try ÷10 (0.0003) or a longer warmup" in text


def test_on_event_and_events_are_typed_records():
    seen = []
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    guard = Guard(opt, check_grads=False, on_event=seen.append)
    guard.check(float("nan"))
    assert seen == guard.events and isinstance(seen[0], GuardEvent)
    assert seen[0].kind == "nonfinite_loss" and math.isnan(seen[0].value) and seen[0].lr == 0.1
    assert "Guard(step=1, events=1, skipped=1" in repr(guard)


def test_the_torch_fallback_agrees_with_the_native_scan():
    """Gradients the native scan cannot read (other devices, subclasses, sparse) are summarised with
    torch ops, read back once per device; on CPU tensors both paths must agree."""
    from pylrcore.torch.guard import _fallback_summary
    from pylrcore.nonfinite import scan

    gen = torch.Generator().manual_seed(0)
    grads = [torch.randn(300, generator=gen), torch.randn(7, 5, generator=gen).double(),
             torch.randn(64, generator=gen).half(), torch.randn(33, generator=gen).bfloat16()]
    bad, sumsq = _fallback_summary(grads)
    native = scan(grads)
    assert bad == 0 and sumsq == pytest.approx(native.sumsq, rel=1e-12)
    grads[2][5] = float("inf")
    grads[3][0] = float("nan")
    bad, sumsq = _fallback_summary(grads)
    assert bad == scan(grads).nonfinite_count == 2 and math.isnan(sumsq)
