"""The guard under DDP for real: 2 CPU processes on the gloo backend, different data shards. A NaN
injected on one rank only (a gradient element after the all-reduce on rank 1; a loss on rank 0) makes
both ranks skip that same step, and the replicas stay bitwise identical."""

from __future__ import annotations

from pathlib import Path

import pytest
from procs import DDP_HEAD, run_ranks

torch = pytest.importorskip("torch")

# slow: two torch.distributed (gloo) processes; CI runs it (pytest -m "not slow" leaves it out)
pytestmark = pytest.mark.slow

if not torch.distributed.is_available():
    pytest.skip("torch.distributed is not available", allow_module_level=True)

WORKER = DDP_HEAD + r"""
from pylrcore.torch import Guard
net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
model = torch.nn.parallel.DistributedDataParallel(net)
opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
guard = Guard(opt, model)
g = torch.Generator().manual_seed(100 + rank)  # a different shard on every rank
unchanged = {}
for step in range(20):
    x = torch.randn(32, 8, generator=g)
    y = x.sum(dim=1, keepdim=True)
    opt.zero_grad()
    loss = torch.nn.functional.mse_loss(model(x), y)
    loss.backward()
    if step == 7 and rank == 1:
        net[0].weight.grad[3, 2] = float("nan")  # after DDP's all-reduce: only this rank sees it
    reported = float("nan") if (step == 12 and rank == 0) else loss
    before = [p.detach().clone() for p in net.parameters()]
    guard.check(reported)
    opt.step()
    if step in (7, 12):
        unchanged[step] = all(torch.equal(a, b) for a, b in zip(before, net.parameters()))
flat = torch.cat([p.detach().flatten() for p in net.parameters()])
gathered = [torch.empty_like(flat) for _ in range(world)]
dist.all_gather(gathered, flat)
with open(out, "w") as fh:
    json.dump({"events": [[e.step, e.kind, e.action] for e in guard.events], "unchanged": unchanged,
               "identical": all(torch.equal(gathered[0], t) for t in gathered),
               "finite": bool(torch.isfinite(flat).all()), "skipped": guard.skipped, "losses": list(guard.losses)}, fh)
dist.barrier()  # neither rank tears gloo down while the other still talks (a crash at exit otherwise)
dist.destroy_process_group()
# Skip the interpreter's teardown: gloo's threads abort it now and then ("terminate called without
# an active exception", about 1 run in 50 on a loaded 2-core machine), after every result is written.
os._exit(0)
"""


def test_a_nan_on_one_rank_is_skipped_by_both_ranks_on_the_same_step(tmp_path: Path) -> None:
    r0, r1 = run_ranks(WORKER, tmp_path)
    expected = [[7, "nonfinite_grad", "skip"], [12, "nonfinite_loss", "skip"]]
    assert r0["events"] == r1["events"] == expected
    assert r0["unchanged"] == r1["unchanged"] == {"7": True, "12": True}
    assert r0["identical"] and r1["identical"] and r0["finite"]
    assert r0["skipped"] == r1["skipped"] == 2
    assert r0["losses"][:7] == r1["losses"][:7]  # the agreed (all-reduced mean) loss, the same on both ranks
