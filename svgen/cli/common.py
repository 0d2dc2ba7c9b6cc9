"""Options and helpers shared by every command (``--seed``, ``--device``)."""
from __future__ import annotations

import functools
from typing import Any, Callable

import click


def common_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``--seed`` and ``--device auto|cpu|cuda`` to a command."""

    @click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
    @click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
                  show_default=True, help="Where to run.")
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return func(*args, **kwargs)

    return wrapper


def positive_int(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """click callback: reject zero or negative integers as a usage error."""
    if value is not None and value <= 0:
        raise click.BadParameter(f"must be a positive integer, got {value}")
    return value
