"""StyleInV (Wang et al. 2023, §3): a motion generator that modulates a GAN inversion encoder.

For a first-frame code w0 (W space) and a time stamp t (in frames, may be fractional):

    x0  = G(w0)                                   frozen StyleGAN2, the first frame
    u   = MotionMapping(c0, z_1 .. z_L)           FFA: anchor 0 is a learned constant c0
    v_t = APE(u, t)                               acyclic positional encoding (first-frame aware)
    s_t = Fuse(w0 ⊕ v_t)                          temporal style, two FC layers (lr x 0.01)
    w_t = w0 + E(x0, s_t)                         IR-SE encoder with an AdaIN block after each stage

Frames are independent given (w0, z), so any frame time can be sampled directly: long videos, other
frame rates and slow motion need no retraining. Because the motion convolutions are causal and the
first anchor is a constant, ``v_0`` is the same for every video and extending a video never changes
its earlier frames (FFA-APE, §3.3).

Architecture and constants follow the public code as summarised in
``shared/reference/styleinv_stylegan_v.md`` §1. ``transfer`` initialises the encoder from a trained
W encoder; ``motion.StyleInVMotion`` is the inference wrapper that ``load_motion`` returns.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

from svgen.inversion.backbone import BackboneConfig, IRSEBackbone
from svgen.nn.equalized import EqualConv1d, EqualLinear
from svgen.utils.config import config_from_dict

MODEL_NAME = "styleinv"
# Anchors of motion noise are drawn in blocks of this many, so the noise of the first anchors is the
# same whatever the video length (extending a video never changes earlier frames).
NOISE_BLOCK = 16


# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------
@dataclass
class EncoderConfig:
    """The inversion stage's IR-SE backbone (:class:`~svgen.inversion.backbone.BackboneConfig`, shared
    with ``svgen.inversion``) plus StyleInV's input size, AdaIN blocks and BatchNorm mode."""

    backbone: BackboneConfig = field(default_factory=BackboneConfig)   # default: the published IR-SE50
    resolution: int = 256          # input size the backbone was trained at (x0 is resized to it)
    adain: bool = True             # False = the plain inversion encoder (ablation)
    # "frozen": BatchNorm layers use the running statistics of the W encoder (train = eval);
    # "train": batch statistics while training (used when the encoder starts from random weights).
    bn_mode: str = "frozen"


# Checkpoints written before the encoder config held a BackboneConfig kept its fields flat.
_LEGACY_BACKBONE_KEYS = ("in_channels", "stem_channels", "channels", "units", "se_reduction")


def encoder_config_from_dict(data: dict) -> EncoderConfig:
    """Rebuild a saved :class:`EncoderConfig`; older checkpoints' flat backbone fields are mapped
    into ``backbone``."""
    data = dict(data)
    backbone = dict(data.pop("backbone", None) or {})
    for key in _LEGACY_BACKBONE_KEYS:
        if key in data:
            backbone[key] = data.pop(key)
    cfg = config_from_dict(EncoderConfig, data)
    cfg.backbone = config_from_dict(BackboneConfig, backbone)
    cfg.backbone.channels = tuple(cfg.backbone.channels)
    cfg.backbone.units = tuple(cfg.backbone.units)
    return cfg


@dataclass
class StyleInVConfig:
    """Every shape and constant of a StyleInV network (saved in each checkpoint)."""

    w_dim: int = 512
    num_ws: int = 14
    img_resolution: int = 256
    z_motion_dim: int = 512         # motion noise z_m and tokens u
    motion_z_distance: int = 16     # δ: frames between anchor points
    motion_kernel_size: int = 11    # causal conv1d kernel
    motion_lr_multiplier: float = 0.01
    time_enc_dim: int = 256         # number of APE frequencies; v_t has 2x this many dims
    min_period_len: float = 16.0    # P_min (frames)
    max_period_len: float = 128.0   # P_max (frames)
    nframes: int = 128              # training window (frames); t is normalised by nframes-1 there
    fuse_layers: int = 2
    fuse_lr_multiplier: float = 0.01
    input_residual: bool = True     # w_t = w0 + E(...) (else w_avg + E(...), plain pSp)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)

    @property
    def v_dim(self) -> int:
        return 2 * self.time_enc_dim

    @property
    def style_dim(self) -> int:
        return self.w_dim


def styleinv_config_for(w_dim: int, num_ws: int, img_resolution: int,
                        encoder: Optional[EncoderConfig] = None, **overrides: Any) -> StyleInVConfig:
    """A StyleInV config sized for a generator: paper constants at w_dim 512, narrower below."""
    small = w_dim < 512
    cfg = StyleInVConfig(
        w_dim=w_dim, num_ws=num_ws, img_resolution=img_resolution,
        z_motion_dim=w_dim if small else 512,
        time_enc_dim=max(8, w_dim // 2) if small else 256,
        encoder=encoder or EncoderConfig(resolution=img_resolution),
    )
    for k, v in overrides.items():
        if not hasattr(cfg, k):
            raise TypeError(f"unknown StyleInV option {k!r}")
        setattr(cfg, k, v)
    return cfg


# ---------------------------------------------------------------------------------------------
# FFA-APE: first-frame-aware acyclic positional encoding (§3.3)
# ---------------------------------------------------------------------------------------------
def num_anchors_for(t_max: float, delta: int) -> int:
    """Anchors needed to interpolate any t in [0, t_max]: the left one floor(t/δ) and the next."""
    return int(math.floor(max(0.0, float(t_max)) / delta)) + 2


def sample_motion_noise(num: int, num_anchors: int, dim: int,
                        generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Motion noise z_m ~ N(0, I) [num, num_anchors, dim], drawn in fixed blocks of anchors so the
    first anchors are identical for any ``num_anchors`` (same generator state)."""
    blocks = []
    for _ in range(max(1, math.ceil(num_anchors / NOISE_BLOCK))):
        blocks.append(torch.randn(num, NOISE_BLOCK, dim, generator=generator))
    return torch.cat(blocks, dim=1)[:, :num_anchors]


class MotionMapping(nn.Module):
    """Anchor noise -> motion tokens u. Anchor 0 is the learned constant c0 (shared by all videos);
    two causal same-padding conv1d layers (kernel 11, lr x 0.01), so u_0 depends only on c0."""

    def __init__(self, cfg: StyleInVConfig):
        super().__init__()
        d, k, lr = cfg.z_motion_dim, cfg.motion_kernel_size, cfg.motion_lr_multiplier
        self.c0 = nn.Parameter(torch.randn(d))
        self.conv1 = EqualConv1d(d, d, k, lr_multiplier=lr, activation="lrelu", mask_right=True)
        self.conv2 = EqualConv1d(d, d, k, lr_multiplier=lr, activation="lrelu", mask_right=True)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        # z: [B, L, Z] (z[:, 0] is ignored: anchor 0 is c0) -> u: [B, L, Z]
        c0 = self.c0.to(z.dtype).expand(z.shape[0], 1, -1)
        z = torch.cat([c0, z[:, 1:]], dim=1)
        u = self.conv2(self.conv1(z.transpose(1, 2)))
        return u.transpose(1, 2)


class AcyclicPositionalEncoding(nn.Module):
    """v_t = ψ(t) − lerp(ψ(t_l), ψ(t_r)) + lerp(A u_l, A u_r) (StyleGAN-V's aligned time encoder).

    ψ(τ) = [sin, cos](ω ⊙ (tanh(W_p u_l) + 1) τ + (W_φ u_l) ⊙ P_max/P): fixed log-spaced base
    frequencies ω = 2π/P, learned per-segment period scales and phases, all read from the *left*
    anchor. At an anchor v equals A(u_anchor), so v is continuous across segments; at t = 0 it is
    A(u_0), a learned constant. Affines have no bias ("to prevent motion mode collapse").
    """

    def __init__(self, cfg: StyleInVConfig):
        super().__init__()
        self.delta = int(cfg.motion_z_distance)
        k = cfg.time_enc_dim
        periods = 2.0 ** torch.linspace(math.log2(cfg.min_period_len), math.log2(cfg.max_period_len), k)
        periods = periods.flip(0)  # long periods first: frequencies run from low to high
        self.register_buffer("omega", 2.0 * math.pi / periods)
        self.register_buffer("phase_scale", cfg.max_period_len / periods)
        z = cfg.z_motion_dim
        self.period_fc = EqualLinear(z, k, bias=False)   # W_p
        self.phase_fc = EqualLinear(z, k, bias=False)    # W_φ
        self.aligner = EqualLinear(z, 2 * k, bias=False)  # A

    def psi(self, tau: torch.Tensor, period: torch.Tensor, phase: torch.Tensor) -> torch.Tensor:
        # tau: [B, T]; period/phase: [B, T, K] -> [B, T, 2K]
        arg = self.omega * period * tau[..., None] + phase * self.phase_scale
        return torch.cat([torch.sin(arg), torch.cos(arg)], dim=-1)

    def forward(self, u: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        # u: [B, L, Z] tokens; t: [B, T] frame times (>= 0, may be fractional) -> v: [B, T, 2K]
        if (t < 0).any():
            raise ValueError("time stamps must be non-negative")
        left = torch.floor(t / self.delta).long()                       # [B, T]
        if int(left.max()) + 1 >= u.shape[1]:
            raise ValueError(f"t up to {float(t.max()):.1f} needs {int(left.max()) + 2} anchors, "
                             f"got {u.shape[1]}")
        t_l = left.to(t.dtype) * self.delta
        t_r = t_l + self.delta
        alpha = ((t - t_l) / self.delta)[..., None]                     # [B, T, 1]
        idx = left[..., None].expand(-1, -1, u.shape[2])
        u_l = torch.gather(u, 1, idx)                                   # [B, T, Z]
        u_r = torch.gather(u, 1, idx + 1)
        period = torch.tanh(self.period_fc(u_l)) + 1.0                  # (0, 2)
        phase = self.phase_fc(u_l)
        psi_t = self.psi(t, period, phase)
        psi_lerp = (1 - alpha) * self.psi(t_l, period, phase) + alpha * self.psi(t_r, period, phase)
        aligned = (1 - alpha) * self.aligner(u_l) + alpha * self.aligner(u_r)
        return psi_t - psi_lerp + aligned


class FFAAPE(nn.Module):
    """Motion noise + time stamps -> motion codes v_t (MotionMapping then the APE)."""

    def __init__(self, cfg: StyleInVConfig):
        super().__init__()
        self.cfg = cfg
        self.mapping = MotionMapping(cfg)
        self.time_encoder = AcyclicPositionalEncoding(cfg)

    def num_anchors(self, t_max: float) -> int:
        return num_anchors_for(t_max, self.cfg.motion_z_distance)

    def forward(self, z_m: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        # z_m: [B, L, Z]; t: [B, T] -> v: [B, T, V]
        return self.time_encoder(self.mapping(z_m), t)


class MappingFuse(nn.Module):
    """Temporal style s_t = FC(FC(w0 ⊕ v_t)) (lrelu, lr multiplier 0.01, StyleGAN-mapping style)."""

    def __init__(self, cfg: StyleInVConfig):
        super().__init__()
        dims = [cfg.w_dim + cfg.v_dim] + [cfg.style_dim] * cfg.fuse_layers
        self.layers = nn.ModuleList(
            EqualLinear(a, b, lr_multiplier=cfg.fuse_lr_multiplier, activation="lrelu")
            for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, w0: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        # w0: [B, W]; v: [B, T, V] -> s: [B, T, S]
        x = torch.cat([w0[:, None, :].expand(-1, v.shape[1], -1), v], dim=-1)
        for layer in self.layers:
            x = layer(x)
        return x


# ---------------------------------------------------------------------------------------------
# Temporal-style modulated inversion encoder (§3.2)
# ---------------------------------------------------------------------------------------------
class AdaIN(nn.Module):
    """AdaIN(x, s) = (1 + γ) InstanceNorm(x) + β with [γ, β] = FC(s)."""

    def __init__(self, style_dim: int, channels: int):
        super().__init__()
        self.norm = nn.InstanceNorm2d(channels, affine=False)
        self.fc = EqualLinear(style_dim, 2 * channels)

    def forward(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        # x: [N, C, H, W]; s: [N, S]
        gamma, beta = self.fc(s)[:, :, None, None].chunk(2, dim=1)
        return (1 + gamma) * self.norm(x) + beta


class AdainResBlk(nn.Module):
    """out = (x + conv2(lrelu(AdaIN2(conv1(lrelu(AdaIN1(x, s))), s)))) / √2 (plain 3x3 convs)."""

    def __init__(self, channels: int, style_dim: int):
        super().__init__()
        self.norm1 = AdaIN(style_dim, channels)
        self.conv1 = nn.Conv2d(channels, channels, 3, 1, 1)
        self.norm2 = AdaIN(style_dim, channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1)
        for conv in (self.conv1, self.conv2):
            nn.init.kaiming_normal_(conv.weight, a=0.2, nonlinearity="leaky_relu")
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.leaky_relu(self.norm1(x, s), 0.2))
        h = self.conv2(F.leaky_relu(self.norm2(h, s), 0.2))
        return (x + h) / math.sqrt(2.0)


class ModulatedEncoder(nn.Module):
    """IR-SE backbone with one :class:`AdainResBlk` after the last unit of each stage, then
    AdaptiveAvgPool -> FC -> a W-space vector.

    The input stem and the first stage do not depend on the style, so they run once per image and
    their features are shared by every time stamp of that image.
    """

    def __init__(self, cfg: StyleInVConfig):
        super().__init__()
        self.enc_cfg = cfg.encoder
        self.backbone = IRSEBackbone(cfg.encoder.backbone)
        chans = tuple(cfg.encoder.backbone.channels)
        self.adain = nn.ModuleList(AdainResBlk(c, cfg.style_dim) for c in chans) if cfg.encoder.adain else None
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = EqualLinear(chans[-1], cfg.w_dim)

    def train(self, mode: bool = True) -> "ModulatedEncoder":
        super().train(mode)
        if self.enc_cfg.bn_mode == "frozen":  # keep the W encoder's BN statistics
            for m in self.backbone.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.eval()
        return self

    def forward(self, x0: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        # x0: [B, 3, R, R] in [-1, 1]; s: [B, T, S] -> Δ: [B, T, W]
        B, T = s.shape[:2]
        r = self.enc_cfg.resolution
        if x0.shape[-1] != r:
            x0 = F.interpolate(x0, size=(r, r), mode="bilinear", align_corners=False, antialias=True)
        s = s.reshape(B * T, -1)
        h = self.backbone.input_layer(x0)
        for i, stage in enumerate(self.backbone.stages):
            h = stage(h)
            if i == 0:  # style-free so far: share across time stamps
                h = h.repeat_interleave(T, dim=0)                      # [B*T, C1, R/2, R/2]
            if self.adain is not None:
                h = self.adain[i](h, s)
        delta = self.head(self.pool(h).flatten(1))                     # [B*T, W]
        return delta.reshape(B, T, -1)


class StyleInV(nn.Module):
    """The trainable motion generator SI: (x0, w0, z_m, t) -> w_t (W space) [B, T, w_dim]."""

    def __init__(self, cfg: StyleInVConfig):
        super().__init__()
        self.cfg = cfg
        self.ffa_ape = FFAAPE(cfg)
        self.fuse = MappingFuse(cfg)
        self.encoder = ModulatedEncoder(cfg)
        # used only when input_residual is False (plain pSp: E(x) + w_avg)
        self.register_buffer("w_avg", torch.zeros(cfg.w_dim))

    def motion_codes(self, z_m: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.ffa_ape(z_m, t)

    def forward(self, x0: torch.Tensor, w0: torch.Tensor, z_m: torch.Tensor,
                t: torch.Tensor) -> torch.Tensor:
        # x0: [B, 3, R, R] = G(w0); w0: [B, W]; z_m: [B, L, Z]; t: [B, T] frames -> w_t: [B, T, W]
        v = self.ffa_ape(z_m, t)                 # [B, T, V]
        s = self.fuse(w0, v)                     # [B, T, S]
        delta = self.encoder(x0, s)              # [B, T, W]
        base = w0 if self.cfg.input_residual else self.w_avg.expand_as(w0)
        return base[:, None, :] + delta


def config_from_checkpoint(ckpt: dict) -> StyleInVConfig:
    model_cfg = ckpt.get("config", {}).get("model", ckpt.get("config", {}))
    cfg = config_from_dict(StyleInVConfig, model_cfg)
    cfg.encoder = encoder_config_from_dict(model_cfg.get("encoder", {}))
    return cfg
