"""Writes the legacy checkpoints of this folder and the outputs they must keep giving.

Run once with the code of commit 3a1622c (before the trainers moved onto ``svgen.training`` and the
layers onto ``svgen.nn``); ``tests/training/test_legacy_checkpoints.py`` loads the files with today's
code and compares. Sizes are kept to tens of KB: a 16 px generator with 16-dimensional W, an encoder
with an 8-channel backbone, a GRU and a StyleInV model of matching size, each trained 2 steps by its
trainer (so the files have exactly the layout the trainers wrote).

    python tests/data/legacy/make_legacy.py tests/data/legacy
"""
from __future__ import annotations

import copy
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch


def make(dst: Path, tmp: Path) -> None:
    from svgen.inversion.backbone import BackboneConfig
    from svgen.inversion.encoders import build_encoder, encoder_checkpoint, load_encoder, make_encoder_config
    from svgen.inversion.latent_store import LatentStoreWriter
    from svgen.stage1_image_gan.checkpoints import load_generator, save_generator
    from svgen.stage1_image_gan.importers import estimate_w_avg
    from svgen.stage1_image_gan.networks import Generator
    from svgen.stage1_image_gan.presets import DiscriminatorConfig, GeneratorConfig, TrainPreset
    from svgen.stage2_motion import load_motion
    from svgen.stage2_motion.gru import GRUMotionConfig
    from svgen.stage2_motion.styleinv import EncoderConfig as SIEncoderConfig
    from svgen.stage2_motion.styleinv import styleinv_config_for
    from svgen.stage2_motion.styleinv_data import SparseSamplingConfig
    from svgen.stage2_motion.styleinv_disc import DiscConfig
    from svgen.stage2_motion.styleinv_train import StyleInVTrainConfig, StyleInVTrainer
    from svgen.stage2_motion.train import GRUTrainConfig, GRUTrainer
    from svgen.utils.io import file_sha256

    torch.manual_seed(0)
    expected: dict = {}

    # generator.pt: 16 px, z = w = 16, G_ema = G perturbed (so the file tells them apart)
    preset = TrainPreset(name="tiny", batch=4,
                         G=GeneratorConfig(z_dim=16, w_dim=16, img_resolution=16, mapping_layers=2,
                                           channel_base=64, channel_max=8),
                         D=DiscriminatorConfig(img_resolution=16, channel_base=64, channel_max=8))
    G = Generator(preset.G)
    with torch.no_grad():
        G.mapping.w_avg.copy_(estimate_w_avg(G, num=256, seed=0))
        G_ema = copy.deepcopy(G)
        for p in G_ema.parameters():
            p.add_(0.01 * torch.randn_like(p))
    gen_path = save_generator(dst / "generator.pt", preset, G, G_ema, None, meta={"note": "legacy test file"})
    G = load_generator(gen_path)
    z = torch.randn(3, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ws = G.mapping(z, None, truncation_psi=0.7)
        expected["generator_ws"] = ws
        expected["generator_img"] = G.synthesis(ws, noise_mode="const")
    g_sha = file_sha256(gen_path)

    # encoder.pt: e4e W+ encoder with an 8-channel backbone (E and a different E_ema)
    cfg = make_encoder_config("w+", "tiny", G.num_ws, G.w_dim, G.img_resolution)
    cfg.backbone = BackboneConfig(stem_channels=8, channels=(8, 8, 8, 8), units=(1, 1, 1, 1), se_reduction=4)
    E = build_encoder(cfg, G.mapping.w_avg.detach())
    E_ema = copy.deepcopy(E)
    with torch.no_grad():
        for p in E_ema.parameters():
            p.add_(0.01 * torch.randn_like(p))
        E.stage.fill_(2)
        E_ema.stage.fill_(2)
    torch.save(encoder_checkpoint(E, E_ema, g_sha, {"note": "legacy test file"}), dst / "encoder.pt")
    with torch.no_grad():
        expected["encoder_ws"] = load_encoder(dst / "encoder.pt")(expected["generator_img"])

    # gru motion.pt: a small GRU trained 2 steps (n_critic 1) on oscillating W+ latents of G's shape
    rng = np.random.default_rng(0)
    store = LatentStoreWriter(tmp / "wplus.h5", space="w+", num_ws=G.num_ws, w_dim=G.w_dim, generator_sha256=g_sha)
    t = np.arange(30)[:, None]
    x = np.sin(0.3 * t + rng.uniform(0, 6, G.num_ws * G.w_dim)) + 0.05 * rng.standard_normal((30, G.num_ws * G.w_dim))
    store.create_clip("clip0", 30, fps=25.0)
    store.write("clip0", 0, x.reshape(30, G.num_ws, G.w_dim).astype(np.float32))
    store.finalize()
    gcfg = GRUTrainConfig(latents=str(tmp / "wplus.h5"), out=str(tmp / "gru"),
                          model=GRUMotionConfig(window=6, latent_dim=8, h_hidden=(8,), t_hidden=(8,),
                                                e_hidden=(16, 8, 8, 8, 8), c_channels=(8, 8)),
                          epochs=100, steps=2, batch=2, n_critic=1, pca_components=4, eval_windows=4,
                          eval_long_frames=12, eval_long_num=1, device="cpu", seed=0)
    motion = GRUTrainer(gcfg).train()
    os.replace(motion, dst / "motion_gru.pt")
    expected["gru_sample"] = load_motion(dst / "motion_gru.pt").sample(2, 7, seed=5)

    # styleinv motion.pt: latent mode, a tiny backbone, 2 steps on W latents of G's shape
    wstore = LatentStoreWriter(tmp / "w.h5", space="w", num_ws=G.num_ws, w_dim=G.w_dim, generator_sha256=g_sha)
    with torch.no_grad():
        base = G.mapping(torch.randn(1, 16), None)[:, 0]
    wstore.create_clip("clip0", 30, fps=25.0)
    wstore.write("clip0", 0, (base + torch.cumsum(0.05 * torch.randn(30, 16), 0)).numpy().astype(np.float32))
    wstore.finalize()
    enc = SIEncoderConfig(stem_channels=8, channels=(8, 8, 8, 8), units=(1, 1, 1, 1), se_reduction=4,
                          resolution=32, bn_mode="train")
    model = styleinv_config_for(G.w_dim, G.num_ws, G.img_resolution, encoder=enc, nframes=12,
                                max_period_len=12.0, time_enc_dim=8, motion_kernel_size=3)
    scfg = StyleInVTrainConfig(latents=str(tmp / "w.h5"), out=str(tmp / "si"), generator=str(gen_path),
                               steps=2, batch=2, snapshot_every=1000, eval_windows=4, eval_window=6,
                               sampling=SparseSamplingConfig(nframes=12), model=model,
                               d=DiscConfig(mode="latent", num_frames=4, max_gap=12, w_dim=16, gap_embed_dim=8,
                                            cmap_dim=16, hidden=16, num_fourier=3),
                               device="cpu", seed=0)
    motion = StyleInVTrainer(scfg).train()
    os.replace(motion, dst / "motion_styleinv.pt")
    m = load_motion(dst / "motion_styleinv.pt")
    m.attach_generator(G)
    expected["styleinv_sample"] = m.sample_w(2, 7, seed=5, w0=expected["generator_ws"][:2, 0])
    torch.save(expected, dst / "expected.pt")


if __name__ == "__main__":
    os.environ["SVGEN_NO_PROGRESS"] = "1"
    torch.set_num_threads(1)
    out = Path(sys.argv[1])
    with tempfile.TemporaryDirectory() as tmp:
        make(out, Path(tmp))
    for f in sorted(out.glob("*.pt")):
        print(f"{f.name}: {f.stat().st_size / 1024:.0f} KB")
