"""Fréchet distance between Gaussians, streaming feature statistics, and a real-statistics cache.

The Fréchet (2-Wasserstein) distance between N(mu1, S1) and N(mu2, S2) is

    FD = |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2))

which FID, FVD and our latent FD all share. The trace of the matrix square root is computed one
of two ways, and the method used is recorded in every result because they differ numerically:

- ``"sqrtm"``: ``scipy.linalg.sqrtm(S1 @ S2)`` as in StyleGAN-V / stylegan2-ada / pytorch-fid
  (with the usual small diagonal offset when the product is singular);
- ``"svd"``: the symmetric form ``tr((S1^(1/2) S2 S1^(1/2))^(1/2))`` with SVD-based square roots of
  positive semi-definite matrices (tf-gan, used by StyleInV); stable for rank-deficient covariances.

Covariances use ``ddof=0`` (divide by n) by default, as the feature statistics of stylegan2-ada
and StyleGAN-V do, so our FVD/FID match theirs; every result records ``cov_ddof``.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from svgen.utils.errors import PathLike, SvgenError
from svgen.utils.io import atomic_path

SQRT_METHODS = ("sqrtm", "svd")
DEFAULT_DDOF = 0


def _as_float64(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor
        x = x.detach().to("cpu").double().numpy()
    return np.asarray(x, dtype=np.float64)


def _psd_sqrt_svd(mat: np.ndarray) -> np.ndarray:
    """Square root of a symmetric PSD matrix via SVD (singular values of a PSD matrix = eigenvalues)."""
    u, s, vt = np.linalg.svd(mat, hermitian=False)
    return (u * np.sqrt(np.clip(s, 0.0, None))) @ vt


def _scipy_sqrtm(mat: np.ndarray) -> np.ndarray:
    """``scipy.linalg.sqrtm`` without its warnings (singular input shows up as non-finite values)."""
    import warnings

    import scipy.linalg

    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        out = scipy.linalg.sqrtm(mat)
    return np.asarray(out[0] if isinstance(out, tuple) else out)


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray, method: str = "sqrtm") -> float:
    """``tr((sigma1 @ sigma2)^(1/2))`` by ``method`` (see module docstring)."""
    if method == "sqrtm":
        covmean = _scipy_sqrtm(sigma1 @ sigma2)
        if not np.isfinite(covmean).all():
            # singular product: offset both diagonals slightly (pytorch-fid's fallback)
            offset = np.eye(sigma1.shape[0]) * 1e-6
            covmean = _scipy_sqrtm((sigma1 + offset) @ (sigma2 + offset))
        return float(np.real(np.trace(covmean)))
    if method == "svd":
        sqrt1 = _psd_sqrt_svd(sigma1)
        inner = sqrt1 @ sigma2 @ sqrt1
        inner = 0.5 * (inner + inner.T)
        s = np.linalg.svd(inner, compute_uv=False)
        return float(np.sum(np.sqrt(np.clip(s, 0.0, None))))
    raise ValueError(f"unknown square-root method {method!r} (use {' or '.join(SQRT_METHODS)})")


def frechet_distance(mu1: Any, sigma1: Any, mu2: Any, sigma2: Any, method: str = "sqrtm") -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2) (float64 throughout).

    ``mu*``: [D]; ``sigma*``: [D, D]. Tiny negative results from round-off are clipped to 0.
    """
    mu1, mu2 = _as_float64(mu1).reshape(-1), _as_float64(mu2).reshape(-1)
    sigma1, sigma2 = np.atleast_2d(_as_float64(sigma1)), np.atleast_2d(_as_float64(sigma2))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.size,) * 2:
        raise ValueError(f"shape mismatch: mu {mu1.shape}/{mu2.shape}, sigma {sigma1.shape}/{sigma2.shape}")
    diff = mu1 - mu2
    fd = float(diff @ diff + np.trace(sigma1) + np.trace(sigma2)
               - 2.0 * trace_sqrt_product(sigma1, sigma2, method))
    return max(fd, 0.0)


def gaussian_stats(x: Any, ddof: int = DEFAULT_DDOF) -> tuple[np.ndarray, np.ndarray]:
    """Mean [D] and covariance [D, D] of samples ``x`` [N, D] (float64)."""
    x = _as_float64(x)
    if x.ndim != 2:
        raise ValueError(f"expected samples [N, D], got shape {x.shape}")
    mu = x.mean(axis=0)
    xc = x - mu
    denom = max(x.shape[0] - ddof, 1)
    return mu, (xc.T @ xc) / denom


class RunningGaussian:
    """Streaming mean and covariance of D-dim features in float64.

    Batches are merged with Chan et al.'s pairwise update (mean and centred scatter matrix), which
    avoids the cancellation of the naive ``E[xx^T] - mu mu^T`` form, so 2048 clips x 128 frames of
    features never need to sit in memory and the result equals the batch statistics.
    """

    def __init__(self, dim: int, ddof: int = DEFAULT_DDOF):
        self.dim = int(dim)
        self.ddof = int(ddof)
        self.n = 0
        self._mean = np.zeros(self.dim, np.float64)
        self._scatter = np.zeros((self.dim, self.dim), np.float64)  # sum (x - mean)(x - mean)^T

    def update(self, x: Any) -> "RunningGaussian":
        """Add samples ``x`` [N, D] (numpy or torch)."""
        x = _as_float64(x)
        if x.ndim == 1:
            x = x[None]
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"expected features [N, {self.dim}], got shape {x.shape}")
        nb = x.shape[0]
        if nb == 0:
            return self
        mean_b = x.mean(axis=0)
        xc = x - mean_b
        scatter_b = xc.T @ xc
        n = self.n + nb
        delta = mean_b - self._mean
        self._mean = self._mean + delta * (nb / n)
        self._scatter = self._scatter + scatter_b + np.outer(delta, delta) * (self.n * nb / n)
        self.n = n
        return self

    @property
    def mean(self) -> np.ndarray:
        return self._mean.copy()

    @property
    def cov(self) -> np.ndarray:
        return self._scatter / max(self.n - self.ddof, 1)

    def stats(self) -> tuple[np.ndarray, np.ndarray]:
        return self.mean, self.cov

    # -- persistence (real-statistics cache) -------------------------------------------------
    def state_dict(self) -> dict:
        return {"dim": self.dim, "ddof": self.ddof, "n": self.n, "mean": self._mean.copy(),
                "scatter": self._scatter.copy()}

    @classmethod
    def from_state_dict(cls, state: dict) -> "RunningGaussian":
        g = cls(int(state["dim"]), ddof=int(state["ddof"]))
        g.n = int(state["n"])
        g._mean = np.asarray(state["mean"], np.float64).copy()
        g._scatter = np.asarray(state["scatter"], np.float64).copy()
        return g


def frechet_from_running(real: RunningGaussian, fake: RunningGaussian, method: str = "sqrtm") -> float:
    """Fréchet distance between two streamed feature sets."""
    return frechet_distance(real.mean, real.cov, fake.mean, fake.cov, method=method)


# -- real-statistics cache ---------------------------------------------------------------------
def default_cache_dir() -> Path:
    """``$SVGEN_CACHE/metrics`` or ``~/.cache/svgen/metrics``."""
    root = os.environ.get("SVGEN_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "svgen")
    return Path(root) / "metrics"


def stats_cache_key(dataset_id: str, protocol: dict) -> str:
    """Hex key of (dataset identity, protocol): any change of either gives a new entry."""
    blob = json.dumps({"dataset": dataset_id, "protocol": protocol}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:32]


def cached_real_stats(cache: Optional["StatsCache"], dataset_id: str, protocol: dict,
                      compute: Callable[[], RunningGaussian], info: Optional[dict] = None
                      ) -> tuple[RunningGaussian, str]:
    """Real statistics from ``cache`` or from ``compute()`` (then stored with ``info``); also what the
    cache did: "hit", "stored" or "off" (no cache)."""
    cached = cache.load(dataset_id, protocol) if cache is not None else None
    if cached is not None:
        return cached[0], "hit"
    real = compute()
    if cache is None:
        return real, "off"
    cache.save(dataset_id, protocol, real, info)
    return real, "stored"


class StatsCache:
    """Real-data feature statistics on disk, keyed by dataset + protocol (``<key>.npz``).

    The protocol dict must contain everything that changes the statistics (metric, frames,
    stride, clip count, seed of the random offsets, detector hash), so a cache hit is exact.
    """

    def __init__(self, folder: Optional[PathLike] = None):
        self.folder = Path(folder) if folder is not None else default_cache_dir()

    def path_for(self, dataset_id: str, protocol: dict) -> Path:
        return self.folder / f"{stats_cache_key(dataset_id, protocol)}.npz"

    def load(self, dataset_id: str, protocol: dict) -> Optional[tuple[RunningGaussian, dict]]:
        """Cached (statistics, extra info) or None (missing or unreadable entries are ignored)."""
        path = self.path_for(dataset_id, protocol)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                state = {k: z[k] for k in ("dim", "ddof", "n", "mean", "scatter")}
                info = json.loads(str(z["info"]))
        except Exception:
            return None
        return RunningGaussian.from_state_dict(state), info

    def save(self, dataset_id: str, protocol: dict, stats: RunningGaussian,
             info: Optional[dict] = None) -> Optional[Path]:
        """Write an entry atomically; returns None (no exception) when the cache is unwritable,
        because a missing cache only costs time."""
        path = self.path_for(dataset_id, protocol)
        payload = {"dataset": dataset_id, "protocol": protocol, **(info or {})}
        try:
            with atomic_path(path, suffix=".npz") as tmp:
                with open(tmp, "wb") as fh:
                    np.savez(fh, info=np.array(json.dumps(payload, default=str)), **stats.state_dict())
        except SvgenError:
            return None
        return path
