"""Generator checkpoints: saving, building networks from one, and loading any generator file.

``generator.pt`` is ``torch.save`` of a plain dict, loadable with ``torch.load(weights_only=True)``::

    {"format": "svgen-generator", "version": 1, "config": TrainPreset as dict,
     "G": state_dict, "G_ema": state_dict, "D": state_dict (optional), "w_avg": [w_dim], "meta": {...}}

Training checkpoints (``latest.pt``) are the same dict plus optimizer/RNG/step keys. The config is
the whole :class:`TrainPreset`, so a checkpoint alone rebuilds its networks (the dict itself:
``checkpoint_format``). :func:`load_generator` also reads NVIDIA ``.pkl`` and rosinality ``.pt``
files directly (see ``importers``); :func:`load_checked_generator` also checks its sha256.
"""
from __future__ import annotations

import argparse
import copy
from pathlib import Path
from typing import Any, Optional, Union

import torch

from svgen.stage1_image_gan.checkpoint_format import check_generator_checkpoint, make_generator_checkpoint
from svgen.stage1_image_gan.importers import (_first_line, nvidia_to_checkpoint, read_nvidia_pickle,
                                              rosinality_to_checkpoint)
from svgen.stage1_image_gan.networks import Discriminator, Generator
from svgen.stage1_image_gan.presets import TrainPreset, preset_from_dict
from svgen.utils.errors import PathLike, SvgenError
from svgen.utils.io import check_generator_sha256, file_sha256, require_file, torch_save_atomic
from svgen.utils.rundir import ZIP_MAGIC

_LEGACY_TORCH_MAGIC = 0x1950A86A20F9469CFC6C  # first object of a pre-1.6 torch.save file


def save_generator(path: PathLike, preset: TrainPreset, G: torch.nn.Module, G_ema: torch.nn.Module,
                   D: Optional[torch.nn.Module] = None, meta: Optional[dict] = None) -> Path:
    """Write ``make_generator_checkpoint(...)`` to ``path`` atomically (temp file + rename)."""
    torch_save_atomic(make_generator_checkpoint(preset, G, G_ema, D, meta), path)
    return Path(path)


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
    preset, G_ema = _checked_preset_and_ema(ckpt, path)
    G = _build(Generator, preset.G, ckpt["G"], "G", path) if isinstance(ckpt.get("G"), dict) \
        else copy.deepcopy(G_ema)
    D = _build(Discriminator, preset.D, ckpt["D"], "D", path) if isinstance(ckpt.get("D"), dict) else None
    return G, G_ema, D


def _checked_preset_and_ema(ckpt: dict, path: Optional[PathLike]) -> tuple[TrainPreset, Generator]:
    """The preset and the EMA generator of a checked checkpoint dict (one-line errors naming ``path``)."""
    check_generator_checkpoint(ckpt, path)
    try:
        preset = preset_from_dict(ckpt["config"])
    except (SvgenError, TypeError, ValueError) as exc:
        raise SvgenError(f"unreadable config in checkpoint ({exc})", path) from None
    return preset, _build(Generator, preset.G, ckpt["G_ema"], "G_ema", path)


def checkpoint_preset(ckpt: dict) -> TrainPreset:
    """The :class:`TrainPreset` stored in a checkpoint dict."""
    return preset_from_dict(ckpt["config"])


def _torch_load(path: Path, mmap: bool = False) -> Any:
    try:
        # rosinality training checkpoints carry their argparse options.
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as exc:
        raise SvgenError(f"not a readable checkpoint ({_first_line(exc)})", path) from None


def read_generator_checkpoint(path: PathLike, mmap: bool = False) -> dict:
    """Read any supported generator file as an svgen checkpoint dict.

    svgen ``generator.pt`` / training ``latest.pt`` (returned as stored), NVIDIA ``.pkl`` and
    rosinality ``.pt`` (converted). The format is detected from the content, not the name.
    ``mmap`` leaves a zip file's tensors in the file until used (``load_generator`` builds
    ``G_ema`` only, so ``G`` and ``D`` are never read into memory).
    """
    p = require_file(path, "checkpoint")
    try:
        with open(p, "rb") as fh:
            head = fh.read(4)
    except OSError as exc:
        raise SvgenError(f"cannot read ({exc.strerror or exc})", p) from None
    if head == ZIP_MAGIC:
        obj = _torch_load(p, mmap=mmap)
    elif head[:1] == b"\x80":  # a raw pickle: NVIDIA network pickle or a pre-1.6 torch.save file
        obj = read_nvidia_pickle(p)
        if isinstance(obj, int) and obj == _LEGACY_TORCH_MAGIC:
            obj = _torch_load(p)
        elif isinstance(obj, dict) and "G_ema" in obj:
            return nvidia_to_checkpoint(obj, p)
        else:
            raise SvgenError("not a generator checkpoint (a pickle without a G_ema network)", p)
    else:
        raise SvgenError("not a generator checkpoint (unrecognised file type)", p)

    if not isinstance(obj, dict):
        raise SvgenError(f"not a generator checkpoint (contains a {type(obj).__name__})", p)
    if "format" in obj:
        return check_generator_checkpoint(obj, p)
    if "g_ema" in obj:
        return rosinality_to_checkpoint(obj, p)
    keys = ", ".join(sorted(map(str, obj))[:6])
    raise SvgenError(f"not a generator checkpoint (no svgen header, no g_ema; keys: {keys})", p)


def load_generator(path: PathLike, device: Union[str, torch.device] = "cpu") -> Generator:
    """The EMA generator of ``path`` in eval mode with gradients off, on ``device``.

    Accepts svgen ``generator.pt`` (and training ``latest.pt``), NVIDIA ``.pkl`` and rosinality
    ``.pt``; anything else raises SvgenError naming the file.
    """
    _, G_ema = _checked_preset_and_ema(read_generator_checkpoint(path, mmap=True), path)
    return G_ema.eval().requires_grad_(False).to(device)


def export_generator_checkpoint(ckpt: dict) -> dict:
    """Only the artifact keys of a (training) checkpoint: what ``svgen convert`` writes."""
    keep = ("format", "version", "config", "G", "G_ema", "D", "w_avg", "meta")
    return {k: ckpt[k] for k in keep if k in ckpt}


def load_checked_generator(path: PathLike, expected_sha256: str = "", device: Union[str, torch.device] = "cpu",
                           what: Optional[PathLike] = None, recorded_by: str = "motion checkpoint") -> Generator:
    """:func:`load_generator`, refusing a file other than ``expected_sha256`` (when known): the one
    place that checks a generator against the sha256 a motion or encoder checkpoint recorded.
    The error names ``what`` (the checkpoint that recorded it; ``recorded_by`` says what it is)."""
    require_file(path, "generator")
    if expected_sha256:
        check_generator_sha256(expected_sha256, file_sha256(path), f"{recorded_by} was trained against",
                               what or path, generator=path)
    return load_generator(path, device=device)
