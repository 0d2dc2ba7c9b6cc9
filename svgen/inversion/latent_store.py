"""The HDF5 latent store ``latents.h5`` (docs/FORMATS.md).

Layout::

    /                attrs: format, version, space ("w+"|"w"), num_ws, w_dim, generator_sha256,
                            encoder_sha256, resolution
    /clips/<clip>/w  float32 [T, num_ws, w_dim] (space "w": [T, w_dim]); chunks of whole frames
    /clips/<clip>    attrs: source, fps, num_frames, frames_done
    /clips/<clip>/detected  bool [T]
    /pca/            mean, components, explained_variance (optional, written by the offset trick)

The writer works on ``<out>.partial``, updates ``frames_done`` after every flushed chunk and renames
the file to ``<out>`` when every clip is complete; ``resume=True`` continues a partial file. Readers
stream slices and never load a whole store.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np

from svgen.utils.errors import PathLike, SvgenError
from svgen.utils.io import ensure_parent_writable

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


class LatentStoreWriter:
    """Append latents clip by clip, chunk by chunk; resumable after a crash or kill."""

    def __init__(self, path: PathLike, *, space: str, num_ws: int, w_dim: int,
                 generator_sha256: str, encoder_sha256: str = "", resolution: int = 0,
                 resume: bool = False):
        if space not in ("w+", "w"):
            raise ValueError(f"space must be 'w+' or 'w', got {space!r}")
        self.path = ensure_parent_writable(path)
        self.tmp = partial_path(self.path)
        h5py = _h5py()
        attrs = {"format": FORMAT, "version": VERSION, "space": space, "num_ws": int(num_ws),
                 "w_dim": int(w_dim), "generator_sha256": generator_sha256,
                 "encoder_sha256": encoder_sha256, "resolution": int(resolution)}
        if resume and self.tmp.exists():
            try:
                self.f = h5py.File(self.tmp, "r+")
            except OSError as exc:
                raise SvgenError(f"cannot resume: partial store is unreadable ({exc})", self.tmp) from None
            if self.f.attrs.get("format") != FORMAT:
                self.f.close()
                raise SvgenError("cannot resume: not an svgen latent store", self.tmp)
            for key in ("generator_sha256", "encoder_sha256", "space", "num_ws", "w_dim"):
                have = self.f.attrs.get(key)
                have = have.decode() if isinstance(have, bytes) else have
                if have != attrs[key]:
                    self.f.close()
                    raise SvgenError(f"cannot resume: partial store was written with a different "
                                     f"{key} ({have!r} vs {attrs[key]!r})", self.tmp)
        else:
            if self.tmp.exists():
                self.tmp.unlink()
            self.f = h5py.File(self.tmp, "w")
            for k, v in attrs.items():
                self.f.attrs[k] = v
            self.f.create_group("clips")
        self.space, self.num_ws, self.w_dim = space, int(num_ws), int(w_dim)

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
            return int(g.attrs["frames_done"])
        g = clips.create_group(name)
        chunk = (min(CHUNK_FRAMES, max(1, num_frames)),) + self.frame_shape()
        g.create_dataset("w", shape=(num_frames,) + self.frame_shape(), dtype="float32",
                         chunks=chunk, compression="gzip", compression_opts=4, shuffle=True)
        det = np.ones(num_frames, bool) if detected is None else np.asarray(detected, bool)
        g.create_dataset("detected", data=det)
        g.attrs.update({"source": str(source), "fps": float(fps), "num_frames": int(num_frames),
                        "frames_done": 0})
        self.f.flush()
        return 0

    def frames_done(self, name: str) -> int:
        return int(self.f["clips"][name].attrs["frames_done"]) if name in self.f["clips"] else 0

    def write(self, name: str, start: int, w: np.ndarray) -> None:
        """Write frames ``start .. start+len(w)`` of a clip; must continue where it stopped."""
        g = self.f["clips"][name]
        done = int(g.attrs["frames_done"])
        if start != done:
            raise ValueError(f"clip {name}: write at {start} but {done} frames are done")
        w = np.asarray(w, dtype=np.float32)
        if w.shape[1:] != self.frame_shape():
            raise ValueError(f"latents of shape {w.shape[1:]} do not match store {self.frame_shape()}")
        g["w"][start:start + len(w)] = w
        self.f.flush()  # data first, then the counter that says it is there
        g.attrs["frames_done"] = start + len(w)
        self.f.flush()

    def finalize(self) -> Path:
        """Check that every clip is complete, close and rename ``.partial`` onto the target."""
        for name, g in self.f["clips"].items():
            if int(g.attrs["frames_done"]) != int(g.attrs["num_frames"]):
                raise SvgenError(f"clip {name!r} is incomplete", self.tmp)
        self.f.flush()
        self.f.close()
        with open(self.tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(self.tmp, self.path)
        return self.path

    def close(self) -> None:
        """Close without finalising (the ``.partial`` file stays for ``--resume``)."""
        try:
            self.f.close()
        except Exception:
            pass


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
        if fmt != FORMAT or "clips" not in self.f:
            self.f.close()
            raise SvgenError(f"not an svgen latent store (format {fmt!r})", self.path)
        try:
            self.space = str(a["space"])
            self.num_ws = int(a["num_ws"])
            self.w_dim = int(a["w_dim"])
        except KeyError as exc:
            self.f.close()
            raise SvgenError(f"latent store is missing the attribute {exc}", self.path) from None
        if int(a.get("version", VERSION)) > VERSION:
            self.f.close()
            raise SvgenError(f"latent store version {a.get('version')} is newer than this svgen "
                             f"understands ({VERSION})", self.path)
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
        if self.generator_sha256 and sha256 != self.generator_sha256:
            raise SvgenError(f"latents were made with another generator "
                             f"(store {self.generator_sha256[:12]}, {what} {sha256[:12]})", self.path)

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
