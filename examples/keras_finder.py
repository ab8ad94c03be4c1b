"""The seed's Keras LR finder through pylrcore: Dense(64, relu) + Dense(1), Adam, MSE; a range test
on train_on_batch, the suggestion and usable range, then training with a pylrcore schedule (warmup
then cosine, from the suggestion) as a Keras LearningRateSchedule, watched by the GuardCallback.

    KERAS_BACKEND=torch python examples/keras_finder.py [--tiny] [--plot lr.png]

Any Keras 3 backend works (torch, jax, tensorflow); this script defaults to torch.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("KERAS_BACKEND", "torch")  # before keras is imported

import keras  # noqa: E402
import numpy as np  # noqa: E402

from pylrcore import schedules as S  # noqa: E402
from pylrcore.integrations.keras import GuardCallback, KerasSchedule, find  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="a few seconds on a CPU")
    parser.add_argument("--plot", help="write the range test's figure here (needs matplotlib)")
    opts = parser.parse_args()
    n, epochs = (1024, 2) if opts.tiny else (8192, 10)

    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 16)).astype("float32")
    y = (x[:, :4].sum(1, keepdims=True) + np.sin(2 * x[:, 4:8]).sum(1, keepdims=True)).astype("float32")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((16,)), keras.layers.Dense(64, activation="relu"), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(), loss="mse")

    result = find(model, x, y, batch_size=32, start_lr=1e-7, end_lr=1, num_iter=100)
    print(f"range test: suggested lr {result.suggestion:.3g}; {result.diagnosis}")
    if opts.plot:
        result.plot(opts.plot)

    steps = epochs * (n // 32)
    schedule = S.warmup(steps // 10) >> S.cosine(steps - steps // 10, eta_min=1e-5)
    model.compile(optimizer=keras.optimizers.Adam(KerasSchedule(schedule, base_lr=result.suggestion)), loss="mse")
    guard = GuardCallback("stop")
    history = model.fit(x, y, batch_size=32, epochs=epochs, verbose=0, callbacks=[guard])
    print(f"trained {epochs} epochs with {schedule!r} from lr {result.suggestion:.3g}: "
          f"loss {history.history['loss'][0]:.4f} -> {history.history['loss'][-1]:.4f}; guard: {len(guard.events)} events")


if __name__ == "__main__":
    main()
