"""Progress bars on stderr (tqdm), silenced with ``SVGEN_NO_PROGRESS=1``."""
from __future__ import annotations

import os
import sys
from typing import Any, Iterable, Optional

from tqdm.auto import tqdm


def progress(iterable: Optional[Iterable] = None, **kwargs: Any) -> tqdm:
    """A tqdm bar writing to stderr; ``disable`` honours SVGEN_NO_PROGRESS."""
    kwargs.setdefault("file", sys.stderr)
    kwargs.setdefault("dynamic_ncols", True)
    kwargs.setdefault("mininterval", 0.5)
    if os.environ.get("SVGEN_NO_PROGRESS"):
        kwargs["disable"] = True
    return tqdm(iterable, **kwargs)
