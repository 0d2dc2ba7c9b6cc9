"""2-D convolution fused with FIR up- or downsampling (StyleGAN2's resampling convolutions).

Meaning (what every path computes, with ``f`` the FIR filter, padding p = [x0, x1, y0, y1]):
- ``up > 1``:   ``conv2d(upsample2d(x, f, up, padding=p), w)`` -- implemented as a strided
  transposed convolution followed by the FIR filter (the two linear filters commute);
- ``down > 1``: ``conv2d(upfirdn2d(x, f, padding=p + anti-alias pad), w, stride=down)``; a 1x1
  kernel downsamples first (``downsample2d(x, f, down, padding=p)``) and convolves after;
- neither:      ``conv2d(pad(x, p), w)``.
Both ``up`` and ``down`` > 1: ``upsample2d(x, f, up, padding=p)``, then the anti-alias filter,
then a convolution with stride ``down``. ``flip_weight=True`` is a correlation (``F.conv2d``, like ``nn.Conv2d``);
``False`` a true convolution. Derivatives of any order (native PyTorch convs + upfirdn2d).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from svgen.ops.upfirdn2d import (Padding, filter_size, parse_padding, upfirdn2d)


def _conv(x: torch.Tensor, w: torch.Tensor, stride: int = 1, groups: int = 1,
          transpose: bool = False, flip_weight: bool = True,
          padding: Optional[tuple] = None) -> torch.Tensor:
    """F.conv2d / F.conv_transpose2d with symmetric (py, px) padding and flip_weight semantics."""
    padding = (0, 0) if padding is None else padding
    if transpose:
        # conv_transpose2d is a true convolution: flip for correlation semantics.
        if flip_weight:
            w = w.flip([2, 3])
        # [O, I/g, kh, kw] -> [I, O/g, kh, kw] as conv_transpose2d expects.
        O, Ig, kh, kw = w.shape
        w = w.reshape(groups, O // groups, Ig, kh, kw).transpose(1, 2).reshape(groups * Ig,
                                                                              O // groups, kh, kw)
        return F.conv_transpose2d(x, w, stride=stride, padding=padding, groups=groups)
    if not flip_weight:
        w = w.flip([2, 3])
    return F.conv2d(x, w, stride=stride, padding=padding, groups=groups)


def conv2d_resample(x: torch.Tensor, w: torch.Tensor, f: Optional[torch.Tensor] = None,
                    up: int = 1, down: int = 1, padding: Padding = 0, groups: int = 1,
                    flip_weight: bool = True, flip_filter: bool = False) -> torch.Tensor:
    """Convolve ``x [N, C_in, H, W]`` with ``w [C_out, C_in/groups, kh, kw]``, resampling by
    integer ``up`` or ``down`` with FIR filter ``f`` (from ``setup_filter``; None = box of 1)."""
    if x.ndim != 4 or w.ndim != 4:
        raise ValueError(f"expected x [N, C, H, W] and w [O, I, kh, kw], got {tuple(x.shape)}, "
                         f"{tuple(w.shape)}")
    if not (isinstance(up, int) and isinstance(down, int) and up >= 1 and down >= 1):
        raise ValueError(f"up and down must be integers >= 1, got {up}, {down}")
    if x.shape[1] != w.shape[1] * groups:
        raise ValueError(f"x has {x.shape[1]} channels but w expects {w.shape[1]} x {groups} groups")
    out_channels, _, kh, kw = w.shape
    fw, fh = filter_size(f)
    px0, px1, py0, py1 = parse_padding(padding)
    w = w.to(x.dtype)

    # Padding of the filter stage (as in upsample2d / downsample2d).
    up_pad = [(fw + up - 1) // 2, (fw - up) // 2, (fh + up - 1) // 2, (fh - up) // 2]
    down_pad = [(fw - down + 1) // 2, (fw - down) // 2, (fh - down + 1) // 2, (fh - down) // 2]

    # Both up and down: upsample2d (with the user padding), anti-alias filter, strided conv.
    if up > 1 and down > 1:
        x = upfirdn2d(x, f, up=up, padding=[px0 + up_pad[0], px1 + up_pad[1], py0 + up_pad[2],
                                            py1 + up_pad[3]], gain=up ** 2, flip_filter=flip_filter)
        x = upfirdn2d(x, f, padding=down_pad, flip_filter=flip_filter)
        return _conv(x, w, stride=down, groups=groups, flip_weight=flip_weight)
    if up > 1:
        px0, px1, py0, py1 = px0 + up_pad[0], px1 + up_pad[1], py0 + up_pad[2], py1 + up_pad[3]
    if down > 1:
        px0, px1, py0, py1 = (px0 + down_pad[0], px1 + down_pad[1], py0 + down_pad[2],
                              py1 + down_pad[3])

    # 1x1 kernel with downsampling: downsample first, convolve the small image.
    if kw == 1 and kh == 1 and down > 1 and up == 1:
        x = upfirdn2d(x, f, down=down, padding=[px0, px1, py0, py1], flip_filter=flip_filter)
        return _conv(x, w, groups=groups, flip_weight=flip_weight)

    # 1x1 kernel with upsampling: convolve on the small side (the ops commute exactly).
    if kw == 1 and kh == 1 and up > 1 and down == 1:
        if out_channels <= x.shape[1]:
            x = _conv(x, w, groups=groups, flip_weight=flip_weight)
            return upfirdn2d(x, f, up=up, padding=[px0, px1, py0, py1], gain=up ** 2,
                             flip_filter=flip_filter)
        x = upfirdn2d(x, f, up=up, padding=[px0, px1, py0, py1], gain=up ** 2,
                      flip_filter=flip_filter)
        return _conv(x, w, groups=groups, flip_weight=flip_weight)

    # Downsampling only: filter (with padding), then strided convolution.
    if down > 1 and up == 1:
        x = upfirdn2d(x, f, padding=[px0, px1, py0, py1], flip_filter=flip_filter)
        return _conv(x, w, stride=down, groups=groups, flip_weight=flip_weight)

    # Upsampling only: transposed strided convolution, then the FIR filter.
    # With P = upsample2d(x) the target is y[j] = sum_t w[t] P[j + t]; the full transposed conv
    # T satisfies T[m + k - 1] = (w * zero-inserted x)[m], so y = filter(T) with the filter's
    # padding shifted by (k - 1) at the start and (k - up) at the end.
    if up > 1 and down == 1:
        gx0, gx1 = px0 - (kw - 1), px1 - (kw - up)
        gy0, gy1 = py0 - (kh - 1), py1 - (kh - up)
        # Let the transposed conv do any symmetric crop (cheaper than computing and dropping).
        tx = max(min(-gx0, -gx1), 0)
        ty = max(min(-gy0, -gy1), 0)
        x = _conv(x, w, stride=up, groups=groups, transpose=True, flip_weight=flip_weight,
                  padding=(ty, tx))
        return upfirdn2d(x, f, padding=[gx0 + tx, gx1 + tx, gy0 + ty, gy1 + ty], gain=up ** 2,
                         flip_filter=flip_filter)

    # No resampling: plain convolution; asymmetric or negative padding through F.pad.
    if px0 == px1 and py0 == py1 and px0 >= 0 and py0 >= 0:
        return _conv(x, w, groups=groups, flip_weight=flip_weight, padding=(py0, px0))
    x = F.pad(x, [px0, px1, py0, py1])
    return _conv(x, w, groups=groups, flip_weight=flip_weight)
