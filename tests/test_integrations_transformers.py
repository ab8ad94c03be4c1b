"""The Hugging Face integration on a real ``Trainer`` (CPU, a tiny randomly initialised GPT-2 built
from its config, no download): a poisoned step is skipped bitwise and logged, the guard's losses are
the Trainer's, a pylrcore Scheduler passed in ``optimizers=`` drives the lr exactly, and ``find_lr``
suggests an lr and leaves the model as it was."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("accelerate")  # the Trainer needs it

from pylrcore import schedules as S  # noqa: E402
from pylrcore.torch import Scheduler, TrainingDiverged  # noqa: E402

# slow: Hugging Face Trainer runs; CI runs it (pytest -m "not slow" leaves it out)
pytestmark = pytest.mark.slow

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainerCallback, TrainingArguments

    from pylrcore.integrations.transformers import GuardCallback, find_lr

VOCAB, LENGTH = 32, 8


class Tokens(torch.utils.data.Dataset):
    """Counting sequences from random starts (each token is the previous + 1), their own labels:
    something a causal LM learns quickly."""

    def __init__(self, n=128):
        starts = torch.randint(0, VOCAB, (n, 1), generator=torch.Generator().manual_seed(0))
        self.ids = (starts + torch.arange(LENGTH)) % VOCAB

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


def tiny_model():
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=VOCAB, n_positions=LENGTH, n_embd=16, n_layer=1, n_head=2,
                        bos_token_id=0, eos_token_id=0)
    return GPT2LMHeadModel(config)


def poison(model, at_forwards):
    """Make the model's own loss NaN on the given training forwards (0-based)."""
    calls = {"n": 0}

    def hook(module, args, output):
        if module.training:
            if calls["n"] in at_forwards:
                output["loss"] = output["loss"] * float("nan")
            calls["n"] += 1
        return output

    model.register_forward_hook(hook)


class Recorder(TrainerCallback):
    """Weights, optimizer state and lr as each step begins (before its forward pass)."""

    def __init__(self):
        self.weights, self.states, self.lrs = {}, {}, {}

    def on_step_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
        inner = optimizer.optimizer
        self.weights[state.global_step] = [p.detach().clone() for p in model.parameters()]
        self.states[state.global_step] = [{k: v.clone() if torch.is_tensor(v) else v for k, v in s.items()}
                                          for s in inner.state.values()]

    def on_pre_optimizer_step(self, args, state, control, optimizer=None, **kwargs):
        self.lrs[state.global_step] = optimizer.param_groups[0]["lr"]


def make_trainer(tmp_path, model, callbacks, steps=20, optimizers=(None, None), compute_loss_func=None,
                 **args):
    settings = dict(output_dir=str(tmp_path), use_cpu=True, report_to=[], max_steps=steps,
                    per_device_train_batch_size=8, logging_steps=1, save_strategy="no", disable_tqdm=True,
                    learning_rate=1e-3, seed=0)
    settings.update(args)
    return Trainer(model=model, args=TrainingArguments(**settings), train_dataset=Tokens(),
                   callbacks=callbacks, optimizers=optimizers, compute_loss_func=compute_loss_func)


def train(trainer):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # transformers' and accelerate's own notes
        trainer.train()
    return trainer


def same(a, b):
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


def same_state(a, b):
    return len(a) == len(b) and all(x.keys() == y.keys() and all(torch.equal(x[k], y[k]) if torch.is_tensor(x[k]) else x[k] == y[k]
                                            for k in x) for x, y in zip(a, b))


def test_a_nan_step_is_skipped_bitwise_logged_and_training_goes_on(tmp_path):
    model = tiny_model()
    poison(model, at_forwards={7})
    guard_cb, recorder = GuardCallback(), Recorder()
    trainer = train(make_trainer(tmp_path, model, [guard_cb, recorder], steps=12))

    guard = guard_cb.guard
    assert [(e.step, e.kind, e.action) for e in guard.events] == [(7, "nonfinite_loss", "skip"),
                                                                  (7, "nonfinite_grad", "skip")]
    assert trainer.state.global_step == 12 and guard.step == 12
    assert all(torch.isfinite(p).all() for p in model.parameters())
    # Step 7 changed nothing, AdamW's step counts and moments included; its neighbours did change.
    assert same(recorder.weights[7], recorder.weights[8]) and same_state(recorder.states[7], recorder.states[8])
    assert not same(recorder.weights[6], recorder.weights[7]) and not same(recorder.weights[8], recorder.weights[9])
    # The event is in the Trainer's log history at the step it happened.
    logged = [e for e in trainer.state.log_history if any(k.startswith("guard/") for k in e)]
    assert len(logged) == 1 and logged[0]["step"] == 7
    assert math.isnan(logged[0]["guard/nonfinite_loss"]) and logged[0]["guard/nonfinite_grad"] > 0
    # The Trainer still advanced its (linear) scheduler on the skipped step: every lr is on schedule.
    expected = [1e-3 * (1 - s / 12) for s in range(12)]
    assert [recorder.lrs[s] for s in range(12)] == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("partial_losses", [True, False], ids=["num_items_in_batch", "mean_losses"])
def test_the_guard_checks_the_loss_the_trainer_logs(tmp_path, partial_losses):
    model = tiny_model()
    model.accepts_loss_kwargs = partial_losses  # the Trainer passes num_items_in_batch only if True
    guard_cb = GuardCallback()
    trainer = train(make_trainer(tmp_path, model, [guard_cb], steps=6, gradient_accumulation_steps=2))
    logged = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    assert list(guard_cb.guard.losses) == pytest.approx(logged, rel=1e-6)


def test_without_a_model_loss_the_gradients_are_still_checked(tmp_path):
    calls = {"n": 0}

    def loss_outside_the_model(outputs, labels, num_items_in_batch=None):
        logits = outputs.logits[:, :-1].reshape(-1, VOCAB)
        loss = torch.nn.functional.cross_entropy(logits, labels[:, 1:].reshape(-1))
        calls["n"] += 1
        return loss * float("nan") if calls["n"] == 4 else loss

    guard_cb = GuardCallback()
    train(make_trainer(tmp_path, tiny_model(), [guard_cb], steps=6, compute_loss_func=loss_outside_the_model))
    assert not guard_cb.guard.losses  # the model never saw the labels, so it returned no loss
    assert [(e.step, e.kind) for e in guard_cb.guard.events] == [(3, "nonfinite_grad")]


def test_training_diverged_stops_train_and_keeps_the_event_in_the_log(tmp_path):
    model = tiny_model()
    poison(model, at_forwards={3})
    trainer = make_trainer(tmp_path, model, [GuardCallback(policy={"nonfinite_loss": "raise"})], steps=10)
    with pytest.raises(TrainingDiverged, match="non-finite loss"):
        train(trainer)
    assert trainer.state.global_step == 3
    assert [e["step"] for e in trainer.state.log_history if "guard/nonfinite_loss" in e] == [3]
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_a_pylrcore_scheduler_in_optimizers_drives_the_lr_exactly(tmp_path):
    model = tiny_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    schedule = S.warmup(4) >> S.cosine(16)
    recorder = Recorder()
    trainer = train(make_trainer(tmp_path, model, [recorder], steps=20,
                                 optimizers=(optimizer, Scheduler(optimizer, schedule))))
    expected = schedule(np.arange(20), 2e-3).tolist()
    assert [recorder.lrs[s] for s in range(20)] == expected
    assert [e["learning_rate"] for e in trainer.state.log_history if "learning_rate" in e] == expected


@pytest.mark.parametrize("pylrcore_schedule", [True, False], ids=["pylrcore_scheduler", "trainer_linear"])
def test_scale_lr_scales_the_schedule(tmp_path, pylrcore_schedule):
    model = tiny_model()
    poison(model, at_forwards={5})
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    if pylrcore_schedule:
        schedule = S.warmup(4) >> S.cosine(16)
        scheduler = Scheduler(optimizer, schedule)
        planned = schedule(np.arange(12), 2e-3)
    else:  # the Trainer's own (linear decay, a LambdaLR): the guard scales its base lrs
        scheduler = None
        planned = np.array([2e-3 * (1 - s / 12) for s in range(12)])
    guard_cb, recorder = GuardCallback(policy={"nonfinite_loss": "scale_lr"}, lr_factor=0.1), Recorder()
    trainer = train(make_trainer(tmp_path, model, [guard_cb, recorder], steps=12, optimizers=(optimizer, scheduler)))
    assert guard_cb.guard.scheduler is trainer.lr_scheduler
    lrs = [recorder.lrs[s] for s in range(12)]  # read after the guard's check: step 5 already has the new lr
    assert lrs[:5] == pytest.approx(planned[:5], rel=1e-12)
    assert lrs[5:] == pytest.approx(0.1 * planned[5:], rel=1e-12)


def test_find_lr_suggests_applies_and_restores_the_model(tmp_path):
    model = tiny_model()
    trainer = make_trainer(tmp_path, model, [], steps=4)
    before = [t.detach().clone() for t in list(model.parameters()) + list(model.buffers())]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = find_lr(trainer, start_lr=1e-5, end_lr=1.0, num_iter=30, apply=True)
    assert result.suggestion is not None and 1e-7 < result.suggestion < 1.0
    assert len(result.lrs) >= 15 and np.isfinite(result.losses[:15]).all()
    assert same(before, list(model.parameters()) + list(model.buffers()))
    assert trainer.optimizer is None and trainer.args.learning_rate == result.suggestion
    recorder = Recorder()
    trainer.add_callback(recorder)
    train(trainer)  # the optimizer the Trainer now creates starts from the suggestion
    assert recorder.lrs[0] == pytest.approx(result.suggestion, rel=1e-12)


def test_find_lr_will_not_apply_to_an_optimizer_it_does_not_own(tmp_path):
    model = tiny_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    trainer = make_trainer(tmp_path, model, [], optimizers=(optimizer, None))
    with pytest.raises(ValueError, match="lr=result.suggestion"):
        find_lr(trainer, apply=True)
    state = [p.detach().clone() for p in model.parameters()]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = find_lr(trainer, end_lr=1.0, num_iter=10)
    assert len(result.lrs) > 0 and trainer.optimizer is optimizer and same(state, list(model.parameters()))
    assert optimizer.param_groups[0]["lr"] == 1e-3 and not optimizer.state
