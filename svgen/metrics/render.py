"""Fake videos for the pixel metrics: motion-model latents rendered by the frozen generator.

Every metric that needs generated frames (FVD, FID, ACD) takes a *video source*: an object with
``videos(num, frame_indices, seed) -> uint8 [num, T, 3, H, W]`` and ``describe() -> dict``. The
motion model is autoregressive (GRU), so latents for all frames up to the last index are sampled
and only the requested frames are rendered. Batches are seeded with :func:`batch_seed`, so a run
is reproducible and batches of different runs never share a seed by accident.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from svgen.metrics.detectors import to_uint8


def batch_seed(seed: int, index: int) -> int:
    """Independent 31-bit seed for batch ``index`` of a run seeded with ``seed``."""
    return int(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(index)]).generate_state(1)[0] >> 1)


class MotionVideoSource:
    """``motion.sample(num, frames, seed)`` -> W+ trajectories -> ``G.synthesis(ws, noise_mode="const")``."""

    def __init__(self, motion: Any, generator: Any, device: Any = "cpu", render_batch: int = 16):
        self.motion = motion
        self.G = generator
        self.device = torch.device(device)
        self.render_batch = int(render_batch)
        self.resolution = int(getattr(generator, "img_resolution", 0))

    @torch.no_grad()
    def latents(self, num: int, frames: int, seed: int) -> torch.Tensor:
        """[num, frames, num_ws, w_dim] from the motion model."""
        ws = self.motion.sample(num, frames, seed=seed)
        return torch.as_tensor(ws, dtype=torch.float32)

    @torch.no_grad()
    def render(self, ws: torch.Tensor) -> torch.Tensor:
        """ws [K, num_ws, w_dim] -> uint8 frames [K, 3, H, W], ``render_batch`` at a time."""
        out = []
        for i in range(0, ws.shape[0], self.render_batch):
            img = self.G.synthesis(ws[i:i + self.render_batch].to(self.device), noise_mode="const")
            out.append(to_uint8(img).cpu())
        return torch.cat(out)

    @torch.no_grad()
    def videos(self, num: int, frame_indices: Sequence[int], seed: int) -> torch.Tensor:
        """uint8 [num, T, 3, H, W]: frames ``frame_indices`` (from t=0) of ``num`` new videos."""
        idx = torch.as_tensor(list(frame_indices), dtype=torch.long)
        ws = self.latents(num, int(idx.max()) + 1, seed)[:, idx]          # [num, T, num_ws, w_dim]
        frames = self.render(ws.reshape(-1, *ws.shape[2:]))                # [num*T, 3, H, W]
        return frames.reshape(num, len(idx), *frames.shape[1:])

    def describe(self) -> dict:
        return {"kind": "motion+generator", "noise_mode": "const", "resolution": self.resolution,
                "model": getattr(self.motion, "model_name", type(self.motion).__name__),
                "seeding": "batch b uses motion.sample(..., seed=SeedSequence([seed, b]))"}
