"""``svgen preprocess --workers 2`` against ``--workers 1``: frames/s on this machine, printed as JSON.

Two inputs from ``$SVGEN_SHARED/data/videos``:
- ``videos``: the 24 MEAD clips of ``dreamtalk_mead`` (256x256, ~100 frames each): workers take whole videos;
- ``long``: one video, ``dpe/d.mp4`` (256x256, 334 frames) with ``--chunk-frames 84``: workers take
  chunks (measure, one stabiliser pass, render).

Each run is the whole ``preprocess_videos`` call as a user runs it (worker start-up and the landmark
model's load included), in a fresh process, best of ``--repeat``; ``cpu_s`` adds up the CPU time of the
process, its workers and ffmpeg, so the work that parallel runs add (start-up, second decode of
chunks, a fresh detection per chunk) shows even on a loaded machine. The load average of the machine
before and after each pair is printed beside the figures: on a shared machine the ratio is only
meaningful when the load stays below the core count. Target (issue #15): workers 2 >= 1.7 x workers 1
on 2 cores. Run: ``.venv/bin/python benchmarks/preprocess_workers.py [--quick]``.

Measured 2026-12-04 (quiet machine, 64 px): ``--quick`` 135 -> 238 frames/s = 1.76x, all 24 clips
188 -> 292 = 1.55x, ``d.mp4`` in chunks 127-161 -> 138-165 = 1.03-1.08x. Why not more: one worker
already keeps 1.13-1.15 cores busy (tracking 3.1 ms, warping 1.5 ms, PNG 0.1 ms per frame on its
threads, ffmpeg's decoding 0.85 CPU-ms in its own process), so two on 2 cores reach at most 1.74x;
and the landmark model's load (0.71 CPU-s, once, before the workers fork) is serial. The parallel
path adds no CPU work (``cpu_ratio`` 0.82-1.0).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _shared() -> Path:
    return Path(os.environ.get("SVGEN_SHARED", REPO.parent / "shared")).resolve()


def _inputs(quick: bool) -> dict:
    v = _shared() / "data" / "videos"
    mead = sorted((v / "dreamtalk_mead").glob("*.mp4"))
    return {"videos": {"videos": [str(p) for p in (mead[:6] if quick else mead)], "chunk_frames": 1500},
            "long": {"videos": [str(v / "dpe" / "d.mp4")], "chunk_frames": 84}}


def worker(spec: dict) -> dict:
    """One timed ``preprocess_videos`` call in this (fresh) process."""
    os.environ["SVGEN_NO_PROGRESS"] = "1"
    from svgen.preprocessing.videos import preprocess_videos

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        summary = preprocess_videos(spec["videos"], Path(tmp) / "aligned.zip", size=spec["size"],
                                    workers=spec["workers"], chunk_frames=spec["chunk_frames"],
                                    show_progress=False)
        wall = time.perf_counter() - t0
    return {"frames": summary["frames"], "seconds": round(wall, 2), "fps": round(summary["frames"] / wall, 1)}


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _run(spec: dict) -> dict:
    """One fresh process; ``cpu_s`` is its CPU time with its workers' and ffmpeg's (all waited for)."""
    cpu0 = _children_cpu()
    out = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)], capture_output=True,
                         text=True, check=True, env=dict(os.environ, PYTHONPATH=str(REPO)))
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["cpu_s"] = round(_children_cpu() - cpu0, 2)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="6 MEAD clips instead of 24")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    report = {"cpu_count": os.cpu_count(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
              "size": args.size, "target_speedup": 1.7, "cases": {}}
    for name, spec in _inputs(args.quick).items():
        case: dict = {"inputs": len(spec["videos"]), "chunk_frames": spec["chunk_frames"],
                      "load_before": os.getloadavg()[0]}
        for workers in (1, 2):
            runs = [_run({**spec, "size": args.size, "workers": workers}) for _ in range(args.repeat)]
            case[f"workers{workers}"] = max(runs, key=lambda r: r["fps"])
        case["load_after"] = os.getloadavg()[0]
        case["speedup"] = round(case["workers2"]["fps"] / case["workers1"]["fps"], 2)
        # the work parallel runs add (1.0 = none); less sensitive to other load than the wall times
        case["cpu_ratio"] = round(case["workers2"]["cpu_s"] / max(case["workers1"]["cpu_s"], 1e-9), 2)
        report["cases"][name] = case
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
