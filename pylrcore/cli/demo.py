"""Built-in demo: a real LR range test on a small problem generated here (no download, no torch).

A two-layer tanh network on a synthetic 3-class dataset is trained with mini-batch SGD while the
learning rate grows exponentially; the raw losses go through the streaming EMA and the divergence
stop, then pylrcore suggests an lr and the usable range. To show the suggestion means something,
the same network is then trained briefly at the suggested lr and at 3x less and 3x more (with torch:
all three at once, one parallel sweep), and the demo says which trained best.
(The torch-based LRFinder replaces this demo's loop; the analysis is the same.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional, Tuple

import numpy as np

from ..diagnosis import diagnose
from ..plotting import plot_range_test
from ..smoothing import EMA
from .._native import _core
from ..suggestion import DIVERGE_FACTOR, Suggestion, SweepStop, suggest


@dataclass
class Problem:
    x: np.ndarray
    y: np.ndarray
    hidden: int = 32
    classes: int = 3

    def init(self, seed: int) -> List[np.ndarray]:
        rng = np.random.default_rng(seed)
        d = self.x.shape[1]
        return [
            rng.normal(0, 1 / np.sqrt(d), (d, self.hidden)),
            np.zeros(self.hidden),
            rng.normal(0, 1 / np.sqrt(self.hidden), (self.hidden, self.classes)),
            np.zeros(self.classes),
        ]

    def loss_and_grads(self, params: List[np.ndarray], idx: np.ndarray) -> Tuple[float, List[np.ndarray]]:
        w1, b1, w2, b2 = params
        x, y = self.x[idx], self.y[idx]
        with np.errstate(all="ignore"):  # a diverging lr overflows: that is what the sweep looks for
            h = np.tanh(x @ w1 + b1)
            z = h @ w2 + b2
            z = z - z.max(axis=1, keepdims=True)
            p = np.exp(z)
            p /= p.sum(axis=1, keepdims=True)
            loss = float(-np.mean(np.log(p[np.arange(len(y)), y] + 1e-12)))
            dz = p
            dz[np.arange(len(y)), y] -= 1
            dz /= len(y)
            dh = (dz @ w2.T) * (1 - h**2)
            grads = [x.T @ dh, dh.sum(0), h.T @ dz, dz.sum(0)]
        return loss, grads


def make_problem(n: int = 3000, dim: int = 20, seed: int = 0) -> Problem:
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 1.0, (3, dim))
    y = rng.integers(0, 3, n)
    x = centers[y] + rng.normal(0, 1.6, (n, dim))
    return Problem(x=x, y=y)


def range_test(
    problem: Problem,
    start_lr: float = 1e-5,
    end_lr: float = 100.0,
    num_iter: int = 120,
    batch: int = 64,
    diverge_th: float = DIVERGE_FACTOR,
    seed: int = 0,
) -> Tuple[np.ndarray, np.ndarray, Optional[SweepStop]]:
    """The range test on the numpy problem, with the finder's stop rule (the one divergence predicate)."""
    rng = np.random.default_rng(seed)
    params = problem.init(seed)
    smoothed = EMA(0.9, kind="debiased")
    lrs, losses, best = [], [], np.inf
    stop: Optional[SweepStop] = None
    for i in range(num_iter):
        lr = start_lr * (end_lr / start_lr) ** (i / (num_iter - 1))
        loss, grads = problem.loss_and_grads(params, rng.integers(0, len(problem.y), batch))
        lrs.append(lr)
        losses.append(loss)
        if not np.isfinite(loss):
            stop = SweepStop("nonfinite", i, lr, float(loss), best, diverge_th, math.nan)
            break
        s = smoothed.update(loss)
        best = min(best, s)
        threshold = _core.divergence_threshold(best, diverge_th)
        if s > threshold:
            stop = SweepStop("diverged", i, lr, s, best, diverge_th, threshold)
            break
        for p, g in zip(params, grads):
            p -= lr * g
    return np.array(lrs), np.array(losses), stop


def train(problem: Problem, lr: float, steps: int = 300, batch: int = 64, seed: int = 1) -> Tuple[float, np.ndarray]:
    """Mini-batch SGD at a fixed lr: (full-data loss at the end, the loss of every step)."""
    rng = np.random.default_rng(seed)
    params = problem.init(seed)
    history = np.empty(steps)
    for step in range(steps):
        history[step], grads = problem.loss_and_grads(params, rng.integers(0, len(problem.y), batch))
        for p, g in zip(params, grads):
            p -= lr * g
    loss, _ = problem.loss_and_grads(params, np.arange(len(problem.y)))
    return loss, history


def plot(s: Suggestion, path: str, stop: Optional[SweepStop] = None) -> bool:
    """The range-test figure to ``path``; False when matplotlib is not installed."""
    try:
        plot_range_test(s.lrs, s.losses, s, stop=stop, path=path)
    except ImportError:
        return False
    return True


def run(png: Optional[str] = "lr_finder.png", check: bool = True) -> Suggestion:
    """The range test with pylrcore's torch LRFinder when torch is installed, else the numpy loop."""
    try:
        import torch  # noqa: F401
    except ImportError:
        print("(torch is not installed: running the numpy range test; pip install torch==2.13.0 for the LRFinder)")
        return run_numpy(png, check)
    return run_torch(png, check)


def run_torch(png: Optional[str] = "lr_finder.png", check: bool = True) -> Suggestion:
    """pylrcore.LRFinder on the same problem: a 20-32-3 tanh network, SGD, batches of 64."""
    import torch

    from ..torch.finder import LRFinder

    problem = make_problem()
    x = torch.as_tensor(problem.x, dtype=torch.float32)
    y = torch.as_tensor(problem.y, dtype=torch.long)
    data = torch.utils.data.TensorDataset(x, y)

    def network(seed: int) -> torch.nn.Module:
        torch.manual_seed(seed)
        return torch.nn.Sequential(torch.nn.Linear(x.shape[1], 32), torch.nn.Tanh(), torch.nn.Linear(32, 3))

    torch.manual_seed(0)
    loader = torch.utils.data.DataLoader(data, batch_size=64, shuffle=True)
    model = network(0)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-5)
    finder = LRFinder(model, optimizer, torch.nn.CrossEntropyLoss())
    result = finder.range_test(loader, end_lr=100, num_iter=120, progress=False)
    s = result.details
    # The lr where the loss diverged is printed once, by the suggestion's line.
    print(f"range test (pylrcore.LRFinder, torch): {len(result.lrs)} iterations, lr {result.lrs[0]:.2g} -> "
          f"{result.lrs[-1]:.2g}" + (", stopped early" if result.stopped_early else ""))
    print(s)
    print(f"diagnosis: {result.diagnosis}")
    for event in result.printable_events():
        print(f"event: {event}")
    if png:
        try:
            result.plot(png)
            print(f"plot written to {png}")
        except ImportError:
            print("(install matplotlib to get the plot: pip install 'pylrcore[plot]')")
    if check and s.lr is not None:
        # The honest check of a pick is training: the pick, /3 and x3, 300 SGD steps each on the same
        # batches, all three at once (pylrcore.sweep), scored by the full-data loss at the end.
        checked = finder.confirm(loader, factors=(1 / 3, 1.0, 3.0), steps=300, val_loader=[(x, y)])
        print("check: 300 SGD steps at the pick, /3 and x3 (one parallel sweep); full-data loss at the end, "
              "and pylrcore's diagnosis of each run")
        for label, lr, score, found in zip(("suggested / 3", "suggested", "suggested x 3"), checked.lrs,
                                           checked.scores, checked.diagnoses):
            print(f"  {label:>14} lr {lr:9.3g}: loss {score:.4f}  | {found if found is not None else 'diverged'}")
        best = int(np.argmin(checked.scores))
        verdict = ("the pick trained best" if best == 1 else
                   f"{('/3', '', 'x3')[best]} of the pick trained best: the pick is within 3x of the best lr here")
        print(f"  -> {verdict}")
    return s


def run_numpy(png: Optional[str] = "lr_finder.png", check: bool = True) -> Suggestion:
    problem = make_problem()
    lrs, losses, stop = range_test(problem)
    s = suggest(lrs, losses)
    print(f"range test: {len(lrs)} iterations, lr {lrs[0]:.2g} -> {lrs[-1]:.2g}" + (", stopped early" if stop else ""))
    print(s)
    if png and plot(s, png, stop):
        print(f"plot written to {png}")
    elif png:
        print("(install matplotlib to get the plot: pip install 'pylrcore[plot]')")
    if check and s.ok and s.lr is not None:
        print("check: 300 SGD steps at the pick, /3 and x3; full-data loss at the end, and pylrcore's diagnosis of the run")
        finals = []
        for label, lr in (("suggested / 3", s.lr / 3), ("suggested", s.lr), ("suggested x 3", s.lr * 3)):
            final, history = train(problem, lr)
            finals.append(final)
            print(f"  {label:>14} lr {lr:9.3g}: loss {final:.4f}  | {diagnose(history, lr=lr)}")
        best = int(np.argmin(finals))
        print("  -> " + ("the pick trained best" if best == 1 else f"{('/3', '', 'x3')[best]} of the pick trained best"))
    return s
