"""e4e's latent discriminator: tells codes of the generator's mapping network from encoder codes.

An MLP on single W vectors (Tov et al. 2021, §3.3): ``depth - 1`` hidden layers of ``w_dim`` units
with LeakyReLU(0.2) and one output logit. It is trained with the non-saturating logistic loss and a
lazy R1 penalty on real (mapped) codes; the encoder gets ``softplus(-D(w_i))`` averaged over the
W+ entries it discriminates, which pulls each entry into the region of W the generator was
trained on. Inputs are normalised by the mapped codes' mean and per-dimension std so the same
learning rate works for any generator's latent scale.
"""
from __future__ import annotations

from typing import Callable, Iterable, Optional

import torch
from torch import nn

from svgen.nn.losses import d_logistic_loss, g_nonsaturating_loss, r1_penalty


class LatentDiscriminator(nn.Module):
    """MLP logits for W codes: ``w [N, w_dim] -> [N]``."""

    def __init__(self, w_dim: int, depth: int = 4):
        super().__init__()
        layers: list[nn.Module] = []
        for _ in range(depth - 1):
            layers += [nn.Linear(w_dim, w_dim), nn.LeakyReLU(0.2)]
        layers.append(nn.Linear(w_dim, 1))
        self.net = nn.Sequential(*layers)
        self.register_buffer("w_mean", torch.zeros(w_dim))
        self.register_buffer("w_std", torch.ones(w_dim))

    @torch.no_grad()
    def set_statistics(self, w: torch.Tensor) -> None:
        """Normalise inputs with the statistics of mapped codes ``w [N, w_dim]``."""
        self.w_mean.copy_(w.mean(0))
        self.w_std.copy_(w.std(0).clamp_min(1e-6))

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return self.net((w - self.w_mean) / self.w_std).squeeze(-1)


def discriminator_step(D: LatentDiscriminator, opt: torch.optim.Optimizer, w_real: torch.Tensor,
                       w_fake: torch.Tensor, r1_gamma: float, do_r1: bool, r1_interval: int,
                       reduce: Optional[Callable[[Iterable[nn.Parameter]], None]] = None) -> dict:
    """One D update on real codes ``w_real [N, w_dim]`` and detached encoder codes ``w_fake [M, w_dim]``;
    ``reduce`` averages the gradients over processes before the step (data-parallel runs)."""
    # the logistic D loss of stage 1, with real and fake batches of different sizes
    loss = d_logistic_loss(D(w_real), D(w_fake.detach()))
    logs = {"wdisc_d": float(loss.detach())}
    if do_r1 and r1_gamma > 0:
        real = w_real.detach().requires_grad_(True)
        r1 = r1_penalty(D(real), real)
        loss = loss + r1.mean() * (r1_gamma / 2) * r1_interval
        logs["wdisc_r1"] = float(r1.detach().mean())
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if reduce is not None:
        reduce(D.parameters())
    opt.step()
    return logs


def encoder_adversarial_loss(D: LatentDiscriminator, ws: torch.Tensor, active: int) -> torch.Tensor:
    """Non-saturating loss of the encoder's W+ entries ``ws[:, :active]`` ([N, num_ws, w_dim]) -> scalar."""
    w = ws[:, :active].reshape(-1, ws.shape[-1])
    return g_nonsaturating_loss(D(w)).mean()
