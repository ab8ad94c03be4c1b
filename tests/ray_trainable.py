"""The Tune trainable of the Ray cluster test, in its own module: Ray's workers import it by name
(tests/ is on their PYTHONPATH), so it is not pickled from a test module they cannot import."""

from __future__ import annotations

import os
from typing import Any, Dict

import torch

from pylrcore.integrations.ray import report, suggest_lr


def regression(config: Dict[str, Any]) -> None:
    """A linear regression trained with SGD at the range test's suggestion x ``lr_multiplier``;
    reports the training loss each step (with the guard's metrics) and the worker's pid."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    x = torch.randn(256, 8)
    y = x @ torch.randn(8, 1) + 0.05 * torch.randn(256, 1)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=32, shuffle=True)
    model = torch.nn.Linear(8, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4)
    loss_fn = torch.nn.MSELoss()
    suggest_lr(model, optimizer, loss_fn, loader, multiplier=config["lr_multiplier"], start_lr=1e-4, end_lr=10,
               num_iter=config.get("sweep", 40))
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
