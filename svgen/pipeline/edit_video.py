"""``svgen edit-video``: edit the face in a real video and paste it back (STIT-style, without stitching tuning).

preprocess (aligned crops + quads) -> invert (encoder, optional temporally smooth refinement) -> ``--edit``
at each frame's source index -> render -> paste back (``svgen.editing.video``) -> mp4 at the source's
size and frame rate with its audio; ``<out>.json`` records settings and edits.
"""
from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from svgen.editing.edits import apply_edits, describe_edits, load_edits
from svgen.editing.video import face_mask, mux_audio, render_faces
from svgen.inversion.api import invert_images
from svgen.inversion.encoders import load_encoder
from svgen.preprocessing.alignment import paste_back
from svgen.preprocessing.dataset import AlignedDataset
from svgen.preprocessing.landmarks import DlibLandmarks
from svgen.preprocessing.videos import preprocess_videos
from svgen.preprocessing.video_io import VideoWriter, iter_frames_indexed, probe
from svgen.stage1_image_gan.checkpoints import load_checked_generator
from svgen.utils.device import select_device
from svgen.utils.errors import SvgenError
from svgen.utils.io import (atomic_path, ensure_parent_writable, file_sha256, refuse_input_as_output, require_file,
                            write_json)


@dataclass
class EditVideoConfig:
    """Every setting of one ``svgen edit-video`` call (written to ``<out>.json``)."""

    video: str = ""
    generator: str = ""
    encoder: str = ""
    out: str = ""
    edits: list = field(default_factory=list)   # EditSpec or FILE:INDEX:STRENGTH text
    max_frames: Optional[int] = None
    refine_steps: int = 0
    temporal_weight: float = 1.0                 # smoothness of the refined latents over time
    landmarks: str = "dlib"
    crop_size: int = 256                         # aligned crops for the mask (and the paste) at least this big
    feather: float = 0.04                        # mask blur sigma, fraction of the crop side
    forehead: float = 0.3                        # brows raised by this fraction of the chin-to-brow distance
    batch: int = 8
    seed: int = 0
    device: str = "auto"



def edit_video(cfg: EditVideoConfig) -> dict:
    """Run ``svgen edit-video``; returns the summary also written to ``<out>.json``."""
    if not str(cfg.out).lower().endswith(".mp4"):
        raise SvgenError("output must be an .mp4 file", cfg.out)
    if cfg.max_frames is not None and cfg.max_frames <= 0:
        raise SvgenError(f"--max-frames must be positive, got {cfg.max_frames}")
    if cfg.refine_steps < 0:
        raise SvgenError(f"--refine-steps must be >= 0, got {cfg.refine_steps}")
    for path, what in ((cfg.video, "video"), (cfg.generator, "generator"), (cfg.encoder, "encoder")):
        require_file(path, what)
    refuse_input_as_output(cfg.out, {"VIDEO": cfg.video, "--generator": cfg.generator, "--encoder": cfg.encoder})
    ensure_parent_writable(cfg.out)
    info = probe(cfg.video)
    device = select_device(cfg.device)
    E = load_encoder(cfg.encoder, device=device)
    G = load_checked_generator(cfg.generator, getattr(E, "generator_sha256", ""), device, what=cfg.encoder,
                               recorded_by="encoder")
    g_sha = file_sha256(cfg.generator)
    edits = load_edits(cfg.edits, G.num_ws, G.w_dim)
    size = max(int(cfg.crop_size), int(G.img_resolution))
    landmarker = DlibLandmarks()

    # aligned crops, inverted, edited and rendered, keyed by source frame index
    pasted: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    clips = []
    with tempfile.TemporaryDirectory(prefix="svgen-edit-video-") as tmp:
        aligned = Path(tmp) / "aligned.zip"
        preprocess_videos([cfg.video], aligned, size=size, landmarks=cfg.landmarks, max_frames=cfg.max_frames,
                          show_progress=False, min_length=0.0)     # every face is edited, however short its run
        ds = AlignedDataset(aligned)
        try:
            for name, clip in ds.clips.items():
                frames = ds.read_clip(name)
                ws = invert_images(G, E, frames, refine_steps=cfg.refine_steps,
                                   temporal_weight=cfg.temporal_weight, seed=cfg.seed)
                first = int(clip.frames[0]["source_frame"])
                ws = apply_edits(ws, edits, start=first)
                faces = render_faces(G, ws, size, cfg.batch)
                for rec, orig, face in zip(clip.frames, frames, faces):
                    pasted[int(rec["source_frame"])] = (face, face_mask(orig, landmarker, cfg.feather, cfg.forehead),
                                                        np.asarray(rec["quad"], np.float64))
                clips.append({"clip": name, "frames": clip.num_frames, "first_source_frame": first})
        finally:
            ds.close()
    if not pasted:
        raise SvgenError("no face found in the video", cfg.video)
    corners = np.concatenate([q for _, _, q in pasted.values()])
    face_region = [float(v) for v in (*corners.min(0), *corners.max(0))]      # x0, y0, x1, y1 of every quad

    # paste into the full-resolution frames, then add the source's audio
    written = 0
    out = Path(cfg.out)
    with tempfile.TemporaryDirectory(prefix="svgen-edit-video-", dir=out.parent) as tmp:
        silent = Path(tmp) / "video.mp4"
        with VideoWriter(silent, info.fps) as writer:
            for idx, frame in iter_frames_indexed(cfg.video, max_frames=cfg.max_frames, info=info):
                if idx in pasted:
                    face, mask, quad = pasted[idx]
                    frame = paste_back(frame, face, quad, alpha=mask)
                writer.write(frame)
            written = writer.num_frames
        with atomic_path(out) as tmp_out:
            has_audio = mux_audio(silent, Path(cfg.video), Path(tmp_out))
    summary = {"settings": asdict(cfg), "source": {"path": str(Path(cfg.video).resolve()),
                                                   "sha256": file_sha256(cfg.video), "fps": info.fps,
                                                   "width": info.width, "height": info.height},
               "generator_sha256": g_sha, "frames_written": written,
               "frames_edited": len(pasted), "face_region": face_region, "clips": clips, "audio_copied": has_audio,
               "edits": describe_edits(edits)}
    write_json(out.with_suffix(".json"), summary)
    return summary
