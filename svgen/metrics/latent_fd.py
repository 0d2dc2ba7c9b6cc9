"""Latent Fréchet distance: a cheap motion-quality signal computed on latent trajectories.

Comparing generated and real *windows* of latent trajectories (W or W+) with a Fréchet distance
needs features far smaller than the raw window (T x 14 x 512 values) because the motion trainers
only have tens to hundreds of windows. We therefore describe each window by a fixed, small set of
features defined by the **real** data alone:

- a position PCA (``pos_dims`` components) fitted on the real frames, and a velocity PCA
  (``vel_dims`` components) fitted on the real frame-to-frame differences;
- per window: the mean position (where the face is in latent space), the displacement from
  first to last frame (motion at window scale), the RMS velocity along each velocity component
  (per-frame motion energy per direction), the mean distance from the position subspace (drift
  off the real manifold, e.g. identity drift) and the mean speed (full latent, frames^-1);
- every feature is divided by its standard deviation over the real windows, so all features
  weigh the same and the distance is in "squared real standard deviations".

The result is meaningful with few samples and any latent size, and is comparable between runs
that use the same real windows and the same number of fake windows (the Fréchet estimate is
biased upward with few samples). The feature definition is returned by :meth:`LatentFD.protocol`
and recorded in every report. The square root defaults to the SVD form, which is stable for the
rank-deficient covariances that few samples give.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from svgen.metrics.frechet import frechet_distance, gaussian_stats
from svgen.metrics.looping import flat_float64

FEATURE_VERSION = 1


@dataclass
class LatentFDConfig:
    """Feature definition of the latent FD (saved with every result)."""

    pos_dims: int = 8          # position PCA components (fitted on real frames)
    vel_dims: int = 8          # velocity PCA components (fitted on real frame differences)
    method: str = "svd"        # matrix square root: "svd" | "sqrtm"
    max_fit_frames: int = 4096  # frames used to fit each PCA (deterministic subsample)
    seed: int = 0              # seed of that subsample and of the randomized SVD


def _flatten(x: Any) -> np.ndarray:
    """[N, T, ...] (numpy or torch) -> float64 [N, T, D]."""
    return flat_float64(x, 2)


def make_windows(traj: Any, length: int, stride: Optional[int] = None) -> np.ndarray:
    """Cut trajectories [N, T, ...] into windows [N * k, length, D] (stride defaults to length)."""
    x = _flatten(traj)
    stride = length if stride is None else stride
    if x.shape[1] < length:
        raise ValueError(f"trajectories of {x.shape[1]} frames are shorter than the window ({length})")
    starts = range(0, x.shape[1] - length + 1, stride)
    return np.concatenate([x[:, s:s + length] for s in starts], axis=0)


def _pca(rows: np.ndarray, k: int, seed: int, max_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean [D] and top-k principal directions [k, D] of ``rows`` [R, D] (randomized SVD)."""
    rng = np.random.default_rng(seed)
    if rows.shape[0] > max_rows:
        rows = rows[np.sort(rng.choice(rows.shape[0], max_rows, replace=False))]
    mean = rows.mean(axis=0)
    xc = rows - mean
    k = int(max(0, min(k, xc.shape[0] - 1, xc.shape[1])))
    if k == 0:
        return mean, np.zeros((0, xc.shape[1]))
    # Halko et al.: range finder with oversampling and two power iterations, then exact SVD of Q^T X
    q_dim = min(k + 10, min(xc.shape))
    q = xc @ rng.standard_normal((xc.shape[1], q_dim))
    for _ in range(2):
        q, _ = np.linalg.qr(q)
        q = xc @ (xc.T @ q)
    q, _ = np.linalg.qr(q)
    _, s, vt = np.linalg.svd(q.T @ xc, full_matrices=False)
    keep = s[:k] > 1e-9 * max(s[0], 1e-300)
    return mean, vt[:k][keep]


class LatentFD:
    """Latent FD against a fixed set of real windows: fit once, call at every snapshot.

    ``real``: [N, T, D] or [N, T, num_ws, w_dim] windows of real (inverted) trajectories.
    """

    def __init__(self, real: Any, cfg: Optional[LatentFDConfig] = None):
        self.cfg = cfg or LatentFDConfig()
        x = _flatten(real)
        if x.shape[0] < 2:
            raise ValueError("latent FD needs at least 2 real windows")
        self.window = x.shape[1]
        self.dim = x.shape[2]
        frames = x.reshape(-1, self.dim)
        self.pos_mean, self.pos_basis = _pca(frames, self.cfg.pos_dims, self.cfg.seed, self.cfg.max_fit_frames)
        if self.window > 1:
            steps = np.diff(x, axis=1).reshape(-1, self.dim)
            _, self.vel_basis = _pca(steps, self.cfg.vel_dims, self.cfg.seed + 1,
                                     self.cfg.max_fit_frames)
        else:
            self.vel_basis = np.zeros((0, self.dim))
        raw = self._raw_features(x)
        self.feat_mean = raw.mean(axis=0)
        std = raw.std(axis=0)
        floor = 1e-3 * float(np.median(std[std > 0])) if np.any(std > 0) else 1.0
        self.feat_scale = np.maximum(std, floor)
        self.real_features = self._standardise(raw)
        self.real_mu, self.real_sigma = gaussian_stats(self.real_features)
        self.num_real = x.shape[0]

    # -- features -----------------------------------------------------------------------------
    def _raw_features(self, x: np.ndarray) -> np.ndarray:
        """[N, T, D] -> [N, F] (unscaled)."""
        centred = x - self.pos_mean                       # [N, T, D]
        pos = centred @ self.pos_basis.T                  # [N, T, k]
        recon = pos @ self.pos_basis                      # [N, T, D]
        off_subspace = np.linalg.norm(centred - recon, axis=-1).mean(axis=1) / np.sqrt(self.dim)  # [N]
        feats = [pos.mean(axis=1)]
        if x.shape[1] > 1:
            steps = np.diff(x, axis=1)                    # [N, T-1, D]
            vel = steps @ self.vel_basis.T                # [N, T-1, kv]
            speed = np.linalg.norm(steps, axis=-1).mean(axis=1)  # [N]
            feats += [pos[:, -1] - pos[:, 0], np.sqrt((vel ** 2).mean(axis=1)), speed[:, None]]
        feats.append(off_subspace[:, None])
        return np.concatenate(feats, axis=1)

    def _standardise(self, raw: np.ndarray) -> np.ndarray:
        return (raw - self.feat_mean) / self.feat_scale

    def features(self, traj: Any) -> np.ndarray:
        """Standardised window features [N, F] of trajectories with this window length."""
        x = _flatten(traj)
        if x.shape[1:] != (self.window, self.dim):
            raise ValueError(f"expected windows of shape [N, {self.window}, {self.dim}], got {x.shape}")
        return self._standardise(self._raw_features(x))

    # -- distance -----------------------------------------------------------------------------
    def __call__(self, fake: Any) -> float:
        """Latent FD of fake windows [M, T, ...]; longer fake trajectories are cut into windows."""
        x = _flatten(fake)
        if x.shape[1] != self.window:
            x = make_windows(x, self.window)
        if x.shape[0] < 2:
            raise ValueError("latent FD needs at least 2 fake windows")
        mu, sigma = gaussian_stats(self.features(x))
        return frechet_distance(self.real_mu, self.real_sigma, mu, sigma, method=self.cfg.method)

    def protocol(self) -> dict:
        """What the number means: recorded next to every latent FD value."""
        return {
            "feature_version": FEATURE_VERSION,
            **dataclasses.asdict(self.cfg),
            "pos_dims_used": int(self.pos_basis.shape[0]),
            "vel_dims_used": int(self.vel_basis.shape[0]),
            "window": int(self.window),
            "latent_dim": int(self.dim),
            "num_real_windows": int(self.num_real),
            "features": "mean position, displacement, RMS velocity per velocity-PCA axis, mean speed, "
                        "distance off the position subspace; each divided by its real std",
        }


def latent_fd(real: Any, fake: Any, pos_dims: int = 8, vel_dims: int = 8, method: str = "svd",
              window: Optional[int] = None) -> float:
    """Fréchet distance between windows of real [N, T, D] and fake [M, T, D] latent trajectories.

    W+ trajectories [N, T, num_ws, w_dim] are flattened. With ``window``, both sets are first cut
    into non-overlapping windows of that many frames. See the module docstring for the features.
    """
    if window is not None:
        real, fake = make_windows(real, window), make_windows(fake, window)
    cfg = LatentFDConfig(pos_dims=pos_dims, vel_dims=vel_dims, method=method)
    return LatentFD(real, cfg)(fake)


def real_windows_from_store(store: Any, length: int, num: int, seed: int = 0,
                            as_wplus: bool = True) -> np.ndarray:
    """``num`` random real windows [num, length, ...] from a :class:`LatentStore` (without replacement
    while possible). Raises ValueError when no clip has ``length`` frames."""
    all_windows = store.windows(length, stride=1)
    if not all_windows:
        raise ValueError(f"no clip in the latent store has {length} frames")
    rng = np.random.default_rng(seed)
    replace = num > len(all_windows)
    picks = rng.choice(len(all_windows), size=num, replace=replace)
    out = [store.read(all_windows[i][0], all_windows[i][1], all_windows[i][1] + length, as_wplus=as_wplus)
           for i in picks]
    return np.stack(out)
