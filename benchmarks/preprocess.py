"""Preprocessing speed and memory on this machine, printed as JSON (never part of the test run).

For a 512x512 clip and a 1080x1920 HEVC clip from ``$SVGEN_SHARED/data/videos``:
- decode-only frames/s (``video_io.iter_frames``, the same decoder the pipeline uses);
- ``preprocess_videos`` frames/s at ``--size`` (tracking, stabilisation, warp, PNG, zip), the
  landmark model loaded beforehand (load time reported separately);
- CPU milliseconds per frame (this process + ffmpeg), which is less sensitive to other load,
  and per stage (read from the decoder, landmarks + tracking, warp, PNG) run one after another;
- peak RSS of a fresh process preprocessing N frames and 4N frames (memory must not grow with
  the video's length).

Target: preprocess >= 0.5 x decode-only frames/s on 2 cores. Each figure is the best of
``--repeat`` runs in a fresh process. Run: ``.venv/bin/python benchmarks/preprocess.py [--quick]``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VIDEOS = {
    "512x512": "sadtalker/WDA_KatieHill_000.mp4",
    "1080x1920": "latentsync/demo2_video.mp4",
}


def _shared() -> Path:
    return Path(os.environ.get("SVGEN_SHARED", REPO.parent / "shared")).resolve()


def _cpu_seconds() -> float:
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def worker(mode: str, video: str, size: int, max_frames: int | None) -> dict:
    """One measurement in this (fresh) process."""
    os.environ["SVGEN_NO_PROGRESS"] = "1"
    from svgen.preprocessing.video_io import iter_frames

    result: dict = {"mode": mode}
    if mode == "stages":
        return _stages(video, size, max_frames or 60)
    if mode == "decode":
        cpu0, t0 = _cpu_seconds(), time.perf_counter()
        n = sum(1 for _ in iter_frames(video, max_frames=max_frames))
        wall = time.perf_counter() - t0
    else:
        from svgen.preprocessing.landmarks import DlibLandmarks
        from svgen.preprocessing.videos import preprocess_videos

        t0 = time.perf_counter()
        backend = DlibLandmarks("hog")
        result["model_load_s"] = round(time.perf_counter() - t0, 3)
        with tempfile.TemporaryDirectory() as tmp:
            cpu0, t0 = _cpu_seconds(), time.perf_counter()
            summary = preprocess_videos([video], Path(tmp) / "aligned.zip", size=size, max_frames=max_frames,
                                        show_progress=False, backend=backend)
            wall = time.perf_counter() - t0
            result["zip_mb"] = round((Path(tmp) / "aligned.zip").stat().st_size / 2 ** 20, 2)
        n = summary["frames"]
        result["kept"] = summary["kept"]
    cpu = _cpu_seconds() - cpu0
    result.update(frames=n, seconds=round(wall, 3), fps=round(n / wall, 1),
                  cpu_ms_per_frame=round(1000 * cpu / max(n, 1), 2),
                  peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1))
    return result


def _stages(video: str, size: int, n: int) -> dict:
    """CPU ms per frame of each stage run one after the other in one thread (where time goes)."""
    from svgen.preprocessing.alignment import eye_corner_transform, quad_from_transform, warp_quad
    from svgen.preprocessing.dataset import encode_png
    from svgen.preprocessing.landmarks import DlibLandmarks, FaceTracker
    from svgen.preprocessing.video_io import iter_frames

    tracker = FaceTracker(DlibLandmarks("hog"))
    cost = {"decode_read": 0.0, "landmarks": 0.0, "warp": 0.0, "png": 0.0}
    frames = iter_frames(video, max_frames=n)
    count = 0
    while True:
        t = time.process_time()
        frame = next(frames, None)
        cost["decode_read"] += time.process_time() - t  # this process only (ffmpeg runs apart)
        if frame is None:
            break
        t = time.process_time()
        lm = tracker(frame)
        cost["landmarks"] += time.process_time() - t
        if lm is None:
            continue
        t = time.process_time()
        crop = warp_quad(frame, quad_from_transform(*eye_corner_transform(lm)[:2]), size, quality="fast")
        cost["warp"] += time.process_time() - t
        t = time.process_time()
        encode_png(crop)
        cost["png"] += time.process_time() - t
        count += 1
    return {"mode": "stages", "frames": count, **{k: round(1000 * v / max(count, 1), 2) for k, v in cost.items()}}


def _run_worker(mode: str, video: Path, size: int, max_frames: int | None) -> dict:
    cmd = [sys.executable, __file__, "--worker", mode, "--video", str(video), "--size", str(size)]
    if max_frames:
        cmd += ["--max-frames", str(max_frames)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=REPO)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer frames and repeats")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--worker", choices=["decode", "preprocess", "stages"], help=argparse.SUPPRESS)
    ap.add_argument("--video", help=argparse.SUPPRESS)
    ap.add_argument("--max-frames", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.video, args.size, args.max_frames)))
        return

    videos_dir = _shared() / "data" / "videos"
    repeat = 1 if args.quick else args.repeat
    report: dict = {
        "benchmark": "preprocess",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_avg_start": [round(x, 2) for x in os.getloadavg()]},
        "size": args.size,
        "videos": {},
    }
    for label, rel in VIDEOS.items():
        video = videos_dir / rel
        if not video.is_file():
            report["videos"][label] = {"error": f"missing {video}"}
            continue
        limit = 100 if args.quick else None
        dec = max((_run_worker("decode", video, args.size, limit) for _ in range(repeat)),
                  key=lambda r: r["fps"])
        pre = max((_run_worker("preprocess", video, args.size, limit) for _ in range(repeat)),
                  key=lambda r: r["fps"])
        report["videos"][label] = {
            "file": rel,
            "frames": pre["frames"],
            "decode_fps": dec["fps"],
            "preprocess_fps": pre["fps"],
            "ratio_to_decode": round(pre["fps"] / dec["fps"], 3),
            "decode_cpu_ms_per_frame": dec["cpu_ms_per_frame"],
            "preprocess_cpu_ms_per_frame": pre["cpu_ms_per_frame"],
            "model_load_s": pre["model_load_s"],
            "zip_mb": pre["zip_mb"],
            "stage_cpu_ms_per_frame": {k: v for k, v in _run_worker("stages", video, args.size, 60).items()
                                       if k not in ("mode", "frames")},
        }
    # memory vs length on the 1080p clip: N frames vs 4N frames
    video = videos_dir / VIDEOS["1080x1920"]
    if video.is_file():
        n = 60 if args.quick else 120
        short = _run_worker("preprocess", video, args.size, n)
        long = _run_worker("preprocess", video, args.size, 4 * n)
        report["memory"] = {"video": VIDEOS["1080x1920"], f"peak_rss_mb_{n}_frames": short["peak_rss_mb"],
                            f"peak_rss_mb_{4 * n}_frames": long["peak_rss_mb"],
                            "growth_mb": round(long["peak_rss_mb"] - short["peak_rss_mb"], 1)}
    report["machine"]["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
    report["target"] = "preprocess_fps >= 0.5 * decode_fps on 2 cores; memory independent of length"
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
