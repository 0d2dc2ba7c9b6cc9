"""StyleInV's first-frame-aware discriminator, conditioned on the time gaps (§3.4).

D scores a clip of four frames at times ``[0, t1, t2, t3]`` (frame 0 is the first frame: for
generated clips the first frame x0 = G(w0) itself, not SI's reconstruction of it) conditioned on
the three gaps ``t1 − 0, t2 − t1, t3 − t2``. Each gap is encoded as a learned embedding of the
rounded gap plus fixed Fourier features; the three codes go through a small mapping network to
``cmap`` and the logit is the projection ``<h, cmap> / sqrt(dim)`` (StyleGAN-V / StyleInV).

Two trunks:

- :class:`LatentClipDiscriminator` (``--disc latent``, the default): the four W codes of the clip.
  Codes are standardised with statistics of the real latents, each frame is described by
  ``[ŵ_t, ŵ_t − ŵ_0]`` through a shared MLP, the frame features (plus the gap code) are
  concatenated and scored by an MLP with a minibatch-std feature. No pixels: cheap.
- :class:`ImageClipDiscriminator` (``--disc image``, the paper's setting): frames rendered by the
  frozen generator go one by one through shared StyleGAN2 residual blocks down to ``concat_res``
  (16²; the block that outputs 16² halves its channels), the frame features are concatenated along
  channels and processed by further blocks and the minibatch-std epilogue.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from svgen.nn.equalized import EqualLinear


@dataclass
class DiscConfig:
    """Shapes of either discriminator (saved with every checkpoint)."""

    mode: str = "latent"           # "latent" | "image"
    num_frames: int = 4            # t0 + 3 sparse frames
    max_gap: int = 128             # size of the gap embedding table (frames)
    gap_embed_dim: int = 256
    num_fourier: int = 7           # frequencies π 2^k / max_gap, k < num_fourier
    cmap_dim: int = 512
    mapping_lr_multiplier: float = 0.01
    # latent mode
    w_dim: int = 512
    hidden: int = 512
    mbstd_group_size: int = 4
    # image mode
    img_resolution: int = 256
    img_channels: int = 3
    channel_base: int = 16384
    channel_max: int = 512
    concat_res: int = 16
    architecture: str = "resnet"
    conv_clamp: Optional[float] = None


def normalize_2nd_moment(x: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


class TimeGapEncoder(nn.Module):
    """Gaps between consecutive time stamps -> cmap [B, cmap_dim].

    Each gap Δ (frames) becomes ``[Embedding(round Δ), sin(πΔ 2^k / max_gap), cos(...)]``; the
    concatenation goes through FC -> 2nd-moment norm -> 2 FC lrelu (lr multiplier 0.01).
    """

    def __init__(self, cfg: DiscConfig):
        super().__init__()
        self.max_gap = int(cfg.max_gap)
        self.embed = nn.Embedding(self.max_gap, cfg.gap_embed_dim)
        k = torch.arange(cfg.num_fourier, dtype=torch.float32)
        self.register_buffer("freqs", math.pi * 2.0 ** k / self.max_gap)
        num_gaps = cfg.num_frames - 1
        in_dim = num_gaps * (cfg.gap_embed_dim + 2 * cfg.num_fourier)
        self.fc_in = EqualLinear(in_dim, cfg.cmap_dim)
        lr = cfg.mapping_lr_multiplier
        self.fc1 = EqualLinear(cfg.cmap_dim, cfg.cmap_dim, lr_multiplier=lr, activation="lrelu")
        self.fc2 = EqualLinear(cfg.cmap_dim, cfg.cmap_dim, lr_multiplier=lr, activation="lrelu")

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        # t: [B, F] sorted time stamps (frames) -> cmap: [B, cmap_dim]
        gaps = (t[:, 1:] - t[:, :-1]).float()                                # [B, F-1]
        idx = gaps.round().long().clamp(0, self.max_gap - 1)
        arg = gaps[..., None] * self.freqs                                    # [B, F-1, K]
        x = torch.cat([self.embed(idx), torch.sin(arg), torch.cos(arg)], dim=-1).flatten(1)
        x = normalize_2nd_moment(self.fc_in(x))
        return self.fc2(self.fc1(x))


def _minibatch_std(x: torch.Tensor, group_size: int) -> torch.Tensor:
    """[N, C] -> [N, 1]: the mean feature std over groups of min(group_size, N) samples."""
    N = x.shape[0]
    G = min(group_size, N)
    while N % G:
        G -= 1
    y = x.reshape(G, -1, x.shape[1])
    y = (y - y.mean(dim=0)).square().mean(dim=0).add(1e-8).sqrt().mean(dim=1)  # [N/G]
    return y.repeat(G)[:, None]


class LatentClipDiscriminator(nn.Module):
    """D(w [B, F, w_dim], t [B, F]) -> logits [B, 1] on W codes (``--disc latent``)."""

    def __init__(self, cfg: DiscConfig):
        super().__init__()
        self.cfg = cfg
        h = cfg.hidden
        # real-latent statistics (set by set_stats; saved in the state dict)
        self.register_buffer("w_mean", torch.zeros(cfg.w_dim))
        self.register_buffer("w_std", torch.ones(cfg.w_dim))
        self.register_buffer("motion_scale", torch.ones(()))
        self.frame = nn.Sequential(EqualLinear(2 * cfg.w_dim, h, activation="lrelu"),
                                   EqualLinear(h, h, activation="lrelu"))
        self.time = TimeGapEncoder(cfg)
        self.trunk = nn.Sequential(EqualLinear(cfg.num_frames * h + cfg.cmap_dim + 1, h, activation="lrelu"),
                                   EqualLinear(h, h, activation="lrelu"))
        self.out = EqualLinear(h, cfg.cmap_dim)
        self.out_uncond = EqualLinear(h, 1)

    @torch.no_grad()
    def set_stats(self, codes: torch.Tensor, motion: torch.Tensor) -> None:
        """Standardise inputs with real codes [N, w_dim] and real motions w_t - w_0 [M, w_dim].

        Per-dimension spreads are floored at a tenth of their mean, so dimensions in which the
        real codes barely vary are not amplified without bound.
        """
        std = codes.std(0)
        floor = 0.1 * std.square().mean().sqrt()
        self.w_mean.copy_(codes.mean(0))
        self.w_std.copy_((std.square() + floor.square()).sqrt().clamp_min(1e-8))
        rms = ((motion / self.w_std).square().mean()).sqrt().clamp_min(1e-6)
        self.motion_scale.fill_(float(1.0 / rms))

    def input_scale(self) -> torch.Tensor:
        """d(standardised input)/d(w)^-1 per dimension: R1 is measured in standardised units."""
        return self.w_std

    def forward(self, w: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        B, Fr, _ = w.shape
        x = (w - self.w_mean) / self.w_std                                     # [B, F, W]
        motion = (x - x[:, :1]) * self.motion_scale                            # [B, F, W]
        h = self.frame(torch.cat([x, motion], dim=-1))                         # [B, F, H]
        cmap = self.time(t)                                                    # [B, cmap]
        h = h.flatten(1)
        h = torch.cat([h, cmap, _minibatch_std(h, self.cfg.mbstd_group_size)], dim=1)
        h = self.trunk(h)
        proj = (self.out(h) * cmap).sum(dim=1, keepdim=True) / math.sqrt(self.cfg.cmap_dim)
        return proj + self.out_uncond(h)


class ImageClipDiscriminator(nn.Module):
    """D(x [B, F, 3, R, R], t [B, F]) -> logits [B, 1] on rendered frames (``--disc image``)."""

    def __init__(self, cfg: DiscConfig):
        super().__init__()
        from svgen.stage1_image_gan.layers import DiscriminatorBlock, DiscriminatorEpilogue

        self.cfg = cfg
        R = int(cfg.img_resolution)
        self.concat_res = min(int(cfg.concat_res), R // 2)
        ch = {r: min(cfg.channel_base // r, cfg.channel_max) for r in [2 ** i for i in range(2, 14)]}
        self.frame_resolutions = [r for r in _down(R, 8) if r // 2 >= self.concat_res]
        self.clip_resolutions = [r for r in _down(R, 8) if r // 2 < self.concat_res]
        for r in self.frame_resolutions:
            out_ch = ch[r // 2] // 2 if r // 2 == self.concat_res else ch[r // 2]
            setattr(self, f"f{r}", DiscriminatorBlock(
                in_channels=ch[r] if r < R else 0, tmp_channels=ch[r], out_channels=out_ch,
                resolution=r, img_channels=cfg.img_channels, architecture=cfg.architecture,
                conv_clamp=cfg.conv_clamp))
        cin = cfg.num_frames * (ch[self.concat_res] // 2)   # frame features concatenated at concat_res
        for r in self.clip_resolutions:
            setattr(self, f"b{r}", DiscriminatorBlock(
                in_channels=cin, tmp_channels=cin, out_channels=ch[r // 2], resolution=r,
                img_channels=cfg.img_channels, architecture="resnet", conv_clamp=cfg.conv_clamp))
            cin = ch[r // 2]
        self.time = TimeGapEncoder(DiscConfig(**{**cfg.__dict__, "cmap_dim": ch[4]}))
        self.b4 = DiscriminatorEpilogue(ch[4], cmap_dim=ch[4], resolution=4, img_channels=cfg.img_channels,
                                        architecture="resnet", mbstd_group_size=cfg.mbstd_group_size,
                                        conv_clamp=cfg.conv_clamp)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        # x: [B, F, 3, R, R] in [-1, 1]; t: [B, F] -> [B, 1]
        B, Fr = x.shape[:2]
        img = x.reshape(B * Fr, *x.shape[2:])
        h = None
        for r in self.frame_resolutions:                    # shared per-frame blocks
            h, img = getattr(self, f"f{r}")(h, img)
        h = h.reshape(B, -1, *h.shape[2:])                  # [B, F*C/2, 16, 16]
        for r in self.clip_resolutions:
            h, _ = getattr(self, f"b{r}")(h, None)
        return self.b4(h, None, self.time(t))


def _down(R: int, lo: int) -> list[int]:
    out, r = [], R
    while r >= lo:
        out.append(r)
        r //= 2
    return out


def build_discriminator(cfg: DiscConfig) -> nn.Module:
    if cfg.mode == "latent":
        return LatentClipDiscriminator(cfg)
    if cfg.mode == "image":
        return ImageClipDiscriminator(cfg)
    raise ValueError(f"unknown discriminator mode {cfg.mode!r} (latent or image)")
