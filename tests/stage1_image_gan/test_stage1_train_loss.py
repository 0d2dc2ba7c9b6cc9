"""StyleGAN2 loss pieces: logistic losses, R1, path length, style mixing, phases and gains."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from svgen.nn.losses import (d_logistic_fake, d_logistic_loss, d_logistic_real, g_nonsaturating_loss,
                             path_length_penalty, path_lengths, r1_penalty)
from svgen.stage1_image_gan.loss import StyleGAN2Loss
from svgen.stage1_image_gan.networks import Discriminator, Generator
from svgen.stage1_image_gan.presets import get_preset


def test_logistic_losses():
    real = torch.tensor([[2.0], [-1.0]])
    fake = torch.tensor([[0.5], [-3.0]])
    assert torch.allclose(g_nonsaturating_loss(fake), -torch.log(torch.sigmoid(fake)))
    expected = -torch.log(1 - torch.sigmoid(fake)) - torch.log(torch.sigmoid(real))
    assert torch.allclose(d_logistic_fake(fake) + d_logistic_real(real), expected, atol=1e-6)
    assert float(d_logistic_loss(real, fake)) == pytest.approx(float(expected.mean()), abs=1e-6)


def test_r1_penalty_of_a_linear_discriminator():
    a = torch.randn(3, 4, 4)
    x = torch.randn(5, 3, 4, 4, requires_grad=True)
    logits = (x * a).sum(dim=[1, 2, 3])[:, None] + (x ** 2).sum(dim=[1, 2, 3])[:, None] * 0
    r1 = r1_penalty(logits, x)
    assert torch.allclose(r1, a.square().sum().expand(5), rtol=1e-5)
    r1.sum().backward()  # graph kept (create_graph) for the D update


def test_path_lengths_of_a_linear_generator():
    n, num_ws, w_dim, res = 3, 4, 5, 4
    M = torch.randn(num_ws * w_dim, 3 * res * res, dtype=torch.float64)
    ws = torch.randn(n, num_ws, w_dim, dtype=torch.float64, requires_grad=True)
    img = (ws.reshape(n, -1) @ M).reshape(n, 3, res, res)
    y = torch.randn(n, 3, res, res, dtype=torch.float64)
    lengths = path_lengths(img, ws, noise=y)
    # J^T y for img = ws M: (M y) reshaped per w
    g = (y.reshape(n, -1) @ M.T).reshape(n, num_ws, w_dim)
    expected = g.square().sum(2).mean(1).sqrt()
    assert torch.allclose(lengths, expected)
    # default noise is scaled by 1/sqrt(H W): length ~ ||M|| / res on average
    torch.manual_seed(0)
    lens = path_lengths(img, ws)
    assert lens.shape == (n,) and torch.isfinite(lens).all()


def test_path_length_penalty_running_mean():
    lengths = torch.tensor([1.0, 3.0])
    pen, a = path_length_penalty(lengths, torch.tensor(0.0), decay=0.01)
    assert float(a) == pytest.approx(0.02)
    assert torch.allclose(pen, (lengths - 0.02).square())


@pytest.fixture(scope="module")
def nets():
    torch.manual_seed(0)
    preset = get_preset("tiny", 32)
    G = Generator(preset.G).train().requires_grad_(False)
    D = Discriminator(preset.D).train().requires_grad_(False)
    return preset, G, D


def test_style_mixing_and_w_avg(nets):
    preset, G, D = nets
    z = torch.randn(4, G.z_dim)
    loss = StyleGAN2Loss(G, D, style_mixing_prob=1.0)
    w_avg0 = G.mapping.w_avg.clone()
    torch.manual_seed(1)
    img, ws = loss.run_G(z)
    assert img.shape == (4, 3, 32, 32) and ws.shape == (4, G.num_ws, G.w_dim)
    plain = G.mapping(z)
    same = [bool(torch.allclose(ws[:, i], plain[:, i])) for i in range(G.num_ws)]
    # a prefix from z, the rest from the second latent
    assert same[0] and not all(same) and same == sorted(same, reverse=True)
    # w_avg moved once, by the first latent only (the mixing latent skips the update)
    expected = plain[:, 0].mean(0).lerp(w_avg0, preset.G.w_avg_beta)
    assert torch.allclose(G.mapping.w_avg, expected, atol=1e-6)
    # no mixing at probability 0
    loss0 = StyleGAN2Loss(G, D, style_mixing_prob=0.0)
    _, ws0 = loss0.run_G(z, update_emas=False)
    assert torch.allclose(ws0, G.mapping(z))


def _grads(module):
    return [None if p.grad is None else p.grad.clone() for p in module.parameters()]


def _run(loss, module, phase, real, z, gain, seed=3):
    module.requires_grad_(True)
    for p in module.parameters():
        p.grad = None
    torch.manual_seed(seed)
    stats = loss.accumulate_gradients(phase, real, None, z, None, gain=gain)
    module.requires_grad_(False)
    return stats, _grads(module)


@pytest.mark.parametrize("phase,owner", [("Gmain", "G"), ("Greg", "G"), ("Dmain", "D"), ("Dreg", "D")])
def test_phases_update_only_their_network_and_scale_with_gain(nets, phase, owner):
    preset, G, D = nets
    module, other = (G, D) if owner == "G" else (D, G)
    loss = StyleGAN2Loss(G, D, r1_gamma=1.0, pl_weight=2.0)
    real = torch.rand(4, 3, 32, 32) * 2 - 1
    z = torch.randn(4, G.z_dim)
    w_avg = G.mapping.w_avg.clone()
    pl_mean = loss.pl_mean.clone()
    for p in list(G.parameters()) + list(D.parameters()):
        p.grad = None
    stats, g1 = _run(loss, module, phase, real, z, gain=1.0)
    assert all(p.grad is None for p in other.parameters())
    assert sum(float(g.abs().sum()) for g in g1 if g is not None) > 0
    G.mapping.w_avg.copy_(w_avg)
    loss.pl_mean.copy_(pl_mean)
    _, g4 = _run(loss, module, phase, real, z, gain=4.0)
    for a, b in zip(g1, g4):
        if a is not None:
            assert torch.allclose(b, 4 * a, rtol=1e-4, atol=1e-6)
    key = {"Gmain": "loss_G", "Greg": "loss_pl", "Dmain": "loss_D", "Dreg": "loss_r1"}[phase]
    assert math.isfinite(stats[key])
    if phase in ("Dmain", "Dreg"):
        assert stats["real_logits"].shape == (4, 1)
    if phase == "Greg":
        assert float(loss.pl_mean) > 0


def test_dmain_loss_value_matches_formula(nets):
    preset, G, D = nets
    loss = StyleGAN2Loss(G, D, style_mixing_prob=0.0)
    real = torch.rand(4, 3, 32, 32) * 2 - 1
    z = torch.randn(4, G.z_dim)
    D.requires_grad_(True)
    torch.manual_seed(7)
    stats = loss.accumulate_gradients("Dmain", real, None, z, None)
    D.requires_grad_(False)
    with torch.no_grad():
        torch.manual_seed(7)
        fake = G.synthesis(G.mapping(z), noise_mode="random")
        expected = float(F.softplus(D(fake)).mean() + F.softplus(-D(real)).mean())
    assert stats["loss_D"] == pytest.approx(expected, rel=1e-4)
