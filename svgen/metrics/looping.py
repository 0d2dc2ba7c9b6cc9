"""Looping and frozen motion as numbers: a loop score and the motion magnitude of a trajectory.

Recurrent motion models trained on short windows tend to fall into loops (StyleVideoGAN's
gradient-angle penalty exists for this; StyleGAN-V #19 shows back-and-forth "spring" motion) or
to freeze. Both are visible in the latent trajectory alone:

- ``motion_magnitude``: mean latent speed, the mean L2 norm of frame-to-frame differences of the
  flattened latent (0 for a frozen video);
- ``loop_score``: self-similarity at lags beyond the training window. With
  ``D(tau) = sqrt(mean_t |x[t + tau] - x[t]|^2)`` the RMS distance at lag tau, a trajectory that
  keeps moving on (random walk, drift) or settles into stationary variation has a D that rises or
  plateaus, while one that returns to earlier states has D dipping back down. The score is
  ``max over tau >= min_lag of 1 - D(tau) / max_{tau' <= tau} D(tau')``: 1 for an exact loop,
  near 0 for a random walk. Lags with fewer than a quarter of the frames as pairs are skipped.
"""
from __future__ import annotations

from typing import Any

import numpy as np


def flat_float64(x: Any, lead: int) -> np.ndarray:
    """Latents (numpy or torch) as float64 with the first ``lead`` axes kept and the code axes
    ([D] or [num_ws, w_dim]) flattened: [T, ...] -> [T, D] (``lead`` 1), [N, T, ...] -> [N, T, D] (2)."""
    if hasattr(x, "detach"):
        x = x.detach().to("cpu").numpy()
    x = np.asarray(x, dtype=np.float64)
    if x.ndim <= lead:
        axes = "T" if lead == 1 else "N, T"
        raise ValueError(f"expected latents [{axes}, D] or [{axes}, num_ws, w_dim], got shape {x.shape}")
    return x.reshape(*x.shape[:lead], -1)


def _traj(x: Any) -> np.ndarray:
    """[T, ...] (numpy or torch) -> float64 [T, D]."""
    return flat_float64(x, 1)


def motion_magnitude(traj: Any) -> float:
    """Mean latent speed of ``traj`` [T, D] (or [T, num_ws, w_dim]): mean |x[t+1] - x[t]|."""
    x = _traj(traj)
    if x.shape[0] < 2:
        return 0.0
    return float(np.linalg.norm(np.diff(x, axis=0), axis=1).mean())


def lag_distances(traj: Any, max_lag: int) -> np.ndarray:
    """RMS distance D(tau) for tau = 0 .. max_lag (D(0) = 0), from one Gram matrix."""
    x = _traj(traj)
    x = x - x.mean(axis=0)
    gram = x @ x.T                                   # [T, T]
    sq = np.diag(gram)
    d2 = sq[:, None] + sq[None, :] - 2.0 * gram      # squared distances [T, T]
    out = np.zeros(max_lag + 1)
    for tau in range(1, max_lag + 1):
        out[tau] = np.sqrt(max(float(np.diagonal(d2, offset=tau).mean()), 0.0))
    return out


def loop_score(traj: Any, min_lag: int) -> float:
    """Self-similarity of ``traj`` [T, D] at lags >= ``min_lag`` (typically the training window).

    In [0, 1]: high when the trajectory returns to earlier states (loops, back-and-forth), low
    for a random walk. A frozen trajectory scores 0 (see :func:`motion_magnitude`). Trajectories
    too short to have a lag >= ``min_lag`` with enough pairs score NaN.
    """
    x = _traj(traj)
    t = x.shape[0]
    min_lag = max(int(min_lag), 1)
    max_lag = t - max(t // 4, 2)
    if max_lag < min_lag:
        return float("nan")
    d = lag_distances(x, max_lag)
    running_max = np.maximum.accumulate(d)
    lags = np.arange(min_lag, max_lag + 1)
    scale = running_max[lags]
    if not np.any(scale > 0):
        return 0.0
    ratio = np.where(scale > 0, d[lags] / np.where(scale > 0, scale, 1.0), 1.0)
    return float(np.clip(1.0 - ratio.min(), 0.0, 1.0))


def trajectory_stats(trajs: Any, min_lag: int) -> dict:
    """Loop score and motion magnitude over a batch [N, T, ...]: means, and the worst loop score."""
    if hasattr(trajs, "detach"):
        trajs = trajs.detach().to("cpu").numpy()
    trajs = np.asarray(trajs)
    loops = np.array([loop_score(tr, min_lag) for tr in trajs])
    speeds = np.array([motion_magnitude(tr) for tr in trajs])
    valid = loops[np.isfinite(loops)]
    return {
        "loop_score": float(valid.mean()) if valid.size else float("nan"),
        "loop_score_max": float(valid.max()) if valid.size else float("nan"),
        "motion_magnitude": float(speeds.mean()),
        "num_trajectories": int(len(trajs)),
        "frames": int(trajs.shape[1]),
        "min_lag": int(min_lag),
    }
