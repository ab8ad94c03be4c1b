"""The guard inside the frameworks: a real Lightning Trainer (CPU) skips a poisoned step, logs the
event through its logger, scales a pylrcore schedule and stops fit() on a raise policy; TensorBoard
receives the events; the integrations name the extra to install when their framework is missing."""

from __future__ import annotations

import importlib
import math
import subprocess
import sys
import warnings

import pytest

torch = pytest.importorskip("torch")

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


@pytest.mark.parametrize("module, extra", [("pylrcore.integrations.lightning", "lightning"),
                                           ("pylrcore.integrations.tensorboard", "tensorboard")])
def test_a_missing_framework_names_the_extra(module, extra):
    blocked = ["lightning", "pytorch_lightning"] if extra == "lightning" else ["tensorboard"]
    code = (
        "import sys\n"
        f"for name in {blocked!r}: sys.modules[name] = None\n"
        "try:\n"
        f"    import {module}\n"
        "except ImportError as e:\n"
        "    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert f"pip install 'pylrcore[{extra}]'" in out


def test_import_pylrcore_imports_no_framework():
    code = ("import sys, pylrcore, pylrcore.integrations\n"
            "print([m for m in ('torch', 'pytorch_lightning', 'lightning', 'tensorboard') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    assert importlib.import_module("pylrcore.integrations").require
