"""Exponential moving averages of a network's weights (the copy that is sampled and exported).

One update, ``p_ema = lerp(p, p_ema, beta)`` for parameters and a copy for buffers, and two published
schedules for ``beta``:

- :func:`half_life_beta` (StyleGAN2-ADA): a half-life of ``half_life_kimg`` thousand samples, shortened
  to ``rampup * samples seen`` early in training; stage 1, the encoders and StyleInV use it;
- :func:`warmup_beta` (TensorFlow's ``ExponentialMovingAverage(num_updates=...)``):
  ``min(target, (1 + k) / (10 + k))`` after ``k`` updates; the GRU motion model uses it.
"""
from __future__ import annotations

from typing import Optional

import torch


def half_life_beta(batch: int, samples_seen: int, half_life_kimg: float, rampup: Optional[float]) -> float:
    """Per-step decay for a half-life of ``half_life_kimg`` thousand samples at ``batch`` samples per step;
    with ``rampup`` the half-life is at most ``rampup * samples_seen`` (None: no ramp-up)."""
    ema_nimg = half_life_kimg * 1000
    if rampup is not None:
        ema_nimg = min(ema_nimg, samples_seen * rampup)
    return 0.5 ** (batch / max(ema_nimg, 1e-8))


def warmup_beta(target: float, num_updates: int) -> float:
    """``min(target, (1 + k) / (10 + k))``: the average does not trail the first updates (0.995 holds
    from k ~ 1800 on)."""
    return min(float(target), (1.0 + num_updates) / (10.0 + num_updates))


@torch.no_grad()
def update_ema(ema: torch.nn.Module, model: torch.nn.Module, beta: float) -> None:
    """Parameters: ``p_ema = lerp(p, p_ema, beta)``; buffers (running statistics, w_avg, ...) are copied."""
    for p_ema, p in zip(ema.parameters(), model.parameters()):
        p_ema.copy_(p.detach().lerp(p_ema, beta))
    for b_ema, b in zip(ema.buffers(), model.buffers()):
        b_ema.copy_(b)
