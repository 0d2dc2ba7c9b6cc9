"""The svgen generator checkpoint dict (``generator.pt``): its header, building it from networks and
validating it. Both ``checkpoints`` (loading any generator file) and ``importers`` (NVIDIA/rosinality
conversion) build on this, so neither needs the other's half."""
from __future__ import annotations

import time
from typing import Any, Optional

import torch

from svgen.stage1_image_gan.presets import TrainPreset
from svgen.utils.config import config_to_dict
from svgen.utils.errors import PathLike, SvgenError

FORMAT = "svgen-generator"
VERSION = 1


def _cpu_state(module: torch.nn.Module) -> dict:
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


def make_generator_checkpoint(preset: TrainPreset, G: torch.nn.Module, G_ema: torch.nn.Module,
                              D: Optional[torch.nn.Module] = None,
                              meta: Optional[dict] = None) -> dict:
    """The svgen generator checkpoint dict (CPU tensors) for ``preset`` and its networks."""
    import svgen

    info = {"svgen_version": svgen.__version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
    info.update(meta or {})
    ckpt = {
        "format": FORMAT,
        "version": VERSION,
        "config": config_to_dict(preset),
        "G": _cpu_state(G),
        "G_ema": _cpu_state(G_ema),
        "w_avg": G_ema.mapping.w_avg.detach().to("cpu", copy=True),
        "meta": info,
    }
    if D is not None:
        ckpt["D"] = _cpu_state(D)
    return ckpt


def check_generator_checkpoint(ckpt: Any, path: Optional[PathLike] = None) -> dict:
    """Validate the svgen format header and required keys (SvgenError naming ``path``)."""
    if not isinstance(ckpt, dict):
        raise SvgenError("not an svgen checkpoint (expected a dict)", path)
    fmt = ckpt.get("format")
    if fmt != FORMAT:
        raise SvgenError(f"expected a {FORMAT!r} checkpoint, found format {fmt!r}", path)
    version = ckpt.get("version")
    if not isinstance(version, int) or version > VERSION:
        raise SvgenError(f"unsupported {FORMAT} version {version!r} (this svgen reads <= {VERSION})", path)
    missing = [k for k in ("config", "G_ema") if not isinstance(ckpt.get(k), dict)]
    if missing:
        raise SvgenError(f"checkpoint lacks {', '.join(missing)}", path)
    return ckpt
