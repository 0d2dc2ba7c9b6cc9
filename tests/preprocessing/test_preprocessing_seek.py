"""Decoding a long video's chunk from frame ``k`` (``svgen preprocess --workers N``) seeks to a
keyframe before ``k`` instead of decoding from the first frame: the frames (indices and pixels) are
those of a full decode, the decoding work no longer grows with ``k`` (variable frame rates
included: frame ``k``'s own time is used), and files whose frame times cannot be trusted (a
container without a trusted index, packets an edit list discards, two frames at one time) decode
from the start."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import stat
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import pytest

from svgen.preprocessing import video_io
from svgen.preprocessing.video_io import (_frame_clock, decode_command, ffmpeg_exe, iter_frames_indexed,
                                          probe, seek_window)
from svgen.utils.errors import SvgenError


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> dict[str, Path]:
    """Moving test pattern, 160x120, 25 fps, 400 frames, H.264 with B-frames and keyframes only every
    250 frames (``-g 250``, no scene cuts): as mp4, with a start time of 1.5 s (mp4 and mkv), with
    non-square pixels, as MPEG-TS (a container whose timestamps are not trusted) and trimmed by an
    edit list; and 200 frames with open groups of pictures every 50 (H.264, HEVC where available)."""
    d = tmp_path_factory.mktemp("seek")
    ff = ffmpeg_exe()
    out = {"gop": d / "gop.mp4", "offset": d / "offset.mp4", "offset_mkv": d / "offset.mkv",
           "sar": d / "sar.mp4", "ts": d / "gop.ts"}
    subprocess.run([ff, "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25:duration=16",
                    "-c:v", "libx264", "-preset", "veryfast", "-g", "250", "-sc_threshold", "0", "-bf", "3",
                    "-pix_fmt", "yuv420p", str(out["gop"])], check=True)
    for key, extra in (("offset", ["-output_ts_offset", "1.5"]), ("offset_mkv", ["-output_ts_offset", "1.5"]),
                       ("sar", ["-bsf:v", "h264_metadata=sample_aspect_ratio=4/3"]), ("ts", [])):
        subprocess.run([ff, "-v", "error", "-y", "-i", str(out["gop"]), "-c", "copy", *extra, str(out[key])],
                       check=True)
    out["vfr"] = d / "vfr.mp4"     # 150 frames at 25 fps, then 250 at about 15 (1 or 2 ticks of 1/25 s)
    subprocess.run([ff, "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25:duration=16",
                    "-vf", "setpts='if(lt(N,150),N/25,6+(N-150)/15)/TB'", "-fps_mode", "vfr", "-c:v", "libx264",
                    "-preset", "veryfast", "-g", "250", "-sc_threshold", "0", "-bf", "3", "-pix_fmt", "yuv420p",
                    str(out["vfr"])], check=True)
    out["trimmed"] = d / "trimmed.mp4"       # cut without re-encoding: an edit list hides 75 frames
    subprocess.run([ff, "-v", "error", "-y", "-ss", "3", "-i", str(out["gop"]), "-c", "copy", str(out["trimmed"])],
                   check=True)
    # open groups of pictures: B-frames after a keyframe (decoding order) shown before it
    pattern = ["-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25:duration=8", "-pix_fmt", "yuv420p"]
    for key, codec in (("open_gop", ["-c:v", "libx264", "-g", "50", "-bf", "3", "-x264-params", "open-gop=1"]),
                       ("open_gop_hevc", ["-c:v", "libx265", "-x265-params",
                                          "keyint=50:min-keyint=50:open-gop=1:bframes=4:log-level=error"])):
        out[key] = d / f"{key}.mp4"
        made = subprocess.run([ff, "-v", "error", "-y", *pattern, "-preset", "veryfast", *codec, str(out[key])])
        if made.returncode != 0:    # an ffmpeg without that encoder
            out.pop(key)
    return out


def _hashed(frames) -> list[tuple[int, str]]:
    return [(i, hashlib.md5(f.tobytes()).hexdigest()) for i, f in frames]


def _check_starts(path: Path, starts: list[int], fps=None, count: int = 6, upto=None) -> None:
    """Chunks from each ``start`` (``count`` frames; the last one to the end) equal the full decode
    (of its first ``upto`` frames only, when given)."""
    info = probe(path)
    full = _hashed(iter_frames_indexed(path, fps=fps, info=info, max_frames=upto))
    for k in starts:
        m = count if upto or k < len(full) - count else None
        got = _hashed(iter_frames_indexed(path, fps=fps, info=info, start=k, max_frames=m))
        assert got == full[k:k + (m or len(full))], (path.name, fps, k)


REAL = ["dpe/s.mp4",                         # h264 with B-frames
        "dpe/d.mp4",                         # mpeg4 part 2
        "tpsmm/driving.mp4",                 # video is the file's second stream, audio first
        "dreamtalk_mead/W009_front_fear_level3_001.mp4"]


@pytest.mark.parametrize("name", REAL)
def test_real_videos_seek_to_the_same_frames(shared, name):
    path = shared / "data" / "videos" / name
    info = probe(path)
    assert info.clock is not None and seek_window(info, info.num_frames - 1) is not None
    n = info.num_frames
    _check_starts(path, [0, 1, 13, 37, n // 2, n - 8, n - 1])
    _check_starts(path, [0, 29, n // 3], fps=17.0, count=4)


@pytest.mark.slow
def test_hevc_keyframe_seek_to_the_same_frames(shared):
    """HEVC, 1080x1920, keyframes at 0 and 250: starts whose seek lands on the keyframe at 250."""
    path = shared / "data" / "videos" / "latentsync" / "demo3_video.mp4"
    _check_starts(path, [257, 258, 261], count=3, upto=264)


@pytest.mark.parametrize("key", ["gop", "offset", "offset_mkv", "sar"])
def test_long_gop_and_offset_start_seek_to_the_same_frames(synthetic, key):
    """Starts in the middle of a 250-frame group of pictures, around its keyframe, near the end."""
    path = synthetic[key]
    info = probe(path)
    assert info.num_frames == 400 and info.clock is not None
    if key.startswith("offset"):
        assert info.clock.time(0) == Fraction(3, 2)
    _check_starts(path, [0, 1, 100, 244, 249, 250, 251, 257, 393, 399])
    _check_starts(path, [0, 170, 271], fps=40.0, count=5)     # upsampled: source frames repeat


@pytest.mark.parametrize("key", ["open_gop", "open_gop_hevc"])
def test_open_gop_seek_to_the_same_frames(synthetic, key):
    """Keyframes every 50 frames whose leading B-frames need the previous group: starts around them."""
    if key not in synthetic:
        pytest.skip(f"this ffmpeg cannot encode {key}")
    path = synthetic[key]
    assert probe(path).clock is not None
    _check_starts(path, [45, 48, 49, 50, 51, 53, 57, 96, 100, 199], count=5)


def test_millisecond_timestamps_seek_to_the_same_frames(shared, tmp_path):
    """23.976 fps in Matroska's 1 ms ticks: frame times 41 or 42 ticks apart, still a clock."""
    path = tmp_path / "pexels.mkv"
    subprocess.run([ffmpeg_exe(), "-v", "error", "-y", "-i", str(shared / "data" / "videos" / "pyfeat" /
                    "WolfgangLanger_Pexels.mp4"), "-an", "-c", "copy", str(path)], check=True)
    clock = probe(path).clock
    assert clock is not None and clock.step.denominator > 1
    _check_starts(path, [0, 7, 100, 301, 471])


def _decoded_before_first_frame(cmd: list[str]) -> int:
    """Frames ffmpeg decodes to output the first frame of ``cmd`` (a logged decode command)."""
    cmd = [ffmpeg_exe()] + cmd[1:]
    cmd[cmd.index("-v") + 1] = "verbose"
    cmd[-5:-5] = ["-frames:v", "1"]
    err = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=True).stderr
    return int(re.findall(r"(\d+) frames decoded", err)[-1])


def test_decoding_work_does_not_grow_with_the_start(synthetic, tmp_path, monkeypatch):
    """The commands ``iter_frames_indexed`` runs are logged (ffmpeg behind a wrapper) and replayed
    with ffmpeg's statistics: from frame 390, a decode from the start would decode 391+ frames;
    a seek decodes the rest of the group of pictures from frame 250 (plus its margin) only."""
    log = tmp_path / "calls.jsonl"
    wrapper = tmp_path / "ffmpeg"
    wrapper.write_text(f"#!{sys.executable}\nimport json, os, sys\n"
                       f"open({str(log)!r}, 'a').write(json.dumps(sys.argv) + '\\n')\n"
                       f"os.execv({ffmpeg_exe()!r}, [{ffmpeg_exe()!r}] + sys.argv[1:])\n")
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setattr(video_io, "ffmpeg_exe", lambda: str(wrapper))
    path = synthetic["gop"]
    info = probe(path)
    work = {}
    for k in (5, 140, 260, 390):
        log.write_text("")
        list(iter_frames_indexed(path, info=info, start=k, max_frames=2))
        (cmd,) = [c for c in map(json.loads, log.read_text().splitlines()) if "rawvideo" in c]
        work[k] = _decoded_before_first_frame(cmd)
    assert work[390] <= 390 - 250 + 16 and work[260] <= 260 + 16, work    # from the keyframe at 250
    assert work[390] < 200 and work[5] < 20, work
    monkeypatch.undo()
    # the same replay of the decode-from-start command does grow with the start
    assert _decoded_before_first_frame(decode_command(path, dataclasses.replace(info, clock=None), 390)) > 390


def test_variable_frame_rates_seek_to_the_same_frames(shared, synthetic):
    """A real variable-rate file (22.13 fps on average, frames 1 or 2 ticks apart) and a synthetic
    one whose rate drops from 25 to 15 fps inside a 250-frame group of pictures (with B-frames)."""
    real = shared / "data" / "videos" / "video_retalking" / "1.mp4"
    info = probe(real)
    assert info.clock is not None and info.clock.pts is not None and len(info.clock.pts) == info.num_frames
    assert seek_window(info, 100) is not None and "-ss" in decode_command(real, info, 100)
    n = info.num_frames
    _check_starts(real, [0, 1, 2, 3, 50, 51, 130, n - 5, n - 1])
    _check_starts(real, [0, 29, n // 3], fps=25.0, count=4)
    vfr = synthetic["vfr"]
    info = probe(vfr)
    assert info.num_frames == 400 and info.clock is not None and info.clock.pts is not None
    steps = {b - a for a, b in zip(info.clock.pts, info.clock.pts[1:])}
    assert info.clock.time(149) == Fraction(149, 25) and info.clock.time(399) > 22 and len(steps) > 1
    _check_starts(vfr, [0, 1, 100, 148, 149, 150, 151, 152, 249, 250, 251, 399])
    # the work: the group of pictures from the keyframe at 250, not the 390 frames before
    assert _decoded_before_first_frame(decode_command(vfr, info, 390)) <= 390 - 250 + 16
    assert _decoded_before_first_frame(decode_command(vfr, dataclasses.replace(info, clock=None), 390)) > 390


def test_untrusted_frame_times_decode_from_the_start(shared, synthetic):
    for path in (synthetic["ts"], synthetic["trimmed"]):
        info = probe(path)
        assert info.clock is None and seek_window(info, 100) is None
        cmd = decode_command(path, info, 100)
        assert "-ss" not in cmd and "select=gte(n\\,100)" in cmd
    _check_starts(synthetic["trimmed"], [0, 100, 320])
    # the 75 packets the edit list hides are not counted: the chunk grid and truncation check see 325 frames
    assert probe(synthetic["trimmed"]).num_frames == len(list(iter_frames_indexed(synthetic["trimmed"]))) == 325
    gop = probe(synthetic["gop"])
    assert seek_window(gop, 0) is None and seek_window(gop, 3) is None   # too near the start to seek


def _table(rows: list[tuple[int, int]], flags: str = "") -> str:
    """A ``framecrc`` packet table: #tb 1/12800 and one row per (dts, pts)."""
    return "#tb 0: 1/12800\n" + "".join(f"0, {d}, {p}, 512, 100, 0x0{flags}\n" for d, p in rows)


def test_frame_clock_keeps_each_frame_time_of_a_variable_rate():
    rows = [(512 * (n - 2), 512 * n) for n in range(10)]
    clock = _frame_clock(_table(rows), 25.0, 10)
    assert clock == video_io.FrameClock(first=0, step=Fraction(512), time_base=Fraction(1, 12800), reorder=1024)
    assert clock.time(25) == 1
    jitter = [(d, p + (30 if n % 2 else 0)) for n, (d, p) in enumerate(rows)]    # < 1/4 frame: kept
    assert _frame_clock(_table(jitter), 25.0, 10) is not None
    vfr = [(d, p + 300 * (n > 5)) for n, (d, p) in enumerate(rows)]
    clock = _frame_clock(_table(vfr), 25.0, 10)            # the header's fps is only an average here
    assert clock is not None and clock.pts == tuple(p for _, p in vfr) and clock.time(6) == Fraction(512 * 6 + 300, 12800)
    assert clock.ticks(10) == clock.pts[-1] + clock.step and clock.ticks(-1) == -clock.step
    shared_time = vfr[:5] + [(vfr[5][0], vfr[4][1])] + vfr[6:]                # two frames at one time
    assert _frame_clock(_table(shared_time), 25.0, 10) is None
    assert _frame_clock(_table(rows), 30.0, 10) is None                   # the header says otherwise
    assert _frame_clock(_table(rows), 25.0, 11) is None                   # the packet count disagrees
    assert _frame_clock(_table([(d, p - 1024) for d, p in rows]), 25.0, 10) is None   # negative pts
    assert _frame_clock(_table(rows, ", F=0x5"), 25.0, 10) is None        # discarded packets
    assert _frame_clock(_table(rows).replace("#tb 0: 1/12800\n", ""), 25.0, 10) is None


def test_truncation_is_still_reported_after_a_seek(synthetic, tmp_path):
    """A complete file's chunks never look truncated (the last one read to its end); a file cut
    after probing is reported from any start, also one that seeks beyond the data."""
    path = synthetic["gop"]
    info = probe(path)
    assert len(list(iter_frames_indexed(path, info=info, start=300))) == 100
    faststart = tmp_path / "fs.mp4"
    subprocess.run([ffmpeg_exe(), "-v", "error", "-y", "-i", str(path), "-c", "copy", "-movflags", "+faststart",
                    str(faststart)], check=True)
    info = probe(faststart)
    data = faststart.read_bytes()
    faststart.write_bytes(data[: len(data) * 6 // 10])
    for k in (0, 300, 390):
        with pytest.raises(SvgenError, match="truncated"):
            for _ in iter_frames_indexed(faststart, info=info, start=k):
                pass


def test_timestamps_that_disagree_with_the_frames_raise(synthetic):
    """A clock that does not match the stream (here: twice the real frame duration) leaves the last
    chunk short of the header's count: an error, never silently different frames."""
    info = probe(synthetic["gop"])
    wrong = dataclasses.replace(info, clock=dataclasses.replace(info.clock, step=info.clock.step * 2))
    with pytest.raises(SvgenError, match="disagree|truncated"):
        list(iter_frames_indexed(synthetic["gop"], info=wrong, start=150))
