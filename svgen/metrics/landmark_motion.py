"""Landmark motion: an interpretable, detector-free measure of how a face moves.

Per frame, dlib's 68 landmarks give four scale-free numbers:

- ``mar``: mouth aspect ratio, inner-lip opening over inner-mouth width (0 = lips closed);
- ``ear``: eye aspect ratio (Soukupová & Čech 2016), eyelid opening over eye width, both eyes;
- ``yaw``: horizontal asymmetry of the nose tip between the jaw ends, -1..1 (0 = facing the camera);
- ``pitch``: vertical position of the nose tip between the eye line and the chin, 0..1
  (larger = head lowered).

Per video: each feature's spread (std), its spectrum (dominant frequency, share of energy in the
slow / speech / jitter bands) and the blink rate. Between sets of videos: ``landmark_fd``, the
Fréchet distance between windows of these features (``window`` frames x 4 features, normalised
with the *real* set's per-feature mean and std, so the number does not depend on face size; each
window split into its motion around its own mean and that mean, each video centred on its own
mean so that the resting face shape of a new identity is not counted; see :func:`feature_windows`).

The Fréchet distance depends on the person and the clip, so it is only meaningful beside
references computed on the same real data (:func:`compare`): real vs real (first vs second
halves), a frozen first frame and a time-shuffled copy.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence, Union

import numpy as np

from svgen.utils.errors import PathLike, SvgenError

__all__ = ["FEATURES", "MEANINGS", "LandmarkMotionConfig", "TargetThresholds", "FeatureSeries",
           "landmark_features", "track_landmarks", "frames_features", "video_features", "dataset_features",
           "load_features", "video_stats", "detect_blinks", "feature_windows", "landmark_fd", "references", "compare",
           "motion_targets", "plot_features"]

FEATURES = ("mar", "ear", "yaw", "pitch")

MEANINGS = {
    "landmark_fd": "How different the generated face motion is from the real one (Fréchet distance of "
                   "16-frame landmark windows); lower is better, compare with the real-vs-real reference.",
    "ref_real_halves": "The same distance between two halves of the real videos: what real motion scores.",
    "ref_frozen": "The distance a frozen first frame scores: a result near it has no motion.",
    "ref_shuffled": "The distance real frames in random order score: right poses, wrong timing.",
    "mar_std": "How much the mouth opens and closes (spread of the mouth aspect ratio).",
    "ear_std": "How much the eyelids move (spread of the eye aspect ratio).",
    "yaw_std": "How much the head turns left and right.",
    "pitch_std": "How much the head nods up and down.",
    "mar_dominant_hz": "The mouth's main rhythm; speech is about 2-7 Hz.",
    "mar_speech_band": "Share of the mouth motion at speech rhythm (1-8 Hz) rather than slow drift or jitter.",
    "blinks_per_min": "Blinks per minute; people blink about 10-30 times a minute.",
    "face_detected": "Share of frames in which dlib found a face.",
    "mar_spread_ratio": "Mouth motion of the animation relative to the training video (target 0.5-2x).",
    "frozen": "True if the face barely moves compared with the training video.",
    "exploding": "True if the landmarks move far faster or wider than in the training video.",
}

# iBUG 300-W indices
_JAW_L, _JAW_R, _CHIN, _NOSE_TIP = 0, 16, 8, 30
_EYE_L, _EYE_R = slice(36, 42), slice(42, 48)
_INNER_MOUTH_PAIRS = ((61, 67), (62, 66), (63, 65))
_INNER_MOUTH_CORNERS = (60, 64)
_BANDS = (("slow", 0.0, 1.0), ("speech", 1.0, 8.0), ("jitter", 8.0, math.inf))


@dataclass
class LandmarkMotionConfig:
    """Window and detector settings of the landmark-motion metric."""

    window: int = 16            # frames per window of the Fréchet distance
    stride: int = 1             # step between windows
    method: str = "sqrtm"       # matrix square root of the Fréchet distance (svgen.metrics.frechet)
    min_side: int = 256         # smaller frames (aligned 64 px crops) are upscaled before detection
    blink_drop: float = 0.3     # a blink lowers the EAR by at least this fraction of the open-eye level
    blink_max_s: float = 0.6    # longer closures are not counted as blinks
    baseline_s: float = 4.0     # window of the open-eye level (running 80th percentile of the EAR)
    centre: bool = True         # subtract each video's own mean first (resting face shape is identity)
    seed: int = 0               # time-shuffled reference


@dataclass
class TargetThresholds:
    """Issue #17's motion targets: mouth spread within 0.5-2x the training clip, no frozen or
    exploding clip."""

    spread_low: float = 0.5
    spread_high: float = 2.0
    frozen_below: float = 0.1       # median feature IQR ratio under which a clip counts as frozen
    exploding_spread: float = 4.0   # any feature's spread ratio above this ...
    exploding_speed: float = 3.0    # ... or mean frame-to-frame speed ratio above this = exploding


@dataclass
class FeatureSeries:
    """Per-frame landmark features of one video: ``values`` float [T, 4] (NaN where no face)."""

    values: np.ndarray
    fps: float
    name: str = ""
    meta: dict = field(default_factory=dict)

    @property
    def detected(self) -> np.ndarray:
        return np.isfinite(self.values).all(axis=1)

    def __len__(self) -> int:
        return int(self.values.shape[0])

    def filled(self) -> np.ndarray:
        """Values with lost frames linearly interpolated (edges held); all-NaN if no face at all."""
        ok = self.detected
        out = np.array(self.values, dtype=np.float64)
        if ok.all() or not ok.any():
            return out
        t = np.arange(len(self))
        for j in range(out.shape[1]):
            out[~ok, j] = np.interp(t[~ok], t[ok], out[ok, j])
        return out

    def slice(self, start: int, stop: Optional[int] = None, name: Optional[str] = None) -> "FeatureSeries":
        return FeatureSeries(self.values[start:stop], self.fps, name or self.name, dict(self.meta))


SeriesSet = Union[FeatureSeries, Sequence[FeatureSeries]]


def _as_list(series: SeriesSet) -> list[FeatureSeries]:
    return [series] if isinstance(series, FeatureSeries) else list(series)


# -- per-frame features ----------------------------------------------------------------------------
def _dist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.linalg.norm(a - b, axis=-1)


def _eye_ratio(eye: np.ndarray) -> np.ndarray:
    """EAR of eye points [T, 6, 2]: (|p2-p6| + |p3-p5|) / (2 |p1-p4|)."""
    return (_dist(eye[:, 1], eye[:, 5]) + _dist(eye[:, 2], eye[:, 4])) / (2.0 * _dist(eye[:, 0], eye[:, 3]))


def landmark_features(lm: np.ndarray) -> np.ndarray:
    """68-point landmarks [T, 68, 2] (NaN rows allowed) -> features [T, 4] in :data:`FEATURES` order.

    Yaw and pitch are measured in the face's own frame (the eye line defines "horizontal"), so head
    roll does not leak into them.
    """
    lm = np.asarray(lm, dtype=np.float64)
    if lm.ndim != 3 or lm.shape[1:] != (68, 2):
        raise ValueError(f"expected landmarks [T, 68, 2], got {lm.shape}")
    with np.errstate(invalid="ignore", divide="ignore"):
        opening = sum(_dist(lm[:, a], lm[:, b]) for a, b in _INNER_MOUTH_PAIRS) / len(_INNER_MOUTH_PAIRS)
        mar = opening / _dist(lm[:, _INNER_MOUTH_CORNERS[0]], lm[:, _INNER_MOUTH_CORNERS[1]])
        ear = 0.5 * (_eye_ratio(lm[:, _EYE_L]) + _eye_ratio(lm[:, _EYE_R]))
        eye_l, eye_r = lm[:, _EYE_L].mean(axis=1), lm[:, _EYE_R].mean(axis=1)
        u = (eye_r - eye_l) / _dist(eye_r, eye_l)[:, None]          # along the eye line
        v = np.stack([-u[:, 1], u[:, 0]], axis=1)                    # towards the chin
        nose = lm[:, _NOSE_TIP]
        left = np.einsum("td,td->t", nose - lm[:, _JAW_L], u)
        right = np.einsum("td,td->t", lm[:, _JAW_R] - nose, u)
        yaw = (left - right) / (left + right)
        mid = 0.5 * (eye_l + eye_r)
        pitch = np.einsum("td,td->t", nose - mid, v) / np.einsum("td,td->t", lm[:, _CHIN] - mid, v)
    out = np.stack([mar, ear, yaw, pitch], axis=1)
    out[~np.isfinite(out).all(axis=1)] = np.nan
    return out


def _upscaled(frame: np.ndarray, min_side: int) -> tuple[np.ndarray, float]:
    h, w = frame.shape[:2]
    if min(h, w) >= min_side:
        return frame, 1.0
    from PIL import Image

    scale = min_side / min(h, w)
    img = Image.fromarray(np.ascontiguousarray(frame)).resize((round(w * scale), round(h * scale)),
                                                              Image.BICUBIC)
    return np.asarray(img), scale


def face_tracker(backend: Any = None) -> Any:
    """A :class:`~svgen.preprocessing.landmarks.FaceTracker` on ``backend`` (default dlib)."""
    from svgen.preprocessing.landmarks import DlibLandmarks, FaceTracker

    return FaceTracker(backend if backend is not None else DlibLandmarks())


def track_landmarks(frames: Iterable[np.ndarray], backend: Any = None, min_side: int = 256,
                    tracker: Any = None) -> np.ndarray:
    """Landmarks [T, 68, 2] of consecutive RGB frames (NaN where the face is lost), in the frames'
    pixel coordinates. ``backend`` defaults to dlib (its model file loads in seconds: share one); pass a
    ``tracker`` (:func:`face_tracker`) to follow one face across calls on consecutive batches."""
    tracker = tracker if tracker is not None else face_tracker(backend)
    out = []
    for frame in frames:
        img, scale = _upscaled(np.asarray(frame), min_side)
        lm = tracker(img)
        out.append(np.full((68, 2), np.nan) if lm is None else lm / scale)
    return np.asarray(out, dtype=np.float64).reshape(-1, 68, 2)


def frames_features(frames: Iterable[np.ndarray], fps: float, name: str = "", backend: Any = None,
                    config: Optional[LandmarkMotionConfig] = None) -> FeatureSeries:
    """Features of a sequence of RGB uint8 frames (a decoded video, a rendered sample)."""
    cfg = config or LandmarkMotionConfig()
    lm = track_landmarks(frames, backend, cfg.min_side)
    return FeatureSeries(landmark_features(lm), float(fps), name)


def video_features(path: PathLike, backend: Any = None, config: Optional[LandmarkMotionConfig] = None,
                   max_frames: Optional[int] = None) -> FeatureSeries:
    """Features of every frame of a video file (SvgenError if it cannot be decoded)."""
    from svgen.preprocessing.video_io import iter_frames, probe

    info = probe(path)
    series = frames_features(iter_frames(path, max_frames=max_frames), info.fps, str(path), backend, config)
    if len(series) == 0:
        raise SvgenError("video has no frames", path)
    return series


def dataset_features(path: PathLike, backend: Any = None, config: Optional[LandmarkMotionConfig] = None,
                     max_frames: Optional[int] = None) -> list[FeatureSeries]:
    """Features of every clip of an ``aligned.zip`` (one series per clip)."""
    from svgen.preprocessing.dataset import AlignedDataset

    ds = AlignedDataset(path)
    try:
        return [frames_features(ds.iter_clip(clip, 0, max_frames), info.fps, f"{path}:{clip}", backend, config)
                for clip, info in ds.clips.items()]
    finally:
        ds.close()


def load_features(path: PathLike, backend: Any = None, config: Optional[LandmarkMotionConfig] = None,
                  max_frames: Optional[int] = None) -> list[FeatureSeries]:
    """Features of a video file or an ``aligned.zip`` (chosen by the ``.zip`` suffix)."""
    if Path(path).suffix.lower() == ".zip":
        return dataset_features(path, backend, config, max_frames)
    return [video_features(path, backend, config, max_frames)]


# -- per-video statistics --------------------------------------------------------------------------
def _spectrum(x: np.ndarray, fps: float) -> dict:
    """Dominant frequency (Hz) and share of energy per band of a detrended, Hann-windowed signal."""
    n = x.size
    if n < 8 or not np.isfinite(x).all():
        return {"dominant_hz": float("nan"), **{f"{b}_band": float("nan") for b, _, _ in _BANDS}}
    t = np.arange(n)
    x = x - np.polyval(np.polyfit(t, x, 1), t)
    power = np.abs(np.fft.rfft(x * np.hanning(n))) ** 2
    freqs = np.fft.rfftfreq(n, d=1.0 / fps)
    power[0] = 0.0
    total = float(power.sum())
    out = {"dominant_hz": float(freqs[int(np.argmax(power))]) if total > 0 else float("nan")}
    for band, lo, hi in _BANDS:
        sel = (freqs >= lo) & (freqs < hi)
        out[f"{band}_band"] = float(power[sel].sum() / total) if total > 0 else float("nan")
    return out


def detect_blinks(ear: np.ndarray, fps: float, config: Optional[LandmarkMotionConfig] = None) -> list[int]:
    """Frame indices of blinks in an eye-aspect-ratio signal.

    The open-eye level is a running 80th percentile over ``baseline_s``, so head pose and the
    person's eye shape set their own level; a blink is a run of frames at least ``blink_drop`` below
    it, no longer than ``blink_max_s`` (longer closures are not blinks); the index is its deepest frame.
    """
    cfg = config or LandmarkMotionConfig()
    ear = np.asarray(ear, dtype=np.float64)
    n = ear.size
    if n == 0 or not np.isfinite(ear).all():
        return []
    half = max(1, int(round(cfg.baseline_s * fps / 2)))
    base = np.array([np.percentile(ear[max(0, i - half):i + half + 1], 80) for i in range(n)])
    closed = ear < (1.0 - cfg.blink_drop) * base
    blinks, i = [], 0
    max_len = max(1, int(round(cfg.blink_max_s * fps)))
    while i < n:
        if not closed[i]:
            i += 1
            continue
        j = i
        while j < n and closed[j]:
            j += 1
        if j - i <= max_len:
            blinks.append(int(i + np.argmin(ear[i:j])))
        i = j
    return blinks


def video_stats(series: FeatureSeries, config: Optional[LandmarkMotionConfig] = None) -> dict:
    """Spread, spectrum and blink rate of one video (plain floats; NaN where not measurable)."""
    cfg = config or LandmarkMotionConfig()
    x = series.filled()
    det = series.detected
    out: dict[str, Any] = {"frames": len(series), "fps": series.fps,
                           "face_detected": float(det.mean()) if len(series) else float("nan")}
    for j, name in enumerate(FEATURES):
        col = x[:, j]
        ok = np.isfinite(col)
        out[f"{name}_mean"] = float(col[ok].mean()) if ok.any() else float("nan")
        out[f"{name}_std"] = float(col[ok].std()) if ok.any() else float("nan")
        out[f"{name}_speed"] = float(np.abs(np.diff(col[ok])).mean()) if ok.sum() > 1 else float("nan")
        for k, v in _spectrum(col, series.fps).items():
            out[f"{name}_{k}"] = v
    blinks = detect_blinks(x[:, FEATURES.index("ear")], series.fps, cfg)
    minutes = len(series) / series.fps / 60.0
    out["blinks"] = len(blinks) if det.any() else float("nan")
    out["blinks_per_min"] = len(blinks) / minutes if det.any() and minutes > 0 else float("nan")
    return out


def _set_stats(series: Sequence[FeatureSeries], cfg: LandmarkMotionConfig) -> dict:
    """Per-video statistics and their frame-weighted mean over a set of videos."""
    per = [video_stats(s, cfg) for s in series]
    weights = np.array([p["frames"] for p in per], dtype=np.float64)
    mean = {}
    for key in per[0]:
        if key in ("frames", "fps"):
            continue
        vals = np.array([p[key] for p in per], dtype=np.float64)
        ok = np.isfinite(vals)
        mean[key] = float(np.average(vals[ok], weights=weights[ok])) if ok.any() else float("nan")
    mean["frames"] = int(weights.sum())
    mean["videos"] = len(per)
    return {"mean": mean, "videos": [{"name": s.name, **p} for s, p in zip(series, per)]}


# -- Fréchet distance of feature windows -----------------------------------------------------------
def _normaliser(real: Sequence[FeatureSeries], centre: bool) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and std of the real frames (with ``centre``: of each video's deviations
    from its own mean, i.e. the within-video spread, and mean 0)."""
    parts = [s.values[s.detected] for s in real]
    parts = [p - p.mean(axis=0) if centre and len(p) else p for p in parts]
    x = np.concatenate(parts)
    if x.shape[0] < 2:
        raise ValueError("the real videos have fewer than 2 frames with a face")
    std = x.std(axis=0)
    return x.mean(axis=0), np.where(std > 1e-12, std, 1.0)


def feature_windows(series: SeriesSet, window: int, stride: int = 1,
                    norm: Optional[tuple[np.ndarray, np.ndarray]] = None, centre: bool = False) -> np.ndarray:
    """Motion windows [N, window * 4 + 4] of the (gap-filled, optionally normalised) features.

    Each window is its frames' deviations from the window's own mean (the motion inside the
    window) followed by that mean (the pose and expression it moves around). Keeping the mean
    once instead of in every frame stops slow drift from outweighing the motion; ``centre``
    first subtracts each video's own mean, so a face's resting shape (eye opening, nose length:
    identity, not motion) does not count. Measured on d.mp4 (first half vs second half /
    time-shuffled / frozen first frame): plain windows 61 / 41 / 92 (the shuffle, which keeps every
    pose, beat the real half), motion windows 10 / 32 / 44, centred motion windows 7 / 26 / 42.
    """
    out = []
    for s in _as_list(series):
        x = s.filled()
        if not np.isfinite(x).all():
            continue  # no face at all: contributes no window
        if centre:
            x = x - x.mean(axis=0)
        if norm is not None:
            x = (x - norm[0]) / norm[1]
        for start in range(0, len(s) - window + 1, stride):
            w = x[start:start + window]
            mean = w.mean(axis=0)
            out.append(np.concatenate([(w - mean).reshape(-1), mean]))
    return np.asarray(out, dtype=np.float64).reshape(-1, (window + 1) * len(FEATURES))


def landmark_fd(real: SeriesSet, fake: SeriesSet, config: Optional[LandmarkMotionConfig] = None,
                norm_from: Optional[SeriesSet] = None) -> float:
    """Fréchet distance between windows of real and generated features, normalised with the real
    set's statistics (``norm_from``, default ``real``). ValueError if a side has fewer than 2 windows."""
    from svgen.metrics.frechet import frechet_distance, gaussian_stats

    cfg = config or LandmarkMotionConfig()
    norm = _normaliser(_as_list(norm_from if norm_from is not None else real), cfg.centre)
    a = feature_windows(real, cfg.window, cfg.stride, norm, cfg.centre)
    b = feature_windows(fake, cfg.window, cfg.stride, norm, cfg.centre)
    for what, w in (("real", a), ("generated", b)):
        if w.shape[0] < 2:
            raise ValueError(f"the {what} videos give {w.shape[0]} window(s) of {cfg.window} frames with a "
                             "face (need at least 2)")
    return frechet_distance(*gaussian_stats(a), *gaussian_stats(b), method=cfg.method)


def _frozen(series: FeatureSeries) -> FeatureSeries:
    first = series.values[np.argmax(series.detected)]
    return FeatureSeries(np.repeat(first[None], len(series), axis=0), series.fps, f"{series.name} (frozen)")


def _shuffled(series: FeatureSeries, rng: np.random.Generator) -> FeatureSeries:
    return FeatureSeries(series.values[rng.permutation(len(series))], series.fps, f"{series.name} (shuffled)")


def references(real: SeriesSet, config: Optional[LandmarkMotionConfig] = None) -> dict:
    """The distances that give ``landmark_fd`` a scale on these real videos: first vs second halves,
    a frozen first frame, the frames in random order (all normalised with the whole real set)."""
    cfg = config or LandmarkMotionConfig()
    real = _as_list(real)
    rng = np.random.default_rng(cfg.seed)
    firsts = [s.slice(0, len(s) // 2) for s in real]
    seconds = [s.slice(len(s) // 2) for s in real]
    out: dict[str, float] = {}
    for key, fn in (("ref_real_halves", lambda: landmark_fd(firsts, seconds, cfg, norm_from=real)),
                    ("ref_frozen", lambda: landmark_fd(real, [_frozen(s) for s in real], cfg)),
                    ("ref_shuffled", lambda: landmark_fd(real, [_shuffled(s, rng) for s in real], cfg))):
        try:
            out[key] = fn()
        except ValueError:
            out[key] = float("nan")  # clips too short to split into windows
    return out


# -- issue #17's targets and the report ------------------------------------------------------------
_SPREADS = {
    "std": lambda x: x.std(axis=0),
    "speed": lambda x: np.abs(np.diff(x, axis=0)).mean(axis=0),
    # robust spread: a few odd frames (the tracker settling on its first frames) do not count
    "iqr": lambda x: np.subtract(*np.percentile(x, [75, 25], axis=0)),
}


def _pooled(series: Sequence[FeatureSeries], key: str) -> np.ndarray:
    """Frame-weighted mean over videos of a per-video statistic of every feature (``_SPREADS``)."""
    vals, weights = [], []
    for s in series:
        x = s.filled()
        if not np.isfinite(x).all() or len(s) < 2:
            continue
        vals.append(_SPREADS[key](x))
        weights.append(len(s))
    if not vals:
        return np.full(len(FEATURES), np.nan)
    return np.average(np.asarray(vals), axis=0, weights=np.asarray(weights, dtype=np.float64))


def motion_targets(anim_features: SeriesSet, train_features: SeriesSet,
                   thresholds: Optional[TargetThresholds] = None) -> dict:
    """Issue #17's motion targets for animations against the training clip(s).

    Returns numbers (std, interquartile-range and speed ratios per feature, face-detected share) and
    booleans: ``mar_spread_ok`` (mouth std within 0.5-2x), ``frozen`` (median IQR ratio under 0.1:
    robust to the tracker settling in the first frames), ``exploding`` (a std ratio over 4x or a
    mean speed ratio over 3x), ``all_frames_face`` and ``ok`` (all fine). Spreads are per-video
    statistics averaged over videos, so offsets between videos do not count as motion.
    """
    th = thresholds or TargetThresholds()
    anim, train = _as_list(anim_features), _as_list(train_features)
    with np.errstate(invalid="ignore", divide="ignore"):
        spread = _pooled(anim, "std") / _pooled(train, "std")
        speed = _pooled(anim, "speed") / _pooled(train, "speed")
        robust = _pooled(anim, "iqr") / _pooled(train, "iqr")
    det = np.concatenate([s.detected for s in anim]) if anim else np.zeros(0, bool)
    mar = float(spread[FEATURES.index("mar")])
    measurable = bool(np.isfinite(spread).all() and np.isfinite(speed).all() and np.isfinite(robust).all())
    frozen = bool(measurable and np.median(robust) < th.frozen_below)
    exploding = bool(measurable and (spread.max() > th.exploding_spread or speed.mean() > th.exploding_speed))
    spread_ok = bool(math.isfinite(mar) and th.spread_low <= mar <= th.spread_high)
    face = float(det.mean()) if det.size else 0.0
    out = {"mar_spread_ratio": mar, "mar_spread_ok": spread_ok, "frozen": frozen, "exploding": exploding,
           "measurable": measurable, "face_detected": face, "all_frames_face": bool(det.size and det.all()),
           "thresholds": asdict(th)}
    out.update({f"{n}_spread_ratio": float(v) for n, v in zip(FEATURES, spread)})
    out.update({f"{n}_speed_ratio": float(v) for n, v in zip(FEATURES, speed)})
    out.update({f"{n}_iqr_ratio": float(v) for n, v in zip(FEATURES, robust)})
    out["ok"] = bool(spread_ok and measurable and not frozen and not exploding and out["all_frames_face"])
    return out


def compare(real: SeriesSet, fake: SeriesSet, config: Optional[LandmarkMotionConfig] = None) -> dict:
    """Everything the results page needs: ``value`` (landmark FD, NaN if the generated videos give
    no windows with a face), the references on the same real data, per-set statistics, the
    targets, one-line meanings and the protocol."""
    cfg = config or LandmarkMotionConfig()
    real, fake = _as_list(real), _as_list(fake)
    if not real or not fake:
        raise ValueError("compare needs at least one real and one generated video")
    try:
        value = landmark_fd(real, fake, cfg)
        problem = None
    except ValueError as exc:
        value, problem = float("nan"), str(exc)
    out = {"value": value, **references(real, cfg), "real": _set_stats(real, cfg),
           "generated": _set_stats(fake, cfg), "targets": motion_targets(fake, real),
           "meanings": dict(MEANINGS),
           "protocol": {**asdict(cfg), "features": list(FEATURES), "landmarks": "dlib 68-point shape predictor",
                        "normalisation": "per-feature std of the real frames' deviations from their video's "
                                         "mean" if cfg.centre else "per-feature mean/std of the real frames",
                        "real_videos": [s.name for s in real], "generated_videos": [s.name for s in fake]}}
    if problem:
        out["problem"] = problem
    return out


def plot_features(real: SeriesSet, fake: SeriesSet, path: PathLike, max_seconds: float = 10.0) -> Path:
    """PNG of the feature curves (first real vs first generated video, up to ``max_seconds``),
    written atomically; the real curve's mean +- std band is shaded."""
    from matplotlib.figure import Figure

    from svgen.metrics.plots import save_figure

    r, f = _as_list(real)[0], _as_list(fake)[0]
    labels = {"mar": "mouth aspect ratio", "ear": "eye aspect ratio", "yaw": "yaw index", "pitch": "pitch index"}
    fig = Figure(figsize=(9, 7))
    for j, name in enumerate(FEATURES):
        ax = fig.add_subplot(len(FEATURES), 1, j + 1)
        for s, style, label in ((r, "-", "real"), (f, "-", "generated")):
            n = min(len(s), int(max_seconds * s.fps))
            ax.plot(np.arange(n) / s.fps, s.values[:n, j], style, linewidth=1, label=label)
        col = r.values[r.detected, j]
        if col.size:
            ax.axhspan(col.mean() - col.std(), col.mean() + col.std(), color="C0", alpha=0.1)
        ax.set_ylabel(labels[name], fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(True, alpha=0.3)
        if j == 0:
            ax.legend(fontsize=8, loc="upper right")
            ax.set_title(f"landmark features: {Path(r.name).name or 'real'} vs {Path(f.name).name or 'generated'}",
                         fontsize=9)
    ax.set_xlabel("seconds", fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)
