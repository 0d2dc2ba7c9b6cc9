"""``animate --driving``: a real video's motion, streamed through preprocessing and inversion.

The video is aligned into a temporary ``aligned.zip`` (on disk), its longest face segment inverted
16 frames at a time into a temporary raw float32 file, and the offset trick's PCA fitted and applied
reading that file back chunk by chunk, so memory does not grow with the video's length."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np

from svgen.inversion.api import ChunkInverter
from svgen.inversion.project import RefineConfig, broadcast_ws
from svgen.preprocessing.dataset import AlignedDataset
from svgen.preprocessing.videos import preprocess_videos
from svgen.utils.errors import PathLike, SvgenError

INVERT_BATCH = 16        # frames per encoder pass (as invert_images: the same batches, the same latents)


class DrivingLatents:
    """The inverted W+ trajectory of a driving video, kept in ``workdir`` and read back in chunks."""

    def __init__(self, path: Path, num_frames: int, fps: float, num_ws: int, w_dim: int):
        self.path, self.num_frames, self.fps = path, int(num_frames), float(fps)
        self.frame_shape = (int(num_ws), int(w_dim))

    def chunks(self, frames: Optional[int] = None, chunk: int = 256) -> Iterator[np.ndarray]:
        """float32 [n, num_ws, w_dim] for frames 0 .. ``frames`` - 1 (default all), ``chunk`` at a time."""
        total = self.num_frames if frames is None else min(int(frames), self.num_frames)
        per = int(np.prod(self.frame_shape))
        with open(self.path, "rb") as fh:
            for a in range(0, total, chunk):
                n = min(chunk, total - a)
                yield np.fromfile(fh, np.float32, count=n * per).reshape(n, *self.frame_shape)


def invert_driving(path: PathLike, G: Any, E: Any, workdir: PathLike, size: int, landmarks: str,
                   refine_steps: int, max_frames: Optional[int]) -> DrivingLatents:
    """Preprocess ``path`` into ``workdir`` and invert its longest continuous face segment."""
    workdir = Path(workdir)
    aligned = workdir / "aligned.zip"
    preprocess_videos([path], aligned, size=size, landmarks=landmarks, max_frames=max_frames, show_progress=False)
    raw = workdir / "driving_latents.f32"
    ds = AlignedDataset(aligned)
    try:
        if not ds.clips:
            raise SvgenError("no face found in the driving video", path)
        clip = max(ds.clips, key=lambda c: ds.clips[c].num_frames)     # the longest face segment drives
        inv = ChunkInverter(G, E, RefineConfig(steps=int(refine_steps), temporal_weight=0.0), None, 0)
        prev, batch, start = None, [], 0
        with open(raw, "wb") as fh:
            for frame in ds.iter_clip(clip):
                batch.append(frame)
                if len(batch) == INVERT_BATCH:
                    prev = _invert(inv, batch, prev, start, G.num_ws, fh)
                    start, batch = start + len(batch), []
            if batch:
                _invert(inv, batch, prev, start, G.num_ws, fh)
        return DrivingLatents(raw, ds.clips[clip].num_frames, ds.clips[clip].fps, G.num_ws, G.w_dim)
    finally:
        ds.close()


def _invert(inv: ChunkInverter, batch: list, prev: Any, start: int, num_ws: int, fh: Any) -> Any:
    w = inv(np.stack(batch), prev, key=f"images:{start}")
    fh.write(broadcast_ws(w, num_ws).cpu().numpy().astype(np.float32).tobytes())
    return w[-1]
