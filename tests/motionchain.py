"""A tiny real generator -> encoder -> latents -> GRU chain for tests that need a motion.pt
(importable because tests/ holds conftest.py). Plumbing, not quality: the encoder is untrained
and the GRU trains for two steps on latents of real frames."""
from __future__ import annotations

from pathlib import Path

import torch

from motiontools import train_tiny_gru


def build_motion_chain(generator_path: Path, frames_zip: Path, out: Path) -> tuple[Path, Path, Path, object]:
    """(generator.pt, out/encoder.pt, motion.pt, loaded G) trained against ``frames_zip``'s latents."""
    from svgen.inversion.api import invert_dataset
    from svgen.inversion.encoders import build_encoder, encoder_checkpoint, make_encoder_config
    from svgen.stage1_image_gan.checkpoints import load_generator
    from svgen.utils.io import file_sha256, torch_save_atomic

    G = load_generator(generator_path)
    sha = file_sha256(generator_path)
    torch.manual_seed(0)
    E = build_encoder(make_encoder_config("w+", "tiny", G.num_ws, G.w_dim, G.img_resolution),
                      w_avg=G.mapping.w_avg)
    enc = out / "encoder.pt"
    torch_save_atomic(encoder_checkpoint(E, None, sha, meta={"note": "untrained (test)"}), enc)
    latents = invert_dataset(G, E.eval(), frames_zip, out / "latents.h5", generator_sha256=sha,
                             encoder_sha256=file_sha256(enc), show_progress=False)
    motion = train_tiny_gru(latents, out / "motion", Path(generator_path), enc)
    return Path(generator_path), enc, Path(motion), G
