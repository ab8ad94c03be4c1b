"""An Optuna sweep where each trial's lr comes from a short LR range test, and diverging trials are
pruned as soon as their loss goes NaN or explodes.

The sampler tunes the width, the weight decay and a multiplier around the range test's suggestion
(not the raw lr, whose good range moves with the other choices). With ``--storage FILE`` the study
lives in an Optuna journal file (Optuna >= 4.0): start the script in several terminals (or on
several machines sharing the file) and they work on the one study.

    python examples/optuna_sweep.py [--tiny] [--trials N] [--storage sweep.journal]
"""

from __future__ import annotations

import argparse

import optuna
import torch

from pylrcore.integrations.optuna import ATTR_PREFIX, DivergencePruner, suggest_lr


def data(seed: int = 0) -> torch.utils.data.TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1024, 16, generator=g)
    y = x[:, :4].sum(1, keepdim=True) + torch.sin(2 * x[:, 4:8]).sum(1, keepdim=True)
    y += 0.1 * torch.randn(1024, 1, generator=g)
    return torch.utils.data.TensorDataset(x, y)


def objective(trial: optuna.Trial, epochs: int, sweep: int) -> float:
    torch.manual_seed(trial.number)
    loader = torch.utils.data.DataLoader(data(), batch_size=64, shuffle=True)
    width = trial.suggest_categorical("width", [32, 64, 128])
    model = torch.nn.Sequential(torch.nn.Linear(16, width), torch.nn.ReLU(), torch.nn.Linear(width, 1))
    weight_decay = trial.suggest_float("weight_decay", 1e-4, 0.1, log=True)
    optimizer = torch.optim.AdamW(model.parameters(), weight_decay=weight_decay)
    loss_fn = torch.nn.MSELoss()

    # The range test sets the optimizer's lr (and records its curve as trial user attributes).
    suggest_lr(trial, model, optimizer, loss_fn, loader, start_lr=1e-5, end_lr=10, num_iter=sweep,
               multiplier=trial.suggest_float("lr_multiplier", 0.1, 10, log=True))

    step = 0
    for _ in range(epochs):
        for x, y in loader:
            loss = loss_fn(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            trial.report(loss.item(), step)
            if trial.should_prune():
                raise optuna.TrialPruned()
            step += 1
    with torch.no_grad():
        x, y = data(seed=1).tensors
        return float(loss_fn(model(x), y))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="a few seconds on a CPU")
    parser.add_argument("--trials", type=int, default=None)
    parser.add_argument("--storage", help="an Optuna journal file shared by several copies of this script")
    parser.add_argument("--study", default="pylrcore-sweep")
    opts = parser.parse_args()
    trials = opts.trials or (4 if opts.tiny else 30)
    epochs, sweep = (1, 60) if opts.tiny else (10, 100)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = (optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(opts.storage))
               if opts.storage else None)
    study = optuna.create_study(study_name=opts.study, storage=storage, load_if_exists=True,
                                pruner=DivergencePruner(optuna.pruners.MedianPruner(n_warmup_steps=len(data()) // 64)))
    study.optimize(lambda trial: objective(trial, epochs, sweep), n_trials=trials)

    states = [t.state.name for t in study.trials]
    print(f"{len(states)} trials: {states.count('COMPLETE')} complete, {states.count('PRUNED')} pruned")
    best = study.best_trial
    print(f"best: validation loss {best.value:.4f} with {best.params}, "
          f"lr {best.user_attrs[ATTR_PREFIX + 'lr']:.3g} (range test: {best.user_attrs[ATTR_PREFIX + 'diagnosis']})")


if __name__ == "__main__":
    main()
