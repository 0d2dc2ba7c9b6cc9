"""upfirdn2d: filter setup, shape/padding algebra, scipy agreement, gradients, CUDA glue and parity."""
from __future__ import annotations

import types

import numpy as np
import pytest
import scipy.signal
import torch
from torch.autograd import gradcheck, gradgradcheck

from svgen.ops import upfirdn2d as U

F4 = [1, 3, 3, 1]


def _x(shape=(2, 3, 5, 6), seed=0, dtype=torch.float64, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.float64).to(device=device, dtype=dtype)


# -- setup_filter ------------------------------------------------------------------------------

def test_setup_filter():
    f = U.setup_filter(F4)
    assert f.shape == (4, 4) and f.dtype == torch.float32
    torch.testing.assert_close(f.sum(), torch.tensor(1.0))
    torch.testing.assert_close(f, torch.outer(torch.tensor([1., 3, 3, 1]), torch.tensor([1., 3, 3, 1])) / 64)
    assert U.setup_filter([1] * 8).shape == (8,)                           # >= 8 taps: separable
    assert U.setup_filter(F4, separable=True).shape == (4,)
    torch.testing.assert_close(U.setup_filter(F4, gain=4).sum(), torch.tensor(4.0))
    torch.testing.assert_close(U.setup_filter(F4, separable=True, gain=4).sum(), torch.tensor(2.0))
    torch.testing.assert_close(U.setup_filter([1, 2], normalize=False, flip_filter=True),
                               torch.tensor([[4., 2], [2, 1]]))
    assert U.setup_filter(None).shape == (1, 1)
    with pytest.raises(ValueError):
        U.setup_filter(np.ones((2, 2, 2)))


# -- shape and padding algebra -----------------------------------------------------------------

@pytest.mark.parametrize("up,down,padding,ftaps", [
    (1, 1, 0, 3), (2, 1, [1, 2, 0, 3], 4), (1, 2, 1, 4), (3, 2, [-1, 2, 2, -1], 5), ([2, 1], [1, 2], 0, 2),
])
def test_output_size_formula(up, down, padding, ftaps):
    x = _x((1, 2, 7, 9))
    f = torch.ones(ftaps, ftaps + 1)                                       # fh != fw on purpose
    y = U.upfirdn2d(x, f, up=up, down=down, padding=padding)
    upx, upy = U.parse_scaling(up)
    dx, dy = U.parse_scaling(down)
    px0, px1, py0, py1 = U.parse_padding(padding)
    assert y.shape[3] == (9 * upx + px0 + px1 - (ftaps + 1)) // dx + 1
    assert y.shape[2] == (7 * upy + py0 + py1 - ftaps) // dy + 1


@pytest.mark.parametrize("ftaps", [1, 2, 3, 4, 6])
@pytest.mark.parametrize("factor", [2, 4])
def test_helpers_shapes_and_constant_images(ftaps, factor):
    f = U.setup_filter([1] * ftaps)
    x = torch.ones(1, 1, 8, 8, dtype=torch.float64)
    up = U.upsample2d(x, f, up=factor)
    down = U.downsample2d(x, f, down=factor)
    assert up.shape[2:] == (8 * factor, 8 * factor)
    assert down.shape[2:] == (8 // factor, 8 // factor)
    assert U.filter2d(x, f).shape[2:] == (8, 8)
    assert U.upsample2d(x, f, up=factor, padding=[1, 2, 3, 4]).shape[2:] == (8 * factor + 7, 8 * factor + 3)
    assert U.downsample2d(x, f, down=factor, padding=2).shape[2:] == (8 // factor + 4 // factor,) * 2
    # Away from the borders a constant image stays constant (normalised filters, up adds up^2);
    # for upsampling this needs a box filter whose length is a multiple of the factor.
    m = ftaps + factor
    if ftaps % factor == 0:
        torch.testing.assert_close(up[..., m:-m, m:-m], torch.ones_like(up[..., m:-m, m:-m]))
    if 8 // factor > 2:
        torch.testing.assert_close(down[..., 1:-1, 1:-1], torch.ones_like(down[..., 1:-1, 1:-1]))


def test_padding_forms_and_errors():
    x = _x()
    f = U.setup_filter(F4)
    torch.testing.assert_close(U.upfirdn2d(x, f, padding=2), U.upfirdn2d(x, f, padding=[2, 2, 2, 2]))
    torch.testing.assert_close(U.upfirdn2d(x, f, padding=[1, 2]), U.upfirdn2d(x, f, padding=[1, 1, 2, 2]))
    # Negative padding crops exactly.
    full = U.upfirdn2d(x, None, padding=0)
    torch.testing.assert_close(U.upfirdn2d(x, None, padding=[-1, -2, -1, 0]), full[:, :, 1:, 1:-2])
    with pytest.raises(ValueError, match="empty"):
        U.upfirdn2d(x, f, padding=-3)
    with pytest.raises(ValueError):
        U.upfirdn2d(x[0], f)
    with pytest.raises(ValueError):
        U.upfirdn2d(x, f, up=0)


def test_gain_and_flip():
    x = _x()
    f = U.setup_filter([1, 2, 3], normalize=False)
    torch.testing.assert_close(U.upfirdn2d(x, f, gain=3.0), 3.0 * U.upfirdn2d(x, f))
    torch.testing.assert_close(U.upfirdn2d(x, f, flip_filter=True), U.upfirdn2d(x, f.flip([0, 1])))


@pytest.mark.parametrize("up,down", [(1, 1), (2, 1), (1, 2), (3, 2), (2, 3)])
def test_matches_scipy_upfirdn(up, down):
    """A separable filter equals scipy.signal.upfirdn applied along each axis."""
    x = _x((1, 1, 6, 7))
    taps = np.array([1.0, -2.0, 4.0, 0.5, 3.0])
    ref = scipy.signal.upfirdn(taps, x[0, 0].numpy(), up=up, down=down, axis=1)
    ref = scipy.signal.upfirdn(taps, ref, up=up, down=down, axis=0)
    # scipy: full convolution, i.e. padding (k - 1) before and (k - 1) + (up - 1) after.
    k = len(taps)
    pad = [k - 1, k - 1 + up - 1, k - 1, k - 1 + up - 1]
    f = U.setup_filter(taps, normalize=False, separable=True)
    y = U.upfirdn2d(x, f, up=up, down=down, padding=pad)[0, 0].numpy()
    h, w = min(y.shape[0], ref.shape[0]), min(y.shape[1], ref.shape[1])
    assert h >= ref.shape[0] - 1 and w >= ref.shape[1] - 1
    np.testing.assert_allclose(y[:h, :w], ref[:h, :w], atol=1e-10)
    # The 2-D (outer product) filter gives the same as the separable one.
    f2 = U.setup_filter(taps, normalize=False, separable=False)
    np.testing.assert_allclose(U.upfirdn2d(x, f2, up=up, down=down, padding=pad)[0, 0].numpy(), y,
                               atol=1e-10)


# -- gradients of the reference path -----------------------------------------------------------

GRAD_CASES = [
    dict(f=F4, up=2, down=1, padding=[2, 1, 2, 1]),
    dict(f=F4, up=1, down=2, padding=1),
    dict(f=[1, 2, 1], up=1, down=1, padding=[-1, 2, 1, 0], flip_filter=True, gain=2.0),
    dict(f=[1, 2, 3, 4, 4, 3, 2, 1], up=[2, 1], down=[1, 2], padding=[3, 4, 4, 3]),   # separable
]


@pytest.mark.parametrize("case", GRAD_CASES)
def test_ref_gradcheck_and_gradgradcheck(case):
    case = dict(case)
    f = U.setup_filter(case.pop("f"))
    x = _x((1, 2, 4, 5)).requires_grad_(True)
    fn = lambda x: U.upfirdn2d(x, f, impl="ref", **case)  # noqa: E731
    assert gradcheck(fn, (x,), fast_mode=True)
    assert gradgradcheck(fn, (x,), fast_mode=True)


# -- the CUDA autograd glue, driven by a CPU transcription of the kernel loop ------------------

def _first_tap(base, up):
    r = base % up
    return 0 if r == 0 else up - r


def _emulated_kernel(x, taps, upx, upy, downx, downy, px0, px1, py0, py1, gain):
    """csrc/upfirdn2d.cu, loop for loop: one output sample at a time, taps stepping by up."""
    with torch.no_grad():
        N, C, H, W = x.shape
        fh, fw = taps.shape
        out_w = (W * upx + px0 + px1 - fw) // downx + 1
        out_h = (H * upy + py0 + py1 - fh) // downy + 1
        xs = x.double().reshape(N * C, H, W)
        fs = taps.double()
        y = torch.zeros(N * C, out_h, out_w, dtype=torch.float64)
        for oy in range(out_h):
            for ox in range(out_w):
                base_y, base_x = oy * downy - py0, ox * downx - px0
                acc = torch.zeros(N * C, dtype=torch.float64)
                for ty in range(_first_tap(base_y, upy), fh, upy):
                    iy = (base_y + ty) // upy
                    if iy < 0:
                        continue
                    if iy >= H:
                        break
                    for tx in range(_first_tap(base_x, upx), fw, upx):
                        ix = (base_x + tx) // upx
                        if ix < 0:
                            continue
                        if ix >= W:
                            break
                        acc = acc + fs[ty, tx] * xs[:, iy, ix]
                y[:, oy, ox] = acc * gain
        return y.reshape(N, C, out_h, out_w).to(x.dtype)


EMULATED = types.SimpleNamespace(upfirdn2d=_emulated_kernel)

GLUE_CASES = GRAD_CASES + [
    dict(f=[1, 3, 3, 1], up=3, down=2, padding=[-1, 3, 2, -1]),
    dict(f=[2, 1, 5], up=[1, 3], down=[3, 1], padding=[0, 1, 2, 3], gain=0.5),
]


@pytest.mark.parametrize("case", GLUE_CASES)
def test_kernel_transcription_and_adjoint(case):
    """The kernel's index arithmetic equals the reference, and the Function's backward (another
    upfirdn2d with swapped up/down, flipped filter, derived padding) is the exact adjoint."""
    case = dict(case)
    f = U.setup_filter(case.pop("f"), normalize=False)
    up, down = U.parse_scaling(case.get("up", 1)), U.parse_scaling(case.get("down", 1))
    pad = U.parse_padding(case.get("padding", 0))
    flip, gain = case.get("flip_filter", False), case.get("gain", 1.0)
    x = _x((1, 1, 3, 4), seed=3).requires_grad_(True)
    y_ref = U.upfirdn2d(x, f, impl="ref", **case)
    glue = lambda x: U._upfirdn2d_cuda(EMULATED, x, f, up, down, pad, flip, gain)  # noqa: E731
    torch.testing.assert_close(glue(x), y_ref)
    assert gradcheck(glue, (x,), fast_mode=True)
    assert gradgradcheck(glue, (x,), fast_mode=True)


# -- real CUDA ---------------------------------------------------------------------------------

PARITY_CASES = GLUE_CASES + [dict(f=F4, up=2, padding=[2, 1, 2, 1], gain=4.0)]


@pytest.mark.gpu
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float16, 1e-2)])
@pytest.mark.parametrize("case", PARITY_CASES)
def test_cuda_parity(case, dtype, tol):
    case = dict(case)
    f = U.setup_filter(case.pop("f"), device="cuda")
    x = _x((2, 8, 16, 12), seed=4, dtype=dtype, device="cuda").requires_grad_(True)
    y = U.upfirdn2d(x, f, impl="cuda", **case)
    xr = x.detach().float().requires_grad_(True)
    y_ref = U.upfirdn2d(xr, f, impl="ref", **case)
    assert y.dtype == dtype
    torch.testing.assert_close(y.float(), y_ref, atol=tol, rtol=tol)
    dy = torch.randn_like(y)
    (gx,) = torch.autograd.grad(y, [x], dy)
    (gx_ref,) = torch.autograd.grad(y_ref, [xr], dy.float())
    torch.testing.assert_close(gx.float(), gx_ref, atol=tol * 4, rtol=tol)


@pytest.mark.gpu
@pytest.mark.parametrize("case", GRAD_CASES)
def test_cuda_float64_gradcheck(case):
    case = dict(case)
    f = U.setup_filter(case.pop("f"), device="cuda")
    x = _x((1, 2, 4, 5), device="cuda").requires_grad_(True)
    fn = lambda x: U.upfirdn2d(x, f, impl="cuda", **case)  # noqa: E731
    assert gradcheck(fn, (x,))
    assert gradgradcheck(fn, (x,))
