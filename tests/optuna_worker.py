"""One worker of tests/test_integrations_optuna.py's shared-study test (run as a script, several
copies at once): trials of a tiny regression whose lr comes from suggest_lr, pruned by the
DivergencePruner, in a study kept in an Optuna journal file.

Usage: python optuna_worker.py JOURNAL STUDY N_TRIALS SEED

A trial enqueued with the user attribute ``diverge`` trains at 1000x the suggested lr.
"""

from __future__ import annotations

import sys

import optuna
import torch

from pylrcore.integrations.optuna import DivergencePruner, suggest_lr


def main(journal: str, study_name: str, n_trials: int, seed: int) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    torch.set_num_threads(1)  # two workers share two cores
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(journal))
    pruner = DivergencePruner()
    study = optuna.load_study(study_name=study_name, storage=storage, pruner=pruner,
                              sampler=optuna.samplers.RandomSampler(seed=seed))

    def objective(trial: optuna.Trial) -> float:
        torch.manual_seed(trial.number)
        x = torch.randn(256, 8)
        y = x @ torch.randn(8, 1) + 0.1 * torch.randn(256, 1)
        loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=32, shuffle=True)
        model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
        loss_fn = torch.nn.MSELoss()
        multiplier = 1000.0 if trial.user_attrs.get("diverge") else trial.suggest_float("multiplier", 0.3, 1.0)
        suggest_lr(trial, model, optimizer, loss_fn, loader, end_lr=10.0, num_iter=60, multiplier=multiplier)
        step = 0
        for _ in range(3):
            for xb, yb in loader:
                loss = loss_fn(model(xb), yb)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                trial.report(loss.item(), step)
                if trial.should_prune():
                    trial.set_user_attr("pruned_because", pruner.reasons.get(trial.number, ""))
                    raise optuna.TrialPruned()
                step += 1
        trial.set_user_attr("worker", seed)
        return float(loss.item())

    study.optimize(objective, n_trials=n_trials)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
