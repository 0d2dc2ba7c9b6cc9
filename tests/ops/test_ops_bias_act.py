"""bias_act: reference semantics, float64 gradcheck/gradgradcheck, CUDA autograd glue, CUDA parity."""
from __future__ import annotations

import math
import types

import pytest
import torch
import torch.nn.functional as F
from torch.autograd import gradcheck, gradgradcheck

from svgen.ops import bias_act as ba

ACTS = list(ba.ACTIVATIONS)


def _inputs(shape=(2, 3, 4, 5), dim=1, seed=0, dtype=torch.float64, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=torch.float64)
    b = torch.randn([shape[dim]], generator=g, dtype=torch.float64) * 0.5
    # Keep x + b away from the kinks of relu/lrelu/elu at 0 so finite differences are valid.
    v = x + b.reshape([-1 if i == dim else 1 for i in range(len(shape))])
    x = x + 0.2 * torch.sign(v)
    return (x.to(device=device, dtype=dtype).requires_grad_(True),
            b.to(device=device, dtype=dtype).requires_grad_(True))


def test_defaults_and_formula():
    x, b = _inputs()
    y = ba.bias_act(x, b, act="lrelu")
    v = x + b[None, :, None, None]
    torch.testing.assert_close(y, F.leaky_relu(v, 0.2) * math.sqrt(2))
    torch.testing.assert_close(ba.bias_act(x, b), v)                      # linear, gain 1
    torch.testing.assert_close(ba.bias_act(x, None, act="relu", gain=1.0), F.relu(x))
    torch.testing.assert_close(ba.bias_act(x, b, act="swish"), torch.sigmoid(v) * v * math.sqrt(2))
    torch.testing.assert_close(ba.bias_act(x, b, act="elu", alpha=0.5), F.elu(v, 0.5))
    assert ba.ACTIVATIONS["lrelu"].def_alpha == 0.2


def test_clamp_after_gain_and_dim():
    x, b = _inputs(shape=(3, 4, 6), dim=2)
    y = ba.bias_act(x, b, dim=2, act="lrelu", gain=3.0, clamp=0.5)
    v = x + b[None, None, :]
    torch.testing.assert_close(y, (F.leaky_relu(v, 0.2) * 3.0).clamp(-0.5, 0.5))
    assert y.abs().max() <= 0.5
    assert (y.abs() == 0.5).any()  # the clamp was active
    y_neg = ba.bias_act(x, b, dim=-1, act="lrelu", gain=3.0, clamp=0.5)
    torch.testing.assert_close(y_neg, y)


def test_bad_arguments():
    x, b = _inputs()
    with pytest.raises(ValueError, match="unknown activation"):
        ba.bias_act(x, b, act="gelu-ish")
    with pytest.raises(ValueError, match="does not match"):
        ba.bias_act(x, b[:2])
    with pytest.raises(ValueError, match="clamp"):
        ba.bias_act(x, b, clamp=-0.5)
    with pytest.raises(ValueError, match="impl"):
        ba.bias_act(x, b, impl="triton")


@pytest.mark.parametrize("act", ACTS)
def test_ref_gradcheck_and_gradgradcheck(act):
    x, b = _inputs(shape=(2, 3, 3, 2))
    clamp = 1.5 if act in ("lrelu", "tanh") else None

    def fn(x, b):
        return ba.bias_act(x, b, act=act, clamp=clamp, impl="ref")

    assert gradcheck(fn, (x, b))
    assert gradgradcheck(fn, (x, b))


# -- the CUDA autograd glue, driven by a CPU emulation of the kernel contract ------------------

def _emulated_kernel(x, b, dy, act_id, grad, alpha, gain, clamp, dim):
    """What csrc/bias_act.cu computes, written out with the same closed-form derivatives."""
    with torch.no_grad():
        v = x.double()
        if b.numel():
            v = v + b.double().reshape([-1 if i == dim else 1 for i in range(x.ndim)])
        one = torch.ones_like(v)
        s = torch.sigmoid(v)
        e = torch.exp(v)
        pos = v > 0
        if act_id == 0:
            f, d1, d2 = v, one, 0 * v
        elif act_id == 1:
            f, d1, d2 = v.clamp(min=0), pos.double(), 0 * v
        elif act_id == 2:
            f, d1, d2 = torch.where(pos, v, v * alpha), torch.where(pos, one, alpha * one), 0 * v
        elif act_id == 3:
            t = torch.tanh(v)
            f, d1 = t, 1 - t * t
            d2 = -2 * t * d1
        elif act_id == 4:
            f, d1 = s, s * (1 - s)
            d2 = d1 * (1 - 2 * s)
        elif act_id == 5:
            f = torch.where(pos, v, alpha * (e - 1))
            d1, d2 = torch.where(pos, one, alpha * e), torch.where(pos, 0 * v, alpha * e)
        elif act_id == 6:
            lam, a = ba.SELU_LAMBDA, ba.SELU_ALPHA
            f = torch.where(pos, lam * v, lam * a * (e - 1))
            d1, d2 = torch.where(pos, lam * one, lam * a * e), torch.where(pos, 0 * v, lam * a * e)
        elif act_id == 7:
            f, d1, d2 = torch.where(v > 20, v, torch.log1p(e)), s, s * (1 - s)
        else:
            f, d1 = v * s, s * (1 + v * (1 - s))
            d2 = s * (1 - s) * (2 + v * (1 - 2 * s))
        out = f * gain
        if grad == 0:
            r = out.clamp(-clamp, clamp) if clamp >= 0 else out
        else:
            mask = (out.abs() <= clamp) if clamp >= 0 else torch.ones_like(out, dtype=torch.bool)
            r = dy.double() * (d1 if grad == 1 else d2) * gain * mask
        return r.to(x.dtype)


EMULATED = types.SimpleNamespace(bias_act=_emulated_kernel)


def _cuda_glue(x, b, act, clamp=None, dim=1):
    spec, alpha, gain, clamp = ba._resolve(act, None, None, clamp)
    cfg = ba._CudaCfg(EMULATED, spec.cuda_id, alpha, gain, clamp, dim, spec.has_2nd_grad)
    return ba._BiasActCuda.apply(x, b, cfg)


@pytest.mark.parametrize("act", ACTS)
def test_cuda_glue_matches_ref_to_second_order(act):
    """Forward, first and second derivatives of the kernel-based Functions equal the reference."""
    x, b = _inputs(shape=(2, 3, 2, 2), seed=1)
    clamp = 1.0 if act in ("lrelu", "swish", "selu") else None
    y_ref = ba.bias_act(x, b, act=act, clamp=clamp, impl="ref")
    y_glue = _cuda_glue(x, b, act, clamp)
    torch.testing.assert_close(y_glue, y_ref)
    assert gradcheck(lambda x, b: _cuda_glue(x, b, act, clamp), (x, b))
    assert gradgradcheck(lambda x, b: _cuda_glue(x, b, act, clamp), (x, b))


# -- real CUDA ---------------------------------------------------------------------------------

@pytest.mark.gpu
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float16, 2e-2)])
@pytest.mark.parametrize("act", ACTS)
def test_cuda_parity(act, dtype, tol):
    x, b = _inputs(shape=(4, 16, 8, 8), seed=2, dtype=dtype, device="cuda")
    clamp = 2.0 if act != "linear" else None
    y_ref = ba.bias_act(x.float(), b.float(), act=act, clamp=clamp, impl="ref")
    y = ba.bias_act(x, b, act=act, clamp=clamp, impl="cuda")
    assert y.dtype == dtype
    torch.testing.assert_close(y.float(), y_ref, atol=tol, rtol=tol)
    dy = torch.randn_like(y)
    gx, gb = torch.autograd.grad(y, [x, b], dy)
    gx_ref, gb_ref = torch.autograd.grad(y_ref, [x, b], dy.float())
    torch.testing.assert_close(gx.float(), gx_ref, atol=tol, rtol=tol)
    torch.testing.assert_close(gb.float(), gb_ref, atol=tol * 50, rtol=tol)


@pytest.mark.gpu
@pytest.mark.parametrize("act", ACTS)
def test_cuda_float64_gradcheck(act):
    x, b = _inputs(shape=(2, 3, 3, 2), seed=3, device="cuda")
    fn = lambda x, b: ba.bias_act(x, b, act=act, impl="cuda")  # noqa: E731
    assert gradcheck(fn, (x, b))
    assert gradgradcheck(fn, (x, b))
