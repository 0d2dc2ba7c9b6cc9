"""Video decoding and encoding through the ffmpeg binary that ships with ``imageio-ffmpeg``.

Decoding streams raw RGB frames from an ffmpeg subprocess through a pipe, so memory does not depend
on the video's length; a small reader thread keeps a few frames in flight so that ffmpeg decodes
while the caller works. Frames come out as displayed: ffmpeg applies rotation metadata, and
non-square pixels (a sample aspect ratio other than 1:1, e.g. 512x480 stored, 480x480 shown) are
resampled to square ones, so faces keep their proportions for landmarks and alignment.
Decoding from a frame ``k > 0`` (a chunk of a long video) seeks to a keyframe before ``k`` when
``probe`` found the stream's frame times exact (``FrameClock``), and keeps the frames from ``k`` on
by timestamp; otherwise it decodes from the start and skips ``k`` frames by count. Both give the
same frames.
Encoding writes H.264 / yuv420p mp4 to a temporary name that is renamed into place on success.
"""
from __future__ import annotations

import contextlib
import re
import subprocess
import threading
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Generator, Iterable, Iterator, Optional

import numpy as np

from svgen.utils.errors import PathLike, SvgenError
from svgen.utils.io import CommitOnExit, atomic_path, require_file
from svgen.utils.prefetch import prefetch as prefetch_items

__all__ = ["VideoInfo", "FrameClock", "probe", "display_size", "seek_window", "decode_command", "iter_frames",
           "iter_frames_indexed", "VideoWriter", "write_video", "ffmpeg_exe"]


def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary bundled with imageio-ffmpeg (or ``$IMAGEIO_FFMPEG_EXE``)."""
    import imageio_ffmpeg

    try:
        return imageio_ffmpeg.get_ffmpeg_exe()
    except RuntimeError as exc:  # no binary for this platform
        raise SvgenError(f"ffmpeg is not available ({exc})") from None


@dataclass(frozen=True)
class FrameClock:
    """Presentation times of a stream's frames: frame ``n`` (in display order, as
    ``iter_frames_indexed`` counts) shows at ``(first + n * step) * time_base`` seconds for a
    constant rate, at ``pts[n] * time_base`` for a variable one (``pts``: every frame's time, sorted).

    ``probe`` sets it only when every frame has its own valid time (constant rates: each within a
    quarter frame of that line), so a frame index can be turned into a time to seek to and back
    without ambiguity.
    """

    first: int                 # pts of frame 0, in time_base ticks (>= 0)
    step: Fraction             # ticks per frame (a variable rate: the mean)
    time_base: Fraction        # seconds per tick
    reorder: int = 0           # most ticks a packet's pts is after its dts (B-frame delay)
    pts: Optional[tuple[int, ...]] = None   # variable rate: every frame's pts, strictly increasing

    def ticks(self, n: int) -> Fraction:
        """Time of frame ``n`` in ticks (before frame 0 and after the last: extended at the mean step)."""
        if self.pts is None:
            return self.first + n * self.step
        last = len(self.pts) - 1
        if n < 0 or n > last:
            base, k = (self.pts[0], n) if n < 0 else (self.pts[last], n - last)
            return base + k * self.step
        return Fraction(self.pts[n])

    def time(self, n: int) -> Fraction:
        """Seconds at which frame ``n`` is shown."""
        return self.ticks(n) * self.time_base


@dataclass(frozen=True)
class VideoInfo:
    """What ``probe`` reads from a file's header.

    ``width``/``height`` are the display size of the decoded frames (square pixels, after the
    sample aspect ratio and rotation are applied); ``coded_*`` the size as stored.
    """

    fps: float
    num_frames: int            # video packets in the file (= frames for complete files)
    width: int
    height: int
    rotation: int = 0          # degrees from the display matrix / rotate tag, in [0, 360)
    duration: float = 0.0      # seconds
    codec: str = ""
    coded_width: int = 0       # size as stored, before rotation
    coded_height: int = 0
    sar: float = 1.0           # sample (pixel) aspect ratio, width / height of one stored pixel
    clock: Optional[FrameClock] = None  # exact frame times (seekable containers), else None


_ERROR_HINTS = (
    ("moov atom not found", "not a complete mp4 (moov atom not found: truncated, or not a video)"),
    ("Invalid data found when processing input", "not a readable video (ffmpeg: invalid data)"),
    ("Permission denied", "permission denied"),
    ("No such file or directory", "file does not exist"),
)


def _ffmpeg_problem(stderr: str, default: str) -> str:
    for needle, message in _ERROR_HINTS:
        if needle in stderr:
            return message
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    return f"{default} (ffmpeg: {lines[-1]})" if lines else default


def _parse_duration(text: str) -> float:
    m = re.search(r"Duration:\s*(\d+):(\d+):(\d+(?:\.\d+)?)", text)
    if not m:
        return 0.0
    h, mi, s = m.groups()
    return int(h) * 3600 + int(mi) * 60 + float(s)


def _parse_fps(line: str) -> float:
    for unit in ("fps", "tbr"):
        m = re.search(r"([\d.]+)(k?) " + unit, line)
        if m:
            value = float(m.group(1)) * (1000.0 if m.group(2) else 1.0)
            if value > 0:
                return value
    return 0.0


def _parse_sar(line: str) -> float:
    """Sample aspect ratio from ``[SAR 15:16 DAR 1:1]`` (1.0 when absent or unknown, ``0:1``)."""
    m = re.search(r"SAR (\d+):(\d+)", line)
    if not m or int(m.group(1)) == 0 or int(m.group(2)) == 0:
        return 1.0
    return int(m.group(1)) / int(m.group(2))


def display_size(coded_width: int, coded_height: int, sar: float, rotation: int) -> tuple[int, int]:
    """(width, height) shown for a stored frame: the width scaled by the sample aspect ratio,
    then both swapped for a quarter turn."""
    w = max(1, int(round(coded_width * sar))) if sar != 1.0 else coded_width
    return (coded_height, w) if rotation in (90, 270) else (w, coded_height)


# containers whose demuxer seeks by its index to a keyframe and keeps the stored timestamps
_SEEKABLE = ("mov,mp4,m4a,3gp,3g2,mj2", "matroska,webm")
_NOPTS = -(1 << 63)
_PKT_CORRUPT, _PKT_DISCARD = 0x2, 0x4


def _packet_flags(line: str) -> int:
    """The flags of one ``framecrc`` packet line (``F=0x<hex>``; 0 when the line has none)."""
    m = re.search(r"F=0x([0-9a-fA-F]+)", line) if "F=" in line else None
    return int(m.group(1), 16) if m else 0


def _frame_clock(table: str, fps: float, num_frames: int) -> Optional[FrameClock]:
    """The ``FrameClock`` of ffmpeg's ``framecrc`` packet table, or None when frame times cannot
    be trusted to map indices: a missing or negative timestamp, corrupt or discarded packets, two
    frames at one time, or a table that disagrees with ``num_frames`` or (a constant rate: every
    frame within a quarter frame of a line) with the header's ``fps`` by more than 1 %. A variable
    rate keeps every frame's time (one int per frame: 0.9 MB for an hour at 25 fps)."""
    m = re.search(r"^#tb 0: (\d+)/(\d+)", table, re.M)
    if not m or int(m.group(1)) <= 0 or int(m.group(2)) <= 0:
        return None
    tb = Fraction(int(m.group(1)), int(m.group(2)))
    pts, reorder = [], 0
    for line in table.splitlines():
        if not line.startswith("0,"):
            continue
        fields = line.split(",")   # stream, dts, pts, duration, size, crc[, F=0x<flags>][, side data]
        if _packet_flags(line) & (_PKT_CORRUPT | _PKT_DISCARD):
            return None
        try:
            dts, p = int(fields[1]), int(fields[2])
        except (IndexError, ValueError):
            return None
        if p < 0:  # also a missing timestamp (INT64_MIN)
            return None
        if dts != _NOPTS:
            reorder = max(reorder, p - dts)
        pts.append(p)
    if len(pts) < 2 or len(pts) != num_frames:
        return None
    pts.sort()
    first, span = pts[0], pts[-1] - pts[0]
    steps = len(pts) - 1            # frame n is due at first + n * span / steps; allow a quarter frame
    if span <= 0:
        return None
    step = Fraction(span, steps)
    if all(abs((p - first) * steps - n * span) * 4 <= span for n, p in enumerate(pts)):
        if abs(1 / (step * tb) - fps) > 0.01 * fps:
            return None
        return FrameClock(first=first, step=step, time_base=tb, reorder=reorder)
    # a variable rate: usable when no two frames share a time (select keeps frames by time)
    if any(b <= a for a, b in zip(pts, pts[1:])):
        return None
    return FrameClock(first=first, step=step, time_base=tb, reorder=reorder, pts=tuple(pts))


def _discarded_packets(table: str) -> int:
    """Video packets of a ``framecrc`` table flagged discard (hidden by an edit list: decoded, not shown)."""
    return sum(1 for line in table.splitlines() if line.startswith("0,") and _packet_flags(line) & _PKT_DISCARD)


def probe(path: PathLike) -> VideoInfo:
    """Read fps, frame count, display size, pixel aspect ratio and rotation of a video.

    One ffmpeg call that reads the header and then lists the video packets by stream copy (no
    decoding, ~0.1 s even for long HD videos), so ``num_frames`` is exact for complete files, and
    their timestamps give ``clock`` (mp4/mov and Matroska only). A file whose data stops early
    ("partial file") is reported as truncated.
    """
    p = require_file(path, "video")
    if p.stat().st_size == 0:
        raise SvgenError("video file is empty", p)
    proc = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-copyts", "-i", str(p), "-map", "0:v:0",
                           "-c", "copy", "-f", "framecrc", "-"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)
    text = proc.stderr.decode("utf-8", errors="replace").replace("\r", "\n")
    if "Input #0" not in text:
        raise SvgenError(_ffmpeg_problem(text, "not a readable video"), p)
    m = re.search(r"Input #0, (.+?), from ", text)
    demuxer = m.group(1) if m else ""
    if demuxer == "image2" or demuxer.endswith("_pipe"):
        raise SvgenError("is a still image, not a video", p)
    lines = text.splitlines()
    video_idx = next((i for i, ln in enumerate(lines)
                      if re.search(r"Stream #0:\d+.*: Video:", ln)
                      and "attached pic" not in ln), None)
    if video_idx is None:
        raise SvgenError("file has no video stream (is it an image or audio file?)", p)
    line = lines[video_idx]
    m = re.search(r"Video: (\w+)", line)
    codec = m.group(1) if m else ""
    m = re.search(r", (\d{2,5})x(\d{2,5})[ ,]", line)
    if not m:
        raise SvgenError("cannot read the video's frame size", p)
    cw, ch = int(m.group(1)), int(m.group(2))
    fps = _parse_fps(line)
    if fps <= 0:
        raise SvgenError("cannot read the video's frame rate", p)
    # Rotation: the stream's following indented lines (side data / metadata) until the next stream.
    rotation = 0.0
    for ln in lines[video_idx + 1:]:
        if re.search(r"Stream #\d+:\d+", ln):
            break
        m = re.search(r"rotation of (-?[\d.]+) degrees", ln) or re.search(r"rotate\s*:\s*(-?[\d.]+)", ln)
        if m:
            rotation = float(m.group(1))
            break
    rot = int(round(rotation)) % 360
    sar = _parse_sar(line)
    width, height = display_size(cw, ch, sar, rot)
    duration = _parse_duration(text)
    if "partial file" in text:
        raise SvgenError("video is truncated (its data ends before the frames its header lists)", p)
    table = proc.stdout.decode("ascii", errors="replace")
    counts = re.findall(r"frame=\s*(\d+)", text)
    if counts:
        # packets an edit list hides (a file cut without re-encoding) are demuxed but never shown
        num_frames = int(counts[-1]) - _discarded_packets(table)
    else:  # no packet count (odd container): estimate from the duration
        num_frames = int(np.floor(duration * fps + 1e-6)) if duration > 0 else 0
    clock = _frame_clock(table, fps, num_frames) if demuxer in _SEEKABLE else None
    return VideoInfo(fps=fps, num_frames=num_frames, width=width, height=height, rotation=rot,
                     duration=duration, codec=codec, coded_width=cw, coded_height=ch, sar=sar, clock=clock)


def seek_window(info: VideoInfo, start: int) -> Optional[tuple[float, float]]:
    """(seek_to, keep_from) in seconds to begin decoding at frame ``start``, or None to decode
    from the first frame (no ``clock``, or ``start`` too near the beginning to gain anything).

    ``seek_to`` lies before frame ``start`` by the stream's largest B-frame delay plus two
    frames, so the keyframe the demuxer jumps to (the last one at or before that time, by
    decoding or display time) starts the group of pictures that frame ``start`` belongs to, or
    an earlier one: every frame from ``start`` on decodes exactly as from the beginning.
    ``keep_from`` is halfway between the times of frames ``start - 1`` and ``start`` (a variable
    frame rate uses each frame's own time).
    """
    clock = info.clock
    if clock is None or start <= 0:
        return None
    tb = clock.time_base
    seek_to = clock.time(start - 2) - clock.reorder * tb
    if seek_to <= clock.time(0):
        return None
    return float(seek_to), float((clock.ticks(start - 1) + clock.ticks(start)) / 2 * tb)


def decode_command(path: Path, info: VideoInfo, start: int = 0) -> list[str]:
    """The ffmpeg command that writes the frames from ``start`` on as raw RGB to stdout.

    With a ``seek_window``: input seeking (``-ss`` before ``-i``, to a keyframe) on the file's own
    timestamps (``-copyts``, ``-seek_timestamp``), then ``select`` keeps the frames from
    ``keep_from`` on. Otherwise every frame is decoded and ``select`` skips ``start`` of them by
    count. Either way the skipped frames are neither converted nor piped.
    """
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-v", "error"]
    window = seek_window(info, start)
    filters = []
    if window is not None:
        seek_to, keep_from = window
        cmd += ["-copyts", "-seek_timestamp", "1", "-noaccurate_seek", "-ss", f"{seek_to:.6f}"]
        filters.append(f"select=gte(t\\,{keep_from:.6f})")
    elif start > 0:
        filters.append(f"select=gte(n\\,{int(start)})")
    cmd += ["-i", str(path), "-map", "0:v:0", "-an", "-sn", "-fps_mode", "passthrough"]
    if info.sar != 1.0:  # non-square pixels: resample (after autorotation) to the display size
        filters.append(f"scale={info.width}:{info.height}:flags=bicubic,setsar=1")
    if filters:
        cmd += ["-vf", ",".join(filters)]
    return cmd + ["-f", "rawvideo", "-pix_fmt", "rgb24", "-"]


class _FFmpegReader:
    """Raw RGB frames from an ffmpeg subprocess, optionally read ahead on a thread."""

    def __init__(self, path: Path, info: VideoInfo, prefetch: int = 4, start: int = 0):
        self.path = path
        self.info = info
        self.frame_bytes = info.width * info.height * 3
        self.seeked = seek_window(info, start) is not None
        cmd = decode_command(path, info, start)
        self._stderr = _TailBuffer()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, bufsize=0)
        with contextlib.suppress(Exception):  # let ffmpeg run ahead by up to 1 MiB (Linux only)
            import fcntl

            fcntl.fcntl(self.proc.stdout.fileno(), 1031, 1 << 20)  # F_SETPIPE_SZ
        self._err_thread = threading.Thread(target=self._stderr.drain, args=(self.proc.stderr,),
                                            daemon=True)
        self._err_thread.start()
        self._prefetch = int(prefetch)
        self._frames_iter: Optional[Generator[np.ndarray, None, None]] = None

    def _read_one(self) -> Optional[np.ndarray]:
        buf = bytearray(self.frame_bytes)
        view = memoryview(buf)
        got = 0
        while got < self.frame_bytes:
            n = self.proc.stdout.readinto(view[got:])
            if not n:
                return None  # end of stream (a partial last frame is dropped)
            got += n
        return np.frombuffer(buf, np.uint8).reshape(self.info.height, self.info.width, 3)

    def _frames(self) -> Generator[np.ndarray, None, None]:
        while (frame := self._read_one()) is not None:
            yield frame

    def __iter__(self) -> Iterator[np.ndarray]:
        """The frames, read up to ``prefetch`` ahead on a thread (``svgen.utils.prefetch``)."""
        frames = self._frames()
        self._frames_iter = prefetch_items(frames, self._prefetch) if self._prefetch > 0 else frames
        return self._frames_iter

    def finish(self) -> tuple[int, str]:
        """Wait for ffmpeg; return (exit status, tail of its stderr)."""
        rc = self.proc.wait()
        self._err_thread.join(timeout=5)
        return rc, self._stderr.text()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        with contextlib.suppress(Exception):
            self.proc.wait(timeout=5)
        if self._frames_iter is not None:
            self._frames_iter.close()  # stops the read-ahead thread (its read ends with the process)
        with contextlib.suppress(Exception):
            self.proc.stdout.close()
        self._err_thread.join(timeout=5)
        with contextlib.suppress(Exception):
            self.proc.stderr.close()


class _TailBuffer:
    """Keeps the last few KiB of a stream (ffmpeg's stderr) without blocking the process."""

    def __init__(self, limit: int = 8192):
        self.limit = limit
        self.data = b""

    def drain(self, stream) -> None:
        with contextlib.suppress(Exception):
            for chunk in iter(lambda: stream.read(4096), b""):
                self.data = (self.data + chunk)[-self.limit:]

    def text(self) -> str:
        return self.data.decode("utf-8", errors="replace")


def iter_frames_indexed(path: PathLike, fps: Optional[float] = None, max_frames: Optional[int] = None,
                        info: Optional[VideoInfo] = None, prefetch: int = 4,
                        check_truncated: bool = True, start: int = 0) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(source_frame_index, rgb uint8 [H, W, 3])`` in display orientation.

    ``fps`` resamples the timeline by picking the nearest source frame for each output time
    (frames repeat when upsampling), assuming a constant source frame rate. ``max_frames`` caps the
    number of yielded frames. A stream that ends well before its header's duration raises
    :class:`SvgenError` (truncated file) when ``check_truncated``. Frames are read-only views:
    copy before modifying. ``start`` begins at that output frame, for processing a long video in
    pieces: with an exact ``info.clock`` ffmpeg seeks to a keyframe shortly before it (the work does
    not grow with ``start``), else it decodes the frames before it without converting or piping them.
    """
    p = Path(path)
    info = info or probe(p)
    if fps is not None and fps <= 0:
        raise ValueError("fps must be positive")
    step = None if fps is None else info.fps / float(fps)
    src_start = int(start) if step is None else int(np.floor(int(start) * step + 0.5))
    reader = _FFmpegReader(p, info, prefetch=prefetch, start=src_start)
    decoded = src_start
    emitted = 0
    try:
        next_out = int(start)  # next output index (when resampling)
        for src_idx, frame in enumerate(reader, start=src_start):
            decoded += 1
            if step is None:
                yield src_idx, frame
                emitted += 1
                if max_frames is not None and emitted >= max_frames:
                    return
                continue
            # emit every output frame whose nearest source frame is src_idx
            while int(np.floor(next_out * step + 0.5)) == src_idx:
                yield src_idx, frame
                emitted += 1
                next_out += 1
                if max_frames is not None and emitted >= max_frames:
                    return
            if int(np.floor(next_out * step + 0.5)) < src_idx:  # rounding guard
                next_out += 1
        rc, err = reader.finish()
        if decoded == 0:
            raise SvgenError(_ffmpeg_problem(err, "no frame could be decoded (empty or corrupt video)"), p)
        if check_truncated:
            # ``decoded`` counts the frames before ``src_start`` as decoded (a seek skips them).
            # ffmpeg says "partial file" when data is missing; a shortfall against the header's
            # duration only counts with decoder errors (an audio track may outlast the video), or
            # after a seek (the data a seek lands beyond may be gone without a message)
            short = info.num_frames > 0 and decoded < info.num_frames - max(3, int(0.05 * info.num_frames))
            if "partial file" in err or (short and (err.strip() or reader.seeked)):
                raise SvgenError(f"video is truncated or corrupt: decoded {decoded} of about "
                                 f"{info.num_frames} frames", p)
        if reader.seeked and decoded != max(info.num_frames, src_start):
            # after a seek the indices rest on the timestamps; a different count at the end means
            # they did not match the decoded frames, so these frames may differ from a full decode
            raise SvgenError(f"video is truncated, or its timestamps disagree with its frames: decoding "
                             f"from frame {src_start} by timestamp ended at frame {decoded}, not "
                             f"{info.num_frames} (if it plays, process it in one piece: --workers 1)", p)
    finally:
        reader.close()


def iter_frames(path: PathLike, fps: Optional[float] = None,
                max_frames: Optional[int] = None) -> Iterator[np.ndarray]:
    """Stream a video's frames as RGB uint8 [H, W, 3] without holding the video in memory."""
    for _, frame in iter_frames_indexed(path, fps=fps, max_frames=max_frames):
        yield frame


class VideoWriter(CommitOnExit):
    """Write RGB uint8 frames to an H.264 / yuv420p mp4 (plays everywhere).

    Context manager: the file appears under ``path`` only when the block succeeds (``close``);
    on an exception (``abort``) nothing is left behind. Odd frame sizes are padded by one
    replicated pixel row/column, because yuv420p needs even dimensions. All frames must have the
    size of the first one.
    """

    def __init__(self, path: PathLike, fps: float, crf: int = 18, preset: str = "medium"):
        if not fps or fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.path = Path(path)
        self.fps = float(fps)
        self.crf = int(crf)
        self.preset = preset
        self.num_frames = 0
        self._size: Optional[tuple[int, int]] = None
        self._proc: Optional[subprocess.Popen] = None
        self._stderr = _TailBuffer()
        self._err_thread: Optional[threading.Thread] = None
        self._stack = contextlib.ExitStack()
        self._tmp = self._stack.enter_context(atomic_path(self.path, suffix=".mp4"))
        self._closed = False

    def _start(self, h: int, w: int) -> None:
        self._size = (h, w)
        eh, ew = h + (h % 2), w + (w % 2)
        cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-v", "error", "-y",
               "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{ew}x{eh}", "-r", f"{self.fps:.6g}",
               "-i", "-", "-an", "-c:v", "libx264", "-preset", self.preset, "-crf", str(self.crf),
               "-pix_fmt", "yuv420p", "-movflags", "+faststart", "-f", "mp4", str(self._tmp)]
        self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE)
        self._err_thread = threading.Thread(target=self._stderr.drain, args=(self._proc.stderr,),
                                            daemon=True)
        self._err_thread.start()

    def write(self, frame) -> None:
        """Append one frame: uint8 [H, W, 3] (RGB) or [H, W] / [H, W, 1] (grey)."""
        if self._closed:
            raise RuntimeError("VideoWriter is closed")
        arr = np.asarray(frame)
        if arr.dtype != np.uint8:
            raise ValueError(f"frames must be uint8, got {arr.dtype}")
        if arr.ndim == 2:
            arr = arr[:, :, None]
        if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
            raise ValueError(f"frames must be [H, W, 3], got shape {tuple(arr.shape)}")
        if arr.shape[2] == 1:
            arr = np.repeat(arr, 3, axis=2)
        elif arr.shape[2] == 4:
            arr = arr[:, :, :3]
        h, w = arr.shape[:2]
        if self._size is None:
            if h < 2 or w < 2:
                raise ValueError(f"frame too small for H.264: {w}x{h}")
            self._start(h, w)
        elif (h, w) != self._size:
            raise ValueError(f"frame size {w}x{h} differs from the first frame "
                             f"{self._size[1]}x{self._size[0]}")
        if h % 2 or w % 2:
            arr = np.pad(arr, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        try:
            self._proc.stdin.write(np.ascontiguousarray(arr).tobytes())
        except (BrokenPipeError, OSError):
            rc = self._proc.wait()
            self._err_thread.join(timeout=5)
            raise SvgenError(_ffmpeg_problem(self._stderr.text(), f"ffmpeg stopped (exit {rc})"),
                             self.path) from None
        self.num_frames += 1

    def close(self) -> None:
        """Finish encoding and move the file into place."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._proc is None:
                raise SvgenError("no frames were written; video not created", self.path)
            self._proc.stdin.close()
            rc = self._proc.wait()
            self._err_thread.join(timeout=5)
            self._proc.stderr.close()       # drained to EOF by the thread
            if rc != 0:
                raise SvgenError(_ffmpeg_problem(self._stderr.text(), f"ffmpeg failed (exit {rc})"),
                                 self.path)
        except BaseException as exc:
            self._stack.__exit__(type(exc), exc, exc.__traceback__)
            raise
        self._stack.close()  # fsync + rename

    def abort(self, exc_type=None, exc=None, tb=None) -> None:
        """Stop ffmpeg and delete the partial file."""
        if self._closed:
            return
        self._closed = True
        if self._proc is not None:
            with contextlib.suppress(Exception):
                self._proc.stdin.close()
            with contextlib.suppress(Exception):
                self._proc.kill()
                self._proc.wait(timeout=5)
            if self._err_thread is not None:
                self._err_thread.join(timeout=5)
            with contextlib.suppress(Exception):
                self._proc.stderr.close()
        self._stack.__exit__(exc_type or RuntimeError, exc or RuntimeError("aborted"), tb)


def write_video(path: PathLike, frames: Iterable[np.ndarray], fps: float, crf: int = 18) -> int:
    """Write an iterable of RGB uint8 frames as H.264 mp4 (atomically); returns the frame count."""
    with VideoWriter(path, fps, crf=crf) as writer:
        for frame in frames:
            writer.write(frame)
        return writer.num_frames
