"""Atomic file output and file hashing.

Every artifact is written to a temporary name in the destination folder, flushed with fsync and
renamed into place, so a crash or a full disk never leaves a file that looks complete.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator, Optional

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


def fsync_dir(folder: Path) -> None:
    """fsync a folder so a rename inside it survives a power cut (best effort)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _os_error(exc: OSError, path: PathLike) -> SvgenError:
    if exc.errno == errno.ENOSPC:
        return SvgenError("no space left on device while writing", path)
    if exc.errno == errno.EFBIG:
        return SvgenError("file too large for this filesystem or the file-size limit", path)
    return SvgenError(f"cannot write ({exc.strerror or exc})", path)


def _temp_prefix(path: Path) -> str:
    return f".{path.name}."


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists but is not ours
        return True
    return True


def remove_stale_temps(path: PathLike) -> list[Path]:
    """Delete temporary files of ``path`` left by killed processes (their writer's pid is gone).

    Temporary names are ``.<name>.<pid>.<random>.tmp<suffix>``; a live writer's files are kept.
    """
    path = Path(path)
    removed = []
    with contextlib.suppress(OSError):
        for cand in path.parent.glob(f"{glob_escape(_temp_prefix(path))}*.tmp*"):
            pid_text = cand.name[len(_temp_prefix(path)):].split(".", 1)[0]
            if pid_text.isdigit() and int(pid_text) != os.getpid() and not _pid_alive(int(pid_text)):
                with contextlib.suppress(OSError):
                    cand.unlink()
                    removed.append(cand)
    return removed


def glob_escape(text: str) -> str:
    """Escape glob metacharacters in a literal file name part."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in text)


def _mkstemp_beside(path: Path, suffix: str) -> Path:
    fd, tmp = tempfile.mkstemp(prefix=f"{_temp_prefix(path)}{os.getpid()}.", suffix=f".tmp{suffix}",
                               dir=path.parent)
    os.close(fd)
    return Path(tmp)


def _commit(tmp_path: Path, path: Path) -> None:
    """fsync ``tmp_path``, give it umask permissions and rename it onto ``path``."""
    with open(tmp_path, "rb+") as fh:
        fh.flush()
        os.fsync(fh.fileno())
    os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; artifacts follow the umask
    os.replace(tmp_path, path)
    fsync_dir(path.parent)


@contextlib.contextmanager
def atomic_path(path: PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success fsync and rename it onto ``path``.

    For libraries that write by file name (h5py, zipfile, ffmpeg). On any exception the temporary
    file is removed and ``path`` is left untouched. ``suffix`` defaults to the target's suffix so
    tools that pick a format by extension still work. Temporaries of the same target left by
    killed runs are removed first.
    """
    path = ensure_parent_writable(path)
    suffix = path.suffix if suffix is None else suffix
    remove_stale_temps(path)
    try:
        tmp_path = _mkstemp_beside(path, suffix)
    except OSError as exc:
        raise _os_error(exc, path) from None
    try:
        yield tmp_path
        _commit(tmp_path, path)
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


class _RecordingWriter(io.RawIOBase):
    """A write-only file object that remembers the first OSError of its file (``torch.save`` turns
    it into an opaque ``RuntimeError [enforce fail at inline_container.cc]``)."""

    def __init__(self, fh: Any):
        super().__init__()
        self.fh = fh
        self.error: Optional[OSError] = None

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        try:
            return self.fh.write(data)
        except OSError as exc:
            self.error = self.error or exc
            raise

    def flush(self) -> None:
        try:
            self.fh.flush()
        except OSError as exc:
            self.error = self.error or exc
            raise


def torch_save_atomic(obj: Any, path: PathLike) -> None:
    """``torch.save`` into a temporary file, then fsync and rename it onto ``path``.

    A full disk or another write error becomes a one-line SvgenError naming ``path`` and nothing
    is left behind (torch itself reports it as an internal ``RuntimeError``).
    """
    import torch

    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            rec = _RecordingWriter(fh)
            try:
                torch.save(obj, rec)
                rec.flush()
            except (RuntimeError, OSError) as exc:
                cause = rec.error or _find_os_error(exc)
                if cause is None:
                    raise
                raise cause from None


def _find_os_error(exc: BaseException) -> Optional[OSError]:
    """The OSError behind an exception (its cause/context chain), if any."""
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, OSError):
            return exc
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None


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


def check_generator_sha256(recorded: str, actual: str, subject: str, where: PathLike,
                           generator: PathLike = "the generator") -> None:
    """The one check of a generator against the sha256 an artifact recorded (an empty record or an
    unknown ``actual`` is not checked): ``"<subject> another generator (it records .., <generator> is ..)"``,
    e.g. subject "encoder was trained against", naming the file ``where``."""
    if recorded and actual and recorded != actual:
        raise SvgenError(f"{subject} another generator (it records {recorded[:12]}, {generator} is "
                         f"{actual[:12]})", where)


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


def same_file(a: PathLike, b: PathLike) -> bool:
    """True when ``a`` and ``b`` name one file: the same resolved path, or the same inode (hard
    links, bind mounts)."""
    pa, pb = Path(a), Path(b)
    with contextlib.suppress(OSError, RuntimeError):
        if pa.resolve() == pb.resolve():
            return True
    try:
        return os.path.samefile(pa, pb)
    except OSError:
        return False


def refuse_input_as_output(out: PathLike, inputs: dict[str, Optional[PathLike]]) -> None:
    """Raise a one-line SvgenError when the output ``out`` is one of the ``inputs`` (label -> path),
    so a command never replaces a file it reads."""
    for label, src in inputs.items():
        if src is not None and same_file(out, src):
            raise SvgenError(f"the output is also an input ({label}); choose another output path", out)


class ExclusiveLock:
    """An exclusive, non-blocking ``flock`` on a lock file, so two processes never write the same
    output; the second one fails with a one-line SvgenError naming ``target``.

    The lock file is removed on release; acquiring re-checks that the locked file is still the
    one at ``lock_path`` (a releaser may have unlinked it in between). ``per_process=True`` takes
    a POSIX record lock instead, which the same process may take again (a training run resumed
    in-process) and which ends with the process; its lock file stays.
    """

    def __init__(self, lock_path: PathLike, target: PathLike, what: str = "output",
                 per_process: bool = False):
        self.lock_path = Path(lock_path)
        self.target = Path(target)
        self.what = what
        self.per_process = per_process
        self._fd: Optional[int] = None

    def acquire(self) -> "ExclusiveLock":
        import fcntl

        while self._fd is None:
            try:
                fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o666)
            except OSError as exc:
                raise _os_error(exc, self.lock_path) from None
            try:
                if self.per_process:
                    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                else:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise SvgenError(f"another svgen process is writing this {self.what} (it holds "
                                     f"{self.lock_path.name}); wait for it or choose another output",
                                     self.target) from None
                raise _os_error(exc, self.lock_path) from None
            try:
                same = self.per_process or os.path.samestat(os.fstat(fd), os.stat(self.lock_path))
            except OSError:
                same = False
            if same:
                self._fd = fd
            else:  # unlinked by the previous holder after we opened it: lock the new file
                os.close(fd)
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, 0)
            os.write(self._fd, f"{os.getpid()}\n".encode())
        return self

    def release(self) -> None:
        """Give the lock up (and remove the lock file, unless ``per_process``)."""
        if self._fd is None:
            return
        if not self.per_process:
            with contextlib.suppress(OSError):
                self.lock_path.unlink()
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> "ExclusiveLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def __del__(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)


def _nearly_full(folder: Path, margin: int = 1 << 20) -> bool:
    """True when the filesystem of ``folder`` has less than ``margin`` bytes free."""
    try:
        st = os.statvfs(folder)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < margin


class OutputGroup:
    """Several files that appear together or not at all (a video and its ``.npy``/``.json``).

    ``part(target)`` gives a temporary path beside ``target`` to write; ``commit()`` fsyncs every
    part and renames them in the order asked for (``last=True`` parts after the others, so the
    main file appears only when its companions are in place); an exception in the ``with`` block,
    or ``abort()``, removes every temporary and leaves the targets untouched.
    """

    def __init__(self) -> None:
        self._parts: list[tuple[Path, Path, bool]] = []

    def part(self, target: PathLike, suffix: Optional[str] = None, last: bool = False) -> Path:
        target = ensure_parent_writable(target)
        remove_stale_temps(target)
        try:
            tmp = _mkstemp_beside(target, target.suffix if suffix is None else suffix)
        except OSError as exc:
            self.abort()
            raise _os_error(exc, target) from None
        self._parts.append((tmp, target, bool(last)))
        return tmp

    def commit(self) -> list[Path]:
        ordered = [p for p in self._parts if not p[2]] + [p for p in self._parts if p[2]]
        try:
            for tmp, target, _ in ordered:
                with open(tmp, "rb+") as fh:
                    os.fsync(fh.fileno())
                os.chmod(tmp, 0o666 & ~_umask())
        except OSError as exc:
            self.abort()
            raise _os_error(exc, target) from None
        for tmp, target, _ in ordered:
            os.replace(tmp, target)
            fsync_dir(target.parent)
        self._parts = []
        return [target for _, target, _ in ordered]

    def abort(self) -> None:
        for tmp, _, _ in self._parts:
            with contextlib.suppress(OSError):
                tmp.unlink()
        self._parts = []

    def __enter__(self) -> "OutputGroup":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.commit()
            return
        error = self._as_target_error(exc)
        self.abort()
        if error is not None:
            raise error from None

    def _as_target_error(self, exc: BaseException) -> Optional[SvgenError]:
        """A write error about one of the temporaries, restated about its target (the user never
        sees a hidden temporary name); a bare OSError is put on the part written last."""
        if not self._parts:
            return None
        named = getattr(exc, "path", None) if isinstance(exc, SvgenError) else getattr(exc, "filename", None)
        target = self._parts[-1][1]
        for tmp, tgt, _ in self._parts:
            if named is not None and tmp.name in os.fspath(named):
                target = tgt
                break
        else:
            if named is not None:
                return None
        if isinstance(exc, SvgenError):
            return SvgenError(exc.message, target)
        if isinstance(exc, OSError):
            if exc.errno is None and _nearly_full(target.parent):  # numpy reports a short write only
                exc = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return _os_error(exc, target)
        return None
