"""The guard inside the frameworks: a real Lightning Trainer (CPU) skips a poisoned step, logs the
event through its logger, scales a pylrcore schedule and stops fit() on a raise policy; TensorBoard
receives the events; the integrations name the extra to install when their framework is missing."""

from __future__ import annotations

import math
import warnings

import pytest

torch = pytest.importorskip("torch")

# slow: real Lightning Trainer runs and TensorBoard writers; CI runs it (pytest -m "not slow" leaves it out)
pytestmark = pytest.mark.slow

from pylrcore import schedules as S  # noqa: E402
from pylrcore.torch import Guard, Scheduler, TrainingDiverged  # noqa: E402


def _lightning():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pl = pytest.importorskip("pytorch_lightning")
        from pylrcore.integrations.lightning import GuardCallback
    return pl, GuardCallback


def _module(pl, poison_at, schedule=None):
    class Module(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(4, 1)
            self.weights = {}

        def training_step(self, batch, batch_idx):
            loss = (self.layer(batch[0]) - batch[0].sum(1, keepdim=True)).pow(2).mean()
            if self.global_step in poison_at:
                loss = loss * float("nan")
            return loss

        def on_before_optimizer_step(self, optimizer):
            self.weights[self.global_step] = [p.detach().clone() for p in self.parameters()]

        def configure_optimizers(self):
            opt = torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9)
            if schedule is None:
                return opt
            return {"optimizer": opt, "lr_scheduler": {"scheduler": Scheduler(opt, schedule), "interval": "step"}}

    return Module()


class _Recorder:
    """A minimal Lightning logger that keeps what it is given."""

    def __new__(cls, pl):
        from pytorch_lightning.loggers import Logger

        class Recorder(Logger):
            def __init__(self):
                super().__init__()
                self.metrics = []

            @property
            def name(self):
                return "recorder"

            @property
            def version(self):
                return 0

            def log_metrics(self, metrics, step=None):
                self.metrics.append((step, dict(metrics)))

            def log_hyperparams(self, params, *args, **kwargs):
                pass

        return Recorder()


def _fit(pl, module, callback, steps=30, logger=None):
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(256, 4)), batch_size=8)
    trainer = pl.Trainer(accelerator="cpu", max_steps=steps, logger=logger if logger is not None else False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         callbacks=[callback], log_every_n_steps=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Lightning's own deprecation and "few workers" notes
        trainer.fit(module, data)
    return trainer


def test_lightning_guard_skips_the_poisoned_step_and_logs_it():
    pl, GuardCallback = _lightning()
    module = _module(pl, poison_at={10})
    logger = _Recorder(pl)
    callback = GuardCallback()
    _fit(pl, module, callback, logger=logger)
    guard = callback.guard
    assert [(e.step, e.kind, e.action) for e in guard.events] == [(10, "nonfinite_loss", "skip"),
                                                                  (10, "nonfinite_grad", "skip")]
    assert all(torch.isfinite(p).all() for p in module.parameters())
    # The skipped step changed nothing: the weights before step 11 are those before step 10.
    assert all(torch.equal(a, b) for a, b in zip(module.weights[10], module.weights[11]))
    logged = [(step, m) for step, m in logger.metrics if any(k.startswith("guard/") for k in m)]
    assert [step for step, _ in logged] == [10, 10] and math.isnan(logged[0][1]["guard/nonfinite_loss"])
    assert logged[1][1]["guard/nonfinite_grad"] > 0


def test_lightning_guard_scales_a_pylrcore_schedule_from_configure_optimizers():
    pl, GuardCallback = _lightning()
    module = _module(pl, poison_at={6}, schedule=S.constant())
    callback = GuardCallback(policy={"nonfinite_loss": "scale_lr"}, lr_factor=0.1)
    trainer = _fit(pl, module, callback, steps=12)
    assert callback.guard.scheduler is trainer.lr_scheduler_configs[0].scheduler
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.005)


def test_lightning_guard_stops_fit_with_training_diverged():
    pl, GuardCallback = _lightning()
    module = _module(pl, poison_at={4})
    with pytest.raises(TrainingDiverged, match="non-finite loss"):
        _fit(pl, module, GuardCallback(policy={"nonfinite_loss": "raise"}), steps=10)
    assert all(torch.isfinite(p).all() for p in module.parameters())


def test_tensorboard_receives_guard_events(tmp_path):
    pytest.importorskip("tensorboard")
    from torch.utils.tensorboard import SummaryWriter
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from pylrcore.integrations.tensorboard import GuardWriter

    p = torch.nn.Parameter(torch.zeros(3))
    writer = SummaryWriter(str(tmp_path))
    guard = Guard(torch.optim.SGD([p], lr=0.1), on_event=GuardWriter(writer))
    for step in range(5):
        p.grad = torch.tensor([1.0, float("nan") if step == 3 else 0.0, 0.0])
        guard.check(1.0)
    writer.close()
    acc = EventAccumulator(str(tmp_path))
    acc.Reload()
    scalars = acc.Scalars("guard/nonfinite_grad")
    assert [(s.step, s.value) for s in scalars] == [(3, 1.0)]
    with pytest.raises(TypeError, match="SummaryWriter"):
        GuardWriter(object())


# --- the range test as a Lightning callback ---------------------------------------------------------


def _finder_module(pl, schedule=None):
    class Module(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.lr = 1e-4
            self.layer = torch.nn.Linear(4, 1)

        def training_step(self, batch, batch_idx):
            x, y = batch
            loss = torch.nn.functional.mse_loss(self.layer(x), y)
            self.log("train_loss", loss)  # silenced during the range test
            return {"loss": loss}

        def configure_optimizers(self):
            opt = torch.optim.SGD(self.parameters(), lr=self.lr)
            if schedule is None:
                return opt
            return {"optimizer": opt, "lr_scheduler": {"scheduler": Scheduler(opt, schedule), "interval": "step"}}

    return Module()


def _weights_at(pl, hook_name, store):
    class Recorder(pl.Callback):
        pass

    def record(self, trainer, module):
        store.append([p.detach().clone() for p in module.parameters()])

    setattr(Recorder, hook_name, record)
    return Recorder()


def _fit_finder(pl, module, callbacks, epochs, tmp_path):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(256, 4, generator=gen)
    y = x.sum(1, keepdim=True) + 0.1 * torch.randn(256, 1, generator=gen)
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8)
    trainer = pl.Trainer(accelerator="cpu", max_epochs=epochs, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=callbacks,
                         default_root_dir=str(tmp_path))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(module, data)
    return trainer


def test_lightning_finder_at_fit_start_applies_the_suggestion_and_restores(tmp_path):
    pl, _ = _lightning()
    from pylrcore.integrations.lightning import FinderCallback

    module = _finder_module(pl)
    before, after = [], []
    finder = FinderCallback(end_lr=1.0, num_iter=60)
    trainer = _fit_finder(pl, module, [_weights_at(pl, "on_train_start", before), finder,
                                       _weights_at(pl, "on_train_start", after)], 1, tmp_path)
    (result,) = finder.results
    assert len(result.lrs) >= 20 and result.suggestion is not None
    assert all(torch.equal(a, b) for a, b in zip(before[0], after[0]))  # the test left no trace
    assert module.lr == result.suggestion == trainer.optimizers[0].param_groups[0]["lr"]
    assert (tmp_path / "lr_finder_0.png").stat().st_size > 0


def test_lightning_finder_mid_training_records_a_full_curve(tmp_path):
    pl, _ = _lightning()
    from pylrcore.integrations.lightning import FinderCallback

    module = _finder_module(pl)
    before, after, steps = [], [], []

    class Step(pl.Callback):
        def on_train_epoch_start(self, trainer, module):
            steps.append(trainer.global_step)

    finder = FinderCallback(milestones=(1,), end_lr=1.0, num_iter=40, apply=False, plot=False)
    _fit_finder(pl, module, [_weights_at(pl, "on_train_epoch_start", before), finder, Step(),
                             _weights_at(pl, "on_train_epoch_start", after)], 2, tmp_path)
    (result,) = finder.results
    assert steps[1] == 32  # it ran at global_step 32, where Lightning's own finder records nothing
    assert len(result.lrs) >= 20 and result.suggestion is not None
    assert all(torch.equal(a, b) for a, b in zip(before[1], after[1]))
    assert module.lr == 1e-4  # apply=False


def test_lightning_finder_rescales_a_pylrcore_schedule(tmp_path):
    pl, _ = _lightning()
    from pylrcore.integrations.lightning import FinderCallback

    module = _finder_module(pl, schedule=S.warmup(10) >> S.cosine(100))
    finder = FinderCallback(end_lr=1.0, num_iter=40, plot=False)
    trainer = _fit_finder(pl, module, [finder], 1, tmp_path)
    sched = trainer.lr_scheduler_configs[0].scheduler
    suggestion = finder.results[0].suggestion
    assert sched.base_lrs == pytest.approx([suggestion])
    t = sched.last_epoch
    expected = float((S.warmup(10) >> S.cosine(100))([t], suggestion)[0])
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(expected, rel=1e-12)


def test_lightning_finder_rejects_bad_milestones():
    _lightning()
    from pylrcore.integrations.lightning import FinderCallback

    with pytest.raises(ValueError, match="milestones"):
        FinderCallback(milestones=(-1,))


# --- reporting: TensorBoard when there is a writer, logging otherwise -----------------------------


def _small_result():
    from pylrcore import LRFinder

    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    x = torch.randn(128, 4)
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, x.sum(1, keepdim=True)), batch_size=16)
    return LRFinder(model, torch.optim.SGD(model.parameters(), lr=1e-4), torch.nn.MSELoss()).range_test(
        data, end_lr=1.0, num_iter=30, progress=False)


def test_the_range_test_goes_to_tensorboard_with_its_figure(tmp_path):
    pytest.importorskip("tensorboard")
    from torch.utils.tensorboard import SummaryWriter
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from pylrcore.integrations import log_range_test

    result = _small_result()
    writer = SummaryWriter(str(tmp_path))
    log_range_test(result, writer, step=7)
    writer.close()
    acc = EventAccumulator(str(tmp_path), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    losses = acc.Scalars("lr_finder/loss")
    assert [s.step for s in losses] == list(range(len(result.lrs)))
    assert [s.value for s in losses] == pytest.approx(result.losses.tolist(), rel=1e-6)
    assert acc.Scalars("lr_finder/suggestion")[0].value == pytest.approx(result.suggestion, rel=1e-6)
    assert acc.Images("lr_finder")[0].step == 7


def test_without_a_writer_events_and_results_go_to_logging(caplog):
    from pylrcore.integrations import event_logger, log_range_test

    p = torch.nn.Parameter(torch.zeros(2))
    guard = Guard(torch.optim.SGD([p], lr=0.1), on_event=event_logger())
    p.grad = torch.tensor([float("nan"), 0.0])
    with caplog.at_level("INFO", logger="pylrcore"):
        guard.check(1.0)
        log_range_test(_small_result())
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0] == "guard step 0: 1 non-finite gradient element(s), lr 0.1 -> skip"
    assert messages[1].startswith("range test: suggested lr")


def test_lightning_guard_records_the_step_loss_under_gradient_accumulation(tmp_path):
    """Lightning hands on_before_backward the micro-batch loss divided by accumulate_grad_batches;
    the guard must record the step's loss (the mean over its micro-batches), not a fraction of it."""
    pl, GuardCallback = _lightning()
    raw = []

    class Module(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(4, 1)

        def training_step(self, batch, batch_idx):
            loss = (self.layer(batch[0]) - batch[0].sum(1, keepdim=True)).pow(2).mean()
            raw.append(loss.item())
            return loss

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    callback = GuardCallback()
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(96, 4)), batch_size=8)
    trainer = pl.Trainer(accelerator="cpu", max_steps=6, accumulate_grad_batches=2, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         callbacks=[callback], default_root_dir=str(tmp_path))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(Module(), data)
    expected = [(raw[2 * k] + raw[2 * k + 1]) / 2 for k in range(6)]
    assert list(callback.guard.losses) == pytest.approx(expected, rel=1e-6)
