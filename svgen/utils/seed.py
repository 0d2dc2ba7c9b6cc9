"""Seeding and RNG state capture, so a resumed run continues the same random stream."""
from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def get_rng_state() -> dict:
    """All global RNG states as a ``torch.load(weights_only=True)``-safe dict."""
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": _python_state_to_tensor(random.getstate()),
        "numpy": _numpy_state_to_dict(np.random.get_state()),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`get_rng_state` captured."""
    torch.set_rng_state(state["torch"].cpu() if hasattr(state["torch"], "cpu") else state["torch"])
    if "python" in state:
        random.setstate(_tensor_to_python_state(state["python"]))
    if "numpy" in state:
        np.random.set_state(_dict_to_numpy_state(state["numpy"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _python_state_to_tensor(st: tuple) -> torch.Tensor:
    version, internal, gauss = st
    return torch.tensor([version, *internal, -1 if gauss is None else 1], dtype=torch.int64)


def _tensor_to_python_state(t: torch.Tensor) -> tuple:
    vals = [int(v) for v in t.tolist()]
    return (vals[0], tuple(vals[1:-1]), None)


def _numpy_state_to_dict(st: tuple) -> dict:
    name, keys, pos, has_gauss, cached = st
    return {"keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "cached": float(cached)}


def _dict_to_numpy_state(d: dict) -> tuple:
    return ("MT19937", d["keys"].numpy().astype(np.uint32), d["pos"], d["has_gauss"], d["cached"])
