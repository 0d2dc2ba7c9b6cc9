"""Benchmark of the StyleVideoGAN GRU motion model; prints one JSON object.

- training throughput (windows/s) of the paper-sized model (t = 25, batch 32) for W+ 14x512 and
  18x512, a full step (critic WGAN-GP + generator WGAN + GAP, data streamed from latents.h5);
- the projected wall time of 350 epochs on a 10-minute clip (15 000 frames; target <= 60 min on
  2 CPU cores), for the default epoch definition (non-overlapping windows, random phase per epoch)
  and, for reference, for every start position (stride 1);
- ``svgen animate``'s total time divided by the time of rendering the same frames alone
  (target <= 1.25), with an untrained generator of the paper256 preset (256 px, 14x512) and the
  tiny encoder.

Usage: ``python benchmarks/motion.py [--steps N] [--frames N] [--skip-animate] [--device cpu|cuda]``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def synthetic_store(path: Path, num_ws: int, w_dim: int, frames: int = 2000, clips: int = 2,
                    generator_sha256: str = "") -> Path:
    """Smooth random latent trajectories (a random walk low-passed in time) in a latents.h5."""
    from svgen.inversion.latent_store import LatentStoreWriter

    rng = np.random.default_rng(0)
    w = LatentStoreWriter(path, space="w+", num_ws=num_ws, w_dim=w_dim, generator_sha256=generator_sha256)
    mean = rng.standard_normal((num_ws, w_dim)).astype(np.float32)
    basis = rng.standard_normal((16, num_ws * w_dim)).astype(np.float32) / 4
    for c in range(clips):
        z = np.cumsum(rng.standard_normal((frames, 16)), 0) * 0.05
        x = mean + (z @ basis).reshape(frames, num_ws, w_dim).astype(np.float32)
        w.create_clip(f"clip{c}", frames, fps=25.0)
        w.write(f"clip{c}", 0, x)
    return w.finalize()


def bench_training(num_ws: int, steps: int, device: str, tmp: Path) -> dict:
    from svgen.stage2_motion.gru.model import GRUMotionConfig
    from svgen.stage2_motion.gru.train import GRUTrainConfig, GRUTrainer, projected_hours
    from svgen.utils.prefetch import prefetch

    store = synthetic_store(tmp / f"lat{num_ws}.h5", num_ws, 512)
    cfg = GRUTrainConfig(latents=str(store), out=str(tmp / f"run{num_ws}"), model=GRUMotionConfig(window=25),
                         batch=32, device=device)
    tr = GRUTrainer(cfg)
    batches = tr.sampler.epoch(0)
    for _ in range(2):                                    # warm-up
        tr.train_step(torch.from_numpy(next(batches)).to(tr.device))
    if tr.device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    done = 0
    epoch = 1
    while done < steps:
        for real in prefetch(tr.sampler.epoch(epoch)):      # as GRUTrainer.train does
            tr.train_step(torch.from_numpy(real).to(tr.device))
            done += 1
            if done >= steps:
                break
        epoch += 1
    if tr.device.type == "cuda":
        torch.cuda.synchronize()
    sec = time.perf_counter() - t0
    wps = done * cfg.batch / sec
    params_G = sum(p.numel() for p in tr.G.parameters())
    params_C = sum(p.numel() for p in tr.C.parameters())
    return {"num_ws": num_ws, "w_dim": 512, "window": 25, "batch": 32, "steps_timed": done,
            "sec_per_step": round(sec / done, 4), "windows_per_s": round(wps, 2),
            "params_G": params_G, "params_critic": params_C,
            "projected_350_epochs_10min_clip_min": round(60 * projected_hours(wps), 1),
            "projected_350_epochs_10min_clip_stride1_min": round(60 * projected_hours(wps, stride=1), 1)}


def bench_animate(frames: int, device: str, tmp: Path, shared: Path) -> dict:
    from svgen.inversion.encoders import build_encoder, encoder_checkpoint, make_encoder_config
    from svgen.stage1_image_gan.checkpoints import load_generator, save_generator
    from svgen.stage1_image_gan.networks import Generator
    from svgen.stage1_image_gan.presets import get_preset
    from svgen.pipeline.animate import AnimateSettings, animate
    from svgen.stage1_image_gan.render import render_frames
    from svgen.stage2_motion.gru.model import GRUMotionConfig
    from svgen.stage2_motion.gru.train import GRUTrainConfig, train_gru
    from svgen.utils.io import file_sha256, torch_save_atomic

    preset = get_preset("paper256", 256)
    torch.manual_seed(0)
    G = Generator(preset.G)
    gen = save_generator(tmp / "generator.pt", preset, G, G, None, meta={"note": "untrained (benchmark)"})
    sha = file_sha256(gen)
    G = load_generator(gen, device=device)
    E = build_encoder(make_encoder_config("w+", "tiny", G.num_ws, G.w_dim, G.img_resolution),
                      w_avg=G.mapping.w_avg.cpu())
    enc = tmp / "encoder.pt"
    torch_save_atomic(encoder_checkpoint(E, None, sha), enc)
    store = synthetic_store(tmp / "lat_anim.h5", G.num_ws, G.w_dim, frames=200, generator_sha256=sha)
    motion = train_gru(GRUTrainConfig(latents=str(store), out=str(tmp / "motion"), model=GRUMotionConfig(),
                                      steps=1, batch=4, eval_windows=8, eval_long_num=1, eval_long_frames=50,
                                      generator=str(gen), encoder=str(enc), device=device))
    photo = shared / "data" / "photos" / "hyperstyle_aligned" / "pitt.jpg"
    out = tmp / "anim.mp4"
    t0 = time.perf_counter()
    summary = animate(AnimateSettings(identity=str(photo), out=str(out), motion=str(motion), frames=frames,
                                      fps=25, device=device))
    total = time.perf_counter() - t0
    lat = np.load(out.with_suffix(".npy"))
    t0 = time.perf_counter()
    for _ in render_frames(G, lat, batch=8):
        pass
    render = time.perf_counter() - t0
    return {"generator": "paper256 (untrained, 256 px, 14x512)", "encoder": "tiny (untrained)",
            "frames": frames, "animate_total_s": round(total, 2), "render_only_s": round(render, 2),
            "ratio": round(total / render, 3), "animate_phases_s": summary["timing_s"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=10, help="timed training steps per configuration")
    ap.add_argument("--frames", type=int, default=100, help="frames for the animate measurement")
    ap.add_argument("--skip-animate", action="store_true")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    os.environ.setdefault("SVGEN_NO_PROGRESS", "1")
    repo = Path(__file__).resolve().parents[1]
    shared = Path(os.environ.get("SVGEN_SHARED", repo.parent / "shared"))
    result: dict = {"benchmark": "motion (StyleVideoGAN GRU)", "device": args.device,
                    "torch": torch.__version__, "threads": torch.get_num_threads(),
                    "cpu": platform.processor() or platform.machine(), "python": sys.version.split()[0]}
    with tempfile.TemporaryDirectory(prefix="svgen-bench-motion-") as tmp:
        tmp = Path(tmp)
        result["training"] = [bench_training(n, args.steps, args.device, tmp) for n in (14, 18)]
        result["target_350_epochs_min"] = 60
        if not args.skip_animate:
            if (shared / "data").is_dir():
                result["animate"] = bench_animate(args.frames, args.device, tmp, shared)
            else:
                result["animate"] = {"skipped": f"shared data not found at {shared}"}
            result["target_animate_ratio"] = 1.25
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
