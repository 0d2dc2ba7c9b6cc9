"""The GRU inference wrapper (what ``load_motion`` returns for ``"model": "gru"``): the EMA generator,
sampling at the training frame rate, resampling to other rates, and the offset trick onto a new
identity."""
from __future__ import annotations

from typing import Any, Iterable, Iterator, Optional, Sequence

import numpy as np
import torch

from svgen.stage2_motion.calibration import MotionCalibration, describe_calibration
from svgen.stage2_motion.gru.model import GRUMotionConfig, MotionGenerator
from svgen.stage2_motion.offset import PCABasis, offset_for
from svgen.utils.config import config_from_dict
from svgen.utils.errors import SvgenError


class GRUMotion:
    """A trained GRU motion model as ``load_motion`` returns it (the EMA generator + offset-trick PCA).

    ``sample`` gives trajectories of the training actor; ``animate_latents`` transfers a sampled
    trajectory to a new identity with the offset trick. Both apply the checkpoint's spread
    calibration (``stage2_motion/calibration.py``) while ``calibrated`` is True (off by default:
    ``svgen animate/sample --calibration on``).
    """

    model_name = "gru"

    def __init__(self, G: MotionGenerator, pca: PCABasis, *, generator_sha256: str = "",
                 generator_path: Optional[str] = None, encoder_path: Optional[str] = None,
                 train_fps: float = 25.0, path: Optional[str] = None, config: Optional[dict] = None,
                 calibration: Optional[MotionCalibration] = None):
        self.G = G.eval().requires_grad_(False)
        self.calibration = calibration
        self.calibrated = False
        self.pca = pca
        self.generator_sha256 = generator_sha256
        self.generator_path = generator_path
        self.encoder_path = encoder_path
        self.train_fps = float(train_fps)
        self.path = path
        self.config = config or {}
        self.num_ws = G.cfg.num_ws
        self.w_dim = G.cfg.w_dim
        self.window = G.cfg.window

    @property
    def device(self) -> torch.device:
        return self.G.A.device

    def attach_generator(self, G: torch.nn.Module) -> None:
        """The GRU never renders: its latents need no generator (MotionModel protocol)."""

    @classmethod
    def from_checkpoint(cls, ckpt: dict, path: Any = None, device: Any = "cpu") -> "GRUMotion":
        """Build from a ``motion.pt`` dict (EMA weights)."""
        try:
            model_cfg = config_from_dict(GRUMotionConfig, ckpt["config"]["model"])
            G = MotionGenerator(model_cfg)
            G.load_state_dict(ckpt["ema"])
            pca = PCABasis.from_dict(ckpt["pca"])
            cal = MotionCalibration.from_dict(ckpt["calibration"]) if ckpt.get("calibration") else None
        except (KeyError, RuntimeError, TypeError, ValueError) as exc:
            msg = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
            raise SvgenError(f"broken GRU motion checkpoint ({msg})", path) from None
        return cls(G.to(torch.device(device)), pca, generator_sha256=str(ckpt.get("generator_sha256") or ""),
                   generator_path=ckpt.get("generator_path"), encoder_path=ckpt.get("encoder_path"),
                   train_fps=float(ckpt.get("train_fps", 25.0)), path=None if path is None else str(path),
                   config=ckpt["config"], calibration=cal)

    def sample(self, num: int, frames: int, seed: int = 0, chunk: int = 256, **_: Any) -> torch.Tensor:
        """``num`` W+ trajectories [num, frames, num_ws, w_dim] at the training frame rate."""
        return torch.cat(list(self.sample_chunks(num, frames, seed=seed, chunk=chunk)), dim=1)

    def sample_chunks(self, num: int, frames: int, seed: int = 0, chunk: int = 256) -> Iterator[torch.Tensor]:
        """:meth:`sample` chunk by chunk ([num, n, num_ws, w_dim]; the GRU memory carried across)."""
        chunks = self.G.iter_sample(num, frames, seed=seed, chunk=chunk)
        if self.calibrated and self.calibration is not None:
            chunks = self.calibration.apply_stream(chunks)
        return chunks

    def animate_latents(self, w_identity: Any, frames: int, fps: Optional[float] = None, seed: int = 0,
                        **kw: Any) -> np.ndarray:
        """:meth:`animate_chunks` gathered into one array float32 [frames, num_ws, w_dim]."""
        return np.concatenate(list(self.animate_chunks(w_identity, frames, fps, seed, **kw)))

    def animate_chunks(self, w_identity: Any, frames: int, fps: Optional[float] = None, seed: int = 0,
                       offset: str = "pca", components: Optional[int] = None,
                       layers: Optional[Sequence[int]] = None, strength: float = 1.0,
                       info: Optional[dict] = None, slowmo: float = 1.0, chunk: int = 256,
                       **_: Any) -> Iterator[np.ndarray]:
        """Sampled motion moved onto ``w_identity`` [num_ws, w_dim] by the offset trick, chunk by chunk
        (float32 [n, num_ws, w_dim] for consecutive frames; memory bounded by a chunk).

        The GRU runs at the training frame rate; for another ``fps`` (or a ``slowmo`` factor) it is
        unrolled for the covered duration and linearly resampled, so motion keeps its real-time
        speed. The offset is computed once from the first frame and added to every chunk. ``info``
        (a dict) receives what was done (offset, native frames) for the settings JSON.
        """
        fps = float(fps or self.train_fps)
        native = max(1, int(round((frames - 1) * self.train_fps / fps / float(slowmo or 1.0))) + 1)
        trajs = (w[0].cpu().numpy().astype(np.float64) for w in self.sample_chunks(1, native, seed=seed, chunk=chunk))
        if native != frames:
            trajs = resample_stream(trajs, native, frames, chunk)
        delta = None
        for traj in trajs:
            if delta is None:
                delta, off = offset_for(traj[0], w_identity, self.pca, mode=offset, components=components,
                                        layers=layers, strength=strength)
                if info is not None:
                    info.update(offset=off, native_frames=native, train_fps=self.train_fps, fps=fps,
                                slowmo=float(slowmo), calibration=describe_calibration(self))
            yield (traj + delta[None]).astype(np.float32)


def resample_trajectory(traj: np.ndarray, frames: int) -> np.ndarray:
    """Linear resampling of [T, ...] onto ``frames`` evenly spaced positions covering the same span."""
    traj = np.asarray(traj)
    if len(traj) == frames:
        return traj
    if len(traj) == 1:
        return np.repeat(traj, frames, axis=0)
    pos = np.linspace(0.0, len(traj) - 1, frames)
    lo = np.floor(pos).astype(int).clip(0, len(traj) - 2)
    a = (pos - lo).reshape((-1,) + (1,) * (traj.ndim - 1))
    return (1 - a) * traj[lo] + a * traj[lo + 1]


def resample_stream(chunks: Iterable[np.ndarray], native: int, frames: int, chunk: int = 256) -> Iterator[np.ndarray]:
    """:func:`resample_trajectory` of a trajectory [native, ...] given as consecutive chunks: the same
    values, ``chunk`` output frames at a time, holding only the native frames they lie between."""
    it = iter(chunks)
    if native == 1:
        first = next(it)[:1]
        for a in range(0, frames, chunk):
            yield np.repeat(first, min(chunk, frames - a), axis=0)
        return
    pos = np.linspace(0.0, native - 1, frames)                  # as resample_trajectory: same positions
    lo = np.floor(pos).astype(int).clip(0, native - 2)
    buf, start = None, 0                                        # buf[0] is native frame ``start``
    for a in range(0, frames, chunk):
        b = min(frames, a + chunk)
        while buf is None or start + len(buf) < lo[b - 1] + 2:
            nxt = next(it)
            buf = nxt if buf is None else np.concatenate([buf, nxt])
        idx = lo[a:b] - start
        w = (pos[a:b] - lo[a:b]).reshape((-1,) + (1,) * (buf.ndim - 1))
        yield (1 - w) * buf[idx] + w * buf[idx + 1]
        if b < frames and lo[b] > start:
            buf, start = buf[lo[b] - start:], int(lo[b])
