"""Lifting StyleInV's W motion back onto the W+ layers of the store it learned from.

StyleInV works in W (Wang et al. 2023), so on a W+ store it learns from the codes' mean over layers.
Where the layers move differently (a pSp/e4e store: the mouth in some layers, the head in others) the
mean keeps little of the motion: on the demo's store 37 %, and the training clip rendered from those
means moves its mouth 0.35x as much as the clip. Broadcasting StyleInV's W codes to every layer
renders that loss.

The lift is the store's own answer to "which W+ motion has this layer mean": a least-squares map from
the leading directions of the layer means' motion to the W+ motion, fitted on the store (each clip
about its own mean over time). A W motion ``delta`` [w_dim] becomes

    lift(delta) = broadcast(delta - P P^T delta) + (P^T delta) @ B        # [num_ws, w_dim]

with ``P`` [w_dim, k] the k leading directions and ``B`` [k, num_ws, w_dim] the W+ motion per unit
along each: along the leading directions the layers move as the store's do, the rest of the motion is
broadcast as before, and its mean over layers stays ``delta``. Only as much motion along each
direction as the store makes is lifted (``bound``); any more is broadcast.

Measured on the demo (64 px): the clip re-rendered from its lifted means moves the mouth 0.85-0.92x and
the head 0.89-0.95x as much as the clip (k = 4-8; broadcast 0.35x and 0.23x). Lifting 16 directions
doubled the landmark-motion distance of StyleInV's samples: the weaker directions are mostly noise that
the map amplifies. ``svgen sample/animate`` use the lift wherever ``motion.pt`` has one (``--layer-lift
auto``; ``off`` broadcasts). With the demo's StyleInV trained at lr 1e-3, its samples (3 x 150 frames) move
the mouth 0.74x and the head 0.58x as much as the clip (broadcast 0.29x and 0.18x; landmark-motion distance
16.1 and 16.6, bound 23.7; a face in 98.9 % and 100 % of the frames), and through PTI the mouth moves
0.56-1.13x on five photos with a face in every frame. (The model trained at the paper's 1e-4 had learnt
little of the mouth, and with it the lift brought back mostly head turns that blurred some faces, so the
lift was off by default until 2026-12-07.)
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np
import torch

from svgen.stage2_motion.styleinv.model import MODEL_NAME
from svgen.utils.errors import SvgenError

LIFT_VARIANCE = 0.8          # the leading directions carry this share of the layer means' motion
LIFT_MAX_COMPONENTS = 16
LAYER_LIFT_MODES = ("auto", "on", "off")   # svgen sample/animate --layer-lift


@dataclass
class LayerLift:
    """W motion -> W+ motion, fitted on a W+ store (see the module docstring)."""

    basis: np.ndarray        # P [w_dim, k], orthonormal columns
    coeffs: np.ndarray       # B [k, num_ws, w_dim]
    explained: float         # share of the layer means' motion (sum of squares) along P
    r2: float                # share of the store's W+ motion the lift reconstructs from the means
    bound: np.ndarray        # [k] the store's largest distance from a clip's mean along each direction

    @property
    def components(self) -> int:
        return int(self.basis.shape[1])

    def apply(self, delta: torch.Tensor) -> torch.Tensor:
        """W motion [..., w_dim] -> W+ motion [..., num_ws, w_dim] (float32, on ``delta``'s device).

        Only as much motion along each direction as the store itself makes (``bound``) is lifted; any
        more is broadcast, as without a lift: the map was fitted inside that range, and outside it it
        renders no face (StyleInV samples from mapped content codes that move 3x the store's spread).
        """
        P = torch.as_tensor(self.basis, dtype=torch.float32, device=delta.device)
        B = torch.as_tensor(self.coeffs, dtype=torch.float32, device=delta.device)
        bound = torch.as_tensor(self.bound, dtype=torch.float32, device=delta.device)
        x = delta.float() @ P                                  # [..., k]
        x = torch.maximum(torch.minimum(x, bound), -bound)
        rest = delta.float() - x @ P.T                         # [..., w_dim]
        return rest[..., None, :] + torch.einsum("...k,kld->...ld", x, B)

    def to_dict(self) -> dict:
        return {"basis": torch.from_numpy(np.ascontiguousarray(self.basis, np.float32)),
                "coeffs": torch.from_numpy(np.ascontiguousarray(self.coeffs, np.float32)),
                "explained": float(self.explained), "r2": float(self.r2),
                "bound": torch.from_numpy(np.ascontiguousarray(self.bound, np.float32))}

    @classmethod
    def from_dict(cls, d: dict, num_ws: int, w_dim: int, path: Any = None) -> "LayerLift":
        try:
            basis = np.asarray(torch.as_tensor(d["basis"]).float().numpy())
            coeffs = np.asarray(torch.as_tensor(d["coeffs"]).float().numpy())
            bound = np.asarray(torch.as_tensor(d["bound"]).float().numpy())
            lift = cls(basis, coeffs, float(d["explained"]), float(d["r2"]), bound)
        except (KeyError, TypeError, ValueError) as exc:
            raise SvgenError(f"StyleInV checkpoint has an unreadable layer_lift ({exc})", path) from None
        k = lift.components
        if basis.shape != (w_dim, k) or coeffs.shape != (k, num_ws, w_dim) or bound.shape != (k,) or not (
                np.isfinite(basis).all() and np.isfinite(coeffs).all() and np.isfinite(bound).all()):
            raise SvgenError(f"StyleInV checkpoint's layer_lift has shapes {basis.shape} / {coeffs.shape}, "
                             f"expected ({w_dim}, k) / (k, {num_ws}, {w_dim})", path)
        return lift

    def summary(self) -> dict:
        return {"components": self.components, "explained": round(self.explained, 4), "r2": round(self.r2, 4)}


@dataclass
class ClipSums:
    """Running sums over one clip's W+ chunks, about the clip's mean over time: the spread of its codes
    and of their layer means (how much motion the mean keeps) and, with ``cross``, the cross sum the
    lift's fit needs. The codes themselves are not kept."""

    cross: bool = True
    n: int = 0
    num_ws: int = 1
    w1: Any = 0.0      # sum of the codes [num_ws, w_dim]
    w2: float = 0.0    # sum of their squares
    m1: Any = 0.0      # sum of the layer means [w_dim]
    m2: float = 0.0    # sum of their squares
    mw: Any = 0.0      # sum over frames of layer mean (x) code [w_dim, num_ws, w_dim] (``cross`` only)

    def add(self, w: np.ndarray) -> None:
        """One chunk of W+ codes [n, num_ws, w_dim]."""
        w = np.asarray(w, np.float64)
        m = w.mean(axis=1)
        self.n, self.num_ws = self.n + len(w), int(w.shape[1])
        self.w1, self.w2 = self.w1 + w.sum(axis=0), self.w2 + float(np.square(w).sum())
        self.m1, self.m2 = self.m1 + m.sum(axis=0), self.m2 + float(np.square(m).sum())
        if self.cross:
            self.mw = self.mw + np.einsum("td,tlk->dlk", m, w)

    def deviations(self) -> tuple[float, float]:
        """sum_t ||w_t - mean w||^2 and num_ws * sum_t ||m_t - mean m||^2; (0, 0) for an empty clip."""
        if self.n == 0:
            return 0.0, 0.0
        full = self.w2 - float(np.square(self.w1).sum()) / self.n
        return full, self.num_ws * (self.m2 - float(np.square(self.m1).sum()) / self.n)

    def take_cross(self) -> Any:
        """sum_t (m_t - mean m) (x) (w_t - mean w) [w_dim, num_ws, w_dim] of the clip (0.0 where it has no
        frames), freeing the running sum: one clip's is 29 MB at 256 px, so a store's clips are summed
        one at a time."""
        out = self.mw - np.einsum("d,lk->dlk", self.m1, self.w1) / self.n if self.n and self.cross else 0.0
        self.mw = 0.0
        return out


def fit_layer_lift(means: Sequence[np.ndarray], sums: Sequence[ClipSums], cross: Any,
                   variance: float = LIFT_VARIANCE, max_components: int = LIFT_MAX_COMPONENTS) -> Optional[LayerLift]:
    """The lift of a W+ store from its clips' layer means [T, w_dim], their :class:`ClipSums` (same
    order) and the sum of their :meth:`ClipSums.take_cross`; None where nothing moves."""
    used = [(np.asarray(m, np.float64), s) for m, s in zip(means, sums) if s.n >= 2]
    if not used:
        return None
    centred = np.concatenate([m - m.mean(axis=0) for m, _ in used])             # [sum T, w_dim]
    _, sv, vt = np.linalg.svd(centred, full_matrices=False)
    energy = np.square(sv)
    if energy.sum() <= 0:
        return None
    share = np.cumsum(energy) / energy.sum()
    k = int(min(max_components, np.searchsorted(share, variance) + 1, int((energy > 1e-12 * energy[0]).sum())))
    P = vt[:k].T                                                                 # [w_dim, k]
    xd = np.einsum("dk,dlj->klj", P, np.asarray(cross, np.float64))             # X^T D [k, num_ws, w_dim]
    B = xd / energy[:k, None, None]                                              # X^T X = diag(energy)
    total = sum(s.deviations()[0] for _, s in used)
    fitted = float((np.square(xd).sum(axis=(1, 2)) / energy[:k]).sum())
    x = centred @ P                                                              # [sum T, k]
    ends = np.cumsum([len(m) for m, _ in used])[:-1]
    bound = np.max([np.abs(xc).max(axis=0) for xc in np.split(x, ends)], axis=0)  # [k], per clip
    return LayerLift(basis=P, coeffs=B, explained=float(share[k - 1]),
                     r2=fitted / total if total > 0 else 1.0, bound=bound)


def use_layer_lift(model: Any, on: bool | str) -> Optional[dict]:
    """Switch a loaded StyleInV model's layer lift on or off (``svgen sample/animate --layer-lift``:
    ``"auto"`` = on where the model has one) and return the settings JSON's record of it. It stays off
    where the model has none (a W store, the GRU); asking for it there explicitly warns."""
    mode = on if isinstance(on, str) else ("on" if on else "off")
    if mode not in LAYER_LIFT_MODES:
        raise SvgenError(f"--layer-lift must be auto, on or off, got {on!r}")
    if getattr(model, "layer_lift", None) is None:
        if mode == "on" and getattr(model, "model_name", None) == MODEL_NAME:
            warnings.warn("--layer-lift on: this StyleInV model has no layer lift (trained on a W store, or "
                          "before train-motion fitted one); its W codes are broadcast to every layer", stacklevel=2)
        return None
    model.lifted = mode != "off"
    return describe_layer_lift(model)


def describe_layer_lift(model: Any) -> Optional[dict]:
    """{"used": bool, components, explained, r2} of a StyleInV model's lift; None where it has none."""
    lift = getattr(model, "layer_lift", None)
    return None if lift is None else {"used": bool(getattr(model, "lifted", False)), **lift.summary()}
