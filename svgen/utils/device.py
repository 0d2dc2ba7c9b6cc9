"""Device selection for ``--device auto|cpu|cuda``, and handing freed host memory back."""
from __future__ import annotations

import contextlib
import ctypes
import gc
from typing import Iterator, Optional

import torch

from svgen.utils.errors import SvgenError

_M_MMAP_THRESHOLD = -3   # glibc's mallopt parameter


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


def _libc() -> Optional[ctypes.CDLL]:
    try:
        libc = ctypes.CDLL(None)          # this process's symbols: glibc's on Linux
        return libc if hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None
    except (OSError, TypeError):
        return None


def release_memory() -> None:
    """Give the memory of freed tensors back to the operating system (``malloc_trim``).

    glibc keeps freed blocks below its mmap threshold in the heap, so after a phase with large
    temporaries the process's resident memory stays at that phase's peak. A no-op without glibc."""
    gc.collect()
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


@contextlib.contextmanager
def mapped_temporaries(threshold: int = 1 << 20) -> Iterator[None]:
    """Inside: every allocation of ``threshold`` bytes or more is its own memory mapping, returned to
    the system when freed. glibc raises its mmap threshold (up to 32 MiB) each time a mapped block
    is freed, after which the temporaries of a backward pass (tens of MiB each at 256 px) come from
    the heap and fragment it: pivotal tuning at 256 px then peaked at 1.9 GB instead of 1.4 GB and
    left the following rendering 1.3 GB of scattered free heap. On exit the threshold is fixed at
    glibc's maximum (what it would have risen to; rendering keeps its speed) and the heap trimmed."""
    libc = _libc()
    if libc is not None:
        libc.mallopt(_M_MMAP_THRESHOLD, int(threshold))
    try:
        yield
    finally:
        if libc is not None:
            libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20)
        release_memory()
