"""Edits over time: ``--edit FILE:INDEX:STRENGTH[:layers=A-B][:ramp=A-B]`` applied to W+ trajectories.

An edit adds ``profile(t) * STRENGTH * sigma * d`` to the W+ rows ``A..B`` (inclusive; default all)
of frame ``t``, where ``d`` is direction INDEX of FILE (0 for a file holding one vector) and
``sigma`` its standard deviation in W when the file has one (GANSpace: STRENGTH counts standard
deviations; InterFaceGAN vectors: STRENGTH multiplies the vector, e4e's convention). The time
profile is constant (1 on every frame), or with ``ramp=A-B`` 0 up to frame A, rising linearly to 1
at frame B and 1 after, so an edit can fade in during a video (StyleGAN-V's edits propagated in
time). Edits add up; STRENGTH 0 leaves the latents unchanged bit for bit.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch

from svgen.utils.errors import SvgenError

SYNTAX = "FILE:INDEX:STRENGTH[:layers=A-B][:ramp=A-B]"


@dataclass(frozen=True)
class EditSpec:
    """One parsed ``--edit`` (file not yet read)."""

    file: str
    index: int
    strength: float
    layers: Optional[tuple[int, int]] = None   # inclusive W+ row range; None = every row
    ramp: Optional[tuple[int, int]] = None     # frames: 0 at/before the first, 1 at/after the second
    text: str = ""


def _range(value: str, what: str, text: str) -> tuple[int, int]:
    lo, sep, hi = value.partition("-")
    try:
        a, b = (int(lo), int(hi)) if sep else (int(lo), int(lo))
    except ValueError:
        raise ValueError(f"--edit {text!r}: {what} must be A-B (whole numbers), got {value!r}") from None
    if a < 0 or b < a:
        raise ValueError(f"--edit {text!r}: {what} {value!r} must satisfy 0 <= A <= B")
    return a, b


def parse_edit(text: str) -> EditSpec:
    """Parse ``FILE:INDEX:STRENGTH[:layers=A-B][:ramp=A-B|:constant]`` (ValueError on bad syntax)."""
    parts = str(text).split(":")
    options: dict[str, tuple[int, int]] = {}
    constant = False
    while parts and ("=" in parts[-1] or parts[-1].strip().lower() in ("constant", "const")):
        key, _, value = parts.pop().partition("=")
        key = key.strip().lower()
        if key in ("constant", "const"):
            constant = True
        elif key in ("layers", "ramp"):
            if key in options:
                raise ValueError(f"--edit {text!r}: {key}= given twice")
            options[key] = _range(value.strip(), key, text)
        else:
            raise ValueError(f"--edit {text!r}: unknown option {key!r} (expected layers=A-B or ramp=A-B)")
    if constant and "ramp" in options:
        raise ValueError(f"--edit {text!r}: choose one time profile, constant or ramp=A-B")
    if len(parts) < 3 or not ":".join(parts[:-2]):
        raise ValueError(f"--edit {text!r}: expected {SYNTAX}")
    try:
        index = int(parts[-2])
    except ValueError:
        raise ValueError(f"--edit {text!r}: INDEX must be a whole number, got {parts[-2]!r}") from None
    try:
        strength = float(parts[-1])
    except ValueError:
        raise ValueError(f"--edit {text!r}: STRENGTH must be a number, got {parts[-1]!r}") from None
    if index < 0:
        raise ValueError(f"--edit {text!r}: INDEX must be >= 0, got {index}")
    if not np.isfinite(strength):
        raise ValueError(f"--edit {text!r}: STRENGTH must be finite, got {parts[-1]!r}")
    return EditSpec(file=":".join(parts[:-2]), index=index, strength=strength, layers=options.get("layers"),
                    ramp=options.get("ramp"), text=str(text))


@dataclass
class Edit:
    """A resolved edit: ``offset`` [num_ws, w_dim] is the full step (profile 1), zero outside the layers."""

    spec: EditSpec
    offset: np.ndarray
    sigma: Optional[float]
    file_sha256: str
    direction_kind: str

    def profile(self, frames: np.ndarray) -> np.ndarray:
        """Weight in [0, 1] of the edit at each frame index."""
        frames = np.asarray(frames, dtype=np.float64)
        if self.spec.ramp is None:
            return np.ones_like(frames)
        a, b = self.spec.ramp
        if b == a:
            return (frames >= a).astype(np.float64)
        return np.clip((frames - a) / (b - a), 0.0, 1.0)

    def describe(self) -> dict:
        """What the sidecar ``.json`` records of this edit."""
        s = self.spec
        return {"edit": s.text, "file": str(Path(s.file).resolve()), "file_sha256": self.file_sha256,
                "direction_kind": self.direction_kind, "index": s.index, "strength": s.strength,
                "unit": "sigma" if self.sigma is not None else "vector", "sigma": self.sigma,
                "layers": "all" if s.layers is None else list(s.layers),
                "profile": ({"kind": "constant"} if s.ramp is None else
                            {"kind": "ramp", "from_frame": s.ramp[0], "to_frame": s.ramp[1]}),
                "offset_norm": float(np.linalg.norm(self.offset))}


def load_edits(specs: Sequence[EditSpec | str], num_ws: int, w_dim: int) -> list[Edit]:
    """Read each edit's direction file (once per file) and check it against a generator's W+ shape."""
    from svgen.editing.directions import load_directions
    from svgen.utils.io import file_sha256

    cache: dict[str, Any] = {}
    out = []
    for spec in specs:
        if isinstance(spec, str):
            try:
                spec = parse_edit(spec)
            except ValueError as exc:
                raise SvgenError(str(exc)) from None
        if spec.file not in cache:
            cache[spec.file] = (load_directions(spec.file), file_sha256(spec.file))
        ds, sha = cache[spec.file]
        where = Path(spec.file)
        if ds.w_dim != w_dim:
            raise SvgenError(f"directions have w_dim {ds.w_dim} but the generator's W has {w_dim} "
                             "(directions belong to another generator)", where)
        if spec.index >= ds.num:
            raise SvgenError(f"--edit {spec.text!r}: INDEX {spec.index} is out of range "
                             f"(the file has {ds.num} direction{'s' if ds.num != 1 else ''})", where)
        vec = ds.vectors[spec.index]                                          # [L, w_dim]
        if vec.shape[0] not in (1, num_ws):
            raise SvgenError(f"direction has {vec.shape[0]} per-layer rows but the generator has "
                             f"{num_ws} W+ layers", where)
        if spec.layers is not None and spec.layers[1] >= num_ws:
            raise SvgenError(f"--edit {spec.text!r}: layers={spec.layers[0]}-{spec.layers[1]} outside the "
                             f"generator's W+ rows 0-{num_ws - 1}", where)
        sigma = None if ds.sigma is None else float(ds.sigma[spec.index])
        offset = np.broadcast_to(vec, (num_ws, w_dim)) * np.float32(spec.strength * (sigma or 1.0))
        mask = np.zeros((num_ws, 1), np.float32)
        lo, hi = spec.layers if spec.layers is not None else (0, num_ws - 1)
        mask[lo:hi + 1] = 1
        out.append(Edit(spec=spec, offset=(offset * mask).astype(np.float32), sigma=sigma, file_sha256=sha,
                        direction_kind=ds.kind))
    return out


def apply_edits(latents: Any, edits: Sequence[Edit], start: int = 0) -> Any:
    """Add the edits to W+ latents [..., T, num_ws, w_dim] (numpy or torch; frames ``start .. start+T-1``).

    Returns ``latents`` itself when there are no edits; otherwise a new array of the same type,
    dtype and device."""
    if not edits:
        return latents
    t = latents.shape[-3]
    frames = np.arange(start, start + t)
    delta = np.zeros((t, *latents.shape[-2:]), np.float32)
    for e in edits:
        if tuple(e.offset.shape) != tuple(latents.shape[-2:]):
            raise ValueError(f"edit offset {e.offset.shape} does not match latents {tuple(latents.shape)}")
        delta += e.profile(frames).astype(np.float32)[:, None, None] * e.offset[None]
    if torch.is_tensor(latents):
        return latents + torch.from_numpy(delta).to(device=latents.device, dtype=latents.dtype)
    return (np.asarray(latents) + delta).astype(np.asarray(latents).dtype, copy=False)


def describe_edits(edits: Sequence[Edit]) -> list[dict]:
    """The sidecar record of every edit (an empty list when none)."""
    return [e.describe() for e in edits]
