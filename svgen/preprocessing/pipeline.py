"""One video -> stabilised FFHQ-style frames (the per-video pass), and single-photo alignment.

``svgen.preprocessing.videos.preprocess_videos`` runs this pass over many videos (in this process
or in workers, ``svgen.preprocessing.parallel``). Per video, in one streaming pass (memory independent of the video's length):

    decode (ffmpeg, own process) -> track face + 68 landmarks -> eye-corner crop square
      -> StreamingStabilizer (gap filling, segment split, zero-phase low-pass; holds back at most
         a lookahead of frames) -> warp each kept frame to size x size -> aligned.zip

Warping and PNG encoding run on worker threads so that they overlap with decoding and landmarks.
"""
from __future__ import annotations

import re
import time
import warnings
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from svgen.preprocessing.alignment import (eye_corner_transform, ffhq_quad, quad_from_transform,
                                           warp_quad)
from svgen.preprocessing.dataset import AlignedDatasetWriter, encode_png
from svgen.preprocessing.landmarks import (FaceTracker, LandmarkBackend, TrackerConfig,
                                           detect_photo_faces, make_backend)
from svgen.preprocessing.stabilize import (StabilizeConfig, StreamingStabilizer,
                                           params_from_transform, transform_from_params)
from svgen.preprocessing.video_io import VideoInfo, iter_frames_indexed
from svgen.utils.errors import PathLike, SvgenError
from svgen.utils.io import require_file
from svgen.utils.progress import progress

__all__ = ["PreprocessConfig", "align_photo", "align_photo_info", "PhotoAlignment", "load_image_rgb",
           "PreprocessWarning"]

LANDMARK_CHOICES = ("dlib", "face-alignment", "none")
# photos larger than this are refused before decoding (PIL's own decompression-bomb threshold)
MAX_IMAGE_PIXELS = 89_478_485


class PreprocessWarning(UserWarning):
    """Something the user should know about that did not stop the run (shown by the CLI)."""


@dataclass
class PreprocessConfig:
    """Settings of ``svgen preprocess`` (saved into dataset.json under ``preprocess``)."""

    size: int = 256
    landmarks: str = "dlib"          # dlib | face-alignment | none
    detector: str = "hog"            # hog | cnn (dlib's detectors)
    smooth: float = 3.0              # Gaussian sigma in frames for centre/rotation/scale (0 = off)
    center_ratio: float = 1.0        # centre sigma = smooth * center_ratio
    max_gap: float = 0.5             # seconds of missing face that are interpolated
    min_length: float = 0.3          # seconds: shorter segments are dropped
    detect_every: int = 5            # re-detect around the tracked face every k frames
    detect_size: int = 800           # long side of the downscaled frame for full detections
    render_threads: int = 2          # threads that warp and encode frames (per process)
    workers: int = 1                 # processes: over videos and over a long video's chunks
    chunk_frames: int = 1500         # a video is tracked in chunks of this many frames, each from a
    #                                  fresh face detection, whatever --workers is (so the result never
    #                                  depends on it); the low-pass runs over the whole video at once
    max_frames: Optional[int] = None  # per video, after fps resampling
    fps: Optional[float] = None      # resample to this frame rate
    box: Optional[tuple[float, float, float, float]] = None  # --landmarks none: x, y, w, h
    device: str = "cpu"              # for the face-alignment backend

    def validate(self) -> None:
        if self.size < 8 or self.size > 4096:
            raise SvgenError(f"--size must be between 8 and 4096, got {self.size}")
        if self.landmarks not in LANDMARK_CHOICES:
            raise SvgenError(f"unknown --landmarks {self.landmarks!r} (use {', '.join(LANDMARK_CHOICES)})")
        if self.smooth < 0:
            raise SvgenError(f"--smooth must be >= 0, got {self.smooth}")
        if self.workers < 1:
            raise SvgenError(f"--workers must be at least 1, got {self.workers}")
        if self.chunk_frames < 1:
            raise SvgenError(f"--chunk-frames must be at least 1, got {self.chunk_frames}")
        if self.box is not None and (self.box[2] <= 0 or self.box[3] <= 0):
            raise SvgenError(f"--box needs a positive width and height, got {self.box}")


@dataclass
class VideoSummary:
    """What happened to one input video."""

    source: str
    fps: float
    frames: int = 0              # frames read (after resampling / --max-frames)
    kept: int = 0
    interpolated: int = 0        # kept frames without a detection (filled across short gaps)
    dropped: int = 0             # frames outside any kept segment
    clips: dict = field(default_factory=dict)   # clip name -> number of frames
    short_segments: int = 0      # segments dropped for being shorter than min_length
    tracker: dict = field(default_factory=dict)
    seconds: float = 0.0


# -- images -------------------------------------------------------------------------------------
def load_image_rgb(path_or_array: Union[PathLike, np.ndarray], name: Optional[str] = None) -> np.ndarray:
    """Any photo -> RGB uint8 [H, W, 3].

    Handles EXIF orientation, palette/greyscale/CMYK, transparency (composited on white) and
    16-bit or float images (scaled to 8 bit). Raises :class:`SvgenError` for unreadable files.
    """
    where = name
    if isinstance(path_or_array, np.ndarray):
        return _array_to_rgb(path_or_array, where)
    p = require_file(path_or_array, "image")
    where = str(p)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # refused below instead
            with Image.open(p) as im:
                if im.width * im.height > MAX_IMAGE_PIXELS:
                    raise SvgenError(_too_large(f"{im.width}x{im.height}"), p)
                im.load()
                im = ImageOps.exif_transpose(im)
                arr = _pil_to_rgb(im, where)
    except Image.DecompressionBombError:  # PIL's own refusal, at twice its limit, in open()
        raise SvgenError(_too_large("more than twice PIL's limit"), p) from None
    except UnidentifiedImageError:
        raise SvgenError("not an image file (or an unsupported image format)", p) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise SvgenError(f"cannot read image: truncated or corrupt ({exc})", p) from None
    if min(arr.shape[:2]) < 16:
        raise SvgenError(f"image is too small ({arr.shape[1]}x{arr.shape[0]})", p)
    return arr


def _too_large(size: str) -> str:
    return f"image is too large ({size}); the limit is {MAX_IMAGE_PIXELS / 1e6:.0f} megapixels: downscale it first"


def _pil_to_rgb(im: Image.Image, where: str) -> np.ndarray:
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        a = np.asarray(im).astype(np.float64)
        scale = 257.0 if (mode.startswith("I;16") or a.max() > 255) else 1.0
        a = np.clip(np.rint(a / scale), 0, 255).astype(np.uint8)
        return np.repeat(a[:, :, None], 3, axis=2)
    if mode == "F":
        return _array_to_rgb(np.asarray(im), where)
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))
    if mode != "RGB":
        im = im.convert("RGB")  # L, 1, P, CMYK, YCbCr, LAB, HSV
    return np.asarray(im)


def _array_to_rgb(a: np.ndarray, where: Optional[str]) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[2] not in (1, 3, 4):
        raise SvgenError(f"image array must be [H, W], [H, W, 3] or [H, W, 4], got {a.shape}", where)
    if a.dtype == np.uint16:
        a = np.rint(a / 257.0)
    elif a.dtype.kind == "f":
        a = a * 255.0 if np.nanmax(a) <= 1.0 else a
        a = np.nan_to_num(a)
    elif a.dtype == bool:
        a = a * 255
    a = np.clip(a, 0, 255).astype(np.uint8)
    if a.shape[2] == 4:
        alpha = a[:, :, 3:4].astype(np.float32) / 255.0
        a = np.uint8(np.rint(a[:, :, :3] * alpha + 255.0 * (1 - alpha)))
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    return np.ascontiguousarray(a)


def _centre_square(h: int, w: int) -> np.ndarray:
    side = min(h, w)
    x0, y0 = (w - side) / 2.0, (h - side) / 2.0
    return _box_quad((x0, y0, side, side))


def _box_quad(box: Sequence[float]) -> np.ndarray:
    """Quad of an axis-aligned box (x, y, w, h) in pixel-centre coordinates."""
    x, y, w, h = (float(v) for v in box)
    x0, y0, x1, y1 = x - 0.5, y - 0.5, x + w - 0.5, y + h - 0.5
    return np.array([[x0, y0], [x0, y1], [x1, y1], [x1, y0]])


# -- photos -------------------------------------------------------------------------------------
@dataclass
class PhotoAlignment:
    image: np.ndarray                 # uint8 [size, size, 3]
    quad: np.ndarray                  # [4, 2] in source pixels
    landmarks: Optional[np.ndarray]   # [68, 2] or None (landmarks="none")
    num_faces: int


def align_photo_info(path_or_array: Union[PathLike, np.ndarray], size: int = 256, landmarks: str = "dlib",
                     strict: bool = False, detector: str = "hog", device: str = "cpu",
                     backend: Optional[LandmarkBackend] = None) -> PhotoAlignment:
    """Align one photo with the FFHQ formulas; also returns the quad and landmarks.

    ``backend`` reuses an already loaded landmark backend (see ``landmarks.make_backend``).
    """
    where = None if isinstance(path_or_array, np.ndarray) else str(path_or_array)
    img = load_image_rgb(path_or_array)
    if landmarks == "none":
        quad = _centre_square(*img.shape[:2])
        return PhotoAlignment(warp_quad(img, quad, size, pad=False), quad, None, 0)
    backend = backend or make_backend(landmarks, detector=detector, device=device)
    faces = detect_photo_faces(backend, img)
    if not faces:
        raise SvgenError("no face found in the photo", where)
    if len(faces) > 1:
        if strict:
            raise SvgenError(f"found {len(faces)} faces; --strict needs exactly one", where)
        warnings.warn(PreprocessWarning(f"{where or 'photo'}: found {len(faces)} faces; using the largest"),
                      stacklevel=2)
    box = max(faces, key=lambda f: (f[0][2] - f[0][0]) * (f[0][3] - f[0][1]))[0]
    lm = backend.predict(img, box)
    quad = ffhq_quad(lm)
    return PhotoAlignment(warp_quad(img, quad, size, quality="high"), quad, lm, len(faces))


def align_photo(path_or_array: Union[PathLike, np.ndarray], size: int = 256, landmarks: str = "dlib",
                strict: bool = False, **kwargs) -> np.ndarray:
    """FFHQ-aligned crop of a photo as uint8 [size, size, 3] (used by ``animate``).

    Several faces: the largest is used with a :class:`PreprocessWarning`, or an error with
    ``strict``. No face: :class:`SvgenError`.
    """
    return align_photo_info(path_or_array, size, landmarks=landmarks, strict=strict, **kwargs).image


# -- videos -------------------------------------------------------------------------------------
def clip_bases(paths: Sequence[Path]) -> list[str]:
    """The base clip name of every input video, unique over the whole input list (a sharded run
    computes them over all inputs, so every shard names its clips as the unsharded run would)."""
    used: set = set()
    out = []
    for path in paths:
        base = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(path).stem).strip("._") or "clip"
        name, k = base, 2
        while name in used:
            name, k = f"{base}_{k}", k + 1
        used.add(name)
        out.append(name)
    return out


def segment_name(base: str, segment: int, bases: set) -> str:
    """Clip name of a video's ``segment``-th kept face segment: ``base``, ``base_part2``, ...
    (``_`` appended while it equals another input's base; part names never collide otherwise)."""
    if segment == 0:
        return base
    name = f"{base}_part{segment + 1}"
    while name in bases:
        name += "_"
    return name


def output_frames(info: VideoInfo, cfg: PreprocessConfig) -> int:
    """How many frames a video yields after ``--fps`` and ``--max-frames`` (0 when unknown)."""
    total = info.num_frames if cfg.fps is None else int(info.duration * float(cfg.fps))
    if cfg.max_frames:
        total = min(total, cfg.max_frames) if total else cfg.max_frames
    return total


def stabilize_config(cfg: PreprocessConfig, fps_out: float) -> StabilizeConfig:
    return StabilizeConfig(smooth=cfg.smooth, center_ratio=cfg.center_ratio,
                           max_gap=max(0, int(round(cfg.max_gap * fps_out))),
                           min_length=max(2, int(round(cfg.min_length * fps_out))))


def new_tracker(backend: LandmarkBackend, cfg: PreprocessConfig, stab_cfg: StabilizeConfig) -> FaceTracker:
    return FaceTracker(backend, TrackerConfig(detect_every=cfg.detect_every, detect_size=cfg.detect_size,
                                              forget_after=max(stab_cfg.max_gap, 1)))


def measure(tracker: FaceTracker, frame: np.ndarray) -> Optional[np.ndarray]:
    """The crop parameters (cx, cy, theta, log s) of the tracked face in ``frame``, or None."""
    lm = tracker(frame)
    if lm is None:
        return None
    c, x, _ = eye_corner_transform(lm)
    return params_from_transform(c, x)


def fixed_quad(info: VideoInfo, cfg: PreprocessConfig, path: Path) -> np.ndarray:
    """--landmarks none: the crop of every frame (the --box, else the centre square)."""
    if cfg.box is not None:
        x, y, w, h = cfg.box
        if x >= info.width or y >= info.height or x + w <= 0 or y + h <= 0:
            raise SvgenError(f"--box {x:g},{y:g},{w:g},{h:g} lies entirely outside the "
                             f"{info.width}x{info.height} frame", path)
        return _box_quad(cfg.box)
    return _centre_square(info.height, info.width)


def add_tracker_stats(total: dict, stats: dict) -> None:
    for k, v in stats.items():
        total[k] = total.get(k, 0) + v


def check_found(summary: VideoSummary, found: int, min_length: int, path: Path) -> None:
    """The one-line errors of a video in which no usable face was found."""
    if found == 0:
        raise SvgenError(f"no face found in any of the {summary.frames} frames (for non-face videos use "
                         "--landmarks none; small or profile faces may need --detector cnn)", path)
    if summary.kept == 0:
        raise SvgenError(f"a face was found in only {found} of {summary.frames} frames, never in a run "
                         f"of at least {min_length} frames; nothing to keep", path)


def _render_png(frame: np.ndarray, quad: np.ndarray, size: int) -> bytes:
    return encode_png(warp_quad(frame, quad, size, quality="fast"))


class _Renderer:
    """Warps and PNG-encodes kept frames on worker threads; appends them to the dataset in order.

    PIL releases the GIL while transforming and encoding, so the workers run in parallel with each
    other and with landmark detection. At most ``max_pending`` frames are in flight.
    """

    def __init__(self, writer: AlignedDatasetWriter, size: int, workers: int = 2, max_pending: int = 8):
        self.writer = writer
        self.size = size
        self.max_pending = max(1, max_pending)
        self._pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="svgen-render")
        self._pending: deque = deque()

    def submit(self, clip: str, new_clip: Optional[tuple[str, float]], frame: np.ndarray,
               quad: np.ndarray, src: int, detected: bool) -> None:
        future = self._pool.submit(_render_png, frame, quad, self.size)
        self._pending.append((clip, new_clip, future, src, quad, detected))
        while len(self._pending) > self.max_pending:
            self._write_oldest()

    def _write_oldest(self) -> None:
        clip, new_clip, future, src, quad, detected = self._pending.popleft()
        png = future.result()
        if new_clip is not None:
            self.writer.add_clip(clip, source=new_clip[0], fps=new_clip[1])
        self.writer.add_encoded_frame(clip, png, source_frame=src, quad=quad, detected=detected)

    def drain(self) -> None:
        while self._pending:
            self._write_oldest()

    def close(self) -> None:
        for item in self._pending:
            item[2].cancel()
        self._pending.clear()
        self._pool.shutdown(wait=True, cancel_futures=True)


def process_video(path: Path, info: VideoInfo, cfg: PreprocessConfig, backend: Optional[LandmarkBackend],
                  renderer: "_Renderer", base: str, bases: set, show_progress: bool) -> VideoSummary:
    """One video in one streaming pass (decode, track, low-pass, warp) into ``renderer``'s dataset.

    The tracker restarts every ``cfg.chunk_frames`` frames, exactly as the chunked parallel path
    (``svgen.preprocessing.parallel``) does, so both give the same dataset.
    """
    t0 = time.perf_counter()
    fps_out = float(cfg.fps or info.fps)
    summary = VideoSummary(source=str(path), fps=fps_out)
    total = output_frames(info, cfg)
    frames = iter_frames_indexed(path, fps=cfg.fps, max_frames=cfg.max_frames, info=info)
    bar = progress(total=total or None, desc=path.name[:24], unit="frame", leave=False,
                   disable=not show_progress or None)

    if cfg.landmarks == "none":
        quad = fixed_quad(info, cfg, path)
        first = True
        try:
            for src, frame in frames:
                renderer.submit(base, (str(path), fps_out) if first else None, frame, quad, src, True)
                first = False
                summary.frames += 1
                summary.kept += 1
                bar.update(1)
        finally:
            bar.close()
        summary.clips[base] = summary.kept
        summary.seconds = time.perf_counter() - t0
        return summary

    stab_cfg = stabilize_config(cfg, fps_out)
    stab = StreamingStabilizer(stab_cfg)
    tracker = None
    buffer: dict[int, tuple[int, np.ndarray]] = {}
    found = 0

    def handle(decisions) -> None:
        for d in decisions:
            src, frame = buffer.pop(d.index)
            name = record_decision(summary, d, base, bases)
            if name is None:
                continue
            new_clip = (str(path), fps_out) if summary.clips[name] == 1 else None
            c, x = transform_from_params(d.params)
            renderer.submit(name, new_clip, frame, quad_from_transform(c, x), src, d.detected)

    try:
        for i, (src, frame) in enumerate(frames):
            if i % cfg.chunk_frames == 0:   # a fresh detection at every chunk start
                if tracker is not None:
                    add_tracker_stats(summary.tracker, tracker.stats)
                tracker = new_tracker(backend, cfg, stab_cfg)
            buffer[i] = (src, frame)
            params = measure(tracker, frame)
            found += params is not None
            handle(stab.push(params))
            summary.frames += 1
            bar.update(1)
        handle(stab.flush())
    finally:
        bar.close()
    if tracker is not None:
        add_tracker_stats(summary.tracker, tracker.stats)
    summary.short_segments = stab.short_segments
    summary.seconds = time.perf_counter() - t0
    check_found(summary, found, stab_cfg.min_length, path)
    return summary


def record_decision(summary: VideoSummary, d, base: str, bases: set) -> Optional[str]:
    """Count a stabiliser decision into ``summary``; the frame's clip name, or None if dropped."""
    if not d.keep:
        summary.dropped += 1
        return None
    name = segment_name(base, d.segment, bases)
    summary.clips[name] = summary.clips.get(name, 0) + 1
    summary.kept += 1
    summary.interpolated += int(not d.detected)
    return name
