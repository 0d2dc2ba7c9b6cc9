"""``svgen sample``: a motion model's own trajectories -> ``latents.npy`` (and, with a generator, mp4s)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from svgen.editing.edits import apply_edits, describe_edits, load_edits
from svgen.editing.restyle import load_render_generator
from svgen.stage1_image_gan.checkpoints import load_checked_generator
from svgen.pipeline.stream import CHUNK_FRAMES, NpyWriter, rechunk
from svgen.stage1_image_gan.render import write_rendered_stream
from svgen.stage2_motion.calibration import use_calibration
from svgen.stage2_motion.styleinv.layer_lift import use_layer_lift
from svgen.stage2_motion import load_motion
from svgen.utils.checks import check_finite
from svgen.utils.device import select_device
from svgen.utils.errors import PathLike, SvgenError
from svgen.utils.io import OutputGroup, ensure_parent_writable, file_sha256, write_json


def sample_to_dir(motion: PathLike, num: int, frames: int, out: PathLike, seed: int = 0,
                  generator: Optional[PathLike] = None, fps: Optional[float] = None, batch: int = 8,
                  device: Any = "auto", edits: Sequence[Any] = (),
                  render_generator: Optional[PathLike] = None, calibration: bool = False,
                  layer_lift: bool | str = "auto") -> dict:
    """``svgen sample``: ``num`` trajectories of ``frames`` frames -> ``out/latents.npy``
    [num, frames, num_ws, w_dim], with a generator also ``out/sample_NNN.mp4`` (rendered through
    ``render_generator``, a finetune-decoder copy of it, when given); ``out/sample.json``.
    All files appear together (the mp4s last) or, on any failure, none of them."""
    with OutputGroup() as outputs:
        return _sample_to_dir(motion, num, frames, out, seed, generator, fps, batch, device, edits, outputs,
                              render_generator, calibration, layer_lift)


def _sample_to_dir(motion: PathLike, num: int, frames: int, out: PathLike, seed: int,
                   generator: Optional[PathLike], fps: Optional[float], batch: int, device: Any,
                   edits: Sequence[Any], outputs: OutputGroup,
                   render_generator: Optional[PathLike] = None, calibration: bool = False,
                   layer_lift: bool | str = "auto") -> dict:
    if int(num) <= 0:
        raise SvgenError(f"--num must be positive, got {num}")
    if int(frames) <= 0:
        raise SvgenError(f"--frames must be a positive number of frames, got {frames}")
    dev = select_device(device)
    model = load_motion(motion, device=dev)
    calibration_rec = use_calibration(model, calibration)
    lift_rec = use_layer_lift(model, layer_lift)
    out = Path(out)
    ensure_parent_writable(out / "latents.npy")
    G = load_checked_generator(generator, model.generator_sha256, dev, what=motion) if generator else None
    if G is not None:                                        # StyleInV renders x0 = G(w0)
        model.attach_generator(G)
    resolved = load_edits(edits, model.num_ws, model.w_dim)
    styled, styled_rec = None, None
    if render_generator is not None:
        if G is None:
            raise SvgenError("--render-generator needs --generator (the generator the latents belong to)")
        styled, styled_rec = load_render_generator(render_generator, model.generator_sha256 or file_sha256(generator),
                                                   G, dev)
    fps = float(fps or model.train_fps or 25.0)
    shape = (int(num), int(frames), model.num_ws, model.w_dim)
    # latents streamed to latents.npy chunk by chunk (never the whole array in memory)
    npy_tmp = outputs.part(out / "latents.npy")
    with NpyWriter(npy_tmp, shape) as npy:
        pos = 0
        for ws in rechunk((w.detach().cpu().numpy().astype(np.float32).swapaxes(0, 1)
                           for w in model.sample_chunks(int(num), int(frames), seed=int(seed))), CHUNK_FRAMES):
            block = apply_edits(ws.swapaxes(0, 1), resolved, start=pos)      # [num, n, num_ws, w_dim]
            check_finite(block, "sampled latents", motion)
            npy.write(block, pos)
            pos += block.shape[1]
    videos = []
    if G is not None:      # each sample rendered from the finished latents.npy, a chunk at a time
        latents = np.load(npy_tmp, mmap_mode="r")
        for k in range(int(num)):
            p = out / f"sample_{k:03d}.mp4"
            blocks = (np.array(latents[k:k + 1, a:a + CHUNK_FRAMES]) for a in range(0, int(frames), CHUNK_FRAMES))
            write_rendered_stream(styled or G, blocks, outputs.part(p, last=True), fps=fps, batch=batch)
            videos.append(str(p))
        del latents
    summary = {"motion": str(Path(motion).resolve()), "model": model.model_name, "num": int(num),
               "frames": int(frames), "seed": int(seed), "fps": fps,
               "generator": None if generator is None else str(Path(generator).resolve()),
               "latents": str((out / "latents.npy").resolve()), "latents_shape": list(shape),
               "videos": videos, "edits": describe_edits(resolved), "render_generator": styled_rec,
               "calibration": calibration_rec, "layer_lift": lift_rec}
    write_json(outputs.part(out / "sample.json"), summary)
    return summary
