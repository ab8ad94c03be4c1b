"""pylrcore.torch: the Scheduler is a real LRScheduler that drives optimizers exactly like torch's
schedulers do, updates tensor lrs in place, resumes identically, works inside Lightning, and
attach() advances it after each optimizer step."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from pylrcore import Plateau  # noqa: E402
from pylrcore import schedules as S  # noqa: E402
from pylrcore.torch import Scheduler, attach  # noqa: E402

lr_scheduler = torch.optim.lr_scheduler
BASE = [1e-4, 3e-3, 0.05]


def make_opt(base=BASE, tensor=False, cls=torch.optim.SGD, **kw):
    params = [torch.nn.Parameter(torch.randn(3)) for _ in base]
    groups = [{"params": [p], "lr": torch.tensor(b, dtype=torch.float64) if tensor else b} for p, b in zip(params, base)]
    return cls(groups, **kw)


def lrs(opt):
    return [float(g["lr"]) for g in opt.param_groups]


CASES = [
    (S.cosine(2000, eta_min=1e-6), lambda o: lr_scheduler.CosineAnnealingLR(o, 2000, eta_min=1e-6)),
    (S.one_cycle(2000, pct_start=0.25), lambda o: lr_scheduler.OneCycleLR(o, max_lr=BASE, total_steps=2000, pct_start=0.25)),
    (S.cyclic(0.2, 300, 200, base_lr=1e-3), lambda o: lr_scheduler.CyclicLR(o, 1e-3, 0.2, 300, 200)),
    (S.warmup(100, start_factor=0.01) >> S.cosine(1900),
     lambda o: lr_scheduler.SequentialLR(o, [lr_scheduler.LinearLR(o, 0.01, 1.0, 100), lr_scheduler.CosineAnnealingLR(o, 1900)],
                                         milestones=[100])),
    (S.multistep([300, 900, 900], gamma=0.3), lambda o: lr_scheduler.MultiStepLR(o, [300, 900, 900], gamma=0.3)),
]


@pytest.mark.parametrize("case", range(len(CASES)))
@pytest.mark.parametrize("cls", [torch.optim.SGD, torch.optim.Adam])
def test_drives_an_optimizer_like_the_torch_scheduler(case, cls):
    """lrs and the momentum (SGD momentum / Adam beta1) torch writes, step by step."""
    ours_s, make = CASES[case]
    kw = {"momentum": 0.9} if cls is torch.optim.SGD else {}
    a, b = make_opt(cls=cls, **kw), make_opt(cls=cls, **kw)
    ours, ref = Scheduler(a, ours_s), make(b)
    assert isinstance(ours, lr_scheduler.LRScheduler)
    key = "momentum" if cls is torch.optim.SGD else "betas"
    for _ in range(2100 if case == 2 else 1999):  # cyclic has no end: further than 2,000 steps
        np.testing.assert_allclose(lrs(a), lrs(b), rtol=1e-12, atol=1e-14 * max(BASE))
        ma = [np.atleast_1d(g[key])[0] for g in a.param_groups]
        mb = [np.atleast_1d(g[key])[0] for g in b.param_groups]
        np.testing.assert_allclose(ma, mb, rtol=1e-12, atol=1e-15)
        if key == "betas":  # beta2 untouched
            assert [g[key][1] for g in a.param_groups] == [g[key][1] for g in b.param_groups]
        np.testing.assert_allclose(ours.get_last_lr(), ref.get_last_lr(), rtol=1e-12, atol=1e-14 * max(BASE))
        a.step(), b.step()
        ours.step(), ref.step()


def test_tensor_lrs_are_updated_in_place_and_train_like_float_lrs():
    torch.manual_seed(0)
    sched = S.warmup(20) >> S.cosine(200)
    a = make_opt(tensor=True, cls=torch.optim.Adam, foreach=False)
    b = make_opt(tensor=False, cls=torch.optim.Adam, foreach=False)
    for pa, pb in zip(a.param_groups, b.param_groups):
        pb["params"][0].data.copy_(pa["params"][0].data)
    tensors = [g["lr"] for g in a.param_groups]
    sa, sb = Scheduler(a, sched), Scheduler(b, sched)
    for _ in range(150):
        for opt in (a, b):
            opt.zero_grad()
            sum((g["params"][0] ** 2).sum() for g in opt.param_groups).backward()
            opt.step()
        sa.step(), sb.step()
        assert all(g["lr"] is t for g, t in zip(a.param_groups, tensors))  # identity kept
    np.testing.assert_allclose(lrs(a), lrs(b), rtol=1e-15)
    for ga, gb in zip(a.param_groups, b.param_groups):
        torch.testing.assert_close(ga["params"][0], gb["params"][0], rtol=1e-6, atol=1e-7)
    last = sa.get_last_lr()
    assert isinstance(last[0], torch.Tensor) and last[0] is not tensors[0]  # a copy, as torch documents


def test_float32_tensor_lr():
    opt = make_opt([0.1], tensor=False)
    opt.param_groups[0]["lr"] = torch.tensor(0.1, dtype=torch.float32)
    sched = Scheduler(opt, S.step(1, gamma=0.5))
    opt.step(), sched.step()
    assert opt.param_groups[0]["lr"].item() == pytest.approx(0.05)


def test_state_dict_resume_gives_the_identical_trajectory():
    sched = S.warmup(30) >> S.one_cycle(500)
    a = make_opt()
    sa = Scheduler(a, sched)
    for _ in range(123):
        a.step(), sa.step()
    buf = io.BytesIO()
    torch.save({"opt": a.state_dict(), "sched": sa.state_dict()}, buf)
    expected = []
    for _ in range(300):
        a.step(), sa.step()
        expected.append(lrs(a))
    buf.seek(0)
    ckpt = torch.load(buf, weights_only=False)
    b = make_opt()
    sb = Scheduler(b, sched)  # construct before loading the optimizer, as torch advises
    b.load_state_dict(ckpt["opt"])
    sb.load_state_dict(ckpt["sched"])
    got = []
    for _ in range(300):
        b.step(), sb.step()
        got.append(lrs(b))
    assert got == expected


def test_the_lr_follows_the_schedule_after_the_optimizer_loads_a_state():
    # optimizer.load_state_dict() replaces param_groups with new dicts (accelerate's prepare() does it
    # too): the scheduler must write into the new ones, not the ones it saw first.
    opt = make_opt()
    sched = Scheduler(opt, S.linear(0.5, 1.0, 4))
    opt.load_state_dict(opt.state_dict())
    for _ in range(3):
        opt.step(), sched.step()
    assert lrs(opt) == pytest.approx([b * 0.875 for b in BASE], rel=1e-12)
    assert lrs(opt) == sched.get_last_lr()


def test_load_state_dict_adopts_the_saved_schedule_as_torch_adopts_the_saved_state():
    a = make_opt()
    saved = Scheduler(a, S.cosine(10))
    for _ in range(3):
        a.step(), saved.step()
    other = Scheduler(make_opt(), S.cosine(20))
    other.load_state_dict(saved.state_dict())
    assert other.schedule == S.cosine(10) and other.last_epoch == 3
    assert other.get_last_lr() == saved.get_last_lr()
    other.step(), saved.step()
    assert other.get_last_lr() == saved.get_last_lr()


def test_tensor_beta1_is_written_in_place_and_momentum_needs_an_optimizer_with_it():
    p = torch.nn.Parameter(torch.zeros(2))
    beta1 = torch.tensor(0.9)
    opt = torch.optim.Adam([{"params": [p], "lr": 0.01, "betas": (beta1, torch.tensor(0.999))}])
    sched = Scheduler(opt, S.one_cycle(100, max_lr=0.1))
    for _ in range(30):
        opt.step(), sched.step()
    assert opt.param_groups[0]["betas"][0] is beta1
    assert float(beta1) == pytest.approx(S.one_cycle(100, max_lr=0.1).momentum(30), rel=1e-6)
    with pytest.raises(ValueError, match="cycle_momentum=False"):
        Scheduler(torch.optim.Adagrad([torch.nn.Parameter(torch.zeros(1))]), S.one_cycle(100))
    Scheduler(torch.optim.Adagrad([torch.nn.Parameter(torch.zeros(1))]), S.one_cycle(100, cycle_momentum=False))


def test_plateau_alone_matches_reduce_lr_on_plateau():
    rng = np.random.default_rng(0)
    metrics = np.r_[np.linspace(1, 0.5, 30), 0.5 + 0.01 * rng.random(70)]
    a, b = make_opt(), make_opt()
    ours = Scheduler(a, S.constant(), plateau=Plateau(factor=0.5, patience=3, min_lr=[0, 1e-4, 0]))
    ref = lr_scheduler.ReduceLROnPlateau(b, factor=0.5, patience=3, min_lr=[0, 1e-4, 0])
    for m in metrics:
        a.step(), b.step()
        ours.step(float(m)), ref.step(float(m))
        np.testing.assert_allclose(lrs(a), lrs(b), rtol=1e-12)
    assert lrs(a)[1] == 1e-4 or lrs(a)[1] < BASE[1]


def test_the_plateau_owns_the_per_group_scales_and_eps_keeps_a_tiny_groups_lr():
    # group 0 starts at 1e-4: with eps=1e-4 torch's ReduceLROnPlateau never moves it; the others halve
    a, b = make_opt(), make_opt()
    ours = Scheduler(a, S.constant(), plateau=Plateau(factor=0.5, patience=0, eps=1e-4))
    ref = lr_scheduler.ReduceLROnPlateau(b, factor=0.5, patience=0, eps=1e-4)
    for m in [1.0, 2.0, 2.0, 2.0]:
        a.step(), b.step()
        ours.step(m), ref.step(m)
        assert lrs(a) == pytest.approx(lrs(b), rel=1e-12)
    assert ours.plateau.scales == [1.0, 0.125, 0.125] and ours.plateau.num_reductions == 3
    ours.scale(0.1)  # the guard's rescaling multiplies on top, and is saved beside the plateau's
    assert lrs(a) == pytest.approx([1e-5, 3e-3 * 0.0125, 0.05 * 0.0125], rel=1e-12)
    state = ours.state_dict()
    assert state["_lr_factor"] == pytest.approx(0.1) and "_scales" not in state
    again = Scheduler(make_opt(), S.constant(), plateau=Plateau(factor=0.5, patience=0, eps=1e-4))
    again.load_state_dict(state)
    assert lrs(again.optimizer) == lrs(a) and again.plateau.scales == ours.plateau.scales
    # a checkpoint from before the plateau owned the scales: its per-group list loads into the plateau
    legacy = {k: v for k, v in state.items() if k != "_lr_factor"}
    legacy["_scales"] = [1.0, 0.125, 0.125]
    old = Scheduler(make_opt(), S.constant(), plateau=Plateau(factor=0.5, patience=0, eps=1e-4))
    old.load_state_dict(legacy)
    assert lrs(old.optimizer) == pytest.approx(lrs(b), rel=1e-12)


def test_plateau_scales_a_schedule():
    opt = make_opt()
    sched = Scheduler(opt, S.cosine(100), plateau=Plateau(factor=0.1, patience=0))
    sched.report(1.0)
    assert sched.report(2.0) is True  # not better: reduced, at once
    np.testing.assert_allclose(lrs(opt), np.array(BASE) * 0.1)
    for _ in range(50):
        opt.step(), sched.step()
    np.testing.assert_allclose(lrs(opt), S.cosine(100)(50, BASE) * 0.1, rtol=1e-14)


def test_attach_advances_after_each_optimizer_step_and_detaches():
    opt = make_opt()
    sched = attach(opt, "step(2, gamma=0.5)")
    for _ in range(4):
        opt.step()
    assert sched.last_epoch == 4
    np.testing.assert_allclose(lrs(opt), np.array(BASE) * 0.25)
    sched.detach()
    opt.step()
    assert sched.last_epoch == 4


def test_attach_does_not_advance_on_a_step_grad_scaler_skips():
    model = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = attach(opt, S.exponential(0.5))
    scaler = torch.amp.GradScaler("cpu")
    for bad in (False, True, False):
        opt.zero_grad()
        loss = model(torch.ones(1, 2)).sum() * (float("inf") if bad else 1.0)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
    assert sched.last_epoch == 2  # the inf step was skipped by the scaler, and so by the schedule


@pytest.mark.slow  # a Lightning Trainer
def test_lightning_accepts_it_from_configure_optimizers():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pl = pytest.importorskip("pytorch_lightning")
    seen = []

    class Module(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(4, 1)

        def training_step(self, batch, _):
            seen.append(self.trainer.optimizers[0].param_groups[0]["lr"])
            return self.layer(batch[0]).pow(2).mean()

        def configure_optimizers(self):
            opt = torch.optim.SGD(self.parameters(), lr=0.1)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": Scheduler(opt, S.warmup(5) >> S.cosine(15)),
                                                        "interval": "step"}}

    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(64, 4)), batch_size=4)
    trainer = pl.Trainer(accelerator="cpu", max_steps=20, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(Module(), data)
    np.testing.assert_allclose(seen, (S.warmup(5) >> S.cosine(15))(np.arange(20), 0.1), rtol=1e-12)


def test_bad_input():
    opt = make_opt()
    with pytest.raises(TypeError, match="torch.optim.Optimizer"):
        Scheduler(object(), S.cosine(5))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="pylrcore Schedule"):
        Scheduler(opt, lambda t: 1.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="cannot parse schedule"):
        Scheduler(opt, "cosine(")
    with pytest.raises(TypeError, match="plateau must be"):
        Scheduler(opt, S.cosine(5), plateau=0.1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="last_epoch"):
        Scheduler(opt, S.cosine(5), last_epoch=-2)
    sched = Scheduler(make_opt(), S.cosine(5))
    with pytest.raises(ValueError, match="no plateau"):
        sched.report(1.0)
    with pytest.raises(TypeError, match="step\\(epoch\\)"):
        sched.step(epoch=3)


def test_warns_when_stepped_before_the_optimizer():
    sched = Scheduler(make_opt(), S.cosine(5))
    with pytest.warns(UserWarning, match="Detected call of `lr_scheduler.step\\(\\)` before `optimizer.step\\(\\)`"):
        sched.step()
    opt = make_opt()
    sched = Scheduler(opt, S.cosine(5))
    opt.step = lambda closure=None: None  # replaced after the scheduler: torch's other warning
    with pytest.warns(UserWarning, match="Seems like `optimizer.step\\(\\)` has been overridden"):
        sched.step()


def test_step_with_an_epoch_says_it_is_not_supported():
    sched = Scheduler(make_opt(), S.cosine(5))
    for call in (lambda: sched.step(5), lambda: sched.step(epoch=5)):
        with pytest.raises(TypeError, match=r"step\(epoch\) is not supported"):
            call()


def test_compiled_code_reading_a_tensor_lr_is_not_recompiled_as_it_changes():
    """The point of writing tensor lrs in place: torch.compile guards on the tensor, not its value."""
    dynamo = pytest.importorskip("torch._dynamo")
    dynamo.reset()
    opt = make_opt([0.1], tensor=True)
    sched = Scheduler(opt, S.exponential(0.5))
    lr = opt.param_groups[0]["lr"]
    frames = []

    def count_frames(gm, example_inputs):
        frames.append(gm)
        return gm.forward

    step = torch.compile(lambda x, rate: x - rate * x, backend=count_frames)
    x = torch.ones(3, dtype=torch.float64)
    seen = []
    for _ in range(5):
        seen.append(float(step(x, lr)[0]))
        opt.step()
        sched.step()
    assert len(frames) == 1  # one graph, whatever the lr
    np.testing.assert_allclose(seen, [1 - 0.1 * 0.5**k for k in range(5)], rtol=1e-15)


# --- issue 11 item 16: bad values the Scheduler once accepted silently --------------------------------


def test_scheduler_refuses_a_nan_optimizer_lr() -> None:
    model = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=float("nan"))
    with pytest.raises(ValueError, match="base lr of param group 0 is nan"):
        Scheduler(opt, S.cosine(10))


def test_scheduler_load_state_dict_refuses_foreign_dicts() -> None:
    model = torch.nn.Linear(2, 1)
    sched = Scheduler(torch.optim.SGD(model.parameters(), lr=0.1), S.cosine(10))
    with pytest.raises(ValueError, match=r"unknown keys \['foo'\]"):
        sched.load_state_dict({"foo": 1})
    state = sched.state_dict()
    state["last_epoch"] = 2**63 - 1
    with pytest.raises(ValueError, match=r"last_epoch'\] must be <= 2\*\*62"):
        sched.load_state_dict(state)
    state = sched.state_dict()
    state["base_lrs"] = [float("nan")]
    with pytest.raises(ValueError, match="base_lrs"):
        sched.load_state_dict(state)


def test_attach_twice_on_one_optimizer_is_refused_until_detached() -> None:
    model = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    first = attach(opt, S.cosine(10))
    with pytest.raises(ValueError, match="already attached"):
        attach(opt, S.cosine(20))
    first.detach()
    attach(opt, S.cosine(20))


def test_the_torch_classes_are_reachable_from_the_top_level_without_importing_torch_early():
    import subprocess
    import sys

    code = ("import sys, pylrcore\nassert 'torch' not in sys.modules\n"
            "from pylrcore.torch.finder import LRFinder\nfrom pylrcore.torch.guard import Guard\n"
            "from pylrcore.torch import Scheduler\nfrom pylrcore.torch.parallel_sweep import sweep\n"
            "assert (pylrcore.LRFinder, pylrcore.Guard, pylrcore.Scheduler, pylrcore.sweep) == "
            "(LRFinder, Guard, Scheduler, sweep)\n"
            "assert {'LRFinder', 'Guard', 'Scheduler', 'sweep'} <= set(pylrcore.__all__)\n")
    from procs import pylrcore_env, scratch_dir

    subprocess.run([sys.executable, "-c", code], check=True, cwd=scratch_dir(), env=pylrcore_env())


def test_the_torch_tier_exports_its_names_once() -> None:
    # pylrcore.torch imports each module on first use; the top-level lazy names are the same objects.
    import pylrcore
    import pylrcore.torch as tier
    from pylrcore.torch import finder, guard, parallel_sweep, scheduler

    assert set(tier.__all__) <= set(dir(tier))
    for name in tier.__all__:
        assert getattr(tier, name) is getattr({"finder": finder, "guard": guard, "parallel_sweep": parallel_sweep,
                                               "scheduler": scheduler}[tier._HOMES[name]], name)
    for name in ("LRFinder", "Guard", "Scheduler", "sweep"):
        assert getattr(pylrcore, name) is getattr(tier, name)
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        tier.nothing  # noqa: B018
