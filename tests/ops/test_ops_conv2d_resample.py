"""conv2d_resample: every fast path equals its defining composition; shapes; gradients."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.autograd import gradcheck, gradgradcheck

from svgen.ops.conv2d_resample import conv2d_resample
from svgen.ops.upfirdn2d import parse_padding, setup_filter, upfirdn2d, upsample2d

F4 = setup_filter([1, 3, 3, 1])


def _t(shape, seed):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _definition(x, w, f, up, down, padding, groups, flip_weight):
    """The meaning documented in the module, from upfirdn2d and F.conv2d only."""
    wc = w if flip_weight else w.flip([2, 3])
    fw = f.shape[-1]
    if up > 1:
        x = upsample2d(x, f, up=up, padding=padding)
        if down > 1:
            d = [(fw - down + 1) // 2, (fw - down) // 2] * 2
            x = upfirdn2d(x, f, padding=d)
        return F.conv2d(x, wc, stride=down, groups=groups)
    px0, px1, py0, py1 = parse_padding(padding)
    if down > 1:
        d0, d1 = (fw - down + 1) // 2, (fw - down) // 2
        x = upfirdn2d(x, f, padding=[px0 + d0, px1 + d1, py0 + d0, py1 + d1])
        return F.conv2d(x, wc, stride=down, groups=groups)
    return F.conv2d(F.pad(x, [px0, px1, py0, py1]), wc, groups=groups)


CASES = [
    # (C_in, C_out, k, up, down, padding, groups)
    (3, 4, 3, 2, 1, 1, 1),          # synthesis conv0: transposed conv + FIR
    (3, 4, 3, 1, 2, 1, 1),          # discriminator conv1: FIR + strided conv
    (4, 2, 1, 1, 2, 0, 1),          # discriminator skip: 1x1 downsample first
    (2, 4, 1, 2, 1, 0, 1),          # 1x1 up, more outputs: upsample first
    (4, 2, 1, 2, 1, 0, 1),          # 1x1 up, fewer outputs: conv first
    (3, 4, 3, 1, 1, 1, 1),          # plain conv
    (3, 4, 3, 1, 1, [0, 2, 1, -1], 1),  # asymmetric / negative padding
    (4, 6, 5, 2, 1, [0, 1, 2, 3], 2),   # large kernel, asymmetric pad, groups
    (4, 4, 3, 1, 2, 1, 4),          # depthwise down
    (3, 4, 3, 2, 2, 1, 1),          # up and down
]


@pytest.mark.parametrize("flip_weight", [True, False])
@pytest.mark.parametrize("cin,cout,k,up,down,padding,groups", CASES)
def test_fast_paths_match_definition(cin, cout, k, up, down, padding, groups, flip_weight):
    x = _t((2, cin, 6, 7), 0)
    w = _t((cout, cin // groups, k, k), 1)
    y = conv2d_resample(x, w, F4, up=up, down=down, padding=padding, groups=groups,
                        flip_weight=flip_weight)
    ref = _definition(x, w, F4, up, down, padding, groups, flip_weight)
    assert y.shape == ref.shape
    torch.testing.assert_close(y, ref)


def test_stylegan_shapes():
    x = _t((2, 8, 8, 8), 2)
    w3 = _t((5, 8, 3, 3), 3)
    assert conv2d_resample(x, w3, F4, up=2, padding=1).shape == (2, 5, 16, 16)
    assert conv2d_resample(x, w3, F4, down=2, padding=1).shape == (2, 5, 4, 4)
    assert conv2d_resample(x, w3[:, :, :1, :1], F4, down=2).shape == (2, 5, 4, 4)
    assert conv2d_resample(x, w3, padding=1).shape == (2, 5, 8, 8)
    assert conv2d_resample(x, w3[:, :, :1, :1]).shape == (2, 5, 8, 8)


def test_flip_filter_is_passed_through():
    x = _t((1, 2, 6, 6), 4)
    w = _t((3, 2, 3, 3), 5)
    f = setup_filter([1, 2, 4, 1])
    a = conv2d_resample(x, w, f, up=2, padding=1, flip_filter=True)
    b = conv2d_resample(x, w, f.flip([0, 1]), up=2, padding=1)
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, conv2d_resample(x, w, f, up=2, padding=1))


def test_bad_arguments():
    x = _t((1, 4, 6, 6), 6)
    with pytest.raises(ValueError, match="channels"):
        conv2d_resample(x, _t((3, 3, 3, 3), 7))
    with pytest.raises(ValueError):
        conv2d_resample(x, _t((3, 4, 3, 3), 7), F4, up=0)
    with pytest.raises(ValueError):
        conv2d_resample(x[0], _t((3, 4, 3, 3), 7))


@pytest.mark.parametrize("up,down,k", [(2, 1, 3), (1, 2, 3), (1, 2, 1), (1, 1, 3)])
def test_gradcheck_and_gradgradcheck(up, down, k):
    x = _t((1, 2, 4, 4), 8).requires_grad_(True)
    w = _t((2, 2, k, k), 9).requires_grad_(True)
    fn = lambda x, w: conv2d_resample(x, w, F4, up=up, down=down, padding=k // 2)  # noqa: E731
    assert gradcheck(fn, (x, w), fast_mode=True)
    assert gradgradcheck(fn, (x, w), fast_mode=True)
