"""Atomic file output and file hashing.

Every artifact is written to a temporary name in the destination folder, flushed with fsync and
renamed into place, so a crash or a full disk never leaves a file that looks complete.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

from svgen.utils.errors import PathLike, SvgenError


def ensure_parent_writable(path: PathLike) -> Path:
    """Create the parent folder of ``path`` and check that it is writable (else SvgenError)."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SvgenError(f"cannot create output folder ({exc.strerror or exc})", parent) from None
    if not os.access(parent, os.W_OK | os.X_OK):
        raise SvgenError("output folder is not writable", parent)
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _os_error(exc: OSError, path: PathLike) -> SvgenError:
    if exc.errno == errno.ENOSPC:
        return SvgenError("no space left on device while writing", path)
    return SvgenError(f"cannot write ({exc.strerror or exc})", path)


@contextlib.contextmanager
def atomic_path(path: PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success fsync and rename it onto ``path``.

    For libraries that write by file name (h5py, zipfile, ffmpeg). On any exception the temporary
    file is removed and ``path`` is left untouched. ``suffix`` defaults to the target's suffix so
    tools that pick a format by extension still work.
    """
    path = ensure_parent_writable(path)
    suffix = path.suffix if suffix is None else suffix
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; artifacts follow the umask
        os.replace(tmp_path, path)
        _fsync_dir(path.parent)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        raise _os_error(exc, path) from None
    except BaseException:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        raise


@contextlib.contextmanager
def atomic_write(path: PathLike, mode: str = "wb", encoding: str | None = None) -> Iterator[Any]:
    """Open a temporary file for writing; it replaces ``path`` only if the block succeeds."""
    if "b" not in mode and encoding is None:
        encoding = "utf-8"
    with atomic_path(path) as tmp:
        with open(tmp, mode, encoding=encoding) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())


def write_json(path: PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_write(path, "w") as fh:
        json.dump(obj, fh, indent=2, sort_keys=False, default=_json_default)
        fh.write("\n")


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def torch_save_atomic(obj: Any, path: PathLike) -> None:
    """``torch.save`` through a temporary file and an atomic rename."""
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def file_sha256(path: PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes (identifies the generator/encoder an artifact was made with)."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(chunk), b""):
                h.update(block)
    except OSError as exc:
        raise SvgenError(f"cannot read ({exc.strerror or exc})", path) from None
    return h.hexdigest()


def require_file(path: PathLike, what: str = "file") -> Path:
    """Return ``Path(path)`` if it is an existing readable file, else raise a one-line SvgenError."""
    p = Path(path)
    if not p.exists():
        raise SvgenError(f"{what} does not exist", p)
    if not p.is_file():
        raise SvgenError(f"{what} is not a regular file", p)
    if not os.access(p, os.R_OK):
        raise SvgenError(f"{what} is not readable", p)
    return p


class CommitOnExit:
    """Context-manager protocol for writers with ``close()`` (finish and rename into place) and
    ``abort(exc_type, exc, tb)`` (drop the temporary file): a ``with`` block that raises aborts."""

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort(exc_type, exc, tb)
