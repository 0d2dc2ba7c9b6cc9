"""Data-parallel processes: one per device, launched by ``torchrun`` (or spawned by the CLI), gradients
averaged with ``torch.distributed`` (gloo on CPU, nccl on CUDA). A single process is the world of one."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Iterable

import torch

from svgen.training.optim import scrub_gradients
from svgen.utils.device import select_device
from svgen.utils.errors import SvgenError


@dataclass
class Dist:
    """This process's place in a (possibly single-process) data-parallel run."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        if self.world_size == 1:
            return t
        buf = t.to(self.device).clone()
        torch.distributed.all_reduce(buf)
        return buf.to(t.device)

    def all_reduce_mean(self, t: torch.Tensor) -> torch.Tensor:
        return self.all_reduce_sum(t) / self.world_size if self.world_size > 1 else t

    def share_index(self, n: int, groups: int = 1) -> torch.Tensor:
        """Positions of this process's part of a global batch of ``n`` samples.

        Every process draws the random numbers of the whole global batch from the shared seed and
        keeps its part, so N processes together see exactly the samples (and randoms) of one process
        with the whole batch. ``groups`` > 1 keeps minibatch-std groups whole: the discriminators
        group sample ``i`` with ``i + k n / groups``, so process ``r`` takes ``[groups, N, n_l][:, r]``
        and its groups are the global ones."""
        if n % self.world_size:
            raise SvgenError(f"batch {n} does not split evenly over {self.world_size} processes")
        per = n // self.world_size
        groups = max(1, groups)
        if per % groups:
            raise SvgenError(f"batch {n} over {self.world_size} processes gives {per} per process, "
                             f"not a multiple of the minibatch-std group {groups}")
        idx = torch.arange(n).view(groups, self.world_size, per // groups)
        return idx[:, self.rank].reshape(-1)

    def share(self, x: torch.Tensor | list, groups: int = 1) -> torch.Tensor | list:
        """This process's part (:meth:`share_index`) of a global batch ``x [n, ...]`` (a tensor or a list)."""
        if self.world_size == 1:
            return x
        if isinstance(x, list):
            return [x[i] for i in self.share_index(len(x), groups).tolist()]
        return x[self.share_index(x.shape[0], groups).to(x.device)]

    def mean_stats(self, stats: dict) -> dict:
        """Float statistics averaged over processes (for logs; every process must call it)."""
        if self.world_size == 1 or not stats:
            return stats
        keys = sorted(stats)
        vals = self.all_reduce_mean(torch.tensor([float(stats[k]) for k in keys], dtype=torch.float64))
        return dict(zip(keys, vals.tolist()))

    def gather(self, obj: Any) -> list:
        if self.world_size == 1:
            return [obj]
        out: list = [None] * self.world_size
        torch.distributed.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.world_size > 1:
            torch.distributed.barrier()

    def close(self) -> None:
        """Leave the process group (after a final barrier)."""
        if self.world_size > 1:
            torch.distributed.barrier()
            torch.distributed.destroy_process_group()


def init_distributed(device_name: str) -> Dist:
    """Join the process group that ``torchrun`` set up (env WORLD_SIZE/RANK/LOCAL_RANK), if any."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    device = select_device(device_name)
    if world > 1:
        if device.type == "cuda":
            local_rank = int(os.environ.get("LOCAL_RANK", "0"))
            if local_rank >= torch.cuda.device_count():
                raise SvgenError(f"process {rank} needs GPU {local_rank} but only "
                                 f"{torch.cuda.device_count()} are visible")
            device = torch.device("cuda", local_rank)
            torch.cuda.set_device(device)
        if not torch.distributed.is_initialized():
            torch.distributed.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Dist(rank=rank, world_size=world, device=device)


def init_distributed_on(device: torch.device) -> Dist:
    """:func:`init_distributed` for trainers given a device: under ``torchrun`` (WORLD_SIZE > 1) join the
    group on this process's device; otherwise a world of one on ``device`` itself."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return init_distributed(torch.device(device).type)
    return Dist(rank=0, world_size=1, device=torch.device(device))


def reduce_gradients(params: Iterable[torch.nn.Parameter], dist: Dist) -> None:
    """Average gradients over processes (one flat all-reduce) and scrub NaN/inf as
    :func:`~svgen.training.optim.scrub_gradients` does. Parameters without a gradient keep none (as in
    one process, where Adam skips them); every process has the same graph, so the same ones."""
    params = [p for p in params if p.grad is not None]
    if dist.world_size == 1 or not params:
        scrub_gradients(params)
        return
    flat = torch.cat([p.grad.flatten() for p in params])
    torch.distributed.all_reduce(flat)
    flat /= dist.world_size
    torch.nan_to_num(flat, nan=0, posinf=1e5, neginf=-1e5, out=flat)
    for p, g in zip(params, flat.split([p.numel() for p in params])):
        p.grad = g.view_as(p)


def check_consistency(modules: list[torch.nn.Module], dist: Dist) -> None:
    """All processes must end with identical parameters (a broken all-reduce would show here)."""
    if dist.world_size == 1:
        return
    with torch.no_grad():
        sums = torch.stack([p.double().sum() for m in modules for p in m.parameters()]).cpu()
    all_sums = dist.gather(sums)
    if any(not torch.equal(s, all_sums[0]) for s in all_sums[1:]):
        raise SvgenError("processes ended with different weights (distributed training is broken)")
