"""StyleInV's encoder initialised from a trained inversion W encoder (``svgen.inversion``): the IR-SE
backbone is copied, and a W encoder's linear head becomes the residual head (its ``w_avg`` dropped)."""
from __future__ import annotations

import dataclasses
from typing import Optional

import torch
from torch import nn

from svgen.stage2_motion.styleinv.model import EncoderConfig, StyleInV
from svgen.utils.errors import PathLike, SvgenError


def encoder_config_from_file(path: PathLike) -> tuple[EncoderConfig, dict, Optional[tuple], dict]:
    """Load an inversion encoder file; returns (EncoderConfig, backbone state, head|None, meta).

    ``head`` is the W encoder's linear head ``(weight [W, C], bias [W])`` in plain-linear units when
    the file is a W-space encoder whose head can be recognised; W+ encoders give only the backbone.
    """
    from svgen.inversion.encoders import load_encoder

    E = load_encoder(path, device="cpu")
    backbone = getattr(E, "backbone", None)
    if backbone is None or not hasattr(backbone, "stages"):
        raise SvgenError("encoder has no IR-SE backbone to initialise StyleInV from", path)
    bcfg = backbone.cfg
    enc = EncoderConfig(backbone=dataclasses.replace(bcfg), resolution=int(getattr(E, "resolution", 256)),
                        bn_mode="frozen")
    head = _find_w_head(E, int(getattr(E, "w_dim", 0)), int(bcfg.channels[-1]))
    meta = {"space": getattr(E, "space", "?"), "num_ws": int(getattr(E, "num_ws", 0)),
            "w_dim": int(getattr(E, "w_dim", 0))}
    return enc, backbone.state_dict(), head, meta


def _find_w_head(E: nn.Module, w_dim: int, in_ch: int) -> Optional[tuple[torch.Tensor, torch.Tensor]]:
    """The effective (weight [W, C], bias [W]) of a W encoder's equalized-linear ``head``.

    The inversion stage's W encoder computes ``head(pool(c4)) + w_avg``; StyleInV keeps the head
    (its output is the residual added to w0) and drops ``w_avg``.
    """
    head = getattr(E, "head", None)
    if getattr(E, "space", None) != "w" or head is None or not hasattr(head, "weight"):
        return None
    weight = head.weight.detach()
    if tuple(weight.shape) != (w_dim, in_ch):
        return None
    bias = torch.zeros(w_dim) if head.bias is None else head.bias.detach() * head.bias_gain
    return (weight * head.weight_gain).clone(), bias.clone()


def init_encoder_from(si: StyleInV, backbone_state: dict, head: Optional[tuple]) -> dict:
    """Copy a W encoder's backbone (and head) into SI's modulated encoder; AdaIN blocks stay random.

    Returns a summary {"backbone_tensors": n, "head": bool}.
    """
    si.encoder.backbone.load_state_dict(backbone_state, strict=True)
    used_head = False
    if head is not None:
        w, b = head
        lin = si.encoder.head
        with torch.no_grad():
            lin.weight.copy_(w / lin.weight_gain)
            lin.bias.copy_(b / lin.bias_gain)
        used_head = True
    return {"backbone_tensors": len(backbone_state), "head": used_head}
