"""``svgen animate``: a photo (and a motion model or a driving video) -> W+ trajectory -> rendered mp4.

animate: align the identity photo -> invert it (encoder, optional refinement) -> motion
(``model.animate_latents``: sampled motion + offset trick, or a driving video's inverted trajectory
with the same offset trick) -> render in batches through the frozen generator -> mp4, and next to
it ``<out>.npy`` (the latents) and ``<out>.json`` (every setting and what was done).

Everything that can fail because of the input (missing or unreadable files, no face, a motion
checkpoint trained against another generator, frames <= 0) is checked before the first frame is
written; the mp4 is written to a temporary name and renamed when complete.
"""
from __future__ import annotations

import dataclasses
import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from svgen.editing.edits import apply_edits, describe_edits, load_edits
from svgen.editing.video import write_pasted_animation
from svgen.inversion.api import images_to_tensor, invert_images
from svgen.inversion.encoders import load_encoder
from svgen.inversion.losses import ReconstructionLoss
from svgen.inversion.pti import PTIConfig, summary_for_json, tune_cached
from svgen.preprocessing.dataset import AlignedDataset
from svgen.preprocessing.pipeline import align_photo, preprocess_videos
from svgen.stage1_image_gan.checkpoints import load_checked_generator
from svgen.stage1_image_gan.render import write_rendered_video
from svgen.stage2_motion import MotionModel, load_motion
from svgen.stage2_motion.offset import MODES, apply_offset, fit_pca, parse_layers
from svgen.utils.device import select_device
from svgen.utils.errors import PathLike, SvgenError
from svgen.utils.io import OutputGroup, ensure_parent_writable, file_sha256, require_file, write_json


# -- settings -------------------------------------------------------------------------------------
@dataclass
class AnimateSettings:
    """Every setting of one ``svgen animate`` call (written to ``<out>.json``)."""

    identity: str = ""
    out: str = ""
    motion: Optional[str] = None
    generator: Optional[str] = None
    encoder: Optional[str] = None
    frames: Optional[int] = None       # default 250, or the driving video's length
    fps: Optional[float] = None        # default 25, or the driving video's frame rate
    seed: int = 0
    driving: Optional[str] = None
    grid: int = 1
    refine_steps: int = 0
    offset: str = "auto"               # auto (mean with --tune pti, else pca) | pca | mean | naive | none
    offset_components: Optional[int] = None
    offset_layers: Optional[str] = None
    offset_strength: float = 1.0
    landmarks: str = "dlib"
    batch: int = 8
    device: str = "auto"
    slowmo: float = 1.0                # slow motion (StyleInV samples t directly; the GRU resamples in time)
    tune: str = "pti"                  # pti: pivotal tuning of a generator copy on the photo | none
    tune_steps: int = 350              # PTI steps (stops earlier once the photo is reproduced)
    tune_cache: Optional[str] = None   # folder of tuned generators (default $SVGEN_CACHE/pti or ~/.cache/svgen/pti)
    edits: list = field(default_factory=list)   # --edit specs (EditSpec or FILE:INDEX:STRENGTH text)
    paste_back: bool = False           # composite the animated face into the original, unaligned photo


TUNE_MODES = ("pti", "none")


def _validate(st: AnimateSettings) -> None:
    if st.frames is not None and int(st.frames) <= 0:
        raise SvgenError(f"--frames must be a positive number of frames, got {st.frames}")
    if st.fps is not None and not float(st.fps) > 0:
        raise SvgenError(f"--fps must be positive, got {st.fps}")
    if not float(st.slowmo) > 0:
        raise SvgenError(f"--slowmo must be positive, got {st.slowmo}")
    if int(st.grid) < 1:
        raise SvgenError(f"--grid must be at least 1, got {st.grid}")
    if st.refine_steps < 0:
        raise SvgenError(f"--refine-steps must be >= 0, got {st.refine_steps}")
    if st.tune not in TUNE_MODES:
        raise SvgenError(f"--tune must be one of {', '.join(TUNE_MODES)}, got {st.tune!r}")
    if st.tune == "pti" and int(st.tune_steps) <= 0:
        raise SvgenError(f"--tune-steps must be positive, got {st.tune_steps}")
    if st.offset not in MODES + ("auto",):
        raise SvgenError(f"--offset must be one of auto, {', '.join(MODES)}, got {st.offset!r}")
    if st.paste_back and st.grid > 1:
        raise SvgenError("--paste-back writes one animation into the photo; it cannot be combined with --grid")
    if st.driving and st.grid > 1:
        raise SvgenError("--grid shows several sampled motions; it cannot be combined with --driving")
    if not st.driving and not st.motion:
        raise SvgenError("--motion is required (or give --driving to transfer a real video's motion)")
    if st.driving and not st.motion and not (st.generator and st.encoder):
        raise SvgenError("--driving without --motion needs --generator and --encoder "
                         "(the generator.pt and encoder.pt that animate renders and inverts with)")
    if not str(st.out).lower().endswith(".mp4"):
        raise SvgenError("output must be an .mp4 file", st.out)
    require_file(st.identity, "identity photo")
    if st.driving:
        require_file(st.driving, "driving video")
    ensure_parent_writable(st.out)


def sidecar_paths(out: PathLike) -> tuple[Path, Path]:
    """(latents .npy, settings .json) next to the mp4."""
    out = Path(out)
    return out.with_suffix(".npy"), out.with_suffix(".json")


# -- driving video ------------------------------------------------------------------------------
def driving_trajectory(path: PathLike, G: Any, E: Any, size: int, landmarks: str, refine_steps: int,
                       max_frames: Optional[int]) -> tuple[np.ndarray, float]:
    """Preprocess and invert a driving video: (W+ trajectory [T, num_ws, w_dim], its fps)."""
    with tempfile.TemporaryDirectory(prefix="svgen-driving-") as tmp:
        aligned = Path(tmp) / "aligned.zip"
        preprocess_videos([path], aligned, size=size, landmarks=landmarks, max_frames=max_frames,
                          show_progress=False)
        ds = AlignedDataset(aligned)
        try:
            clips = list(ds.clips)
            if not clips:
                raise SvgenError("no face found in the driving video", path)
            # the longest continuous face segment drives the motion
            clip = max(clips, key=lambda c: ds.clips[c].num_frames)
            frames = ds.read_clip(clip)
            fps = float(ds.clips[clip].fps)
        finally:
            ds.close()
    traj = invert_images(G, E, frames, refine_steps=refine_steps, temporal_weight=0.0)
    return traj, fps


# -- animate --------------------------------------------------------------------------------------
def animate(st: AnimateSettings) -> dict:
    """Run ``svgen animate`` end to end; returns the summary also written to ``<out>.json``.

    The mp4, ``.npy`` and ``.json`` appear together (the mp4 last) or, on any failure, not at all."""
    with OutputGroup() as outputs:
        return _animate(st, outputs)


def _animate(st: AnimateSettings, outputs: OutputGroup) -> dict:
    t0 = time.perf_counter()
    timing: dict[str, float] = {}
    _validate(st)
    device = select_device(st.device)

    # models (defaults for generator and encoder come from the motion checkpoint)
    model: Optional[MotionModel] = load_motion(st.motion, device=device) if st.motion else None
    gen_path = st.generator or (model.generator_path if model else None)
    enc_path = st.encoder or (model.encoder_path if model else None)
    if not gen_path:
        raise SvgenError("no generator: pass --generator (the motion checkpoint records none)", st.motion)
    if not enc_path:
        raise SvgenError("no encoder: pass --encoder (the motion checkpoint records none)", st.motion)
    G = load_checked_generator(gen_path, model.generator_sha256 if model else "", device, what=st.motion)
    gen_sha = model.generator_sha256 if model and model.generator_sha256 else file_sha256(gen_path)
    if model is not None:                                          # StyleInV renders x0 = G(w0)
        model.attach_generator(G)
    require_file(enc_path, "encoder")
    E = load_encoder(enc_path, device=device)
    if model is not None and (model.num_ws, model.w_dim) != (G.num_ws, G.w_dim):
        raise SvgenError(f"motion model makes {model.num_ws}x{model.w_dim} latents but the generator "
                         f"takes {G.num_ws}x{G.w_dim}", st.motion)
    try:
        layers = parse_layers(st.offset_layers, G.num_ws) if st.offset_layers else None
    except ValueError as exc:
        raise SvgenError(f"--offset-layers: {exc}") from None
    edits = load_edits(st.edits, G.num_ws, G.w_dim)
    max_k = model.pca.k if model is not None and model.pca is not None else 32
    if st.offset_components is not None and not 1 <= st.offset_components <= max_k:
        raise SvgenError(f"--offset-components must be in 1..{max_k}, got {st.offset_components}")
    timing["load"] = time.perf_counter() - t0

    # identity: align + invert
    t = time.perf_counter()
    photo = align_photo(st.identity, size=G.img_resolution, landmarks=st.landmarks)
    w_id = invert_images(G, E, photo[None], refine_steps=st.refine_steps, seed=st.seed)[0]   # [num_ws, w_dim]
    timing["align_invert"] = time.perf_counter() - t

    # identity: pivotal tuning of a generator copy that renders the photo at w_id
    render_G, tuning = G, None
    if st.tune == "pti":
        t = time.perf_counter()
        render_G, tuning = tune_identity(G, w_id, photo, st, gen_sha)
        timing["pivotal_tuning"] = time.perf_counter() - t

    # motion (auto offset: around the pivot for a tuned generator, the paper's PCA trick otherwise)
    t = time.perf_counter()
    details: list[dict] = []
    offset = st.offset if st.offset != "auto" else ("mean" if st.tune == "pti" else "pca")
    if st.driving:
        traj, drive_fps = driving_trajectory(st.driving, G, E, G.img_resolution, st.landmarks,
                                             st.refine_steps, st.frames)
        frames = int(st.frames or len(traj))
        if frames > len(traj):
            raise SvgenError(f"the driving video has {len(traj)} usable frames, fewer than --frames {frames}",
                             st.driving)
        traj = traj[:frames]
        if len(traj) < 2 and offset == "pca":
            raise SvgenError("the offset trick needs at least 2 driving frames (its PCA); use more --frames",
                             st.driving)
        fps = float(st.fps or drive_fps)
        # the driving actor's own PCA spans its motion states (the offset trick's subspace)
        basis = fit_pca([traj], G.num_ws, G.w_dim, n_components=32) if offset in ("pca", "mean") else None
        components = None if basis is None or st.offset_components is None else min(st.offset_components, basis.k)
        out_traj, off = apply_offset(traj, w_id, basis, mode=offset, components=components,
                                     layers=layers, strength=st.offset_strength)
        latents = out_traj[None]
        details.append({"source": "driving", "driving_frames": int(len(traj)), "driving_fps": drive_fps,
                        "pca_components": None if basis is None else basis.k, "offset": off})
    else:
        frames = int(st.frames or 250)
        fps = float(st.fps or 25.0)
        seqs = []
        for k in range(st.grid):
            info: dict = {}
            seq = model.animate_latents(w_id, frames, fps, seed=st.seed + k, offset=offset,
                                        components=st.offset_components, layers=layers,
                                        strength=st.offset_strength, info=info, slowmo=st.slowmo)
            if offset == "mean" and model.pca is None:
                # StyleInV keeps no PCA of the training codes; its first frame is its reconstruction
                # of the identity, so the motion is moved to start at the tuned generator's pivot
                seq = (seq - seq[:1] + np.asarray(w_id, np.float32)[None]).astype(np.float32)
                info["pivot_offset"] = "first frame moved onto the pivot"
            seqs.append(seq)
            details.append({"source": "sampled", "seed": st.seed + k, **_plain(info)})
        latents = np.stack(seqs).astype(np.float32)              # [K, frames, num_ws, w_dim]
    timing["motion"] = time.perf_counter() - t

    # edits (before rendering, so the .npy holds what was rendered), render + encode (atomic), sidecars
    latents = apply_edits(latents, edits)
    t = time.perf_counter()
    if st.paste_back:
        n = write_pasted_animation(render_G, latents[0], st.identity, outputs.part(st.out, last=True), fps,
                                   st.batch, st.landmarks)
    else:
        n = write_rendered_video(render_G, latents, outputs.part(st.out, last=True), fps=fps, batch=st.batch)
    timing["render_encode"] = time.perf_counter() - t
    npy_path, json_path = sidecar_paths(st.out)
    with open(outputs.part(npy_path), "wb") as fh:
        np.save(fh, latents)
    timing["total"] = time.perf_counter() - t0
    summary = {
        "settings": dataclasses.asdict(st),
        "resolved": {"frames": frames, "fps": fps, "generator": str(Path(gen_path).resolve()),
                     "encoder": str(Path(enc_path).resolve()),
                     "generator_sha256": gen_sha,
                     "motion_model": model.model_name if model else None,
                     "device": str(device)},
        "outputs": {"video": str(Path(st.out).resolve()), "latents": str(npy_path.resolve()),
                    "latents_shape": list(latents.shape), "frames_written": n},
        "identity_latent_norm": float(np.linalg.norm(w_id)),
        "pivotal_tuning": tuning,
        "motion": details,
        "edits": describe_edits(edits),
        "timing_s": {k: round(v, 4) for k, v in timing.items()},
    }
    write_json(outputs.part(json_path), summary)
    return summary


def tune_identity(G: Any, w_id: np.ndarray, photo: np.ndarray, st: AnimateSettings,
                  gen_sha: str) -> tuple[Any, dict]:
    """PTI on the aligned photo (uint8 [R, R, 3]) at the pivot ``w_id`` [num_ws, w_dim], through the cache."""
    device = G.mapping.w_avg.device
    target = images_to_tensor(photo[None], G.img_resolution, device)
    cfg = PTIConfig(steps=int(st.tune_steps), seed=int(st.seed))
    photo_sha = file_sha256(st.identity)
    G_t, summary = tune_cached(G, torch.from_numpy(np.asarray(w_id)), target, cfg, photo_sha256=photo_sha,
                               generator_sha256=gen_sha, cache_dir=st.tune_cache,
                               loss=ReconstructionLoss(device=device),
                               extra_key={"landmarks": st.landmarks, "size": int(G.img_resolution)})
    return G_t, {**summary_for_json(summary), "photo_sha256": photo_sha}


def _plain(obj: Any) -> Any:
    """JSON-friendly copy (numpy scalars -> Python)."""
    return json.loads(json.dumps(obj, default=lambda x: x.tolist() if hasattr(x, "tolist") else str(x)))
