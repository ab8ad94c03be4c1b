"""The Keras integration on another backend (argv[1]: jax or tensorflow), run as a subprocess by
test_integrations_keras.py because Keras picks its backend once, at import. Prints one JSON line."""

from __future__ import annotations

import json
import os
import sys

os.environ["KERAS_BACKEND"] = sys.argv[1]

import keras  # noqa: E402
import numpy as np  # noqa: E402

from pylrcore import schedules as S  # noqa: E402
from pylrcore.integrations.keras import GuardCallback, KerasSchedule, find  # noqa: E402


def values(variables):
    return [np.array(keras.ops.convert_to_numpy(v.value), copy=True) for v in variables]


def model_with(optimizer):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(64, activation="relu"), keras.layers.Dense(1)])
    model.compile(optimizer=optimizer, loss="mse")
    return model


rng = np.random.default_rng(0)
x = rng.normal(size=(640, 8)).astype("float32")
y = (x @ rng.normal(size=(8, 1))).astype("float32")
out = {"backend": keras.backend.backend()}

# The range test, restored bit for bit; then with a schedule-driven optimizer (the sweep must still
# sweep inside the traced step).
model = model_with(keras.optimizers.Adam(1e-3))
model.fit(x, y, batch_size=32, epochs=1, steps_per_epoch=3, verbose=0)
before, opt_before = values(model.variables), values(model.optimizer.variables)
result = find(model, x, y, num_iter=80)
out["suggestion"], out["zone"], out["stopped_early"] = result.suggestion, result.zone, result.stopped_early
out["restored"] = all(a.tobytes() == b.tobytes() for a, b in zip(before + opt_before,
                                                                 values(model.variables) + values(model.optimizer.variables)))
sched = KerasSchedule(S.warmup(5) >> S.cosine(20, eta_min=1e-5), base_lr=0.05)
model = model_with(keras.optimizers.SGD(sched))
swept = find(model, x, y, num_iter=80)
out["schedule_sweep_stopped_early"] = swept.stopped_early
out["schedule_kept"] = model.optimizer._learning_rate is sched

# The schedule inside the traced train step: the lr the optimizer used at each step.
seen = []


class Record(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        # after step k the iteration counter is k+1: the lr applied at step k is the schedule at k
        seen.append(float(keras.ops.convert_to_numpy(sched(int(keras.ops.convert_to_numpy(self.model.optimizer.iterations)) - 1))))


model = model_with(keras.optimizers.SGD(sched))
weights = []
model.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0, callbacks=[Record()])
# Replay with plain SGD at those lrs, step by step: the same weights if the traced lookup was used.
replay = model_with(keras.optimizers.SGD(0.05))
for k, lr in enumerate(seen):
    replay.optimizer.learning_rate = lr
    replay.train_on_batch(x[32 * k:32 * (k + 1)], y[32 * k:32 * (k + 1)])
out["schedule_replay_max_diff"] = max(float(np.max(np.abs(a - b))) for a, b in zip(values(model.trainable_variables),
                                                                                  values(replay.trainable_variables)))
out["expected_lrs_match"] = bool(np.allclose(seen, sched.schedule(np.arange(len(seen)), 0.05), rtol=1e-6))

# The guard stops on a NaN batch.
y_bad = y.copy()
y_bad[320:352] = np.nan
model = model_with(keras.optimizers.Adam(1e-3))
guard = GuardCallback("stop")
batches = []
model.fit(x, y_bad, batch_size=32, epochs=1, shuffle=False, verbose=0,
          callbacks=[guard, keras.callbacks.LambdaCallback(on_train_batch_end=lambda b, logs: batches.append(b))])
out["guard_events"] = [(e.step, e.kind, e.action) for e in guard.events]
out["guard_batches"] = len(batches)
print(json.dumps(out))
