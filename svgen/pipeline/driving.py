"""``animate --driving``: a real video's motion, streamed through preprocessing and inversion.

The video is aligned into a temporary ``aligned.zip`` (on disk), its longest face segment inverted
16 frames at a time into a temporary raw float32 file, and the offset trick's PCA fitted and applied
reading that file back chunk by chunk, so memory does not grow with the video's length.

With a landmark backend, the same pass measures dlib's mouth aspect ratio (MAR) of every aligned driving
frame (one float a frame): ``animate`` can then take the mouth from the driving frames themselves
(:func:`svgen.inversion.mouth.retarget_mouth`), which the encoder of a single-actor generator mostly loses
for another person's face."""
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

    def __init__(self, path: Path, num_frames: int, fps: float, num_ws: int, w_dim: int,
                 mar: Optional[np.ndarray] = None):
        self.path, self.num_frames, self.fps = path, int(num_frames), float(fps)
        self.frame_shape = (int(num_ws), int(w_dim))
        self.mar_found = None if mar is None else float(np.isfinite(mar).mean())   # share of frames measured
        self.mar = None if mar is None else _filled(mar)     # [num_frames] MAR of the driving frames, or None

    def chunks(self, frames: Optional[int] = None, chunk: int = 256) -> Iterator[np.ndarray]:
        """float32 [n, num_ws, w_dim] for frames 0 .. ``frames`` - 1 (default all), ``chunk`` at a time."""
        total = self.num_frames if frames is None else min(int(frames), self.num_frames)
        per = int(np.prod(self.frame_shape))
        with open(self.path, "rb") as fh:
            for a in range(0, total, chunk):
                n = min(chunk, total - a)
                yield np.fromfile(fh, np.float32, count=n * per).reshape(n, *self.frame_shape)


def _filled(x: np.ndarray) -> Optional[np.ndarray]:
    """NaN gaps linearly interpolated (edges held); None when no value is finite."""
    x = np.asarray(x, np.float64)
    ok = np.isfinite(x)
    if not ok.any():
        return None
    t = np.arange(len(x))
    return np.interp(t, t[ok], x[ok])


def invert_driving(path: PathLike, G: Any, E: Any, workdir: PathLike, size: int, landmarks: str,
                   refine_steps: int, max_frames: Optional[int], mouth_backend: Any = None) -> DrivingLatents:
    """Preprocess ``path`` into ``workdir`` and invert its longest continuous face segment; with
    ``mouth_backend`` (a landmark backend) also measure the MAR of its aligned frames."""
    from svgen.metrics.landmark_motion import LandmarkMotionConfig, face_tracker, landmark_features, track_landmarks

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
        tracker = face_tracker(mouth_backend) if mouth_backend is not None else None
        min_side = LandmarkMotionConfig().min_side      # as the landmark-motion metric measures the frames
        prev, batch, start, mar = None, [], 0, []

        def measure(frames: list) -> None:              # one face track across the batches
            if tracker is not None:
                mar.append(landmark_features(track_landmarks(frames, min_side=min_side, tracker=tracker))[:, 0])

        with open(raw, "wb") as fh:
            for frame in ds.iter_clip(clip):
                batch.append(frame)
                if len(batch) == INVERT_BATCH:
                    prev = _invert(inv, batch, prev, start, G.num_ws, fh)
                    measure(batch)
                    start, batch = start + len(batch), []
            if batch:
                _invert(inv, batch, prev, start, G.num_ws, fh)
                measure(batch)
        return DrivingLatents(raw, ds.clips[clip].num_frames, ds.clips[clip].fps, G.num_ws, G.w_dim,
                              mar=np.concatenate(mar) if tracker is not None else None)
    finally:
        ds.close()


def _invert(inv: ChunkInverter, batch: list, prev: Any, start: int, num_ws: int, fh: Any) -> Any:
    w = inv(np.stack(batch), prev, key=f"images:{start}")
    fh.write(broadcast_ws(w, num_ws).cpu().numpy().astype(np.float32).tobytes())
    return w[-1]
