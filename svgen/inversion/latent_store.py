"""The HDF5 latent store ``latents.h5`` (docs/FORMATS.md).

Layout::

    /                attrs: format, version, space ("w+"|"w"), num_ws, w_dim, generator_sha256,
                            encoder_sha256, resolution
    /clips/<clip>/w  float32 [T, num_ws, w_dim] (space "w": [T, w_dim]); chunks of whole frames
    /clips/<clip>    attrs: source, fps, num_frames, frames_done
    /clips/<clip>/detected  bool [T]
    /pca/            mean, components, explained_variance (optional, written by the offset trick)

The writer works on ``<out>.partial`` (under the lock ``.<out>.lock``), updates ``frames_done`` after
every flushed chunk and, when every clip is complete, verifies the data it re-reads against a sha256
of what it wrote before renaming the file to ``<out>``; ``resume=True`` continues a partial file. Readers
stream slices and never load a whole store.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import os
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np

from svgen.utils.errors import PathLike, SvgenError
from svgen.utils.io import ExclusiveLock, check_generator_sha256, ensure_parent_writable, fsync_dir
from svgen.utils.shard import shard_order

FORMAT = "svgen-latents"
VERSION = 1
CHUNK_FRAMES = 64


def _h5py():
    import h5py

    return h5py


def partial_path(path: PathLike) -> Path:
    """Where an unfinished store lives while it is written."""
    p = Path(path)
    return p.with_name(p.name + ".partial")


def lock_path(path: PathLike) -> Path:
    """The lock file that keeps a second writer away from a store and its ``.partial``."""
    p = Path(path)
    return p.with_name(f".{p.name}.lock")


class _GuardedFile(io.RawIOBase):
    """The ``.partial`` file as HDF5 sees it (h5py's ``fileobj`` driver).

    The first OS write error (a full disk) is recorded and every later write is dropped, so the
    HDF5 library never sees a failed write: it would otherwise leave its file half-flushed and
    crash the interpreter at exit. The writer checks ``error`` after each flush and removes the
    partial file; a recorded error means the file is garbage.
    """

    def __init__(self, path: Path, mode: str):
        super().__init__()
        self.fh = open(path, mode, buffering=0)
        self.error: Optional[OSError] = None

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        return self.fh.readinto(buf)

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        if self.error is None:
            try:
                done = 0
                while done < len(view):
                    done += self.fh.write(view[done:])
            except OSError as exc:
                self.error = exc
        return len(view)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.fh.seek(offset, whence)

    def tell(self) -> int:
        return self.fh.tell()

    def truncate(self, size: Optional[int] = None) -> int:
        if self.error is None:
            try:
                return self.fh.truncate(size)
            except OSError as exc:
                self.error = exc
        return self.fh.tell() if size is None else size

    def flush(self) -> None:
        pass

    def sync(self) -> None:
        """fsync the file (records an error like a failed write)."""
        if self.error is None:
            try:
                os.fsync(self.fh.fileno())
            except OSError as exc:
                self.error = exc

    def close(self) -> None:
        if not self.closed:
            self.fh.close()
        super().close()


def _digest_clips(f, hashers: Optional[dict] = None) -> str:
    """sha256 over every clip's name, latents and detection flags (sorted by name), from the file
    or, for clips in ``hashers``, from the running hashes of what was written."""
    total = hashlib.sha256()
    for name in sorted(f["clips"].keys()):
        g = f["clips"][name]
        if hashers is not None and name in hashers:
            h = hashers[name]
        else:
            h = _clip_hasher(g, int(g.attrs["frames_done"]))
        total.update(name.encode() + b"\0" + h["w"].hexdigest().encode() + h["detected"].hexdigest().encode())
    return total.hexdigest()


def _clip_hasher(g, frames: int) -> dict:
    """Running hashes of a clip's first ``frames`` latents and of its detection flags, read back."""
    hw = hashlib.sha256()
    for a in range(0, frames, CHUNK_FRAMES):
        hw.update(np.ascontiguousarray(g["w"][a:min(a + CHUNK_FRAMES, frames)], dtype=np.float32).tobytes())
    hd = hashlib.sha256(np.ascontiguousarray(g["detected"][:], dtype=bool).tobytes())
    return {"w": hw, "detected": hd}


class LatentStoreWriter:
    """Append latents clip by clip, chunk by chunk; resumable after a crash or kill.

    Safe against what the disk and other processes can do: one writer per store (a lock file),
    a full disk stops the run with a one-line error and removes the partial file, and the store
    reaches its final name only after its data was fsynced, re-read and matched a sha256 of what
    was written (recorded as the ``data_sha256`` attribute).
    """

    def __init__(self, path: PathLike, *, space: str, num_ws: int, w_dim: int,
                 generator_sha256: str, encoder_sha256: str = "", resolution: int = 0,
                 resume: bool = False):
        if space not in ("w+", "w"):
            raise ValueError(f"space must be 'w+' or 'w', got {space!r}")
        self.path = ensure_parent_writable(path)
        self.tmp = partial_path(self.path)
        self.lock = ExclusiveLock(lock_path(self.path), self.path, "latent store").acquire()
        self._hash: dict[str, dict] = {}
        self.f = self._guard = None
        try:
            self._open(space, num_ws, w_dim, generator_sha256, encoder_sha256, resolution, resume)
        except BaseException:
            self.close()
            raise
        self.space, self.num_ws, self.w_dim = space, int(num_ws), int(w_dim)

    def _open(self, space: str, num_ws: int, w_dim: int, generator_sha256: str, encoder_sha256: str,
              resolution: int, resume: bool) -> None:
        h5py = _h5py()
        attrs = {"format": FORMAT, "version": VERSION, "space": space, "num_ws": int(num_ws),
                 "w_dim": int(w_dim), "generator_sha256": generator_sha256,
                 "encoder_sha256": encoder_sha256, "resolution": int(resolution)}
        if resume and self.tmp.exists():
            try:
                self._guard = _GuardedFile(self.tmp, "r+b")
                self.f = h5py.File(self._guard, "r+")
            except OSError as exc:
                raise SvgenError(f"cannot resume: partial store is unreadable ({exc})", self.tmp) from None
            if self.f.attrs.get("format") != FORMAT:
                raise SvgenError("cannot resume: not an svgen latent store", self.tmp)
            for key in ("generator_sha256", "encoder_sha256", "space", "num_ws", "w_dim"):
                have = self.f.attrs.get(key)
                have = have.decode() if isinstance(have, bytes) else have
                if have != attrs[key]:
                    raise SvgenError(f"cannot resume: partial store was written with a different "
                                     f"{key} ({have!r} vs {attrs[key]!r})", self.tmp)
        else:
            try:
                self._guard = _GuardedFile(self.tmp, "w+b")
            except OSError as exc:
                raise SvgenError(f"cannot write ({exc.strerror or exc})", self.tmp) from None
            self.f = h5py.File(self._guard, "w")
            for k, v in attrs.items():
                self.f.attrs[k] = v
            self.f.create_group("clips")
            self._flush()

    def _flush(self) -> None:
        """Flush HDF5 to the file; a write error (full disk) ends the run and drops the partial file."""
        self.f.flush()
        if self._guard.error is not None:
            self._write_failed(self._guard.error)

    # -- clips -------------------------------------------------------------------------------
    def frame_shape(self) -> tuple:
        return (self.num_ws, self.w_dim) if self.space == "w+" else (self.w_dim,)

    def create_clip(self, name: str, num_frames: int, *, source: str = "", fps: float = 25.0,
                    detected: Optional[Sequence[bool]] = None) -> int:
        """Create a clip (or find it when resuming); returns ``frames_done``."""
        clips = self.f["clips"]
        if name in clips:
            g = clips[name]
            if int(g.attrs["num_frames"]) != int(num_frames):
                raise SvgenError(f"cannot resume: clip {name!r} has {g.attrs['num_frames']} frames "
                                 f"in the partial store but {num_frames} in the input", self.tmp)
            done = int(g.attrs["frames_done"])
            self._hash[name] = _clip_hasher(g, done)
            return done
        g = clips.create_group(name)
        chunk = (min(CHUNK_FRAMES, max(1, num_frames)),) + self.frame_shape()
        g.create_dataset("w", shape=(num_frames,) + self.frame_shape(), dtype="float32",
                         chunks=chunk, compression="gzip", compression_opts=4, shuffle=True)
        det = np.ones(num_frames, bool) if detected is None else np.asarray(detected, bool)
        g.create_dataset("detected", data=det)
        g.attrs.update({"source": str(source), "fps": float(fps), "num_frames": int(num_frames),
                        "frames_done": 0})
        self._hash[name] = {"w": hashlib.sha256(), "detected": hashlib.sha256(det.tobytes())}
        self._flush()
        return 0

    def frames_done(self, name: str) -> int:
        return int(self.f["clips"][name].attrs["frames_done"]) if name in self.f["clips"] else 0

    def write(self, name: str, start: int, w: np.ndarray) -> None:
        """Write frames ``start .. start+len(w)`` of a clip; must continue where it stopped."""
        g = self.f["clips"][name]
        done = int(g.attrs["frames_done"])
        if start != done:
            raise ValueError(f"clip {name}: write at {start} but {done} frames are done")
        w = np.ascontiguousarray(w, dtype=np.float32)
        if w.shape[1:] != self.frame_shape():
            raise ValueError(f"latents of shape {w.shape[1:]} do not match store {self.frame_shape()}")
        if not np.isfinite(w).all():
            raise SvgenError(f"clip {name!r}: the latents of frames {start}..{start + len(w) - 1} are not "
                             f"finite (NaN or infinity); the encoder or its refinement diverged", self.path)
        g["w"][start:start + len(w)] = w
        self._flush()  # data first, then the counter that says it is there
        g.attrs["frames_done"] = start + len(w)
        self._flush()
        if name not in self._hash:
            self._hash[name] = _clip_hasher(g, start)
        self._hash[name]["w"].update(w.tobytes())

    def finalize(self) -> Path:
        """Check every clip is complete, record ``data_sha256``, fsync, re-read and verify the
        data, then rename ``.partial`` onto the target."""
        for name, g in self.f["clips"].items():
            if int(g.attrs["frames_done"]) != int(g.attrs["num_frames"]):
                raise SvgenError(f"clip {name!r} is incomplete", self.tmp)
        digest = _digest_clips(self.f, self._hash)
        self.f.attrs["data_sha256"] = digest
        self._flush()
        self.f.close()
        self.f = None
        self._guard.sync()
        if self._guard.error is not None:
            self._write_failed(self._guard.error)
        self._guard.close()
        self._verify(digest)
        try:
            os.replace(self.tmp, self.path)
        except OSError as exc:
            raise SvgenError(f"cannot rename the finished store into place ({exc.strerror or exc})",
                             self.path) from None
        fsync_dir(self.path.parent)
        self.lock.release()
        return self.path

    def _write_failed(self, exc: OSError) -> None:
        """Drop the partial file after a write error and raise the one-line error."""
        self.discard()
        what = "no space left on device" if exc.errno == errno.ENOSPC else (exc.strerror or str(exc))
        raise SvgenError(f"{what} while writing the latent store (the partial store was removed; "
                         f"free space and run again)", self.path)

    def _verify(self, digest: str) -> None:
        """Re-read the closed ``.partial`` file and compare its data with what was written."""
        h5py = _h5py()
        try:
            with h5py.File(self.tmp, "r") as f:
                found = _digest_clips(f)
        except (OSError, KeyError, RuntimeError) as exc:
            found = f"unreadable ({' '.join(str(exc).split())[:120]})"
        if found != digest:
            self.discard()
            raise SvgenError("the written latent store does not read back as written (disk full or "
                             "failing?); it was removed", self.path)

    def discard(self) -> None:
        """Close and delete the partial file (its data cannot be trusted) and release the lock."""
        self.close()
        with contextlib.suppress(OSError):
            self.tmp.unlink()

    def close(self) -> None:
        """Close without finalising (the ``.partial`` file stays for ``--resume``)."""
        if self.f is not None:
            with contextlib.suppress(Exception):
                self.f.close()
            self.f = None
        if self._guard is not None:
            with contextlib.suppress(Exception):
                self._guard.close()
        self.lock.release()


class LatentStore:
    """Read-only view of a finished ``latents.h5``; slices are read on demand."""

    def __init__(self, path: PathLike, allow_partial: bool = False):
        self.path = Path(path)
        if not self.path.is_file():
            raise SvgenError("latent store does not exist", self.path)
        h5py = _h5py()
        try:
            self.f = h5py.File(self.path, "r")
        except OSError as exc:
            msg = str(exc).splitlines()[0] if str(exc) else "unreadable"
            raise SvgenError(f"not a readable HDF5 latent store (truncated or corrupt? {msg})",
                             self.path) from None
        a = self.f.attrs
        fmt = a.get("format")
        fmt = fmt.decode() if isinstance(fmt, bytes) else fmt
        if fmt != FORMAT:
            self.f.close()
            raise SvgenError(f"not an svgen latent store (format {fmt!r})", self.path)
        if "clips" not in self.f:
            self.f.close()
            raise SvgenError("latent store has no /clips group (damaged or not written by svgen invert)",
                             self.path)
        try:
            self.space = str(a["space"])
            self.num_ws = int(a["num_ws"])
            self.w_dim = int(a["w_dim"])
        except KeyError as exc:
            self.f.close()
            raise SvgenError(f"latent store is missing the attribute {exc}", self.path) from None
        version = int(a.get("version", VERSION))
        if version > VERSION:
            self.f.close()
            raise SvgenError(f"latent store version {version} is newer than this svgen understands "
                             f"({VERSION})", self.path)
        self.generator_sha256 = str(a.get("generator_sha256", ""))
        self.encoder_sha256 = str(a.get("encoder_sha256", ""))
        self.resolution = int(a.get("resolution", 0))
        self.clips = list(self.f["clips"].keys())
        if not self.clips:
            self.f.close()
            raise SvgenError("latent store has no clips", self.path)
        for name in self.clips:
            g = self.f["clips"][name]
            if "w" not in g or "num_frames" not in g.attrs or "frames_done" not in g.attrs:
                self.f.close()
                raise SvgenError(f"clip {name!r} is damaged (missing latents or attributes)", self.path)
            if not allow_partial and int(g.attrs["frames_done"]) < int(g.attrs["num_frames"]):
                self.f.close()
                raise SvgenError(f"clip {name!r} is incomplete (resume the inversion)", self.path)

    def __enter__(self) -> "LatentStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        try:
            self.f.close()
        except Exception:
            pass

    def check_generator(self, sha256: str, what: PathLike = "generator") -> None:
        """Refuse a generator other than the one the store was inverted with."""
        check_generator_sha256(self.generator_sha256, sha256, "latents were made with", self.path, generator=what)

    def num_frames(self, clip: str) -> int:
        return int(self.f["clips"][clip].attrs["num_frames"])

    def fps(self, clip: str) -> float:
        return float(self.f["clips"][clip].attrs["fps"])

    def source(self, clip: str) -> str:
        return str(self.f["clips"][clip].attrs.get("source", ""))

    def detected(self, clip: str) -> np.ndarray:
        return np.asarray(self.f["clips"][clip]["detected"][:], bool)

    @property
    def total_frames(self) -> int:
        return sum(self.num_frames(c) for c in self.clips)

    def read(self, clip: str, start: int = 0, stop: Optional[int] = None,
             as_wplus: bool = False) -> np.ndarray:
        """Latents of frames ``start..stop``: [n, num_ws, w_dim] (W+) or [n, w_dim] (W).

        ``as_wplus`` broadcasts W codes to [n, num_ws, w_dim].
        """
        if clip not in self.f["clips"]:
            raise SvgenError(f"no clip named {clip!r} (have: {', '.join(self.clips)})", self.path)
        w = np.asarray(self.f["clips"][clip]["w"][start:stop], dtype=np.float32)
        if not np.isfinite(w).all():
            bad = np.flatnonzero(~np.isfinite(w.reshape(len(w), -1)).all(1)) + (start or 0)
            raise SvgenError(f"clip {clip!r} holds latents that are not finite (NaN or infinity) in "
                             f"{len(bad)} frame(s), first frame {int(bad[0])}: invert the clip again", self.path)
        if as_wplus and self.space == "w":
            w = np.repeat(w[:, None, :], self.num_ws, axis=1)
        return w

    def windows(self, length: int, stride: int = 1) -> list[tuple[str, int]]:
        """All (clip, start) pairs of windows of ``length`` frames (clips shorter are skipped)."""
        out = []
        for c in self.clips:
            n = self.num_frames(c)
            out.extend((c, s) for s in range(0, n - length + 1, stride))
        return out

    def iter_windows(self, length: int, stride: int = 1,
                     as_wplus: bool = False) -> Iterator[tuple[str, int, np.ndarray]]:
        """Stream (clip, start, latents [length, ...]) windows, reading one chunk at a time."""
        for c, s in self.windows(length, stride):
            yield c, s, self.read(c, s, s + length, as_wplus=as_wplus)

    # -- PCA (offset trick) -------------------------------------------------------------------
    def read_pca(self) -> Optional[dict]:
        if "pca" not in self.f:
            return None
        g = self.f["pca"]
        return {k: np.asarray(g[k][:]) for k in ("mean", "components", "explained_variance")}


def write_pca(path: PathLike, mean: np.ndarray, components: np.ndarray,
              explained_variance: np.ndarray) -> None:
    """Store the offset trick's PCA in ``/pca`` of a finished store (replacing an older one)."""
    h5py = _h5py()
    with h5py.File(path, "r+") as f:
        if "pca" in f:
            del f["pca"]
        g = f.create_group("pca")
        g.create_dataset("mean", data=np.asarray(mean, np.float32))
        g.create_dataset("components", data=np.asarray(components, np.float32))
        g.create_dataset("explained_variance", data=np.asarray(explained_variance, np.float32))


# -- several stores into one -----------------------------------------------------------------------
# attributes that must agree between the parts of one store: the latents are only comparable when
# the same generator, encoder and inversion settings made them
_SAME_SOURCE = ("generator_sha256", "encoder_sha256", "space", "num_ws", "w_dim", "resolution")
_SAME_SETTINGS = ("refine_steps", "temporal_weight", "seed")
_SHARD_ATTRS = ("shard_index", "shard_count", "shard_clips_sha256")


def _attr(attrs, key: str):
    v = attrs.get(key)
    v = v.decode() if isinstance(v, bytes) else v
    return v.item() if isinstance(v, np.generic) else v


def merge_latent_stores(parts: Sequence[PathLike], out: PathLike, block: int = 1024) -> dict:
    """Join finished stores (e.g. the shards of ``svgen invert --shard``) into the store ``out``.

    Every part must come from the same generator and encoder (sha256), latent space and inversion
    settings; the first part that differs is named in the error, as is a clip found in two parts.
    Latents are copied exactly, so the result holds what an unsharded run writes.
    """
    paths = [Path(p) for p in parts]
    if not paths:
        raise SvgenError("no latent stores to merge")
    stores = []
    try:
        for p in paths:
            stores.append(LatentStore(p))
        attrs = [{k: _attr(s.f.attrs, k) for k in s.f.attrs.keys()} for s in stores]
        ref = attrs[0]
        for p, a in zip(paths[1:], attrs[1:]):
            for key in _SAME_SOURCE + _SAME_SETTINGS:
                if a.get(key) != ref.get(key):
                    what = {"generator_sha256": "another generator", "encoder_sha256": "another encoder"}.get(
                        key, f"other settings ({key} {a.get(key)!r})")
                    shown = (lambda v: str(v)[:12]) if key.endswith("sha256") else repr
                    raise SvgenError(f"was inverted with {what} than {paths[0]} ({key}: {shown(a.get(key))} vs "
                                     f"{shown(ref.get(key))})", p)
        order = shard_order(paths, [(a["shard_index"], a["shard_count"], a.get("shard_clips_sha256"))
                                    if "shard_count" in a else None for a in attrs])
        writer = LatentStoreWriter(out, space=ref["space"], num_ws=ref["num_ws"], w_dim=ref["w_dim"],
                                   generator_sha256=ref.get("generator_sha256") or "",
                                   encoder_sha256=ref.get("encoder_sha256") or "",
                                   resolution=int(ref.get("resolution") or 0))
        try:
            keep = {k: v for k, v in ref.items() if k not in _SHARD_ATTRS and k not in writer.f.attrs
                    and not k.startswith("w_dist") and k != "data_sha256"}
            writer.f.attrs.update(keep)
            frames, dist_sum, dist_count = 0, 0.0, 0
            owner: dict = {}
            for k in order:
                s, a = stores[k], attrs[k]
                for name in s.clips:
                    if name in owner:
                        raise SvgenError(f"clip {name!r} is also in {owner[name]} (parts must hold different "
                                         "clips)", paths[k])
                    owner[name] = paths[k]
                    n = s.num_frames(name)
                    writer.create_clip(name, n, source=s.source(name), fps=s.fps(name), detected=s.detected(name))
                    for a0 in range(0, n, block):
                        writer.write(name, a0, np.asarray(s.f["clips"][name]["w"][a0:a0 + block], np.float32))
                    frames += n
                if "w_dist_codes" in a:   # distance to w_avg: a mean over every W entry of the part
                    entries = sum(s.num_frames(c) for c in s.clips) * (s.num_ws if s.space == "w+" else 1)
                    dist_sum += float(a["w_dist_codes"]) * entries
                    dist_count += entries
            if dist_count and "w_dist_mapped" in ref:
                codes = dist_sum / dist_count
                writer.f.attrs.update({"w_dist_codes": codes, "w_dist_mapped": ref["w_dist_mapped"],
                                       "w_dist_ratio": codes / max(float(ref["w_dist_mapped"]), 1e-12)})
            path = writer.finalize()
        except BaseException:
            writer.discard()
            raise
    finally:
        for s in stores:
            s.close()
    return {"out": str(path), "parts": [str(paths[k]) for k in order], "clips": len(owner), "frames": frames}
