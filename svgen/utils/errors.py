"""The one error type that the CLI turns into ``svgen: error: ...`` and exit status 1."""
from __future__ import annotations

import os
from typing import Optional, Union

PathLike = Union[str, os.PathLike]


class SvgenError(Exception):
    """A user-facing failure: bad input, missing file, mismatched artifact.

    ``str(err)`` is one line, ``"<path>: <problem>"`` when a path is given.
    """

    def __init__(self, message: str, path: Optional[PathLike] = None):
        self.message = " ".join(str(message).split())  # always one line
        self.path = None if path is None else os.fspath(path)
        super().__init__(self.__str__())

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message
