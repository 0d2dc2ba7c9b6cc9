"""FID for video generators with StyleGAN-V's ``fid50k_full`` protocol (reference §3.5).

- real set: **every frame** of the dataset as an image set (no flips); ``max_real`` caps it with a
  seeded random subset (recorded);
- fake set: 50 000 frames taken from new videos of **16 frames** (t = 0..15), i.e. 3125 videos;
- uint8 images into the Inception-v3 TorchScript file of stylegan2-ada-pytorch (2048-d pool
  features; it resizes to 299 itself); Fréchet distance with ``scipy.linalg.sqrtm`` unless
  ``--sqrt svd`` (recorded).
"""
from __future__ import annotations

import math
from typing import Any, Optional

import numpy as np
import torch

from svgen.metrics.detectors import Detector
from svgen.metrics.frechet import RunningGaussian, StatsCache, cached_real_stats, frechet_from_running
from svgen.metrics.render import batch_seed
from svgen.utils.progress import progress

NUM_FAKE_FRAMES = 50_000
VIDEO_FRAMES = 16


def real_image_stats(dataset: Any, indices: np.ndarray, detector: Detector, batch: int = 64) -> RunningGaussian:
    """Stream Inception features of dataset frames ``indices`` (global frame indices)."""
    stats = RunningGaussian(detector.spec.feature_dim)
    bar = progress(total=len(indices), desc="fid real frames", unit="img")
    for i in range(0, len(indices), batch):
        imgs = np.stack([dataset[int(j)] for j in indices[i:i + batch]])      # [B, H, W, 3] uint8
        stats.update(detector.features(torch.from_numpy(imgs).permute(0, 3, 1, 2).contiguous()))
        bar.update(len(imgs))
    bar.close()
    return stats


def fake_image_stats(source: Any, num_frames: int, detector: Detector, video_frames: int = VIDEO_FRAMES,
                     seed: int = 0, batch: int = 64) -> RunningGaussian:
    """Inception features of the first ``num_frames`` frames of new ``video_frames``-frame videos."""
    stats = RunningGaussian(detector.spec.feature_dim)
    videos_per_batch = max(1, batch // video_frames)
    num_videos = math.ceil(num_frames / video_frames)
    left = num_frames
    bar = progress(total=num_frames, desc="fid fake frames", unit="img")
    for b, start in enumerate(range(0, num_videos, videos_per_batch)):
        n = min(videos_per_batch, num_videos - start)
        vids = source.videos(n, list(range(video_frames)), seed=batch_seed(seed, b))  # [n, T, 3, H, W]
        imgs = vids.reshape(-1, *vids.shape[2:])[:left]
        stats.update(detector.features(imgs.contiguous()))
        left -= imgs.shape[0]
        bar.update(imgs.shape[0])
    bar.close()
    return stats


def compute_fid(dataset: Any, dataset_id: str, source: Any, detector: Detector, *,
                num_fake_frames: int = NUM_FAKE_FRAMES, video_frames: int = VIDEO_FRAMES,
                max_real: Optional[int] = None, seed: int = 0, method: str = "sqrtm",
                cache: Optional[StatsCache] = None, batch: int = 64) -> dict:
    """FID of frames of ``source`` videos against the frames of ``dataset``: {"value", "protocol"}."""
    total = len(dataset)
    if max_real is None or max_real >= total:
        indices = np.arange(total)
        real_selection = "all frames"
    else:
        indices = np.sort(np.random.default_rng(seed).choice(total, size=int(max_real), replace=False))
        real_selection = f"{max_real} frames, numpy default_rng({seed}) without replacement"
    key = {"metric": "fid", "real_selection": real_selection, "num_real": int(len(indices)),
           "detector_sha256": detector.sha256, "resolution": dataset.resolution, "cov_ddof": 0}
    if max_real is not None and max_real < total:
        key["seed"] = seed
    real, cache_use = cached_real_stats(cache, dataset_id, key,
                                        lambda: real_image_stats(dataset, indices, detector, batch),
                                        {"num_real_frames": int(len(indices))})
    fake = fake_image_stats(source, num_fake_frames, detector, video_frames, seed, batch)
    value = frechet_from_running(real, fake, method=method)
    record = {
        "metric": "fid", "stylegan_v_name": "fid50k_full" if num_fake_frames == NUM_FAKE_FRAMES else None,
        "num_real_frames": real.n, "num_real_frames_total": total, "real_selection": real_selection,
        "num_fake_frames": fake.n, "fake_video_frames": video_frames,
        "num_fake_videos": math.ceil(num_fake_frames / video_frames), "fake_clips_start": "t=0",
        "xflip": False, "seed": seed, "sqrt_method": method, "cov_ddof": 0, "detector": detector.record(),
        "real_resolution": dataset.resolution, "fake_source": source.describe(),
        "real_stats_cache": cache_use,
    }
    return {"value": value, "protocol": record}
