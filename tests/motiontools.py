"""A tiny GRU motion model for tests that need a ``motion.pt`` (importable: tests/ holds conftest.py)."""
from __future__ import annotations

from pathlib import Path

import pytest


def train_tiny_gru(latents: Path, out: Path, generator: Path, encoder: Path) -> Path:
    """``motion.pt`` of a small GRU trained 2 steps on ``latents`` (plumbing, not quality)."""
    from svgen.stage2_motion.gru.model import GRUMotionConfig
    from svgen.stage2_motion.gru.train import GRUTrainConfig, train_gru

    cfg = GRUTrainConfig(latents=str(latents), out=str(out),
                         model=GRUMotionConfig(window=8, h_hidden=(32,), t_hidden=(32, 64),
                                               e_hidden=(64, 64, 32, 32, 32), c_channels=(32, 64)),
                         steps=2, batch=4, eval_windows=8, eval_long_frames=30, eval_long_num=1,
                         generator=str(generator), encoder=str(encoder), device="cpu")
    with pytest.MonkeyPatch.context() as mp:      # module-scope callers: the autouse quiet fixture is not active
        mp.setenv("SVGEN_NO_PROGRESS", "1")
        return train_gru(cfg)
