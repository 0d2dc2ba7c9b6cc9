"""Fréchet distance, streaming statistics, latent FD and loop score (pure maths, fast)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from svgen.metrics.frechet import (RunningGaussian, StatsCache, frechet_distance, gaussian_stats,
                                   stats_cache_key)
from svgen.metrics.latent_fd import LatentFD, latent_fd, make_windows
from svgen.metrics.looping import loop_score, motion_magnitude, trajectory_stats


def _random_spd(rng, d, rank=None):
    a = rng.standard_normal((d, rank or d))
    return a @ a.T / d + (0 if rank else 0.1) * np.eye(d)


def _direct_fd(mu1, s1, mu2, s2):
    """Independent route: tr((S1 S2)^1/2) = sum of sqrt of the (real, >= 0) eigenvalues of S1 S2."""
    ev = np.linalg.eigvals(s1 @ s2)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2)
                 - 2 * np.sum(np.sqrt(np.clip(ev.real, 0, None))))


@pytest.mark.parametrize("method", ["sqrtm", "svd"])
def test_frechet_matches_direct_computation(method):
    rng = np.random.default_rng(0)
    for d in (1, 5, 64):
        mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
        s1, s2 = _random_spd(rng, d), _random_spd(rng, d)
        assert frechet_distance(mu1, s1, mu2, s2, method=method) == pytest.approx(
            _direct_fd(mu1, s1, mu2, s2), rel=1e-7, abs=1e-9)
    # closed form for diagonal covariances: |dmu|^2 + sum (sqrt a - sqrt b)^2
    a, b = rng.uniform(0.1, 3, 10), rng.uniform(0.1, 3, 10)
    mu1, mu2 = rng.standard_normal(10), rng.standard_normal(10)
    expect = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b), method=method) == pytest.approx(expect, rel=1e-9)
    assert frechet_distance(mu1, np.diag(a), mu1, np.diag(a), method=method) == pytest.approx(0, abs=1e-9)
    # torch inputs are accepted
    assert frechet_distance(torch.tensor(mu1), torch.tensor(np.diag(a)), mu2, np.diag(b),
                            method=method) == pytest.approx(expect, rel=1e-9)


def test_frechet_rank_deficient_and_bad_input():
    rng = np.random.default_rng(1)
    s1, s2 = _random_spd(rng, 40, rank=10), _random_spd(rng, 40, rank=12)
    mu = np.zeros(40)
    svd = frechet_distance(mu, s1, mu, s2, method="svd")
    sq = frechet_distance(mu, s1, mu, s2, method="sqrtm")
    assert np.isfinite(svd) and np.isfinite(sq)
    assert svd == pytest.approx(_direct_fd(mu, s1, mu, s2), rel=1e-5)
    assert sq == pytest.approx(svd, rel=1e-3)
    with pytest.raises(ValueError):
        frechet_distance(mu, s1, mu, s2, method="eig")
    with pytest.raises(ValueError):
        frechet_distance(mu[:3], s1, mu, s2)


def test_sample_fd_of_same_distribution_is_small_and_grows_with_shift():
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((4000, 8)), rng.standard_normal((4000, 8))
    same = frechet_distance(*gaussian_stats(x), *gaussian_stats(y))
    shifted = frechet_distance(*gaussian_stats(x), *gaussian_stats(y + 1.0))
    assert same < 0.05
    assert shifted == pytest.approx(8.0, abs=0.4)  # |dmu|^2 = 8 up to sampling noise


def test_running_gaussian_equals_batch_statistics():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1000, 16)) * rng.uniform(0.01, 5, 16) + 1e4  # large offset: cancellation test
    run = RunningGaussian(16)
    i = 0
    for size in (1, 7, 100, 0, 392, 500):
        run.update(torch.from_numpy(x[i:i + size]) if size % 2 else x[i:i + size])
        i += size
    assert run.n == 1000
    mu, cov = gaussian_stats(x)
    np.testing.assert_allclose(run.mean, mu, rtol=1e-12)
    np.testing.assert_allclose(run.cov, cov, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(run.cov, np.cov(x, rowvar=False, bias=True), rtol=1e-9, atol=1e-12)
    unbiased = RunningGaussian(16, ddof=1).update(x)
    np.testing.assert_allclose(unbiased.cov, np.cov(x, rowvar=False), rtol=1e-9, atol=1e-12)
    back = RunningGaussian.from_state_dict(run.state_dict())
    np.testing.assert_array_equal(back.cov, run.cov)
    with pytest.raises(ValueError):
        run.update(np.zeros((3, 5)))


def test_stats_cache_round_trip_and_keys(tmp_path):
    cache = StatsCache(tmp_path / "cache")
    proto = {"metric": "fvd", "frames": 16, "stride": 1, "seed": 0}
    assert cache.load("sha-a", proto) is None
    stats = RunningGaussian(4).update(np.arange(40, dtype=float).reshape(10, 4) ** 1.5)
    path = cache.save("sha-a", proto, stats, {"num_clips": 10})
    assert path is not None and path.is_file()
    got, info = cache.load("sha-a", proto)
    np.testing.assert_array_equal(got.cov, stats.cov)
    assert info["num_clips"] == 10 and info["protocol"] == proto
    assert stats_cache_key("sha-a", proto) != stats_cache_key("sha-b", proto)
    assert stats_cache_key("sha-a", proto) != stats_cache_key("sha-a", {**proto, "frames": 128})
    assert cache.load("sha-a", {**proto, "seed": 1}) is None
    # an unwritable cache folder costs only time, never the evaluation
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert StatsCache(blocker / "sub").save("sha-a", proto, stats) is None


def _talking_windows(n, t=16, num_ws=4, w_dim=32, speed=1.0, freeze=False, seed=0):
    """Synthetic 'talking head' W+ windows: one identity plus smooth motion in a 6-dim subspace."""
    basis = np.random.default_rng(100).standard_normal((6, num_ws * w_dim))
    identity = np.random.default_rng(101).standard_normal(num_ws * w_dim)
    rng = np.random.default_rng(seed)
    tt = np.arange(t)[:, None]
    out = []
    for _ in range(n):
        c = np.sin(rng.uniform(0.05, 0.2, 6) * speed * tt + rng.uniform(0, 2 * np.pi, 6))
        if freeze:
            c = np.repeat(c[:1], t, axis=0)
        out.append((identity + c @ basis + 0.01 * rng.standard_normal((t, num_ws * w_dim)))
                   .reshape(t, num_ws, w_dim))
    return np.stack(out).astype(np.float32)


def test_latent_fd_separates_motion_from_few_samples():
    real = _talking_windows(48, seed=0)
    metric = LatentFD(real)
    same = metric(_talking_windows(48, seed=1))
    fast = metric(_talking_windows(48, speed=3, seed=2))
    frozen = metric(_talking_windows(48, freeze=True, seed=3))
    drift = metric(_talking_windows(48, seed=4) + 0.2)
    assert same < 0.25 * min(fast, frozen, drift), (same, fast, frozen, drift)
    # W+ and flattened inputs agree; the convenience function equals the class
    flat = _talking_windows(48, seed=1).reshape(48, 16, -1)
    assert latent_fd(real, flat) == pytest.approx(same, rel=1e-9)
    assert latent_fd(real, torch.from_numpy(flat)) == pytest.approx(same, rel=1e-9)
    proto = metric.protocol()
    assert proto["window"] == 16 and proto["latent_dim"] == 128 and proto["method"] == "svd"
    assert proto["pos_dims_used"] == 8 and proto["num_real_windows"] == 48
    # longer fake trajectories are cut into windows of the real length
    assert np.isfinite(metric(np.concatenate([_talking_windows(24, seed=5)] * 2, axis=1)))
    assert make_windows(np.zeros((3, 40, 5)), 16).shape == (6, 16, 5)


def test_loop_score_separates_periodic_from_random_walk():
    rng = np.random.default_rng(4)
    t = np.arange(200)[:, None]
    amp = rng.standard_normal((2, 256))
    periodic = np.sin(2 * np.pi * t / 40) * amp[0] + np.cos(2 * np.pi * t / 40) * amp[1]
    periodic = periodic + 0.1 * rng.standard_normal(periodic.shape)
    back_and_forth = np.abs(((t / 30.0) % 2) - 1) * amp[0] + 0.05 * rng.standard_normal((200, 256))
    for _ in range(3):
        walk = np.cumsum(rng.standard_normal((200, 256)), axis=0)
        assert loop_score(walk, min_lag=25) < 0.2
    assert loop_score(periodic, min_lag=25) > 0.8
    assert loop_score(back_and_forth.reshape(200, 4, 64), min_lag=25) > 0.7
    assert loop_score(np.zeros((200, 8)), min_lag=25) == 0.0
    assert np.isnan(loop_score(periodic[:20], min_lag=25))
    # motion magnitude: mean latent speed
    line = np.outer(np.arange(50), np.ones(4)) * 0.5  # speed 0.5 * |ones(4)| = 1
    assert motion_magnitude(line) == pytest.approx(1.0)
    assert motion_magnitude(np.zeros((10, 3))) == 0.0
    stats = trajectory_stats(np.stack([periodic, periodic]), 25)
    assert stats["loop_score"] > 0.8 and stats["num_trajectories"] == 2
