"""Inversion entry points other stages call: images -> latents, and aligned.zip -> latents.h5.

``invert_images`` serves ``animate`` (the identity photo) and ``--driving`` (a driving video);
``invert_dataset`` is ``svgen invert``: it streams an aligned-frame dataset clip by clip, chunk by
chunk, through the encoder (and the optional refinement) into the resumable HDF5 store. Frames of
the next chunk are decoded on a background thread while the current chunk is encoded, so the
pipeline runs close to the encoder's own rate, and memory does not grow with the video length.
"""
from __future__ import annotations

import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
from torch import nn

from svgen.inversion.latent_store import CHUNK_FRAMES, LatentStoreWriter, partial_path
from svgen.inversion.losses import ReconstructionLoss
from svgen.inversion.project import RefineConfig, broadcast_ws, estimate_w_std, refine_latents
from svgen.utils.errors import PathLike, SvgenError


def images_to_tensor(images: np.ndarray, resolution: int, device: torch.device) -> torch.Tensor:
    """uint8 [N, H, W, 3] -> float [N, 3, resolution, resolution] in [-1, 1] (antialiased resize)."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"expected uint8 images [N, H, W, 3], got {images.dtype} {images.shape}")
    if not images.flags.writeable:   # e.g. a read-only memory map; torch wants writable memory
        images = images.copy()
    x = torch.from_numpy(np.ascontiguousarray(images)).to(device).permute(0, 3, 1, 2).float()
    x = x / 127.5 - 1.0
    if x.shape[-1] != resolution or x.shape[-2] != resolution:
        x = torch.nn.functional.interpolate(x, size=(resolution, resolution), mode="bilinear",
                                            align_corners=False, antialias=True)
    return x


def _device_of(module: nn.Module) -> torch.device:
    for p in module.parameters():
        return p.device
    for b in module.buffers():
        return b.device
    return torch.device("cpu")


class ChunkInverter:
    """Encoder (+ optional refinement) for runs of consecutive frames; stateless between calls
    except for cached constants, so a resumed job reproduces an uninterrupted one."""

    def __init__(self, G: nn.Module, E: nn.Module, refine: Optional[RefineConfig] = None,
                 loss: Optional[ReconstructionLoss] = None, seed: int = 0):
        if E.num_ws != G.num_ws or E.w_dim != G.w_dim:
            raise SvgenError(f"encoder predicts {E.num_ws}x{E.w_dim} latents but the generator takes "
                             f"{G.num_ws}x{G.w_dim}")
        self.G, self.E = G, E
        self.refine = refine or RefineConfig()
        self.device = _device_of(E)
        # the refinement's loss (the default one when none is given); None without refinement
        self.loss = loss if loss is not None or self.refine.steps <= 0 else ReconstructionLoss(device=self.device)
        self.seed = int(seed)
        self._w_std: Optional[float] = None

    @property
    def refining(self) -> bool:
        return self.refine.steps > 0

    def __call__(self, frames: np.ndarray, prev: Optional[torch.Tensor] = None,
                 key: str = "") -> torch.Tensor:
        """uint8 frames [n, H, W, 3] -> latents in the encoder's space ([n, num_ws, w_dim] or
        [n, w_dim]); ``prev`` is the final latent of the preceding frame, ``key`` seeds the
        refinement's noise (e.g. "clip:start")."""
        with torch.no_grad():
            x = images_to_tensor(frames, self.E.resolution, self.device)
            w = self.E.encode(x).float()
        if not self.refining:
            return w
        if self._w_std is None and self.refine.latent_noise > 0:
            self._w_std = estimate_w_std(self.G)
        target = images_to_tensor(frames, self.G.img_resolution, self.device)
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + zlib.crc32(key.encode()))
        with torch.enable_grad():
            return refine_latents(self.G, w, target, self.refine, self.loss, self._w_std, prev, gen)


@torch.no_grad()
def mapped_distance(G: nn.Module, num: int = 4096, seed: int = 123) -> float:
    """Mean distance ||w - w_avg|| of the mapping network's codes: the scale of G's W distribution."""
    device = _device_of(G)
    z = torch.randn(num, G.z_dim, generator=torch.Generator().manual_seed(seed)).to(device)
    w = G.mapping(z, None)[:, 0]   # [num, w_dim]; the tracked w_avg is not updated here
    return float((w - G.mapping.w_avg).norm(dim=-1).mean())


def code_distribution(G: nn.Module, clips: Any, block: int = 1024) -> dict:
    """Distribution check of a store's codes: their mean distance to ``w_avg`` (per W+ entry)
    against the same for codes of the mapping network. A ratio far above 1 means the codes lie
    outside the region of W the generator was trained on (renders degrade, motion transfers badly)."""
    w_avg = G.mapping.w_avg.detach().cpu().numpy().astype(np.float64)
    total, count = 0.0, 0
    for name in clips:
        ds = clips[name]["w"]
        for a in range(0, ds.shape[0], block):
            w = np.asarray(ds[a:a + block], dtype=np.float64)
            d = np.linalg.norm(w - w_avg, axis=-1)          # [n] or [n, num_ws]
            total += float(d.sum())
            count += d.size
    codes = total / max(count, 1)
    mapped = mapped_distance(G)
    return {"w_dist_codes": codes, "w_dist_mapped": mapped, "w_dist_ratio": codes / max(mapped, 1e-12)}


def invert_images(G: nn.Module, E: nn.Module, images: np.ndarray, refine_steps: int = 0,
                  temporal_weight: float = 0.0, batch: int = 16, seed: int = 0,
                  loss: Optional[ReconstructionLoss] = None) -> np.ndarray:
    """Invert aligned face images (uint8 [N, R, R, 3], any R) -> np.float32 [N, num_ws, w_dim].

    With ``refine_steps`` the encoder output is optimised against the images; ``temporal_weight``
    treats the images as consecutive video frames and smooths their latents. W codes come back
    broadcast to all ``num_ws`` entries.
    """
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[None]
    if len(images) == 0:
        return np.zeros((0, G.num_ws, G.w_dim), np.float32)
    inv = ChunkInverter(G, E, RefineConfig(steps=int(refine_steps),
                                           temporal_weight=float(temporal_weight)), loss, seed)
    out = []
    prev = None
    for start in range(0, len(images), max(1, int(batch))):
        w = inv(images[start:start + batch], prev, key=f"images:{start}")
        prev = w[-1]
        out.append(broadcast_ws(w, G.num_ws).cpu().numpy().astype(np.float32))
    return np.concatenate(out, 0)


def invert_dataset(G: nn.Module, E: nn.Module, data: PathLike, out: PathLike, *,
                   generator_sha256: str, encoder_sha256: str = "", refine_steps: int = 0,
                   temporal_weight: float = 0.0, refine_lr: float = RefineConfig.lr,
                   batch: int = 16, resume: bool = False,
                   seed: int = 0, loss: Optional[ReconstructionLoss] = None,
                   extra_attrs: Optional[dict] = None, flush_frames: int = CHUNK_FRAMES,
                   flush_seconds: float = 10.0,
                   on_chunk: Optional[Callable[[str, int, int], None]] = None,
                   show_progress: bool = True, shard: Optional[tuple[int, int]] = None) -> Path:
    """Invert every frame of ``aligned.zip`` into the latent store ``out`` (via ``out.partial``).

    Latents of whole batches are buffered and flushed to the store (``frames_done`` updated) every
    ``flush_frames`` frames (one compressed HDF5 chunk), every ``flush_seconds`` and at the end of
    each clip. Resuming continues each clip at its ``frames_done``; the batch size of the partial
    store is reused so the finished store equals an uninterrupted run. ``on_chunk(clip, start,
    stop)`` is called after each flush (tests use it to interrupt). ``shard=(I, N)`` inverts only the
    I-th of N contiguous blocks of the dataset's clips (``svgen merge-latents`` joins the shards).
    """
    from svgen.preprocessing.dataset import AlignedDataset
    from svgen.utils.progress import progress
    from svgen.utils.shard import inputs_digest, shard_slice

    dataset = AlignedDataset(data)
    names = list(dataset.clips)
    shard_attrs: dict = {}
    if shard is not None:
        picked = shard_slice(len(names), shard)
        if not picked:
            dataset.close()
            raise SvgenError(f"--shard {shard[0]}/{shard[1]} selects no clip: the dataset has {len(names)}", data)
        shard_attrs = {"shard_index": int(shard[0]), "shard_count": int(shard[1]),
                       "shard_clips_sha256": inputs_digest(names + [dataset.fingerprint()])}
        names = [names[k] for k in picked]
    refine = RefineConfig(steps=int(refine_steps), temporal_weight=float(temporal_weight), lr=float(refine_lr))
    inv = ChunkInverter(G, E, refine, loss, seed)
    loss_weights = inv.loss.weights() if inv.refining else {}
    resuming = bool(resume) and partial_path(out).exists()
    writer = LatentStoreWriter(out, space=E.space, num_ws=E.num_ws, w_dim=E.w_dim,
                               generator_sha256=generator_sha256, encoder_sha256=encoder_sha256,
                               resolution=int(G.img_resolution), resume=resume)
    try:
        attrs = writer.f.attrs
        have = {k: attrs[k] for k in ("shard_index", "shard_count", "shard_clips_sha256") if k in attrs}
        if resuming and (have.keys() != shard_attrs.keys() or any(have[k] != v for k, v in shard_attrs.items())):
            raise SvgenError("cannot resume: the partial store holds another --shard (or none)", writer.tmp)
        if resuming and "batch" in attrs:
            batch = int(attrs["batch"])  # same chunk boundaries as the interrupted run
            for key, want in (("refine_steps", refine.steps), ("temporal_weight", refine.temporal_weight),
                              ("refine_lr", refine.lr), ("seed", int(seed)),
                              *((f"refine_{k}", v) for k, v in loss_weights.items())):
                if key in attrs and float(attrs[key]) != float(want):
                    raise SvgenError(f"cannot resume: partial store was written with {key}="
                                     f"{attrs[key]} (now {want})", writer.tmp)
        else:
            attrs.update({"batch": int(batch), "refine_steps": refine.steps,
                          "temporal_weight": refine.temporal_weight, "refine_lr": refine.lr, "seed": int(seed),
                          **{f"refine_{k}": v for k, v in loss_weights.items()}})
            for k, v in {**(extra_attrs or {}), **shard_attrs}.items():
                attrs[k] = v
        batch = max(1, int(batch))
        todo = []
        for name in names:
            info = dataset.clips[name]
            n = info.num_frames
            detected = [bool(f.get("detected", True)) for f in info.frames]
            done = writer.create_clip(name, n, source=info.source, fps=info.fps, detected=detected)
            todo += [(name, s, min(s + batch, n)) for s in range(done, n, batch)]
        total = sum(dataset.clips[name].num_frames for name in names)
        remaining = sum(b - a for _, a, b in todo)
        bar = progress(total=total, initial=total - remaining, unit="frame", desc="invert",
                       **({} if show_progress else {"disable": True}))

        def read(job: tuple[str, int, int]) -> np.ndarray:
            name, a, b = job
            return np.stack([dataset.read_frame(name, i) for i in range(a, b)])

        pending_w: list[np.ndarray] = []  # latents inverted but not yet handed to the writer
        pending_start = 0
        last_flush = time.monotonic()
        last_w: dict[str, np.ndarray] = {}  # final latent of the latest frame of each clip
        in_flight = None  # the one store write running on the writer thread

        def write_job(name: str, start: int, w: np.ndarray) -> None:
            writer.write(name, start, w)
            if on_chunk is not None:
                on_chunk(name, start, start + len(w))

        def wait_writes() -> None:
            nonlocal in_flight
            if in_flight is not None:
                job, in_flight = in_flight, None
                job.result()  # re-raises a failed write here

        # frames are decoded one batch ahead and latents written on their own threads, so the
        # encoder is never idle waiting for PNG decoding or HDF5 compression
        with ThreadPoolExecutor(max_workers=1) as reader_pool, \
                ThreadPoolExecutor(max_workers=1) as writer_pool:
            pending = reader_pool.submit(read, todo[0]) if todo else None
            for k, (name, a, b) in enumerate(todo):
                frames = pending.result()
                pending = reader_pool.submit(read, todo[k + 1]) if k + 1 < len(todo) else None
                if not pending_w:
                    pending_start = a
                prev = None
                if inv.refining and refine.temporal_weight > 0 and a > 0:
                    if name not in last_w:  # resumed mid-clip: the anchor is in the store
                        wait_writes()
                        last_w[name] = writer.f["clips"][name]["w"][a - 1]
                    prev = torch.from_numpy(last_w[name]).to(inv.device)
                w = inv(frames, prev, key=f"{name}:{a}").cpu().numpy()
                pending_w.append(w)
                last_w[name] = w[-1]
                bar.update(b - a)
                clip_end = k + 1 == len(todo) or todo[k + 1][0] != name
                if (clip_end or b - pending_start >= flush_frames
                        or time.monotonic() - last_flush >= flush_seconds):
                    wait_writes()
                    in_flight = writer_pool.submit(write_job, name, pending_start,
                                                   np.concatenate(pending_w, 0))
                    pending_w, last_flush = [], time.monotonic()
            wait_writes()
        bar.close()
        writer.f.attrs.update(code_distribution(G, writer.f["clips"]))
        return writer.finalize()
    except BaseException:
        writer.close()
        raise
    finally:
        dataset.close()
