"""Synthetic range-test curves shared by the tests (valley, noisy, diverging, NaN)."""

from __future__ import annotations

import numpy as np
import pytest


def lr_ladder(n: int = 100, start: float = 1e-6, end: float = 10.0) -> np.ndarray:
    """torch-lr-finder's exponential ladder: start*(end/start)**(i/(n-1))."""
    return start * (end / start) ** (np.arange(n) / max(n - 1, 1))


def valley(lrs: np.ndarray, center: float = 1e-3, width: float = 0.5, rise_at: float = 0.1) -> np.ndarray:
    """A loss that is flat, falls as a logistic in log10(lr) centred on `center` (steepest there),
    then rises quadratically past `rise_at`."""
    x = np.log10(lrs)
    fall = 2.3 - 1.8 / (1 + np.exp(-(x - np.log10(center)) / width))
    rise = np.where(x > np.log10(rise_at), 8 * (x - np.log10(rise_at)) ** 2, 0.0)
    return fall + rise


def noisy_valley(lrs: np.ndarray, seed: int, noise: float = 0.05, **kw: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return valley(lrs, **kw) + rng.normal(0.0, noise, lrs.size)


def torch_lr_finder_history(raw: np.ndarray, smooth_f: float = 0.05) -> np.ndarray:
    """What torch-lr-finder records (its smoothed loss), written out as its loop does it."""
    out = []
    for i, loss in enumerate(raw):
        if i > 0:
            loss = smooth_f * loss + (1 - smooth_f) * out[-1]
        out.append(float(loss))
    return np.array(out)


def torch_mlp(lr: float = 0.05, steps: int = 3000, seed: int = 0) -> np.ndarray:
    """Losses of a real small training run: a 10-32-2 MLP, SGD, batch 64, 3000 steps by default."""
    torch = pytest.importorskip("torch")
    gen = torch.Generator().manual_seed(seed)
    inputs = torch.randn(4096, 10, generator=gen)
    labels = (torch.tanh(inputs @ torch.randn(10, 1, generator=gen)) + 0.3 * torch.randn(4096, 1, generator=gen) > 0)
    labels = labels.long().squeeze(1)
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(10, 32), torch.nn.ReLU(), torch.nn.Linear(32, 2))
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    losses = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: extra threads only spin on shared, busy cores
    try:
        for _ in range(steps):
            idx = torch.randint(0, 4096, (64,), generator=gen)
            loss = torch.nn.functional.cross_entropy(model(inputs[idx]), labels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
    finally:
        torch.set_num_threads(threads)
    return np.asarray(losses)
