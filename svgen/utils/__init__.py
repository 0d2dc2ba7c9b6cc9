"""Shared utilities: errors, atomic I/O, configs, run directories, logging, seeding, devices.

The names below are resolved on first use (PEP 562) so that importing one light submodule, such
as ``svgen.utils.errors`` for the CLI's error type, never imports torch through this package.
"""
from __future__ import annotations

import importlib
from typing import Any

# public name -> submodule that defines it
_EXPORTS: dict[str, str] = {
    "config_from_dict": "config", "config_to_dict": "config",
    "select_device": "device",
    "SvgenError": "errors",
    "atomic_path": "io", "atomic_write": "io", "file_sha256": "io", "torch_save_atomic": "io",
    "write_json": "io",
    "JsonlLogger": "logging",
    "RunDir": "rundir", "load_checkpoint": "rundir",
    "get_rng_state": "seed", "seed_everything": "seed", "set_rng_state": "seed",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    """Import the submodule that defines ``name`` only when ``name`` is asked for."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
