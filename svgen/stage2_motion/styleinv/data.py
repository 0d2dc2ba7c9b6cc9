"""FFA-ST sampling (StyleInV §3.4) and the real clips it draws from.

Every training clip is four time stamps ``[0, t1, t2, t3]`` in frames of a window of ``nframes``:
t0 = 0 (the first frame) plus ``num_sample`` sparse times ``{o, o + d, one random frame between}``
with span d a power of two in ``[num_sample - 1, min(window - 1, max_span)]`` and offset
``o ∈ [0, window - 1 - d]`` (continuous for the generator with ``fractional_t``, an integer for real
clips). Real clips are read from a random window of a random clip (chosen in proportion to its
length); frame 0 of the window is the clip's first frame.

Clips shorter than the window are handled, not crashed on (StyleGAN-V issue #8): the window is
clamped to the clip and so are the spans; clips with fewer than 3 frames cannot hold t0 plus a span
of 2 and are skipped (an error only if no clip is left). Fake time stamps are drawn with the same
window lengths as the real ones, so the time gaps the discriminator is conditioned on have the same
distribution for real and generated clips.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch

from svgen.utils.errors import PathLike, SvgenError
from svgen.stage2_motion.styleinv.layer_lift import ClipSums, LayerLift, fit_layer_lift


@dataclass
class SparseSamplingConfig:
    """StyleInV's ``RandomSampling``: 4 frames per clip, t = 0 prepended, spans 2 .. max_span."""

    num_sample: int = 3        # sparse frames besides t0
    max_span: int = 32         # 32 for faces (FFS/DFUF), 128 for slow motion (Sky/TaiChi)
    nframes: int = 128         # window length in frames
    fractional_t: bool = True  # continuous offsets for the generator

    @property
    def frames_per_clip(self) -> int:
        return self.num_sample + 1


def allowed_spans(window: int, max_span: int, num_sample: int = 3) -> list[int]:
    """Powers of two d with num_sample-1 <= d <= min(window-1, max_span)."""
    hi = min(int(window) - 1, int(max_span))
    spans, d = [], 1
    while d <= hi:
        if d >= num_sample - 1:
            spans.append(d)
        d *= 2
    return spans


def sparse_times(window: int, cfg: SparseSamplingConfig, fractional: bool,
                 generator: Optional[torch.Generator] = None) -> list[float]:
    """One clip's time stamps [0, t_1 .. t_num_sample] (frames, sorted) inside ``window`` frames."""
    spans = allowed_spans(window, cfg.max_span, cfg.num_sample)
    if not spans:
        raise ValueError(f"a window of {window} frames holds no span >= {cfg.num_sample - 1}")
    d = spans[int(torch.randint(len(spans), (1,), generator=generator))]
    room = window - 1 - d                                   # offsets 0 .. room
    if fractional:
        o = float(torch.rand((), generator=generator)) * room
    else:
        o = float(torch.randint(room + 1, (1,), generator=generator))
    inner = torch.randperm(d - 1, generator=generator)[:cfg.num_sample - 2] + 1  # distinct, in (0, d)
    rel = sorted([0.0, float(d)] + [float(i) for i in inner])
    return [0.0] + [o + r for r in rel]


class SparseClipSampler:
    """Draws real windows (clip, start, integer times) and generator time stamps.

    ``lengths``: number of frames of every real clip, in the order of ``names``.
    """

    def __init__(self, lengths: Sequence[int], cfg: SparseSamplingConfig,
                 names: Optional[Sequence[str]] = None, source: Optional[PathLike] = None):
        self.cfg = cfg
        self.names = list(names) if names is not None else [str(i) for i in range(len(lengths))]
        self.lengths = [int(n) for n in lengths]
        min_len = cfg.num_sample  # t0 + span 2 need 3 frames (for num_sample = 3)
        self.usable = [i for i, n in enumerate(self.lengths) if n >= max(3, min_len)]
        self.skipped = [self.names[i] for i, n in enumerate(self.lengths) if i not in self.usable]
        if not self.usable:
            raise SvgenError(f"every clip is shorter than {max(3, min_len)} frames; sparse training needs "
                             "a first frame plus a span of at least 2", source)
        self.windows = [min(cfg.nframes, self.lengths[i]) for i in self.usable]
        w = torch.tensor([float(self.lengths[i]) for i in self.usable])
        self.weights = w / w.sum()

    def _pick(self, batch: int, generator: Optional[torch.Generator]) -> torch.Tensor:
        return torch.multinomial(self.weights, batch, replacement=True, generator=generator)

    def sample_real(self, batch: int, generator: Optional[torch.Generator] = None
                    ) -> tuple[list[int], list[int], torch.Tensor]:
        """(clip indices, window starts, integer times [B, 4] relative to the window start)."""
        clips, starts, times = [], [], []
        for k in self._pick(batch, generator).tolist():
            c = self.usable[k]
            window = self.windows[k]
            start = int(torch.randint(self.lengths[c] - window + 1, (1,), generator=generator))
            clips.append(c)
            starts.append(start)
            times.append(sparse_times(window, self.cfg, fractional=False, generator=generator))
        return clips, starts, torch.tensor(times, dtype=torch.float32)

    def sample_fake_times(self, batch: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Generator time stamps [B, 4] (fractional offsets), window lengths as for real clips."""
        out = []
        for k in self._pick(batch, generator).tolist():
            out.append(sparse_times(self.windows[k], self.cfg, fractional=self.cfg.fractional_t,
                                    generator=generator))
        return torch.tensor(out, dtype=torch.float32)

    def sample_first_frames(self, batch: int, generator: Optional[torch.Generator] = None
                            ) -> tuple[list[int], list[int]]:
        """(clip, frame) of the first frame of random windows (the w0 of generated clips)."""
        clips, starts = [], []
        for k in self._pick(batch, generator).tolist():
            c = self.usable[k]
            clips.append(c)
            starts.append(int(torch.randint(self.lengths[c] - self.windows[k] + 1, (1,), generator=generator)))
        return clips, starts


MOTION_KEPT_WARN = 0.7   # below this share of a W+ store's motion, StyleInV training warns


class LayerMeanWarning(UserWarning):
    """A W+ store whose mean over layers loses much of its motion (StyleInV trains on that mean)."""


def _kept(spreads: Sequence[ClipSums]) -> float:
    """The share of motion the layer mean keeps over all clips (1.0 where nothing moved)."""
    devs = [s.deviations() for s in spreads]
    full, mean = sum(d[0] for d in devs), sum(d[1] for d in devs)
    return float(np.sqrt(max(mean, 0.0) / full)) if full > 0 else 1.0


def motion_kept_by_layer_mean(clips: Sequence[np.ndarray]) -> float:
    """How much of the motion of W+ clips [T, num_ws, w_dim] their mean over layers keeps:

        sqrt( sum_t num_ws * ||mean_l(w_t) - mean_t mean_l(w)||^2  /  sum_t ||w_t - mean_t(w)||^2 )

    summed over clips (each about its own mean over time). 1 when every layer moves alike, about
    1/sqrt(num_ws) when the layers move independently."""
    spreads = []
    for w in clips:
        spreads.append(ClipSums(cross=False))
        spreads[-1].add(w)
    return _kept(spreads)


class LatentClips:
    """The real latent clips of a ``latents.h5`` as W codes, one float32 array [T, w_dim] per clip.

    StyleInV works in W: a W store is used as is, a W+ store is reduced to the mean over layers.
    The reduction streams the store chunk by chunk (the W+ store is never held in memory).

    The mean over layers keeps only the part of the motion that is the same in every layer, so
    ``motion_kept`` records the fraction of the store's motion it keeps (1 for a W store; see
    :func:`motion_kept_by_layer_mean`): on the demo's W+ store 0.37, and the training clip rendered
    from those means moves its mouth 0.35x as much as from the W+ codes. ``layer_lift`` (a W+ store
    read with ``lift``) maps W motion back onto the layers as the store moves them
    (:mod:`svgen.stage2_motion.styleinv.layer_lift`); None for a W store.
    """

    def __init__(self, path: PathLike, chunk: int = 256, lift: bool = True):
        from svgen.inversion.latent_store import LatentStore

        self.path = path
        with LatentStore(path) as store:
            self.space, self.num_ws, self.w_dim = store.space, store.num_ws, store.w_dim
            self.generator_sha256 = store.generator_sha256
            self.encoder_sha256 = store.encoder_sha256
            self.names = list(store.clips)
            self.fps = {c: store.fps(c) for c in self.names}
            self.clips = []
            spreads, cross = [], 0.0
            for c in self.names:
                n = store.num_frames(c)
                parts = []
                spreads.append(ClipSums(cross=lift))
                for a in range(0, n, chunk):
                    w = store.read(c, a, min(n, a + chunk))
                    if w.ndim == 3:
                        spreads[-1].add(w)
                    parts.append(w.mean(axis=1) if w.ndim == 3 else w)
                cross = cross + spreads[-1].take_cross()
                arr = np.concatenate(parts).astype(np.float32) if parts else np.zeros((0, self.w_dim), np.float32)
                if not np.isfinite(arr).all():
                    raise SvgenError(f"clip {c!r} contains non-finite latents", path)
                self.clips.append(arr)
        self.lengths = [len(a) for a in self.clips]
        self.motion_kept = _kept(spreads)     # 1.0 for a W store (no W+ chunk was added)
        self.layer_lift: Optional[LayerLift] = (fit_layer_lift(self.clips, spreads, cross)
                                                if lift and self.space != "w" else None)

    @property
    def train_fps(self) -> float:
        """Frame rate of the training clips (the median over clips)."""
        return float(np.median([self.fps[c] for c in self.names])) if self.names else 25.0

    def gather(self, clips: Sequence[int], starts: Sequence[int], times: torch.Tensor) -> torch.Tensor:
        """W codes at integer ``times`` [B, F] of windows -> [B, F, w_dim]."""
        idx = times.round().long().numpy()
        out = np.stack([self.clips[c][s + idx[b]] for b, (c, s) in enumerate(zip(clips, starts))])
        return torch.from_numpy(out)

    def first_frames(self, clips: Sequence[int], starts: Sequence[int]) -> torch.Tensor:
        return torch.from_numpy(np.stack([self.clips[c][s] for c, s in zip(clips, starts)]))

    def all_codes(self, max_codes: int = 20000) -> np.ndarray:
        """Up to ``max_codes`` evenly spaced W codes of all clips (for statistics)."""
        allw = np.concatenate(self.clips)
        step = max(1, len(allw) // max_codes)
        return allw[::step]

    def windows(self, length: int, max_windows: int = 512, stride: Optional[int] = None) -> np.ndarray:
        """Consecutive real windows [N, length, w_dim] spread evenly over all clips (for metrics)."""
        starts = [(c, s) for c, n in enumerate(self.lengths) for s in range(0, n - length + 1)]
        if not starts:
            raise SvgenError(f"no clip has {length} frames for the latent Fréchet distance", self.path)
        if stride is None:
            stride = max(1, len(starts) // max_windows)
        picked = starts[::stride][:max_windows]
        return np.stack([self.clips[c][s:s + length] for c, s in picked])


class FrameClips:
    """Real frames of an ``aligned.zip`` for image mode: [B, F, 3, R, R] floats in [-1, 1]."""

    def __init__(self, path: PathLike, resolution: int):
        from svgen.preprocessing.dataset import AlignedDataset

        self.path = path
        self.ds = AlignedDataset(path)
        self.names = list(self.ds.clips)
        self.lengths = [self.ds.clips[c].num_frames for c in self.names]
        self.resolution = int(resolution)
        if self.ds.resolution != self.resolution:
            raise SvgenError(f"dataset frames are {self.ds.resolution} px but the generator renders "
                             f"{self.resolution} px", path)

    def gather(self, clips: Sequence[int], starts: Sequence[int], times: torch.Tensor) -> torch.Tensor:
        idx = times.round().long().tolist()
        batch = []
        for b, (c, s) in enumerate(zip(clips, starts)):
            frames = [self.ds.read_frame(self.names[c], s + i) for i in idx[b]]
            batch.append(np.stack(frames))
        x = torch.from_numpy(np.stack(batch)).permute(0, 1, 4, 2, 3).float()  # [B, F, 3, R, R]
        return x / 127.5 - 1.0
