"""Device selection for ``--device auto|cpu|cuda``."""
from __future__ import annotations

import torch

from svgen.utils.errors import SvgenError


def select_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when available, else CPU; asking for CUDA without one is an error."""
    name = (name or "auto").lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise SvgenError("--device cuda was requested but no CUDA device is available")
        return torch.device(name)
    if name == "cpu":
        return torch.device("cpu")
    raise SvgenError(f"unknown device {name!r} (use auto, cpu or cuda)")
