"""Rendering latents through a restyled decoder (``--render-generator``; StyleInV §4's cartoon animations).

``svgen finetune-decoder`` (:mod:`svgen.stage1_image_gan.finetune`) trains a copy of a generator's
synthesis network on a style set with the mapping frozen, so the copy reads the parent's W. Latents made
for the parent (an inverted photo, a motion model's trajectory, edits) can then be rendered through the
copy. :func:`load_render_generator` refuses anything else: a generator that is not a fine-tune, a fine-tune
of another parent (its recorded ``finetuned_from`` sha256 differs), or another architecture.

Pivotal tuning. ``animate`` tunes a copy of the *base* generator on the identity photo (PTI) by default.
:func:`transfer_tuning` carries that tuning over to the restyled decoder by adding the weight change PTI
made, ``styled + (tuned - base)``: both are small fine-tunes of the same parent, PTI's change is held local
to the photo's pivot (its locality regulariser) and the style change is global, so their weight deltas
add (the "task arithmetic" of Ilharco et al. 2023). The styled animation keeps the person of the photo
instead of the generator's nearest face. ``--tune none`` renders through the styled decoder alone, as
StyleInV does.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Union

import torch

from svgen.stage1_image_gan.checkpoints import load_generator, read_generator_checkpoint
from svgen.utils.errors import PathLike, SvgenError
from svgen.utils.io import file_sha256, require_file


def load_render_generator(path: PathLike, parent_sha256: str, base: torch.nn.Module,
                          device: Union[str, torch.device] = "cpu") -> tuple[torch.nn.Module, dict]:
    """The EMA generator of the fine-tune ``path``, checked to be a fine-tuned copy of the generator whose
    file has sha256 ``parent_sha256`` (the one the latents belong to, loaded as ``base``) with the same
    architecture. Returns ``(G, record for the sidecar .json)``; SvgenError naming ``path`` otherwise."""
    p = require_file(path, "render generator")
    meta = read_generator_checkpoint(p).get("meta") or {}
    parent = meta.get("finetuned_from")
    if not parent:
        raise SvgenError("not a fine-tuned generator (its metadata records no finetuned_from; make one with "
                         "svgen finetune-decoder)", p)
    if parent != parent_sha256:
        raise SvgenError(f"fine-tuned from another generator (it records {str(parent)[:12]}, the latents belong "
                         f"to {parent_sha256[:12]})", p)
    G = load_generator(p, device=device)
    mine = (G.img_resolution, G.w_dim, G.num_ws)
    theirs = (base.img_resolution, base.w_dim, base.num_ws)
    if mine != theirs:
        raise SvgenError(f"architecture differs from its parent's (resolution, w_dim, num_ws {mine} vs {theirs})", p)
    shapes = {k: v.shape for k, v in base.synthesis.state_dict().items()}
    if shapes != {k: v.shape for k, v in G.synthesis.state_dict().items()}:
        raise SvgenError("synthesis weights do not match its parent's layer for layer", p)
    record = {"path": str(Path(p).resolve()), "sha256": file_sha256(p), "finetuned_from": parent,
              "frozen": list(meta.get("frozen") or []), "steps": meta.get("step"),
              "style_data": meta.get("style_data")}
    return G, record


@torch.no_grad()
def transfer_tuning(base: torch.nn.Module, tuned: torch.nn.Module, styled: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``styled`` whose synthesis weights also carry the change ``tuned - base`` (pivotal tuning of
    ``base``); integer buffers are kept as ``styled`` has them."""
    out = copy.deepcopy(styled)
    b, t = base.synthesis.state_dict(), tuned.synthesis.state_dict()
    for name, value in out.synthesis.state_dict().items():
        if value.is_floating_point():
            value.add_(t[name].to(value) - b[name].to(value))
    return out.eval().requires_grad_(False)


def describe_render(record: dict, tuning: Any) -> dict:
    """The sidecar record of a render generator, saying how pivotal tuning was applied to it."""
    return {**record, "pivotal_tuning": "weight delta of the tuned base generator added" if tuning else "none"}
