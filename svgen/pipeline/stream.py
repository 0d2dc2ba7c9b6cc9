"""Streaming helpers for long outputs: latents generated, rendered and written chunk by chunk, so
peak memory does not depend on the number of frames (``svgen animate``/``sample``)."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from svgen.utils.errors import PathLike

CHUNK_FRAMES = 256        # frames generated, rendered and written at a time


def rechunk(chunks: Iterable[np.ndarray], size: int = CHUNK_FRAMES) -> Iterator[np.ndarray]:
    """Consecutive arrays [n_i, ...] regrouped into arrays of exactly ``size`` rows (the last may be shorter)."""
    held: list[np.ndarray] = []
    count = 0
    for c in chunks:
        c = np.asarray(c)
        held.append(c)
        count += len(c)
        while count >= size:
            rows = np.concatenate(held) if len(held) > 1 else held[0]
            yield rows[:size]
            held, count = [rows[size:]], count - size
    if count:
        yield np.concatenate(held) if len(held) > 1 else held[0]


class NpyWriter:
    """A ``.npy`` file of known shape [K, T, ...] written block by block along T.

    The header is written first and every block ``[K, n, ...]`` at frame ``pos`` goes straight to its
    place in the file (one seek per row of K), so nothing but the current block is held in memory:
    a memory map (``open_memmap``) would keep every written page resident until the end and count
    towards the process's peak memory. ``np.load`` reads the result as usual; the caller writes to a
    temporary name and renames it when complete (``OutputGroup``)."""

    def __init__(self, path: PathLike, shape: Sequence[int], dtype: np.dtype = np.float32):
        self.path = Path(path)
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self._fh = open(self.path, "wb")
        np.lib.format.write_array_header_1_0(self._fh, {"descr": np.lib.format.dtype_to_descr(self.dtype),
                                                        "fortran_order": False, "shape": self.shape})
        self._data = self._fh.tell()
        self._frame = int(np.prod(self.shape[2:], dtype=np.int64)) * self.dtype.itemsize
        self._fh.truncate(self._data + self.shape[0] * self.shape[1] * self._frame)
        self.written = 0

    def write(self, block: np.ndarray, pos: int) -> None:
        """Write ``block`` [K, n, ...] as frames ``pos .. pos + n - 1`` of every row."""
        block = np.ascontiguousarray(block, dtype=self.dtype)
        if block.shape[0] != self.shape[0] or block.shape[2:] != self.shape[2:] or pos + block.shape[1] > self.shape[1]:
            raise ValueError(f"block {block.shape} at frame {pos} does not fit {self.shape}")
        for k in range(self.shape[0]):
            self._fh.seek(self._data + (k * self.shape[1] + pos) * self._frame)
            self._fh.write(block[k].tobytes())
        self.written = max(self.written, pos + block.shape[1])

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> "NpyWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
