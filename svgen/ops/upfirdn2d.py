"""upfirdn2d: upsample by zero insertion, pad, FIR-filter, downsample (like scipy.signal.upfirdn).

For an input [N, C, H, W] and a filter with ``fh x fw`` taps the output height is
``(H * up + pad_y0 + pad_y1 - fh) // down + 1`` (likewise the width). Negative padding crops.
The filter is applied as a true convolution (flipped) unless ``flip_filter=True``.
A 1-D filter ``f [k]`` means the separable filter ``f[:, None] * f[None, :]`` and is applied as
two 1-D passes, each with ``sqrt(gain)``.

The backward pass of upfirdn2d is again an upfirdn2d (``up`` and ``down`` swapped, filter flipped,
padding derived below), so both paths support derivatives of any order.
"""
from __future__ import annotations

from typing import Any, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from svgen.ops.plugin import CSRC, plugin_for

SOURCES = (CSRC / "upfirdn2d.cpp", CSRC / "upfirdn2d.cu")
HEADERS = (CSRC / "upfirdn2d.h",)

Scaling = Union[int, Sequence[int]]
Padding = Union[int, Sequence[int]]


# -- argument parsing --------------------------------------------------------------------------

def parse_scaling(scaling: Scaling) -> Tuple[int, int]:
    """``up``/``down`` as (sx, sy); an int means the same factor on both axes."""
    if isinstance(scaling, int):
        scaling = [scaling, scaling]
    sx, sy = (int(s) for s in scaling)
    if sx < 1 or sy < 1:
        raise ValueError(f"scaling factors must be >= 1, got {scaling}")
    return sx, sy


def parse_padding(padding: Padding) -> Tuple[int, int, int, int]:
    """Padding as (x0, x1, y0, y1) from an int, [px, py] or [x0, x1, y0, y1]."""
    if isinstance(padding, int):
        return padding, padding, padding, padding
    padding = [int(p) for p in padding]
    if len(padding) == 2:
        px, py = padding
        return px, px, py, py
    if len(padding) != 4:
        raise ValueError(f"padding must be an int, [px, py] or [x0, x1, y0, y1], got {padding}")
    return tuple(padding)  # type: ignore[return-value]


def filter_size(f: Optional[torch.Tensor]) -> Tuple[int, int]:
    """(fw, fh) of a 1-D (separable) or 2-D filter; (1, 1) for None."""
    if f is None:
        return 1, 1
    if f.ndim not in (1, 2):
        raise ValueError(f"filter must be 1-D or 2-D, got shape {tuple(f.shape)}")
    fw = f.shape[-1]
    fh = f.shape[0]
    return int(fw), int(fh)


def setup_filter(f: Any, device: Union[torch.device, str] = torch.device("cpu"),
                 normalize: bool = True, flip_filter: bool = False, gain: float = 1,
                 separable: Optional[bool] = None) -> torch.Tensor:
    """Turn a list/array/tensor of taps into a float32 filter tensor for upfirdn2d.

    ``None`` means the identity [1]. A 1-D filter stays 1-D (separable) when ``separable`` is True,
    or by default when it has 8 or more taps; otherwise it becomes the 2-D outer product.
    ``normalize`` makes the taps sum to 1; ``gain`` then multiplies the 2-D filter (a separable
    filter carries sqrt(gain) per axis).
    """
    if f is None:
        f = 1
    f = torch.as_tensor(np.asarray(f, dtype=np.float32) if not torch.is_tensor(f) else f,
                        dtype=torch.float32)
    if f.ndim == 0:
        f = f[None]
    if f.ndim not in (1, 2) or f.numel() == 0:
        raise ValueError(f"filter must be a non-empty 1-D or 2-D array, got shape {tuple(f.shape)}")
    if separable is None:
        separable = f.ndim == 1 and f.numel() >= 8
    if f.ndim == 1 and not separable:
        f = f[:, None] * f[None, :]                                      # outer product [k, k]
    if separable and f.ndim != 1:
        raise ValueError("a separable filter must be 1-D")
    if normalize:
        f = f / f.sum()
    if flip_filter:
        f = f.flip(list(range(f.ndim)))
    f = f * (gain ** (f.ndim / 2))
    return f.to(device)


# -- public ops --------------------------------------------------------------------------------

def upfirdn2d(x: torch.Tensor, f: Optional[torch.Tensor], up: Scaling = 1, down: Scaling = 1,
              padding: Padding = 0, flip_filter: bool = False, gain: float = 1,
              impl: Optional[str] = None) -> torch.Tensor:
    """Upsample, pad, filter, downsample a batch of images ``x [N, C, H, W]`` (see module doc)."""
    if x.ndim != 4:
        raise ValueError(f"upfirdn2d expects x of shape [N, C, H, W], got {tuple(x.shape)}")
    if f is None:
        f = torch.ones([1, 1], dtype=torch.float32, device=x.device)
    upx, upy = parse_scaling(up)
    downx, downy = parse_scaling(down)
    pad = parse_padding(padding)
    fw, fh = filter_size(f)
    out_w = (x.shape[3] * upx + pad[0] + pad[1] - fw) // downx + 1
    out_h = (x.shape[2] * upy + pad[2] + pad[3] - fh) // downy + 1
    if out_w < 1 or out_h < 1:
        raise ValueError(f"upfirdn2d output would be empty ({out_h}x{out_w}) for input "
                         f"{tuple(x.shape)}, filter {fh}x{fw}, up {up}, down {down}, padding {pad}")
    plugin = plugin_for(x.device, impl, "upfirdn2d", SOURCES, HEADERS)
    if plugin is not None:
        return _upfirdn2d_cuda(plugin, x, f, (upx, upy), (downx, downy), pad, flip_filter, gain)
    return _upfirdn2d_ref(x, f, (upx, upy), (downx, downy), pad, flip_filter, gain)


def filter2d(x: torch.Tensor, f: Optional[torch.Tensor], padding: Padding = 0,
             flip_filter: bool = False, gain: float = 1, impl: Optional[str] = None) -> torch.Tensor:
    """FIR-filter ``x`` keeping its size (plus ``padding``)."""
    padx0, padx1, pady0, pady1 = parse_padding(padding)
    fw, fh = filter_size(f)
    p = [padx0 + fw // 2, padx1 + (fw - 1) // 2, pady0 + fh // 2, pady1 + (fh - 1) // 2]
    return upfirdn2d(x, f, padding=p, flip_filter=flip_filter, gain=gain, impl=impl)


def upsample2d(x: torch.Tensor, f: Optional[torch.Tensor], up: Scaling = 2, padding: Padding = 0,
               flip_filter: bool = False, gain: float = 1, impl: Optional[str] = None) -> torch.Tensor:
    """Upsample by ``up`` with the interpolation filter ``f``: [H, W] -> [H*up + pads, W*up + pads].

    The filter is scaled by ``up**2`` (times ``gain``) so a constant image stays constant.
    """
    upx, upy = parse_scaling(up)
    padx0, padx1, pady0, pady1 = parse_padding(padding)
    fw, fh = filter_size(f)
    p = [padx0 + (fw + upx - 1) // 2, padx1 + (fw - upx) // 2,
         pady0 + (fh + upy - 1) // 2, pady1 + (fh - upy) // 2]
    return upfirdn2d(x, f, up=(upx, upy), padding=p, flip_filter=flip_filter,
                     gain=gain * upx * upy, impl=impl)


def downsample2d(x: torch.Tensor, f: Optional[torch.Tensor], down: Scaling = 2,
                 padding: Padding = 0, flip_filter: bool = False, gain: float = 1,
                 impl: Optional[str] = None) -> torch.Tensor:
    """Anti-alias with ``f`` and keep every ``down``-th sample: [H, W] -> [H/down, W/down] (+ pads)."""
    downx, downy = parse_scaling(down)
    padx0, padx1, pady0, pady1 = parse_padding(padding)
    fw, fh = filter_size(f)
    p = [padx0 + (fw - downx + 1) // 2, padx1 + (fw - downx) // 2,
         pady0 + (fh - downy + 1) // 2, pady1 + (fh - downy) // 2]
    return upfirdn2d(x, f, down=(downx, downy), padding=p, flip_filter=flip_filter, gain=gain,
                     impl=impl)


# -- reference path ----------------------------------------------------------------------------

def _upfirdn2d_ref(x: torch.Tensor, f: torch.Tensor, up: Tuple[int, int], down: Tuple[int, int],
                   pad: Tuple[int, int, int, int], flip_filter: bool, gain: float) -> torch.Tensor:
    """upfirdn2d from reshape, pad and a depthwise conv2d."""
    N, C, H, W = x.shape
    upx, upy = up
    downx, downy = down
    padx0, padx1, pady0, pady1 = pad

    # Zero insertion: every sample followed by (up - 1) zeros -> [N, C, H*upy, W*upx].
    if upx > 1 or upy > 1:
        x = x.reshape(N, C, H, 1, W, 1)
        x = F.pad(x, [0, upx - 1, 0, 0, 0, upy - 1])
        x = x.reshape(N, C, H * upy, W * upx)

    # Pad (positive) and crop (negative).
    x = F.pad(x, [max(padx0, 0), max(padx1, 0), max(pady0, 0), max(pady1, 0)])
    x = x[:, :, max(-pady0, 0): x.shape[2] - max(-pady1, 0),
          max(-padx0, 0): x.shape[3] - max(-padx1, 0)]

    # FIR filter as a depthwise correlation with the flipped filter (= convolution).
    f = f.to(device=x.device, dtype=x.dtype)
    if not flip_filter:
        f = f.flip(list(range(f.ndim)))
    if f.ndim == 2:
        weight = (f * gain)[None, None].repeat(C, 1, 1, 1)               # [C, 1, fh, fw]
        x = F.conv2d(x, weight, groups=C)
    else:
        g = gain ** 0.5
        x = F.conv2d(x, (f * g)[None, None, None, :].repeat(C, 1, 1, 1), groups=C)   # along W
        x = F.conv2d(x, (f * g)[None, None, :, None].repeat(C, 1, 1, 1), groups=C)   # along H

    # Keep every down-th sample.
    return x[:, :, ::downy, ::downx]


# -- CUDA path ---------------------------------------------------------------------------------

class _Cfg(NamedTuple):
    plugin: Any
    up: Tuple[int, int]
    down: Tuple[int, int]
    pad: Tuple[int, int, int, int]
    flip_filter: bool
    gain: float


def _upfirdn2d_cuda(plugin: Any, x: torch.Tensor, f: torch.Tensor, up: Tuple[int, int],
                    down: Tuple[int, int], pad: Tuple[int, int, int, int], flip_filter: bool,
                    gain: float) -> torch.Tensor:
    f = f.to(device=x.device, dtype=torch.float32)
    if f.ndim == 1:
        # Separable: a horizontal pass then a vertical pass, each with sqrt(gain).
        g = gain ** 0.5
        upx, upy = up
        downx, downy = down
        padx0, padx1, pady0, pady1 = pad
        x = _UpFirDn2dCuda.apply(x, f[None, :], _Cfg(plugin, (upx, 1), (downx, 1),
                                                      (padx0, padx1, 0, 0), flip_filter, g))
        return _UpFirDn2dCuda.apply(x, f[:, None], _Cfg(plugin, (1, upy), (1, downy),
                                                         (0, 0, pady0, pady1), flip_filter, g))
    return _UpFirDn2dCuda.apply(x, f, _Cfg(plugin, up, down, pad, flip_filter, gain))


def _adjoint_cfg(cfg: _Cfg, in_hw: Tuple[int, int], out_hw: Tuple[int, int],
                 f_hw: Tuple[int, int]) -> _Cfg:
    """Parameters of the upfirdn2d that computes the gradient w.r.t. the input.

    Forward (1-D): y[j] = sum_t g[t] u[j*down + t - p0] with u the zero-inserted input. Its
    adjoint is an upfirdn2d of dy with up'=down, down'=up, the flipped filter, p0' = fh - 1 - p0
    and p1' chosen so the result has exactly the input's length.
    """
    (in_h, in_w), (out_h, out_w), (fh, fw) = in_hw, out_hw, f_hw
    upx, upy = cfg.up
    downx, downy = cfg.down
    px0, px1, py0, py1 = cfg.pad
    gpx0 = fw - 1 - px0
    gpx1 = in_w * upx - out_w * downx + px0 - upx + 1
    gpy0 = fh - 1 - py0
    gpy1 = in_h * upy - out_h * downy + py0 - upy + 1
    return _Cfg(cfg.plugin, cfg.down, cfg.up, (gpx0, gpx1, gpy0, gpy1), not cfg.flip_filter,
                cfg.gain)


class _UpFirDn2dCuda(torch.autograd.Function):
    """One 2-D upfirdn2d kernel call; the gradient is another _UpFirDn2dCuda (any order)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, f: torch.Tensor, cfg: _Cfg) -> torch.Tensor:
        # The kernel computes a correlation; a convolution uses the flipped taps.
        taps = f if cfg.flip_filter else f.flip([0, 1])
        y = cfg.plugin.upfirdn2d(x.contiguous(), taps.contiguous(), cfg.up[0], cfg.up[1],
                                 cfg.down[0], cfg.down[1], *cfg.pad, float(cfg.gain))
        ctx.cfg = cfg
        ctx.save_for_backward(f)
        ctx.in_hw = (x.shape[2], x.shape[3])
        ctx.out_hw = (y.shape[2], y.shape[3])
        return y

    @staticmethod
    def backward(ctx, dy: torch.Tensor):
        (f,) = ctx.saved_tensors
        dx = None
        if ctx.needs_input_grad[0]:
            cfg = _adjoint_cfg(ctx.cfg, ctx.in_hw, ctx.out_hw, (f.shape[0], f.shape[1]))
            dx = _UpFirDn2dCuda.apply(dy, f, cfg)
            assert dx.shape[2:] == ctx.in_hw, (dx.shape, ctx.in_hw)
        return dx, None, None
