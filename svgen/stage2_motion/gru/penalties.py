"""Loss terms of StyleVideoGAN (§3 "Loss Terms & Training"):

    L = L_WGAN + lambda_GP L_GP + lambda_GAP L_GAP,   lambda_GP = 50, lambda_GAP = 100

- WGAN-GP (Gulrajani et al. 2017): the critic's gradient norm at random interpolates between real
  and fake windows is pulled to 1.
- Gradient angle penalty: with d = |norm(l_{t-1} - l_0)| (components normalised by running
  statistics), phi = arctan(|dd/d(s_0..s_{t-2})| / |dd/di|) and L_GAP = max(0, pi/4 - phi)^2. It
  keeps the per-step noise s at least as influential as the initial code i, which prevents looping.

Both terms differentiate a gradient, so they need second derivatives through G (the GRU) or C.
"""
from __future__ import annotations

import math

import torch
from torch import nn


def wgan_critic_loss(c_real: torch.Tensor, c_fake: torch.Tensor) -> torch.Tensor:
    """Critic side of the Wasserstein loss: E[C(fake)] - E[C(real)]."""
    return c_fake.mean() - c_real.mean()


def wgan_generator_loss(c_fake: torch.Tensor) -> torch.Tensor:
    """Generator side: -E[C(G(i, s))]."""
    return -c_fake.mean()


def gradient_penalty(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor,
                     generator: torch.Generator | None = None,
                     input_scale: float | torch.Tensor = 1.0) -> torch.Tensor:
    """L_GP = E[(|grad_x C(x_hat)|_2 - 1)^2] at x_hat = eps real + (1 - eps) fake, eps ~ U(0, 1) per sample.

    ``input_scale`` s measures the gradient with respect to x / s: 1 (default) is the paper's
    penalty on raw inputs; the motion trainer's ``penalty_units="normalised"`` option passes the
    critic's w_std, which holds C 1-Lipschitz in normalised latents instead (a weaker constraint in
    raw units, see ``train.py``). ``create_graph=True`` so the penalty's own gradient reaches the
    critic's parameters.
    """
    b = real.shape[0]
    eps = torch.rand((b,) + (1,) * (real.dim() - 1), generator=generator, dtype=real.dtype)
    eps = eps.to(real.device)
    x_hat = (eps * real.detach() + (1 - eps) * fake.detach()).requires_grad_(True)
    scores = critic(x_hat)
    (grad,) = torch.autograd.grad(scores.sum(), x_hat, create_graph=True)
    norms = grad.reshape(b, -1).norm(dim=1) * input_scale
    return ((norms - 1.0) ** 2).mean()


def gradient_penalty_first_layer(critic: nn.Module, h_real: torch.Tensor, h_fake: torch.Tensor,
                                 generator: torch.Generator | None = None,
                                 input_scale: float | torch.Tensor = 1.0) -> torch.Tensor:
    """``gradient_penalty(critic, real, fake, input_scale=input_scale)`` computed after the critic's
    first linear layer (same value).

    With h1 = W1 x + b1 affine in the normalised input x = (w - w_mean) / w_std, the interpolate's
    h1 is the same interpolation of h_real and h_fake ([B, t, H1]), and grad_x C = W1^T grad_h1 C,
    whose squared norm is grad_h1^T K grad_h1 with K = ``critic.input_gram()``; the gradient with
    respect to w / s is that times s / w_std. No [B, t, num_ws * w_dim] tensor is formed; gradients
    reach W1 through both h and K. The same eps draws as ``gradient_penalty``.
    """
    b = h_real.shape[0]
    eps = torch.rand((b,) + (1,) * (h_real.dim() - 1), generator=generator, dtype=h_real.dtype)
    eps = eps.to(h_real.device)
    h_hat = eps * h_real + (1 - eps) * h_fake
    scores = critic.from_first_layer(h_hat)
    (g,) = torch.autograd.grad(scores.sum(), h_hat, create_graph=True)       # [B, t, H1]
    sq = torch.einsum("bth,hk,btk->b", g, critic.input_gram(), g)
    norms = sq.clamp_min(1e-24).sqrt() * (input_scale / critic.w_std)
    return ((norms - 1.0) ** 2).mean()


def gap_distance(l: torch.Tensor, stats: nn.Module) -> torch.Tensor:
    """d = |norm(l_{t-1} - l_0)|_2 per sample, l [B, t, 32]; ``stats`` is a RunningMoments."""
    diff = l[:, -1] - l[:, 0]
    return stats.normalize(diff).norm(dim=1)


def gradient_angle(d: torch.Tensor, i: torch.Tensor, s: torch.Tensor,
                   eps: float = 1e-12) -> torch.Tensor:
    """phi = arctan(|dd/ds| / |dd/di|) per sample (in [0, pi/2]), differentiable (create_graph).

    ``d`` [B] must be computed from ``i`` [B, ...] and ``s`` [B, ...] with each sample depending
    only on its own inputs (true for G: no batch statistics), so the gradient of d.sum() holds the
    per-sample gradients. An input that ``d`` does not depend on has a zero gradient.
    """
    g_i, g_s = torch.autograd.grad(d.sum(), (i, s), create_graph=True, allow_unused=True)
    b = d.shape[0]
    g_i = torch.zeros_like(i) if g_i is None else g_i
    g_s = torch.zeros_like(s) if g_s is None else g_s
    # norms with a floor so that sqrt stays differentiable at 0
    n_s = torch.sqrt(g_s.reshape(b, -1).pow(2).sum(1) + eps)
    n_i = torch.sqrt(g_i.reshape(b, -1).pow(2).sum(1) + eps)
    return torch.atan2(n_s, n_i)


def gradient_angle_penalty(d: torch.Tensor, i: torch.Tensor, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(L_GAP = mean over the batch of max(0, pi/4 - phi)^2, phi [B])."""
    phi = gradient_angle(d, i, s)
    penalty = torch.clamp(math.pi / 4 - phi, min=0.0).pow(2).mean()
    return penalty, phi
