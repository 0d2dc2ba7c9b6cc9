"""StyleInV costs on this machine, printed as JSON (never part of the test run).

- one training iteration (SI step + D step, R1 amortised over its interval of 16) in ``latent`` and
  ``image`` discriminator mode at the same batch, and their ratio (target: latent <= 0.1 x image);
- sampling speed at 256 frames: latent trajectories per second (encoder only) and with every
  frame rendered through the generator.

Networks are untrained (speed does not depend on the weights); data are synthetic: smooth latent
trajectories around mapping(z) and the frames the generator renders for them.

Run: ``.venv/bin/python benchmarks/styleinv.py [--preset tiny|paper256] [--batch 8] [--device auto]``.
``tiny`` is the 32 px CPU preset of the tests (IR-SE ``tiny`` backbone); ``paper256`` is the
published 256 px StyleGAN2 with the IR-SE-50 encoder and the paper's StyleInV widths (use a GPU).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_assets(root: Path, preset: str, device: torch.device, clips: int = 2, frames: int = 48) -> dict:
    """generator.pt, latents.h5 (W) and the matching aligned.zip in ``root``."""
    from svgen.inversion.latent_store import LatentStoreWriter
    from svgen.preprocessing.dataset import AlignedDatasetWriter
    from svgen.stage1_image_gan.checkpoints import make_generator_checkpoint
    from svgen.stage1_image_gan.networks import Generator
    from svgen.stage1_image_gan.presets import get_preset
    from svgen.utils.io import file_sha256, torch_save_atomic

    torch.manual_seed(0)
    p = get_preset(preset) if preset != "tiny" else get_preset("tiny", 32)
    G = Generator(p.G).eval()
    gen = root / "generator.pt"
    torch_save_atomic(make_generator_checkpoint(p, G, G), gen)
    G = G.to(device).requires_grad_(False)
    rng = np.random.default_rng(0)
    lat = LatentStoreWriter(root / "latents.h5", space="w", num_ws=G.num_ws, w_dim=G.w_dim,
                            generator_sha256=file_sha256(gen), resolution=G.img_resolution)
    with AlignedDatasetWriter(root / "aligned.zip", G.img_resolution) as ds:
        for c in range(clips):
            with torch.no_grad():
                w0 = G.mapping(torch.randn(1, G.z_dim, device=device))[0, 0].cpu().numpy()
            t = np.arange(frames)[:, None] / 25.0
            dirs = rng.standard_normal((3, G.w_dim)) * 0.3
            traj = (w0 + np.sin(2 * np.pi * 0.7 * t) * dirs[0] + np.sin(2 * np.pi * 1.3 * t + 1) * dirs[1]
                    + np.cos(2 * np.pi * 0.4 * t) * dirs[2]).astype(np.float32)
            lat.create_clip(f"clip{c}", frames, fps=25.0)
            lat.write(f"clip{c}", 0, traj)
            ds.add_clip(f"clip{c}", fps=25.0)
            for a in range(0, frames, 8):
                w = torch.from_numpy(traj[a:a + 8]).to(device)
                with torch.no_grad():
                    img = G.synthesis(w[:, None].expand(-1, G.num_ws, -1), noise_mode="const")
                img = ((img.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
                for f in img:
                    ds.add_frame(f"clip{c}", f)
    lat.finalize()
    return {"generator": str(gen), "latents": str(root / "latents.h5"), "data": str(root / "aligned.zip")}


def bench_iteration(assets: dict, out: Path, disc: str, batch: int, iters: int, device: torch.device) -> dict:
    from svgen.stage2_motion.styleinv.train import StyleInVTrainConfig, StyleInVTrainer

    cfg = StyleInVTrainConfig(latents=assets["latents"], out=str(out / disc), generator=assets["generator"],
                              data=assets["data"], disc=disc, batch=batch, steps=10 ** 6, device=str(device))
    tr = StyleInVTrainer(cfg)
    tr.si.train()
    tr.D.train()
    times, r1_times = [], []
    for i in range(iters + 2):
        _sync(device)
        t0 = time.perf_counter()
        tr.train_step()
        _sync(device)
        dt = time.perf_counter() - t0
        if i == 0:
            r1_times.append(dt)      # step 0 runs the lazy R1 too (and warms up)
        elif i >= 2:
            times.append(dt)
    t_main = float(np.median(times)) if times else r1_times[0]
    t_r1 = max(0.0, r1_times[0] - t_main)
    amortised = t_main + t_r1 / cfg.r1_interval
    return {"iter_s": round(amortised, 4), "iter_s_no_r1": round(t_main, 4), "r1_extra_s": round(t_r1, 4),
            "si_params": sum(p.numel() for p in tr.si.parameters()),
            "d_params": sum(p.numel() for p in tr.D.parameters()), "trainer": tr}


def bench_sampling(tr, frames: int, device: torch.device) -> dict:
    M = tr.motion_model()
    M.sample_w(1, 16, seed=0)                                # warm-up
    _sync(device)
    t0 = time.perf_counter()
    w = M.sample_w(1, frames, seed=1)
    _sync(device)
    t_lat = time.perf_counter() - t0
    t0 = time.perf_counter()
    with torch.no_grad():
        for a in range(0, frames, 32):
            tr.render(w[0, a:a + 32].to(device))
    _sync(device)
    t_render = time.perf_counter() - t0
    return {"frames": frames, "latent_frames_per_s": round(frames / t_lat, 2),
            "rendered_frames_per_s": round(frames / (t_lat + t_render), 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", choices=["tiny", "paper256"], default="tiny")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--frames", type=int, default=256)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    os.environ.setdefault("SVGEN_NO_PROGRESS", "1")
    from svgen.utils.device import select_device

    device = select_device(args.device)
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        assets = make_assets(root, args.preset, device)
        lat = bench_iteration(assets, root, "latent", args.batch, args.iters, device)
        img = bench_iteration(assets, root, "image", args.batch, args.iters, device)
        sampling = bench_sampling(lat.pop("trainer"), args.frames, device)
        img.pop("trainer")
    ratio = lat["iter_s"] / img["iter_s"]
    print(json.dumps({
        "benchmark": "styleinv", "preset": args.preset, "batch": args.batch, "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "cpu_threads": torch.get_num_threads(), "machine": platform.machine(), "torch": torch.__version__,
        "latent_mode": lat, "image_mode": img,
        "latent_over_image": round(ratio, 4),
        "target_latent_over_image": 0.1, "meets_target": ratio <= 0.1,
        "sampling_256": sampling,
    }, indent=2))


if __name__ == "__main__":
    main()
