"""What a range test (or a guard's rollback) changes, kept so that it can be put back exactly.

One mechanism for both users:

* ``Snapshot(model, optimizer, scope="range_test")``: everything a range test touches: the model's
  parameters and buffers *by name* (a module that re-assigns a buffer, ``self.steps = self.steps + 1``,
  gets its own tensor object back), ``requires_grad``, ``model.training`` per module, the gradients
  (``None`` included), the optimizer's state and param-group settings, a ``GradScaler``'s state, and
  the torch (CPU and CUDA), numpy and Python ``random`` RNG states.
* ``Snapshot(model, optimizer, scope="weights")``: the guard's rollback point: parameters, buffers and
  optimizer state only (the lr and the RNG stream go on), refilled in place by :meth:`Snapshot.take`.

The live tensors keep their identity and addresses (compiled and CUDA-graph code hold them): the
restore writes the kept bytes into the very objects the model held when the snapshot was taken, and
puts those objects back under their names. Plain contiguous CPU tensors are copied byte for byte into
one native :class:`_core.Arena` (one mapping with huge pages, filled by a few threads; the next
snapshot reuses a released one's pages), because on a large model the time of a snapshot is almost all
first-touch page faults and memory traffic, not copying work (see csrc/pylrcore/step/snapshot.hpp). Other tensors (CUDA, sparse, subclasses, views that are not contiguous) are
cloned by torch.

:meth:`Snapshot.restore` cannot be cut short by Ctrl-C: SIGINT is deferred while it runs, and a
``KeyboardInterrupt`` raised inside it anyway (a second thread's ``interrupt_main``, a tracer) makes it
start again from the top (every step sets a value, so running it twice is the same as once); the
interrupt is raised once the model is whole again.
"""

from __future__ import annotations

import contextlib
import copy
import random
import signal
import threading
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Set, Tuple

import numpy as np
import torch

from .._native import _core
from .._tensors import plain_host

# Enough threads to fault and fill fresh pages in parallel; memory bandwidth is spent well before 8.
_MAX_COPY_THREADS = 8
_ALIGN = 64  # each copy starts on a cache line; also every dtype's alignment, for the arena views
# A restore interrupted this many times in a row is not being interrupted by a person.
_MAX_RESTARTS = 1000
SCOPES = ("range_test", "weights")


def _copy_threads() -> int:
    # torch's thread setting is the user's CPU budget for tensor work; the copy stays inside it.
    return max(1, min(torch.get_num_threads(), _MAX_COPY_THREADS))


def _layout_key(t: torch.Tensor) -> Tuple[Any, ...]:
    return (t.dtype, tuple(t.shape), t.device, plain_host(t))


class _HostCopies:
    """Bitwise copies of plain CPU tensors in one arena; ``restore`` writes them back by address."""

    def __init__(self, tensors: Sequence[torch.Tensor]) -> None:
        self.layout: List[Tuple[torch.dtype, torch.Size, int, int]] = []  # dtype, shape, offset, nbytes
        offset = 0
        for t in tensors:
            nbytes = t.numel() * t.element_size()
            self.layout.append((t.dtype, t.shape, offset, nbytes))
            offset += -(-nbytes // _ALIGN) * _ALIGN
        self.arena = _core.Arena(offset)
        self._touched = self.arena.reused  # its pages are mapped already: copies into it may stream
        self._bytes: Optional[torch.Tensor] = None
        self.fill(tensors)

    def fill(self, tensors: Sequence[torch.Tensor]) -> None:
        """Copy ``tensors`` (the same layout as at construction) into the arena."""
        base = self.arena.address
        _core.copy_spans([base + o for _, _, o, _ in self.layout], [t.data_ptr() for t in tensors],
                         [n for _, _, _, n in self.layout], _copy_threads(), self._touched)
        self._touched = True

    def view(self, i: int) -> torch.Tensor:
        """The copy of tensor ``i`` as a tensor over the arena (clone it before handing it out)."""
        if self._bytes is None:
            self._bytes = torch.frombuffer(self.arena, dtype=torch.uint8)
        dtype, shape, offset, nbytes = self.layout[i]
        return self._bytes[offset:offset + nbytes].view(dtype).view(shape)

    def restore(self, live: Sequence[torch.Tensor], which: Sequence[int]) -> List[int]:
        """Write copy ``which[k]`` into ``live[k]`` where that tensor still has the same dtype and shape and
        is plain; returns the positions k it could not take (the caller copies those with torch)."""
        base = self.arena.address
        dst: List[int] = []
        src: List[int] = []
        nbytes: List[int] = []
        written: List[torch.Tensor] = []
        left: List[int] = []
        for k, (t, i) in enumerate(zip(live, which)):
            dtype, shape, offset, n = self.layout[i]
            if t.dtype == dtype and t.shape == shape and plain_host(t):
                dst.append(t.data_ptr())
                src.append(base + offset)
                nbytes.append(n)
                written.append(t)
            else:
                left.append(k)
        _core.copy_spans(dst, src, nbytes, _copy_threads(), True)  # live tensors: memory in use
        if written:  # what copy_ would have done: autograd sees these tensors as modified in place
            torch.autograd.graph.increment_version(written)
        return left


class _Copies:
    """Copies of a list of tensors: plain CPU ones in a :class:`_HostCopies`, the rest cloned by torch
    (moved to the CPU with ``to_cpu``). ``fill`` refills them in place from tensors of the same layout."""

    def __init__(self, tensors: Sequence[torch.Tensor], to_cpu: bool) -> None:
        self.keys = [_layout_key(t) for t in tensors]
        host = [i for i, t in enumerate(tensors) if plain_host(t)]
        self.where: Dict[int, int] = {i: k for k, i in enumerate(host)}  # tensor index -> arena slot
        self.host = _HostCopies([tensors[i] for i in host]) if host else None
        self.cloned: Dict[int, torch.Tensor] = {
            i: (t.detach().to("cpu", copy=True) if to_cpu else t.detach().clone())
            for i, t in enumerate(tensors) if i not in self.where
        }
        self.devices = {i: tensors[i].device for i in self.cloned}

    def fits(self, tensors: Sequence[torch.Tensor]) -> bool:
        return len(tensors) == len(self.keys) and all(_layout_key(t) == k for t, k in zip(tensors, self.keys))

    def fill(self, tensors: Sequence[torch.Tensor]) -> None:
        if self.host is not None:
            self.host.fill([tensors[i] for i in self.where])
        with torch.no_grad():
            for i, kept in self.cloned.items():
                kept.copy_(tensors[i])

    def get(self, i: int) -> torch.Tensor:
        """The kept copy of tensor ``i`` (a view into the snapshot for host tensors: clone to keep it)."""
        slot = self.where.get(i)
        if slot is None:
            return self.cloned[i]
        assert self.host is not None
        return self.host.view(slot)

    def fresh(self, i: int) -> torch.Tensor:
        """A new tensor equal to the kept copy of tensor ``i``, on the device it came from."""
        slot = self.where.get(i)
        if slot is None:
            return self.cloned[i].to(self.devices[i], copy=True)
        assert self.host is not None
        return self.host.view(slot).clone()

    def dtype_and_shape(self, i: int) -> Tuple[torch.dtype, torch.Size]:
        dtype, shape = self.keys[i][0], self.keys[i][1]
        return dtype, torch.Size(shape)

    def restore(self, pairs: Sequence[Tuple[torch.Tensor, int]]) -> None:
        """``live.copy_(copy i)`` for every (live, i); the host bytes in one native call. A live tensor
        whose dtype or shape changed gets its data replaced (same object). Live tensors that share
        memory (tied or aliased) were copied at the same moment, so they write equal bytes."""
        native = [(t, i) for t, i in pairs if i in self.where]
        left = [(t, i) for t, i in pairs if i not in self.where]
        if self.host is not None and native:
            missed = self.host.restore([t for t, _ in native], [self.where[i] for _, i in native])
            left += [native[k] for k in missed]
        with torch.no_grad():
            for t, i in left:
                if (t.dtype, t.shape) == self.dtype_and_shape(i) and t.device == self.keys[i][2]:
                    t.copy_(self.get(i))
                else:  # resized or converted during the test: same object, its old data back
                    t.data = self.fresh(i)


class _DiskCopies(_Copies):
    """The copies in one file under ``directory`` (torch-lr-finder's ``memory_cache=False``: a model
    larger than the free RAM). Read back memory-mapped, so the restore needs no second full copy in
    memory; the file is deleted with the snapshot."""

    def __init__(self, tensors: Sequence[torch.Tensor], directory: str) -> None:
        import os
        import tempfile

        self.keys = [_layout_key(t) for t in tensors]
        self.where, self.host = {}, None
        self.devices = {i: t.device for i, t in enumerate(tensors)}
        fd, self.path = tempfile.mkstemp(prefix="pylrcore-snapshot-", suffix=".pt", dir=directory)
        os.close(fd)
        self._remove = os.remove
        self.fill(tensors)

    def fill(self, tensors: Sequence[torch.Tensor]) -> None:
        torch.save([t.detach().to("cpu") for t in tensors], self.path)
        self._loaded: Optional[Dict[int, torch.Tensor]] = None

    @property
    def cloned(self) -> Dict[int, torch.Tensor]:  # type: ignore[override]
        if self._loaded is None:
            self._loaded = dict(enumerate(torch.load(self.path, mmap=True, weights_only=True)))
        return self._loaded

    def __del__(self) -> None:
        try:
            self._remove(self.path)
        except (OSError, AttributeError):
            pass


# ---- what a snapshot records ---------------------------------------------------------------------

_Slot = Tuple[str, torch.nn.Module, str]  # (qualified prefix, module, "_parameters" or "_buffers")


def _module_slots(model: torch.nn.Module) -> List[_Slot]:
    """Every module's parameter and buffer dicts, each once (shared modules appear once)."""
    seen: Set[int] = set()
    slots: List[_Slot] = []
    for prefix, module in model.named_modules(remove_duplicate=False):
        if id(module) in seen:
            continue
        seen.add(id(module))
        slots.append((prefix, module, "_parameters"))
        slots.append((prefix, module, "_buffers"))
    return slots


def model_tensors(model: torch.nn.Module) -> List[torch.Tensor]:
    """Parameters and buffers, each once (tied weights are one tensor)."""
    seen: Dict[int, torch.Tensor] = {}
    for t in list(model.parameters()) + list(model.buffers()):
        seen.setdefault(id(t), t)
    return list(seen.values())


def _optimizer_params(optimizer: torch.optim.Optimizer) -> List[torch.Tensor]:
    seen: Dict[int, torch.Tensor] = {}
    for g in optimizer.param_groups:
        for p in g["params"]:
            seen.setdefault(id(p), p)
    return list(seen.values())


@contextlib.contextmanager
def _sigint_deferred() -> Iterator[None]:
    """Hold SIGINT back while the body runs; a Ctrl-C that came in the meantime is delivered (to the
    handler that was in place) when it ends. Only the main thread can do this; elsewhere, a no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)
    if previous is None:  # a handler installed outside Python: leave it alone
        yield
        return
    received: List[int] = []
    signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if received and callable(previous):
            previous(signal.SIGINT, None)  # default_int_handler raises KeyboardInterrupt here
        elif received and previous == signal.SIG_DFL:
            signal.raise_signal(signal.SIGINT)


@contextlib.contextmanager
def interrupt_shield() -> Iterator[None]:
    """For a whole range test: Ctrl-C interrupts the sweep as usual, but one that arrives while a
    :meth:`Snapshot.restore` runs (from its first instruction, so no gap before its own deferral)
    is held back and delivered when the block ends, after the model is whole again."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)
    if not callable(previous):  # SIG_IGN, SIG_DFL or a handler from outside Python: leave them alone
        yield
        return
    held: List[int] = []

    def handler(signum: int, frame: Any) -> None:
        if _inside_restore(frame):
            held.append(signum)
        else:
            previous(signum, frame)

    signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if held:
            previous(signal.SIGINT, None)  # default_int_handler raises KeyboardInterrupt here


def _inside_restore(frame: Any) -> bool:
    while frame is not None:
        if frame.f_code in _RESTORE_CODE:
            return True
        frame = frame.f_back
    return False


def run_to_completion(plan: Callable[[], Sequence[Callable[[], None]]]) -> None:
    """Run every step of ``plan()``, whatever happens: SIGINT is deferred meanwhile; a KeyboardInterrupt raised inside
    a step anyway starts the (idempotent) steps again from the first; any other error does not stop
    the later steps and is raised at the end (the first one). The interrupt is re-raised after."""
    interrupted: Optional[BaseException] = None
    with _sigint_deferred():
        for _ in range(_MAX_RESTARTS):
            errors: List[BaseException] = []
            try:
                for step in plan():
                    try:
                        step()
                    except KeyboardInterrupt:
                        raise
                    except Exception as e:  # finish the other steps, report this one after
                        errors.append(e)
            except KeyboardInterrupt as e:
                interrupted = e
                continue
            break
    if interrupted is not None:
        raise interrupted
    if errors:
        raise errors[0]


class _ScalerState:
    """A ``GradScaler``'s attributes: its scale and growth tracker tensors (same objects after), the
    per-optimizer stages, the factors."""

    def __init__(self, scaler: Any) -> None:
        self.scaler = scaler
        self.values: Dict[str, Any] = {}
        for name, v in vars(scaler).items():
            self.values[name] = (v, v.detach().clone()) if torch.is_tensor(v) else (None, copy.deepcopy(v))

    def restore(self) -> None:
        live = vars(self.scaler)
        for name in [n for n in live if n not in self.values]:
            del live[name]
        for name, (obj, value) in self.values.items():
            if obj is not None:
                with torch.no_grad():
                    obj.copy_(value)
                live[name] = obj
            else:
                live[name] = copy.deepcopy(value)


class Snapshot:
    """A restore point of ``model`` and ``optimizer`` (see the module docstring for ``scope``).

    ``take()`` records (again: storage is reused while the layout is unchanged), ``restore()`` puts
    everything back and cannot be interrupted half-way. ``to_cpu`` keeps the copies of device tensors
    in host memory; ``directory`` keeps all copies in a file there. ``scaler``: a ``GradScaler`` to
    restore with the rest (range_test scope).
    """

    def __init__(self, model: Optional[torch.nn.Module], optimizer: torch.optim.Optimizer, *,
                 scope: str = "range_test", to_cpu: bool = False, scaler: Any = None,
                 directory: Optional[str] = None) -> None:
        if scope not in SCOPES:
            raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
        self.model, self.optimizer, self.scope, self.to_cpu, self.scaler = model, optimizer, scope, to_cpu, scaler
        self.directory = directory  # keep the copies in a file there instead of in memory
        self.copies: Optional[_Copies] = None
        self.taken = False

    # -- recording --
    def take(self) -> "Snapshot":
        """Record the current state (reusing the copies' storage when the layout has not changed)."""
        self._fill(self._gather())
        self.taken = True
        return self

    def _gather(self) -> List[torch.Tensor]:
        """Record names and non-tensor values; return the distinct live tensors (the objects to restore
        into, whose values are copied now)."""
        index: Dict[int, int] = {}
        live: List[torch.Tensor] = []

        def slot_of(t: torch.Tensor) -> int:
            i = index.get(id(t))
            if i is None:
                i = index[id(t)] = len(live)
                live.append(t)
            return i

        self.slots: List[Tuple[_Slot, List[Tuple[str, Optional[int]]], Optional[Set[str]]]] = []
        if self.model is not None:
            for slot in _module_slots(self.model):
                _, module, kind = slot
                entries = [(name, None if t is None else slot_of(t)) for name, t in getattr(module, kind).items()]
                nonpersistent = set(module._non_persistent_buffers_set) if kind == "_buffers" else None
                self.slots.append((slot, entries, nonpersistent))
        self.params = _optimizer_params(self.optimizer)
        self.param_slots = [slot_of(p) for p in self.params]  # parameters the optimizer has beyond the model's
        self.requires_grad = [(t, t.requires_grad) for t in live if isinstance(t, torch.nn.Parameter)]
        self.n_model = len(live)  # model and optimizer parameters come first, then the optimizer's state

        # Optimizer state per parameter: tensors are kept with the model's, the rest deep-copied.
        self.state_tensors: List[Tuple[Any, str, int]] = []  # (param, name, index into the kept tensors)
        self.state_values: Dict[Any, Dict[str, Any]] = {}
        for p, s in self.optimizer.state.items():
            values: Dict[str, Any] = {}
            for name, v in s.items():
                if torch.is_tensor(v):
                    self.state_tensors.append((p, name, len(live)))
                    live.append(v)
                else:
                    values[name] = copy.deepcopy(v)
            self.state_values[p] = values

        if self.scope == "range_test":
            opt = self.optimizer
            self.group_count = len(opt.param_groups)
            self.group_params = [list(g["params"]) for g in opt.param_groups]
            self.groups = [{k: (v.detach().clone() if torch.is_tensor(v) else copy.deepcopy(v))
                            for k, v in g.items() if k != "params"} for g in opt.param_groups]
            self.group_lr_tensors = [g["lr"] if torch.is_tensor(g["lr"]) else None for g in opt.param_groups]
            grads_of = list(self.params)
            if self.model is not None:
                grads_of += [t for t in live if isinstance(t, torch.nn.Parameter)]
            self.grads = {id(p): (p, p.grad) for p in grads_of}  # the objects themselves: see detach_grads
            self.training = [(m, m.training) for m in self.model.modules()] if self.model is not None else []
            self.torch_rng = torch.get_rng_state()
            cuda_in_use = torch.cuda.is_available() and torch.cuda.is_initialized()  # type: ignore[no-untyped-call]
            self.cuda_rng = torch.cuda.get_rng_state_all() if cuda_in_use else None
            self.numpy_rng = np.random.get_state()
            self.python_rng = random.getstate()
            self.scaler_state = _ScalerState(self.scaler) if self.scaler is not None else None
        self.live = live
        return live

    def _fill(self, values: Sequence[torch.Tensor]) -> None:
        if self.copies is not None and self.copies.fits(values):
            self.copies.fill(values)
        else:
            self.copies = None  # the old copies go before the new ones are allocated
            self.copies = (_DiskCopies(values, self.directory) if self.directory is not None
                           else _Copies(values, self.to_cpu))

    def detach_grads(self) -> None:
        """Set every gradient to None (range_test scope). The old gradient tensors are kept as they are
        and put back by :meth:`restore`, so they never need copying: the test makes new ones."""
        for p, _ in self.grads.values():
            p.grad = None

    # -- restoring --
    def restore(self) -> None:
        """Put everything back (see the module docstring); Ctrl-C waits until it is done."""
        run_to_completion(self._restore_steps)

    def _restore_steps(self) -> List[Callable[[], None]]:
        if not self.taken:
            raise RuntimeError("Snapshot.restore() before take()")
        steps: List[Callable[[], None]] = [self._restore_tensors, self._restore_optimizer_state]
        if self.scope == "range_test":
            steps += [self._restore_groups, self._restore_grads, self._restore_flags, self._restore_rng]
            if self.scaler_state is not None:
                steps.append(self.scaler_state.restore)
        return steps

    def _restore_tensors(self) -> None:
        assert self.copies is not None
        for (_, module, kind), entries, nonpersistent in self.slots:
            d = getattr(module, kind)
            saved = [(name, None if i is None else self.live[i]) for name, i in entries]
            if len(d) != len(saved) or any(k != name or v is not t for (k, v), (name, t) in zip(d.items(), saved)):
                # names re-assigned, added or removed: the old objects, in their order
                d.clear()
                d.update(saved)
            if nonpersistent is not None and module._non_persistent_buffers_set != nonpersistent:
                module._non_persistent_buffers_set.clear()
                module._non_persistent_buffers_set.update(nonpersistent)
        for t, flag in self.requires_grad:
            if t.requires_grad != flag:
                t.requires_grad_(flag)
        self.copies.restore([(t, i) for i, t in enumerate(self.live[:self.n_model])])

    def _restore_optimizer_state(self) -> None:
        assert self.copies is not None
        state = self.optimizer.state
        for p in [p for p in state if p not in self.state_values]:  # state the test created
            del state[p]
        saved_names = {(id(p), name) for p, name, _ in self.state_tensors}
        for p, values in self.state_values.items():
            live_state = state[p]
            for name in [n for n in live_state if n not in values and (id(p), n) not in saved_names]:
                del live_state[name]
            for name, v in values.items():
                live_state[name] = copy.deepcopy(v)
        in_place: List[Tuple[torch.Tensor, int]] = []
        for p, name, i in self.state_tensors:
            original = self.live[i]
            state[p][name] = original  # the tensor keeps its identity, with its old values
            in_place.append((original, i))
        self.copies.restore(in_place)

    def _restore_groups(self) -> None:
        opt = self.optimizer
        del opt.param_groups[self.group_count:]  # groups the test added
        for group, params, settings, lr_tensor in zip(opt.param_groups, self.group_params, self.groups,
                                                      self.group_lr_tensors):
            live = group["params"]
            if len(live) != len(params) or any(a is not b for a, b in zip(live, params)):  # by identity
                live[:] = params
            for k in [k for k in group if k != "params" and k not in settings]:
                del group[k]
            for k, v in settings.items():
                if k == "lr" and lr_tensor is not None:
                    with torch.no_grad():
                        lr_tensor.copy_(v)  # keep the tensor's identity (compiled/captured steps hold it)
                    group["lr"] = lr_tensor
                else:
                    group[k] = copy.deepcopy(v)

    def _restore_grads(self) -> None:
        for p, grad in self.grads.values():
            if p.grad is not grad:
                p.grad = grad

    def _restore_flags(self) -> None:
        for module, training in self.training:
            module.training = training

    def _restore_rng(self) -> None:
        torch.set_rng_state(self.torch_rng)
        if self.cuda_rng is not None:
            torch.cuda.set_rng_state_all(self.cuda_rng)
        np.random.set_state(self.numpy_rng)
        random.setstate(self.python_rng)

    # -- checkpoints (the guard's rollback point, scope "weights") --
    def state_dict(self) -> Dict[str, Any]:
        """The kept values as plain tensors, by name: ``{"model": {name: tensor | None}, "params":
        [tensor per optimizer parameter], "optimizer": {position: {name: value}}}``."""
        assert self.copies is not None
        copies = self.copies
        model: Dict[str, Optional[torch.Tensor]] = {}
        for (prefix, _, _), entries, _ in self.slots:
            for name, i in entries:
                model[f"{prefix}.{name}" if prefix else name] = None if i is None else copies.fresh(i)
        position = {id(p): k for k, p in enumerate(self.params)}
        optimizer: Dict[int, Dict[str, Any]] = {}
        for p, values in self.state_values.items():
            if id(p) in position:
                optimizer[position[id(p)]] = copy.deepcopy(values)
        for p, name, i in self.state_tensors:
            if id(p) in position:
                optimizer[position[id(p)]][name] = copies.fresh(i)
        return {"model": model, "params": [copies.fresh(i) for i in self.param_slots], "optimizer": optimizer}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Make this the snapshot ``state`` describes, for this snapshot's (same-shaped) model and optimizer."""
        if self.scope != "weights":
            raise ValueError("only a 'weights' snapshot is loaded from a state dict")
        self.live = self._gather()[:self.n_model]
        values: List[torch.Tensor] = list(self.live)
        names: Dict[str, Optional[int]] = {}
        for (prefix, _, _), entries, _ in self.slots:
            for name, i in entries:
                names[f"{prefix}.{name}" if prefix else name] = i
        model_state = state["model"]
        if set(model_state) != set(names):
            raise ValueError("the guard's snapshot was saved from a model with other parameters/buffers")
        for key, i in names.items():
            if i is not None and model_state[key] is not None:
                values[i] = model_state[key].to(self.live[i].device)
        if len(state["params"]) != len(self.param_slots):
            raise ValueError("the guard's snapshot was saved from an optimizer with another number of parameters")
        for i, v in zip(self.param_slots, state["params"]):
            values[i] = v.to(self.live[i].device)
        # The snapshot's optimizer state, restored into the live state tensors where they exist.
        self.state_tensors, self.state_values = [], {}
        for pos, entry in state["optimizer"].items():
            p = self.params[int(pos)]
            plain: Dict[str, Any] = {}
            for name, v in entry.items():
                if torch.is_tensor(v):
                    current = self.optimizer.state[p].get(name) if p in self.optimizer.state else None
                    target = current if torch.is_tensor(current) else v.clone()
                    self.state_tensors.append((p, name, len(self.live)))
                    self.live.append(target)
                    values.append(v.to(target.device))
                else:
                    plain[name] = copy.deepcopy(v)
            self.state_values[p] = plain
        self.copies = None
        self.copies = _Copies(values, self.to_cpu)
        self.taken = True


# Frames in which a Ctrl-C is held back by interrupt_shield (their callees included).
_RESTORE_CODE = {Snapshot.restore.__code__, run_to_completion.__code__}
