"""Keras 3: the LR range test for a compiled Keras model (:func:`find`, or :class:`FinderCallback`
when ``fit`` starts), any pylrcore schedule as a Keras ``LearningRateSchedule``, and a
:class:`GuardCallback` that watches the batch losses of ``fit``.

>>> from pylrcore.integrations.keras import find, KerasSchedule, GuardCallback    # doctest: +SKIP
>>> model.compile(optimizer=keras.optimizers.Adam(), loss="mse")                  # doctest: +SKIP
>>> result = find(model, x, y, batch_size=32, start_lr=1e-7, end_lr=10)          # doctest: +SKIP
>>> result.suggestion, result.zone, result.diagnosis; result.plot("lr.png")       # doctest: +SKIP
>>> sched = KerasSchedule(S.warmup(100) >> S.cosine(900), base_lr=result.suggestion)  # doctest: +SKIP
>>> model.compile(optimizer=keras.optimizers.Adam(sched), loss="mse")             # doctest: +SKIP
>>> model.fit(x, y, callbacks=[GuardCallback(policy="stop")])                     # doctest: +SKIP

Backend-agnostic: values cross the boundary as numpy (``keras.ops.convert_to_numpy``), so the same
code runs on the PyTorch, JAX and TensorFlow backends; it is tested on PyTorch. The finder's result
is the torch finder's :class:`~pylrcore.FinderResult` (lrs, losses, smoothed, suggestion, zone,
diagnosis, events, plot, to_json), computed by the same stop rule, detector and suggestion. The
result classes live in :mod:`pylrcore.torch.finder`, which imports torch: torch (CPU is enough) must be
installed whatever the Keras backend.
"""

from __future__ import annotations

import inspect
import math
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np

from . import require

def _import_keras() -> Any:
    import importlib
    import importlib.util

    if importlib.util.find_spec("keras") is None:
        return require(("keras",), "keras", "pylrcore.integrations.keras")  # its error names the extra
    try:
        return importlib.import_module("keras")
    except ImportError as e:  # installed, but its backend is not (Keras defaults to TensorFlow)
        import os

        raise ImportError(
            f"keras is installed but did not import with its backend ({os.environ.get('KERAS_BACKEND', 'tensorflow')}"
            f"): {e}. Set KERAS_BACKEND to an installed backend (torch, jax or tensorflow) before importing keras"
        ) from e


keras = _import_keras()
try:
    import torch  # noqa: F401  (pylrcore.torch.finder's result classes import it, whatever the Keras backend)
except ImportError:
    raise ImportError(
        "pylrcore.integrations.keras needs torch for the range test's result classes, whatever the Keras "
        "backend; the CPU build is enough: pip install torch --index-url https://download.pytorch.org/whl/cpu"
    ) from None

from .._checks import check_int, check_real  # noqa: E402  (after the framework check: its error names the extra)
from ..detect import DEFAULTS as DETECTOR_DEFAULTS, Detector, Flag  # noqa: E402
from ..torch.finder import cut_factor, FinderResult, LRFinder as _TorchFinder, SweepEvent, SweepStop, diagnose_sweep, Ladder, SweepRecord  # noqa: E402
from ..torch.guard import GuardEvent, describe_event  # noqa: E402
from ..schedules import Schedule  # noqa: E402
from ..suggestion import COMPAT_METHODS, DEFAULT_METHOD, METHODS, suggest  # noqa: E402

__all__ = ["find", "LRFinder", "FinderCallback", "KerasSchedule", "GuardCallback"]

# The torch finder's defaults, read from its signature so that both finders keep one meaning.
_TORCH_DEFAULTS = {name: p.default for name, p in inspect.signature(_TorchFinder.range_test).parameters.items()}


# ---- the range test --------------------------------------------------------------------------------


def _numpy_copy(variable: Any) -> np.ndarray:
    # convert_to_numpy of a CPU torch tensor shares its memory: a later assign would change the copy.
    return np.array(keras.ops.convert_to_numpy(variable.value), copy=True)


class _State:
    """Exact copies of the model's variables (weights, non-trainable state, seed-generator states)
    and the optimizer's (iterations, lr, moments), put back with ``assign``; nothing goes to disk."""

    def __init__(self, model: Any) -> None:
        self.variables = list(model.variables) + list(model.optimizer.variables)
        self.values = [_numpy_copy(v) for v in self.variables]

    def restore(self) -> None:
        for variable, value in zip(self.variables, self.values):
            variable.assign(value)


class _Batches:
    """Batches ``(x, y, sample_weight)`` from arrays (cut in ``batch_size`` slices, shuffled once per
    pass with ``seed``), a ``keras.utils.PyDataset`` (indexed, started again at its end) or any
    iterable of batches (started again at its end when it can be; a generator that ends ends the test)."""

    def __init__(self, x: Any, y: Any, sample_weight: Any, batch_size: int, shuffle: bool, seed: int) -> None:
        self.arrays = not (isinstance(x, keras.utils.PyDataset) or _is_iterable_of_batches(x))
        self.rng = np.random.default_rng(seed)
        self.shuffle = shuffle
        self.source = x
        self.y, self.sample_weight, self.batch_size = y, sample_weight, batch_size
        if self.arrays:
            self.n = len(keras.tree.flatten(x)[0])
            if self.n == 0:
                raise ValueError("x is empty: there is no batch to train on")
        self.it: Optional[Iterator[Any]] = None

    def _array_batches(self) -> Iterator[Tuple[Any, Any, Any]]:
        order = self.rng.permutation(self.n) if self.shuffle else np.arange(self.n)
        for a in range(0, self.n, self.batch_size):
            idx = order[a:a + self.batch_size]
            yield _take(self.source, idx), _take(self.y, idx), _take(self.sample_weight, idx)

    def _dataset_batches(self) -> Iterator[Tuple[Any, Any, Any]]:
        dataset = self.source
        for i in range(len(dataset)):
            yield _unpack(dataset[i])
        dataset.on_epoch_end()

    def _iterable_batches(self) -> Iterator[Tuple[Any, Any, Any]]:
        for batch in self.source:
            yield _unpack(batch)

    def _start(self) -> Iterator[Tuple[Any, Any, Any]]:
        if self.arrays:
            return self._array_batches()
        if isinstance(self.source, keras.utils.PyDataset):
            return self._dataset_batches()
        return self._iterable_batches()

    def next(self) -> Optional[Tuple[Any, Any, Any]]:
        """The next batch, or None when a one-shot iterable (a generator) has ended."""
        if self.it is None:
            self.it = self._start()
        try:
            return next(self.it)
        except StopIteration:
            if not self.arrays and iter(self.source) is self.source:  # a generator: cannot start again
                return None
            self.it = self._start()
            try:
                return next(self.it)
            except StopIteration:
                raise ValueError("the data yielded no batch") from None


def _take(data: Any, idx: np.ndarray) -> Any:
    return None if data is None else keras.tree.map_structure(lambda v: np.asarray(v)[idx], data)


def _is_iterable_of_batches(x: Any) -> bool:
    if isinstance(x, (np.ndarray, list, tuple, dict)) or hasattr(x, "__array__"):
        return False
    return hasattr(x, "__iter__") or hasattr(x, "__next__")


def _unpack(batch: Any) -> Tuple[Any, Any, Any]:
    if isinstance(batch, list) and len(batch) <= 3:  # a torch DataLoader's [x, y]: Keras's fit reads it so too
        batch = tuple(batch)
    if isinstance(batch, tuple):
        if len(batch) == 1:
            return batch[0], None, None
        if len(batch) == 2:
            return batch[0], batch[1], None
        if len(batch) == 3:
            return batch[0], batch[1], batch[2]
        raise ValueError(f"a batch must be x, (x,), (x, y) or (x, y, sample_weight); got a tuple of {len(batch)}")
    return batch, None, None


class _LearningRate:
    """Sets the optimizer's lr during the sweep. A float lr is a variable, assigned (and restored with
    the other optimizer variables). An lr given as a schedule or callable is replaced for the sweep
    by a tracked lr variable, as a float lr would have: a traced train step (JAX, tf.function) reads
    variables at every call, but a callable only once, when it is traced. The original is put back
    after the sweep."""

    def __init__(self, optimizer: Any) -> None:
        self.optimizer = optimizer
        self.original = optimizer._learning_rate
        self.variable: Any = self.original if isinstance(self.original, keras.Variable) else None
        self.swapped = False

    def set(self, lr: float) -> None:
        if self.variable is None:
            # Keras refuses a float over a schedule; a variable of its own, tracked as the optimizer
            # tracks its float lr, goes into the traced step's state like the other variables.
            self.variable = keras.Variable(lr, name="learning_rate", dtype=keras.config.floatx(), trainable=False)
            self.optimizer._track_variable(self.variable)
            self.optimizer._learning_rate = self.variable
            self.swapped = True
        self.variable.assign(lr)

    def restore(self) -> None:
        if self.swapped:
            self.optimizer._untrack_variable(self.variable)
            self.optimizer._learning_rate = self.original


def find(
    model: Any,
    x: Any,
    y: Any = None,
    *,
    batch_size: int = 32,
    sample_weight: Any = None,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    num_iter: int = 100,
    step_mode: str = "exp",
    smooth_f: float = 0.05,
    diverge_th: Optional[float] = None,
    method: str = DEFAULT_METHOD,
    shuffle: bool = True,
    seed: int = 0,
) -> FinderResult:
    """Run the LR range test on a compiled Keras ``model`` and return a :class:`~pylrcore.FinderResult`.

    Each of ``num_iter`` steps is one ``model.train_on_batch`` at the next lr of the ladder
    (``start_lr`` to ``end_lr``, geometric for ``step_mode="exp"``). ``x`` is an array (or a
    list/dict of arrays, with ``y`` and ``sample_weight`` alike), cut into ``batch_size`` batches and
    started again when it runs out; or a ``keras.utils.PyDataset`` or iterable of batches (``x``,
    ``(x, y)`` or ``(x, y, sample_weight)``), where ``y`` and ``sample_weight`` must be None.

    As in :meth:`pylrcore.LRFinder.range_test` (same meaning, same defaults): the recorded loss is
    smoothed by an EMA (``smooth_f``), the test stops when the smoothed loss passes ``diverge_th`` x
    its best (default: the torch finder's) or a loss is NaN/inf, and the suggestion (``method``) and usable range come from
    :func:`pylrcore.suggest`. The model's variables and the optimizer's are restored exactly after
    the test, also when it raises (an unbuilt optimizer is built first, as its first step would).
    """
    if getattr(model, "optimizer", None) is None or not getattr(model, "compiled", True):
        raise ValueError("model must be compiled with an optimizer and a loss: model.compile(optimizer=..., loss=...)")
    start, end = check_real(start_lr, "start_lr"), check_real(end_lr, "end_lr")
    if not (0 < start < end):
        raise ValueError(f"need 0 < start_lr < end_lr (the test sweeps the lr up), got {start_lr!r} and {end_lr!r}")
    n = check_int(num_iter, "num_iter", minimum=2)
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    if step_mode not in ("exp", "linear"):
        raise ValueError(f"step_mode must be 'exp' or 'linear', got {step_mode!r}")
    f = check_real(smooth_f, "smooth_f")
    if not 0 <= f < 1:
        raise ValueError(f"smooth_f must be in [0, 1) (0 disables smoothing), got {smooth_f!r}")
    th = check_real(_TORCH_DEFAULTS["diverge_th"] if diverge_th is None else diverge_th, "diverge_th")
    if not th > 1:
        raise ValueError(f"diverge_th must be > 1 (or math.inf: never stop early), got {diverge_th!r}")
    if method not in METHODS + COMPAT_METHODS:
        raise ValueError(f"method must be one of {', '.join(map(repr, METHODS + COMPAT_METHODS))}; got {method!r}")
    batches = _Batches(x, y, sample_weight, batch_size, shuffle, seed)
    if not batches.arrays and (y is not None or sample_weight is not None):
        raise ValueError("with a PyDataset or an iterable of batches, y and sample_weight come from its batches: "
                         "pass y=None and sample_weight=None")
    ladder = Ladder(start, end, n, step_mode)

    first = batches.next()
    if first is None:
        raise ValueError("the data yielded no batch")
    if not model.built:
        model(first[0])  # builds the layers (no training), so their variables exist before the copy
    optimizer = model.optimizer
    if not optimizer.built:
        optimizer.build(model.trainable_variables)  # what the first train step would do
    saved = _State(model)
    lr = _LearningRate(optimizer)
    try:
        raw, smoothed, stop, events = _sweep(model, batches, first, ladder, lr, f, th)
    finally:
        lr.restore()
        saved.restore()

    lrs = ladder.first(len(raw))
    if method in COMPAT_METHODS:
        details = suggest(lrs, smoothed, method)
    else:
        details = suggest(lrs, raw, method, diverge_factor=cut_factor(th))
    return FinderResult(
        lrs=lrs, losses=np.asarray(raw, dtype=np.float64), smoothed=np.asarray(smoothed, dtype=np.float64),
        suggestion=details.lr, zone=details.zone, method=method, diagnosis=diagnose_sweep(details, stop, lrs),
        stopped_early=stop is not None, stop_reason="" if stop is None else str(stop), details=details, events=events,
        stop=stop,
    )


def _sweep(model: Any, batches: _Batches, first: Tuple[Any, Any, Any], ladder: Ladder, lr: _LearningRate,
           smooth_f: float, diverge_th: float) -> Tuple[List[float], List[float], Optional[SweepStop], List[SweepEvent]]:
    """The torch finder's record and stop rule (pylrcore.torch.finder.SweepRecord) over Keras train steps."""
    record = SweepRecord(ladder, smooth_f, diverge_th)
    batch: Optional[Tuple[Any, Any, Any]] = first
    for i, rate in enumerate(ladder):
        if batch is None:
            break  # a generator ran out: the curve ends here
        lr.set(rate)
        bx, by, bw = batch
        if record.add(float(model.train_on_batch(bx, by, sample_weight=bw, return_dict=True)["loss"])):
            break
        if i + 1 < len(ladder):
            batch = batches.next()
    return record.result()


class LRFinder:
    """Object form of :func:`find` for a compiled ``model``: ``range_test(x, y, **options)`` runs
    :func:`find` and keeps its result as ``self.result``; ``plot()`` draws it."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.result: Optional[FinderResult] = None

    def range_test(self, x: Any, y: Any = None, **options: Any) -> FinderResult:
        self.result = find(self.model, x, y, **options)
        return self.result

    def plot(self, path: Optional[str] = None, ax: Any = None) -> Any:
        if self.result is None:
            raise RuntimeError("run range_test() before plot()")
        return self.result.plot(path=path, ax=ax)


class FinderCallback(keras.callbacks.Callback):  # type: ignore[misc,name-defined]
    """Runs :func:`find` when ``fit`` starts and trains at its suggestion x ``multiplier``:
    ``model.fit(x, y, callbacks=[FinderCallback(x, y, num_iter=100)])``.

    Keras does not show a callback the data given to ``fit``, so the range test's data are given
    here (arrays, a ``PyDataset`` or an iterable of batches; ``find_options`` are :func:`find`'s).
    The model and optimizer are restored before the first step, so ``fit`` trains from where it
    would have. The suggestion becomes the optimizer's float lr, or the ``base_lr`` of a
    :class:`KerasSchedule` (warmups and decays keep their shape). When the test finds no lr the
    optimizer is left as it is and ``result.diagnosis`` says why. The result is ``self.result``.
    """

    def __init__(self, x: Any, y: Any = None, *, multiplier: float = 1.0, **find_options: Any) -> None:
        super().__init__()
        self.x, self.y = x, y
        self.multiplier = check_real(multiplier, "multiplier")
        if not self.multiplier > 0:
            raise ValueError(f"multiplier must be > 0, got {multiplier!r}")
        self.options = find_options
        self.result: Optional[FinderResult] = None
        self.lr: Optional[float] = None  # what was set

    def on_train_begin(self, logs: Optional[Dict[str, Any]] = None) -> None:
        optimizer = self.model.optimizer
        current = optimizer._learning_rate
        if not isinstance(current, (keras.Variable, KerasSchedule)):
            raise ValueError("FinderCallback sets a float lr or a KerasSchedule's base_lr; this optimizer's lr is "
                             f"a {type(current).__name__}: run find() and build the optimizer from its suggestion")
        self.result = find(self.model, self.x, self.y, **self.options)
        if self.result.suggestion is None:
            return
        self.lr = self.result.suggestion * self.multiplier
        if isinstance(current, KerasSchedule):
            current.rebase(self.lr)
        else:
            optimizer.learning_rate = self.lr


# ---- schedules ---------------------------------------------------------------------------------------


@keras.saving.register_keras_serializable(package="pylrcore")
class KerasSchedule(keras.optimizers.schedules.LearningRateSchedule):  # type: ignore[misc,name-defined]
    """A pylrcore :class:`~pylrcore.schedules.Schedule` as a Keras ``LearningRateSchedule``: the lr at
    optimizer step ``step`` is ``schedule(step, base_lr)``, computed by the compiled core.

    ``get_config``/``from_config`` carry the schedule as its dict (``Schedule.to_dict``), so a model
    saved with ``model.save("m.keras")`` reloads with its schedule (the class is registered as
    ``pylrcore>KerasSchedule``; import this module before ``keras.models.load_model``).

    Eager steps (the PyTorch backend, TensorFlow eager) are evaluated exactly at each step. Inside a
    traced function (JAX's jit, a ``tf.function``) the step is symbolic: the values of steps 0 to
    ``steps`` are then tabulated once by the core and looked up, holding the last one after it.
    ``steps`` defaults to the schedule's length; schedules without one (exponential, step, cyclic...)
    need ``steps`` on those backends.
    """

    def __init__(self, schedule: Any, base_lr: float = 1.0, steps: Optional[int] = None) -> None:
        super().__init__()
        if isinstance(schedule, str):
            schedule = Schedule.parse(schedule)
        elif isinstance(schedule, dict):
            schedule = Schedule.from_dict(schedule)
        if not isinstance(schedule, Schedule):
            raise TypeError(f"schedule must be a pylrcore Schedule (or its text or dict form), got {type(schedule).__name__}")
        base = check_real(base_lr, "base_lr")
        if not (math.isfinite(base) and base > 0):
            raise ValueError(f"base_lr must be finite and > 0, got {base_lr!r}")
        self.schedule = schedule
        self.base_lr = base
        self.steps = None if steps is None else check_int(steps, "steps", minimum=1)
        self._table: Optional[np.ndarray] = None

    def __call__(self, step: Any) -> Any:
        try:
            at = int(np.asarray(keras.ops.convert_to_numpy(step)))
        except Exception:  # a symbolic step (traced): no value to read now
            return self.lookup(step)
        return keras.ops.convert_to_tensor(self.schedule(at, self.base_lr), dtype=keras.config.floatx())

    def lookup(self, step: Any) -> Any:
        """The tabulated form used for symbolic steps (any backend op, no host read)."""
        if self._table is None:
            n = self.steps if self.steps is not None else self.schedule.length
            if n is None:
                raise ValueError(f"{self.schedule!r} has no natural length: pass steps=... (the number of training "
                                 "steps) to KerasSchedule to use it inside a traced (jit) train step")
            self._table = np.asarray(self.schedule(np.arange(n + 1), self.base_lr), dtype=keras.config.floatx())
        table = keras.ops.convert_to_tensor(self._table)
        index = keras.ops.clip(keras.ops.cast(step, "int32"), 0, len(self._table) - 1)
        return keras.ops.take(table, index)

    def rebase(self, base_lr: float) -> None:
        """Set ``base_lr`` (e.g. to a range test's suggestion); the schedule keeps its shape."""
        base = check_real(base_lr, "base_lr")
        if not (math.isfinite(base) and base > 0):
            raise ValueError(f"base_lr must be finite and > 0, got {base_lr!r}")
        self.base_lr, self._table = base, None

    def get_config(self) -> Dict[str, Any]:
        return {"schedule": self.schedule.to_dict(), "base_lr": self.base_lr, "steps": self.steps}

    @classmethod
    def from_config(cls, config: Dict[str, Any]) -> "KerasSchedule":
        return cls(Schedule.from_dict(config["schedule"]), base_lr=config["base_lr"], steps=config.get("steps"))

    def __repr__(self) -> str:
        return f"KerasSchedule({self.schedule!r}, base_lr={self.base_lr:g})"


# ---- the guard -----------------------------------------------------------------------------------------

_KIND = {Flag.NONFINITE: "nonfinite_loss", Flag.SPIKE: "loss_spike", Flag.EXPLOSION: "explosion"}
_POLICIES = ("record", "stop", "scale")


class GuardCallback(keras.callbacks.Callback):  # type: ignore[misc,name-defined]
    """Watches the batch losses of ``model.fit`` with the core :class:`~pylrcore.Detector`: NaN/Inf,
    spikes and explosion (smoothed loss above ``explode_factor`` x its best).

    ``policy`` says what a non-finite loss or an explosion does: ``"record"`` (events only),
    ``"stop"`` (``model.stop_training = True``: fit ends after this batch) or ``"scale"`` (multiply
    the optimizer's lr by ``factor``; needs a float lr, not a schedule). Spikes are always recorded
    only. Every event is a :class:`pylrcore.torch.guard.GuardEvent` in ``self.events``, goes to ``on_event``
    (e.g. ``pylrcore.integrations.event_logger(writer)`` for TensorBoard) and is counted in the
    logs: ``guard/events``, ``guard/nonfinite_loss``, ``guard/loss_spike``, ``guard/explosion`` are
    added to each batch's and epoch's logs, so History and Keras's TensorBoard callback record them.

    Keras's batch logs hold the running mean of the epoch's loss; the batch loss is recovered from
    two successive means (exact for equal-sized batches, float64 arithmetic).
    """

    def __init__(self, policy: str = "record", *, factor: float = 0.5, on_event: Optional[Callable[[GuardEvent], None]] = None,
                 explode_factor: float = 4.0, **detector_options: Any) -> None:
        super().__init__()
        if policy not in _POLICIES:
            raise ValueError(f"policy must be one of {', '.join(map(repr, _POLICIES))}; got {policy!r}")
        fac = check_real(factor, "factor")
        if not 0 < fac < 1:
            raise ValueError(f"factor must be in (0, 1) (the lr is multiplied by it), got {factor!r}")
        self.policy, self.factor, self.on_event = policy, fac, on_event
        self.detector = Detector(explode_factor=explode_factor, **detector_options)
        self.spike_z = float(detector_options.get("spike_z", DETECTOR_DEFAULTS["spike_z"]))
        self.events: List[GuardEvent] = []
        self.counts = {kind: 0 for kind in _KIND.values()}
        self.step = 0
        self._seen = 0  # batches of this epoch already counted in the running mean
        self._mean = 0.0

    def on_train_begin(self, logs: Optional[Dict[str, Any]] = None) -> None:
        if self.policy == "scale" and not isinstance(self.model.optimizer._learning_rate, keras.Variable):
            raise ValueError("policy='scale' needs an optimizer with a float learning rate (not a schedule)")

    def on_epoch_begin(self, epoch: int, logs: Optional[Dict[str, Any]] = None) -> None:
        self._seen, self._mean = 0, 0.0

    def on_train_batch_end(self, batch: int, logs: Optional[Dict[str, Any]] = None) -> None:
        if logs is None or "loss" not in logs:
            return
        mean = float(np.asarray(keras.ops.convert_to_numpy(logs["loss"])))
        seen = batch + 1  # with steps_per_execution > 1 several batches ran since the last call
        new = max(seen - self._seen, 1)
        loss = (seen * mean - self._seen * self._mean) / new if self._seen and math.isfinite(self._mean) else mean
        self._seen, self._mean = seen, mean
        verdict = self.detector.update(loss)
        for flag, kind in _KIND.items():
            if verdict.onset & flag:
                self._event(kind, verdict, loss)
        logs.update(self._log_values())
        self.step += 1

    def on_epoch_end(self, epoch: int, logs: Optional[Dict[str, Any]] = None) -> None:
        if logs is not None:
            logs.update(self._log_values())

    def _log_values(self) -> Dict[str, float]:
        return {"guard/events": float(len(self.events)), **{f"guard/{k}": float(v) for k, v in self.counts.items()}}

    def _event(self, kind: str, verdict: Any, loss: float) -> None:
        optimizer = self.model.optimizer
        lr = float(np.asarray(keras.ops.convert_to_numpy(optimizer.learning_rate)))
        value, threshold = loss, math.nan
        if kind == "loss_spike":
            value, threshold = float(verdict.zscore), self.spike_z
        elif kind == "explosion":
            value, threshold = float(verdict.smoothed), float(self.detector.stats.get("explode_at", math.nan))
        action = "recorded"
        if kind != "loss_spike" and self.policy == "stop":
            self.model.stop_training = True
            action = "stopped training"
        elif kind != "loss_spike" and self.policy == "scale":
            optimizer.learning_rate = lr * self.factor
            action = f"lr scaled to {lr * self.factor:.3g}"
        event = GuardEvent(self.step, kind, value, threshold, lr, action, loss, math.nan)
        self.events.append(event)
        self.counts[kind] += 1
        if self.on_event is not None:
            self.on_event(event)

    def summary(self) -> str:
        """One line per event, as the torch guard describes them."""
        return "\n".join(f"step {e.step}: {describe_event(e)}, lr {e.lr:.3g} -> {e.action}" for e in self.events)
