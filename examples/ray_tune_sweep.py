"""A Ray Tune sweep where each trial's lr comes from a short LR range test on the trial's worker,
a multiplier around the suggestion is what Tune searches, and diverging trials are stopped as soon
as their loss goes NaN or explodes (ASHA still stops the merely poor ones).

    python examples/ray_tune_sweep.py [--tiny] [--trials N] [--address auto]

Without --address it starts a local Ray instance; with ``--address auto`` (after ``ray start
--head`` on one machine and ``ray start --address HEAD:6379`` on the others) the same script runs
its trials across the cluster. Results go under --storage (default ~/ray_results).
"""

from __future__ import annotations

import argparse
import os
from typing import Any, Dict

import torch


def data(seed: int = 0) -> torch.utils.data.TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1024, 16, generator=g)
    y = x[:, :4].sum(1, keepdim=True) + torch.sin(2 * x[:, 4:8]).sum(1, keepdim=True)
    y += 0.1 * torch.randn(1024, 1, generator=g)
    return torch.utils.data.TensorDataset(x, y)


def trainable(config: Dict[str, Any]) -> None:
    from pylrcore.integrations.ray import report, suggest_lr

    torch.set_num_threads(1)
    torch.manual_seed(0)
    loader = torch.utils.data.DataLoader(data(), batch_size=64, shuffle=True)
    model = torch.nn.Sequential(torch.nn.Linear(16, config["width"]), torch.nn.ReLU(), torch.nn.Linear(config["width"], 1))
    optimizer = torch.optim.AdamW(model.parameters(), weight_decay=config["weight_decay"])
    loss_fn = torch.nn.MSELoss()
    # The range test sets the optimizer's lr; its curve and verdict go into the trial's first result.
    suggest_lr(model, optimizer, loss_fn, loader, start_lr=1e-5, end_lr=10, num_iter=config["sweep"],
               multiplier=config["lr_multiplier"])
    for _ in range(config["epochs"]):
        for x, y in loader:
            loss = loss_fn(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if report({"loss": float(loss)}):
                return  # diverged: the stopper ends the trial too, this just saves the rest of the epoch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="a short run on 2 CPUs")
    parser.add_argument("--trials", type=int, default=None)
    parser.add_argument("--address", default=None, help="a running Ray cluster ('auto', or HEAD:6379)")
    parser.add_argument("--storage", default=None, help="where Tune writes its results (an absolute path or URI)")
    opts = parser.parse_args()
    trials = opts.trials or (4 if opts.tiny else 32)

    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    from pylrcore.integrations.ray import ATTR_PREFIX, DivergenceStopper, search_space

    if opts.address:
        ray.init(address=opts.address)
    else:
        ray.init(num_cpus=2 if opts.tiny else None, include_dashboard=False, log_to_driver=False)
    space = {**search_space(0.1, 10.0), "width": tune.choice([32, 64, 128]),
             "weight_decay": tune.loguniform(1e-4, 0.1), "epochs": 1 if opts.tiny else 10, "sweep": 100}
    stopper = DivergenceStopper("loss")
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": 1}),
        param_space=space,
        tune_config=tune.TuneConfig(metric="loss", mode="min", num_samples=trials,
                                    scheduler=ASHAScheduler(grace_period=8, max_t=10_000)),
        run_config=tune.RunConfig(name="pylrcore-sweep", stop=stopper, verbose=0,
                                  storage_path=opts.storage and os.path.abspath(opts.storage)),
    )
    grid = tuner.fit()
    ray.shutdown()
    best = grid.get_best_result(filter_nan_and_inf=True)
    print(f"{len(grid)} trials: {len(stopper.reasons)} stopped as diverging, {len(grid.errors)} errors")
    print(f"best: loss {best.metrics['loss']:.4f} with width {best.config['width']}, "
          f"lr {best.metrics[ATTR_PREFIX + 'lr']:.3g} ({best.config['lr_multiplier']:.2f} x the suggestion; "
          f"range test: {best.metrics[ATTR_PREFIX + 'diagnosis']})")


if __name__ == "__main__":
    main()
