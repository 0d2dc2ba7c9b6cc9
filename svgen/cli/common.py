"""Options and helpers shared by every command (``--seed``, ``--device``, output != input, warnings
as one line)."""
from __future__ import annotations

import contextlib
import functools
import warnings
from typing import Any, Callable, Iterator

import click


def common_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``--seed`` and ``--device auto|cpu|cuda`` to a command, and refuse an ``--out`` that
    is one of the command's input files before the command starts."""

    @click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
    @click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
                  show_default=True, help="Where to run.")
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        refuse_output_as_input(kwargs)
        return func(*args, **kwargs)

    return wrapper


def positive_int(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """click callback: reject zero or negative integers as a usage error."""
    if value is not None and value <= 0:
        raise click.BadParameter(f"must be a positive integer, got {value}")
    return value


def refuse_output_as_input(kwargs: dict) -> None:
    """SvgenError when ``--out`` names the same file (resolved path or inode) as any path-typed
    argument or option of the running command, e.g. ``preprocess x.mp4 --out x.mp4``."""
    from svgen.utils.io import refuse_input_as_output

    ctx = click.get_current_context(silent=True)
    if ctx is None or kwargs.get("out") is None:
        return
    inputs = {}
    for param in ctx.command.params:
        if param.name == "out" or not isinstance(param.type, click.Path):
            continue
        value = kwargs.get(param.name)
        label = param.opts[0] if isinstance(param, click.Option) else param.human_readable_name
        for item in value if isinstance(value, (tuple, list)) else (value,):
            if item is not None:
                inputs[f"{label} {item}"] = item
    refuse_input_as_output(kwargs["out"], inputs)


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
