"""Lightning: find the LR at the start of fit, then guard every step.

    python examples/lightning_finder_guard.py [--tiny]

FinderCallback runs pylrcore's range test through the module's own training_step, restores
everything, and sets the suggestion on the optimizer and on `module.lr`. GuardCallback skips a
bad step (here a NaN loss planted at step 20) and logs it to the Trainer's logger.
"""

import argparse
import warnings

import pytorch_lightning as pl
import torch

from pylrcore.integrations.lightning import FinderCallback, GuardCallback


class Regression(pl.LightningModule):
    def __init__(self, poison_step: int = 20):
        super().__init__()
        self.lr = 1e-4  # FinderCallback replaces it
        self.poison_step = poison_step
        self.net = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.Tanh(), torch.nn.Linear(32, 1))

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.net(x), y)
        if self.global_step == self.poison_step:
            loss = loss * float("nan")  # a bad batch
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tiny", action="store_true", help="a few seconds on a CPU (used by the tests)")
    args = parser.parse_args()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(512 if args.tiny else 8192, 8, generator=gen)
    y = x[:, :4].sum(1, keepdim=True) + 0.05 * torch.randn(x.shape[0], 1, generator=gen)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=32, shuffle=True)

    finder = FinderCallback(start_lr=1e-5, end_lr=10.0, num_iter=80 if args.tiny else 100, plot=False)
    guard = GuardCallback()
    trainer = pl.Trainer(accelerator="cpu", max_epochs=2 if args.tiny else 10, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         callbacks=[finder, guard])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Lightning's notes about dataloader workers
        trainer.fit(Regression(), loader)
    print(f"range test: {finder.results[0].details}")
    print(f"guard: {guard.guard.summary()}")


if __name__ == "__main__":
    main()
