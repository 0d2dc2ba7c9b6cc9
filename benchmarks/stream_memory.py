"""Peak memory and speed of streamed ``svgen animate`` / ``svgen sample``; prints one JSON object.

Builds an untrained 64 px ``tiny`` generator, a tiny W+ encoder and a GRU ``motion.pt`` (the paper's
sizes) in a temporary folder, then runs the commands in fresh processes and reads each one's peak
resident memory (``wait4``'s ``ru_maxrss``) and wall time:

- ``svgen animate --frames 1500`` and ``--frames 15000`` (target: peak RSS ratio <= 1.2, i.e. memory
  that does not grow with the length), frames/s of each;
- ``svgen sample --num 2 --frames F`` likewise for its ``latents.npy``.

``--src DIR`` runs the commands from another checkout (e.g. the code before streaming) for a
before/after comparison. ``--resolution 256`` builds full-size models instead (the ADA paper's
``paper256`` generator, 14 x 512 W+, 0.2 GB file; the IR-SE-50 W+ encoder, 209 M weights, 0.84 GB)
for the second target of issue #15: an hour (90 000 frames at 25 fps) at 256 px on CPU under 2 GB.
``--tune-steps N`` runs animate's default pivotal tuning (N steps; its memory does not grow with N).
Usage: ``python benchmarks/stream_memory.py [--frames 1500,15000] [--resolution 64|256] [--src DIR]``.

Measured 2026-12-04 at 256 px (2 shared cores, one thread, load 1.5-5), ``animate``:
- before: peak RSS 2256 MiB at 16 and at 64 frames (``--tune none``), 2884 MiB with PTI: the
  encoder checkpoint was read into memory and then copied into the module (2 x 0.84 GB), the
  generator file's ``G`` and ``G_ema`` were both read, the encoder stayed loaded while rendering,
  and PTI held two synthesis graphs at once in a glibc heap that fragments (1.9 GB for 3 steps);
- after (the encoder adopts its memory-mapped checkpoint's tensors and is let go after the
  inversion; PTI back-propagates its two terms one after the other with its temporaries mapped
  and handed back): 1336 MiB with ``--tune none`` (the peak is the inversion, the rendering phase
  ends it at 0.8 GB; this script at load 5: 1301 / 1327 MiB at 16 / 64 frames, 0.24 frames/s),
  1421 MiB with PTI (2 steps, 16 frames). Rendering: 2.4 frames/s on one
  thread at load 1.5 (an hour would take ~10 h, so the hour itself was not run). Memory is flat
  in the length: the sidecar ``.npy`` (2.4 GiB for an hour of 14 x 512) is written block by block
  with plain writes, which count in no RSS, and the 64 px runs hold it from 1500 to 15000 frames
  (1.02x)
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


def presets_for(resolution: int) -> tuple[str, str]:
    """(generator preset, encoder preset) of the models a user has at ``resolution``: the ``tiny`` pair
    up to 64 px, above it the ADA paper's 256 px generator (``paper256``: 14 x 512 W+) and the
    IR-SE-50 encoder, so that the peak memory measured is that of full-size models."""
    return ("tiny", "tiny") if resolution <= 64 else ("paper256", "ir_se50")


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
    g_preset, e_preset = presets_for(resolution)
    preset = get_preset(g_preset, resolution)
    G = Generator(preset.G)
    gen = save_generator(root / "generator.pt", preset, G, copy.deepcopy(G))
    G = load_generator(gen)
    sha = file_sha256(gen)
    E = build_encoder(make_encoder_config("w+", e_preset, G.num_ws, G.w_dim, G.img_resolution), w_avg=G.mapping.w_avg)
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
    return {"num_ws": G.num_ws, "w_dim": G.w_dim, "resolution": resolution, "generator": g_preset,
            "encoder": e_preset}


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
    ap.add_argument("--resolution", type=int, default=64,
                    help="64: tiny generator and encoder; 256: paper256 generator (14 x 512 W+) and IR-SE-50.")
    ap.add_argument("--tune-steps", type=int, default=0,
                    help="0: animate --tune none; N: --tune pti --tune-steps N (PTI's memory does not grow with N).")
    ap.add_argument("--skip-sample", action="store_true")
    ap.add_argument("--build", type=Path, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.build:
        print(json.dumps(build_models(a.build, a.resolution)))
        return
    lengths = [int(x) for x in a.frames.split(",")]
    with tempfile.TemporaryDirectory(prefix="svgen-stream-bench-") as tmp:
        root = Path(tmp)
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1"}
        shape = json.loads(subprocess.run([sys.executable, __file__, "--build", str(root),
                                           "--resolution", str(a.resolution)], env=env, check=True,
                                          capture_output=True, text=True).stdout)
        result = {"benchmark": "stream_memory", "src": str(a.src), "models": shape, "animate": {}, "sample": {},
                  "platform": platform.platform(), "cpus": os.cpu_count(), "load_before": os.getloadavg()[0]}
        tune = ["--tune", "pti", "--tune-steps", a.tune_steps] if a.tune_steps > 0 else ["--tune", "none"]
        for n in lengths:
            r = run(["animate", "--identity", root / "photo.png", "--motion", root / "motion.pt", "--frames", n,
                     *tune, "--tune-cache", root / "pti", "--landmarks", "none", "--device", "cpu",
                     "--out", root / f"a{n}.mp4"], a.src)
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
        a_lo, a_hi = result["animate"][lo], result["animate"][hi]
        if a_hi["wall_s"] > a_lo["wall_s"]:   # start-up (imports, loading, inversion, PTI) cancels out
            fps = (int(hi) - int(lo)) / (a_hi["wall_s"] - a_lo["wall_s"])
            result["animate_marginal_frames_per_s"] = round(fps, 2)
            result["animate_hour_estimate_min"] = round(90_000 / fps / 60, 1)
        result["load_after"] = os.getloadavg()[0]
        result["target"] = ("animate_rss_ratio <= 1.2 (peak memory independent of the number of frames); "
                            "at 256 px peak_rss_mib < 2048 (an hour on CPU under 2 GB)")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
