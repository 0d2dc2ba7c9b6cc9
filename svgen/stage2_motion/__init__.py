"""Stage 2: motion models trained in the latent space of a frozen StyleGAN2.

``load_motion(path)`` reads a ``motion.pt`` (docs/FORMATS.md) and returns the model it holds:
StyleVideoGAN's GRU (:class:`svgen.stage2_motion.gru.model.GRUMotion`) or StyleInV. Every motion model
has ``model_name``, ``generator_sha256``, ``generator_path``, ``encoder_path``, ``num_ws``, ``w_dim``,
``sample(num, frames, seed)`` and ``animate_latents(w_identity, frames, fps, seed)``.
"""
from __future__ import annotations

from typing import Any

import torch

from svgen.utils.errors import PathLike, SvgenError

MOTION_FORMAT = "svgen-motion"


def load_motion(path: PathLike, device: Any = "cpu") -> Any:
    """Load a motion checkpoint and dispatch on its ``"model"`` (``gru`` | ``styleinv``)."""
    from svgen.utils.rundir import load_checkpoint

    ckpt = load_checkpoint(path, expect_format=MOTION_FORMAT)
    model = ckpt.get("model")
    device = torch.device(device) if not isinstance(device, torch.device) else device
    if model == "gru":
        from svgen.stage2_motion.gru.model import GRUMotion

        return GRUMotion.from_checkpoint(ckpt, path, device)
    if model == "styleinv":
        from svgen.stage2_motion.styleinv.model import StyleInVMotion

        return StyleInVMotion.from_checkpoint(ckpt, path, device)
    raise SvgenError(f"unknown motion model {model!r} (expected 'gru' or 'styleinv')", path)


__all__ = ["load_motion", "MOTION_FORMAT"]
