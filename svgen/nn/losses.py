"""The GAN losses shared by stage 1, the e4e latent discriminator and StyleInV.

* non-saturating logistic loss (Goodfellow et al. 2014): L_G = softplus(-D(G(z))),
  L_D = softplus(D(G(z))) + softplus(-D(x));
* R1 (Mescheder et al. 2018): ||dD(x)/dx||^2 on reals, weighted gamma/2 by the caller (and by the
  lazy-regularisation interval when it runs every k steps);
* path length regularisation (Karras et al. 2020, §3.2): (||J_w^T y|| - a)^2 for y ~ N(0, I)/sqrt(HW),
  with ``a`` a running mean of the lengths.

Per-sample functions return one value per sample; the caller reduces.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F


def g_nonsaturating_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """softplus(-D(G(z))) per sample (= -log sigmoid(D(G(z))))."""
    return F.softplus(-fake_logits)


def d_logistic_real(real_logits: torch.Tensor) -> torch.Tensor:
    """The real half of the logistic D loss, softplus(-D(x)), per sample."""
    return F.softplus(-real_logits)


def d_logistic_fake(fake_logits: torch.Tensor) -> torch.Tensor:
    """The fake half of the logistic D loss, softplus(D(G(z))), per sample."""
    return F.softplus(fake_logits)


def d_logistic_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """mean softplus(D(G(z))) + mean softplus(-D(x)) (a scalar; the batches may differ in size)."""
    return d_logistic_fake(fake_logits).mean() + d_logistic_real(real_logits).mean()


def r1_penalty(logits: torch.Tensor, inputs: torch.Tensor,
               scale: Optional[torch.Tensor] = None) -> torch.Tensor:
    """||dD(x)/dx||^2 per sample [N], summed over every other dimension of ``inputs``.

    ``inputs`` must require grad; the graph is kept for backward. ``scale`` (broadcastable to
    ``inputs``) measures the gradient with respect to ``inputs / scale`` instead (standardised codes).
    """
    (grads,) = torch.autograd.grad(logits.sum(), inputs, create_graph=True)
    if scale is not None:
        grads = grads * scale
    return grads.square().flatten(1).sum(1)


def path_lengths(img: torch.Tensor, ws: torch.Tensor,
                 noise: Optional[torch.Tensor] = None) -> torch.Tensor:
    """||J_w^T y|| per sample [N] for y ~ N(0, I)/sqrt(H W) (``noise`` overrides y).

    ``img`` [N, C, H, W] must be a differentiable function of ``ws`` [N, num_ws, w_dim]; the
    squared gradient is summed over w_dim and averaged over the num_ws vectors.
    """
    if noise is None:
        noise = torch.randn_like(img) / math.sqrt(img.shape[2] * img.shape[3])
    (grads,) = torch.autograd.grad((img * noise).sum(), ws, create_graph=True)  # [N, num_ws, w_dim]
    return grads.square().sum(dim=2).mean(dim=1).sqrt()


def path_length_penalty(lengths: torch.Tensor, pl_mean: torch.Tensor, decay: float = 0.01,
                        mean_length: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(penalty [N] = (length - a)^2, updated a = lerp(pl_mean, mean length, decay)).

    ``mean_length`` replaces ``lengths.mean()`` (multi-process runs pass the mean over processes).
    """
    a = pl_mean.lerp(lengths.mean() if mean_length is None else mean_length, decay)
    return (lengths - a).square(), a
