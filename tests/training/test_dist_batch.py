"""Data-parallel building blocks: each process's share of a global batch, and BatchNorm over the global
batch in two gloo processes (the CPU stand-in for SyncBatchNorm)."""
from __future__ import annotations

import copy
import socket

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from svgen.stage2_motion.styleinv.disc import _minibatch_std
from svgen.training.dist import Dist
from svgen.training.sync_bn import GlobalBatchNorm, convert_batchnorm
from svgen.utils.errors import SvgenError


def _dist(rank: int, world: int) -> Dist:
    return Dist(rank=rank, world_size=world, device=torch.device("cpu"))


def test_shares_cover_the_batch_once_and_keep_minibatch_std_groups():
    """Two processes' shares are disjoint, cover the global batch, and each process's minibatch-std
    groups (stride n / G) are groups of the whole batch, so D's statistics are those of one process."""
    x = torch.randn(16, 5)
    parts = [_dist(r, 2).share(x, groups=4) for r in range(2)]
    idx = torch.cat([_dist(r, 2).share_index(16, 4) for r in range(2)])
    assert sorted(idx.tolist()) == list(range(16))
    assert torch.equal(_dist(0, 2).share_index(8, 1), torch.arange(4))    # no groups: contiguous halves
    whole = _minibatch_std(x, 4)                                          # [16, 1]
    for r, part in enumerate(parts):
        torch.testing.assert_close(_minibatch_std(part, 4), whole[_dist(r, 2).share_index(16, 4)], rtol=0, atol=1e-6)
    assert _dist(0, 1).share(x, groups=4) is x
    with pytest.raises(SvgenError, match="not a multiple of the minibatch-std group 4"):
        _dist(0, 2).share_index(4, 4)
    with pytest.raises(SvgenError, match="does not split evenly over 2 processes"):
        _dist(0, 2).share_index(5)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _bn_worker(rank: int, world: int, port: int, results: dict) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                                         world_size=world)
    try:
        torch.manual_seed(0)
        net = nn.Sequential(nn.Conv2d(3, 6, 3), nn.BatchNorm2d(6), nn.PReLU(6), nn.Conv2d(6, 4, 1),
                            nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 36, 5), nn.BatchNorm1d(5))
        ref = copy.deepcopy(net)
        x = torch.randn(8, 3, 8, 8) * 2 + 0.5
        target = torch.randn(8, 5)
        shard = slice(4 * rank, 4 * rank + 4)
        part = convert_batchnorm(net, _dist(rank, world))
        assert isinstance(part[1], GlobalBatchNorm) and isinstance(part[7], GlobalBatchNorm)
        xs = x[shard].clone().requires_grad_(True)
        out = part(xs)
        (out - target[shard]).square().mean().backward()     # each process: the mean over its half
        xr = x.clone().requires_grad_(True)
        out_ref = ref(xr)
        (out_ref - target).square().mean().backward()         # one process: the mean over all 8
        for p in part.parameters():                            # average over processes, as the trainers do
            torch.distributed.all_reduce(p.grad)
            p.grad /= world
        scale = lambda t: t.abs().max().item() + 1e-12        # noqa: E731
        err = {"out": (out - out_ref[shard]).abs().max().item() / scale(out_ref),
               # the input's gradient sums every process's loss (through the shared statistics)
               "x.grad": (xs.grad / world - xr.grad[shard]).abs().max().item() / scale(xr.grad)}
        for (name, p), q in zip(part.named_parameters(), ref.parameters()):
            if name.endswith("bias") and name.startswith(("0.", "3.", "4.", "6.")):
                continue   # shifts that a later BatchNorm removes have no gradient (both are rounding noise)
            err[name] = (p.grad - q.grad).abs().max().item() / scale(q.grad)
        for (name, b), q in zip(part.named_buffers(), ref.buffers()):
            err[name] = (b.double() - q.double()).abs().max().item() / (q.double().abs().max().item() + 1e-12)
        results[rank] = err
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_global_batchnorm_equals_batchnorm_over_the_whole_batch():
    """Two gloo processes with half a batch each: outputs, input and parameter gradients and the
    running statistics equal plain BatchNorm over the whole batch in one process, to float rounding
    (relative 1e-5: the sums run in another order)."""
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_bn_worker, args=(2, _free_port(), results), nprocs=2)
        results = dict(results)
    for rank in (0, 1):
        assert "1.running_var" in results[rank] and "7.num_batches_tracked" in results[rank]
        bad = {k: v for k, v in results[rank].items() if not v <= 1e-5}
        assert not bad, bad
