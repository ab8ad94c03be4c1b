"""The finder's snapshot: plain CPU tensors go through the native arena and copy, the others through
torch; either way the restore is bitwise, into the same tensors (same object, same address)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from pylrcore import _core  # noqa: E402
from pylrcore.torch._snapshot import Snapshot, model_tensors  # noqa: E402


class Mixed(torch.nn.Module):
    """Parameters and buffers of several dtypes, one not contiguous (it takes the torch path)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.lin = torch.nn.Linear(6, 4)
        self.bf16 = torch.nn.Parameter(torch.randn(5, dtype=torch.bfloat16))
        self.wide = torch.nn.Parameter(torch.randn(3, 2, dtype=torch.float64))
        self.register_buffer("count", torch.tensor(7, dtype=torch.int64))
        self.register_buffer("mask", torch.tensor([True, False, True]))
        self.register_buffer("strided", torch.randn(4, 3).t())
        self.register_buffer("empty", torch.empty(0))

    def forward(self, x):
        return self.lin(x).sum() + self.bf16.float().sum() + self.wide.sum().float()


def scribble(model, opt):
    """What a sweep does: change every tensor in place, and change the optimizer's state."""
    with torch.no_grad():
        for t in model_tensors(model):
            if t.dtype == torch.bool:
                t.logical_not_()
            elif t.numel():
                t.add_(1)
    for state in opt.state.values():
        for v in state.values():
            if torch.is_tensor(v):
                v.add_(3)


def trained(model, opt, steps=2):
    for _ in range(steps):
        opt.zero_grad()
        model(torch.randn(2, 6)).backward()
        opt.step()


def test_every_tensor_comes_back_bitwise_at_the_same_address():
    model = Mixed()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    trained(model, opt)
    tensors = model_tensors(model)
    state = {(id(p), n): v for p, s in opt.state.items() for n, v in s.items()}
    before = [t.detach().clone() for t in tensors]
    state_before = {k: v.clone() for k, v in state.items()}
    addresses = [t.data_ptr() for t in tensors]

    snap = Snapshot(model, opt, to_cpu=False).take()
    assert len(snap.copies.cloned) == 2  # the transposed buffer and the empty one take the torch path
    scribble(model, opt)
    versions = [t._version for t in tensors]
    snap.restore()

    for t, b, a, v in zip(tensors, before, addresses, versions):
        assert torch.equal(t, b) and t.data_ptr() == a
        assert t._version > v  # marked as modified in place, as copy_ would have done
    for (pid, name), v in {(id(p), n): v for p, s in opt.state.items() for n, v in s.items()}.items():
        assert v is state[(pid, name)]  # Adam's step, exp_avg, exp_avg_sq: the same tensors
        assert torch.equal(v, state_before[(pid, name)])


def test_state_the_sweep_replaced_or_created_is_put_back():
    model = Mixed()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    trained(model, opt, steps=1)
    p = model.lin.weight
    momentum = opt.state[p]["momentum_buffer"].clone()
    snap = Snapshot(model, opt, to_cpu=False).take()
    opt.state[p]["momentum_buffer"] = torch.zeros(2)  # another shape: cannot be restored in place
    opt.state[p]["extra"] = torch.ones(1)
    new = torch.nn.Parameter(torch.zeros(1))
    opt.state[new]["momentum_buffer"] = torch.zeros(1)
    snap.restore()
    assert torch.equal(opt.state[p]["momentum_buffer"], momentum)
    assert "extra" not in opt.state[p] and new not in opt.state
    snap.restore()  # the fresh tensor is not a view into the snapshot
    assert opt.state[p]["momentum_buffer"]._base is None


def test_a_large_model_is_copied_by_several_threads_and_restored(monkeypatch):
    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Linear(1024, 2048), torch.nn.Linear(2048, 1024))  # 4.2M params, 17 MB
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    opt.zero_grad()
    model(torch.randn(2, 1024)).sum().backward()
    opt.step()
    monkeypatch.setattr("pylrcore.torch._snapshot._copy_threads", lambda: 4)
    before = [t.detach().clone() for t in model_tensors(model)]
    snap = Snapshot(model, opt, to_cpu=False).take()
    scribble(model, opt)
    snap.restore()
    assert all(torch.equal(a, b) for a, b in zip(before, model_tensors(model)))


def test_a_second_snapshot_reuses_the_first_ones_memory_and_restores_exactly():
    """A released snapshot's mapping is kept and refilled by the next one (its pages hold the old bytes,
    or zeros where the kernel took them back): every byte is written before it is read."""
    torch.manual_seed(2)
    model = torch.nn.Sequential(torch.nn.Linear(1024, 2048), torch.nn.Linear(2048, 1024))  # 17 MB: streamed
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    model(torch.randn(2, 1024)).sum().backward()
    opt.step()
    _core.Arena.release_spare()
    first = Snapshot(model, opt).take()
    assert first.copies is not None and first.copies.host is not None
    assert not first.copies.host.arena.reused
    scribble(model, opt)  # the second snapshot records other values than the first
    before = [t.detach().clone() for t in model_tensors(model)]
    momentum = [s["momentum_buffer"].clone() for s in opt.state.values()]
    del first
    assert _core.Arena.spare_bytes() > 0
    snap = Snapshot(model, opt).take()
    assert snap.copies is not None and snap.copies.host is not None and snap.copies.host.arena.reused
    scribble(model, opt)
    snap.restore()
    assert all(torch.equal(a, b) for a, b in zip(before, model_tensors(model)))
    assert all(torch.equal(a, s["momentum_buffer"]) for a, s in zip(momentum, opt.state.values()))
    _core.Arena.release_spare()
    assert _core.Arena.spare_bytes() == 0


def test_native_copy_rejects_mismatched_tables():
    with pytest.raises(ValueError, match="same length"):
        _core.copy_spans([1], [], [], 1)
    with pytest.raises(ValueError, match="null address"):
        _core.copy_spans([0], [0], [8], 1)
    arena = _core.Arena(100)
    assert arena.nbytes == 100 and bytes(memoryview(arena)) == bytes(100)
