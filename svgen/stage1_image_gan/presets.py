"""StyleGAN2 network and training presets as plain dataclasses.

Every checkpoint stores its :class:`TrainPreset` as a dict (``config_to_dict``), so a checkpoint alone
is enough to rebuild its networks. The published configurations follow stylegan2-ada-pytorch's
``cfg_specs`` (channel_base = fmaps x 32768); ``tiny`` is ours, sized for CPU tests and the demo.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

from svgen.utils.errors import SvgenError

PRESET_NAMES = ("tiny", "paper256", "stylegan2", "auto")


@dataclass
class GeneratorConfig:
    """Hyper-parameters of :class:`svgen.stage1_image_gan.networks.Generator`."""

    z_dim: int = 512                  # input latent size
    c_dim: int = 0                    # conditioning label size, 0 = unconditional
    w_dim: int = 512                  # intermediate latent size
    img_resolution: int = 256         # output resolution (power of two)
    img_channels: int = 3
    mapping_layers: int = 8           # FC layers in the mapping network
    mapping_lr_multiplier: float = 0.01
    w_avg_beta: float = 0.995         # decay of the tracked W average (truncation centre)
    channel_base: int = 16384         # channels at resolution r = min(channel_base // r, channel_max)
    channel_max: int = 512
    architecture: str = "skip"        # "skip" (StyleGAN2 default), "orig" or "resnet"
    conv_clamp: Optional[float] = None
    num_fp16_res: int = 0             # top resolutions run in fp16 (CUDA only)
    resample_filter: tuple[int, ...] = (1, 3, 3, 1)


@dataclass
class DiscriminatorConfig:
    """Hyper-parameters of :class:`svgen.stage1_image_gan.networks.Discriminator`."""

    c_dim: int = 0
    img_resolution: int = 256
    img_channels: int = 3
    channel_base: int = 16384
    channel_max: int = 512
    architecture: str = "resnet"      # "resnet" (StyleGAN2 default), "skip" or "orig"
    mbstd_group_size: int = 4         # minibatch-std group (min(group, N) is used)
    mbstd_num_channels: int = 1       # 0 disables the minibatch-std layer
    conv_clamp: Optional[float] = None
    num_fp16_res: int = 0


@dataclass
class TrainPreset:
    """A complete StyleGAN2 configuration: networks plus the training hyper-parameters."""

    name: str
    G: GeneratorConfig = field(default_factory=GeneratorConfig)
    D: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    batch: int = 32
    lr_G: float = 0.002
    lr_D: float = 0.002
    betas: tuple[float, float] = (0.0, 0.99)
    r1_gamma: float = 10.0
    pl_weight: float = 2.0
    pl_decay: float = 0.01
    pl_batch_shrink: int = 2
    G_reg_interval: int = 4
    D_reg_interval: int = 16
    style_mixing_prob: float = 0.9
    ema_kimg: float = 10.0            # G EMA half-life in thousands of images
    ema_rampup: Optional[float] = None  # EMA ramp-up ratio (0.05 in "auto"), None = off
    ada_target: float = 0.6
    ada_kimg: float = 500.0
    augpipe: str = "bgc"


def check_resolution(resolution: int, lo: int = 8, hi: int = 1024) -> int:
    """A power of two in [lo, hi], else ValueError."""
    r = int(resolution)
    if r < lo or r > hi or r & (r - 1):
        raise ValueError(f"resolution must be a power of two in [{lo}, {hi}], got {resolution}")
    return r


def num_ws_for(resolution: int) -> int:
    """Number of W vectors the synthesis network consumes: 2*log2(R) - 2 (18 at 1024, 14 at 256)."""
    return 2 * int(math.log2(resolution)) - 2


def _nets(resolution: int, z_dim: int, w_dim: int, mapping_layers: int, channel_base: int,
          channel_max: int, mbstd_group: int, fp16: bool) -> tuple[GeneratorConfig, DiscriminatorConfig]:
    clamp = 256.0 if fp16 else None
    nfp16 = 4 if fp16 else 0
    G = GeneratorConfig(z_dim=z_dim, w_dim=w_dim, img_resolution=resolution,
                        mapping_layers=mapping_layers, channel_base=channel_base,
                        channel_max=channel_max, conv_clamp=clamp, num_fp16_res=nfp16)
    D = DiscriminatorConfig(img_resolution=resolution, channel_base=channel_base,
                            channel_max=channel_max, mbstd_group_size=mbstd_group,
                            conv_clamp=clamp, num_fp16_res=nfp16)
    return G, D


def get_preset(name: str, resolution: Optional[int] = None, gpus: int = 1) -> TrainPreset:
    """The named preset at ``resolution`` (default: the preset's own resolution).

    - ``tiny``: <= 64 px (default 32), z = w = 128, 2 mapping layers, <= 64 channels, batch 4,
      lr 0.004, R1 gamma 1, no path-length regularisation and no style mixing: a full G+D step
      takes a fraction of a second on 2 CPU cores. Measured on the demo clip at 64 px, dlib faces in
      64 samples (psi 0.7) at each kimg from 9 to 16: 48, 64, 63, 56, 63, 64, 64, 64. The ADA rule's
      gamma (0.0002 R^2 / batch = 0.2 at batch 4) let training oscillate: faces only at 12, 13 and
      18 kimg (14, 45, 34 of 64), colour blobs or textures in between. Batch 8 at lr 0.0025 (the ADA
      rule) or 0.008, or PL and mixing on, gave blobs at 12 kimg; lr 0.002 no face up to 16 kimg.
    - ``paper256``: the ADA paper's 256 px FFHQ baseline (batch 64, gamma 1, EMA 20 kimg).
    - ``stylegan2``: config-f (1024 px by default; channel_base 32768, batch 32, gamma 10).
    - ``auto``: the ADA rule of thumb (batch, gamma = 0.0002 R^2 / batch, EMA batch*10/32 kimg
      with ramp-up 0.05, 2 mapping layers) for ``gpus`` GPUs.
    The published configs use fp16 on the 4 highest resolutions with conv_clamp 256 (CUDA only;
    CPU runs always compute in fp32).
    """
    if name == "tiny":
        res = check_resolution(resolution or 32, lo=8, hi=64)
        G, D = _nets(res, z_dim=128, w_dim=128, mapping_layers=2, channel_base=1024,
                     channel_max=64, mbstd_group=4, fp16=False)
        batch = 4
        return TrainPreset(name="tiny", G=G, D=D, batch=batch, lr_G=0.004, lr_D=0.004,
                           r1_gamma=1.0, ema_kimg=batch * 10 / 32,
                           ema_rampup=0.05, pl_weight=0.0, style_mixing_prob=0.0)
    if name == "paper256":
        res = check_resolution(resolution or 256, lo=32)
        G, D = _nets(res, 512, 512, 8, 16384, 512, mbstd_group=8, fp16=True)
        return TrainPreset(name="paper256", G=G, D=D, batch=64, lr_G=0.0025, lr_D=0.0025,
                           r1_gamma=1.0, ema_kimg=20.0, ema_rampup=None)
    if name == "stylegan2":
        res = check_resolution(resolution or 1024, lo=32)
        G, D = _nets(res, 512, 512, 8, 32768, 512, mbstd_group=4, fp16=True)
        return TrainPreset(name="stylegan2", G=G, D=D, batch=32, lr_G=0.002, lr_D=0.002,
                           r1_gamma=10.0, ema_kimg=10.0, ema_rampup=None)
    if name == "auto":
        res = check_resolution(resolution or 256, lo=32)
        gpus = max(int(gpus), 1)
        batch = max(min(gpus * min(4096 // res, 32), 64), gpus)
        mbstd = min(batch // gpus, 4)
        cbase = 32768 if res >= 512 else 16384
        lr = 0.002 if res >= 1024 else 0.0025
        G, D = _nets(res, 512, 512, 2, cbase, 512, mbstd_group=mbstd, fp16=True)
        return TrainPreset(name="auto", G=G, D=D, batch=batch, lr_G=lr, lr_D=lr,
                           r1_gamma=0.0002 * res * res / batch, ema_kimg=batch * 10 / 32,
                           ema_rampup=0.05)
    raise ValueError(f"unknown preset {name!r} (choose from {', '.join(PRESET_NAMES)})")


def preset_from_dict(data: dict) -> TrainPreset:
    """Rebuild a :class:`TrainPreset` saved with ``config_to_dict`` (unknown keys are ignored)."""
    from svgen.utils.config import config_from_dict

    if not isinstance(data, dict) or "name" not in data:
        raise SvgenError("checkpoint config is not a TrainPreset dict")
    return config_from_dict(TrainPreset, data)
