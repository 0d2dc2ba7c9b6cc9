"""Rendered faces pasted back into full frames (``svgen edit-video``, ``animate --paste-back``).

``svgen edit-video`` (``svgen.pipeline.edit_video``), STIT-style without stitching tuning:
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
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from svgen.metrics.acd import FFHQ_FACE_BOX
from svgen.utils.errors import PathLike, SvgenError


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


def render_faces(G: Any, ws: Any, size: int, batch: int) -> Iterator[np.ndarray]:
    """Render W+ codes [T, num_ws, w_dim] (an array, or consecutive chunks [n, num_ws, w_dim] of a long
    video) -> uint8 [size, size, 3] per frame (resized from the generator's resolution), ``batch``
    frames at a time."""
    from PIL import Image

    from svgen.stage1_image_gan.render import to_uint8_hwc

    device = G.mapping.w_avg.device
    chunks = [ws] if isinstance(ws, np.ndarray) or torch.is_tensor(ws) else ws
    for part in chunks:
        for a in range(0, len(part), batch):
            with torch.no_grad():
                chunk = torch.as_tensor(np.asarray(part[a:a + batch]), dtype=torch.float32).to(device)
                imgs = to_uint8_hwc(G.synthesis(chunk, noise_mode="const"))
            for im in imgs:
                yield np.asarray(Image.fromarray(im).resize((size, size), Image.BICUBIC)) if im.shape[0] != size else im


def write_pasted_animation(G: Any, ws: Any, photo: PathLike, out: PathLike, fps: float, batch: int = 8,
                           landmarks: str = "dlib", crop_size: int = 256, feather: float = 0.04) -> int:
    """``animate --paste-back``: render ws [T, num_ws, w_dim] (or its consecutive chunks) and composite every face into the original,
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


def mux_audio(video: Path, source: Path, out: Path) -> bool:
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
