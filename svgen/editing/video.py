"""``svgen edit-video``: edit the face in a real video and paste it back (STIT-style, without stitching tuning).

preprocess (FFHQ-aligned crops + their quads) -> invert (encoder, optional refinement with the
temporal term) -> ``--edit`` edits at each frame's source index -> render -> paste every rendered
face into its original full-resolution frame through the inverse of the crop's quad, with a
feathered mask of the face region (the convex hull of dlib's 68 landmarks on the original aligned
crop, brows raised to cover the forehead, Gaussian-blurred) -> mp4 at the source's size and frame
rate, the source's audio stream copied. Frames without a face, and every pixel outside the mask,
are the source's own (only the video codec changes them). ``<out>.json`` records settings and edits.
"""
from __future__ import annotations

import subprocess
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np
import torch

from svgen.metrics.acd import FFHQ_FACE_BOX
from svgen.utils.errors import PathLike, SvgenError


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


def face_mask(crop: np.ndarray, landmarker: Any, feather: float = 0.04, forehead: float = 0.3) -> np.ndarray:
    """Feathered face mask (float [S, S] in [0, 1]) of an FFHQ-aligned crop (uint8 [S, S, 3]): the hull
    of jaw and raised brows from dlib's 68 landmarks, predicted in the fixed FFHQ face box."""
    from PIL import Image, ImageDraw, ImageFilter

    s = crop.shape[0]
    box = np.array(FFHQ_FACE_BOX) * s
    lm = landmarker.predict(crop, box)
    brows = lm[17:27]
    up = brows.mean(0) - lm[8]                                     # chin -> brows
    outline = np.concatenate([lm[0:17], (brows + forehead * up)[::-1]])
    img = Image.new("L", (s, s), 0)
    ImageDraw.Draw(img).polygon([tuple(p) for p in outline], fill=255)
    if feather > 0:
        img = img.filter(ImageFilter.GaussianBlur(radius=feather * s))
    return np.asarray(img, np.float32) / 255.0


def render_faces(G: Any, ws: np.ndarray, size: int, batch: int) -> Iterator[np.ndarray]:
    """Render W+ codes [T, num_ws, w_dim] -> uint8 [size, size, 3] per frame (resized from the
    generator's resolution), ``batch`` frames at a time."""
    from PIL import Image

    from svgen.inversion.reconstruct import to_uint8

    device = G.mapping.w_avg.device
    for a in range(0, len(ws), batch):
        with torch.no_grad():
            imgs = to_uint8(G.synthesis(torch.from_numpy(np.asarray(ws[a:a + batch])).to(device), noise_mode="const"))
        for im in imgs:
            yield np.asarray(Image.fromarray(im).resize((size, size), Image.BICUBIC)) if im.shape[0] != size else im


def write_pasted_animation(G: Any, ws: np.ndarray, photo: PathLike, out: PathLike, fps: float, batch: int = 8,
                           landmarks: str = "dlib", crop_size: int = 256, feather: float = 0.04) -> int:
    """``animate --paste-back``: render ws [T, num_ws, w_dim] and composite every face into the original,
    unaligned photo (the same feathered landmark mask as edit-video); writes an mp4 of the photo's
    size (odd sizes padded by one pixel for yuv420p) atomically and returns the frame count."""
    from svgen.preprocessing.alignment import paste_back
    from svgen.preprocessing.landmarks import DlibLandmarks
    from svgen.preprocessing.pipeline import align_photo_info, load_image_rgb
    from svgen.preprocessing.video_io import VideoWriter

    size = max(int(crop_size), int(G.img_resolution))
    image = load_image_rgb(photo)                      # EXIF-rotated, as the alignment's quad sees it
    aligned = align_photo_info(image, size=size, landmarks=landmarks)
    mask = face_mask(aligned.image, DlibLandmarks(), feather)
    with VideoWriter(out, fps) as writer:
        for face in render_faces(G, ws, size, batch):
            writer.write(paste_back(image, face, aligned.quad, alpha=mask))
        return writer.num_frames


def _mux_audio(video: Path, source: Path, out: Path) -> bool:
    """Copy ``source``'s first audio stream (if any) next to ``video``'s picture into ``out``;
    returns whether the source had audio. The picture is copied as is."""
    from svgen.preprocessing.video_io import ffmpeg_exe

    base = [ffmpeg_exe(), "-y", "-v", "error", "-i", str(video), "-i", str(source), "-map", "0:v:0",
            "-map", "1:a:0?", "-c:v", "copy"]
    for audio in (["-c:a", "copy"], ["-c:a", "aac"]):     # copy when mp4 can hold the codec, else AAC
        proc = subprocess.run(base + audio + ["-shortest", "-f", "mp4", str(out)], capture_output=True, text=True)
        if proc.returncode == 0:
            break
    else:
        raise SvgenError(f"ffmpeg could not add the audio: {proc.stderr.strip().splitlines()[-1][:200]}", source)
    probe = subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", str(source)], capture_output=True, text=True)
    return "Audio:" in probe.stderr


def edit_video(cfg: EditVideoConfig) -> dict:
    """Run ``svgen edit-video``; returns the summary also written to ``<out>.json``."""
    from svgen.editing.edits import apply_edits, describe_edits, load_edits
    from svgen.inversion.api import invert_images
    from svgen.inversion.encoders import load_encoder
    from svgen.preprocessing.alignment import paste_back
    from svgen.preprocessing.dataset import AlignedDataset
    from svgen.preprocessing.landmarks import DlibLandmarks
    from svgen.preprocessing.pipeline import preprocess_videos
    from svgen.preprocessing.video_io import VideoWriter, iter_frames_indexed, probe
    from svgen.stage1_image_gan.checkpoints import load_generator
    from svgen.utils.device import select_device
    from svgen.utils.io import (atomic_path, ensure_parent_writable, file_sha256, refuse_input_as_output,
                                require_file, write_json)

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
    G = load_generator(cfg.generator, device=device)
    E = load_encoder(cfg.encoder, device=device)
    g_sha = file_sha256(cfg.generator)
    if getattr(E, "generator_sha256", "") and E.generator_sha256 != g_sha:
        raise SvgenError(f"encoder was trained against another generator (it records {E.generator_sha256[:12]}, "
                         f"{cfg.generator} is {g_sha[:12]})", cfg.encoder)
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
            has_audio = _mux_audio(silent, Path(cfg.video), Path(tmp_out))
    summary = {"settings": asdict(cfg), "source": {"path": str(Path(cfg.video).resolve()),
                                                   "sha256": file_sha256(cfg.video), "fps": info.fps,
                                                   "width": info.width, "height": info.height},
               "generator_sha256": g_sha, "frames_written": written,
               "frames_edited": len(pasted), "face_region": face_region, "clips": clips, "audio_copied": has_audio,
               "edits": describe_edits(edits)}
    write_json(out.with_suffix(".json"), summary)
    return summary
