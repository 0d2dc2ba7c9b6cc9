"""Inversion speed and memory on this machine, printed as JSON (never part of the test run).

- encoder frames/s (no grad), W+ and W: the ``tiny`` preset at 32 and 64 px, and the 50-layer
  IR-SE layout at 256 px (pSp's input size; a 256 px StyleGAN2 has 14 W+ entries of 512);
- the ``svgen invert`` pipeline (``invert_dataset``: zip decode on a reader thread, encoder, HDF5
  write on a writer thread) on real frames against the encoder alone on the same, pre-decoded
  frames, both timed alternately in one process (best of ``--reps``): the ratio is the target
  (>= 0.9). Networks are untrained: speed does not depend on training;
- peak RSS (VmHWM) of a fresh process running the pipeline on a short input and on a 10x longer
  one: memory must not grow with the video length.

Run: ``.venv/bin/python benchmarks/inversion.py [--quick]`` (``--quick`` skips the 256 px pipeline).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]


def _shared() -> Path:
    return Path(os.environ.get("SVGEN_SHARED", REPO.parent / "shared")).resolve()


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM; ru_maxrss would include the parent's at fork)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def encoder_fps(space: str, preset: str, num_ws: int, w_dim: int, resolution: int, batch: int,
                seconds: float) -> float:
    """Frames/s of ``E.encode`` on random images at the encoder's input size (best window)."""
    from svgen.inversion.encoders import build_encoder, make_encoder_config

    E = build_encoder(make_encoder_config(space, preset, num_ws, w_dim, resolution)).eval()
    x = torch.rand(batch, 3, E.resolution, E.resolution) * 2 - 1
    best = 0.0
    with torch.no_grad():
        E.encode(x)  # warm-up
        end = time.perf_counter() + seconds
        while True:
            t0 = time.perf_counter()
            E.encode(x)
            best = max(best, batch / (time.perf_counter() - t0))
            if time.perf_counter() > end:
                break
    return best


def real_frames(size: int, count: int) -> np.ndarray:
    """``count`` real MEAD frames at ``size`` px (the clip is cycled when it is shorter)."""
    from PIL import Image

    from svgen.preprocessing.video_io import iter_frames

    src = _shared() / "data" / "videos" / "dreamtalk_mead" / "M030_front_neutral_level1_001.mp4"
    frames = [np.asarray(Image.fromarray(np.ascontiguousarray(f)).resize((size, size), Image.LANCZOS))
              for f in iter_frames(src, max_frames=min(count, 100))]
    return np.stack([frames[i % len(frames)] for i in range(count)])


def make_setup(folder: Path, name: str, preset: str, enc_preset: str, space: str, size: int,
               lengths: dict) -> dict:
    """Untrained generator + encoder files and aligned zips of the given lengths."""
    import copy

    from svgen.inversion.encoders import build_encoder, encoder_checkpoint, make_encoder_config
    from svgen.preprocessing.dataset import AlignedDatasetWriter
    from svgen.stage1_image_gan.checkpoints import save_generator
    from svgen.stage1_image_gan.networks import Generator
    from svgen.stage1_image_gan.presets import get_preset
    from svgen.utils.io import file_sha256, torch_save_atomic

    torch.manual_seed(0)
    gp = get_preset(preset, size)
    G = Generator(gp.G).eval()
    gpath = save_generator(folder / f"{name}_G.pt", gp, G, copy.deepcopy(G))
    E = build_encoder(make_encoder_config(space, enc_preset, G.num_ws, G.w_dim, size), G.mapping.w_avg)
    epath = folder / f"{name}_E.pt"
    torch_save_atomic(encoder_checkpoint(E, None, file_sha256(gpath)), epath)
    pool = real_frames(size, min(max(lengths.values()), 100))
    data = {}
    for key, n in lengths.items():
        path = folder / f"{name}_{key}.zip"
        with AlignedDatasetWriter(path, size) as w:
            w.add_clip("clip", fps=25.0)
            for i in range(n):
                w.add_frame("clip", pool[i % len(pool)])
        data[key] = str(path)
    return {"generator": str(gpath), "encoder": str(epath), "data": data}


def _load(args: argparse.Namespace):
    from svgen.inversion.encoders import load_encoder
    from svgen.stage1_image_gan.checkpoints import load_generator
    from svgen.utils.io import file_sha256

    return (load_generator(args.generator), load_encoder(args.encoder),
            file_sha256(args.generator), file_sha256(args.encoder))


def worker_rss(args: argparse.Namespace) -> dict:
    """One pipeline run in this fresh process; its peak RSS."""
    from svgen.inversion.api import invert_dataset

    G, E, g_sha, e_sha = _load(args)
    t0 = time.perf_counter()
    invert_dataset(G, E, args.data, args.out, generator_sha256=g_sha, encoder_sha256=e_sha,
                   batch=args.batch, show_progress=False)
    return {"seconds": time.perf_counter() - t0, "peak_rss_mb": peak_rss_mb()}


def worker_ratio(args: argparse.Namespace) -> dict:
    """Pipeline vs encoder-only on the same frames, alternately, best of ``reps`` each."""
    from svgen.inversion.api import images_to_tensor, invert_dataset
    from svgen.preprocessing.dataset import AlignedDataset

    G, E, g_sha, e_sha = _load(args)
    ds = AlignedDataset(args.data)
    n = len(ds)
    x = images_to_tensor(np.stack([ds[i] for i in range(n)]), E.resolution, torch.device("cpu"))
    ds.close()
    t_enc, t_pipe = [], []
    with torch.no_grad():
        E.encode(x[:args.batch])
    for rep in range(args.reps):
        t0 = time.perf_counter()
        with torch.no_grad():
            for a in range(0, n, args.batch):
                E.encode(x[a:a + args.batch])
        t_enc.append(time.perf_counter() - t0)
        out = Path(args.out).with_name(f"{Path(args.out).stem}_{rep}.h5")
        t0 = time.perf_counter()
        invert_dataset(G, E, args.data, out, generator_sha256=g_sha, encoder_sha256=e_sha,
                       batch=args.batch, show_progress=False)
        t_pipe.append(time.perf_counter() - t0)
        out.unlink()
    return {"frames": n, "encoder_only_fps": n / min(t_enc), "pipeline_fps": n / min(t_pipe)}


def run_worker(mode: str, setup: dict, data_key: str, folder: Path, batch: int, reps: int) -> dict:
    env = dict(os.environ, SVGEN_NO_PROGRESS="1")
    cmd = [sys.executable, __file__, "--worker", mode, "--generator", setup["generator"],
           "--encoder", setup["encoder"], "--data", setup["data"][data_key],
           "--out", str(folder / f"{mode}_{data_key}.h5"), "--batch", str(batch), "--reps", str(reps)]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if res.returncode != 0:
        sys.exit(f"benchmark worker failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="shorter timings, no 256 px pipeline")
    ap.add_argument("--worker", choices=["rss", "ratio"], help=argparse.SUPPRESS)
    for opt in ("--generator", "--encoder", "--data", "--out"):
        ap.add_argument(opt, help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, default=16, help=argparse.SUPPRESS)
    ap.add_argument("--reps", type=int, default=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker_rss(args) if args.worker == "rss" else worker_ratio(args)))
        return
    seconds = 1.0 if args.quick else 3.0
    reps = 2 if args.quick else 3
    report: dict = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                                "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
                                "load_avg_1min": round(os.getloadavg()[0], 2)}}
    enc = {}
    for space in ("w+", "w"):
        key = space.replace("+", "plus")
        enc[f"tiny_32px_{key}"] = round(encoder_fps(space, "tiny", 8, 128, 32, 16, seconds), 1)
        enc[f"tiny_64px_{key}"] = round(encoder_fps(space, "tiny", 10, 128, 64, 16, seconds), 1)
        enc[f"ir_se50_256px_{key}"] = round(encoder_fps(space, "ir_se50", 14, 512, 256, 2, seconds), 2)
    report["encoder_frames_per_s"] = enc

    n_short = 64 if args.quick else 160
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        pipes = {}
        cases = [("tiny_32px_wplus", "tiny", "tiny", "w+", 32, 16),
                 ("tiny_64px_wplus", "tiny", "tiny", "w+", 64, 16)]
        if not args.quick:
            cases.append(("ir_se50_256px_w", "paper256", "ir_se50", "w", 256, 4))
        for name, gpre, epre, space, size, batch in cases:
            n = n_short if size < 256 else 12
            setup = make_setup(folder, name, gpre, epre, space, size, {"short": n, "long": 10 * n})
            r = run_worker("ratio", setup, "short" if size == 256 else "long", folder, batch, reps)
            pipes[name] = {"frames": r["frames"], "batch": batch,
                           "encoder_only_frames_per_s": round(r["encoder_only_fps"], 2),
                           "invert_frames_per_s": round(r["pipeline_fps"], 2),
                           "ratio": round(r["pipeline_fps"] / r["encoder_only_fps"], 3)}
            if name == "tiny_32px_wplus":
                short = run_worker("rss", setup, "short", folder, batch, 1)
                long = run_worker("rss", setup, "long", folder, batch, 1)
                report["invert_peak_rss_mb"] = {
                    f"short_{n}_frames": round(short["peak_rss_mb"], 1),
                    f"long_{10 * n}_frames": round(long["peak_rss_mb"], 1),
                    "growth_mb": round(long["peak_rss_mb"] - short["peak_rss_mb"], 1)}
        report["invert_pipeline"] = dict(pipes, target_ratio=0.9)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
