"""Feature detectors for FVD and FID: the published TorchScript files, found on disk, never downloaded.

- I3D (FVD): ``i3d_torchscript.pt``, the Kinetics-400 I3D of the tf.hub module used by the original
  FVD code, ported to TorchScript by StyleGAN-V. Called as
  ``detector(video_uint8 [B, 3, T, H, W], rescale=True, resize=True, return_features=True)`` -> [B, 400]
  (it rescales to [-1, 1] and resizes to 224 itself; the output is the pre-softmax layer).
- Inception-v3 (FID): ``inception-2015-12-05.pt`` of stylegan2-ada-pytorch, called as
  ``detector(images_uint8 [B, 3, H, W], return_features=True)`` -> [B, 2048] (pool features; it
  resizes to 299 itself).

Files are looked up in ``--detector-dir`` and then in the folders of ``$SVGEN_DETECTORS``
(``os.pathsep``-separated). A missing file raises :class:`DetectorMissing`, whose message names the
file, where it comes from and where we looked, so the caller can skip exactly the metrics that
need it. The sha256 of the file is recorded in every result.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch

from svgen.utils.errors import PathLike, SvgenError
from svgen.utils.io import file_sha256

ENV_VAR = "SVGEN_DETECTORS"


@dataclass(frozen=True)
class DetectorSpec:
    """Where a detector file comes from and how it is called."""

    name: str
    filename: str
    url: str
    origin: str
    kwargs: dict
    feature_dim: int
    metrics: tuple = field(default_factory=tuple)


I3D = DetectorSpec(
    name="i3d", filename="i3d_torchscript.pt",
    url="https://www.dropbox.com/s/ge9e5ujwgetktms/i3d_torchscript.pt?dl=1",
    origin="StyleGAN-V (universome/stylegan-v, src/metrics/frechet_video_distance.py)",
    kwargs={"rescale": True, "resize": True, "return_features": True}, feature_dim=400,
    metrics=("fvd16", "fvd128", "fvd128_sub8"))
INCEPTION = DetectorSpec(
    name="inception", filename="inception-2015-12-05.pt",
    url="https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt",
    origin="stylegan2-ada-pytorch (NVlabs, metrics/frechet_inception_distance.py)",
    kwargs={"return_features": True}, feature_dim=2048, metrics=("fid",))
SPECS = {"i3d": I3D, "inception": INCEPTION}


class DetectorMissing(SvgenError):
    """A detector file is not on disk; only the metrics that need it are skipped."""

    def __init__(self, spec: DetectorSpec, searched: Sequence[Path]):
        where = (", ".join(str(p) for p in searched) if searched
                 else "nowhere (no --detector-dir and no $SVGEN_DETECTORS)")
        msg = (f"not found (looked in: {where}); it is the {spec.name} TorchScript file of "
               f"{spec.origin}, download it from {spec.url} and pass --detector-dir DIR or set "
               f"{ENV_VAR}; skipping {', '.join(spec.metrics)}")
        self.spec = spec
        super().__init__(msg, spec.filename)


def search_dirs(detector_dir: Optional[PathLike] = None) -> list[Path]:
    """Folders searched for detector files, in order."""
    dirs = [Path(detector_dir)] if detector_dir else []
    dirs += [Path(p) for p in os.environ.get(ENV_VAR, "").split(os.pathsep) if p]
    return dirs


def find_detector(spec: DetectorSpec, detector_dir: Optional[PathLike] = None) -> Path:
    """Path of ``spec.filename`` (DetectorMissing when absent)."""
    dirs = search_dirs(detector_dir)
    for d in dirs:
        p = d / spec.filename
        if p.is_file():
            return p
    raise DetectorMissing(spec, dirs)


class Detector:
    """A loaded TorchScript detector: ``features(x_uint8) -> float64 [B, feature_dim]``."""

    def __init__(self, spec: DetectorSpec, path: PathLike, device: Any = "cpu"):
        self.spec = spec
        self.path = Path(path)
        self.device = torch.device(device)
        self.sha256 = file_sha256(self.path)
        try:
            self.module = torch.jit.load(str(self.path), map_location=self.device).eval()
        except Exception as exc:  # not TorchScript, truncated, wrong file
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise SvgenError(f"not a loadable TorchScript {spec.name} detector ({first})", self.path) from None

    @torch.no_grad()
    def features(self, x: torch.Tensor) -> np.ndarray:
        """Run on a uint8 batch (videos [B, 3, T, H, W] or images [B, 3, H, W])."""
        if x.dtype != torch.uint8:
            raise ValueError(f"detectors take uint8 input, got {x.dtype}")
        out = self.module(x.to(self.device), **self.spec.kwargs)
        out = out.detach().to("cpu", torch.float64).reshape(x.shape[0], -1).numpy()
        if out.shape[1] != self.spec.feature_dim:
            raise SvgenError(f"detector returned {out.shape[1]} features, expected {self.spec.feature_dim}",
                             self.path)
        return out

    def record(self) -> dict:
        """What goes into the report: file, hash, origin, call."""
        return {"name": self.spec.name, "file": str(self.path), "sha256": self.sha256,
                "origin": self.spec.origin, "url": self.spec.url, "kwargs": dict(self.spec.kwargs)}


def load_detector(spec: DetectorSpec, detector_dir: Optional[PathLike] = None, device: Any = "cpu") -> Detector:
    """Find and load a detector (DetectorMissing / SvgenError with one-line messages)."""
    return Detector(spec, find_detector(spec, detector_dir), device=device)


def to_uint8(img: torch.Tensor) -> torch.Tensor:
    """Generator output in [-1, 1] -> uint8 with stylegan2-ada's rounding (x * 127.5 + 128, clamped)."""
    return (img.float() * 127.5 + 128).clamp(0, 255).to(torch.uint8)
