"""StyleGAN2 modulated convolution (Karras et al. 2020, "Analyzing and Improving ...", Sec. 2.2).

    w'_{o,i,k} = s_i * w_{o,i,k}                       (modulation, per sample)
    sigma_o    = sqrt(sum_{i,k} w'_{o,i,k}^2 + eps)      (expected output std for unit input)
    w''        = w' / sigma_o                            (demodulation)

Fused: one grouped convolution with the batch as groups (each sample its own weights).
Non-fused: scale the input by s, convolve with the shared weight, scale the output by 1/sigma
(mathematically identical, faster for training with many samples). Up/down sampling goes through
``conv2d_resample``.
"""
from __future__ import annotations

from typing import Optional

import torch

from svgen.ops.conv2d_resample import conv2d_resample
from svgen.ops.upfirdn2d import Padding

DEMOD_EPS = 1e-8


def modulated_conv2d(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor,
                     noise: Optional[torch.Tensor] = None, up: int = 1, down: int = 1,
                     padding: Padding = 0, resample_filter: Optional[torch.Tensor] = None,
                     demodulate: bool = True, flip_weight: bool = True,
                     fused_modconv: bool = True) -> torch.Tensor:
    """Convolve ``x [N, I, H, W]`` with ``weight [O, I, kh, kw]`` modulated by ``styles [N, I]``.

    ``noise`` (broadcastable to the output, e.g. [N, 1, H', W'] already scaled by its strength) is
    added after demodulation. Returns [N, O, H', W'] in ``x.dtype``.
    """
    N, I, H, W = x.shape
    O, I_w, kh, kw = weight.shape
    if I_w != I or styles.shape != (N, I):
        raise ValueError(f"shape mismatch: x {tuple(x.shape)}, weight {tuple(weight.shape)}, "
                         f"styles {tuple(styles.shape)} (expected [{N}, {I}])")

    # fp16: pre-normalise weight and styles so the products below cannot overflow. With
    # demodulation the result is unchanged (each output channel is renormalised anyway).
    if x.dtype == torch.float16 and demodulate:
        weight = weight * (1 / (I * kh * kw) ** 0.5 /
                           weight.norm(float("inf"), dim=[1, 2, 3], keepdim=True))   # max_Ikk
        styles = styles / styles.norm(float("inf"), dim=1, keepdim=True)              # max_I

    # Per-sample weights and demodulation coefficients (computed in the weights' precision).
    w = None
    dcoefs = None
    if demodulate or fused_modconv:
        w = weight.unsqueeze(0) * styles.reshape(N, 1, I, 1, 1)                   # [N, O, I, kh, kw]
    if demodulate:
        dcoefs = (w.square().sum(dim=[2, 3, 4]) + DEMOD_EPS).rsqrt()                # [N, O]

    if not fused_modconv:
        x = x * styles.to(x.dtype).reshape(N, I, 1, 1)
        x = conv2d_resample(x, weight.to(x.dtype), f=resample_filter, up=up, down=down,
                            padding=padding, flip_weight=flip_weight)
        if dcoefs is not None:
            x = x * dcoefs.to(x.dtype).reshape(N, O, 1, 1)
        if noise is not None:
            x = x + noise.to(x.dtype)
        return x

    if dcoefs is not None:
        w = w * dcoefs.reshape(N, O, 1, 1, 1)
    x = x.reshape(1, N * I, H, W)
    w = w.reshape(N * O, I, kh, kw)
    x = conv2d_resample(x, w.to(x.dtype), f=resample_filter, up=up, down=down, padding=padding,
                        groups=N, flip_weight=flip_weight)
    x = x.reshape(N, O, x.shape[2], x.shape[3])
    if noise is not None:
        x = x + noise.to(x.dtype)
    return x
