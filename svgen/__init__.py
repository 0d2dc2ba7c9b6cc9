"""svgen: video synthesis with a frozen StyleGAN2 and motion models trained in its latent space.

Stable Python API (imports are lazy so ``import svgen`` stays cheap)::

    G = svgen.load_generator("generator.pt")   # also NVIDIA .pkl / rosinality .pt
    E = svgen.load_encoder("encoder.pt")
    M = svgen.load_motion("motion.pt")
"""
from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def load_generator(path: Any, device: Any = "cpu") -> Any:
    """Load a generator (svgen .pt, NVIDIA .pkl, rosinality .pt) as an eval-mode module (G_ema)."""
    from svgen.stage1_image_gan.checkpoints import load_generator as _load

    return _load(path, device=device)


def load_encoder(path: Any, device: Any = "cpu") -> Any:
    """Load a trained inversion encoder (W+ or W) as an eval-mode module: ``E(img) -> ws``."""
    from svgen.inversion.encoders import load_encoder as _load

    return _load(path, device=device)


def load_motion(path: Any, device: Any = "cpu") -> Any:
    """Load a motion model (GRU or StyleInV); ``.sample(num, frames, seed)`` gives W+ trajectories."""
    from svgen.stage2_motion import load_motion as _load

    return _load(path, device=device)


__all__ = ["load_generator", "load_encoder", "load_motion", "__version__"]
