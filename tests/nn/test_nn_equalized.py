"""svgen.nn's equalised layers: the published formulas, one attribute layout for every user."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from svgen.nn import EqualConv1d, EqualLinear


def test_equal_linear_is_the_stylegan2_formula_for_2d_and_3d_inputs() -> None:
    torch.manual_seed(0)
    lin = EqualLinear(6, 4, activation="lrelu", lr_multiplier=0.01, bias_init=0.5)
    assert lin.weight_gain == 0.01 / math.sqrt(6) and lin.bias_gain == 0.01
    assert torch.equal(lin.bias, torch.full([4], 0.5))          # stored bias; effective 0.5 * lr_mul
    assert abs(float(lin.weight.std()) - 100.0) < 50.0             # N(0, 1) / lr_mul
    x = torch.randn(3, 5, 6)
    ref = F.leaky_relu(x @ (lin.weight * lin.weight_gain).T + lin.bias * lin.bias_gain, 0.2) * math.sqrt(2)
    torch.testing.assert_close(lin(x), ref)
    torch.testing.assert_close(lin(x[0]), ref[0])
    assert sorted(lin.state_dict()) == ["bias", "weight"]


def test_equal_conv1d_mask_right_is_causal() -> None:
    torch.manual_seed(0)
    conv = EqualConv1d(2, 3, 5, activation="lrelu", mask_right=True)
    x = torch.randn(1, 2, 12)
    y = conv(x)
    x2 = x.clone()
    x2[..., 7:] += 1.0                         # change the future of position 6
    assert y.shape == (1, 3, 12)
    assert torch.equal(conv(x2)[..., :7], y[..., :7]) and not torch.equal(conv(x2)[..., 7:], y[..., 7:])
    assert sorted(conv.state_dict()) == ["bias", "weight"]   # the tap mask is not saved
