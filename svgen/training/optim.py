"""Optimiser pieces shared by the GAN trainers: lazy-regularised Adam and gradient scrubbing."""
from __future__ import annotations

from typing import Callable, Iterable, Optional

import torch


def lazy_regularised_adam(params: Iterable[torch.nn.Parameter], lr: float, betas: tuple[float, float],
                          reg_interval: int, eps: float = 1e-8) -> torch.optim.Adam:
    """Adam for a network whose regulariser runs every ``reg_interval`` steps (StyleGAN2, App. B):
    with ``r = I / (I + 1)`` the learning rate becomes ``lr * r`` and the betas ``beta ** r``, so the
    optimiser's time scale matches an every-step regularisation. ``reg_interval <= 0``: plain Adam."""
    r = reg_interval / (reg_interval + 1) if reg_interval > 0 else 1.0
    return torch.optim.Adam(params, lr=lr * r, betas=(betas[0] ** r, betas[1] ** r), eps=eps)


def scrub_gradients(params: Iterable[torch.nn.Parameter]) -> None:
    """Replace NaN by 0 and +-inf by +-1e5 in every gradient, in place (as StyleGAN2-ADA and
    StyleGAN-V do before each optimiser step: one bad sample must not poison the weights)."""
    for p in params:
        if p.grad is not None:
            torch.nan_to_num(p.grad, nan=0, posinf=1e5, neginf=-1e5, out=p.grad)


def optimizer_step(opt: torch.optim.Optimizer, params: Iterable[torch.nn.Parameter], loss: torch.Tensor,
                   reduce: Optional[Callable[[list], None]] = None) -> None:
    """``zero_grad``, ``backward``, :func:`scrub_gradients` (or ``reduce``, which averages the gradients
    over processes and scrubs them: :func:`~svgen.training.dist.reduce_gradients`), ``step``."""
    params = list(params)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if reduce is not None:
        reduce(params)
    else:
        scrub_gradients(params)
    opt.step()
