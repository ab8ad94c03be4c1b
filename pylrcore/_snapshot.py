"""What a range test changes, kept so that it can be put back bitwise into the same tensors.

The live tensors keep their identity and addresses: compiled and CUDA-graph code hold them. Plain
contiguous CPU tensors are copied byte for byte into one native :class:`_core.Arena` (one fresh
mapping with huge pages, filled by a few threads), because on a large model the time of a snapshot is
almost all first-touch page faults, not copying (see csrc/pylrcore/copy.hpp). Other tensors (CUDA,
sparse, subclasses, views that are not contiguous) are cloned by torch as before.
"""

from __future__ import annotations

import copy
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from ._native import _core

# Enough threads to fault and fill fresh pages in parallel; memory bandwidth is spent well before 8.
_MAX_COPY_THREADS = 8
_ALIGN = 64  # each copy starts on a cache line; also every dtype's alignment, for the arena views


def _is_plain_host(t: torch.Tensor) -> bool:
    """Whether ``t`` is bytes we may copy by address: dense, contiguous, in CPU memory, no lazy flags."""
    return (
        type(t) in (torch.Tensor, torch.nn.Parameter)
        and t.device.type == "cpu"
        and t.layout is torch.strided
        and not t.is_quantized
        and t.numel() > 0
        and t.is_contiguous()
        and not t.is_conj()
        and not t.is_neg()
    )


def _copy_threads() -> int:
    # torch's thread setting is the user's CPU budget for tensor work; the copy stays inside it.
    return max(1, min(torch.get_num_threads(), _MAX_COPY_THREADS))


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
        self._bytes: Optional[torch.Tensor] = None
        base = self.arena.address
        _core.copy_spans([base + o for _, _, o, _ in self.layout], [t.data_ptr() for t in tensors],
                         [n for _, _, _, n in self.layout], _copy_threads())

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
            if t.dtype == dtype and t.shape == shape and _is_plain_host(t):
                dst.append(t.data_ptr())
                src.append(base + offset)
                nbytes.append(n)
                written.append(t)
            else:
                left.append(k)
        _core.copy_spans(dst, src, nbytes, _copy_threads())
        if written:  # what copy_ would have done: autograd sees these tensors as modified in place
            torch.autograd.graph.increment_version(written)
        return left


class _Copies:
    """Copies of a list of tensors: plain CPU ones in a :class:`_HostCopies`, the rest cloned by torch
    (moved to the CPU with ``to_cpu``)."""

    def __init__(self, tensors: Sequence[torch.Tensor], to_cpu: bool) -> None:
        host = [i for i, t in enumerate(tensors) if _is_plain_host(t)]
        self.where: Dict[int, int] = {i: k for k, i in enumerate(host)}  # tensor index -> arena slot
        self.host = _HostCopies([tensors[i] for i in host]) if host else None
        self.cloned: Dict[int, torch.Tensor] = {
            i: (t.detach().to("cpu", copy=True) if to_cpu else t.detach().clone())
            for i, t in enumerate(tensors) if i not in self.where
        }
        self.devices = {i: tensors[i].device for i in self.cloned}

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
        slot = self.where.get(i)
        if slot is None:
            return self.cloned[i].dtype, self.cloned[i].shape
        assert self.host is not None
        dtype, shape, _, _ = self.host.layout[slot]
        return dtype, shape

    def restore(self, pairs: Sequence[Tuple[torch.Tensor, int]]) -> None:
        """``live.copy_(copy i)`` for every (live, i); the host bytes in one native call. Live tensors
        that share memory (tied or aliased) were copied at the same moment, so they write equal bytes."""
        native = [(t, i) for t, i in pairs if i in self.where]
        left = [(t, i) for t, i in pairs if i not in self.where]
        if self.host is not None and native:
            missed = self.host.restore([t for t, _ in native], [self.where[i] for _, i in native])
            left += [native[k] for k in missed]
        with torch.no_grad():
            for t, i in left:
                t.copy_(self.get(i))


class _Snapshot:
    """Everything a range test changes: parameters and buffers (bitwise), optimizer state and param
    group settings, model.training (per module), and the RNG states (torch CPU/CUDA)."""

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, to_cpu: bool) -> None:
        self.tensors = model_tensors(model)
        # Optimizer state per parameter: tensors are kept with the model's (one arena), the rest deep-copied.
        self.state_names: List[Tuple[Any, str, int]] = []  # (param, name, index into the kept tensors)
        self.state_values: Dict[Any, Dict[str, Any]] = {}
        kept = list(self.tensors)
        for p, s in optimizer.state.items():
            values: Dict[str, Any] = {}
            for name, v in s.items():
                if torch.is_tensor(v):
                    self.state_names.append((p, name, len(kept)))
                    kept.append(v)
                else:
                    values[name] = copy.deepcopy(v)
            self.state_values[p] = values
        self.copies = _Copies(kept, to_cpu)
        self.groups = [{k: (v.detach().clone() if torch.is_tensor(v) else copy.deepcopy(v))
                        for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
        self.group_lr_tensors = [g["lr"] if torch.is_tensor(g["lr"]) else None for g in optimizer.param_groups]
        self.training = [(m, m.training) for m in model.modules()]
        self.cpu_rng = torch.get_rng_state()
        cuda_in_use = torch.cuda.is_available() and torch.cuda.is_initialized()  # type: ignore[no-untyped-call]
        self.cuda_rng = torch.cuda.get_rng_state_all() if cuda_in_use else None

    def restore(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
        in_place: List[Tuple[torch.Tensor, int]] = [(t, i) for i, t in enumerate(self.tensors)]
        for p in list(optimizer.state.keys()):
            if p not in self.state_values:  # state the sweep created
                del optimizer.state[p]
        saved_names = {(p, name) for p, name, _ in self.state_names}
        for p, values in self.state_values.items():
            live_state = optimizer.state[p]
            for name in list(live_state):
                if name not in values and (p, name) not in saved_names:
                    del live_state[name]
            for name, v in values.items():
                live_state[name] = copy.deepcopy(v)
        for p, name, i in self.state_names:
            live = optimizer.state[p].get(name)
            if torch.is_tensor(live) and (live.dtype, live.shape) == self.copies.dtype_and_shape(i):
                in_place.append((live, i))  # the tensor keeps its identity
            else:
                optimizer.state[p][name] = self.copies.fresh(i)
        self.copies.restore(in_place)
        for group, settings, lr_tensor in zip(optimizer.param_groups, self.groups, self.group_lr_tensors):
            for k in list(group):
                if k != "params" and k not in settings:
                    del group[k]
            for k, v in settings.items():
                if k == "lr" and lr_tensor is not None:
                    lr_tensor.copy_(v)  # keep the tensor's identity (compiled/captured steps hold it)
                    group["lr"] = lr_tensor
                else:
                    group[k] = copy.deepcopy(v)
        for module, training in self.training:
            module.training = training
        torch.set_rng_state(self.cpu_rng)
        if self.cuda_rng is not None:
            torch.cuda.set_rng_state_all(self.cuda_rng)


def model_tensors(model: torch.nn.Module) -> List[torch.Tensor]:
    """Parameters and buffers, each once (tied weights are one tensor)."""
    seen: Dict[int, torch.Tensor] = {}
    for t in list(model.parameters()) + list(model.buffers()):
        seen.setdefault(id(t), t)
    return list(seen.values())
