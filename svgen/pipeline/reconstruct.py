"""Render the stored latents of a clip for a person to look at (``svgen reconstruct``).

Each output frame is ``[original | reconstruction]`` at the generator's resolution (the
reconstruction alone when no dataset is available). Latents are read and rendered batch by batch,
so long clips need no more memory than short ones. ``--edit`` edits (:mod:`svgen.editing.edits`)
are added to the latents before rendering; ``<out>.json`` records what was rendered and every edit.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np
import torch

from svgen.inversion.latent_store import LatentStore
from svgen.stage1_image_gan.render import to_uint8_hwc
from svgen.utils.errors import PathLike, SvgenError
from svgen.utils.io import file_sha256, write_json


def _resize_uint8(frames: np.ndarray, size: int) -> np.ndarray:
    if frames.shape[1] == size:
        return frames
    from PIL import Image

    return np.stack([np.asarray(Image.fromarray(f).resize((size, size), Image.LANCZOS))
                     for f in frames])


def _recorded_path(store: LatentStore, key: str) -> Optional[Path]:
    v = store.f.attrs.get(key)
    if v is None:
        return None
    v = v.decode() if isinstance(v, bytes) else str(v)
    return Path(v) if v else None


def render_clip(G: torch.nn.Module, store: LatentStore, clip: str, batch: int = 16,
                dataset=None, edits: Sequence = ()) -> Iterator[np.ndarray]:
    """Yield uint8 frames [R, (2)R, 3] of ``clip`` rendered from the store (streaming), with ``edits``
    (resolved :class:`svgen.editing.edits.Edit`) applied at each frame's index."""
    from svgen.editing.edits import apply_edits

    n = store.num_frames(clip)
    device = G.mapping.w_avg.device
    for a in range(0, n, batch):
        b = min(a + batch, n)
        ws = torch.from_numpy(apply_edits(store.read(clip, a, b, as_wplus=True), edits, start=a)).to(device)
        with torch.no_grad():
            rec = to_uint8_hwc(G.synthesis(ws, noise_mode="const"))
        if dataset is not None:
            orig = np.stack([dataset.read_frame(clip, i) for i in range(a, b)])
            rec = np.concatenate([_resize_uint8(orig, rec.shape[1]), rec], axis=2)
        yield from rec


def reconstruct_clip(latents: PathLike, out: PathLike, clip: Optional[str] = None,
                     generator: Optional[PathLike] = None, data: Optional[PathLike] = None,
                     fps: Optional[float] = None, batch: int = 16,
                     device: torch.device | str = "cpu", edits: Sequence = ()) -> Path:
    """Write ``out`` (mp4): the clip's originals beside their reconstructions (``edits``: parsed
    ``--edit`` specs), and ``<out>.json``."""
    from svgen.editing.edits import describe_edits, load_edits
    from svgen.preprocessing.video_io import VideoWriter
    from svgen.stage1_image_gan.checkpoints import load_generator

    with LatentStore(latents) as store:
        clip = clip if clip is not None else store.clips[0]
        if clip not in store.clips:
            raise SvgenError(f"no clip named {clip!r} (have: {', '.join(store.clips)})", latents)
        gen_path = Path(generator) if generator is not None else _recorded_path(store, "generator_path")
        if gen_path is None:
            raise SvgenError("the store records no generator path; pass --generator", latents)
        if not gen_path.is_file():
            raise SvgenError("generator does not exist" + ("" if generator is not None else
                             f" (recorded in {latents}; pass --generator)"), gen_path)
        store.check_generator(file_sha256(gen_path), gen_path)
        G = load_generator(gen_path, device=torch.device(device))
        if G.num_ws != store.num_ws or G.w_dim != store.w_dim:
            raise SvgenError(f"store latents are {store.num_ws}x{store.w_dim} but the generator "
                             f"takes {G.num_ws}x{G.w_dim}", latents)
        resolved = load_edits(edits, G.num_ws, G.w_dim)
        dataset = None
        data_path = Path(data) if data is not None else _recorded_path(store, "data_path")
        if data_path is not None and (data is not None or data_path.is_file()):
            from svgen.preprocessing.dataset import AlignedDataset

            dataset = AlignedDataset(data_path)
            if clip not in dataset.clips:
                raise SvgenError(f"dataset has no clip {clip!r}", data_path)
            if dataset.clips[clip].num_frames != store.num_frames(clip):
                raise SvgenError(f"clip {clip!r} has {dataset.clips[clip].num_frames} frames in the "
                                 f"dataset but {store.num_frames(clip)} in the store", data_path)
        rate = float(fps) if fps else store.fps(clip)
        try:
            with VideoWriter(out, rate) as writer:
                for frame in render_clip(G, store, clip, batch, dataset, resolved):
                    writer.write(frame)
                frames = writer.num_frames
        finally:
            if dataset is not None:
                dataset.close()
    write_json(Path(out).with_suffix(".json"),
               {"latents": str(Path(latents).resolve()), "clip": clip, "generator": str(gen_path.resolve()),
                "frames": frames, "fps": rate, "edits": describe_edits(resolved)})
    return Path(out)
