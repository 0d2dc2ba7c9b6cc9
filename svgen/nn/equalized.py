"""Equalised-learning-rate layers (Karras et al. 2018, §4.1; StyleGAN2's ``FullyConnectedLayer`` and
``Conv2dLayer``).

Weights are stored at unit scale (N(0, 1), divided by the lr multiplier) and multiplied at run time by
``weight_gain = lr_multiplier / sqrt(fan_in)``; biases by ``bias_gain = lr_multiplier``. Adam then sees
every weight at the same scale, whatever its fan-in. Parameter names are ``weight`` / ``bias`` (the
stylegan2-ada-pytorch layout), so NVIDIA and rosinality checkpoints map onto them key for key.

Shapes in comments: N batch, I/O in/out features or channels, H/W/L spatial, k kernel size.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from svgen.ops.bias_act import bias_act
from svgen.ops.conv2d_resample import conv2d_resample
from svgen.ops.upfirdn2d import setup_filter

LRELU_GAIN = math.sqrt(2.0)


def activation_gain(activation: str) -> float:
    """Default output gain of an activation (sqrt(2) for relu/lrelu, so He-init variance is kept)."""
    return LRELU_GAIN if activation in ("relu", "lrelu", "swish") else 1.0


class EqualLinear(nn.Module):
    """``y = act(x (W weight_gain)^T + b bias_gain)`` over the last dimension of ``x`` [..., I] -> [..., O].

    ``bias_init`` is the stored initial bias (the effective one is ``bias_init * lr_multiplier``, as in
    StyleGAN2); ``init_gain`` scales the initial weights (pSp's small offset heads).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, activation: str = "linear",
                 lr_multiplier: float = 1.0, bias_init: float = 0.0, init_gain: float = 1.0):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.activation = activation
        self.lr_multiplier = lr_multiplier
        w = torch.randn([out_features, in_features])
        self.weight = nn.Parameter((w * init_gain if init_gain != 1 else w) / lr_multiplier)   # [O, I]
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init))) if bias else None
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.to(x.dtype) * self.weight_gain
        b = self.bias
        if b is not None:
            b = b.to(x.dtype)
            if self.bias_gain != 1:
                b = b * self.bias_gain
        if self.activation == "linear":
            return F.linear(x, w, b)
        return bias_act(F.linear(x, w), b, dim=x.ndim - 1, act=self.activation)

    def extra_repr(self) -> str:
        return (f"in={self.in_features}, out={self.out_features}, act={self.activation}, "
                f"lr_mul={self.lr_multiplier:g}")


class EqualConv2d(nn.Module):
    """Equalised-lr 2-d convolution with optional FIR up/down-sampling, bias, activation and clamp."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bias: bool = True,
                 activation: str = "linear", up: int = 1, down: int = 1,
                 resample_filter: Sequence[int] = (1, 3, 3, 1), conv_clamp: Optional[float] = None):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.activation = activation
        self.up = up
        self.down = down
        self.conv_clamp = conv_clamp
        self.register_buffer("resample_filter", setup_filter(list(resample_filter)))
        self.padding = kernel_size // 2
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size ** 2)
        self.act_gain = activation_gain(activation)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        self.bias = nn.Parameter(torch.zeros([out_channels])) if bias else None

    def forward(self, x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:  # [N,I,H,W] -> [N,O,H',W']
        w = (self.weight * self.weight_gain).to(x.dtype)
        b = self.bias.to(x.dtype) if self.bias is not None else None
        x = conv2d_resample(x, w, f=self.resample_filter, up=self.up, down=self.down,
                            padding=self.padding, flip_weight=(self.up == 1))
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act(x, b, act=self.activation, gain=self.act_gain * gain, clamp=clamp)

    def extra_repr(self) -> str:
        k = self.weight.shape[-1]
        return (f"in={self.in_channels}, out={self.out_channels}, k={k}, up={self.up}, "
                f"down={self.down}, act={self.activation}")


class EqualConv1d(nn.Module):
    """Equalised-lr 1-d convolution with same padding: [N, I, L] -> [N, O, L].

    ``mask_right`` zeroes the taps that look ahead: with kernel k and padding k//2, output i sees inputs
    i-k//2 .. i+k//2; masking taps at positions >= (k+1)//2 keeps i-k//2 .. i (a causal layer that
    preserves the length).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bias: bool = True,
                 lr_multiplier: float = 1.0, activation: str = "linear", mask_right: bool = False):
        super().__init__()
        self.activation = activation
        self.padding = kernel_size // 2
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size) / lr_multiplier)
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.weight_gain = lr_multiplier / math.sqrt(in_channels * kernel_size)
        self.bias_gain = lr_multiplier
        mask = torch.ones(kernel_size)
        if mask_right:
            mask[(kernel_size + 1) // 2:] = 0.0
        self.register_buffer("tap_mask", mask, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight * (self.weight_gain * self.tap_mask)
        b = None if self.bias is None else self.bias * self.bias_gain
        return bias_act(F.conv1d(x, w, b, padding=self.padding), None, act=self.activation)
