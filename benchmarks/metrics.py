"""Metric costs on this machine, printed as JSON (never part of the test run).

- Fréchet distance: sqrtm vs svd at the I3D (400) and Inception (2048) feature sizes, and their
  agreement on full-rank statistics;
- streaming statistics: features/s of RunningGaussian.update at 400 and 2048 dims;
- latent FD at StyleVideoGAN sizes (W+ 14 x 512, window 25, 128 real / 128 fake windows): fit and call;
- loop score of a 256-frame W+ trajectory;
- ACD: seconds per frame of the dlib pipeline (detector + 5-point shape + ResNet) at 256 px.

Run: ``.venv/bin/python benchmarks/metrics.py [--quick]``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np


def _time(fn, repeat: int = 1) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def bench_frechet(dims: list[int]) -> dict:
    from svgen.metrics.frechet import frechet_distance, gaussian_stats

    rng = np.random.default_rng(0)
    out = {}
    for d in dims:
        mu1, s1 = gaussian_stats(rng.standard_normal((2 * d + 100, d)))
        mu2, s2 = gaussian_stats(rng.standard_normal((2 * d + 100, d)) * 1.1 + 0.1)
        vals, times = {}, {}
        for method in ("sqrtm", "svd"):
            times[method] = _time(lambda m=method: vals.__setitem__(m, frechet_distance(mu1, s1, mu2, s2, m)))
        out[str(d)] = {"sqrtm_s": round(times["sqrtm"], 4), "svd_s": round(times["svd"], 4),
                       "rel_diff": abs(vals["sqrtm"] - vals["svd"]) / max(abs(vals["sqrtm"]), 1e-12)}
    return out


def bench_running(dims: list[int], n: int) -> dict:
    from svgen.metrics.frechet import RunningGaussian

    rng = np.random.default_rng(1)
    out = {}
    for d in dims:
        x = rng.standard_normal((n, d))
        g = RunningGaussian(d)
        t = _time(lambda: [g.update(x[i:i + 128]) for i in range(0, n, 128)])
        out[str(d)] = {"features_per_s": round(n / t, 1)}
    return out


def bench_latent(windows: int) -> dict:
    from svgen.metrics.latent_fd import LatentFD
    from svgen.metrics.looping import loop_score

    rng = np.random.default_rng(2)
    real = rng.standard_normal((windows, 25, 14, 512)).astype(np.float32).cumsum(axis=1)
    fake = rng.standard_normal((windows, 25, 14, 512)).astype(np.float32).cumsum(axis=1)
    holder = {}
    fit = _time(lambda: holder.__setitem__("m", LatentFD(real)))
    call = _time(lambda: holder["m"](fake), repeat=3)
    traj = rng.standard_normal((256, 14, 512)).cumsum(axis=0)
    loop = _time(lambda: loop_score(traj, 25), repeat=3)
    return {"latent_fd_fit_s": round(fit, 4), "latent_fd_call_s": round(call, 4), "windows": windows,
            "loop_score_256f_s": round(loop, 4)}


def bench_acd(frames: int) -> dict:
    from PIL import Image

    from svgen.metrics.acd import FaceEmbedder

    root = os.path.join(os.environ.get("SVGEN_SHARED", os.path.join(os.path.dirname(__file__), "..", "..", "shared")),
                        "data", "photos", "hyperstyle_aligned")
    files = sorted(f for f in os.listdir(root) if f.endswith(".jpg"))[:frames] if os.path.isdir(root) else []
    if not files:
        return {"skipped": f"no photos under {root}"}
    imgs = [np.asarray(Image.open(os.path.join(root, f)).convert("RGB").resize((256, 256))) for f in files]
    emb = FaceEmbedder()
    t = _time(lambda: [emb.embed(im, aligned=True) for im in imgs])
    return {"seconds_per_frame_256px": round(t / len(imgs), 4), "frames": len(imgs)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="smaller sizes (seconds)")
    args = ap.parse_args()
    dims = [400] if args.quick else [400, 2048]
    result = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "frechet": bench_frechet(dims),
        "running_gaussian": bench_running(dims, 4096 if args.quick else 20480),
        "latent": bench_latent(32 if args.quick else 128),
        "acd": bench_acd(4 if args.quick else 15),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
