"""A Hugging Face Trainer with pylrcore: find the lr with a range test, then train under the guard.

The model is a small GPT-2 built from its config (random weights, nothing downloaded) learning to
continue counting sequences. ``--tiny`` runs a few seconds on a CPU.

    python examples/transformers_guard.py [--tiny]
"""

from __future__ import annotations

import argparse
import tempfile

import torch
from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments

from pylrcore.integrations.transformers import GuardCallback, find_lr


class Counting(torch.utils.data.Dataset):
    """Sequences k, k+1, k+2, ... (mod vocab), which are their own labels."""

    def __init__(self, n: int, length: int, vocab: int) -> None:
        starts = torch.randint(0, vocab, (n, 1), generator=torch.Generator().manual_seed(0))
        self.ids = (starts + torch.arange(length)) % vocab

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="a few seconds on a CPU")
    tiny = parser.parse_args().tiny
    width, layers, steps, sweep = (16, 1, 20, 30) if tiny else (64, 2, 300, 100)

    torch.manual_seed(0)
    config = GPT2Config(vocab_size=32, n_positions=16, n_embd=width, n_layer=layers, n_head=2,
                        bos_token_id=0, eos_token_id=0)
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(output_dir=out, use_cpu=True, report_to=[], max_steps=steps, logging_steps=10,
                                 per_device_train_batch_size=16, save_strategy="no", disable_tqdm=True)
        guard = GuardCallback(policy={"loss_spike": "skip"})
        trainer = Trainer(model=GPT2LMHeadModel(config), args=args, train_dataset=Counting(512, 16, 32),
                          callbacks=[guard])

        # The range test runs on the Trainer's own data, optimizer settings and loss; the model is
        # restored afterwards, and apply=True makes the suggestion the Trainer's learning_rate.
        result = find_lr(trainer, start_lr=1e-5, end_lr=1.0, num_iter=sweep, apply=True)
        print(f"range test: {result.diagnosis}")

        trainer.train()
        print(f"guard: {guard.guard.summary()}")
        print(f"final loss: {[e['loss'] for e in trainer.state.log_history if 'loss' in e][-1]:.3f}")


if __name__ == "__main__":
    main()
