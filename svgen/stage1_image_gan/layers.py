"""StyleGAN2 building blocks (Karras et al. 2020, "Analyzing and Improving the Image Quality of StyleGAN").

Every layer uses the *equalized learning rate* (the dense and plain conv layers are
:mod:`svgen.nn.equalized`'s): weights are stored as N(0, 1) (divided by the lr multiplier) and scaled
at run time by ``lr_multiplier / sqrt(fan_in)``. Module and parameter names
follow the public stylegan2-ada-pytorch layout (``fc0``, ``b64.conv0.affine``, ``noise_const``, ...)
so that NVIDIA checkpoints map onto these modules key for key.

Shapes in comments: N batch, I/O in/out channels, H/W spatial, k kernel size.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from torch import nn

from svgen.nn.equalized import EqualConv2d, EqualLinear, activation_gain
from svgen.ops.bias_act import bias_act
from svgen.ops.modulated_conv import modulated_conv2d
from svgen.ops.upfirdn2d import downsample2d, setup_filter, upsample2d

NOISE_MODES = ("random", "const", "none")


def normalize_2nd_moment(x: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    """x / sqrt(mean(x^2)): the StyleGAN 'pixel norm' applied to z (and label embeddings)."""
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


class SynthesisLayer(nn.Module):
    """Modulated 3x3 convolution (optionally 2x upsampling) + per-pixel noise + bias + lrelu.

    style s = affine(w) (bias initialised to 1); weights are modulated by s and demodulated to unit
    L2 norm per output channel; noise (scaled by the learned ``noise_strength``, initialised to 0)
    is ``random`` (fresh N(0,1) per call), ``const`` (the fixed buffer ``noise_const``) or ``none``.
    """

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int,
                 kernel_size: int = 3, up: int = 1, use_noise: bool = True, activation: str = "lrelu",
                 resample_filter: Sequence[int] = (1, 3, 3, 1), conv_clamp: Optional[float] = None):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.resolution = resolution
        self.up = up
        self.use_noise = use_noise
        self.activation = activation
        self.conv_clamp = conv_clamp
        self.register_buffer("resample_filter", setup_filter(list(resample_filter)))
        self.padding = kernel_size // 2
        self.act_gain = activation_gain(activation)
        self.affine = EqualLinear(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        if use_noise:
            self.register_buffer("noise_const", torch.randn([resolution, resolution]))  # [H, W]
            self.noise_strength = nn.Parameter(torch.zeros([]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str = "random",
                fused_modconv: bool = True, gain: float = 1.0) -> torch.Tensor:
        # x [N, I, R/up, R/up], w [N, w_dim] -> [N, O, R, R]
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")
        styles = self.affine(w)  # [N, I]
        noise = None
        if self.use_noise and noise_mode == "random":
            noise = torch.randn([x.shape[0], 1, self.resolution, self.resolution],
                                device=x.device) * self.noise_strength
        elif self.use_noise and noise_mode == "const":
            noise = self.noise_const * self.noise_strength
        x = modulated_conv2d(
            x, self.weight, styles, noise=noise, up=self.up, padding=self.padding,
            resample_filter=self.resample_filter, demodulate=True, flip_weight=(self.up == 1),
            fused_modconv=fused_modconv)
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act(x, self.bias.to(x.dtype), act=self.activation,
                                  gain=self.act_gain * gain, clamp=clamp)

    def extra_repr(self) -> str:
        return (f"in={self.in_channels}, out={self.out_channels}, res={self.resolution}, "
                f"up={self.up}, noise={self.use_noise}")


class ToRGBLayer(nn.Module):
    """1x1 modulated convolution to RGB without demodulation; the style is scaled by 1/sqrt(I)."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, kernel_size: int = 1,
                 conv_clamp: Optional[float] = None):
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = EqualLinear(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size ** 2)

    def forward(self, x: torch.Tensor, w: torch.Tensor, fused_modconv: bool = True) -> torch.Tensor:
        styles = self.affine(w) * self.weight_gain  # [N, I]
        x = modulated_conv2d(x, self.weight, styles, demodulate=False,
                                             fused_modconv=fused_modconv)
        return bias_act(x, self.bias.to(x.dtype), clamp=self.conv_clamp)


def _block_dtype(use_fp16: bool, force_fp32: bool, device: torch.device) -> torch.dtype:
    """fp16 only where asked for and on CUDA; CPU always computes in fp32."""
    return torch.float16 if (use_fp16 and not force_fp32 and device.type == "cuda") else torch.float32


class SynthesisBlock(nn.Module):
    """One resolution of the synthesis network.

    The first block (``in_channels == 0``) starts from a learned constant [C, 4, 4]; the others
    upsample with ``conv0`` (transposed conv + FIR) followed by ``conv1``. Architecture ``skip``
    (StyleGAN2): every block adds its ToRGB output to the upsampled running image.
    """

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int,
                 img_channels: int, is_last: bool, architecture: str = "skip",
                 resample_filter: Sequence[int] = (1, 3, 3, 1), conv_clamp: Optional[float] = None,
                 use_fp16: bool = False):
        if architecture not in ("orig", "skip", "resnet"):
            raise ValueError(f"unknown synthesis architecture {architecture!r}")
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.w_dim = w_dim
        self.resolution = resolution
        self.img_channels = img_channels
        self.is_last = is_last
        self.architecture = architecture
        self.use_fp16 = use_fp16
        self.register_buffer("resample_filter", setup_filter(list(resample_filter)))
        self.num_conv = 0
        self.num_torgb = 0
        if in_channels == 0:
            self.const = nn.Parameter(torch.randn([out_channels, resolution, resolution]))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim, resolution, up=2,
                                        resample_filter=resample_filter, conv_clamp=conv_clamp)
            self.num_conv += 1
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim, resolution,
                                    resample_filter=resample_filter, conv_clamp=conv_clamp)
        self.num_conv += 1
        if is_last or architecture == "skip":
            self.torgb = ToRGBLayer(out_channels, img_channels, w_dim, conv_clamp=conv_clamp)
            self.num_torgb += 1
        if in_channels != 0 and architecture == "resnet":
            self.skip = EqualConv2d(in_channels, out_channels, kernel_size=1, bias=False, up=2,
                                    resample_filter=resample_filter)

    def forward(self, x: Optional[torch.Tensor], img: Optional[torch.Tensor], ws: torch.Tensor,
                noise_mode: str = "random", fused_modconv: Optional[bool] = None,
                force_fp32: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        # x [N, I, R/2, R/2] (None for the first block), img [N, 3, R/2, R/2] or None,
        # ws [N, num_conv + num_torgb, w_dim] -> x [N, O, R, R], img [N, 3, R, R] (fp32)
        w_iter = iter(ws.unbind(dim=1))
        dtype = _block_dtype(self.use_fp16, force_fp32, ws.device)
        if fused_modconv is None:  # grouped conv only for inference (faster there, slower to train)
            fused_modconv = (not self.training) and (dtype == torch.float32 or ws.shape[0] == 1)

        if self.in_channels == 0:
            x = self.const.to(dtype).unsqueeze(0).repeat([ws.shape[0], 1, 1, 1])  # [N, C, 4, 4]
            x = self.conv1(x, next(w_iter), noise_mode=noise_mode, fused_modconv=fused_modconv)
        elif self.architecture == "resnet":
            x = x.to(dtype)
            y = self.skip(x, gain=math.sqrt(0.5))
            x = self.conv0(x, next(w_iter), noise_mode=noise_mode, fused_modconv=fused_modconv)
            x = self.conv1(x, next(w_iter), noise_mode=noise_mode, fused_modconv=fused_modconv,
                           gain=math.sqrt(0.5))
            x = y.add_(x)
        else:
            x = x.to(dtype)
            x = self.conv0(x, next(w_iter), noise_mode=noise_mode, fused_modconv=fused_modconv)
            x = self.conv1(x, next(w_iter), noise_mode=noise_mode, fused_modconv=fused_modconv)

        if img is not None:
            img = upsample2d(img, self.resample_filter)
        if self.is_last or self.architecture == "skip":
            y = self.torgb(x, next(w_iter), fused_modconv=fused_modconv).to(torch.float32)
            img = img.add_(y) if img is not None else y
        return x, img

    def extra_repr(self) -> str:
        return f"res={self.resolution}, arch={self.architecture}, fp16={self.use_fp16}"


class DiscriminatorBlock(nn.Module):
    """One resolution of the residual discriminator: [FromRGB] -> conv0 3x3 -> conv1 3x3 down 2.

    ``resnet``: a 1x1 down-2 skip (no bias) is added, both paths scaled by sqrt(0.5).
    FromRGB exists only in the first (highest-resolution) block unless ``architecture == "skip"``.
    """

    def __init__(self, in_channels: int, tmp_channels: int, out_channels: int, resolution: int,
                 img_channels: int, architecture: str = "resnet", activation: str = "lrelu",
                 resample_filter: Sequence[int] = (1, 3, 3, 1), conv_clamp: Optional[float] = None,
                 use_fp16: bool = False):
        if architecture not in ("orig", "skip", "resnet"):
            raise ValueError(f"unknown discriminator architecture {architecture!r}")
        if in_channels not in (0, tmp_channels):
            raise ValueError("in_channels must be 0 (first block) or tmp_channels")
        super().__init__()
        self.in_channels = in_channels
        self.resolution = resolution
        self.img_channels = img_channels
        self.architecture = architecture
        self.use_fp16 = use_fp16
        self.register_buffer("resample_filter", setup_filter(list(resample_filter)))
        if in_channels == 0 or architecture == "skip":
            self.fromrgb = EqualConv2d(img_channels, tmp_channels, kernel_size=1,
                                       activation=activation, conv_clamp=conv_clamp)
        self.conv0 = EqualConv2d(tmp_channels, tmp_channels, kernel_size=3, activation=activation,
                                 conv_clamp=conv_clamp)
        self.conv1 = EqualConv2d(tmp_channels, out_channels, kernel_size=3, activation=activation,
                                 down=2, resample_filter=resample_filter, conv_clamp=conv_clamp)
        if architecture == "resnet":
            self.skip = EqualConv2d(tmp_channels, out_channels, kernel_size=1, bias=False, down=2,
                                    resample_filter=resample_filter)

    def forward(self, x: Optional[torch.Tensor], img: Optional[torch.Tensor],
                force_fp32: bool = False) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        # x [N, C, R, R] (None for the first block), img [N, 3, R, R] -> x [N, C', R/2, R/2]
        device = (x if x is not None else img).device
        dtype = _block_dtype(self.use_fp16, force_fp32, device)
        if x is not None:
            x = x.to(dtype)
        if self.in_channels == 0 or self.architecture == "skip":
            img = img.to(dtype)
            y = self.fromrgb(img)
            x = x + y if x is not None else y
            img = downsample2d(img, self.resample_filter) if self.architecture == "skip" else None
        if self.architecture == "resnet":
            y = self.skip(x, gain=math.sqrt(0.5))
            x = self.conv0(x)
            x = self.conv1(x, gain=math.sqrt(0.5))
            x = y.add_(x)
        else:
            x = self.conv1(self.conv0(x))
        return x, img

    def extra_repr(self) -> str:
        return f"res={self.resolution}, arch={self.architecture}, fp16={self.use_fp16}"


class MinibatchStdLayer(nn.Module):
    """Appends the per-group standard deviation of the features as extra channel(s).

    The batch is split into groups of G = min(group_size, N) samples taken with stride N/G (sample
    i belongs to group i mod N/G), so N must be divisible by G.
    """

    def __init__(self, group_size: Optional[int], num_channels: int = 1):
        super().__init__()
        self.group_size = group_size
        self.num_channels = num_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [N, C, H, W] -> [N, C + F, H, W]
        N, C, H, W = x.shape
        G = min(self.group_size, N) if self.group_size else N
        F = self.num_channels
        if N % G:
            raise ValueError(f"minibatch-std: batch {N} is not divisible by the group size {G}")
        c = C // F
        y = x.reshape(G, -1, F, c, H, W)        # [G, n, F, c, H, W]
        y = y - y.mean(dim=0)                   # centre over the group
        y = y.square().mean(dim=0)              # [n, F, c, H, W] variance
        y = (y + 1e-8).sqrt()                   # std
        y = y.mean(dim=[2, 3, 4])               # [n, F] mean over channels and pixels
        y = y.reshape(-1, F, 1, 1).repeat(G, 1, H, W)  # [N, F, H, W]
        return torch.cat([x, y], dim=1)

    def extra_repr(self) -> str:
        return f"group_size={self.group_size}, num_channels={self.num_channels}"


class DiscriminatorEpilogue(nn.Module):
    """The 4x4 head: minibatch std -> conv 3x3 -> FC (C*16 -> C, lrelu) -> FC -> logit
    (or a projection onto the mapped label ``cmap`` when conditional)."""

    def __init__(self, in_channels: int, cmap_dim: int, resolution: int, img_channels: int,
                 architecture: str = "resnet", mbstd_group_size: Optional[int] = 4,
                 mbstd_num_channels: int = 1, activation: str = "lrelu",
                 conv_clamp: Optional[float] = None):
        super().__init__()
        self.in_channels = in_channels
        self.cmap_dim = cmap_dim
        self.resolution = resolution
        self.img_channels = img_channels
        self.architecture = architecture
        if architecture == "skip":
            self.fromrgb = EqualConv2d(img_channels, in_channels, kernel_size=1, activation=activation)
        self.mbstd = (MinibatchStdLayer(mbstd_group_size, mbstd_num_channels)
                      if mbstd_num_channels > 0 else None)
        self.conv = EqualConv2d(in_channels + mbstd_num_channels, in_channels, kernel_size=3,
                                activation=activation, conv_clamp=conv_clamp)
        self.fc = EqualLinear(in_channels * resolution ** 2, in_channels, activation=activation)
        self.out = EqualLinear(in_channels, 1 if cmap_dim == 0 else cmap_dim)

    def forward(self, x: torch.Tensor, img: Optional[torch.Tensor],
                cmap: Optional[torch.Tensor]) -> torch.Tensor:  # [N, C, 4, 4] -> [N, 1]
        x = x.to(torch.float32)
        if self.architecture == "skip":
            x = x + self.fromrgb(img.to(torch.float32))
        if self.mbstd is not None:
            x = self.mbstd(x)
        x = self.conv(x)
        x = self.fc(x.flatten(1))
        x = self.out(x)
        if self.cmap_dim > 0:
            x = (x * cmap).sum(dim=1, keepdim=True) * (1.0 / math.sqrt(self.cmap_dim))
        return x
