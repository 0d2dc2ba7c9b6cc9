"""Editing directions in a generator's W space: computed (GANSpace) or loaded from files.

GANSpace (Härkönen et al. 2020) finds the principal axes of W = mapping(z): the eigenvectors of
the covariance of mapped samples, ordered by variance. They are orthonormal, and the standard
deviation of W along each axis (``std``, "sigma") gives edits a natural unit: ``w + s * sigma * d``
moves a code ``s`` standard deviations along ``d``, the same step for every generator.

Files this module reads (``load_directions``), all normalised to :class:`DirectionSet`:
- ours, ``svgen directions`` (``torch.save`` dict: ``format="svgen-directions"``, ``mean`` [w_dim],
  ``comp`` [K, w_dim], ``std`` [K], ``explained_variance_ratio``, provenance);
- GANSpace PCA as e4e/PTI ship it (``{"mean": [1, w_dim], "comp": [K, 1, w_dim], "std": [K]}``)
  and GANSpace's own ``.npz`` (``lat_comp``, ``lat_mean``, ``lat_stdev``);
- single InterFaceGAN-style vectors in ``.pt`` or ``.npy``: [w_dim] or [1, w_dim] (one direction for
  every layer), [num_ws, w_dim] or [1, num_ws, w_dim] (one vector per W+ layer, e.g. e4e's pose.pt,
  STIT's w_directions), [K, 1, w_dim] (K directions). Strengths of such vectors are in their own
  units (``w + s * d``, e4e's convention), since they carry no sigma.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from svgen.utils.errors import PathLike, SvgenError
from svgen.utils.io import require_file, torch_save_atomic

FORMAT = "svgen-directions"
VERSION = 1


@dataclass
class DirectionSet:
    """K directions in W: ``vectors`` [K, L, w_dim] with L = 1 (the same step on every W+ layer) or
    L = num_ws (one step per layer); ``sigma`` [K] (std of W along each, GANSpace) or None (raw units)."""

    vectors: np.ndarray
    sigma: Optional[np.ndarray] = None
    mean: Optional[np.ndarray] = None
    kind: str = "vector"                      # ganspace | vector
    source: str = ""
    meta: dict = field(default_factory=dict)

    @property
    def num(self) -> int:
        return int(self.vectors.shape[0])

    @property
    def w_dim(self) -> int:
        return int(self.vectors.shape[-1])


@dataclass
class GanspaceConfig:
    """GANSpace PCA of W: how many components and mapped samples (covariance accumulated in float64
    batch by batch, so memory does not grow with ``num_samples``)."""

    num_components: int = 20
    num_samples: int = 100_000
    batch: int = 4096
    seed: int = 0


# -- GANSpace ---------------------------------------------------------------------------------------
@torch.no_grad()
def ganspace(G: Any, cfg: GanspaceConfig) -> DirectionSet:
    """Principal directions of ``G``'s W: orthonormal rows, ordered by decreasing variance."""
    if getattr(G.mapping, "c_dim", 0):
        raise SvgenError("GANSpace of a conditional generator is not supported (it has class labels)")
    w_dim = int(G.w_dim)
    if not 1 <= cfg.num_components <= w_dim:
        raise SvgenError(f"--num must be in 1..{w_dim} (the generator's w_dim), got {cfg.num_components}")
    if cfg.num_samples <= w_dim:
        raise SvgenError(f"--samples must exceed w_dim ({w_dim}) for a full-rank covariance, "
                         f"got {cfg.num_samples}")
    device = G.mapping.w_avg.device
    rng = torch.Generator().manual_seed(int(cfg.seed))
    total = torch.zeros(w_dim, dtype=torch.float64)
    outer = torch.zeros(w_dim, w_dim, dtype=torch.float64)
    done = 0
    while done < cfg.num_samples:
        n = min(cfg.batch, cfg.num_samples - done)
        z = torch.randn(n, G.z_dim, generator=rng).to(device)
        w = G.mapping(z, None)
        w = (w[:, 0] if w.dim() == 3 else w).double().cpu()
        total += w.sum(0)
        outer += w.T @ w
        done += n
    mean = total / done
    cov = (outer - done * torch.outer(mean, mean)) / (done - 1)
    evals, evecs = torch.linalg.eigh(cov)                      # ascending
    order = torch.argsort(evals, descending=True)
    evals, evecs = evals[order].clamp_min(0), evecs[:, order]
    comp = evecs[:, :cfg.num_components].T.contiguous()       # [K, w_dim], orthonormal rows
    # a deterministic sign: the largest-magnitude coordinate of each direction is positive
    signs = torch.sign(comp.gather(1, comp.abs().argmax(1, keepdim=True)))
    comp = comp * signs
    k = cfg.num_components
    meta = {"method": "ganspace", "num_samples": int(done), "seed": int(cfg.seed),
            "explained_variance": evals[:k].tolist(),
            "explained_variance_ratio": (evals[:k] / evals.sum()).tolist(),
            "total_variance": float(evals.sum())}
    return DirectionSet(vectors=comp[:, None, :].float().numpy(), sigma=evals[:k].sqrt().float().numpy(),
                        mean=mean.float().numpy(), kind="ganspace", meta=meta)


def save_directions(ds: DirectionSet, path: PathLike, extra: Optional[dict] = None) -> Path:
    """Write ``ds`` as an svgen directions file (loadable with ``torch.load(weights_only=True)``)."""
    if ds.vectors.shape[1] != 1:
        raise ValueError("only per-W directions (L = 1) are written")
    obj = {"format": FORMAT, "version": VERSION, "kind": ds.kind,
           "comp": torch.from_numpy(np.ascontiguousarray(ds.vectors[:, 0], dtype=np.float32)),
           "std": None if ds.sigma is None else torch.from_numpy(np.asarray(ds.sigma, np.float32)),
           "mean": None if ds.mean is None else torch.from_numpy(np.asarray(ds.mean, np.float32)),
           "meta": {**ds.meta, **(extra or {})}}
    torch_save_atomic(obj, path)
    return Path(path)


# -- loading ----------------------------------------------------------------------------------------
def _read_file(path: Path) -> Any:
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            return np.load(path, allow_pickle=False)
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt, pickled code, not an array/torch file
        msg = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise SvgenError(f"not a readable direction file ({msg})", path) from None


def _array(x: Any, path: Path, what: str) -> np.ndarray:
    if torch.is_tensor(x):
        x = x.detach().cpu().float().numpy()
    try:
        arr = np.asarray(x, dtype=np.float32)
    except (TypeError, ValueError):
        raise SvgenError(f"{what} is not a numeric array", path) from None
    if not np.isfinite(arr).all():
        raise SvgenError(f"{what} contains NaN or infinite values", path)
    return arr


def _vectors_from_array(arr: np.ndarray, path: Path) -> np.ndarray:
    """InterFaceGAN-style arrays -> [K, L, w_dim] (see the module docstring for the shapes)."""
    if arr.ndim == 1:
        return arr[None, None]
    if arr.ndim == 2:
        return arr[None]                  # [1, w_dim] -> one direction; [num_ws, w_dim] -> one per layer
    if arr.ndim == 3:
        return arr                        # [1, num_ws, w_dim] or [K, 1, w_dim]
    raise SvgenError(f"direction array has shape {tuple(arr.shape)}; expected [w_dim], [num_ws, w_dim], "
                     "[1, num_ws, w_dim] or [K, 1, w_dim]", path)


def load_directions(path: PathLike) -> DirectionSet:
    """Read a directions file (svgen, GANSpace ``.pt``/``.npz``, InterFaceGAN ``.pt``/``.npy``)."""
    p = require_file(path, "direction file")
    obj = _read_file(p)
    sigma = mean = None
    meta: dict = {}
    if isinstance(obj, dict):
        if obj.get("format", FORMAT) != FORMAT:
            raise SvgenError(f"expected a direction file, found format {obj.get('format')!r}", p)
        keys = ("comp", "std", "mean") if "comp" in obj else ("lat_comp", "lat_stdev", "lat_mean")
        if keys[0] not in obj:
            raise SvgenError("direction file has neither 'comp' (GANSpace/svgen) nor 'lat_comp' (GANSpace .npz)", p)
        comp = _array(obj[keys[0]], p, keys[0])
        vectors = comp[:, None] if comp.ndim == 2 else comp
        if vectors.ndim != 3 or vectors.shape[1] != 1:
            raise SvgenError(f"'{keys[0]}' has shape {tuple(comp.shape)}; expected [K, w_dim] or [K, 1, w_dim]", p)
        if obj.get(keys[1]) is not None:
            sigma = _array(obj[keys[1]], p, keys[1]).reshape(-1)
            if sigma.shape[0] != vectors.shape[0]:
                raise SvgenError(f"'{keys[1]}' has {sigma.shape[0]} values for {vectors.shape[0]} directions", p)
        if obj.get(keys[2]) is not None:
            mean = _array(obj[keys[2]], p, keys[2]).reshape(-1)
        kind = "ganspace"
        meta = dict(obj.get("meta") or {}) if isinstance(obj.get("meta"), dict) else {}
    else:
        vectors = _vectors_from_array(_array(obj, p, "direction"), p)
        kind = "vector"
    if vectors.shape[0] == 0 or vectors.shape[-1] == 0:
        raise SvgenError("direction file holds no directions", p)
    if (np.linalg.norm(vectors.reshape(vectors.shape[0], -1), axis=1) == 0).any():
        raise SvgenError("direction file holds a zero vector", p)
    return DirectionSet(vectors=np.ascontiguousarray(vectors, np.float32), sigma=sigma, mean=mean,
                        kind=kind, source=str(p), meta=meta)



# -- preview ----------------------------------------------------------------------------------------
@torch.no_grad()
def direction_grid(G: Any, ds: DirectionSet, seed: int = 0, span: float = 2.0, steps: int = 5,
                   truncation_psi: float = 0.7, max_rows: Optional[int] = None) -> np.ndarray:
    """uint8 image: one row per direction, one column per strength in linspace(-span, span, steps)
    (in sigmas when the set has them), all from the same sample ``w`` of seed ``seed``."""
    from svgen.stage1_image_gan.render import to_uint8_hwc

    device = G.mapping.w_avg.device
    z = torch.randn(1, G.z_dim, generator=torch.Generator().manual_seed(int(seed))).to(device)
    w = G.mapping(z, None, truncation_psi=truncation_psi)[0]                  # [num_ws, w_dim]
    rows = ds.num if max_rows is None else min(ds.num, int(max_rows))
    strengths = torch.linspace(-span, span, steps, device=device)
    vec = torch.from_numpy(ds.vectors[:rows]).to(device)                     # [rows, L, w_dim]
    scale = torch.ones(rows, device=device) if ds.sigma is None else torch.from_numpy(ds.sigma[:rows]).to(device)
    ws = w[None, None] + (strengths[None, :, None, None] * scale[:, None, None, None]) * vec[:, None]
    images = []
    for r in range(rows):     # one row per batch: bounded memory for any number of directions
        images.append(to_uint8_hwc(G.synthesis(ws[r], noise_mode="const")))     # [steps, H, W, 3]
    grid = np.stack(images)                                                   # [rows, steps, H, W, 3]
    n_r, n_c, h, w_px, ch = grid.shape
    return grid.transpose(0, 2, 1, 3, 4).reshape(n_r * h, n_c * w_px, ch)
