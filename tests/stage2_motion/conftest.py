"""Fixtures shared by the motion-model tests."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    """These toy-sized models run fastest on one thread (OpenMP fan-out costs more than it saves
    on tensors this small, and much more on a busy machine); the setting is restored afterwards."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="session")
def real_latents(tiny_generator_path: Path, real_frames_zip32: Path, tmp_path_factory) -> Path:
    """W+ latents of the real fixture frames (2 MEAD clips x 60 frames, 32 px; encoder: 100 steps, as the
    inversion tests)."""
    from svgen.inversion.api import invert_dataset
    from svgen.inversion.encoders import load_encoder
    from svgen.inversion.train import train_encoder
    from svgen.stage1_image_gan.checkpoints import load_generator
    from svgen.utils.io import file_sha256

    root = tmp_path_factory.mktemp("gru_real")
    with pytest.MonkeyPatch.context() as mp:      # session scope: the autouse quiet fixture is not active yet
        mp.setenv("SVGEN_NO_PROGRESS", "1")
        enc = train_encoder(tiny_generator_path, root / "encoder", real_frames_zip32, space="w+", steps=100,
                            batch=8, seed=0, device="cpu", show_progress=False)
        return invert_dataset(load_generator(tiny_generator_path), load_encoder(enc), real_frames_zip32,
                              root / "latents.h5", generator_sha256=file_sha256(tiny_generator_path),
                              encoder_sha256=file_sha256(enc), show_progress=False)
