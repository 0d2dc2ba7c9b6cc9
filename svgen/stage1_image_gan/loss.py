"""StyleGAN2 losses (Karras et al. 2020, "Analyzing and Improving the Image Quality of StyleGAN"),
assembled per training phase from the shared pieces of :mod:`svgen.nn.losses`:

* non-saturating logistic loss: L_G = softplus(-D(G(z))), L_D = softplus(D(G(z))) + softplus(-D(x));
* R1 on reals (Mescheder et al. 2018): gamma/2 * ||dD(x)/dx||^2, "lazy" (every D_reg_interval
  minibatches, multiplied by the interval);
* path length regularisation (§3.2): for y ~ N(0, I)/sqrt(HW) the Jacobian-vector length
  ||J_w^T y|| should stay constant, so we penalise (||J_w^T y|| - a)^2 where a is a running mean
  (decay ``pl_decay``); computed on a batch shrunk by ``pl_batch_shrink``, lazily;
* style mixing regularisation: with probability 0.9 the ws after a random cutoff come from a
  second latent (whose mapping pass does not update ``w_avg``).

D sees every image (real and fake) through the ADA pipeline when one is given. The loop calls
:meth:`StyleGAN2Loss.accumulate_gradients` once per phase (``Gmain``, ``Greg``, ``Dmain``,
``Dreg``); gradients land in ``.grad`` of the phase's network.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch

from svgen.nn.losses import (d_logistic_fake, d_logistic_real, g_nonsaturating_loss, path_length_penalty,
                             path_lengths, r1_penalty)

PHASES = ("Gmain", "Greg", "Dmain", "Dreg")


# -- the loss object the training loop drives ---------------------------------------------------

class StyleGAN2Loss:
    """Computes and back-propagates the losses of one training phase.

    ``mean_across_ranks``: optional function averaging a tensor over processes (multi-process
    training), so that the path-length mean ``pl_mean`` stays identical on every rank.
    """

    def __init__(self, G: torch.nn.Module, D: torch.nn.Module,
                 augment_pipe: Optional[torch.nn.Module] = None, r1_gamma: float = 10.0,
                 style_mixing_prob: float = 0.9, pl_weight: float = 2.0, pl_batch_shrink: int = 2,
                 pl_decay: float = 0.01,
                 mean_across_ranks: Optional[Callable[[torch.Tensor], torch.Tensor]] = None):
        self.G = G
        self.D = D
        self.augment_pipe = augment_pipe
        self.r1_gamma = float(r1_gamma)
        self.style_mixing_prob = float(style_mixing_prob)
        self.pl_weight = float(pl_weight)
        self.pl_batch_shrink = int(pl_batch_shrink)
        self.pl_decay = float(pl_decay)
        self.mean_across_ranks = mean_across_ranks
        device = next(G.parameters()).device
        self.pl_mean = torch.zeros([], device=device)

    def run_G(self, z: torch.Tensor, c: Optional[torch.Tensor] = None,
              update_emas: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """z [N, z_dim] -> (img [N, 3, R, R], ws [N, num_ws, w_dim]) with style mixing."""
        ws = self.G.mapping(z, c, update_emas=update_emas)
        if self.style_mixing_prob > 0:
            num_ws = ws.shape[1]
            cutoff = int(torch.randint(1, num_ws, (), device=ws.device))
            if float(torch.rand((), device=ws.device)) >= self.style_mixing_prob:
                cutoff = num_ws
            if cutoff < num_ws:
                ws2 = self.G.mapping(torch.randn_like(z), c, update_emas=False)
                ws = torch.cat([ws[:, :cutoff], ws2[:, cutoff:]], dim=1)
        img = self.G.synthesis(ws, noise_mode="random")
        return img, ws

    def run_D(self, img: torch.Tensor, c: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Augment (ADA) then discriminate: img [N, 3, R, R] -> logits [N, 1]."""
        if self.augment_pipe is not None and float(self.augment_pipe.p) > 0:
            img = self.augment_pipe(img)
        return self.D(img, c)

    def accumulate_gradients(self, phase: str, real_img: torch.Tensor, real_c: Optional[torch.Tensor],
                             gen_z: torch.Tensor, gen_c: Optional[torch.Tensor],
                             gain: float = 1.0) -> dict:
        """Back-propagate ``phase``'s loss times ``gain``; returns detached statistics.

        Statistics: ``loss_G``, ``loss_D``, ``loss_r1``, ``r1``, ``loss_pl``, ``pl_length``,
        ``real_logits`` (tensor, for ADA's r_t), ``fake_score``/``real_score`` (mean logits).
        """
        if phase not in PHASES:
            raise ValueError(f"unknown phase {phase!r}")
        stats: dict = {}
        do_Gmain = phase == "Gmain"
        do_Gpl = phase == "Greg" and self.pl_weight != 0
        do_Dmain = phase == "Dmain"
        do_Dr1 = phase == "Dreg" and self.r1_gamma != 0

        if do_Gmain:
            gen_img, _ = self.run_G(gen_z, gen_c)
            gen_logits = self.run_D(gen_img, gen_c)
            loss_G = g_nonsaturating_loss(gen_logits)
            loss_G.mean().mul(gain).backward()
            stats["loss_G"] = float(loss_G.detach().mean())
            stats["fake_score"] = float(gen_logits.detach().mean())

        if do_Gpl:
            batch = max(gen_z.shape[0] // self.pl_batch_shrink, 1)
            gen_img, gen_ws = self.run_G(gen_z[:batch], None if gen_c is None else gen_c[:batch])
            lengths = path_lengths(gen_img, gen_ws)
            mean_len = lengths.mean()
            if self.mean_across_ranks is not None:
                # The same running mean on every rank; the gradient path stays local.
                mean_len = mean_len + (self.mean_across_ranks(mean_len.detach()) - mean_len.detach())
            penalty, a = path_length_penalty(lengths, self.pl_mean, self.pl_decay, mean_length=mean_len)
            self.pl_mean.copy_(a.detach())
            loss_pl = penalty * self.pl_weight
            (gen_img[:, 0, 0, 0] * 0 + loss_pl).mean().mul(gain).backward()
            stats["loss_pl"] = float(loss_pl.detach().mean())
            stats["pl_length"] = float(lengths.detach().mean())

        if do_Dmain:
            with torch.no_grad():
                gen_img, _ = self.run_G(gen_z, gen_c)
            gen_logits = self.run_D(gen_img, gen_c)
            loss_Dgen = d_logistic_fake(gen_logits)
            loss_Dgen.mean().mul(gain).backward()
            stats["fake_score"] = float(gen_logits.detach().mean())

        if do_Dmain or do_Dr1:
            real_img_tmp = real_img.detach().requires_grad_(do_Dr1)
            real_logits = self.run_D(real_img_tmp, real_c)
            stats["real_logits"] = real_logits.detach()
            stats["real_score"] = float(real_logits.detach().mean())
            loss = real_logits * 0
            if do_Dmain:
                loss_Dreal = d_logistic_real(real_logits)
                loss = loss + loss_Dreal
                stats["loss_D"] = float(loss_Dreal.detach().mean()) + float(loss_Dgen.detach().mean())
            if do_Dr1:
                r1 = r1_penalty(real_logits, real_img_tmp)
                loss_r1 = r1 * (self.r1_gamma / 2)
                loss = loss + loss_r1[:, None]
                stats["loss_r1"] = float(loss_r1.detach().mean())
                stats["r1"] = float(r1.detach().mean())
            loss.mean().mul(gain).backward()
        return stats
