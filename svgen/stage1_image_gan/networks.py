"""StyleGAN2 generator (mapping + synthesis) and residual discriminator (Karras et al. 2020).

``Generator(cfg)`` maps z -> w (8 FC layers by default, lr multiplier 0.01, tracked average
``w_avg`` for truncation) and renders ws [N, num_ws, w_dim] from a learned 4x4 constant through
modulated convolutions; ``num_ws = 2*log2(R) - 2``. ``Discriminator(cfg)`` is the residual
discriminator with a minibatch-std epilogue. Configs are the dataclasses of ``presets``.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn

from svgen.nn.equalized import EqualLinear
from svgen.stage1_image_gan.layers import (
    DiscriminatorBlock,
    DiscriminatorEpilogue,
    SynthesisBlock,
    normalize_2nd_moment,
)
from svgen.stage1_image_gan.presets import DiscriminatorConfig, GeneratorConfig, check_resolution


def channels_per_resolution(resolutions: list[int], channel_base: int, channel_max: int) -> dict[int, int]:
    """Feature maps at each resolution: min(channel_base // r, channel_max) (ValueError if 0)."""
    channels = {r: min(channel_base // r, channel_max) for r in resolutions}
    if min(channels.values()) < 1:
        raise ValueError(f"channel_base {channel_base} / channel_max {channel_max} leave no "
                         f"channels at resolution {max(resolutions)}")
    return channels


def _fp16_resolution(img_resolution: int, num_fp16_res: int) -> int:
    """Lowest resolution computed in fp16 when the top ``num_fp16_res`` resolutions are."""
    return max(2 ** (int(math.log2(img_resolution)) + 1 - num_fp16_res), 8)


class MappingNetwork(nn.Module):
    """z (and optional label c) -> w: normalise z, ``num_layers`` lrelu FC layers with lr multiplier.

    Training forwards with ``update_emas=True`` move ``w_avg`` towards the batch mean of w
    (``w_avg = lerp(mean(w), w_avg, w_avg_beta)``); truncation pulls w towards ``w_avg`` by psi,
    on all ws or only the first ``truncation_cutoff`` of them.
    """

    def __init__(self, z_dim: int, c_dim: int, w_dim: int, num_ws: Optional[int],
                 num_layers: int = 8, embed_features: Optional[int] = None,
                 layer_features: Optional[int] = None, activation: str = "lrelu",
                 lr_multiplier: float = 0.01, w_avg_beta: Optional[float] = 0.995):
        super().__init__()
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.w_dim = w_dim
        self.num_ws = num_ws
        self.num_layers = num_layers
        self.w_avg_beta = w_avg_beta
        embed_features = (w_dim if embed_features is None else embed_features) if c_dim > 0 else 0
        layer_features = w_dim if layer_features is None else layer_features
        features = [z_dim + embed_features] + [layer_features] * (num_layers - 1) + [w_dim]
        if c_dim > 0:
            self.embed = EqualLinear(c_dim, embed_features)
        for idx in range(num_layers):
            setattr(self, f"fc{idx}", EqualLinear(features[idx], features[idx + 1],
                                                          activation=activation,
                                                          lr_multiplier=lr_multiplier))
        if num_ws is not None and w_avg_beta is not None:
            self.register_buffer("w_avg", torch.zeros([w_dim]))

    def forward(self, z: Optional[torch.Tensor], c: Optional[torch.Tensor] = None,
                truncation_psi: float = 1.0, truncation_cutoff: Optional[int] = None,
                update_emas: bool = False) -> torch.Tensor:
        # z [N, z_dim], c [N, c_dim] -> ws [N, num_ws, w_dim] (or [N, w_dim] when num_ws is None)
        x = None
        if self.z_dim > 0:
            if z is None or z.ndim != 2 or z.shape[1] != self.z_dim:
                raise ValueError(f"z must have shape [N, {self.z_dim}], got "
                                 f"{None if z is None else list(z.shape)}")
            x = normalize_2nd_moment(z.to(torch.float32))
        if self.c_dim > 0:
            if c is None or c.ndim != 2 or c.shape[1] != self.c_dim:
                raise ValueError(f"c must have shape [N, {self.c_dim}] for a conditional network")
            y = normalize_2nd_moment(self.embed(c.to(torch.float32)))
            x = torch.cat([x, y], dim=1) if x is not None else y
        for idx in range(self.num_layers):
            x = getattr(self, f"fc{idx}")(x)  # [N, w_dim]

        if update_emas and self.w_avg_beta is not None and self.num_ws is not None:
            self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))

        if self.num_ws is not None:
            x = x.unsqueeze(1).repeat([1, self.num_ws, 1])  # [N, num_ws, w_dim]
        if truncation_psi != 1:
            if self.num_ws is None or truncation_cutoff is None:
                x = self.w_avg.lerp(x, truncation_psi)
            else:
                x = x.clone()
                x[:, :truncation_cutoff] = self.w_avg.lerp(x[:, :truncation_cutoff], truncation_psi)
        return x

    def extra_repr(self) -> str:
        return (f"z_dim={self.z_dim}, c_dim={self.c_dim}, w_dim={self.w_dim}, num_ws={self.num_ws}, "
                f"layers={self.num_layers}")


class SynthesisNetwork(nn.Module):
    """ws [N, num_ws, w_dim] -> image [N, C, R, R]: one :class:`SynthesisBlock` per resolution 4..R.

    Block ``b{r}`` consumes ``num_conv + num_torgb`` consecutive ws; neighbouring blocks share one
    (the ToRGB w of a block is the conv0 w of the next), giving ``num_ws = 2*log2(R) - 2``.
    """

    def __init__(self, w_dim: int, img_resolution: int, img_channels: int,
                 channel_base: int = 16384, channel_max: int = 512, num_fp16_res: int = 0,
                 architecture: str = "skip", resample_filter: tuple = (1, 3, 3, 1),
                 conv_clamp: Optional[float] = None):
        super().__init__()
        self.w_dim = w_dim
        self.img_resolution = check_resolution(img_resolution, lo=4, hi=1 << 16)
        self.img_channels = img_channels
        self.block_resolutions = [2 ** i for i in range(2, int(math.log2(img_resolution)) + 1)]
        self.channels = channels_per_resolution(self.block_resolutions, channel_base, channel_max)
        fp16_resolution = _fp16_resolution(img_resolution, num_fp16_res)
        self.num_ws = 0
        for res in self.block_resolutions:
            block = SynthesisBlock(
                in_channels=self.channels[res // 2] if res > 4 else 0,
                out_channels=self.channels[res], w_dim=w_dim, resolution=res,
                img_channels=img_channels, is_last=(res == img_resolution),
                architecture=architecture, resample_filter=resample_filter,
                conv_clamp=conv_clamp, use_fp16=(num_fp16_res > 0 and res >= fp16_resolution))
            self.num_ws += block.num_conv + (block.num_torgb if res == img_resolution else 0)
            setattr(self, f"b{res}", block)

    def blocks(self) -> list[SynthesisBlock]:
        return [getattr(self, f"b{res}") for res in self.block_resolutions]

    def forward(self, ws: torch.Tensor, noise_mode: str = "random",
                fused_modconv: Optional[bool] = None, force_fp32: bool = False) -> torch.Tensor:
        # ws [N, num_ws, w_dim] -> img [N, img_channels, R, R] (float32, roughly in [-1, 1])
        if ws.ndim != 3 or ws.shape[1] != self.num_ws or ws.shape[2] != self.w_dim:
            raise ValueError(f"ws must have shape [N, {self.num_ws}, {self.w_dim}], got {list(ws.shape)}")
        ws = ws.to(torch.float32)
        x = img = None
        w_idx = 0
        for block in self.blocks():
            block_ws = ws.narrow(1, w_idx, block.num_conv + block.num_torgb)
            w_idx += block.num_conv
            x, img = block(x, img, block_ws, noise_mode=noise_mode, fused_modconv=fused_modconv,
                           force_fp32=force_fp32)
        return img

    def extra_repr(self) -> str:
        return f"w_dim={self.w_dim}, resolution={self.img_resolution}, num_ws={self.num_ws}"


class Generator(nn.Module):
    """StyleGAN2 generator: ``G(z) = synthesis(mapping(z))``."""

    def __init__(self, cfg: GeneratorConfig):
        super().__init__()
        self.cfg = cfg
        self.z_dim = cfg.z_dim
        self.c_dim = cfg.c_dim
        self.w_dim = cfg.w_dim
        self.img_resolution = check_resolution(cfg.img_resolution, lo=8, hi=1 << 16)
        self.img_channels = cfg.img_channels
        self.synthesis = SynthesisNetwork(
            w_dim=cfg.w_dim, img_resolution=cfg.img_resolution, img_channels=cfg.img_channels,
            channel_base=cfg.channel_base, channel_max=cfg.channel_max,
            num_fp16_res=cfg.num_fp16_res, architecture=cfg.architecture,
            resample_filter=tuple(cfg.resample_filter), conv_clamp=cfg.conv_clamp)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(
            z_dim=cfg.z_dim, c_dim=cfg.c_dim, w_dim=cfg.w_dim, num_ws=self.num_ws,
            num_layers=cfg.mapping_layers, lr_multiplier=cfg.mapping_lr_multiplier,
            w_avg_beta=cfg.w_avg_beta)

    def forward(self, z: torch.Tensor, c: Optional[torch.Tensor] = None, truncation_psi: float = 1.0,
                truncation_cutoff: Optional[int] = None, noise_mode: str = "random",
                update_emas: bool = False, fused_modconv: Optional[bool] = None,
                force_fp32: bool = False) -> torch.Tensor:
        # z [N, z_dim] -> img [N, img_channels, R, R]
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff,
                          update_emas=update_emas)
        return self.synthesis(ws, noise_mode=noise_mode, fused_modconv=fused_modconv,
                              force_fp32=force_fp32)


class Discriminator(nn.Module):
    """Residual StyleGAN2 discriminator: ``D(img [N, C, R, R], c) -> logits [N, 1]``."""

    def __init__(self, cfg: DiscriminatorConfig):
        super().__init__()
        self.cfg = cfg
        self.c_dim = cfg.c_dim
        self.img_resolution = check_resolution(cfg.img_resolution, lo=8, hi=1 << 16)
        self.img_channels = cfg.img_channels
        self.block_resolutions = [2 ** i for i in range(int(math.log2(cfg.img_resolution)), 2, -1)]
        self.channels = channels_per_resolution(self.block_resolutions + [4], cfg.channel_base,
                                                cfg.channel_max)
        fp16_resolution = _fp16_resolution(cfg.img_resolution, cfg.num_fp16_res)
        cmap_dim = self.channels[4] if cfg.c_dim > 0 else 0
        for res in self.block_resolutions:
            setattr(self, f"b{res}", DiscriminatorBlock(
                in_channels=self.channels[res] if res < cfg.img_resolution else 0,
                tmp_channels=self.channels[res], out_channels=self.channels[res // 2],
                resolution=res, img_channels=cfg.img_channels, architecture=cfg.architecture,
                conv_clamp=cfg.conv_clamp,
                use_fp16=(cfg.num_fp16_res > 0 and res >= fp16_resolution)))
        if cfg.c_dim > 0:
            self.mapping = MappingNetwork(z_dim=0, c_dim=cfg.c_dim, w_dim=cmap_dim, num_ws=None,
                                          w_avg_beta=None)
        self.b4 = DiscriminatorEpilogue(
            self.channels[4], cmap_dim=cmap_dim, resolution=4, img_channels=cfg.img_channels,
            architecture=cfg.architecture, mbstd_group_size=cfg.mbstd_group_size,
            mbstd_num_channels=cfg.mbstd_num_channels, conv_clamp=cfg.conv_clamp)

    def forward(self, img: torch.Tensor, c: Optional[torch.Tensor] = None,
                force_fp32: bool = False) -> torch.Tensor:
        # img [N, C, R, R] in [-1, 1] -> logits [N, 1]
        if img.ndim != 4 or img.shape[1:] != (self.img_channels, self.img_resolution, self.img_resolution):
            raise ValueError(f"D expects images [N, {self.img_channels}, {self.img_resolution}, "
                             f"{self.img_resolution}], got {list(img.shape)}")
        x = None
        for res in self.block_resolutions:
            x, img = getattr(self, f"b{res}")(x, img, force_fp32=force_fp32)
        cmap = self.mapping(None, c) if self.c_dim > 0 else None
        return self.b4(x, img, cmap)
