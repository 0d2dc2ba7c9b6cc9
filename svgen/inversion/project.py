"""Optimisation-based refinement of encoder latents (StyleGAN2 projector schedule, per video chunk).

Starting from the encoder's codes for a run of consecutive frames, Adam optimises the latents
against the frames through the frozen generator (``noise_mode="const"``):

    L = mean_i L_img(G(w_i + n_i), x_i) + lambda_t * sum_i ||w_i - w_{i-1}||^2 / N

- L_img is the reconstruction loss (pixel L2 + MS-SSIM, plus LPIPS/ID when their weights are given).
- n_i is the projector's noise regularisation of the latents: Gaussian noise with per-entry std
  latent_noise * w_std * max(0, 1 - t / 0.75)^2 (t = step / steps; w_std is the per-entry spread of
  mapped latents), strongest at the start and gone by the end. It is off by default: in the short
  per-chunk runs used for videos (25 steps, tiny preset on real frames) a per-entry noise of
  0.05-0.1 w_std raised the error by 5-10% and the frame-to-frame jitter 1.3-2.5x. The projector's
  per-layer noise *maps* are not optimised: the store keeps only latents and every renderer uses
  the generator's constant noise, so optimised maps would be thrown away (and differ per chunk).
- The learning rate ramps up over the first 5% and down (cosine) over the last 25% of the steps.
- The temporal term ties neighbouring frames together (also the first frame of the chunk to the
  already-final latent ``prev`` of the frame before it), which removes frame-to-frame jitter.

Randomness comes from an explicit ``torch.Generator`` so a chunk refines to the same result in a
resumed run as in an uninterrupted one.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from svgen.inversion.losses import ReconstructionLoss


@dataclass
class RefineConfig:
    """Refinement settings (schedule shapes from stylegan2-ada's projector; lr and noise chosen
    for short runs)."""

    steps: int = 0
    lr: float = 0.02
    latent_noise: float = 0.0      # initial w-noise, as a fraction of w_std (projector: 0.05)
    noise_ramp: float = 0.75       # fraction of the steps over which the w-noise decays to 0
    lr_rampdown: float = 0.25
    lr_rampup: float = 0.05
    temporal_weight: float = 0.0   # lambda_t of the neighbour-smoothness term


@torch.no_grad()
def estimate_w_std(G: nn.Module, num_samples: int = 2000, seed: int = 123) -> float:
    """Per-entry RMS spread of mapped latents around ``w_avg`` (the projector's w_std / sqrt(w_dim))."""
    device = G.mapping.w_avg.device
    gen = torch.Generator(device="cpu").manual_seed(seed)
    z = torch.randn(num_samples, G.z_dim, generator=gen).to(device)
    w = G.mapping(z, None)[:, 0]  # [S, w_dim]
    return float((w - G.mapping.w_avg).square().mean().sqrt())


def _lr_at(t: float, cfg: RefineConfig) -> float:
    ramp = min(1.0, (1.0 - t) / cfg.lr_rampdown) if cfg.lr_rampdown > 0 else 1.0
    ramp = 0.5 - 0.5 * math.cos(ramp * math.pi)
    if cfg.lr_rampup > 0:
        ramp = ramp * min(1.0, t / cfg.lr_rampup)
    return cfg.lr * ramp


def temporal_energy(w: torch.Tensor, prev: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Sum over neighbouring frames of the mean squared latent step (w: [N, ...])."""
    if prev is not None:
        w = torch.cat([prev.unsqueeze(0).to(w), w], 0)
    if len(w) < 2:
        return w.new_zeros(())
    return (w[1:] - w[:-1]).square().flatten(1).mean(1).sum()


def broadcast_ws(w: torch.Tensor, num_ws: int) -> torch.Tensor:
    """[N, w_dim] (W) -> [N, num_ws, w_dim]; W+ passes through."""
    return w.unsqueeze(1).expand(-1, num_ws, -1) if w.ndim == 2 else w


def refine_latents(G: nn.Module, w_init: torch.Tensor, targets: torch.Tensor, cfg: RefineConfig,
                   loss: Optional[ReconstructionLoss] = None, w_std: Optional[float] = None,
                   prev: Optional[torch.Tensor] = None,
                   generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Refine latents of consecutive frames.

    w_init: [N, num_ws, w_dim] (W+) or [N, w_dim] (W); targets: [N, 3, R, R] in [-1, 1] at the
    generator's resolution; prev: the final latent of the frame before this chunk (same space) or
    None. Returns the refined latents, detached, in the shape of ``w_init``.
    """
    if cfg.steps <= 0:
        return w_init.detach()
    loss = loss if loss is not None else ReconstructionLoss(device=w_init.device)
    if w_std is None and cfg.latent_noise > 0:
        w_std = estimate_w_std(G)
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    w = w_init.detach().clone().float().requires_grad_(True)
    targets = targets.detach().float()
    opt = torch.optim.Adam([w], lr=cfg.lr, betas=(0.9, 0.999))
    n = len(w)
    for step in range(cfg.steps):
        t = step / cfg.steps
        for group in opt.param_groups:
            group["lr"] = _lr_at(t, cfg)
        w_in = w
        if cfg.latent_noise > 0:
            noise_scale = w_std * cfg.latent_noise * max(0.0, 1.0 - t / cfg.noise_ramp) ** 2
            w_in = w + torch.randn(w.shape, generator=gen).to(w) * noise_scale
        img = G.synthesis(broadcast_ws(w_in, G.num_ws), noise_mode="const")
        img_loss, _ = loss(img, targets)
        total = img_loss.mean()
        if cfg.temporal_weight > 0:
            total = total + cfg.temporal_weight * temporal_energy(w, prev) / n
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
    return w.detach()
