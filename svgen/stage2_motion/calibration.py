"""Motion spread calibration: give a trained motion model's samples the training clips' spread of
motion along each leading principal direction of the latents.

A GAN's samples are often under-dispersed (mode-seeking): on the demo the GRU's 100-frame samples
move 0.2-0.9x as much as the training clips along every leading PCA component, so the mouth of an
animation opens half as wide as the actor's. Calibration measures, per component k of a PCA basis
of the training latents (rows V_k, orthonormal), the temporal spread

    sigma_k = RMS over windows of std_t( V_k . (w_t - mean) )          windows of ``window`` frames

of the training store and of the model's samples, and rescales every sampled trajectory about its
first frame w_0 (so a trajectory still starts where the model put it, and streamed chunks need no
look-ahead):

    w'_t = w_t + sum_k (g_k - 1) V_k^T V_k (w_t - w_0),   g_k = clip(sigma_k^store / sigma_k^model, 1/max_gain, max_gain)

Directions outside the basis, and the identity offset the animation adds later, are untouched.
The gains are fitted once after training and stored in the motion checkpoint (``"calibration"``);
``svgen animate/sample --calibration on`` applies them (off by default: on the demo the calibrated
GRU's samples move the mouth 0.8x of the clip's instead of about 0.5x, but through the pivotal-tuned
generator a face is then missed in some frames).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Optional

import numpy as np
import torch

from svgen.stage2_motion.offset import PCABasis


@dataclass
class MotionCalibration:
    """Per-component gains about the first frame (see the module docstring)."""

    components: np.ndarray     # [k, num_ws * w_dim], orthonormal rows
    gain: np.ndarray           # [k]
    store_std: np.ndarray      # [k] sigma of the training windows
    sample_std: np.ndarray     # [k] sigma of the model's samples before calibration
    window: int
    max_gain: float

    @property
    def k(self) -> int:
        return int(self.components.shape[0])

    def apply(self, w: torch.Tensor, first: torch.Tensor) -> torch.Tensor:
        """w [..., n, num_ws, w_dim], first [..., num_ws, w_dim] (the trajectory's frame 0) -> calibrated w."""
        shape = w.shape
        V = torch.as_tensor(self.components, dtype=torch.float64, device=w.device)     # [k, D]
        g = torch.as_tensor(self.gain, dtype=torch.float64, device=w.device)           # [k]
        x = (w - first.unsqueeze(-3)).reshape(*shape[:-2], -1).double()                # [..., n, D]
        x = x + ((x @ V.T) * (g - 1.0)) @ V
        return (first.unsqueeze(-3).double() + x.reshape(shape)).to(w.dtype)

    def apply_stream(self, chunks: Iterable[torch.Tensor]) -> Iterator[torch.Tensor]:
        """Calibrate a stream of consecutive chunks [num, n, num_ws, w_dim] (frame 0 read from the first)."""
        first = None
        for c in chunks:
            if first is None:
                first = c[:, 0].clone()
            yield self.apply(c, first)

    def summary(self, leading: int = 8) -> dict:
        """What the settings JSON and the checkpoint's meta record."""
        n = min(leading, self.k)
        return {"components": self.k, "window": int(self.window), "max_gain": float(self.max_gain),
                "gain_leading": [round(float(x), 3) for x in self.gain[:n]],
                "sample_over_store_leading": [round(float(s / max(t, 1e-12)), 3)
                                              for s, t in zip(self.sample_std[:n], self.store_std[:n])]}

    def to_dict(self) -> dict:
        """Tensors and numbers for a ``torch.load(weights_only=True)`` checkpoint."""
        t = lambda a: torch.from_numpy(np.asarray(a, np.float32))  # noqa: E731
        return {"components": t(self.components), "gain": t(self.gain),
                "store_std": t(self.store_std), "sample_std": t(self.sample_std),
                "window": int(self.window), "max_gain": float(self.max_gain)}

    @classmethod
    def from_dict(cls, d: dict) -> "MotionCalibration":
        a = lambda x: np.asarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x, np.float64)  # noqa: E731
        return cls(components=a(d["components"]), gain=a(d["gain"]),
                   store_std=a(d["store_std"]), sample_std=a(d["sample_std"]), window=int(d["window"]),
                   max_gain=float(d["max_gain"]))


def temporal_spread(windows: Iterable[np.ndarray], basis: PCABasis, k: int) -> np.ndarray:
    """sigma [k]: RMS over windows [T, num_ws, w_dim] of each component's std over time."""
    V = np.asarray(basis.components[:k], np.float64)
    acc, n = np.zeros(k), 0
    for w in windows:
        x = np.asarray(w, np.float64).reshape(len(w), -1) - basis.mean
        acc += np.square((x @ V.T).std(0))
        n += 1
    if n == 0:
        raise ValueError("no windows to measure the spread of")
    return np.sqrt(acc / n)


def fit_calibration(sample: Callable[[int, int, int], torch.Tensor], store_windows: Iterable[np.ndarray],
                    basis: PCABasis, *, window: int, num: int = 32, seed: int = 0,
                    components: Optional[int] = None, max_gain: float = 3.0) -> MotionCalibration:
    """Fit the gains: ``sample(num, frames, seed)`` -> W+ [num, frames, num_ws, w_dim] draws the model's
    trajectories, ``store_windows`` yields the training windows [window, num_ws, w_dim]."""
    if max_gain < 1.0:
        raise ValueError(f"max_gain must be >= 1, got {max_gain}")
    k = min(int(components or basis.k), basis.k)
    store = temporal_spread(store_windows, basis, k)
    drawn = sample(num, window, seed).detach().cpu().numpy()
    model = temporal_spread(iter(drawn), basis, k)
    gain = np.clip(store / np.maximum(model, 1e-12), 1.0 / max_gain, max_gain)
    return MotionCalibration(components=np.asarray(basis.components[:k], np.float64), gain=gain,
                             store_std=store, sample_std=model, window=int(window), max_gain=float(max_gain))


def calibrate_from_store(sample: Callable[[int, int, int], torch.Tensor], store, basis: PCABasis, *,
                         window: int = 100, num: int = 32, seed: int = 0,
                         max_gain: float = 3.0) -> MotionCalibration:
    """:func:`fit_calibration` against a ``LatentStore``: windows of ``window`` frames (capped at the
    longest clip), half-overlapping, from every clip that long."""
    longest = max(store.num_frames(c) for c in store.clips)
    window = max(2, min(int(window), longest))
    windows = (w for _, _, w in store.iter_windows(window, stride=max(1, window // 2), as_wplus=True))
    return fit_calibration(sample, windows, basis, window=window, num=num, seed=seed, max_gain=max_gain)


def describe_calibration(model) -> dict:
    """The settings JSON's record of a loaded motion model's calibration."""
    cal = getattr(model, "calibration", None)
    if cal is None:
        return {"applied": False, "reason": "the checkpoint has none"}
    return {"applied": bool(model.calibrated), **cal.summary()}


def use_calibration(model, on: bool) -> dict:
    """Switch a loaded motion model's calibration on or off (it stays off where the checkpoint has
    none); returns the settings JSON's record of it."""
    if getattr(model, "calibration", None) is not None:
        model.calibrated = bool(on)
    return describe_calibration(model)
