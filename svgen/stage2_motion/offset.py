"""The offset trick (StyleVideoGAN §3): transfer motion generated for the training actor to a new
identity.

A PCA with 32 components of the training W+ codes spans the directions in which the training
actor's state (pose, expression) varies. For a new identity w_new:

    w'_new = mean + V^T V (w_new - mean)      projection onto the PCA affine subspace
    Delta  = w_new - w'_new                   the identity offset, orthogonal to the motion directions
    out_k  = w_k + strength * Delta[layers]   the generated trajectory, shifted

``naive`` mode skips the projection and moves the trajectory's first frame onto w_new
(Delta = w_new - w_0), the baseline the paper shows to produce artifacts. ``mean`` moves the
training codes' mean onto w_new (Delta = w_new - mean): the motion then happens *around* w_new,
which is what a pivotal-tuned generator needs -- it renders the new person at w_new and near it,
while the PCA trick keeps the trajectory on the training actor's states, up to several times the
clip's own spread away from w_new (measured on the demo: 25 vs 8 for the clip's spread; 0 of 10
sampled frames with a face through the tuned generator, against 8 of 10 with ``mean``). ``none``
leaves the trajectory alone. Options: number of components used, which W+ layers are shifted, a strength.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Optional, Sequence

import numpy as np

MODES = ("pca", "mean", "naive", "none")


@dataclass
class PCABasis:
    """PCA of flattened W+ codes: mean [D], orthonormal components [k, D], explained variance [k]."""

    mean: np.ndarray
    components: np.ndarray
    explained_variance: np.ndarray
    num_ws: int
    w_dim: int
    feature_var: Optional[np.ndarray] = None   # per-dimension variance of the fitted codes [D]
    num_frames: int = 0

    @property
    def k(self) -> int:
        return int(self.components.shape[0])

    def to_dict(self) -> dict:
        """Tensors for a ``torch.load(weights_only=True)`` checkpoint."""
        import torch

        d = {"mean": torch.from_numpy(np.asarray(self.mean, np.float32)),
             "components": torch.from_numpy(np.asarray(self.components, np.float32)),
             "explained_variance": torch.from_numpy(np.asarray(self.explained_variance, np.float32)),
             "num_ws": int(self.num_ws), "w_dim": int(self.w_dim), "num_frames": int(self.num_frames)}
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "PCABasis":
        def arr(x: Any) -> np.ndarray:
            return np.asarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x, np.float64)

        return cls(mean=arr(d["mean"]), components=arr(d["components"]),
                   explained_variance=arr(d["explained_variance"]), num_ws=int(d["num_ws"]),
                   w_dim=int(d["w_dim"]), num_frames=int(d.get("num_frames", 0)))


def fit_pca(chunks: Iterable[np.ndarray], num_ws: int, w_dim: int, n_components: int = 32,
            batch: int = 1024) -> PCABasis:
    """Streamed PCA (scikit-learn ``IncrementalPCA``) of W+ frames given as chunks [n, num_ws, w_dim].

    Every ``partial_fit`` sees at least ``batch`` frames except a final one, which is merged with
    its predecessor when needed; with at most ``2 * batch`` frames the result equals an exact PCA.
    ``n_components`` is capped at frames - 1 for tiny data sets.
    """
    from sklearn.decomposition import IncrementalPCA

    dim = num_ws * w_dim
    buf: list[np.ndarray] = []
    held = 0
    pending: list[np.ndarray] = []   # full batches not yet fitted (one is kept back for merging)
    for c in chunks:
        c = np.asarray(c, np.float64).reshape(-1, dim)
        if len(c) == 0:
            continue
        buf.append(c)
        held += len(c)
        while held >= batch:
            allrows = np.concatenate(buf)
            pending.append(allrows[:batch])
            buf, held = [allrows[batch:]], len(allrows) - batch
    rest = np.concatenate(buf) if held else np.zeros((0, dim))
    if pending:
        pending[-1] = np.concatenate([pending[-1], rest])
    elif len(rest):
        pending = [rest]
    total = sum(len(p) for p in pending)
    if total < 2:
        raise ValueError(f"the offset trick's PCA needs at least 2 frames, got {total}")
    k = int(min(n_components, total - 1, dim, len(pending[0])))
    ipca = IncrementalPCA(n_components=k)
    for p in pending:
        ipca.partial_fit(p)
    return PCABasis(mean=ipca.mean_.astype(np.float64), components=ipca.components_.astype(np.float64),
                    explained_variance=ipca.explained_variance_.astype(np.float64), num_ws=num_ws,
                    w_dim=w_dim, feature_var=np.asarray(ipca.var_, np.float64), num_frames=int(total))


def fit_pca_from_store(store: Any, n_components: int = 32, chunk: int = 512) -> PCABasis:
    """PCA of every frame of a :class:`LatentStore` (W codes are broadcast to W+), read in chunks."""

    def chunks() -> Iterable[np.ndarray]:
        for clip in store.clips:
            n = store.num_frames(clip)
            for a in range(0, n, chunk):
                yield store.read(clip, a, min(n, a + chunk), as_wplus=True)

    return fit_pca(chunks(), store.num_ws, store.w_dim, n_components=n_components)


def parse_layers(spec: Optional[str | Sequence[int]], num_ws: int) -> Optional[list[int]]:
    """``"0-7,10"`` (or a list) -> sorted layer indices; None/"all" -> None (every layer)."""
    if spec is None:
        return None
    if isinstance(spec, str):
        spec = spec.strip()
        if spec in ("", "all"):
            return None
        out: set[int] = set()
        for part in spec.split(","):
            part = part.strip()
            if "-" in part:
                a, b = part.split("-", 1)
                out.update(range(int(a), int(b) + 1))
            else:
                out.add(int(part))
        layers = sorted(out)
    else:
        layers = sorted({int(x) for x in spec})
    bad = [x for x in layers if not 0 <= x < num_ws]
    if bad or not layers:
        raise ValueError(f"W+ layers must lie in 0..{num_ws - 1}, got {spec!r}")
    return layers


def coarse_layers(num_ws: int, resolution: int) -> list[int]:
    """The W+ entries of the synthesis blocks up to an eighth of the output resolution (4x4 .. R/8, with
    that block's toRGB entry, which the next block's first conv shares): pose, head shape, mouth and eye
    opening, without the finer blocks' colour and texture. StyleGAN2 gives block 2^k the entries
    2k-5 (conv0), 2k-4 (conv1) and 2k-3 (toRGB), so this is 0 .. 2*log2(R/8)-3: 0-3 of 10 at 64 px,
    0-7 of 14 at 256 px."""
    last = 2 * int(round(np.log2(max(32, resolution) / 8))) - 3
    return list(range(0, min(num_ws, last + 1)))


def hold_layers(seq: np.ndarray, w_id: np.ndarray, layers: Optional[Sequence[int]]) -> np.ndarray:
    """Keep the W+ entries outside ``layers`` at the identity's code ``w_id`` (seq: [n, num_ws, w_dim]):
    only the listed layers carry the motion. None: every layer moves (``seq`` unchanged)."""
    if layers is None:
        return seq
    out = np.repeat(np.asarray(w_id, np.float32)[None], len(seq), axis=0)
    out[:, list(layers)] = np.asarray(seq, np.float32)[:, list(layers)]
    return out


def project(w: np.ndarray, basis: PCABasis, components: Optional[int] = None) -> np.ndarray:
    """Orthogonal projection of W+ code(s) [..., num_ws, w_dim] onto the PCA affine subspace
    spanned by the first ``components`` directions (all when None)."""
    w = np.asarray(w, np.float64)
    shape = w.shape
    x = w.reshape(-1, basis.num_ws * basis.w_dim)
    v = basis.components if components is None else basis.components[:components]
    c = (x - basis.mean) @ v.T                    # [n, k] coordinates
    return (basis.mean + c @ v).reshape(shape)


def offset_delta(w_new: np.ndarray, basis: Optional[PCABasis], mode: str = "pca",
                 first: Optional[np.ndarray] = None, components: Optional[int] = None) -> np.ndarray:
    """Delta [num_ws, w_dim]: ``pca``: w_new - proj(w_new); ``mean``: w_new - basis mean;
    ``naive``: w_new - first; ``none``: 0."""
    w_new = np.asarray(w_new, np.float64)
    if mode in ("pca", "mean") and basis is None:
        raise ValueError(f"the {mode} offset mode needs a PCA basis")
    if mode == "pca":
        return w_new - project(w_new, basis, components)
    if mode == "mean":
        return w_new - np.asarray(basis.mean, np.float64).reshape(w_new.shape)
    if mode == "naive":
        if first is None:
            raise ValueError("the naive offset mode needs the trajectory's first frame")
        return w_new - np.asarray(first, np.float64)
    if mode == "none":
        return np.zeros_like(w_new)
    raise ValueError(f"unknown offset mode {mode!r} (use {', '.join(MODES)})")


def offset_for(first: np.ndarray, w_new: np.ndarray, basis: Optional[PCABasis] = None, mode: str = "pca",
               components: Optional[int] = None, layers: Optional[Sequence[int]] = None,
               strength: float = 1.0) -> tuple[np.ndarray, dict]:
    """The shift [num_ws, w_dim] (float64) that moves a trajectory starting at ``first`` onto ``w_new``,
    and its record for the settings JSON (mode, components used, layers, strength, |Delta|).
    Computed once, it is added to every chunk of a streamed trajectory."""
    first = np.asarray(first, np.float64)
    w_new = np.asarray(w_new, np.float64)
    if w_new.shape != first.shape or first.ndim != 2:
        raise ValueError(f"trajectory frames {first.shape} and identity {w_new.shape} do not match")
    if components is not None and basis is not None and not 1 <= components <= basis.k:
        raise ValueError(f"offset components must be in 1..{basis.k}, got {components}")
    delta = offset_delta(w_new, basis, mode, first=first, components=components)
    if layers is not None:
        mask = np.zeros(first.shape[0], bool)
        mask[list(layers)] = True
        delta[~mask] = 0.0
    delta = float(strength) * delta
    info = {"mode": mode, "strength": float(strength),
            "components": (None if mode != "pca" else int(components or basis.k)),
            "layers": None if layers is None else [int(x) for x in layers],
            "delta_norm": float(np.linalg.norm(delta))}
    return delta, info


def apply_offset(traj: np.ndarray, w_new: np.ndarray, basis: Optional[PCABasis] = None,
                 mode: str = "pca", components: Optional[int] = None,
                 layers: Optional[Sequence[int]] = None, strength: float = 1.0) -> tuple[np.ndarray, dict]:
    """Shift a trajectory [T, num_ws, w_dim] onto a new identity; returns (shifted float32, info)."""
    traj = np.asarray(traj, np.float64)
    if traj.ndim != 3:
        raise ValueError(f"trajectory {traj.shape} is not [T, num_ws, w_dim]")
    delta, info = offset_for(traj[0], w_new, basis, mode, components, layers, strength)
    return (traj + delta[None]).astype(np.float32), info
