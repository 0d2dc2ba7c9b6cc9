"""The aligned-frame dataset ``aligned.zip`` (docs/FORMATS.md): PNGs ``<clip>/<frame:06d>.png`` plus
``dataset.json``. Same convention as NVIDIA's ``dataset_tool`` so their loaders read it too; plain
NVIDIA image zips (no svgen metadata) are read as one clip of still images.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import struct
import zipfile
import zlib
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np
from PIL import Image

try:  # Intel ISA-L deflate: the same format as zlib, several times faster (optional)
    from isal import isal_zlib as _isal
except ImportError:  # pragma: no cover - the wheel exists for the usual platforms
    _isal = None

from svgen.utils.errors import PathLike, SvgenError
from svgen.utils.io import CommitOnExit, atomic_path
from svgen.utils.shard import shard_order

FORMAT = "svgen-aligned"
VERSION = 1
_IMAGE_EXT = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


@dataclass
class ClipInfo:
    """Metadata of one clip: where it came from and per-frame crop records."""

    name: str
    source: str = ""
    fps: float = 25.0
    frames: list = field(default_factory=list)  # [{"index", "source_frame", "quad", "detected"}]

    @property
    def num_frames(self) -> int:
        return len(self.frames)


class AlignedDatasetWriter(CommitOnExit):
    """Writes ``aligned.zip`` to a temporary file; it appears under its name only on :meth:`close`.

    Usage::

        with AlignedDatasetWriter("aligned.zip", 256) as w:
            w.add_clip("talk", source="talk.mp4", fps=25.0)
            w.add_frame("talk", rgb_uint8, source_frame=0, quad=quad, detected=True)

    If the block raises, nothing is left behind.
    """

    def __init__(self, path: PathLike, resolution: int, extra: Optional[dict] = None):
        self.path = Path(path)
        self.resolution = int(resolution)
        self.extra = dict(extra or {})
        self.clips: dict[str, ClipInfo] = {}
        self._stack = ExitStack()
        self._tmp = self._stack.enter_context(atomic_path(self.path, suffix=".zip"))
        self._zip = zipfile.ZipFile(self._tmp, "w", compression=zipfile.ZIP_STORED)
        self._closed = False

    def add_clip(self, name: str, source: str = "", fps: float = 25.0) -> None:
        if not name or "/" in name or name in self.clips:
            raise SvgenError(f"invalid or duplicate clip name {name!r}", self.path)
        self.clips[name] = ClipInfo(name=name, source=str(source), fps=float(fps))

    def add_frame(self, clip: str, image: np.ndarray, source_frame: int = -1,
                  quad: Optional[Sequence[Sequence[float]]] = None, detected: bool = True) -> None:
        """Append one RGB uint8 frame [R, R, 3] to ``clip``."""
        info = self.clips[clip]
        if image.dtype != np.uint8 or image.shape != (self.resolution, self.resolution, 3):
            raise ValueError(f"frame must be uint8 [{self.resolution},{self.resolution},3], "
                             f"got {image.dtype} {tuple(image.shape)}")
        index = info.num_frames
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, format="PNG", compress_level=1)
        self._zip.writestr(f"{clip}/{index:06d}.png", buf.getvalue())
        info.frames.append({
            "index": index,
            "source_frame": int(source_frame),
            "quad": None if quad is None else [[float(x), float(y)] for x, y in np.asarray(quad)],
            "detected": bool(detected),
        })

    def add_encoded_frame(self, clip: str, png: bytes, source_frame: int = -1,
                          quad: Optional[Sequence[Sequence[float]]] = None, detected: bool = True) -> None:
        """Append one frame already encoded with :func:`encode_png` (lets callers encode in threads)."""
        info = self.clips[clip]
        if png[:8] != b"\x89PNG\r\n\x1a\n" or png[12:16] != b"IHDR":
            raise ValueError("expected PNG bytes")
        w, h = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
        if (w, h) != (self.resolution, self.resolution):
            raise ValueError(f"frame must be {self.resolution}x{self.resolution}, got {w}x{h}")
        index = info.num_frames
        self._zip.writestr(f"{clip}/{index:06d}.png", png)
        info.frames.append({
            "index": index,
            "source_frame": int(source_frame),
            "quad": None if quad is None else [[float(x), float(y)] for x, y in np.asarray(quad)],
            "detected": bool(detected),
        })

    def metadata(self) -> dict:
        clips = {}
        for name, c in self.clips.items():
            clips[name] = {"source": c.source, "fps": c.fps, "num_frames": c.num_frames,
                           "frames": c.frames}
        meta = {"format": FORMAT, "version": VERSION, "resolution": self.resolution,
                "labels": None, "clips": clips}
        meta.update(self.extra)
        return meta

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if not any(c.num_frames for c in self.clips.values()):
            self._zip.close()
            self._stack.__exit__(SvgenError, SvgenError("no frames"), None)
            raise SvgenError("no frames were written; dataset not created", self.path)
        self._zip.writestr("dataset.json", json.dumps(self.metadata()))
        self._zip.close()
        self._stack.close()  # fsync + rename into place

    def abort(self, exc_type=None, exc=None, tb=None) -> None:
        """Drop the partial file (called automatically when the ``with`` block fails)."""
        if self._closed:
            return
        self._closed = True
        try:
            self._zip.close()
        finally:
            self._stack.__exit__(exc_type or RuntimeError, exc or RuntimeError("aborted"), tb)


def encode_png(image: np.ndarray) -> bytes:
    """RGB uint8 [H, W, 3] -> PNG bytes for ``add_encoded_frame``.

    A plain PNG with the "Up" filter on every row (PIL's encoder tries every filter per row, ~2.5x
    slower), deflated by ISA-L at its level 2 when the ``isal`` package is there (~3.5x as fast as
    zlib's fastest setting, files as small as zlib level 1), else by zlib with Huffman coding only.
    Both release the GIL, so several threads can encode at once.
    """
    img = np.ascontiguousarray(image, dtype=np.uint8)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected RGB [H, W, 3], got {img.shape}")
    h, w = img.shape[:2]
    rows = img.reshape(h, w * 3)
    raw = np.empty((h, w * 3 + 1), np.uint8)
    raw[:, 0] = 2                      # filter type 2 (Up): byte minus the byte above, mod 256
    raw[0, 1:] = rows[0]
    np.subtract(rows[1:], rows[:-1], out=raw[1:, 1:])

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    if _isal is not None:
        data = _isal.compress(raw, 2)
    else:
        deflate = zlib.compressobj(1, zlib.DEFLATED, 15, 9, zlib.Z_HUFFMAN_ONLY)
        data = deflate.compress(raw) + deflate.flush()
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


class AlignedDataset:
    """Random-access reader of ``aligned.zip``; frames come back as RGB uint8 [R, R, 3].

    Indexing runs over all frames of all clips in order. The zip handle is opened lazily per
    process, so the object can be handed to DataLoader workers.
    """

    def __init__(self, path: PathLike):
        self.path = Path(path)
        if self.path.is_dir():
            raise SvgenError("is a folder; expected an aligned-frame dataset (aligned.zip)", self.path)
        if not self.path.is_file():
            raise SvgenError("dataset does not exist", self.path)
        try:
            with zipfile.ZipFile(self.path) as zf:
                names = set(zf.namelist())
                meta = json.loads(zf.read("dataset.json")) if "dataset.json" in names else None
        except zipfile.BadZipFile:
            raise SvgenError("not a zip file (expected an aligned-frame dataset)", self.path) from None
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise SvgenError("dataset.json is not valid JSON", self.path) from None
        except OSError as exc:
            raise SvgenError(f"cannot read dataset ({exc.strerror or exc})", self.path) from None
        self._zip: Optional[zipfile.ZipFile] = None
        self._zip_pid: Optional[int] = None
        if meta is not None and meta.get("format") == FORMAT:
            self.meta = meta
            self.resolution = int(meta["resolution"])
            self.clips = {}
            self.frame_names: list[str] = []
            self._frame_clip: list[tuple[str, int]] = []
            for name, c in meta["clips"].items():
                frames = c.get("frames") or [{"index": i} for i in range(int(c["num_frames"]))]
                self.clips[name] = ClipInfo(name=name, source=c.get("source", ""),
                                            fps=float(c.get("fps", 25.0)), frames=frames)
                for i in range(len(frames)):
                    fname = f"{name}/{i:06d}.png"
                    if fname not in names:
                        raise SvgenError(f"frame {fname} listed in dataset.json is missing "
                                         "(truncated dataset?)", self.path)
                    self.frame_names.append(fname)
                    self._frame_clip.append((name, i))
        elif meta is not None and "format" in meta:
            raise SvgenError(f"unsupported dataset format {meta.get('format')!r}", self.path)
        else:  # plain NVIDIA dataset_tool zip / folder of images: one clip of stills
            images = sorted(n for n in names if n.lower().endswith(_IMAGE_EXT))
            if not images:
                raise SvgenError("zip contains no images and no dataset.json", self.path)
            self.meta = {"format": "images", "labels": (meta or {}).get("labels")}
            self.frame_names = images
            self._frame_clip = [("images", i) for i in range(len(images))]
            self.clips = {"images": ClipInfo(name="images", source=str(self.path), fps=25.0,
                                             frames=[{"index": i} for i in range(len(images))])}
            self.resolution = self._decode(images[0]).shape[0]
        if not self.frame_names:
            raise SvgenError("dataset has no frames", self.path)

    def fingerprint(self) -> str:
        """sha256 over every member's name, CRC-32 and size (from the zip directory, without
        reading the frames): identifies the data a training run was started on."""
        h = hashlib.sha256()
        for info in sorted(self._zipfile().infolist(), key=lambda i: i.filename):
            h.update(f"{info.filename}\0{info.CRC:08x}\0{info.file_size}\n".encode())
        return h.hexdigest()

    def check_resume(self, recorded: Optional[str]) -> None:
        """Refuse to resume a run on data other than the data it recorded (``recorded`` None:
        a run from before fingerprints, accepted)."""
        if recorded and recorded != self.fingerprint():
            raise SvgenError("cannot resume: the run was trained on other data (its frames differ from "
                             "this dataset's); give the run's own --data or start a new run", self.path)

    # -- access -----------------------------------------------------------------------------
    def _zipfile(self) -> zipfile.ZipFile:
        if self._zip is None or self._zip_pid != os.getpid():
            self._zip = zipfile.ZipFile(self.path)
            self._zip_pid = os.getpid()
        return self._zip

    def _decode(self, name: str) -> np.ndarray:
        try:
            data = self._zipfile().read(name)
            img = Image.open(io.BytesIO(data))
            img = img.convert("RGB") if img.mode != "RGB" else img
            arr = np.asarray(img, dtype=np.uint8)
        except (zipfile.BadZipFile, OSError, KeyError) as exc:
            raise SvgenError(f"cannot decode frame {name} ({exc})", self.path) from None
        if arr.shape[0] != arr.shape[1]:
            raise SvgenError(f"frame {name} is not square ({arr.shape[1]}x{arr.shape[0]})", self.path)
        return arr

    def __len__(self) -> int:
        return len(self.frame_names)

    def __getitem__(self, i: int) -> np.ndarray:
        img = self._decode(self.frame_names[i])
        if img.shape[0] != self.resolution:
            raise SvgenError(f"frame {self.frame_names[i]} has resolution {img.shape[0]}, "
                             f"dataset says {self.resolution}", self.path)
        return img

    def clip_of(self, i: int) -> tuple[str, int]:
        """(clip name, frame index within the clip) of global frame ``i``."""
        return self._frame_clip[i]

    def read_frame(self, clip: str, index: int) -> np.ndarray:
        if clip not in self.clips:
            raise SvgenError(f"no clip named {clip!r} (have: {', '.join(self.clips)})", self.path)
        if self.meta.get("format") == FORMAT:
            return self._decode(f"{clip}/{index:06d}.png")
        return self[index]

    def iter_clip(self, clip: str, start: int = 0, stop: Optional[int] = None) -> Iterator[np.ndarray]:
        """Stream a clip's frames in order without holding the clip in memory."""
        n = self.clips[clip].num_frames
        for i in range(start, n if stop is None else min(stop, n)):
            yield self.read_frame(clip, i)

    def read_clip(self, clip: str, start: int = 0, length: Optional[int] = None) -> np.ndarray:
        """Frames ``start .. start+length`` of a clip as uint8 [T, R, R, 3]."""
        stop = None if length is None else start + length
        return np.stack(list(self.iter_clip(clip, start, stop)))

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()
            self._zip = None

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_zip"] = None
        state["_zip_pid"] = None
        return state


class TorchFrames:
    """``torch.utils.data.Dataset`` view: frame ``i`` as a uint8 tensor [3, R, R]."""

    def __init__(self, dataset: AlignedDataset, indices: Optional[Sequence[int]] = None):
        self.dataset = dataset
        self.indices = list(range(len(dataset))) if indices is None else list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        import torch

        return torch.from_numpy(self.dataset[self.indices[i]].copy()).permute(2, 0, 1)


# -- several datasets into one ---------------------------------------------------------------------
def copy_clips(writer: AlignedDatasetWriter, path: PathLike, continue_last: bool = False) -> int:
    """Append every clip of the dataset ``path`` to ``writer`` (PNG bytes copied, not re-encoded).

    A clip name already in ``writer`` is an error naming ``path``, except with ``continue_last``
    for the clip written last (the pieces of one long video). Returns the number of frames copied.
    """
    p = Path(path)
    copied = 0
    last = next(reversed(writer.clips), None)
    with zipfile.ZipFile(p) as zf:
        meta = json.loads(zf.read("dataset.json"))
        for name, clip in meta["clips"].items():
            if name in writer.clips:
                if not (continue_last and name == last):
                    raise SvgenError(f"clip {name!r} is already in another part (parts must hold different "
                                     "clips)", p)
            else:
                writer.add_clip(name, source=clip.get("source", ""), fps=float(clip.get("fps", 25.0)))
            for i, f in enumerate(clip["frames"]):
                writer.add_encoded_frame(name, zf.read(f"{name}/{i:06d}.png"), source_frame=f.get("source_frame", -1),
                                         quad=f.get("quad"), detected=f.get("detected", True))
                copied += 1
            last = name
    return copied


def merge_datasets(parts: Sequence[PathLike], out: PathLike) -> dict:
    """Join several ``aligned.zip`` (e.g. the shards of ``svgen preprocess --shard``) into ``out``.

    All parts must have the same resolution and alignment settings (``preprocess`` in dataset.json);
    the first that differs is named in the error. Shards of one split are put in shard order (and
    must all be there), so the result equals the unsharded run's dataset.
    """
    paths = [Path(p) for p in parts]
    if len(paths) < 1:
        raise SvgenError("no datasets to merge")
    metas = []
    for p in paths:
        ds = AlignedDataset(p)   # validates: readable, complete, svgen format
        ds.close()
        if ds.meta.get("format") != FORMAT:
            raise SvgenError("is a plain image zip, not an svgen aligned dataset (no clips to merge)", p)
        metas.append(ds.meta)
    ref = metas[0]
    for p, m in zip(paths[1:], metas[1:]):
        if int(m["resolution"]) != int(ref["resolution"]):
            raise SvgenError(f"has resolution {m['resolution']}, {paths[0]} has {ref['resolution']}", p)
        a, b = ref.get("preprocess") or {}, m.get("preprocess") or {}
        differ = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        if differ:
            k = differ[0]
            raise SvgenError(f"was made with other alignment settings than {paths[0]} ({k}: {b.get(k)!r} vs "
                             f"{a.get(k)!r})", p)
    order = shard_order(paths, [(m["shard"]["index"], m["shard"]["count"], m["shard"].get("inputs_sha256"))
                                if m.get("shard") else None for m in metas])
    extra = {"preprocess": ref["preprocess"]} if "preprocess" in ref else {}
    frames = 0
    with AlignedDatasetWriter(out, int(ref["resolution"]), extra=extra) as writer:
        for k in order:
            frames += copy_clips(writer, paths[k])
        clips = len(writer.clips)
    return {"out": str(out), "parts": [str(paths[k]) for k in order], "clips": clips, "frames": frames}
