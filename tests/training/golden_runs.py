"""Short, seeded runs of the four trainers and fingerprints of their results.

``fingerprint`` reduces every state dict (networks, EMA copies, optimizer states) to float64 sums and
sums of squares and keeps the logged losses, so two runs that did the same arithmetic compare equal
to the last bit. ``tests/training/golden_trainers.json`` holds the fingerprints made by the trainers
before they moved onto ``svgen.training`` (commit 3a1622c); ``test_golden_trainers.py`` reruns them.
Regenerate (only when a change of the numbers is intended) with
``python tests/training/golden_runs.py tests/training/golden_trainers.json``.

The runs only ever execute as this script, in the reference arithmetic of
``tests/reference_arithmetic.py`` (pinned before torch loads, so the bits do not depend on the x86-64
CPU; with the CPU's own kernels a CI machine drifted 1e-6 to 1e-2 relative in 3 to 5 steps). The
fingerprints were recorded in that mode by the code at 0b3cdd2 (= 3a1622c's trainers).
"""
from __future__ import annotations

import copy
import json
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))      # tests/: conftest, reference_arithmetic
import reference_arithmetic  # noqa: E402

if __name__ == "__main__":
    os.environ.update(reference_arithmetic.REFERENCE_ENV)         # before torch loads

import numpy as np  # noqa: E402
import torch  # noqa: E402

LOG_SKIP = ("time", "sec_per_step", "sec_per_kimg")


def _tensors(obj: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    """Flatten nested dicts/lists of tensors (state dicts, optimizer states) to name -> tensor."""
    out: dict[str, torch.Tensor] = {}
    if isinstance(obj, torch.Tensor):
        out[prefix] = obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            out.update(_tensors(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            out.update(_tensors(v, f"{prefix}.{i}"))
    return out


def digest(obj: Any) -> list[float]:
    """[sum, sum of squares, number of elements] over every float tensor in ``obj`` (float64)."""
    s = sq = 0.0
    n = 0
    for t in _tensors(obj).values():
        if not t.is_floating_point():
            continue
        d = t.detach().double()
        s += float(d.sum())
        sq += float(d.square().sum())
        n += t.numel()
    return [s, sq, n]


def read_log(path: Path) -> list[dict]:
    recs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [{k: v for k, v in r.items() if k not in LOG_SKIP} for r in recs]


def small_generator(path: Path, resolution: int = 32, seed: int = 0) -> Path:
    """An untrained small generator (w = z = 32, <= 32 channels) saved as ``generator.pt``."""
    from svgen.stage1_image_gan.checkpoints import save_generator
    from svgen.stage1_image_gan.importers import estimate_w_avg
    from svgen.stage1_image_gan.networks import Discriminator, Generator
    from svgen.stage1_image_gan.presets import DiscriminatorConfig, GeneratorConfig, TrainPreset

    preset = TrainPreset(name="tiny", batch=4,
                         G=GeneratorConfig(z_dim=32, w_dim=32, img_resolution=resolution, mapping_layers=2,
                                           channel_base=256, channel_max=32),
                         D=DiscriminatorConfig(img_resolution=resolution, channel_base=256, channel_max=32))
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        G = Generator(preset.G)
        D = Discriminator(preset.D)
    with torch.no_grad():
        G.mapping.w_avg.copy_(estimate_w_avg(G, num=256, seed=seed))
    return save_generator(path, preset, G, copy.deepcopy(G), D, meta={"note": "untrained (golden test)"})


def w_store(path: Path, generator: Path, clips: int = 2, frames: int = 24, seed: int = 0) -> Path:
    """A W-space latents.h5 of smooth random walks around mapped codes of ``generator``."""
    from svgen.inversion.latent_store import LatentStoreWriter
    from svgen.stage1_image_gan.checkpoints import load_generator
    from svgen.utils.io import file_sha256

    G = load_generator(generator)
    gen = torch.Generator().manual_seed(seed)
    w = LatentStoreWriter(path, space="w", num_ws=G.num_ws, w_dim=G.w_dim,
                          generator_sha256=file_sha256(generator), resolution=G.img_resolution)
    for c in range(clips):
        with torch.no_grad():
            base = G.mapping(torch.randn(1, G.z_dim, generator=gen), None)[:, 0]
        walk = torch.cumsum(0.05 * torch.randn(frames, G.w_dim, generator=gen), 0)
        w.create_clip(f"clip{c}", frames, fps=25.0)
        w.write(f"clip{c}", 0, (base + walk).numpy().astype(np.float32))
    return w.finalize()


def run_stage1(data: Path, out: Path) -> dict:
    """Tiny preset at 32 px with path-length regularisation and style mixing switched on, 5 steps of
    batch 4 (every lazy-regularisation phase runs, Greg twice)."""
    import dataclasses

    from svgen.stage1_image_gan.presets import get_preset
    from svgen.stage1_image_gan.train import TrainConfig, train

    # r1_gamma pinned to the value the tiny preset had when the fingerprints were recorded (the ADA
    # rule, 0.0002 * 32^2 / 4); the preset now uses gamma 1 (a hyper-parameter change, not the skeleton's)
    preset = dataclasses.replace(get_preset("tiny", 32), pl_weight=2.0, style_mixing_prob=0.5,
                                 r1_gamma=0.0002 * 32 * 32 / 4)
    cfg = TrainConfig(data=str(data), out=str(out), preset=preset, kimg=0.02,
                      snap_kimg=1.0, seed=0, swd_images=0, grid_size=4, log_every=1, device="cpu")
    ck = torch.load(train(cfg).parent / "checkpoints" / "latest.pt", weights_only=True)
    return {"G": digest(ck["G"]), "G_ema": digest(ck["G_ema"]), "D": digest(ck["D"]),
            "opt_G": digest(ck["opt_G"]), "opt_D": digest(ck["opt_D"]), "pl_mean": float(ck["pl_mean"]),
            "log": read_log(out / "log.jsonl")}


def run_encoder(generator: Path, data: Path, out: Path) -> dict:
    """e4e W+ encoder, 4 steps of batch 4 (half real), deltas unlocked during the run, latent D on."""
    from svgen.inversion.train import train_encoder

    train_encoder(generator, out, data, space="w+", preset="tiny", steps=4, batch=4, lr=2e-3, seed=0,
                  device="cpu", show_progress=False,
                  overrides={"progressive_start_kimg": 0.004, "progressive_every_kimg": 0.004, "log_every": 1,
                             "ema_kimg": 0.01})
    ck = torch.load(out / "checkpoints" / "latest.pt", weights_only=True)
    return {"E": digest(ck["E"]), "E_ema": digest(ck["E_ema"]), "optimizer": digest(ck["optimizer"]),
            "D_w": digest(ck["D_w"]), "opt_D_w": digest(ck["opt_D_w"]), "log": read_log(out / "log.jsonl")}


def run_gru(store: Path, out: Path) -> dict:
    """Small GRU, 6 critic steps of batch 4 with n_critic 2 (3 generator steps, EMA ramp-up)."""
    from svgen.stage2_motion.gru.model import GRUMotionConfig
    from svgen.stage2_motion.gru.train import GRUTrainConfig, GRUTrainer

    cfg = GRUTrainConfig(latents=str(store), out=str(out),
                         model=GRUMotionConfig(window=8, h_hidden=(32,), t_hidden=(32, 64),
                                               e_hidden=(64, 64, 32, 32, 32), c_channels=(32, 64)),
                         epochs=1000, steps=6, batch=4, stride=4, n_critic=2, snapshot_every=1000,
                         eval_windows=8, eval_long_frames=24, eval_long_num=1, log_every=1, device="cpu", seed=3)
    GRUTrainer(cfg).train()
    ck = torch.load(out / "checkpoints" / "latest.pt", weights_only=True)
    return {"G": digest(ck["G"]), "ema": digest(ck["ema"]), "critic": digest(ck["critic"]),
            "opt_G": digest(ck["opt_G"]), "opt_C": digest(ck["opt_C"]), "log": read_log(out / "log.jsonl")}


def run_styleinv(generator: Path, store: Path, data: Path, out: Path, disc: str) -> dict:
    """StyleInV at random init, 3 steps of batch 4 (R1 on step 0); ``disc`` latent or image (ADA)."""
    from svgen.stage2_motion.styleinv.data import SparseSamplingConfig
    from svgen.stage2_motion.styleinv.train import StyleInVTrainConfig, StyleInVTrainer

    cfg = StyleInVTrainConfig(latents=str(store), out=str(out), generator=str(generator),
                              data=str(data) if disc == "image" else None, disc=disc, steps=3, batch=4,
                              snapshot_every=1000, log_every=1, eval_windows=8, eval_window=8, ema_kimg=0.01,
                              sampling=SparseSamplingConfig(nframes=12), device="cpu", seed=1)
    StyleInVTrainer(cfg).train()
    ck = torch.load(out / "checkpoints" / "latest.pt", weights_only=True)
    return {"SI": digest(ck["SI"]), "ema": digest(ck["ema"]), "D": digest(ck["D"]),
            "opt_SI": digest(ck["opt_SI"]), "opt_D": digest(ck["opt_D"]), "log": read_log(out / "log.jsonl")}


def gru_store(path: Path, clips: int = 2, frames: int = 40, num_ws: int = 4, w_dim: int = 16,
              seed: int = 0) -> Path:
    """A W+ latents.h5 of a few oscillators mixed into W+ plus noise (no generator needed)."""
    from svgen.inversion.latent_store import LatentStoreWriter

    rng = np.random.default_rng(seed)
    d = num_ws * w_dim
    mix = rng.standard_normal((6, d)) / np.sqrt(6)
    w = LatentStoreWriter(path, space="w+", num_ws=num_ws, w_dim=w_dim, generator_sha256="")
    for c in range(clips):
        t = np.arange(frames)[:, None]
        z = np.concatenate([np.sin(0.3 * t + rng.uniform(0, 6, 3)), np.cos(0.2 * t + rng.uniform(0, 6, 3))], 1)
        x = z @ mix + 0.05 * rng.standard_normal((frames, d))
        w.create_clip(f"clip{c}", frames, fps=25.0)
        w.write(f"clip{c}", 0, x.reshape(frames, num_ws, w_dim).astype(np.float32))
    return w.finalize()


def run_all(root: Path, data32: Path) -> dict:
    """Every golden run, in its own folder under ``root``, on the 32 px real-frame zip ``data32``."""
    generator = small_generator(root / "generator.pt")
    wstore = w_store(root / "w.h5", generator)
    return {"stage1": run_stage1(data32, root / "stage1"),
            "encoder": run_encoder(generator, data32, root / "encoder"),
            "gru": run_gru(gru_store(root / "wplus.h5"), root / "gru"),
            "styleinv_latent": run_styleinv(generator, wstore, data32, root / "si_latent", "latent"),
            "styleinv_image": run_styleinv(generator, wstore, data32, root / "si_image", "image")}


def main(argv: list[str]) -> int:
    """Write the fingerprints of the current code to ``argv[0]`` (JSON), in the reference arithmetic."""
    import tempfile
    import time

    from conftest import build_real_frames_zip, shared_dir

    problem = reference_arithmetic.problem()
    if problem:
        print(f"golden_runs.py: {problem}", file=sys.stderr)
        return reference_arithmetic.CANNOT_PIN
    os.environ["SVGEN_NO_PROGRESS"] = "1"
    reference_arithmetic.pin_torch()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data32 = build_real_frames_zip(shared_dir(), root / "aligned.zip", size=32)
        t0 = time.time()
        result = run_all(root, data32)
        print(f"golden runs: {time.time() - t0:.1f} s", file=sys.stderr)
    Path(argv[0]).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
