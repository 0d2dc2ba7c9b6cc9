"""Run an iterator one or more items ahead on a background thread.

Training loops use it so that reading the next batch (HDF5 decompression, PNG decoding) overlaps
with the optimisation step: PyTorch kernels and h5py/zlib release the GIL for the heavy parts.
"""
from __future__ import annotations

import queue
import threading
from typing import Generator, Iterable, TypeVar

T = TypeVar("T")
_DONE = object()


def prefetch(items: Iterable[T], depth: int = 1) -> Generator[T, None, None]:
    """Yield the items of ``items`` in order while a thread produces up to ``depth`` ahead.

    An exception in the producer is re-raised in the consumer at the position where it happened.
    Closing the generator early (``break``) stops the producer after its current item.
    """
    q: queue.Queue = queue.Queue(maxsize=max(1, int(depth)))
    stop = threading.Event()

    def put(entry: tuple) -> bool:
        """Queue ``entry`` unless the consumer has gone; False when it has."""
        while not stop.is_set():
            try:
                q.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put((item, None)):
                    return
            put((_DONE, None))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            put((_DONE, exc))

    thread = threading.Thread(target=produce, name="svgen-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item, exc = q.get()
            if exc is not None:
                raise exc
            if item is _DONE:
                return
            yield item
    finally:
        stop.set()
        thread.join()
