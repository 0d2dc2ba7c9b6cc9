"""Fixtures shared by the metrics tests."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch


@pytest.fixture
def tiny_motion_pair(tmp_path: Path) -> tuple[Path, Path]:
    """(motion.pt, generator.pt): an untrained tiny 32 px generator and an untrained tiny GRU
    motion model recorded against it, for the paths that render motion samples."""
    ckpts = pytest.importorskip("svgen.stage1_image_gan.checkpoints")
    from svgen.stage1_image_gan.networks import Generator
    from svgen.stage1_image_gan.presets import get_preset
    from svgen.stage2_motion.gru.model import GRUMotionConfig, MotionGenerator
    from svgen.stage2_motion.offset import PCABasis
    from svgen.stage2_motion.gru.train import GRUTrainConfig, motion_checkpoint
    from svgen.utils.io import file_sha256

    preset = get_preset("tiny", 32)
    torch.manual_seed(0)
    G = Generator(preset.G)
    gen_path = tmp_path / "generator.pt"
    torch.save(ckpts.make_generator_checkpoint(preset, G, G), gen_path)
    cfg = GRUTrainConfig(model=GRUMotionConfig(num_ws=G.num_ws, w_dim=G.w_dim, latent_dim=8, h_hidden=(16,),
                                               t_hidden=(16,), e_hidden=(16,), c_channels=(8,), window=8))
    pca = PCABasis(mean=np.zeros(G.num_ws * G.w_dim), components=np.eye(2, G.num_ws * G.w_dim),
                   explained_variance=np.ones(2), num_ws=G.num_ws, w_dim=G.w_dim)
    ckpt = motion_checkpoint(cfg, MotionGenerator(cfg.model), MotionGenerator(cfg.model), None, pca,
                             {"fps": 25.0}, generator_sha256=file_sha256(gen_path))
    motion_path = tmp_path / "motion.pt"
    torch.save(ckpt, motion_path)
    return motion_path, gen_path
