"""Reading the last chunk of a long video with a seek (``FrameClock``) against a decode from the start, as JSON.

``svgen preprocess --workers N`` reads each chunk of a long video twice (measure, render) with
``iter_frames_indexed(start=k, max_frames=chunk)``. Before issue #15's fix every chunk decoded the video
from its first frame (N chunks: N(N-1)/2 extra chunk decodes); now ffmpeg seeks to a keyframe before
``k``. Inputs: a synthetic long video (moving test pattern, 640x360, 25 fps, a keyframe every 250 frames,
``--minutes`` long; again at a variable frame rate) and the longest real clips of ``$SVGEN_SHARED/data/videos``. For each: seconds to read
the last chunk both ways (best of ``--repeat``, the two ways alternated in one run, so only their ratio is
meaningful on a shared machine) and the frames ffmpeg decodes before the chunk's first frame (exact,
from ffmpeg's own statistics). Run: ``.venv/bin/python benchmarks/chunk_seek.py [--minutes 2]``.

Measured 2026-12-04 (2 shared cores, load ~2.7, chunk 100, best of 2): synthetic 2 min (3000 frames) 1.057 ->
0.131 s (8.1x; ffmpeg decodes 155 instead of 2905 frames before the chunk); 10 min (15000 frames, 640x360)
2.883 -> 0.098 s (29x; 155 instead of 14905); ``demo3_video.mp4`` (600 frames, 1080x1920 HEVC) 1.68 -> 1.16 s
(1.45x; 254 instead of 504: its keyframes are 250 apart); ``WolfgangLanger_Pexels.mp4`` 0.251 -> 0.097 s (2.6x;
17 instead of 377). The price: ``probe`` lists packet timestamps (``framecrc``), 0.10 -> 0.18 s for the
10-minute file, once per video. "decoded" counts include the few frames ffmpeg decodes ahead of its output.
Variable frame rates (2026-12-05, same machine): the 2-minute pattern with every third frame held twice as
long 1.136 -> 0.144 s (7.9x; 155 instead of 2905); ``video_retalking/1.mp4`` (135 frames, one keyframe) seeks
but gains nothing.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import subprocess
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _shared() -> Path:
    return Path(os.environ.get("SVGEN_SHARED", REPO.parent / "shared")).resolve()


def _synthetic(out: Path, minutes: float, variable: bool = False) -> Path:
    """The test pattern; ``variable``: every third frame held twice as long (a variable frame rate,
    as phones record: frames 40 or 80 ms apart)."""
    from svgen.preprocessing.video_io import ffmpeg_exe

    vfr = ["-vf", "setpts='(N+floor(N/3))/25/TB'", "-fps_mode", "vfr"] if variable else []
    subprocess.run([ffmpeg_exe(), "-v", "error", "-y", "-f", "lavfi",
                    "-i", f"testsrc2=size=640x360:rate=25:duration={minutes * 60:g}", *vfr, "-c:v", "libx264",
                    "-preset", "veryfast", "-g", "250", "-pix_fmt", "yuv420p", str(out)], check=True)
    return out


def _read_seconds(path: Path, info, start: int, count: int) -> float:
    from svgen.preprocessing.video_io import iter_frames_indexed

    t0 = time.perf_counter()
    n = sum(1 for _ in iter_frames_indexed(path, info=info, start=start, max_frames=count))
    assert n == count, (n, count)
    return time.perf_counter() - t0


def _decoded_before(path: Path, info, start: int) -> int:
    """Frames ffmpeg decodes to output frame ``start`` (its verbose end-of-run statistics)."""
    from svgen.preprocessing.video_io import decode_command

    cmd = decode_command(path, info, start)
    cmd[cmd.index("-v") + 1] = "verbose"
    cmd[-5:-5] = ["-frames:v", "1"]
    err = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=True).stderr
    return int(re.findall(r"(\d+) frames decoded", err)[-1])


def case(path: Path, chunk: int, repeat: int) -> dict:
    from svgen.preprocessing.video_io import probe, seek_window

    info = probe(path)
    plain = dataclasses.replace(info, clock=None)       # the decode-from-start path
    start = max(0, info.num_frames - chunk)
    count = info.num_frames - start
    seek_s, plain_s = [], []
    for _ in range(repeat):
        seek_s.append(_read_seconds(path, info, start, count))
        plain_s.append(_read_seconds(path, plain, start, count))
    return {"frames": info.num_frames, "size": f"{info.width}x{info.height}", "codec": info.codec,
            "variable_rate": info.clock is not None and info.clock.pts is not None,
            "chunk_start": start, "chunk_frames": count, "seeks": seek_window(info, start) is not None,
            "seconds_seek": round(min(seek_s), 3), "seconds_from_start": round(min(plain_s), 3),
            "speedup": round(min(plain_s) / min(seek_s), 2),
            "decoded_before_chunk_seek": _decoded_before(path, info, start),
            "decoded_before_chunk_from_start": _decoded_before(path, plain, start)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=2.0, help="length of the synthetic video")
    ap.add_argument("--chunk", type=int, default=100, help="frames in the chunk read")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    v = _shared() / "data" / "videos"
    report = {"cpu_count": os.cpu_count(), "load_before": os.getloadavg()[0], "chunk": args.chunk, "cases": {}}
    with tempfile.TemporaryDirectory() as tmp:
        inputs = {f"synthetic_{args.minutes:g}min": _synthetic(Path(tmp) / "long.mp4", args.minutes),
                  f"synthetic_{args.minutes:g}min_variable_rate": _synthetic(Path(tmp) / "vfr.mp4", args.minutes, True),
                  "video_retalking/1.mp4 (variable rate)": v / "video_retalking" / "1.mp4",
                  "latentsync/demo3_video.mp4": v / "latentsync" / "demo3_video.mp4",
                  "pyfeat/WolfgangLanger_Pexels.mp4": v / "pyfeat" / "WolfgangLanger_Pexels.mp4"}
        for name, path in inputs.items():
            if path.is_file():
                report["cases"][name] = case(path, args.chunk, args.repeat)
    report["load_after"] = os.getloadavg()[0]
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
