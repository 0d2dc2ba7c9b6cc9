"""Latent trajectories rendered through the frozen generator: uint8 frames and mp4 files.

Used by ``svgen animate``/``sample`` (the pipeline) and by the motion trainers' preview videos."""
from __future__ import annotations

from typing import Any, Iterable, Iterator

import numpy as np
import torch

from svgen.utils.checks import check_finite
from svgen.utils.errors import PathLike


def to_uint8_hwc(img: torch.Tensor) -> np.ndarray:
    """[N, 3, H, W] in [-1, 1] -> uint8 [N, H, W, 3]."""
    x = (img.detach().float().clamp(-1, 1) + 1) * 127.5
    return x.round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


@torch.no_grad()
def render_frames(G: Any, ws: Any, batch: int = 8) -> Iterator[np.ndarray]:
    """Render trajectories ws [K, T, num_ws, w_dim] frame by frame, the K side by side:
    yields uint8 [H, K * W, 3] for t = 0 .. T-1, rendering ``batch`` frames at a time."""
    device = next(iter(G.parameters())).device
    ws = torch.as_tensor(np.asarray(ws) if not torch.is_tensor(ws) else ws, dtype=torch.float32)
    if ws.dim() == 3:
        ws = ws[None]
    k, t = ws.shape[:2]
    per = max(1, int(batch) // k) if k <= batch else 1
    for a in range(0, t, per):
        chunk = ws[:, a:a + per].to(device)                     # [K, n, num_ws, w_dim]
        n = chunk.shape[1]
        img = G.synthesis(chunk.reshape(k * n, *chunk.shape[2:]), noise_mode="const")
        frames = to_uint8_hwc(img).reshape(k, n, *img.shape[2:], 3)   # [K, n, H, W, 3]
        for j in range(n):
            yield np.concatenate(list(frames[:, j]), axis=1)


def write_rendered_video(G: Any, ws: Any, out: PathLike, fps: float, batch: int = 8) -> int:
    """Render ws [K, T, num_ws, w_dim] side by side into an mp4 (atomic); returns the frame count.
    Latents that are not finite are refused before anything is written."""
    check_finite(ws, "latents to render")
    return write_rendered_stream(G, [ws], out, fps, batch)


def write_rendered_stream(G: Any, blocks: Iterable[Any], out: PathLike, fps: float, batch: int = 8) -> int:
    """Render consecutive blocks [K, n, num_ws, w_dim] (or [n, num_ws, w_dim]) of a long video into an
    mp4 (atomic) as they come, so memory does not grow with its length; returns the frame count."""
    from svgen.preprocessing.video_io import VideoWriter

    with VideoWriter(out, fps) as writer:
        for ws in blocks:
            for frame in render_frames(G, ws, batch=batch):
                writer.write(frame)
        return writer.num_frames
