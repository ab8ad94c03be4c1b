"""Small training tasks shared by the integration tests (torch imported by the caller first)."""

from __future__ import annotations

from typing import Any, Tuple


def linear_regression(seed: int = 0) -> Tuple[Any, Any, Any]:
    """A linear model on a noiseless linear target: (model, SGD at lr 1e-5, a loader of 8 batches)."""
    import torch

    torch.manual_seed(seed)
    x = torch.randn(256, 8)
    y = x @ torch.randn(8, 1)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=32)
    model = torch.nn.Linear(8, 1)
    return model, torch.optim.SGD(model.parameters(), lr=1e-5), loader
