"""``svgen animate``: a photo (and a motion model or a driving video) -> W+ trajectory -> rendered mp4.

animate: align the identity photo -> invert it (encoder, optional refinement) -> motion
(``model.animate_chunks``: sampled motion + offset trick, or a driving video's inverted trajectory
with the same offset trick) -> render through the frozen generator -> mp4, and next to it
``<out>.npy`` (the latents) and ``<out>.json`` (every setting and what was done). Motion, edits,
rendering, encoding and the ``.npy`` go ``CHUNK_FRAMES`` frames at a time, so memory does not grow
with ``--frames``; the chunked latents are the ones a single pass gives (same seeds, same bytes).

Everything that can fail because of the input (missing or unreadable files, no face, a motion
checkpoint trained against another generator, frames <= 0) is checked before the first frame is
written; the mp4, ``.npy`` and ``.json`` are written to temporary names and renamed together when
complete.
"""
from __future__ import annotations

import dataclasses
import json
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np
import torch

from svgen.editing.edits import apply_edits, describe_edits, load_edits
from svgen.editing.restyle import describe_render, load_render_generator, transfer_tuning
from svgen.editing.video import write_pasted_animation
from svgen.inversion.api import images_to_tensor, invert_images
from svgen.pipeline.driving import DrivingLatents, invert_driving
from svgen.pipeline.stream import CHUNK_FRAMES, NpyWriter, rechunk
from svgen.inversion.encoders import load_encoder
from svgen.inversion.losses import ReconstructionLoss
from svgen.inversion.mouth import (OPENING_GAIN, MouthDirection, fit_mouth_direction, mouth_coordinates,
                                   mouth_steps, mouth_targets, photo_landmarks, rendered_mar, retarget_mouth)
from svgen.inversion.pti import PTIConfig, summary_for_json, tune_cached
from svgen.preprocessing.landmarks import make_backend
from svgen.preprocessing.pipeline import align_photo
from svgen.stage1_image_gan.checkpoints import load_checked_generator
from svgen.stage1_image_gan.render import write_rendered_stream
from svgen.stage2_motion.calibration import use_calibration
from svgen.stage2_motion.styleinv.layer_lift import LAYER_LIFT_MODES, use_layer_lift
from svgen.stage2_motion import MotionModel, load_motion
from svgen.stage2_motion.offset import MODES, coarse_layers, fit_pca, hold_layers, offset_for, parse_layers
from svgen.utils.device import mapped_temporaries, release_memory, select_device
from svgen.utils.checks import check_finite
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
    driving_mouth: str = "auto"        # the driving mouth from its frames' landmarks | its codes (auto: landmarks
    #                                    unless --landmarks none); see svgen.inversion.mouth.retarget_mouth
    grid: int = 1
    refine_steps: int = 0
    offset: str = "auto"               # auto (mean with --tune pti, else pca) | pca | mean | naive | none
    offset_components: Optional[int] = None
    offset_layers: Optional[str] = None
    offset_strength: float = 1.0
    motion_layers: Optional[str] = "auto"   # W+ layers that move; the rest stay at the photo's code.
    # auto: with --tune pti the blocks up to R/8 (offset.coarse_layers), else every layer
    landmarks: str = "dlib"
    batch: int = 8
    device: str = "auto"
    slowmo: float = 1.0                # slow motion (StyleInV samples t directly; the GRU resamples in time)
    tune: str = "pti"                  # pti: pivotal tuning of a generator copy on the photo | none
    tune_steps: int = 350              # PTI steps (stops earlier once the photo is reproduced)
    tune_id_loss: str = "dlib"         # PTI's identity term: dlib's face-recognition net | none
    tune_motion: Optional[float] = None  # weight of PTI's motion term (0: off; None: TUNE_MOTION with
    #                                      --tune pti, else 0; see svgen.inversion.pti)
    tune_mouth: float = 3.0            # weight of PTI's mouth term (0: off; see svgen.inversion.mouth)
    calibration: str = "off"           # the motion model's spread calibration: on | off (stage2_motion/calibration.py)
    layer_lift: str = "auto"           # StyleInV on a W+ store: lift its motion onto the layers: auto | on | off
    tune_cache: Optional[str] = None   # folder of tuned generators (default $SVGEN_CACHE/pti or ~/.cache/svgen/pti)
    edits: list = field(default_factory=list)   # --edit specs (EditSpec or FILE:INDEX:STRENGTH text)
    paste_back: bool = False           # composite the animated face into the original, unaligned photo
    render_generator: Optional[str] = None  # a finetune-decoder copy of the generator to render through


TUNE_MODES = ("pti", "none")
DRIVING_MOUTH = ("auto", "landmarks", "codes")
TUNE_MOTION = 1.0   # the motion term's default weight under --tune pti (svgen.inversion.pti: with the mouth
#                     term at 3 and the mouth left to it, the demo's GRU kept a face in every frame of three
#                     photos' animations, which the mouth term alone lost in 12-29 % of them)


def resolved_tuning(st: AnimateSettings) -> AnimateSettings:
    """``st`` with the motion term's weight filled in (``tune_motion`` None: ``TUNE_MOTION`` under
    ``--tune pti``, 0 otherwise), so the ``.json`` records the weight used."""
    if st.tune_motion is not None:
        return st
    return dataclasses.replace(st, tune_motion=TUNE_MOTION if st.tune == "pti" else 0.0)


def driving_mouth_mode(st: AnimateSettings) -> Optional[str]:
    """Where a driving video's mouth comes from: ``landmarks`` (its frames' mouth aspect ratio, moved along
    the generator's mouth direction) or ``codes`` (its inverted codes as they are); None without --driving."""
    if not st.driving:
        return None
    if st.driving_mouth != "auto":
        return st.driving_mouth
    return "codes" if st.landmarks == "none" else "landmarks"


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
    if st.tune_id_loss not in ("dlib", "none"):
        raise SvgenError(f"--tune-id-loss must be dlib or none, got {st.tune_id_loss!r}")
    if st.tune_motion is not None and not float(st.tune_motion) >= 0:
        raise SvgenError(f"--tune-motion must be >= 0, got {st.tune_motion}")
    if not float(st.tune_mouth) >= 0:
        raise SvgenError(f"--tune-mouth must be >= 0, got {st.tune_mouth}")
    if st.tune_motion is not None and float(st.tune_motion) > 0 and st.tune != "pti":
        raise SvgenError("--tune-motion is a term of pivotal tuning; it needs --tune pti")
    if st.calibration not in ("on", "off"):
        raise SvgenError(f"--calibration must be on or off, got {st.calibration!r}")
    if st.layer_lift not in LAYER_LIFT_MODES:
        raise SvgenError(f"--layer-lift must be auto, on or off, got {st.layer_lift!r}")
    if st.tune == "pti" and int(st.tune_steps) <= 0:
        raise SvgenError(f"--tune-steps must be positive, got {st.tune_steps}")
    if st.offset not in MODES + ("auto",):
        raise SvgenError(f"--offset must be one of auto, {', '.join(MODES)}, got {st.offset!r}")
    if st.paste_back and st.grid > 1:
        raise SvgenError("--paste-back writes one animation into the photo; it cannot be combined with --grid")
    if st.driving_mouth not in DRIVING_MOUTH:
        raise SvgenError(f"--driving-mouth must be one of {', '.join(DRIVING_MOUTH)}, got {st.driving_mouth!r}")
    if st.driving_mouth == "landmarks" and st.landmarks == "none":
        raise SvgenError("--driving-mouth landmarks measures the driving frames' mouth with a landmark backend; "
                         "it cannot be combined with --landmarks none")
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
    if st.render_generator:
        require_file(st.render_generator, "render generator")
    if st.driving:
        require_file(st.driving, "driving video")
    ensure_parent_writable(st.out)


def sidecar_paths(out: PathLike) -> tuple[Path, Path]:
    """(latents .npy, settings .json) next to the mp4."""
    out = Path(out)
    return out.with_suffix(".npy"), out.with_suffix(".json")


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
    st = resolved_tuning(st)
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
    calibration = use_calibration(model, st.calibration == "on") if model is not None else None
    lift = use_layer_lift(model, st.layer_lift) if model is not None else None
    require_file(enc_path, "encoder")
    E = load_encoder(enc_path, device=device)
    if model is not None and (model.num_ws, model.w_dim) != (G.num_ws, G.w_dim):
        raise SvgenError(f"motion model makes {model.num_ws}x{model.w_dim} latents but the generator "
                         f"takes {G.num_ws}x{G.w_dim}", st.motion)
    try:
        layers = parse_layers(st.offset_layers, G.num_ws) if st.offset_layers else None
    except ValueError as exc:
        raise SvgenError(f"--offset-layers: {exc}") from None
    moving = _motion_layers(st, G.num_ws, G.img_resolution)
    edits = load_edits(st.edits, G.num_ws, G.w_dim)
    styled, styled_rec = (load_render_generator(st.render_generator, gen_sha, G, device) if st.render_generator
                          else (None, None))
    max_k = model.pca.k if model is not None and model.pca is not None else 32
    if st.offset_components is not None and not 1 <= st.offset_components <= max_k:
        raise SvgenError(f"--offset-components must be in 1..{max_k}, got {st.offset_components}")
    timing["load"] = time.perf_counter() - t0

    # identity: align + invert
    t = time.perf_counter()
    photo = align_photo(st.identity, size=G.img_resolution, landmarks=st.landmarks)
    w_id = invert_images(G, E, photo[None], refine_steps=st.refine_steps, seed=st.seed)[0]   # [num_ws, w_dim]
    if not st.driving:
        E = None   # rendering needs no encoder: its weights (0.84 GB for IR-SE-50 at 256 px) are let go
        release_memory()
    timing["align_invert"] = time.perf_counter() - t

    with tempfile.TemporaryDirectory(prefix="svgen-animate-") as tmp:
        offset = resolved_offset(st)
        mouth_mode = driving_mouth_mode(st)
        needs_mouth = (st.tune == "pti" and st.tune_mouth > 0) or mouth_mode == "landmarks"
        landmarker = make_backend("dlib") if needs_mouth else None   # one dlib model for every mouth measurement
        drive = None
        if st.driving:   # inverted before the tuning: PTI's motion term reads its offsets
            t = time.perf_counter()
            mouth_backend = ((landmarker if st.landmarks == "dlib" else make_backend(st.landmarks))
                             if mouth_mode == "landmarks" else None)
            drive = invert_driving(st.driving, G, E, tmp, G.img_resolution, st.landmarks, st.refine_steps,
                                   st.frames, mouth_backend=mouth_backend)
            # the one frame-count check of a driven animation: before any tuning or output, with the user's number
            if st.frames is not None and int(st.frames) > drive.num_frames:
                raise SvgenError(f"the driving video has {drive.num_frames} usable frames, fewer than "
                                 f"--frames {st.frames}", st.driving)
            E = None
            release_memory()
            timing["invert_driving"] = time.perf_counter() - t
            frames, fps = int(st.frames or drive.num_frames), float(st.fps or drive.fps)
        else:
            frames, fps = int(st.frames or 250), float(st.fps or 25.0)

        # the mouth: the direction in which the generator opens it (PTI's mouth term; a driving video's mouth
        # from its frames' landmarks moves the codes along it)
        direction = None
        if needs_mouth:
            t = time.perf_counter()
            direction = mouth_direction(G, model, drive if mouth_mode == "codes" else None, st, gen_sha, moving,
                                        landmarker)
            timing["mouth_direction"] = time.perf_counter() - t
        mouth_drive = driving_mouth(drive, st, direction, frames)

        # identity: pivotal tuning of a generator copy that renders the photo at w_id
        render_G, tuning = G, None
        if st.tune == "pti":
            t = time.perf_counter()
            # the motion's offsets from the pivot: the motion term's (read only when it is on), and how far the
            # mouth term's steps reach
            offsets = (motion_offsets(model, drive, w_id, frames, fps, offset, st, layers, moving, mouth_drive)
                       if st.tune_motion > 0 or st.tune_mouth > 0 else None)
            mouth, mouth_rec = (mouth_inputs(G, model, drive, photo, st, gen_sha, moving, direction, landmarker,
                                             offsets) if st.tune_mouth > 0 else (None, None))
            with mapped_temporaries():   # PTI's temporaries go back to the system before rendering
                render_G, tuning = tune_identity(G, w_id, photo, st, gen_sha, offsets, mouth)
            tuning["mouth"] = mouth_rec
            timing["pivotal_tuning"] = time.perf_counter() - t
        if styled is not None:          # the restyled decoder, carrying PTI's weight change when there is one
            render_G = transfer_tuning(G, render_G, styled) if tuning else styled

        # motion -> edits -> render + encode, streamed chunk by chunk (auto offset: around the pivot for a
        # tuned generator, the paper's PCA trick otherwise); the .npy holds exactly what was rendered
        t = time.perf_counter()
        details: list[dict] = []
        npy_path, json_path = sidecar_paths(st.out)
        if drive is not None:
            streams = [_driving_stream(drive, frames, w_id, offset, st, layers, details, mouth_drive)]
        else:
            streams = [_sampled_stream(model, w_id, frames, fps, st.seed + k, offset, st, layers, details)
                       for k in range(st.grid)]
        streams = [(hold_layers(seq, w_id, moving) for seq in stream) for stream in streams]
        shape = (len(streams), frames, G.num_ws, G.w_dim)
        with NpyWriter(outputs.part(npy_path), shape) as npy:
            blocks = _edited_blocks(streams, edits, npy)
            if st.paste_back:
                n = write_pasted_animation(render_G, (b[0] for b in blocks), st.identity,
                                           outputs.part(st.out, last=True), fps, st.batch, st.landmarks)
            else:
                n = write_rendered_stream(render_G, blocks, outputs.part(st.out, last=True), fps=fps, batch=st.batch)
    timing["motion_render_encode"] = time.perf_counter() - t
    timing["total"] = time.perf_counter() - t0
    summary = {
        "settings": dataclasses.asdict(st),
        "resolved": {"frames": frames, "fps": fps, "generator": str(Path(gen_path).resolve()),
                     "encoder": str(Path(enc_path).resolve()),
                     "generator_sha256": gen_sha,
                     "motion_model": model.model_name if model else None,
                     "motion_layers": moving,
                     "calibration": calibration,
                     "layer_lift": lift,
                     "render_generator": describe_render(styled_rec, tuning) if styled_rec else None,
                     "device": str(device)},
        "outputs": {"video": str(Path(st.out).resolve()), "latents": str(npy_path.resolve()),
                    "latents_shape": list(shape), "frames_written": n},
        "identity_latent_norm": float(np.linalg.norm(w_id)),
        "pivotal_tuning": tuning,
        "motion": details,
        "edits": describe_edits(edits),
        "timing_s": {k: round(v, 4) for k, v in timing.items()},
    }
    write_json(outputs.part(json_path), summary)
    return summary


def resolved_offset(st: AnimateSettings) -> str:
    """The offset mode ``st.offset`` stands for: ``auto`` is ``mean`` (around the pivot) for a generator
    tuned on the photo, the paper's ``pca`` trick otherwise."""
    return st.offset if st.offset != "auto" else ("mean" if st.tune == "pti" else "pca")


def _motion_layers(st: AnimateSettings, num_ws: int, resolution: int) -> Optional[list[int]]:
    """The W+ layers that carry the motion (None: all). ``auto`` keeps the finer blocks at the photo's
    code when the generator is tuned on it: there the motion's fine-layer part is mostly the training
    actor's appearance (hair colour, skin), which the tuned generator renders as a ghost of the actor.
    Measured on the demo (64 px, latents refined, 16 frames of each animation): faces found in 7/16
    frames of the GRU animation with every layer moving, 16/16 with layers 0-3 (auto at 64 px); dlib
    identity 0.558 -> 0.513; mouth spread 0.68x -> 0.67x of the clip's. Layers 0-2 lose the mouth
    (0.24x), 0-4 bring the ghost back (13/16 frames with a face)."""
    spec = st.motion_layers
    if spec is None or str(spec).strip() in ("", "all"):
        return None
    if str(spec).strip() == "auto":
        return coarse_layers(num_ws, resolution) if st.tune == "pti" else None
    try:
        return parse_layers(spec, num_ws)
    except ValueError as exc:
        raise SvgenError(f"--motion-layers: {exc}") from None


MOTION_PROBE_FRAMES = 150   # frames of the animation's own motion PTI's motion term sees
MOTION_PROBE_EVERY = 3      # every third of them: 50 offsets
MOUTH_PROBE_FRAMES = 150    # codes rendered by the original generator to find the motion's mouth direction
MOUTH_MIN_R2 = 0.5          # below this the fitted direction is noise (demo store: 0.91; a MEAD clip driving the
#                             demo generator: 0.24, and the term took its mouth from 0.08x to 0.05x)


def motion_offsets(model: Optional[MotionModel], drive: Optional[DrivingLatents], w_id: np.ndarray, frames: int,
                   fps: float, offset: str, st: AnimateSettings, layers: Optional[list],
                   moving: Optional[list], mouth: Optional[DrivingMouth] = None) -> np.ndarray:
    """The offsets from the pivot [N, num_ws, w_dim] that the animation's first frames apply (its first
    motion, or the driving video's, with the driving frames' mouth when ``mouth`` is given), as rendered:
    after the offset trick and ``--motion-layers``."""
    n = min(int(frames), MOTION_PROBE_FRAMES)
    stream = (_driving_stream(drive, n, w_id, offset, st, layers, [], mouth) if drive is not None
              else _sampled_stream(model, w_id, n, fps, st.seed, offset, st, layers, []))
    seq = np.concatenate([hold_layers(s, w_id, moving) for s in stream])[::MOTION_PROBE_EVERY]
    return (seq - np.asarray(w_id, np.float32)[None]).astype(np.float32)


def mouth_probe_codes(model: Optional[MotionModel], drive: Optional[DrivingLatents], gen_sha: str
                      ) -> tuple[Optional[np.ndarray], str]:
    """The codes [N, num_ws, w_dim] the mouth direction is fitted on, and where they come from: the motion's
    training store (``latents_ref`` in motion.pt; up to ``MOUTH_PROBE_FRAMES`` frames spread over its
    clips) or, given ``drive``, the driving video's first ``MOUTH_PROBE_FRAMES`` inverted frames. (None, why)
    when the store is not there or belongs to another generator. Substitutes measured on the demo generator
    fail: a motion model's own samples (two short samples gave a direction at cosine 0.5 to the store's, and
    faces were lost), the mapping network's samples (R^2 0.32, cosine 0.01 to the store's direction) and the
    encoder's codes of the training frames without refinement (R^2 0.18: their renders hardly move the mouth)."""
    from svgen.inversion.latent_store import LatentStore

    if drive is not None:
        return np.concatenate(list(drive.chunks(MOUTH_PROBE_FRAMES))), "the driving video"
    if model is None:
        return None, "no motion's training store to find the generator's mouth direction in (give --motion)"
    path = getattr(model, "latents_ref", {}).get("path")
    if not path or not Path(path).is_file():
        return None, f"the motion's training store {path or '(not recorded)'} is not there"
    with LatentStore(path) as store:
        if store.generator_sha256 and gen_sha and store.generator_sha256 != gen_sha:
            return None, f"the motion's training store {path} was inverted with another generator"
        total = store.total_frames
        take = max(1, int(np.ceil(total / MOUTH_PROBE_FRAMES)))
        codes = np.concatenate([store.read(c, as_wplus=True)[::take] for c in store.clips])
    return codes, str(path)


def mouth_direction(G: Any, model: Optional[MotionModel], drive: Optional[DrivingLatents], st: AnimateSettings,
                    gen_sha: str, moving: Optional[list], backend: Any = None
                    ) -> tuple[Optional[MouthDirection], dict]:
    """The direction in which ``G`` opens the mouth, fitted on :func:`mouth_probe_codes` (the driving codes
    when ``drive`` is given), and its record for the ``.json``; (None, a record saying why) when there are
    no codes, no faces in their renders or no direction that the rendered mouth follows. ``backend``: the
    dlib landmarker to share (loaded when None)."""
    codes, source = mouth_probe_codes(model, drive, gen_sha)
    if codes is None:
        return None, {"used": False, "reason": source}
    try:
        mouth = fit_mouth_direction(codes, rendered_mar(G, codes, backend or make_backend("dlib")), moving)
    except SvgenError as exc:
        return None, {"used": False, "reason": str(exc)}
    if mouth.r2 < MOUTH_MIN_R2:
        why = (f"the mouth in the renders of {source} follows no direction of the codes "
               f"(R^2 {mouth.r2:.2f} < {MOUTH_MIN_R2})")
        return None, {"used": False, "reason": why, **mouth.summary()}
    return mouth, {"used": True, "codes": source, **mouth.summary()}


def mouth_inputs(G: Any, model: Optional[MotionModel], drive: Optional[DrivingLatents], photo: np.ndarray,
                 st: AnimateSettings, gen_sha: str, moving: Optional[list],
                 direction: Optional[tuple] = None, backend: Any = None,
                 motion: Optional[np.ndarray] = None) -> tuple[Optional[tuple], dict]:
    """Offsets and targets of PTI's mouth term (``svgen.inversion.mouth``) and their record for the ``.json``;
    (None, a record saying why, also warned) when the photo's landmarks or the motion's mouth cannot be
    measured. ``direction``: :func:`mouth_direction`'s result when already fitted; ``backend``: the dlib
    landmarker to share (loaded when None); ``motion``: the animation's offsets from the pivot
    (:func:`motion_offsets`), to which the targets' steps widen (:func:`svgen.inversion.mouth.mouth_steps`)."""
    backend = backend or make_backend("dlib")
    lm = photo_landmarks(photo, backend)
    if lm is None:
        warnings.warn("PTI's mouth term is off: dlib finds no face landmarks in the aligned photo")
        return None, {"used": False, "reason": "dlib finds no face landmarks in the aligned photo"}
    mouth, rec = direction if direction is not None else mouth_direction(G, model, drive, st, gen_sha, moving,
                                                                         backend)
    if mouth is None:
        warnings.warn(f"PTI's mouth term is off: {rec['reason']}")
        return None, rec
    target = images_to_tensor(photo[None], G.img_resolution, G.mapping.w_avg.device)
    steps = mouth_steps(motion, mouth)
    offsets, targets, openings = mouth_targets(target, lm, mouth, steps)
    return (offsets, targets), {**rec, "weight": float(st.tune_mouth), "steps": [round(x, 3) for x in steps],
                                "gain": OPENING_GAIN, "openings_px": [round(o, 3) for o in openings]}


RETARGET_LIMIT = 3.0   # the driving mouth's codes stay within this many spreads of the training codes along
#                        the direction (a MEAD clip moves the mouth 2.7x as much as the demo's actor). Its
#                        reference is the driving clip's median MAR (DrivingMouth), not its first frame: MEAD's
#                        M030 happy clip starts wide open (MAR 0.58, median 0.28), and from there 86 of 90
#                        frames were clipped


@dataclass
class DrivingMouth:
    """How the driving frames' mouth moves the codes: along ``direction``, from the driving MAR ``mar_ref``
    (the median over the animation's frames, which the photo's own mouth stands for)."""

    direction: MouthDirection
    mar_ref: float


def driving_mouth(drive: Optional[DrivingLatents], st: AnimateSettings, direction: Optional[tuple],
                  frames: int) -> Optional[DrivingMouth]:
    """The driving frames' mouth for the first ``frames`` frames, or None (with a warning saying why) where
    the driving mouth stays its codes' own. ``direction``: :func:`mouth_direction`'s result (fitted whenever
    the mode is ``landmarks``)."""
    if drive is None or driving_mouth_mode(st) != "landmarks":
        return None
    mouth, rec = direction
    why = (rec["reason"] if mouth is None else
           "no face landmarks in the aligned driving frames" if drive.mar is None else None)
    if why:
        warnings.warn(f"the driving video's mouth comes from its codes: {why}")
        return None
    return DrivingMouth(mouth, float(np.median(drive.mar[:frames])))


def tune_identity(G: Any, w_id: np.ndarray, photo: np.ndarray, st: AnimateSettings,
                  gen_sha: str, offsets: Optional[np.ndarray] = None,
                  mouth: Optional[tuple] = None) -> tuple[Any, dict]:
    """PTI on the aligned photo (uint8 [R, R, 3]) at the pivot ``w_id`` [num_ws, w_dim], through the cache;
    ``offsets`` [N, num_ws, w_dim]: the motion's, for the motion term (``st.tune_motion`` > 0); ``mouth``:
    (offsets, targets) of the mouth term (:func:`mouth_inputs`; the term is on when given)."""
    device = G.mapping.w_avg.device
    st = resolved_tuning(st)
    target = images_to_tensor(photo[None], G.img_resolution, device)
    cfg = PTIConfig(steps=int(st.tune_steps), seed=int(st.seed), identity=st.tune_id_loss,
                    motion=float(st.tune_motion), mouth=float(st.tune_mouth) if mouth is not None else 0.0)
    photo_sha = file_sha256(st.identity)
    G_t, summary = tune_cached(G, torch.from_numpy(np.asarray(w_id)), target, cfg, photo_sha256=photo_sha,
                               generator_sha256=gen_sha, cache_dir=st.tune_cache,
                               loss=ReconstructionLoss(identity=cfg.identity, device=device),
                               extra_key={"landmarks": st.landmarks, "size": int(G.img_resolution)},
                               motion_offsets=None if offsets is None else torch.from_numpy(offsets),
                               mouth=mouth)
    return G_t, {**summary_for_json(summary), "photo_sha256": photo_sha}


def _sampled_stream(model: MotionModel, w_id: np.ndarray, frames: int, fps: float, seed: int, offset: str,
                    st: AnimateSettings, layers: Optional[list], details: list) -> Iterator[np.ndarray]:
    """One sampled motion on the identity, ``CHUNK_FRAMES`` frames at a time (its record in ``details``)."""
    info: dict = {}
    record = {"source": "sampled", "seed": seed}
    details.append(record)
    chunks = model.animate_chunks(w_id, frames, fps, seed=seed, offset=offset, components=st.offset_components,
                                  layers=layers, strength=st.offset_strength, info=info, slowmo=st.slowmo)
    first = None
    for seq in rechunk(chunks, CHUNK_FRAMES):
        if offset == "mean" and model.pca is None:
            # StyleInV keeps no PCA of the training codes; its first frame is its reconstruction
            # of the identity, so the motion is moved to start at the tuned generator's pivot
            first = seq[:1] if first is None else first
            seq = (seq - first + np.asarray(w_id, np.float32)[None]).astype(np.float32)
            info["pivot_offset"] = "first frame moved onto the pivot"
        record.update(_plain(info))
        yield seq


def _driving_stream(drive: DrivingLatents, frames: int, w_id: np.ndarray, offset: str, st: AnimateSettings,
                    layers: Optional[list], details: list,
                    mouth: Optional[DrivingMouth] = None) -> Iterator[np.ndarray]:
    """The driving trajectory moved onto the identity by the offset trick, ``CHUNK_FRAMES`` at a time;
    the PCA is the driving actor's own (the offset trick's subspace), fitted in a first pass. With
    ``mouth``, the codes' coordinate along its direction follows the driving frames' mouth aspect ratio
    (:func:`svgen.inversion.mouth.retarget_mouth`)."""
    if frames < 2 and offset == "pca":
        raise SvgenError("the offset trick needs at least 2 driving frames (its PCA); use more --frames", st.driving)
    basis = (fit_pca(drive.chunks(frames, CHUNK_FRAMES), drive.frame_shape[0], drive.frame_shape[1], n_components=32)
             if offset in ("pca", "mean") else None)
    components = None if basis is None or st.offset_components is None else min(st.offset_components, basis.k)
    record = {"source": "driving", "driving_frames": frames, "driving_fps": drive.fps,
              "pca_components": None if basis is None else basis.k}
    details.append(record)
    if mouth is not None:
        mar, d = drive.mar[:frames], mouth.direction
        moved, _ = mouth_coordinates(mar, mouth.mar_ref, d, RETARGET_LIMIT)      # as retarget_mouth moves the codes
        record["mouth"] = {"from": "driving landmarks", "mar_std": round(float(mar.std()), 4),
                           "mar_reference": round(mouth.mar_ref, 4),
                           "frames_measured": round(float(drive.mar_found), 4),
                           "moved_spreads_std": round(float(moved.std() / d.spread), 3),
                           "limit_spreads": RETARGET_LIMIT, "clipped_frames": 0}
    else:
        record["mouth"] = {"from": "driving codes"}
    delta, first, pos = None, None, 0
    for traj in drive.chunks(frames, CHUNK_FRAMES):
        if delta is None:
            delta, off = offset_for(traj[0], w_id, basis, mode=offset, components=components, layers=layers,
                                    strength=st.offset_strength)
            record["offset"] = off
        seq = (np.asarray(traj, np.float64) + delta[None]).astype(np.float32)
        if mouth is not None:
            first = seq[0].copy() if first is None else first
            seq, clipped = retarget_mouth(seq, first, drive.mar[pos:pos + len(seq)], mouth.mar_ref, mouth.direction,
                                          RETARGET_LIMIT)
            record["mouth"]["clipped_frames"] += clipped
        pos += len(seq)
        yield seq


def _edited_blocks(streams: list, edits: list, npy: NpyWriter) -> Iterator[np.ndarray]:
    """Blocks [K, n, num_ws, w_dim] of the K streams side by side, edited (frame numbers from 0),
    checked finite and written to the ``.npy`` before they are rendered."""
    pos = 0
    for seqs in zip(*streams):
        block = apply_edits(np.stack(seqs).astype(np.float32), edits, start=pos)
        check_finite(block, "latents to render")
        npy.write(block, pos)
        pos += block.shape[1]
        yield block
    if pos != npy.shape[1]:
        raise SvgenError(f"motion model gave {pos} frames, {npy.shape[1]} were asked for")


def _plain(obj: Any) -> Any:
    """JSON-friendly copy (numpy scalars -> Python)."""
    return json.loads(json.dumps(obj, default=lambda x: x.tolist() if hasattr(x, "tolist") else str(x)))
