"""Peak memory and speed of streamed ``svgen animate`` / ``svgen sample``; prints one JSON object.

Builds an untrained 64 px ``tiny`` generator, a tiny W+ encoder and a GRU ``motion.pt`` (the paper's
sizes) in a temporary folder, then runs the commands in fresh processes and reads each one's peak
resident memory (``wait4``'s ``ru_maxrss``) and wall time:

- ``svgen animate --frames 1500`` and ``--frames 15000`` (target: peak RSS ratio <= 1.2, i.e. memory
  that does not grow with the length), frames/s of each;
- ``svgen sample --num 2 --frames F`` likewise for its ``latents.npy``.

``--src DIR`` runs the commands from another checkout (e.g. the code before streaming) for a
before/after comparison. Usage: ``python benchmarks/stream_memory.py [--frames 1500,15000] [--src DIR]``.
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


def build_models(root: Path, resolution: int = 64) -> dict:
    """generator.pt, encoder.pt and a GRU motion.pt (untrained, fixed seeds) under ``root``.

    Runs in its own process (``--build``): a child forked from a parent holding torch would count
    the parent's pages in its peak RSS."""
    import copy

    import numpy as np
    import torch
    from PIL import Image

    from svgen.inversion.encoders import build_encoder, encoder_checkpoint, make_encoder_config
    from svgen.stage1_image_gan.checkpoints import load_generator, save_generator
    from svgen.stage1_image_gan.networks import Generator
    from svgen.stage1_image_gan.presets import get_preset
    from svgen.stage2_motion.gru.model import GRUMotionConfig, MotionGenerator
    from svgen.stage2_motion.offset import fit_pca
    from svgen.utils.config import config_to_dict
    from svgen.utils.io import file_sha256, torch_save_atomic

    torch.manual_seed(0)
    preset = get_preset("tiny", resolution)
    G = Generator(preset.G)
    gen = save_generator(root / "generator.pt", preset, G, copy.deepcopy(G))
    G = load_generator(gen)
    sha = file_sha256(gen)
    E = build_encoder(make_encoder_config("w+", "tiny", G.num_ws, G.w_dim, G.img_resolution), w_avg=G.mapping.w_avg)
    torch_save_atomic(encoder_checkpoint(E, None, sha), root / "encoder.pt")
    cfg = GRUMotionConfig(num_ws=G.num_ws, w_dim=G.w_dim)
    M = MotionGenerator(cfg)
    with torch.no_grad():
        ws = G.mapping(torch.randn(512, G.z_dim), truncation_psi=1.0).numpy()
    pca = fit_pca([ws], G.num_ws, G.w_dim, n_components=32)
    torch.save({"format": "svgen-motion", "version": 1, "model": "gru", "generator_sha256": sha,
                "generator_path": str(gen), "encoder_path": str(root / "encoder.pt"), "train_fps": 25.0,
                "config": {"model": config_to_dict(cfg)}, "ema": M.state_dict(), "pca": pca.to_dict()},
               root / "motion.pt")
    photo = (np.random.default_rng(0).random((resolution, resolution, 3)) * 255).astype(np.uint8)
    Image.fromarray(photo).save(root / "photo.png")
    return {"num_ws": G.num_ws, "w_dim": G.w_dim, "resolution": resolution}


def run(args: list, src: Path) -> dict:
    """``svgen ARGS`` in a fresh process: peak RSS (MiB) and wall time (s)."""
    env = {**os.environ, "PYTHONPATH": str(src), "SVGEN_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "svgen.cli.main", *map(str, args)], env=env, cwd=src,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    err = proc.stderr.read().decode()[-500:]
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"svgen {' '.join(map(str, args))} failed: {err}")
    return {"peak_rss_mib": round(usage.ru_maxrss / 1024, 1), "wall_s": round(wall, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", default="1500,15000", help="Comma list of lengths (frames).")
    ap.add_argument("--src", type=Path, default=Path(__file__).resolve().parents[1],
                    help="Checkout whose svgen runs the commands (default: this one).")
    ap.add_argument("--skip-sample", action="store_true")
    ap.add_argument("--build", type=Path, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.build:
        print(json.dumps(build_models(a.build)))
        return
    lengths = [int(x) for x in a.frames.split(",")]
    with tempfile.TemporaryDirectory(prefix="svgen-stream-bench-") as tmp:
        root = Path(tmp)
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1"}
        shape = json.loads(subprocess.run([sys.executable, __file__, "--build", str(root)], env=env, check=True,
                                          capture_output=True, text=True).stdout)
        result = {"benchmark": "stream_memory", "src": str(a.src), "models": shape, "animate": {}, "sample": {},
                  "platform": platform.platform(), "cpus": os.cpu_count()}
        for n in lengths:
            r = run(["animate", "--identity", root / "photo.png", "--motion", root / "motion.pt", "--frames", n,
                     "--tune", "none", "--landmarks", "none", "--device", "cpu", "--out", root / f"a{n}.mp4"], a.src)
            r["frames_per_s"] = round(n / r["wall_s"], 1)
            r["npy_mib"] = round((root / f"a{n}.npy").stat().st_size / 2**20, 1)
            result["animate"][str(n)] = r
            if not a.skip_sample:
                s = run(["sample", "--motion", root / "motion.pt", "--num", 2, "--frames", n, "--device", "cpu",
                         "--out", root / f"s{n}"], a.src)
                s["npy_mib"] = round((root / f"s{n}" / "latents.npy").stat().st_size / 2**20, 1)
                result["sample"][str(n)] = s
        lo, hi = str(min(lengths)), str(max(lengths))
        result["animate_rss_ratio"] = round(result["animate"][hi]["peak_rss_mib"] / result["animate"][lo]["peak_rss_mib"], 3)
        if not a.skip_sample:
            result["sample_rss_ratio"] = round(result["sample"][hi]["peak_rss_mib"] / result["sample"][lo]["peak_rss_mib"], 3)
        result["target"] = "animate_rss_ratio <= 1.2 (peak memory independent of the number of frames)"
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
