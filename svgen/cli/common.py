"""Options and helpers shared by every command (``--seed``, ``--device``, warnings as one line)."""
from __future__ import annotations

import contextlib
import functools
import warnings
from typing import Any, Callable, Iterator

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


@contextlib.contextmanager
def echo_warnings() -> Iterator[None]:
    """Show library warnings as ``svgen: warning: ...`` lines on stderr, as they happen."""

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        click.echo(f"svgen: warning: {' '.join(str(message).split())}", err=True)

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        old = warnings.showwarning
        warnings.showwarning = show
        try:
            yield
        finally:
            warnings.showwarning = old
