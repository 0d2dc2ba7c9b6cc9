"""ADA augmentation: identity at p=0, each transform does what it says, gradients, adaptive p."""
from __future__ import annotations

import math

import pytest
import torch

from svgen.stage1_image_gan.augment import (AdaptiveP, AugmentConfig, AugmentPipe, augment_config,
                                            rotate2d, scale2d, translate2d)


def smooth_images(n: int = 3, res: int = 32, seed: int = 0) -> torch.Tensor:
    """Band-limited random images in [-1, 1] (resampling is near-exact on them)."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, res // 4, res // 4, generator=g) * 2 - 1
    return torch.nn.functional.interpolate(low, size=(res, res), mode="bicubic",
                                           align_corners=False).clamp(-1, 1)


def only(name: str, **strength) -> AugmentConfig:
    return AugmentConfig(**{name: 1.0}, **strength)


def test_identity_at_p0():
    x = torch.rand(4, 3, 32, 32) * 2 - 1
    pipe = AugmentPipe(augment_config("bgc"), p=0.0)
    assert torch.equal(pipe(x), x)


@pytest.mark.parametrize("name", ["blit", "geom", "color", "bgc"])
def test_pipelines_change_images_at_p1(name):
    torch.manual_seed(0)
    x = smooth_images(8)
    y = AugmentPipe(augment_config(name), p=1.0)(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    changed = (y - x).abs().flatten(1).amax(1) > 1e-3
    assert changed.float().mean() >= 0.5


def test_geometry_matches_pixel_operations():
    """Integer shift, x-flip, 90° rotation through the resampler equal the pixel operation applied
    to the identity-resampled image (which itself is the input up to the low-pass)."""
    pipe = AugmentPipe(augment_config("bgc"))
    x = smooth_images(2)
    n = x.shape[0]
    y0 = pipe.apply_geometry(x, torch.eye(3).repeat(n, 1, 1))
    assert (y0 - x).abs().max() < 0.05  # band-limited input: the filters barely touch it
    # G_inv maps output -> input coordinates: output(x) = input(x - (3, 2)), a shift right/down.
    y = pipe.apply_geometry(x, translate2d(torch.full((n,), -3.0), torch.full((n,), -2.0)))
    shifted = torch.roll(y0, (2, 3), (2, 3))
    assert torch.allclose(y[:, :, 8:-8, 8:-8], shifted[:, :, 8:-8, 8:-8], atol=1e-5)  # interior
    y = pipe.apply_geometry(x, scale2d(torch.full((n,), -1.0), torch.ones(n)))
    assert torch.allclose(y, y0.flip(3), atol=1e-5)
    y = pipe.apply_geometry(x, rotate2d(torch.full((n,), math.pi / 2)))
    assert min(float((y - torch.rot90(y0, k, (2, 3))).abs().max()) for k in (1, 3)) < 1e-5


def test_isotropic_scale_zooms_about_the_centre():
    pipe = AugmentPipe(augment_config("bgc"))
    x = smooth_images(2, res=32)
    n = x.shape[0]
    # out(x) = in(x / 2): a 2x zoom; output pixel 2k+1 around the centre samples input k/2-ish.
    y = pipe.apply_geometry(x, scale2d(torch.full((n,), 0.5), torch.full((n,), 0.5)))
    centre_in = x[:, :, 12:20, 12:20]
    centre_out = torch.nn.functional.avg_pool2d(y[:, :, 8:24, 8:24], 2)
    assert (centre_out - centre_in).abs().mean() < 0.03
    assert (y - x).abs().mean() > 0.05  # it did change the image


@pytest.mark.parametrize("name", ["scale", "aniso", "rotate", "xfrac"])
def test_general_geometry_keeps_statistics(name):
    """Random geometric transforms move pixels but keep the image's colour statistics."""
    torch.manual_seed(1)
    x = smooth_images(6)
    y = AugmentPipe(only(name), p=1.0)(x)
    assert (y - x).abs().mean() > 0.02
    assert abs(float(y.mean()) - float(x.mean())) < 0.1


def test_xint_translates_by_whole_pixels():
    torch.manual_seed(2)
    x = smooth_images(6)
    pipe = AugmentPipe(only("xint"), p=1.0)
    y = pipe(x)
    y0 = pipe.apply_geometry(x, torch.eye(3).repeat(6, 1, 1))
    for i in range(6):  # each output is y0 shifted by some integer (dx, dy) in the interior
        best = min(float((torch.roll(y0[i], (dy, dx), (1, 2)) - y[i])[:, 8:-8, 8:-8].abs().max())
                   for dx in range(-4, 5) for dy in range(-4, 5))
        assert best < 1e-4


def test_color_transforms():
    n = 64
    x = smooth_images(n, res=8) * 0.5
    grey = x.mean(dim=1, keepdim=True).expand_as(x).contiguous()
    torch.manual_seed(3)
    # brightness adds one constant per image to all channels
    d = AugmentPipe(only("brightness"), p=1.0)(x) - x
    assert torch.allclose(d, d.flatten(1)[:, :1, None, None].expand_as(d).reshape(d.shape), atol=1e-5)
    assert 0.1 < float(d.flatten(1)[:, 0].std()) < 0.3  # std 0.2
    # contrast scales each image by one positive factor
    y = AugmentPipe(only("contrast"), p=1.0)(x)
    ratio = (y / x)[x.abs() > 0.05].reshape(-1)
    assert float(ratio.min()) > 0
    # luma flip: a grey image maps to its negative (or stays), colour differences are kept
    y = AugmentPipe(only("lumaflip"), p=1.0)(grey)
    flipped = torch.allclose(y, -grey, atol=1e-5)
    kept = torch.allclose(y, grey, atol=1e-5)
    per_image = [(torch.allclose(y[i], -grey[i], atol=1e-5) or torch.allclose(y[i], grey[i], atol=1e-5))
                 for i in range(n)]
    assert all(per_image) and not flipped and not kept
    # hue rotation keeps the luma (channel mean) and leaves grey alone
    y = AugmentPipe(only("hue"), p=1.0)(x)
    assert torch.allclose(y.mean(1), x.mean(1), atol=1e-5)
    assert torch.allclose(AugmentPipe(only("hue"), p=1.0)(grey), grey, atol=1e-5)
    assert (y - x).abs().mean() > 0.01
    # saturation scales the chroma (deviation from grey) and keeps the luma
    y = AugmentPipe(only("saturation"), p=1.0)(x)
    assert torch.allclose(y.mean(1), x.mean(1), atol=1e-5)
    chroma_x = x - x.mean(1, keepdim=True)
    chroma_y = y - y.mean(1, keepdim=True)
    s = (chroma_y * chroma_x).flatten(1).sum(1) / chroma_x.square().flatten(1).sum(1)
    assert torch.allclose(chroma_y, s[:, None, None, None] * chroma_x, atol=1e-4)
    assert float(s.min()) > 0 and float(s.std()) > 0.1


def test_probability_scales_with_p():
    torch.manual_seed(4)
    x = torch.zeros(4000, 3, 2, 2)
    for p in (0.1, 0.5):
        y = AugmentPipe(only("brightness"), p=p)(x)
        frac = float((y.flatten(1).abs().amax(1) > 0).float().mean())
        assert abs(frac - p) < 0.04
    # two rotations with p_rot each: P(any rotation) = p
    pipe = AugmentPipe(only("rotate"), p=0.4)
    G_inv = pipe.sample_geometry(4000, 8, 8, torch.device("cpu"))
    rotated = (G_inv - torch.eye(3)).abs().flatten(1).amax(1) > 0
    assert abs(float(rotated.float().mean()) - 0.4) < 0.04


def test_gradients_flow_first_and_second_order():
    pipe = AugmentPipe(augment_config("bgc"), p=0.9).double()
    x = (torch.rand(2, 3, 8, 8, dtype=torch.float64) * 2 - 1).requires_grad_(True)

    def f(inp):
        torch.manual_seed(5)  # the same random transforms on every call
        return pipe(inp)

    assert torch.autograd.gradcheck(f, (x,), fast_mode=True)
    assert torch.autograd.gradgradcheck(f, (x,), fast_mode=True)
    # R1-style: gradient of a gradient norm reaches the parameters of a "discriminator"
    w = torch.randn(3, dtype=torch.float64, requires_grad=True)
    out = (f(x) * w[None, :, None, None]).square().sum()
    (g,) = torch.autograd.grad(out, x, create_graph=True)
    g.square().sum().backward()
    assert w.grad is not None and torch.isfinite(w.grad).all() and w.grad.abs().sum() > 0


def test_adaptive_p_moves_towards_target():
    pipe = AugmentPipe(augment_config("bgc"), p=0.0)
    ada = AdaptiveP(pipe, batch_size=32, target=0.6, interval=4, ada_kimg=500)
    step_size = 32 * 4 / 500_000
    # D overfits (all real logits positive: r_t = 1 > 0.6): p rises once per interval
    for it in range(8):
        ada.accumulate(torch.ones(32, 1))
        ada.step(it)
    assert float(pipe.p) == pytest.approx(2 * step_size, rel=1e-5)
    assert ada.last_rt == 1.0
    # D unsure (r_t = 0 < 0.6): p falls and clamps at 0
    for it in range(8, 20):
        ada.accumulate(torch.where(torch.arange(32)[:, None] % 2 == 0, 1.0, -1.0))
        ada.step(it)
    assert float(pipe.p) == 0.0 and ada.last_rt == 0.0
    # state round trip
    ada.accumulate(torch.ones(5, 1))
    state = ada.state_dict()
    other = AdaptiveP(AugmentPipe(augment_config("bgc")), batch_size=32)
    other.load_state_dict(state)
    assert other.sign_sum == 5 and other.count == 5 and float(other.pipe.p) == float(pipe.p)


def test_unknown_pipeline():
    with pytest.raises(ValueError, match="unknown augment pipeline"):
        augment_config("xyz")
