"""Temporal stabilisation of per-frame crop squares (StyleVideoGAN §3: low-pass rotation and scale).

A crop square is described per frame by ``p = (cx, cy, theta, log_s)``: centre, rotation of the
half-side vector ``x = s (cos theta, sin theta)`` and log half-side. The video is split into
segments of detected frames; gaps of at most ``max_gap`` frames inside a segment are filled by
linear interpolation (flagged ``detected=False``), longer gaps split the clip. Each segment is
low-passed with a zero-phase Gaussian (``scipy.ndimage.gaussian_filter1d``, mirrored at the segment's
ends): sigma ``smooth`` frames for rotation and scale, ``smooth * center_ratio`` for the centre.

:class:`StreamingStabilizer` gives the same result as :func:`stabilize_offline` while holding only a
bounded number of frames back (``lookahead`` = filter radius + ``max_gap`` + 1), so a whole video
never has to be in memory.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
from scipy.ndimage import gaussian_filter1d

__all__ = ["StabilizeConfig", "params_from_transform", "transform_from_params", "StreamingStabilizer",
           "stabilize_offline", "FrameDecision", "jitter"]

_TRUNCATE = 4.0  # scipy's default: the Gaussian is cut at 4 sigma


@dataclass
class StabilizeConfig:
    """Smoothing strength and gap handling (all in frames)."""

    smooth: float = 3.0          # Gaussian sigma for rotation and scale; 0 disables smoothing
    center_ratio: float = 1.0    # the centre's sigma relative to ``smooth``
    max_gap: int = 12            # longest run of missing frames that is interpolated
    min_length: int = 8          # shorter segments are dropped

    def radius(self) -> int:
        sig = max(self.smooth, self.smooth * self.center_ratio)
        return int(_TRUNCATE * sig + 0.5) if sig > 0 else 0

    def lookahead(self) -> int:
        return self.radius() + self.max_gap + 1


def params_from_transform(c: np.ndarray, x: np.ndarray) -> np.ndarray:
    """(c, x) -> p = (cx, cy, theta, log |x|)."""
    return np.array([c[0], c[1], np.arctan2(x[1], x[0]), np.log(np.hypot(x[0], x[1]))])


def transform_from_params(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """p -> (c, x)."""
    s = np.exp(p[3])
    return np.array([p[0], p[1]]), np.array([s * np.cos(p[2]), s * np.sin(p[2])])


def _smooth(values: np.ndarray, cfg: StabilizeConfig) -> np.ndarray:
    """Zero-phase Gaussian low-pass of [T, 4] parameters (mirrored at both ends)."""
    out = values.copy()
    if cfg.smooth <= 0 or len(values) < 2:
        return out
    vals = values.copy()
    vals[:, 2] = np.unwrap(vals[:, 2])
    sig_c = cfg.smooth * cfg.center_ratio
    if sig_c > 0:
        out[:, :2] = gaussian_filter1d(vals[:, :2], sig_c, axis=0, mode="reflect", truncate=_TRUNCATE)
    out[:, 2:] = gaussian_filter1d(vals[:, 2:], cfg.smooth, axis=0, mode="reflect", truncate=_TRUNCATE)
    return out


def _kernel(sigma: float, radius: int) -> np.ndarray:
    """scipy's normalised Gaussian taps for ``sigma``, zero-padded to ``radius``."""
    k = np.zeros(2 * radius + 1)
    if sigma <= 0:
        k[radius] = 1.0
        return k
    r = int(_TRUNCATE * sigma + 0.5)
    x = np.arange(-r, r + 1)
    w = np.exp(-0.5 / sigma ** 2 * x ** 2)
    k[radius - r:radius + r + 1] = w / w.sum()
    return k


def _interpolate(p0: np.ndarray, p1: np.ndarray, t: float) -> np.ndarray:
    p1 = p1.copy()
    p1[2] = p0[2] + (p1[2] - p0[2] + np.pi) % (2 * np.pi) - np.pi  # shortest way round
    return p0 * (1 - t) + p1 * t


@dataclass
class FrameDecision:
    """What to do with frame ``index``: keep it (``params`` smoothed) or drop it."""

    index: int
    keep: bool
    params: Optional[np.ndarray] = None
    detected: bool = False
    segment: int = -1            # running number of the segment (kept segments only)


class StreamingStabilizer:
    """Push per-frame raw parameters (or ``None`` when no face); get decisions back in frame order.

    A decision for frame t is released once everything its smoothing window needs is known, at most
    ``config.lookahead()`` frames later (or on :meth:`flush`).
    """

    def __init__(self, config: Optional[StabilizeConfig] = None):
        self.cfg = config or StabilizeConfig()
        self._r = self.cfg.radius()
        # taps for windows that do not touch a segment end: [2r+1, 4] weights per parameter
        k_c = _kernel(self.cfg.smooth * self.cfg.center_ratio, self._r)
        k_rs = _kernel(self.cfg.smooth, self._r)
        self._taps = np.stack([k_c, k_c, k_rs, k_rs], axis=1)
        self._vals: list[Optional[np.ndarray]] = []   # filled params per frame (None = none yet)
        self._det: list[bool] = []
        self._n = 0                    # frames pushed
        self._next = 0                 # next frame to decide
        self._seg_start: Optional[int] = None   # first detection of the open segment
        self._last_det: Optional[int] = None    # last detection of the open segment
        self._closed: list[tuple[int, int]] = []  # closed segments [start, end) not yet fully emitted
        self._segments_kept = 0
        self.short_segments = 0        # segments dropped for being shorter than min_length
        self._seg_id: dict[int, int] = {}        # segment start -> running id
        self._base = 0                 # frame index of _vals[0] (old entries are trimmed)

    # -- input -------------------------------------------------------------------------------------
    def push(self, params: Optional[np.ndarray]) -> list[FrameDecision]:
        i = self._n
        self._n += 1
        self._vals.append(None if params is None else np.asarray(params, dtype=np.float64))
        self._det.append(params is not None)
        if params is not None:
            if self._last_det is not None and i - self._last_det - 1 > self.cfg.max_gap:
                self._close()
            if self._seg_start is None:
                self._seg_start = i
            elif i - self._last_det > 1:  # fill the short gap by interpolation
                p0 = self._get(self._last_det)
                gap = i - self._last_det
                for j in range(self._last_det + 1, i):
                    self._set(j, _interpolate(p0, self._vals[-1], (j - self._last_det) / gap))
            self._last_det = i
        elif self._last_det is not None and i - self._last_det > self.cfg.max_gap:
            self._close()
        return self._release(final=False)

    def flush(self) -> list[FrameDecision]:
        """End of video: close the open segment and release everything."""
        if self._last_det is not None:
            self._close()
        return self._release(final=True)

    # -- internals ---------------------------------------------------------------------------------
    def _get(self, j: int) -> np.ndarray:
        return self._vals[j - self._base]

    def _set(self, j: int, v: np.ndarray) -> None:
        self._vals[j - self._base] = v

    def _close(self) -> None:
        self._closed.append((self._seg_start, self._last_det + 1))
        self._seg_start = None
        self._last_det = None

    def _segment_of(self, t: int) -> tuple[Optional[tuple[int, int]], bool]:
        """(segment [start, end) containing t, whether it is closed); end of an open one = last det + 1."""
        for s, e in self._closed:
            if s <= t < e:
                return (s, e), True
        if self._seg_start is not None and self._seg_start <= t <= self._last_det:
            return (self._seg_start, self._last_det + 1), False
        return None, False

    def _release(self, final: bool) -> list[FrameDecision]:
        out = []
        while self._next < self._n:
            t = self._next
            seg, closed = self._segment_of(t)
            if seg is None:
                # t is not inside a known segment: dropped unless a later detection may still claim it
                pending = (self._seg_start is not None and t > self._last_det and not final)
                if pending:
                    break
                out.append(FrameDecision(t, keep=False))
                self._next += 1
                continue
            s, e = seg
            if not closed:
                if t + self._r > self._last_det or e - s < self.cfg.min_length:
                    break  # wait for more of the segment
            elif e - s < self.cfg.min_length:
                self.short_segments += int(t == s)
                out.append(FrameDecision(t, keep=False))
                self._next += 1
                continue
            a, b = max(s, t - self._r), min(e, t + self._r + 1)
            # the window mirrors at its ends; that matters only where they are the segment's ends,
            # elsewhere the kernel (radius r) never reaches past them
            window = np.stack([self._get(j) for j in range(a, b)])
            if self.cfg.smooth <= 0:
                sm = window[t - a].copy()
            elif b - a == 2 * self._r + 1:  # interior: plain weighted sum
                window[:, 2] = np.unwrap(window[:, 2])
                sm = (window * self._taps).sum(axis=0)
            else:
                sm = _smooth(window, self.cfg)[t - a]
            if s not in self._seg_id:
                self._seg_id[s] = self._segments_kept
                self._segments_kept += 1
            out.append(FrameDecision(t, keep=True, params=sm, detected=self._det[t - self._base],
                                     segment=self._seg_id[s]))
            self._next += 1
        self._trim()
        return out

    def _trim(self) -> None:
        """Forget parameters no future decision can need."""
        keep_from = self._next - self._r - 1
        if self._last_det is not None:
            keep_from = min(keep_from, self._last_det)
        drop = keep_from - self._base
        if drop > 256:
            del self._vals[:drop]
            del self._det[:drop]
            self._base += drop
        self._closed = [(s, e) for s, e in self._closed if e > self._next]


def stabilize_offline(params: Sequence[Optional[np.ndarray]],
                      config: Optional[StabilizeConfig] = None) -> list[FrameDecision]:
    """Decisions for a whole sequence at once (reference for the streaming version)."""
    cfg = config or StabilizeConfig()
    n = len(params)
    det_idx = [i for i, p in enumerate(params) if p is not None]
    segments = []
    for i in det_idx:
        if segments and i - segments[-1][-1] - 1 <= cfg.max_gap:
            segments[-1].append(i)
        else:
            segments.append([i])
    decisions = [FrameDecision(i, keep=False) for i in range(n)]
    seg_no = 0
    for seg in segments:
        s, e = seg[0], seg[-1] + 1
        if e - s < cfg.min_length:
            continue
        vals = np.zeros((e - s, 4))
        for a, b in zip(seg[:-1], seg[1:]):
            pa, pb = np.asarray(params[a], float), np.asarray(params[b], float)
            for j in range(a, b):
                vals[j - s] = _interpolate(pa, pb, (j - a) / (b - a))
        vals[e - 1 - s] = np.asarray(params[seg[-1]], float)
        sm = _smooth(vals, cfg)
        for j in range(s, e):
            decisions[j] = FrameDecision(j, keep=True, params=sm[j - s], detected=params[j] is not None,
                                         segment=seg_no)
        seg_no += 1
    return decisions


def jitter(quads: np.ndarray) -> dict:
    """Frame-to-frame jitter of crop quads [T, 4, 2]: RMS second difference of centre and scale.

    Centre in pixels, scale as log side length (relative); used to check stabilisation.
    """
    q = np.asarray(quads, dtype=np.float64)
    c = q.mean(axis=1)
    side = np.hypot(*(q[:, 3] - q[:, 0]).T)
    d2c = c[2:] - 2 * c[1:-1] + c[:-2]
    d2s = np.diff(np.log(side), n=2)
    return {"center_px": float(np.sqrt((d2c ** 2).sum(axis=1).mean())),
            "log_scale": float(np.sqrt((d2s ** 2).mean()))}
