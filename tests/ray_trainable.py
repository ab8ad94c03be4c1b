"""The Tune trainable of the Ray cluster test, in its own module: Ray's workers import it by name
(tests/ is on their PYTHONPATH), so it is not pickled from a test module they cannot import."""

from __future__ import annotations

import os
from typing import Any, Dict

from typing import Optional

import torch
from ray import tune

from pylrcore.integrations.ray import TrialGuard, report, suggest_lr


def _setup(config: Dict[str, Any], guard: Optional[TrialGuard] = None) -> Any:
    """A linear regression, its loader and SGD at the range test's suggestion x ``lr_multiplier``."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    x = torch.randn(256, 8)
    y = x @ torch.randn(8, 1) + 0.05 * torch.randn(256, 1)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=32, shuffle=True)
    model = torch.nn.Linear(8, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4)
    suggest_lr(model, optimizer, torch.nn.MSELoss(), loader, multiplier=config["lr_multiplier"], start_lr=1e-4,
               end_lr=10, num_iter=config.get("sweep", 40), guard=guard)
    return model, optimizer, torch.nn.MSELoss(), loader


def regression(config: Dict[str, Any]) -> None:
    """The function API: reports the training loss each step (with the guard's metrics) and the
    worker's pid."""
    model, optimizer, loss_fn, loader = _setup(config)
    step = 0
    while step < config["steps"]:
        for xb, yb in loader:
            loss = loss_fn(model(xb), yb)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            # The trainable does not end itself on divergence: the DivergenceStopper must.
            report({"loss": float(loss), "pid": os.getpid()})
            step += 1
            if step == config["steps"]:
                break


class Regression(tune.Trainable):  # type: ignore[misc]
    """The class API: one SGD step per ``step()``, the guard's metrics merged into its result."""

    def setup(self, config: Dict[str, Any]) -> None:
        self.guard = TrialGuard()
        self.model, self.optimizer, self.loss_fn, self.loader = _setup(config, self.guard)
        self.batches = iter(self.loader)

    def step(self) -> Dict[str, Any]:
        try:
            xb, yb = next(self.batches)
        except StopIteration:
            self.batches = iter(self.loader)
            xb, yb = next(self.batches)
        loss = self.loss_fn(self.model(xb), yb)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return {"loss": float(loss), **self.guard.metrics(float(loss))}

    # Tune saves a class trainable when it stops (for resuming): the model's weights are its state.
    def save_checkpoint(self, checkpoint_dir: str) -> None:
        torch.save(self.model.state_dict(), os.path.join(checkpoint_dir, "model.pt"))

    def load_checkpoint(self, checkpoint_dir: str) -> None:
        self.model.load_state_dict(torch.load(os.path.join(checkpoint_dir, "model.pt")))
