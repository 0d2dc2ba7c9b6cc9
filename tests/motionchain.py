"""A tiny real generator -> encoder -> latents -> GRU chain for tests that need a motion.pt
(importable because tests/ holds conftest.py). Plumbing, not quality: the encoder is untrained
and the GRU trains for two steps on latents of real frames."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch


def build_motion_chain(generator_path: Path, frames_zip: Path, out: Path) -> tuple[Path, Path, Path, object]:
    """(generator.pt, out/encoder.pt, motion.pt, loaded G) trained against ``frames_zip``'s latents."""
    from svgen.inversion.api import invert_dataset
    from svgen.inversion.encoders import build_encoder, encoder_checkpoint, make_encoder_config
    from svgen.stage1_image_gan.checkpoints import load_generator
    from svgen.stage2_motion.gru import GRUMotionConfig
    from svgen.stage2_motion.train import GRUTrainConfig, train_gru
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
    cfg = GRUTrainConfig(latents=str(latents), out=str(out / "motion"),
                         model=GRUMotionConfig(window=8, h_hidden=(32,), t_hidden=(32, 64),
                                               e_hidden=(64, 64, 32, 32, 32), c_channels=(32, 64)),
                         steps=2, batch=4, eval_windows=8, eval_long_frames=30, eval_long_num=1,
                         generator=str(generator_path), encoder=str(enc), device="cpu")
    with pytest.MonkeyPatch.context() as mp:      # module-scoped callers: the autouse quiet fixture is not active
        mp.setenv("SVGEN_NO_PROGRESS", "1")
        motion = train_gru(cfg)
    return Path(generator_path), enc, Path(motion), G
