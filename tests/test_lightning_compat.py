"""FinderCallback in place of Lightning's LearningRateFinder: its argument names and meaning, its
``optimal_lr`` (results, suggestion, plot) equal to Lightning's own on the same curve, gradient
accumulation, skipped batches, clear refusals; and a pylrcore Scheduler that survives a param group
added mid-training (BackboneFinetuning) inside a real Trainer."""

from __future__ import annotations

import warnings
from typing import Any, List

import pytest

torch = pytest.importorskip("torch")
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    pl = pytest.importorskip("pytorch_lightning")
    from pylrcore.integrations.lightning import FinderCallback  # noqa: E402

from pylrcore import schedules as S  # noqa: E402
from pylrcore.plateau import Plateau  # noqa: E402
from pylrcore.torch import Scheduler  # noqa: E402

pytestmark = pytest.mark.slow


def regression(n: int = 256, batch: int = 8) -> Any:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, 4, generator=gen)
    y = x.sum(1, keepdim=True) + 0.1 * torch.randn(n, 1, generator=gen)
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=batch)


class Module(pl.LightningModule):
    def __init__(self, skip_every: int = 0, manual: bool = False, two_optimizers: bool = False) -> None:
        super().__init__()
        self.learning_rate = 1e-4
        self.layer = torch.nn.Linear(4, 1)
        self.calls = 0
        self.skip_every = skip_every
        self.automatic_optimization = not manual
        self.two = two_optimizers

    def training_step(self, batch: Any, batch_idx: int) -> Any:
        self.calls += 1
        if self.skip_every and self.calls % self.skip_every == 0:
            return None
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.layer(x), y)
        if not self.automatic_optimization:
            opt = self.optimizers()
            opt.zero_grad()
            self.manual_backward(loss)
            opt.step()
        return loss

    def configure_optimizers(self) -> Any:
        opt = torch.optim.SGD(self.parameters(), lr=self.learning_rate)
        if self.two:
            return [opt, torch.optim.SGD(self.parameters(), lr=self.learning_rate)]
        return opt


def fit(module: Any, callbacks: List[Any], tmp_path: Any, epochs: int = 1, **trainer_args: Any) -> Any:
    trainer = pl.Trainer(accelerator="cpu", max_epochs=epochs, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=callbacks,
                         default_root_dir=str(tmp_path), **trainer_args)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(module, regression())
    return trainer


def test_lightning_argument_names_and_optimal_lr(tmp_path):
    from pytorch_lightning.tuner.lr_finder import _LRFinder

    finder = FinderCallback(min_lr=1e-6, max_lr=1.0, num_training_steps=50, mode="exponential",
                            early_stop_threshold=None, update_attr=True, attr_name="learning_rate", plot=False)
    module = Module()
    trainer = fit(module, [finder], tmp_path)
    (result,) = finder.results
    assert len(result.lrs) == 50  # early_stop_threshold=None: never stops early
    assert result.lrs[0] == pytest.approx(1e-6) and result.lrs[-1] == pytest.approx(1.0)
    view = finder.optimal_lr
    peer = _LRFinder("exponential", 1e-6, 1.0, 50)
    peer.results = {"lr": list(view.results["lr"]), "loss": list(view.results["loss"])}
    assert view.suggestion() == peer.suggestion()  # Lightning's own rule on the same curve
    assert view.suggestion(skip_begin=5, skip_end=3) == peer.suggestion(skip_begin=5, skip_end=3)
    import matplotlib

    matplotlib.use("Agg")
    assert view.plot(suggest=True) is not None
    assert module.learning_rate == result.suggestion == trainer.optimizers[0].param_groups[0]["lr"]


def test_lightning_smoothing_of_results_is_lightnings():
    """results["loss"] is Lightning's off-by-one debiased EMA (beta 0.98) of the raw losses."""
    from pylrcore.integrations.lightning import LightningFinderView
    from pylrcore import LRFinder

    model = torch.nn.Linear(4, 1)
    result = LRFinder(model, torch.optim.SGD(model.parameters(), lr=1e-4), torch.nn.MSELoss()).range_test(
        regression(), end_lr=1.0, num_iter=30, progress=False)
    view = LightningFinderView(result, "exp")
    avg, expected = 0.0, []
    for i, loss in enumerate(result.losses.tolist()):  # the recurrence of Lightning's _LRCallback:
        avg = 0.98 * avg + 0.02 * loss  # it debiases with the global step already advanced (i + 1)
        expected.append(avg / (1 - 0.98 ** (i + 2)))
    assert view.results["loss"] == pytest.approx(expected, rel=1e-12)


def test_accumulated_batches_give_one_point_per_optimizer_step(tmp_path):
    finder = FinderCallback(num_training_steps=20, early_stop_threshold=None, update_attr=False, plot=False)
    module = Module()
    fit(module, [finder], tmp_path, accumulate_grad_batches=3, max_steps=1)
    assert len(finder.results[0].lrs) == 20
    assert module.calls >= 60  # 3 micro-batches per point (plus the real training steps)


def test_a_training_step_returning_none_skips_its_batch(tmp_path):
    finder = FinderCallback(num_training_steps=20, early_stop_threshold=None, update_attr=False, plot=False)
    module = Module(skip_every=4)
    fit(module, [finder], tmp_path, max_steps=1)
    assert len(finder.results[0].lrs) == 20


def test_refusals_name_what_is_supported(tmp_path):
    with pytest.raises(ValueError, match="manual optimization"):
        fit(Module(manual=True), [FinderCallback(plot=False)], tmp_path, max_steps=1)
    # Several optimizers exist only under manual optimization in Lightning (it refuses them itself otherwise).
    with pytest.raises(ValueError, match="manual optimization"):
        fit(Module(manual=True, two_optimizers=True), [FinderCallback(plot=False)], tmp_path, max_steps=1)
    with pytest.raises(ValueError, match="`mode` should be either"):
        FinderCallback(mode="cosine")
    with pytest.raises(TypeError, match="not both"):
        FinderCallback(min_lr=1e-5, start_lr=1e-5)
    with pytest.raises(AttributeError, match="attr_name='rate'"):
        fit(Module(), [FinderCallback(attr_name="rate", plot=False)], tmp_path, max_steps=1)


# ---- a param group added after the Scheduler ------------------------------------------------------


def test_scheduler_leaves_a_group_added_later_alone_and_plateau_extends_to_it():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 1))
    opt = torch.optim.SGD(model[1].parameters(), lr=0.1)
    sched = Scheduler(opt, S.cosine(100), plateau=Plateau(patience=0, factor=0.5))
    opt.add_param_group({"params": model[0].parameters(), "lr": 0.01})
    for _ in range(3):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(float(S.cosine(100)([3], 0.1)[0]))
    assert opt.param_groups[1]["lr"] == 0.01  # torch's schedulers leave it alone too
    sched.step(1.0)
    sched.step(2.0)  # worse: a plateau reduction
    assert opt.param_groups[1]["lr"] == pytest.approx(0.005)
    sched.load_state_dict(sched.state_dict())


def test_backbone_finetuning_inside_a_real_trainer(tmp_path):
    from pytorch_lightning.callbacks import BackboneFinetuning

    class WithBackbone(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = torch.nn.Linear(4, 4)
            self.head = torch.nn.Linear(4, 1)
            self.lrs: List[List[float]] = []

        def training_step(self, batch: Any, batch_idx: int) -> Any:
            x, y = batch
            self.lrs.append([g["lr"] for g in self.trainer.optimizers[0].param_groups])
            return torch.nn.functional.mse_loss(self.head(torch.relu(self.backbone(x))), y)

        def configure_optimizers(self) -> Any:
            opt = torch.optim.SGD(filter(lambda p: p.requires_grad, self.parameters()), lr=0.05)
            return {"optimizer": opt,
                    "lr_scheduler": {"scheduler": Scheduler(opt, S.cosine(200)), "interval": "step"}}

    module = WithBackbone()
    fit(module, [BackboneFinetuning(unfreeze_backbone_at_epoch=1)], tmp_path, epochs=2)
    assert len(module.lrs[-1]) == 2  # the backbone's group was added at epoch 1 and training went on
    assert module.lrs[-1][0] == pytest.approx(float(S.cosine(200)([63], 0.05)[0]))


def test_finder_callback_confirm_applies_the_confirmed_lr(tmp_path):
    finder = FinderCallback(min_lr=1e-5, max_lr=1.0, num_training_steps=60, confirm=10, attr_name="learning_rate",
                            plot=False)
    module = Module()
    trainer = fit(module, [finder], tmp_path, max_steps=1)
    (result,) = finder.results
    assert result.confirmation is not None and result.confirmation.losses.shape[1] == 10
    assert module.learning_rate == result.confirmed_lr == trainer.optimizers[0].param_groups[0]["lr"]
