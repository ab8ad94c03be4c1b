"""A plain PyTorch loop with a pylrcore schedule and the guard, events to TensorBoard if installed.

    python examples/plain_loop_guard.py [--tiny] [--logdir runs/guard]

The guard skips a step with a NaN gradient (planted at step 30), halves the LR through the schedule
on a loss spike, and prints a summary; with tensorboard installed, the events and the loss are in
--logdir (`tensorboard --logdir runs`).
"""

import argparse

import torch

from pylrcore import schedules as S
from pylrcore.integrations import event_logger
from pylrcore.torch import Guard, Scheduler


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tiny", action="store_true", help="a few seconds on a CPU (used by the tests)")
    parser.add_argument("--logdir", default=None, help="TensorBoard log folder (needs tensorboard)")
    args = parser.parse_args()
    steps = 300 if args.tiny else 3000

    torch.manual_seed(0)
    x = torch.randn(4096, 16)
    y = (x[:, :4].sum(1) > 0).long()
    model = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.ReLU(), torch.nn.Linear(64, 2))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    scheduler = Scheduler(optimizer, S.warmup(steps // 10) >> S.cosine(steps))
    writer = None
    if args.logdir:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(args.logdir)
    guard = Guard(optimizer, model, scheduler=scheduler, policy={"loss_spike": "scale_lr"},
                  on_event=event_logger(writer))

    for step in range(steps):
        idx = torch.randint(0, x.shape[0], (64,))
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
        loss.backward()
        if step == 30:
            model[0].weight.grad[0, 0] = float("nan")  # a corrupted gradient
        guard.check(loss)
        optimizer.step()
        scheduler.step()
        if writer is not None:
            writer.add_scalar("train/loss", loss.item(), step)
    if writer is not None:
        writer.close()
    print(guard.summary())


if __name__ == "__main__":
    main()
