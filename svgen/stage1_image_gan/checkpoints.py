"""Generator checkpoints: the svgen format, building networks from it, and format detection.

``generator.pt`` is ``torch.save`` of a plain dict, loadable with ``torch.load(weights_only=True)``::

    {"format": "svgen-generator", "version": 1, "config": TrainPreset as dict,
     "G": state_dict, "G_ema": state_dict, "D": state_dict (optional), "w_avg": [w_dim], "meta": {...}}

Training checkpoints (``latest.pt``) are the same dict plus optimizer/RNG/step keys. The config is
the whole :class:`TrainPreset`, so a checkpoint alone rebuilds its networks. :func:`load_generator`
also reads NVIDIA ``.pkl`` and rosinality ``.pt`` files directly (see ``importers``).
"""
from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path
from typing import Any, Optional, Union

import torch

from svgen.stage1_image_gan.networks import Discriminator, Generator
from svgen.stage1_image_gan.presets import TrainPreset, preset_from_dict
from svgen.utils.config import config_to_dict
from svgen.utils.errors import PathLike, SvgenError
from svgen.utils.io import require_file, torch_save_atomic

FORMAT = "svgen-generator"
VERSION = 1
_ZIP_MAGIC = b"PK\x03\x04"
_LEGACY_TORCH_MAGIC = 0x1950A86A20F9469CFC6C  # first object of a pre-1.6 torch.save file


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


def save_generator(path: PathLike, preset: TrainPreset, G: torch.nn.Module, G_ema: torch.nn.Module,
                   D: Optional[torch.nn.Module] = None, meta: Optional[dict] = None) -> Path:
    """Write ``make_generator_checkpoint(...)`` to ``path`` atomically (temp file + rename)."""
    torch_save_atomic(make_generator_checkpoint(preset, G, G_ema, D, meta), path)
    return Path(path)


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


def _build(cls: type, cfg: Any, state: dict, what: str, path: Optional[PathLike]) -> torch.nn.Module:
    try:
        net = cls(cfg)
        net.load_state_dict(state, strict=True)
    except (RuntimeError, ValueError, KeyError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0][:200]
        raise SvgenError(f"{what} weights do not match the checkpoint's config ({first})", path) from None
    return net


def build_networks(ckpt: dict, path: Optional[PathLike] = None
                   ) -> tuple[Generator, Generator, Optional[Discriminator]]:
    """Rebuild ``(G, G_ema, D)`` from a checkpoint dict (``D`` is None when absent), on CPU."""
    check_generator_checkpoint(ckpt, path)
    try:
        preset = preset_from_dict(ckpt["config"])
    except (SvgenError, TypeError, ValueError) as exc:
        raise SvgenError(f"unreadable config in checkpoint ({exc})", path) from None
    G_ema = _build(Generator, preset.G, ckpt["G_ema"], "G_ema", path)
    G = _build(Generator, preset.G, ckpt["G"], "G", path) if isinstance(ckpt.get("G"), dict) \
        else copy.deepcopy(G_ema)
    D = _build(Discriminator, preset.D, ckpt["D"], "D", path) if isinstance(ckpt.get("D"), dict) else None
    return G, G_ema, D


def checkpoint_preset(ckpt: dict) -> TrainPreset:
    """The :class:`TrainPreset` stored in a checkpoint dict."""
    return preset_from_dict(ckpt["config"])


def _torch_load(path: Path) -> Any:
    from svgen.stage1_image_gan.importers import _first_line

    try:
        # rosinality training checkpoints carry their argparse options.
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise SvgenError(f"not a readable checkpoint ({_first_line(exc)})", path) from None


def read_generator_checkpoint(path: PathLike) -> dict:
    """Read any supported generator file as an svgen checkpoint dict.

    svgen ``generator.pt`` / training ``latest.pt`` (returned as stored), NVIDIA ``.pkl`` and
    rosinality ``.pt`` (converted). The format is detected from the content, not the name.
    """
    from svgen.stage1_image_gan import importers

    p = require_file(path, "checkpoint")
    try:
        with open(p, "rb") as fh:
            head = fh.read(4)
    except OSError as exc:
        raise SvgenError(f"cannot read ({exc.strerror or exc})", p) from None
    if head == _ZIP_MAGIC:
        obj = _torch_load(p)
    elif head[:1] == b"\x80":  # a raw pickle: NVIDIA network pickle or a pre-1.6 torch.save file
        obj = importers.read_nvidia_pickle(p)
        if isinstance(obj, int) and obj == _LEGACY_TORCH_MAGIC:
            obj = _torch_load(p)
        elif isinstance(obj, dict) and "G_ema" in obj:
            return importers.nvidia_to_checkpoint(obj, p)
        else:
            raise SvgenError("not a generator checkpoint (a pickle without a G_ema network)", p)
    else:
        raise SvgenError("not a generator checkpoint (unrecognised file type)", p)

    if not isinstance(obj, dict):
        raise SvgenError(f"not a generator checkpoint (contains a {type(obj).__name__})", p)
    if "format" in obj:
        return check_generator_checkpoint(obj, p)
    if "g_ema" in obj:
        return importers.rosinality_to_checkpoint(obj, p)
    keys = ", ".join(sorted(map(str, obj))[:6])
    raise SvgenError(f"not a generator checkpoint (no svgen header, no g_ema; keys: {keys})", p)


def load_generator(path: PathLike, device: Union[str, torch.device] = "cpu") -> Generator:
    """The EMA generator of ``path`` in eval mode with gradients off, on ``device``.

    Accepts svgen ``generator.pt`` (and training ``latest.pt``), NVIDIA ``.pkl`` and rosinality
    ``.pt``; anything else raises SvgenError naming the file.
    """
    ckpt = read_generator_checkpoint(path)
    check_generator_checkpoint(ckpt, path)
    try:
        preset = preset_from_dict(ckpt["config"])
    except (SvgenError, TypeError, ValueError) as exc:
        raise SvgenError(f"unreadable config in checkpoint ({exc})", path) from None
    G_ema = _build(Generator, preset.G, ckpt["G_ema"], "G_ema", path)
    return G_ema.eval().requires_grad_(False).to(device)


def export_generator_checkpoint(ckpt: dict) -> dict:
    """Only the artifact keys of a (training) checkpoint: what ``svgen convert`` writes."""
    keep = ("format", "version", "config", "G", "G_ema", "D", "w_avg", "meta")
    return {k: ckpt[k] for k in keep if k in ckpt}
