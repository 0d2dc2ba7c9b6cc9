"""Validation of user-given numbers: click option types for finite floats in a range, and a
finiteness check for arrays about to be rendered or stored.

click's ``float`` accepts ``nan`` and ``inf`` (and ``FloatRange`` lets NaN through, since every
comparison with NaN is false), so every float option of the CLI uses :class:`FiniteFloat`.
"""
from __future__ import annotations

import math
from typing import Any, Optional

import click

from svgen.utils.errors import PathLike, SvgenError


class FiniteFloat(click.ParamType):
    """A finite float, optionally bounded: ``FiniteFloat(0, open_min=True)`` means ``x > 0``."""

    name = "float"

    def __init__(self, min: Optional[float] = None, max: Optional[float] = None,
                 open_min: bool = False, open_max: bool = False):
        self.min, self.max, self.open_min, self.open_max = min, max, open_min, open_max

    def convert(self, value: Any, param: Optional[click.Parameter], ctx: Optional[click.Context]) -> float:
        x = click.FLOAT.convert(value, param, ctx)
        if not math.isfinite(x):
            self.fail(f"must be a finite number, got {value!r}", param, ctx)
        low_bad = self.min is not None and (x <= self.min if self.open_min else x < self.min)
        high_bad = self.max is not None and (x >= self.max if self.open_max else x > self.max)
        if low_bad or high_bad:
            self.fail(f"{x:g} is not {self.describe()}", param, ctx)
        return x

    def describe(self) -> str:
        """The accepted range in words (``positive``, ``in [0, 1]``, ...)."""
        if self.min == 0 and self.max is None:
            return "positive" if self.open_min else ">= 0"
        parts = []
        if self.min is not None:
            parts.append(f"{'>' if self.open_min else '>='} {self.min:g}")
        if self.max is not None:
            parts.append(f"{'<' if self.open_max else '<='} {self.max:g}")
        return " and ".join(parts) or "finite"

    def __repr__(self) -> str:
        return f"FiniteFloat({self.describe()})"


FINITE = FiniteFloat()
POSITIVE = FiniteFloat(0, open_min=True)
NON_NEGATIVE = FiniteFloat(0)
UNIT_INTERVAL = FiniteFloat(0, 1)
POSITIVE_INT = click.IntRange(min=1)
NON_NEGATIVE_INT = click.IntRange(min=0)


def check_finite(array: Any, what: str, path: Optional[PathLike] = None) -> None:
    """Raise a one-line SvgenError unless every value of ``array`` is finite (no NaN/inf)."""
    import numpy as np  # here, not at the top: `svgen ... --help` imports this module and no numpy

    a = np.asarray(array.detach().cpu() if hasattr(array, "detach") else array)
    if a.dtype.kind in "fc" and not np.isfinite(a).all():
        bad = int((~np.isfinite(a)).sum())
        raise SvgenError(f"{what}: {bad} of {a.size} values are NaN or infinite; nothing was written", path)
