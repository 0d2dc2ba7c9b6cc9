"""Fréchet Video Distance with StyleGAN-V's protocol (FVD16, FVD128, 128 frames subsampled by 8).

Protocol (StyleGAN-V ``src/metrics/frechet_video_distance.py`` + ``metric_main.py``, see
``reference/styleinv_stylegan_v.md`` §3.4), reproduced exactly:

- real clips: videos shorter than ``frames * stride`` are discarded; **one clip per video** at a
  random offset ``o ~ U{0 .. n - frames*stride + stride - 1}``, frames ``o + stride * k``; the first
  ``min(#videos, 2048)`` videos in dataset order; no flips. When fewer than 2048 videos qualify,
  fewer real clips are used (nothing is repeated) -- the report says how many (StyleGAN-V #37);
- fake clips: 2048 new videos, frames ``stride * k`` from **t = 0**;
- uint8 frames straight into the I3D TorchScript detector (it rescales and resizes to 224);
  400-d pre-softmax features; 128 frames per detector batch;
- ``scipy.linalg.sqrtm`` Fréchet distance (``--sqrt svd`` selects StyleInV's SVD form; recorded).

Our datasets often hold one long talking-head clip rather than thousands of short videos; for those
``real_sampling="windows"`` draws random windows across all clips instead (StyleVideoGAN's
setting) and is recorded as a deviation from the StyleGAN-V protocol.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping, Optional

import numpy as np
import torch

from svgen.metrics.detectors import Detector
from svgen.metrics.frechet import RunningGaussian, StatsCache, cached_real_stats, frechet_from_running
from svgen.metrics.render import batch_seed
from svgen.utils.progress import progress

FRAMES_PER_DETECTOR_BATCH = 128
REAL_SAMPLINGS = ("per-video", "windows")


@dataclass(frozen=True)
class FVDProtocol:
    """One FVD variant: clip length, temporal stride and clip counts."""

    name: str
    num_frames: int
    stride: int
    stylegan_v_name: str
    max_real: int = 2048
    num_fake: int = 2048

    @property
    def span(self) -> int:
        """Frames a clip covers in the source video."""
        return self.num_frames * self.stride


PROTOCOLS = {
    "fvd16": FVDProtocol("fvd16", 16, 1, "fvd2048_16f"),
    "fvd128": FVDProtocol("fvd128", 128, 1, "fvd2048_128f"),
    "fvd128_sub8": FVDProtocol("fvd128_sub8", 16, 8, "fvd2048_128f_subsample8f"),
}


def plan_real_clips(clip_lengths: Mapping[str, int], num_frames: int, stride: int, max_real: int = 2048,
                    seed: int = 0, sampling: str = "per-video") -> tuple[list, dict]:
    """Which real frames to use: [(clip, frame indices [num_frames])] and counts for the report."""
    if sampling not in REAL_SAMPLINGS:
        raise ValueError(f"unknown real sampling {sampling!r} (use {' or '.join(REAL_SAMPLINGS)})")
    span = num_frames * stride
    rng = np.random.default_rng(seed)
    names = list(clip_lengths)
    eligible = [c for c in names if int(clip_lengths[c]) >= span]
    steps = np.arange(num_frames) * stride
    plan = []
    if sampling == "per-video":
        for c in eligible[:max_real]:
            offset = int(rng.integers(0, int(clip_lengths[c]) - span + stride))
            plan.append((c, offset + steps))
    else:
        starts = [(c, o) for c in eligible for o in range(int(clip_lengths[c]) - span + stride)]
        if starts:
            picks = rng.choice(len(starts), size=min(max_real, len(starts)), replace=False)
            plan = [(starts[i][0], starts[i][1] + steps) for i in sorted(picks)]
    info = {"real_sampling": sampling, "num_real_videos_total": len(names),
            "num_real_videos_eligible": len(eligible), "num_real_videos_too_short": len(names) - len(eligible),
            "num_real_clips_requested": int(max_real), "num_real_clips_used": len(plan),
            "real_offsets": f"numpy default_rng({seed}) uniform integer offsets"}
    return plan, info


def _detector_batch(num_frames: int) -> int:
    return max(1, FRAMES_PER_DETECTOR_BATCH // num_frames)


def real_video_stats(dataset: Any, plan: list, detector: Detector, batch: Optional[int] = None) -> RunningGaussian:
    """Stream I3D features of the planned real clips of an :class:`AlignedDataset`."""
    stats = RunningGaussian(detector.spec.feature_dim)
    if not plan:
        return stats
    batch = batch or _detector_batch(len(plan[0][1]))
    bar = progress(total=len(plan), desc="fvd real clips", unit="clip")
    for i in range(0, len(plan), batch):
        clips = []
        for clip, idx in plan[i:i + batch]:
            frames = np.stack([dataset.read_frame(clip, int(j)) for j in idx])   # [T, H, W, 3] uint8
            clips.append(torch.from_numpy(frames).permute(3, 0, 1, 2))           # [3, T, H, W]
        stats.update(detector.features(torch.stack(clips)))
        bar.update(len(clips))
    bar.close()
    return stats


def fake_video_stats(source: Any, num_fake: int, num_frames: int, stride: int, detector: Detector,
                     seed: int = 0, batch: Optional[int] = None) -> RunningGaussian:
    """Stream I3D features of ``num_fake`` generated clips (frames ``stride*k`` from t=0)."""
    stats = RunningGaussian(detector.spec.feature_dim)
    batch = batch or _detector_batch(num_frames)
    frame_indices = list(range(0, num_frames * stride, stride))
    bar = progress(total=num_fake, desc="fvd fake clips", unit="clip")
    for b, start in enumerate(range(0, num_fake, batch)):
        n = min(batch, num_fake - start)
        vids = source.videos(n, frame_indices, seed=batch_seed(seed, b))   # [n, T, 3, H, W] uint8
        if vids.dtype != torch.uint8:
            raise ValueError(f"video source returned {vids.dtype}, expected uint8")
        stats.update(detector.features(vids.permute(0, 2, 1, 3, 4).contiguous()))
        bar.update(n)
    bar.close()
    return stats


def compute_fvd(protocol: FVDProtocol, dataset: Any, dataset_id: str, source: Any, detector: Detector, *,
                num_fake: Optional[int] = None, max_real: Optional[int] = None, seed: int = 0,
                real_sampling: str = "per-video", method: str = "sqrtm", cache: Optional[StatsCache] = None,
                batch: Optional[int] = None) -> dict:
    """FVD of ``source`` against ``dataset`` under ``protocol``: {"value", "protocol"}.

    ``dataset_id`` identifies the real data for the cache (the sha256 of ``aligned.zip``). The real
    statistics are cached keyed by dataset + everything in the protocol that changes them.
    """
    num_fake = protocol.num_fake if num_fake is None else int(num_fake)
    max_real = protocol.max_real if max_real is None else int(max_real)
    lengths = {c: info.num_frames for c, info in dataset.clips.items()}
    plan, counts = plan_real_clips(lengths, protocol.num_frames, protocol.stride, max_real, seed, real_sampling)
    if not plan:
        raise ValueError(f"no real clip has the {protocol.span} frames {protocol.name} needs "
                         f"(longest has {max(lengths.values())})")
    key = {"metric": "fvd", **asdict(protocol), "max_real": max_real, "real_sampling": real_sampling,
           "seed": seed, "detector_sha256": detector.sha256, "resolution": dataset.resolution, "cov_ddof": 0}
    for unused in ("name", "num_fake"):  # the label and the fake count do not change real statistics
        key.pop(unused)
    real, cache_use = cached_real_stats(cache, dataset_id, key,
                                        lambda: real_video_stats(dataset, plan, detector, batch),
                                        counts)
    fake = fake_video_stats(source, num_fake, protocol.num_frames, protocol.stride, detector, seed, batch)
    value = frechet_from_running(real, fake, method=method)
    record = {
        "metric": protocol.name, "stylegan_v_name": protocol.stylegan_v_name,
        "num_frames": protocol.num_frames, "stride": protocol.stride, "span": protocol.span,
        **counts, "num_fake_clips": fake.n, "fake_clips_start": "t=0", "xflip": False,
        "seed": seed, "sqrt_method": method, "cov_ddof": 0, "detector": detector.record(),
        "frames_per_detector_batch": (batch or _detector_batch(protocol.num_frames)) * protocol.num_frames,
        "real_resolution": dataset.resolution, "fake_source": source.describe(),
        "real_stats_cache": cache_use,
    }
    if counts["num_real_clips_used"] < max_real:
        record["warning"] = (f"only {counts['num_real_clips_used']} real clips (of {max_real} requested): "
                             f"{counts['num_real_videos_eligible']} of {counts['num_real_videos_total']} videos "
                             f"have {protocol.span} frames; values are not comparable to 2048-clip numbers")
    return {"value": value, "protocol": record}
