"""What every motion model offers the pipeline (``animate``, ``sample``, ``evaluate``), and loading one.

``motion.pt`` (docs/FORMATS.md) is a plain dict with ``"format": "svgen-motion"`` and ``"model"``:
StyleVideoGAN's GRU (``gru.motion.GRUMotion``) or StyleInV (``styleinv.motion.StyleInVMotion``).
"""
from __future__ import annotations

from typing import Any, Iterator, Optional, Protocol, Sequence, runtime_checkable

import numpy as np
import torch

from svgen.utils.errors import PathLike, SvgenError
from svgen.utils.rundir import load_checkpoint

MOTION_FORMAT = "svgen-motion"
MOTION_VERSION = 1


@runtime_checkable
class MotionModel(Protocol):
    """A trained motion model in the W+ space of one frozen generator.

    ``pca`` is the offset trick's basis of the training latents (None when the model keeps none:
    StyleInV starts every video at the identity itself); ``latents_ref`` what it was trained on
    (motion.pt's record: the store's path, clips, hashes; set by :func:`load_motion`)."""

    model_name: str
    generator_sha256: str
    generator_path: Optional[str]
    encoder_path: Optional[str]
    num_ws: int
    w_dim: int
    train_fps: float
    pca: Any
    latents_ref: dict

    def attach_generator(self, G: torch.nn.Module) -> None:
        """Hand over the already loaded frozen generator (StyleInV renders its first frame with it)."""

    def sample(self, num: int, frames: int, seed: int = 0) -> torch.Tensor:
        """``num`` W+ trajectories [num, frames, num_ws, w_dim] at the training frame rate."""

    def sample_chunks(self, num: int, frames: int, seed: int = 0) -> Iterator[torch.Tensor]:
        """:meth:`sample` for consecutive frames, chunk by chunk ([num, n, num_ws, w_dim]): the same
        trajectories, in memory that does not grow with ``frames``."""

    def animate_latents(self, w_identity: Any, frames: int, fps: float, seed: int = 0, *,
                        offset: str = "pca", components: Optional[int] = None,
                        layers: Optional[Sequence[int]] = None, strength: float = 1.0,
                        info: Optional[dict] = None, slowmo: float = 1.0) -> np.ndarray:
        """Motion moved onto one identity latent [num_ws, w_dim]: float32 [frames, num_ws, w_dim]."""

    def animate_chunks(self, w_identity: Any, frames: int, fps: float, seed: int = 0, *,
                       offset: str = "pca", components: Optional[int] = None,
                       layers: Optional[Sequence[int]] = None, strength: float = 1.0,
                       info: Optional[dict] = None, slowmo: float = 1.0) -> Iterator[np.ndarray]:
        """:meth:`animate_latents` chunk by chunk (float32 [n, num_ws, w_dim] for consecutive frames)."""


def load_motion(path: PathLike, device: Any = "cpu") -> MotionModel:
    """Load a motion checkpoint and dispatch on its ``"model"`` (``gru`` | ``styleinv``)."""
    ckpt = load_checkpoint(path, expect_format=MOTION_FORMAT)
    model = ckpt.get("model")
    device = torch.device(device) if not isinstance(device, torch.device) else device
    if model == "gru":
        from svgen.stage2_motion.gru.motion import GRUMotion

        motion = GRUMotion.from_checkpoint(ckpt, path, device)
    elif model == "styleinv":
        from svgen.stage2_motion.styleinv.motion import StyleInVMotion

        motion = StyleInVMotion.from_checkpoint(ckpt, path, device)
    else:
        raise SvgenError(f"unknown motion model {model!r} (expected 'gru' or 'styleinv')", path)
    motion.latents_ref = dict(ckpt.get("latents_ref") or {})
    return motion
