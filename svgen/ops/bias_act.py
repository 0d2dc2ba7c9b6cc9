"""Fused bias + activation + gain + clamp: ``y = clamp(act(x + b) * gain, -clamp, clamp)``.

The reference path is plain PyTorch (any order of derivatives). The CUDA path runs one
element-wise kernel for the forward pass and expresses its backward pass again with the kernel
(``grad=1`` for f', ``grad=2`` for f''), so first and second derivatives work (enough for R1 and
path-length regularisation); third and higher derivatives through the CUDA path are not supported.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple, Optional

import torch
import torch.nn.functional as F

from svgen.ops.plugin import CSRC, plugin_for

SOURCES = (CSRC / "bias_act.cpp", CSRC / "bias_act.cu")
HEADERS = (CSRC / "bias_act.h",)

SELU_LAMBDA = 1.0507009873554805
SELU_ALPHA = 1.6732632423543772


@dataclass(frozen=True)
class Activation:
    """One entry of the activation table: kernel id, defaults, reference function."""
    name: str
    cuda_id: int                                   # must match the switch in csrc/bias_act.cu
    def_alpha: float
    def_gain: float
    has_2nd_grad: bool                             # f'' is not identically zero
    func: Callable[[torch.Tensor, float], torch.Tensor]


def _swish(x: torch.Tensor, alpha: float) -> torch.Tensor:
    return torch.sigmoid(x) * x


ACTIVATIONS = {a.name: a for a in (
    Activation("linear", 0, 0.0, 1.0, False, lambda x, alpha: x),
    Activation("relu", 1, 0.0, math.sqrt(2), False, lambda x, alpha: F.relu(x)),
    Activation("lrelu", 2, 0.2, math.sqrt(2), False, lambda x, alpha: F.leaky_relu(x, alpha)),
    Activation("tanh", 3, 0.0, 1.0, True, lambda x, alpha: torch.tanh(x)),
    Activation("sigmoid", 4, 0.0, 1.0, True, lambda x, alpha: torch.sigmoid(x)),
    Activation("elu", 5, 1.0, 1.0, True, lambda x, alpha: F.elu(x, alpha)),
    Activation("selu", 6, 0.0, 1.0, True, lambda x, alpha: F.selu(x)),
    Activation("softplus", 7, 0.0, 1.0, True, lambda x, alpha: F.softplus(x)),
    Activation("swish", 8, 0.0, math.sqrt(2), True, _swish),
)}


def _resolve(act: str, alpha: Optional[float], gain: Optional[float], clamp: Optional[float]):
    if act not in ACTIVATIONS:
        raise ValueError(f"unknown activation {act!r}; expected one of {', '.join(ACTIVATIONS)}")
    spec = ACTIVATIONS[act]
    alpha = float(spec.def_alpha if alpha is None else alpha)
    gain = float(spec.def_gain if gain is None else gain)
    clamp = float(-1 if clamp is None else clamp)
    if clamp < -1 or (-1 < clamp < 0):
        raise ValueError(f"clamp must be None or >= 0, got {clamp}")
    return spec, alpha, gain, clamp


def bias_act(x: torch.Tensor, b: Optional[torch.Tensor] = None, dim: int = 1, act: str = "linear",
             alpha: Optional[float] = None, gain: Optional[float] = None,
             clamp: Optional[float] = None, impl: Optional[str] = None) -> torch.Tensor:
    """Add ``b`` (shape [x.shape[dim]]) along ``dim``, apply ``act``, scale by ``gain``, clamp.

    ``alpha`` is the activation's shape parameter (lrelu slope 0.2, elu 1.0 by default), ``gain``
    defaults to sqrt(2) for relu/lrelu/swish and 1 otherwise, ``clamp`` (None = off) bounds the
    output to [-clamp, clamp] after the gain. ``impl``: None/"auto", "ref" or "cuda".
    """
    spec, alpha, gain, clamp = _resolve(act, alpha, gain, clamp)
    dim = dim % x.ndim if x.ndim else 0
    if b is not None:
        if b.ndim != 1 or b.shape[0] != x.shape[dim]:
            raise ValueError(f"bias of shape {tuple(b.shape)} does not match x.shape[{dim}]="
                             f"{x.shape[dim]}")
    plugin = plugin_for(x.device, impl, "bias_act", SOURCES, HEADERS)
    if plugin is not None:
        return _bias_act_cuda(plugin, x, b, dim, spec, alpha, gain, clamp)
    return _bias_act_ref(x, b, dim, spec, alpha, gain, clamp)


def _bias_act_ref(x: torch.Tensor, b: Optional[torch.Tensor], dim: int, spec: Activation,
                  alpha: float, gain: float, clamp: float) -> torch.Tensor:
    """Reference implementation from PyTorch primitives (differentiable to any order)."""
    if b is not None:
        shape = [1] * x.ndim
        shape[dim] = -1
        x = x + b.to(x.dtype).reshape(shape)
    x = spec.func(x, alpha)
    if gain != 1:
        x = x * gain
    if clamp >= 0:
        x = x.clamp(-clamp, clamp)
    return x


# -- CUDA path ---------------------------------------------------------------------------------

class _CudaCfg(NamedTuple):
    plugin: Any
    act_id: int
    alpha: float
    gain: float
    clamp: float
    dim: int
    has_2nd_grad: bool


def _cuda_cfg(plugin: Any, dim: int, spec: Activation, alpha: float, gain: float,
              clamp: float) -> _CudaCfg:
    return _CudaCfg(plugin, spec.cuda_id, alpha, gain, clamp, dim, spec.has_2nd_grad)


def _bias_act_cuda(plugin: Any, x: torch.Tensor, b: Optional[torch.Tensor], dim: int,
                   spec: Activation, alpha: float, gain: float, clamp: float) -> torch.Tensor:
    """bias_act through ``plugin`` (also called by svgen.ops.cuda_check with CPU tensors)."""
    bias = x.new_empty([0]) if b is None else b.to(x.dtype)
    return _BiasActCuda.apply(x, bias, _cuda_cfg(plugin, dim, spec, alpha, gain, clamp))


def _kernel(cfg: _CudaCfg, x: torch.Tensor, b: torch.Tensor, dy: Optional[torch.Tensor],
            grad: int) -> torch.Tensor:
    dy = x.new_empty([0]) if dy is None else dy.to(x.dtype).contiguous()
    return cfg.plugin.bias_act(x, b, dy, cfg.act_id, grad, cfg.alpha, cfg.gain, cfg.clamp, cfg.dim)


def _sum_to_bias(t: torch.Tensor, dim: int) -> torch.Tensor:
    return t.sum(dim=[i for i in range(t.ndim) if i != dim])


class _BiasActCuda(torch.autograd.Function):
    """y = clamp(f(x + b) * gain); backward through _BiasActCudaGrad."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, b: torch.Tensor, cfg: _CudaCfg) -> torch.Tensor:
        x = x.contiguous()
        b = b.contiguous()
        ctx.cfg = cfg
        ctx.save_for_backward(x, b)
        return _kernel(cfg, x, b, None, grad=0)

    @staticmethod
    def backward(ctx, dy: torch.Tensor):
        x, b = ctx.saved_tensors
        dx = db = None
        if ctx.needs_input_grad[0] or ctx.needs_input_grad[1]:
            dx = _BiasActCudaGrad.apply(dy, x, b, ctx.cfg)
        if ctx.needs_input_grad[1]:
            db = _sum_to_bias(dx, ctx.cfg.dim)
        return dx, db, None


class _BiasActCudaGrad(torch.autograd.Function):
    """dx = dy * f'(x + b) * gain * [|y| <= clamp]; its own backward uses f''."""

    @staticmethod
    def forward(ctx, dy: torch.Tensor, x: torch.Tensor, b: torch.Tensor,
                cfg: _CudaCfg) -> torch.Tensor:
        ctx.cfg = cfg
        ctx.save_for_backward(dy, x, b)
        return _kernel(cfg, x, b, dy, grad=1)

    @staticmethod
    def backward(ctx, ddx: torch.Tensor):
        dy, x, b = ctx.saved_tensors
        cfg = ctx.cfg
        d_dy = d_x = d_b = None
        if ctx.needs_input_grad[0]:
            d_dy = _BiasActCudaGrad.apply(ddx, x, b, cfg)  # linear in dy
        if cfg.has_2nd_grad and (ctx.needs_input_grad[1] or ctx.needs_input_grad[2]):
            d_x = _kernel(cfg, x, b, dy * ddx, grad=2)
        if ctx.needs_input_grad[2] and d_x is not None:
            d_b = _sum_to_bias(d_x, cfg.dim)
        return d_dy, d_x, d_b, None
