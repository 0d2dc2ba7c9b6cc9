"""Plain-dataclass configs: saved as dicts next to every checkpoint and rebuilt from them."""
from __future__ import annotations

import dataclasses
import typing
from typing import Any, Type, TypeVar

T = TypeVar("T")


def config_to_dict(cfg: Any) -> dict:
    """Dataclass (possibly nested) -> plain JSON-able dict."""
    if not dataclasses.is_dataclass(cfg):
        raise TypeError(f"expected a dataclass instance, got {type(cfg).__name__}")
    return dataclasses.asdict(cfg)


def config_from_dict(cls: Type[T], data: dict) -> T:
    """Rebuild dataclass ``cls`` from ``data``; nested dataclass fields are rebuilt too.

    Unknown keys are ignored and missing keys take their defaults, so checkpoints written by an
    older version still load.
    """
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        value = data[f.name]
        ftype = hints.get(f.name)
        if dataclasses.is_dataclass(ftype) and isinstance(value, dict):
            value = config_from_dict(ftype, value)
        elif isinstance(value, list) and typing.get_origin(ftype) is tuple:
            value = tuple(value)
        kwargs[f.name] = value
    return cls(**kwargs)


def replace(cfg: T, **changes: Any) -> T:
    """``dataclasses.replace`` that ignores ``None`` values (handy for CLI overrides)."""
    return dataclasses.replace(cfg, **{k: v for k, v in changes.items() if v is not None})
