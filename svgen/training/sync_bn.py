"""BatchNorm over the global batch of a data-parallel run.

A BatchNorm layer in training mode normalises with the statistics of the batch it sees; in a run of N
processes each process sees 1/N of the batch, so plain BatchNorm would give other activations (and other
gradients) than one process with the whole batch. :func:`convert_batchnorm` swaps every BatchNorm of a
module for one that uses the global batch: torch's ``SyncBatchNorm`` on CUDA (it needs NCCL), and
:class:`GlobalBatchNorm` elsewhere (gloo on CPU), which all-reduces the per-channel sums with the
differentiable all-reduce below, so the backward pass also sums the statistics' gradients over
processes. Both are exactly BatchNorm over the global batch (up to float
summation order); state-dict keys are unchanged, so checkpoints load into plain BatchNorm.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from svgen.training.dist import Dist


class _AllReduceSum(torch.autograd.Function):
    """Sum over processes; its gradient is the sum of the processes' gradients (each process's loss
    depends on every process's input through the sum)."""

    @staticmethod
    def forward(ctx: Any, t: torch.Tensor) -> torch.Tensor:
        t = t.clone(memory_format=torch.contiguous_format)
        torch.distributed.all_reduce(t)
        return t

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return _AllReduceSum.apply(grad)


def _all_reduce(t: torch.Tensor) -> torch.Tensor:
    return _AllReduceSum.apply(t)


class GlobalBatchNorm(_BatchNorm):
    """BatchNorm (any of 1d/2d/3d) whose training-mode statistics are those of the batch over all
    processes: mean, biased variance for normalising, unbiased variance for the running estimate."""

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {x.dim()}D input)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(x)
        if not (self.training and torch.distributed.is_initialized()
                and torch.distributed.get_world_size() > 1):
            return super().forward(x)
        dims = [0] + list(range(2, x.dim()))
        shape = [1, -1] + [1] * (x.dim() - 2)
        count = _all_reduce(torch.tensor([x.numel() / x.shape[1]], dtype=x.dtype, device=x.device))
        mean = _all_reduce(x.sum(dims)) / count                          # two passes: the variance is
        xc = x - mean.view(shape)                                         # summed around the global mean
        var = _all_reduce(xc.square().sum(dims)) / count
        y = xc * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                n = float(count)
                self.running_mean.lerp_(mean.detach(), m)
                self.running_var.lerp_(var.detach() * (n / max(n - 1, 1)), m)
        return y


def convert_batchnorm(module: nn.Module, dist: Dist) -> nn.Module:
    """``module`` with every BatchNorm replaced by its global-batch version (in place for children;
    returns the possibly new root). A single process keeps plain BatchNorm."""
    if dist.world_size == 1:
        return module
    if dist.device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return _swap(module)


def _swap(module: nn.Module) -> nn.Module:
    out = module
    if isinstance(module, _BatchNorm) and not isinstance(module, GlobalBatchNorm):
        out = GlobalBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                              module.track_running_stats, device=next(module.buffers(), torch.empty(0)).device)
        out.load_state_dict(module.state_dict())
        if module.affine:
            out.weight.requires_grad_(module.weight.requires_grad)
            out.bias.requires_grad_(module.bias.requires_grad)
        out.train(module.training)
    for name, child in module.named_children():
        out.add_module(name, _swap(child))
    return out
