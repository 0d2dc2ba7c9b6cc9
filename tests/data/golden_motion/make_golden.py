"""Regenerate the golden motion fixtures (run once, from the repository root, with the code whose
outputs are the reference): a tiny untrained generator, W+ encoder, GRU and StyleInV ``motion.pt``
files, and the ``.npy`` latents that ``svgen animate`` / ``svgen sample`` wrote with them.

    PYTHONPATH=. python tests/data/golden_motion/make_golden.py

The checkpoints are files made by that code (not rebuilt from seeds), so the test also proves that
old checkpoints still load and give the same latents."""
from __future__ import annotations

import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))          # tests/ (conftest helpers)


def main() -> None:
    from conftest import build_random_generator

    from svgen.inversion.backbone import BACKBONE_PRESETS
    from svgen.inversion.encoders import build_encoder, encoder_checkpoint, make_encoder_config
    from svgen.stage1_image_gan.checkpoints import load_generator
    from svgen.stage2_motion.gru.model import GRUMotionConfig, MotionGenerator
    from svgen.stage2_motion.offset import fit_pca
    from svgen.stage2_motion.styleinv.model import EncoderConfig, StyleInV, styleinv_config_for
    from svgen.utils.config import config_to_dict
    from svgen.utils.io import file_sha256, torch_save_atomic

    torch.set_num_threads(1)
    gen = build_random_generator(HERE / "generator.pt", resolution=32, seed=0)
    ckpt = torch.load(gen, weights_only=True)          # keep G_ema only (what every command loads)
    ckpt = {k: v for k, v in ckpt.items() if k not in ("G", "D")}
    torch.save(ckpt, gen)
    G = load_generator(gen)
    sha = file_sha256(gen)
    torch.manual_seed(0)
    E = build_encoder(make_encoder_config("w+", "tiny", G.num_ws, G.w_dim, G.img_resolution), w_avg=G.mapping.w_avg)
    torch_save_atomic(encoder_checkpoint(E, None, sha, meta={"note": "untrained (golden test)"}), HERE / "encoder.pt")
    common = {"format": "svgen-motion", "version": 1, "generator_sha256": sha,
              "generator_path": "generator.pt", "encoder_path": "encoder.pt", "train_fps": 25.0}

    # GRU: seeded weights, PCA of mapped random codes (the offset trick's basis)
    torch.manual_seed(1)
    gcfg = GRUMotionConfig(num_ws=G.num_ws, w_dim=G.w_dim, window=8, h_hidden=(32,), t_hidden=(32, 64),
                           e_hidden=(64, 64, 32, 32, 32), c_channels=(32, 64))
    M = MotionGenerator(gcfg)
    with torch.no_grad():
        ws = G.mapping(torch.randn(256, G.z_dim), truncation_psi=1.0).numpy()
    pca = fit_pca([ws], G.num_ws, G.w_dim, n_components=8)
    torch.save({**common, "model": "gru", "config": {"model": config_to_dict(gcfg)},
                "ema": M.state_dict(), "pca": pca.to_dict()}, HERE / "gru.pt")

    # StyleInV: seeded weights, tiny IR-SE encoder
    torch.manual_seed(2)
    enc = EncoderConfig(backbone=BACKBONE_PRESETS["tiny"], resolution=32)
    scfg = styleinv_config_for(G.w_dim, G.num_ws, G.img_resolution, encoder=enc, time_enc_dim=32)
    si = StyleInV(scfg).eval()
    torch.save({**common, "model": "styleinv", "config": {"model": config_to_dict(scfg)},
                "ema": si.state_dict(), "noise_mode": "const"}, HERE / "styleinv.pt")
    print("checkpoints written; now run tests/stage2_motion/test_golden_latents.py with SVGEN_WRITE_GOLDEN=1")


if __name__ == "__main__":
    main()
