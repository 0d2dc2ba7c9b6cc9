"""Saving and restoring a trainer's state: the one place that checks a ``--resume`` checkpoint's kind and
loads the saved state dicts back into the networks, optimisers and other stateful parts.

A trainer names its stateful parts once, ``{"G": self.G, "opt_G": self.opt_G, ...}`` (the keys are the
checkpoint's), and :func:`restore` loads each from the checkpoint; :func:`state_dicts` is the inverse.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping, Optional

import torch

from svgen.utils.errors import PathLike, SvgenError
from svgen.utils.rundir import load_checkpoint


def load_resume_checkpoint(path: PathLike, fmt: str, model: Optional[str] = None, required: Iterable[str] = (),
                           what: str = "", map_location: str | torch.device = "cpu") -> dict:
    """``latest.pt`` for ``--resume``: a readable checkpoint of format ``fmt`` (and ``model``, for the
    formats that hold several) that has every ``required`` training key; one-line SvgenError otherwise.
    ``what`` names the kind in the error (default: the format)."""
    ckpt = load_checkpoint(path, map_location=map_location)
    if ckpt.get("format") != fmt or (model is not None and ckpt.get("model") != model):
        found = repr(ckpt.get("format", "unknown")) + (f" model {ckpt.get('model')!r}" if model is not None else "")
        raise SvgenError(f"--resume: expected a {what or fmt} checkpoint, found format {found}", path)
    missing = [k for k in required if k not in ckpt]
    if missing:
        raise SvgenError(f"{what or fmt} checkpoint has no training state (missing {', '.join(missing)}); "
                         "cannot resume from it", path)
    return ckpt


def state_dicts(parts: Mapping[str, Any]) -> dict:
    """``{key: part.state_dict()}`` for every part that is not None."""
    return {k: p.state_dict() for k, p in parts.items() if p is not None}


def restore(state: Mapping[str, Any], parts: Mapping[str, Any], optional: Iterable[str] = ()) -> None:
    """``part.load_state_dict(state[key])`` for every part; a part that is None, or whose key is listed in
    ``optional`` and absent from ``state`` (written before it existed), is skipped."""
    optional = set(optional)
    for key, part in parts.items():
        if part is None or (key in optional and key not in state):
            continue
        part.load_state_dict(state[key])
