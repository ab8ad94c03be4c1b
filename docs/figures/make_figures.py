"""The figures of README and the docs, from data that ships with scikit-learn (no download):

    python docs/figures/make_figures.py

range_test.png: a range test of a small MLP (SGD + momentum) on the handwritten digits, with the
suggestion and the usable range; parallel_sweep.png: that suggestion confirmed by training six
copies at once (pick x 1/10 .. 4.6, 300 steps), ranked by validation loss.
"""

from __future__ import annotations

from pathlib import Path

import torch
from sklearn.datasets import load_digits

from pylrcore import LRFinder

HERE = Path(__file__).resolve().parent


def main() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    digits = load_digits()
    x = torch.tensor(digits.data / 16.0, dtype=torch.float32)
    y = torch.tensor(digits.target)
    order = torch.randperm(len(x))
    train, val = order[:1400], order[1400:]
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x[train], y[train]), batch_size=32,
                                         shuffle=True)
    val_loader = [(x[val], y[val])]
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    finder = LRFinder(model, optimizer, torch.nn.CrossEntropyLoss())
    result = finder.range_test(loader, end_lr=10, num_iter=100, progress=False)
    result.plot(str(HERE / "range_test.png"))
    print(result.details)
    confirmed = finder.confirm(loader, result, val_loader=val_loader)
    confirmed.plot(str(HERE / "parallel_sweep.png"))
    print(f"confirmed: {confirmed.best_lr:.3g} (pick {result.suggestion:.3g})")


if __name__ == "__main__":
    main()
