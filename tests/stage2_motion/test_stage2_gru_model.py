"""StyleVideoGAN GRU generator and critic, WGAN-GP and the gradient angle penalty (unit level)."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from svgen.stage2_motion.gru.model import (
    GRUCell, GRUMotionConfig, GRUStack, MotionGenerator, RunningMoments, TemporalCritic,
)
from svgen.stage2_motion.gru.motion import resample_trajectory
from svgen.stage2_motion.gru.penalties import (
    gap_distance, gradient_angle, gradient_angle_penalty, gradient_penalty, gradient_penalty_first_layer,
    wgan_critic_loss,
)



TINY = GRUMotionConfig(num_ws=3, w_dim=8, latent_dim=6, h_hidden=(10,), t_hidden=(12,),
                       e_hidden=(16, 16, 8, 8, 8), c_channels=(8, 8), window=8)


def test_gru_cell_equals_torch_gru_cell():
    torch.manual_seed(0)
    ours, ref = GRUCell(5, 7), nn.GRUCell(5, 7)
    ref.load_state_dict(ours.state_dict())        # same parameter layout and gate order
    x, h = torch.randn(4, 5), torch.randn(4, 7)
    torch.testing.assert_close(ours(x, h), ref(x, h), rtol=1e-5, atol=1e-6)


def test_unroll_equals_step_by_step():
    torch.manual_seed(1)
    P = GRUStack(6, 4)
    s = torch.randn(3, 9, 6)
    h0 = [torch.randn(3, 6) for _ in range(4)]
    top, final = P.unroll(s, h0)
    h, tops = h0, []
    for k in range(9):
        h = P(s[:, k], h)
        tops.append(h[-1])
    torch.testing.assert_close(top, torch.stack(tops, 1))
    for a, b in zip(final, h):
        torch.testing.assert_close(a, b)


def test_gru_second_derivatives_gradgradcheck():
    torch.manual_seed(2)
    cell = GRUCell(3, 4).double()
    x = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    h = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda a, b: cell(a, b), (x, h))


def test_generator_structure_and_shapes():
    torch.manual_seed(3)
    G = MotionGenerator(TINY)
    assert len(G.P.cells) == 4
    i, s = torch.randn(5, 6), torch.randn(5, 7, 6)
    l, h = G.motion(i, s)
    assert l.shape == (5, 8, 6) and len(h) == 4
    torch.testing.assert_close(l[:, 0], i)                 # l_0 = h_{0,3} = i
    w = G(i, s)
    assert w.shape == (5, 8, 3, 8)
    # every W+ layer has its own affine map: layers differ for the same l
    assert not torch.allclose(w[:, :, 0], w[:, :, 1])


def test_sampling_is_chunk_and_seed_consistent_and_unrolls_long():
    torch.manual_seed(4)
    G = MotionGenerator(TINY)
    a = G.sample(2, 40, seed=7, chunk=256)
    b = G.sample(2, 40, seed=7, chunk=6)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(a, G.sample(2, 40, seed=8))
    # the first frames of a longer unroll are the same trajectory (state carried over chunks)
    torch.testing.assert_close(G.sample(2, 1500, seed=7, chunk=250)[:, :40], a, rtol=1e-5, atol=1e-5)
    assert G.sample(1, 1, seed=0).shape == (1, 1, 3, 8)


def test_sample_matches_forward_with_same_noise():
    torch.manual_seed(5)
    G = MotionGenerator(TINY)
    gen = torch.Generator().manual_seed(3)
    i = torch.randn(2, 6, generator=gen)
    s = torch.stack([torch.randn(2, 6, generator=gen) for _ in range(9)], 1)
    torch.testing.assert_close(G.sample(2, 10, seed=3), G(i, s), rtol=1e-5, atol=1e-5)


def test_critic_shapes_and_fixed_window():
    torch.manual_seed(6)
    C = TemporalCritic(TINY)
    assert sum(isinstance(m, nn.Linear) for m in C.E) == 6             # 6-layer MLP E
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in C.modules())
    assert C(torch.randn(4, 8, 3, 8)).shape == (4,)
    with pytest.raises(ValueError):
        C(torch.randn(4, 9, 3, 8))


class _Linear(nn.Module):
    def __init__(self, a: torch.Tensor):
        super().__init__()
        self.a = nn.Parameter(a)

    def forward(self, x):
        return (x.reshape(x.shape[0], -1) * self.a).sum(1)


def test_gradient_penalty_value_and_double_backward():
    torch.manual_seed(7)
    a = torch.randn(2 * 3 * 4) * 0.3
    critic = _Linear(a.clone())
    real, fake = torch.randn(5, 2, 3, 4), torch.randn(5, 2, 3, 4)
    gp = gradient_penalty(critic, real, fake)
    norm = a.norm()
    torch.testing.assert_close(gp, (norm - 1) ** 2)
    gp.backward()                                 # needs the graph of the gradient (double backward)
    torch.testing.assert_close(critic.a.grad, 2 * (norm - 1) * a / norm)
    # measured in units of x / 0.5 (the motion critic passes its w_std)
    torch.testing.assert_close(gradient_penalty(critic, real, fake, input_scale=0.5), (0.5 * norm - 1) ** 2)


def _critic_with_stats(sigma: float) -> tuple[TemporalCritic, torch.Tensor, torch.Tensor]:
    """A float64 TINY critic normalising with (w_mean, sigma), and real / fake windows of spread sigma."""
    torch.manual_seed(11)
    C = TemporalCritic(TINY).double()
    mean = torch.randn(TINY.num_ws, TINY.w_dim, dtype=torch.float64)
    C.set_data_stats(mean, sigma)
    shape = (6, TINY.window, TINY.num_ws, TINY.w_dim)
    real = mean + sigma * torch.randn(shape, dtype=torch.float64)
    fake = mean + sigma * torch.randn(shape, dtype=torch.float64)
    return C, real, fake


@pytest.mark.parametrize("units", ["raw", "normalised"])
def test_first_layer_gradient_penalty_equals_the_literal_one(units):
    """The H1-space penalty gives gradient_penalty's value, w.r.t. raw W+ (scale 1) or w / w_std."""
    C, real, fake = _critic_with_stats(0.1)
    scale = 1.0 if units == "raw" else C.w_std
    literal = gradient_penalty(C, real, fake, torch.Generator().manual_seed(3), input_scale=scale)
    h_real, h_fake = C.first_layer(real), C.first_layer(fake)
    fused = gradient_penalty_first_layer(C, h_real, h_fake, torch.Generator().manual_seed(3), input_scale=scale)
    torch.testing.assert_close(fused, literal, rtol=1e-10, atol=1e-12)


class _Scaled(nn.Module):
    def __init__(self, critic: nn.Module, k: float):
        super().__init__()
        self.critic, self.k = critic, k

    def forward(self, x):
        return self.k * self.critic(x)


def test_normalised_penalty_is_the_paper_loss_with_a_smaller_lambda():
    """Issue #13: the critic loss with the penalty in normalised units (lambda 50) equals 1/sigma times
    the paper's raw-unit loss of the critic sigma * C at lambda_GP = 50 sigma: a 10x weaker penalty
    at the spread of one real video's latents, not a re-parametrisation."""
    sigma, lam = 0.1, 50.0
    C, real, fake = _critic_with_stats(sigma)

    def loss(critic, lam_gp, scale):
        gp = gradient_penalty(critic, real, fake, torch.Generator().manual_seed(5), input_scale=scale)
        return wgan_critic_loss(critic(real), critic(fake)) + lam_gp * gp

    normalised = loss(C, lam, sigma)
    paper = loss(_Scaled(C, sigma), lam * sigma, 1.0)
    torch.testing.assert_close(normalised, paper / sigma, rtol=1e-12, atol=1e-15)
    # and it is not the paper's loss at the paper's lambda (the raw penalty of C itself)
    assert abs(loss(C, lam, 1.0).item() - normalised.item()) > 1.0


def test_gap_angle_on_hand_built_cases():
    torch.manual_seed(8)
    i = torch.randn(4, 6, requires_grad=True)
    s = torch.randn(4, 7, 6, requires_grad=True)
    A = torch.randn(6, 6)
    # depends only on i: phi ~ 0, penalty (pi/4)^2
    d_i = (i @ A).norm(dim=1)
    pen, phi = gradient_angle_penalty(d_i, i, s)
    assert phi.abs().max() < 1e-4
    assert pen.item() == pytest.approx((math.pi / 4) ** 2, rel=1e-3)
    # depends only on s: phi ~ pi/2, no penalty
    d_s = (s.sum(1) @ A).norm(dim=1)
    pen, phi = gradient_angle_penalty(d_s, i, s)
    assert (phi - math.pi / 2).abs().max() < 1e-4
    assert pen.item() == pytest.approx(0.0, abs=1e-8)
    # linear mix: phi = arctan(|b| / |a|) exactly
    a_vec, b_vec = torch.randn(6), torch.randn(7, 6)
    d_mix = i @ a_vec + (s * b_vec).sum((1, 2))
    phi = gradient_angle(d_mix, i, s)
    expect = math.atan(b_vec.norm().item() / a_vec.norm().item())
    torch.testing.assert_close(phi, torch.full((4,), expect), rtol=1e-5, atol=1e-5)


def test_gap_second_derivatives_reach_the_gru():
    torch.manual_seed(9)
    G = MotionGenerator(TINY).double()
    i = torch.randn(3, 6, dtype=torch.float64, requires_grad=True)
    s = torch.randn(3, 7, 6, dtype=torch.float64, requires_grad=True)
    l, _ = G.motion(i, s)
    G.gap_stats.update(l[:, -1] - l[:, 0])
    pen, phi = gradient_angle_penalty(gap_distance(l, G.gap_stats), i, s)
    assert 0 < phi.min() and phi.max() < math.pi / 2
    pen.backward()
    cell_grads = [p.grad for p in G.P.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in cell_grads)
    assert sum(g.abs().sum() for g in cell_grads) > 0
    assert G.H[0].weight.grad is not None and G.H[0].weight.grad.abs().sum() > 0

    # the penalty's gradient w.r.t. a GRU weight matches finite differences (second order through P)
    w = G.P.cells[0].weight_hh

    def penalty_of(weight):
        old = w.data.clone()
        w.data.copy_(weight)
        ii, ss = i.detach().requires_grad_(True), s.detach().requires_grad_(True)
        ll, _ = G.motion(ii, ss)
        out = gradient_angle_penalty(gap_distance(ll, G.gap_stats), ii, ss)[0]
        w.data.copy_(old)
        return out

    base = w.detach().clone()
    direction = torch.randn_like(base)
    eps = 1e-6
    numeric = (penalty_of(base + eps * direction) - penalty_of(base - eps * direction)) / (2 * eps)
    G.zero_grad()
    ii, ss = i.detach().requires_grad_(True), s.detach().requires_grad_(True)
    ll, _ = G.motion(ii, ss)
    gradient_angle_penalty(gap_distance(ll, G.gap_stats), ii, ss)[0].backward()
    analytic = (w.grad * direction).sum()
    assert analytic.item() == pytest.approx(numeric.item(), rel=1e-4, abs=1e-9)


def test_running_moments_track_mean_and_variance():
    rm = RunningMoments(3, momentum=0.9)
    torch.manual_seed(10)
    for _ in range(200):
        rm.update(torch.randn(64, 3) * torch.tensor([1.0, 2.0, 0.5]) + torch.tensor([3.0, -1.0, 0.0]))
    torch.testing.assert_close(rm.mean, torch.tensor([3.0, -1.0, 0.0]), atol=0.15, rtol=0)
    torch.testing.assert_close(rm.var, torch.tensor([1.0, 4.0, 0.25]), atol=0.4, rtol=0.15)
    z = rm.normalize(torch.randn(1000, 3) * torch.tensor([1.0, 2.0, 0.5]) + torch.tensor([3.0, -1.0, 0.0]))
    torch.testing.assert_close(z.std(0), torch.ones(3), atol=0.15, rtol=0)


def test_resample_trajectory_keeps_endpoints():
    x = torch.arange(11, dtype=torch.float64).reshape(11, 1).numpy()
    y = resample_trajectory(x, 21)
    assert y.shape == (21, 1) and y[0, 0] == 0 and y[-1, 0] == 10 and y[1, 0] == pytest.approx(0.5)
