"""StyleVideoGAN's temporal GAN (Fox et al. 2021, §3): a recurrent generator G and a critic C that
live entirely in the W+ space of a frozen StyleGAN2.

Generator G(i, s):
    i ~ N(0, 1)^32, s = (s_0 .. s_{t-2}) ~ N(0, 1)^{32 x (t-1)}
    (h_{0,0}, h_{0,1}, h_{0,2}) = H(i),  h_{0,3} = i                  H: MLP 32 -> 3 x 32
    ((h_{k+1,0..3}), l_{k+1}) = P(s_k, (h_{k,0..3}))                   P: stack of 4 GRU cells
    l_k = h_{k,3} (so l_0 = i)                                         l_k in R^32
    w_k[j] = A_j T(l_k) + b_j                                          T: MLP 32 -> 512, j < num_ws
The GRU is written with plain differentiable ops (no fused cuDNN kernel) because both the
gradient penalty and the gradient angle penalty need second derivatives through it.

Critic C(w_0 .. w_{t-1}):
    e_k = E(w_k)            6-layer MLP W+ -> R^32, shared over time
    C   = TConv(e_0..e_{t-1})  DCGAN-like strided temporal convolutions, no batch norm (WGAN-GP)

Data normalisation: both networks carry fixed buffers ``w_mean`` [num_ws, w_dim] and ``w_std``
(a scalar) computed from the training latents. G outputs ``w_mean + w_std * (A_j T(l) + b_j)`` and C
reads ``(w - w_mean) / w_std``. That part is a re-parametrisation of the last affine maps of G and
the first layer of C (same function class as the paper) that keeps learning rates meaningful for
any generator's W+ statistics. Where the gradient penalty measures C's gradient is not: the paper
penalises it with respect to the raw W+ codes (the default, ``penalty_units="raw"`` in
``train.py``); measuring it in normalised units holds C 1-Lipschitz in (w - w_mean) / w_std, i.e.
1/w_std-Lipschitz in W+. That objective equals (1/w_std) x the paper's with lambda_GP scaled by
w_std, and the generator's adversarial gradient grows by 1/w_std against the angle penalty, so at
w_std = 0.1 it trains like lambda_GP = 5, lambda_GAP = 10 instead of 50 and 100. It stays an option
(``penalty_units="normalised"``); the two coincide when w_std = 1. With raw units the trainer also
multiplies E's first weight by w_std at initialisation (``scale_input_layer``), so C starts as a
He-initialised critic of raw codes, with a raw-unit gradient near 1 rather than 1/w_std.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class GRUMotionConfig:
    """Sizes of G and C (defaults follow the paper; tests shrink them)."""

    num_ws: int = 14                      # W+ layers of the frozen StyleGAN2 (14 at 256 px, 18 at 1024 px)
    w_dim: int = 512
    latent_dim: int = 32                  # size of i, s_k, l_k and of every GRU memory h_{k,j}
    num_cells: int = 4                    # cells in the stack P
    h_hidden: Tuple[int, ...] = (64, 64)  # H: 32 -> 64 -> 64 -> (num_cells - 1) * 32
    t_hidden: Tuple[int, ...] = (64, 128, 256)  # T: 32 -> 64 -> 128 -> 256 -> w_dim
    e_hidden: Tuple[int, ...] = (256, 256, 128, 128, 64)  # E: 6 layers num_ws*w_dim -> ... -> 32
    c_channels: Tuple[int, ...] = (64, 128, 256)          # temporal conv widths (stride 2 each)
    window: int = 25                      # t at training time (the critic's fixed length)
    update_gate_bias: float = 0.0         # added to the GRU update-gate bias at init (0: PyTorch's init)


def _he_init(module: nn.Module) -> None:
    """He initialisation for LeakyReLU(0.2) nets (PyTorch's default shrinks the signal ~3x per layer,
    which leaves a 9-layer critic with a near-constant output for hundreds of steps)."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv1d)):
            nn.init.kaiming_normal_(m.weight, a=0.2, nonlinearity="leaky_relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def _mlp(sizes: Tuple[int, ...], last_act: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for k, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if last_act or k < len(sizes) - 2:
            layers.append(nn.LeakyReLU(0.2))
    return nn.Sequential(*layers)


class GRUCell(nn.Module):
    """A GRU cell from differentiable ops (same equations and parameter layout as ``nn.GRUCell``):

        r  = sigmoid(W_ir x + b_ir + W_hr h + b_hr)
        z  = sigmoid(W_iz x + b_iz + W_hz h + b_hz)
        n  = tanh(W_in x + b_in + r * (W_hn h + b_hn))
        h' = (1 - z) * n + z * h
    """

    def __init__(self, input_size: int, hidden_size: int, update_bias: float = 0.0):
        super().__init__()
        self.input_size, self.hidden_size = input_size, hidden_size
        self.weight_ih = nn.Parameter(torch.empty(3 * hidden_size, input_size))
        self.weight_hh = nn.Parameter(torch.empty(3 * hidden_size, hidden_size))
        self.bias_ih = nn.Parameter(torch.empty(3 * hidden_size))
        self.bias_hh = nn.Parameter(torch.empty(3 * hidden_size))
        bound = 1.0 / math.sqrt(hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)
        if update_bias:   # optional: bias the update gate z towards keeping the memory at init
            with torch.no_grad():
                self.bias_hh[hidden_size:2 * hidden_size] += update_bias

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """One step: x [B, in], h [B, H] -> h' [B, H]."""
        return self.step(F.linear(x, self.weight_ih, self.bias_ih), h)

    def step(self, gi: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """One step from a precomputed input projection gi = W_i x + b_i [B, 3H] (few ops: the
        unroll is dominated by per-op overhead at these sizes)."""
        hs = self.hidden_size
        gh = F.linear(h, self.weight_hh, self.bias_hh)                 # [B, 3H]
        gi_rz, gi_n = gi.split((2 * hs, hs), dim=1)
        gh_rz, gh_n = gh.split((2 * hs, hs), dim=1)
        r, z = torch.sigmoid(gi_rz + gh_rz).split(hs, dim=1)           # r and z together
        n = torch.tanh(torch.addcmul(gi_n, r, gh_n))                   # tanh(gi_n + r * gh_n)
        return torch.lerp(n, h, z)                                     # (1 - z) n + z h


class GRUStack(nn.Module):
    """P: ``num_cells`` stacked GRU cells; cell 0 reads s_k, cell j reads cell j-1's new memory."""

    def __init__(self, dim: int, num_cells: int, update_bias: float = 0.0):
        super().__init__()
        self.cells = nn.ModuleList([GRUCell(dim, dim, update_bias) for _ in range(num_cells)])

    def forward(self, s_k: torch.Tensor, h: list[torch.Tensor]) -> list[torch.Tensor]:
        """One time step: s_k [B, 32], memories h[j] [B, 32] -> new memories."""
        x, out = s_k, []
        for cell, h_j in zip(self.cells, h):
            x = cell(x, h_j)
            out.append(x)
        return out

    def unroll(self, s: torch.Tensor, h: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """n steps at once: s [B, n, 32] -> (top-cell memories [B, n, 32], final memories).

        Cell by cell (like cuDNN): a cell's inputs for all n steps are known once the cell below
        has run, so its input projection is one matmul. Same result as n calls of ``forward``.
        """
        x, final = s, []
        for cell, h_j in zip(self.cells, h):
            gi = F.linear(x, cell.weight_ih, cell.bias_ih)             # [B, n, 3H]
            outs = []
            for gi_k in gi.unbind(dim=1):
                h_j = cell.step(gi_k, h_j)
                outs.append(h_j)
            x = torch.stack(outs, dim=1)
            final.append(h_j)
        return x, final


class RunningMoments(nn.Module):
    """Running mean and variance per component (EMA), used to normalise d in the GAP."""

    def __init__(self, dim: int, momentum: float = 0.99):
        super().__init__()
        self.momentum = momentum
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("var", torch.ones(dim))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        """Fold a batch [B, dim] into the statistics (the first batch replaces the initial values)."""
        x = x.detach().to(self.mean.dtype)
        m = x.mean(0)
        v = x.var(0, unbiased=False)
        a = 0.0 if int(self.count) == 0 else self.momentum
        self.mean.mul_(a).add_((1 - a) * m)
        self.var.mul_(a).add_((1 - a) * v)
        self.count += 1

    def normalize(self, x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
        return (x - self.mean) / torch.sqrt(self.var + eps)


class MotionGenerator(nn.Module):
    """G: (i, s) -> W+ trajectory; unrolls to any length, in chunks that carry the GRU state."""

    def __init__(self, cfg: GRUMotionConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.latent_dim
        self.H = _mlp((d, *cfg.h_hidden, (cfg.num_cells - 1) * d), last_act=False)
        self.P = GRUStack(d, cfg.num_cells, cfg.update_gate_bias)
        self.T = _mlp((d, *cfg.t_hidden, cfg.w_dim), last_act=True)
        # per-layer affine maps A_j, b_j: R^512 -> R^512, j < num_ws
        self.A = nn.Parameter(torch.randn(cfg.num_ws, cfg.w_dim, cfg.w_dim) / math.sqrt(cfg.w_dim))
        self.b = nn.Parameter(torch.zeros(cfg.num_ws, cfg.w_dim))
        _he_init(self.H)
        _he_init(self.T)
        self.register_buffer("w_mean", torch.zeros(cfg.num_ws, cfg.w_dim))
        self.register_buffer("w_std", torch.ones(()))
        self.gap_stats = RunningMoments(d)   # statistics of l_{t-1} - l_0 for the GAP

    # -- pieces ---------------------------------------------------------------------------------
    def init_state(self, i: torch.Tensor) -> list[torch.Tensor]:
        """(h_{0,0}, h_{0,1}, h_{0,2}) = tanh(H(i)), h_{0,3} = i (the GRU memory range for H's part)."""
        hallucinated = torch.tanh(self.H(i)).chunk(self.cfg.num_cells - 1, dim=1)
        return [*hallucinated, i]

    def motion(self, i: torch.Tensor, s: torch.Tensor,
               h: Optional[list[torch.Tensor]] = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Low-dimensional codes l.

        Fresh start (``h`` None): i [B, 32], s [B, t-1, 32] -> l [B, t, 32] with l_0 = i.
        Continuation (``h`` given): s [B, n, 32] -> l [B, n, 32] (the next n codes).
        Returns (l, final memory).
        """
        first = None
        if h is None:
            h = self.init_state(i)
            first = h[-1].unsqueeze(1)                                 # l_0 = h_{0,3} = i
        if s.shape[1] > 0:
            l, h = self.P.unroll(s, h)
            l = l if first is None else torch.cat([first, l], dim=1)
        else:
            l = first if first is not None else s.new_zeros(s.shape[0], 0, self.cfg.latent_dim)
        return l, h

    def to_wplus(self, l: torch.Tensor) -> torch.Tensor:
        """l [..., 32] -> w [..., num_ws, w_dim] through T and the per-layer affine maps."""
        y = self.T(l)                                           # [..., 512]
        w = torch.einsum("...c,jdc->...jd", y, self.A) + self.b  # [..., num_ws, 512]
        return self.w_mean + self.w_std * w

    def forward(self, i: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """i [B, 32], s [B, t-1, 32] -> w [B, t, num_ws, w_dim]."""
        l, _ = self.motion(i, s)
        return self.to_wplus(l)

    # -- sampling -------------------------------------------------------------------------------
    @torch.no_grad()
    def iter_sample(self, num: int, frames: int, seed: int = 0, chunk: int = 256,
                    device: Optional[torch.device] = None) -> Iterator[torch.Tensor]:
        """Draw ``num`` trajectories of ``frames`` W+ codes, chunk by chunk: yields [num, n, num_ws, w_dim]
        for consecutive frames (frame 0 alone, then ``chunk`` at a time).

        The noise comes from a CPU generator seeded with ``seed`` (i, then s_0, s_1, ... one draw
        per step) and the GRU memory is carried from chunk to chunk, so the frames are the same
        whatever ``chunk`` or the device; memory is bounded by one chunk.
        """
        if frames < 1 or num < 1:
            raise ValueError(f"need num >= 1 and frames >= 1, got num={num}, frames={frames}")
        device = device or self.A.device
        gen = torch.Generator().manual_seed(int(seed))
        d = self.cfg.latent_dim
        i = torch.randn(num, d, generator=gen).to(device)
        h = self.init_state(i)
        yield self.to_wplus(h[-1])[:, None]
        pos = 1
        while pos < frames:
            n = min(chunk, frames - pos)
            # one draw per time step: the stream then does not depend on the chunking
            s = torch.stack([torch.randn(num, d, generator=gen) for _ in range(n)], 1).to(device)  # [num, n, 32]
            l, h = self.motion(i, s, h)
            yield self.to_wplus(l)
            pos += n

    @torch.no_grad()
    def sample(self, num: int, frames: int, seed: int = 0, chunk: int = 256,
               device: Optional[torch.device] = None) -> torch.Tensor:
        """:meth:`iter_sample` gathered into one tensor [num, frames, num_ws, w_dim]."""
        return torch.cat(list(self.iter_sample(num, frames, seed=seed, chunk=chunk, device=device)), dim=1)

    def set_data_stats(self, mean: torch.Tensor, std: float) -> None:
        self.w_mean.copy_(torch.as_tensor(mean, dtype=self.w_mean.dtype))
        self.w_std.fill_(float(std))


class TemporalConv(nn.Module):
    """A strided 1-D convolution over time written as unfold + matmul.

    Same parameters and result as ``nn.Conv1d`` (weight [out, in, k]); at the critic's sizes the
    oneDNN kernel spends tens of milliseconds per call on setup, this costs microseconds, and it is
    twice differentiable like any composition of basic ops (needed by the gradient penalty).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 4, stride: int = 2,
                 padding: int = 1):
        super().__init__()
        self.stride, self.padding, self.kernel_size = stride, padding, kernel_size
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        nn.init.kaiming_normal_(self.weight, a=0.2, nonlinearity="leaky_relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, C_in, L] -> [B, C_out, L'] with L' = (L + 2p - k) // s + 1."""
        x = F.pad(x, (self.padding, self.padding))
        cols = x.unfold(2, self.kernel_size, self.stride)             # [B, C_in, L', k]
        y = torch.einsum("bclk,ock->bol", cols, self.weight)
        return y + self.bias[:, None]


class TemporalCritic(nn.Module):
    """C: per-step 6-layer MLP E (W+ -> R^32), then DCGAN-like temporal convolutions (no BN)."""

    def __init__(self, cfg: GRUMotionConfig):
        super().__init__()
        self.cfg = cfg
        in_dim = cfg.num_ws * cfg.w_dim
        e_sizes = (in_dim, *cfg.e_hidden, cfg.latent_dim)
        if len(e_sizes) != 7:
            raise ValueError(f"E must have 6 layers (5 hidden sizes), got e_hidden={cfg.e_hidden}")
        self.E = _mlp(e_sizes, last_act=True)
        convs: list[nn.Module] = []
        ch, length = cfg.latent_dim, cfg.window
        for out_ch in cfg.c_channels:
            convs += [TemporalConv(ch, out_ch, kernel_size=4, stride=2, padding=1), nn.LeakyReLU(0.2)]
            ch, length = out_ch, (length + 2 - 4) // 2 + 1
            if length < 1:
                raise ValueError(f"window {cfg.window} is too short for {len(cfg.c_channels)} temporal convs")
        self.TConv = nn.Sequential(*convs)
        self.out = nn.Linear(ch * length, 1)
        _he_init(self)
        self.register_buffer("w_mean", torch.zeros(cfg.num_ws, cfg.w_dim))
        self.register_buffer("w_std", torch.ones(()))

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        """w [B, t, num_ws, w_dim] (t = cfg.window) -> scores [B]."""
        return self.from_first_layer(self.first_layer(w))

    # The critic split after the pre-activation of E's first (linear) layer. Training works in
    # that H1-dimensional space (256 by default instead of num_ws * w_dim = 7168): see
    # ``first_layer_of_generated`` and ``penalties.gradient_penalty_first_layer``.
    def first_layer(self, w: torch.Tensor) -> torch.Tensor:
        """w [B, t, num_ws, w_dim] -> h1 = W1 (w - w_mean) / w_std + b1, [B, t, H1]."""
        b, t = w.shape[:2]
        if t != self.cfg.window:
            raise ValueError(f"critic expects windows of {self.cfg.window} steps, got {t}")
        lin = self.E[0]
        w1 = lin.weight / self.w_std                                   # normalisation folded into W1
        return F.linear(w.reshape(b, t, -1), w1, lin.bias - w1 @ self.w_mean.flatten())

    def first_layer_of_generated(self, G: "MotionGenerator", y: torch.Tensor) -> torch.Tensor:
        """h1 of the W+ codes that G makes from T's output y [B, t, w_dim], without forming them.

        G's last step (w = w_mean_G + std_G (A_j y + b_j)) and C's first layer are both affine,
        so their composition is one affine map R^w_dim -> R^H1 with weight
        M = (std_G / std_C) sum_j W1_j A_j: the same values as ``first_layer(G.to_wplus(l))`` up
        to float rounding, at a fraction of the cost (and gradients reach W1, A and b alike).
        """
        lin = self.E[0]
        w1 = lin.weight.view(-1, self.cfg.num_ws, self.cfg.w_dim)             # [H1, num_ws, w_dim]
        scale = G.w_std / self.w_std
        offset = (G.w_mean - self.w_mean) / self.w_std + scale * G.b          # [num_ws, w_dim]
        m = scale * torch.einsum("hjd,jdc->hc", w1, G.A)                      # [H1, w_dim]
        bias = torch.einsum("hjd,jd->h", w1, offset) + lin.bias               # [H1]
        return F.linear(y, m, bias)

    def from_first_layer(self, h1: torch.Tensor) -> torch.Tensor:
        """h1 [B, t, H1] (pre-activation) -> scores [B]."""
        b, t = h1.shape[:2]
        e = self.E[1:](h1.reshape(b * t, -1)).reshape(b, t, -1).transpose(1, 2)   # [B, 32, t]
        h = self.TConv(e)                                                      # [B, C, t']
        return self.out(h.flatten(1)).squeeze(1)

    @torch.no_grad()
    def scale_input_layer(self, k: float) -> None:
        """Multiply E's first weight by ``k``. With k = w_std the critic starts as a He-initialised
        critic of the raw W+ codes (the paper's), whose gradient a raw-unit penalty expects near 1,
        instead of one of the normalised codes (1/w_std times steeper in raw units)."""
        self.E[0].weight.mul_(float(k))

    def input_gram(self) -> torch.Tensor:
        """K = W1 W1^T [H1, H1]: for any g, |W1^T g|^2 = g^T K g, the norm of the gradient with
        respect to the normalised input (w - w_mean) / w_std, computed in H1 dimensions."""
        w1 = self.E[0].weight
        return w1 @ w1.t()

    def set_data_stats(self, mean: torch.Tensor, std: float) -> None:
        self.w_mean.copy_(torch.as_tensor(mean, dtype=self.w_mean.dtype))
        self.w_std.fill_(float(std))
