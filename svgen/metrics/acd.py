"""Identity consistency with dlib's face-recognition ResNet (ACD, StyleVideoGAN §4).

StyleVideoGAN measures how well a video keeps its identity with a variant of the Average Content
Distance: the 128-d identity embedding of every frame from a popular face-recognition library
(dlib's ResNet, the model behind ``face_recognition``), then the mean L2 distance over all pairs of
frames of a video, averaged over videos (the paper reports 5.68 for its random actors with its own
scaling; dlib's distances are ~0.6 between different people). We also measure the distance between
an ``animate`` result and its input photo (mean over frames of |e(frame) - e(photo)|).

Pipeline per image: dlib's HOG frontal face detector (largest face) on a copy scaled to a
workable size, a 5-point (default) or 68-point shape predictor, ``dlib.get_face_chip`` (150 px,
padding 0.25), then the ResNet descriptor. Generated frames are FFHQ-aligned, so when the detector
finds nothing in them (tiny or unusual frames) the fixed FFHQ face box is used instead; how often
that happened is reported.

The model files ship in the PyPI package ``face-recognition-models``;
:mod:`svgen.utils.dlib_models` locates them without importing that package and loads each model
once per process.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Optional

import numpy as np

from svgen.utils import dlib_models
from svgen.utils.errors import SvgenError

MODEL_PACKAGE = dlib_models.MODEL_PACKAGE
RECOGNITION_FILE = "dlib_face_recognition_resnet_model_v1.dat"
SHAPE_FILES = {5: "shape_predictor_5_face_landmarks.dat", 68: "shape_predictor_68_face_landmarks.dat"}
FFHQ_FACE_BOX = (0.20, 0.30, 0.78, 0.88)  # (left, top, right, bottom) of the dlib box on FFHQ-aligned crops
CHIP_SIZE = 150
CHIP_PADDING = 0.25


def model_file(filename: str) -> Path:
    """Path of a model file inside ``face_recognition_models/models`` (its __init__ is not run)."""
    return dlib_models.model_path(filename)


def _resize(img: np.ndarray, scale: float) -> np.ndarray:
    from PIL import Image

    h, w = img.shape[:2]
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(img).resize(size, Image.BICUBIC if scale > 1 else Image.LANCZOS))


class FaceEmbedder:
    """dlib face detector + shape predictor + face-recognition ResNet: ``embed(img) -> [128] | None``.

    ``min_side``/``max_side``: images are rescaled so the face detector sees at least / at most this
    many pixels (small generated frames are upscaled, large photos downscaled).
    """

    def __init__(self, landmarks: int = 5, min_side: int = 256, max_side: int = 1024):
        import dlib

        if landmarks not in SHAPE_FILES:
            raise ValueError(f"landmarks must be 5 or 68, got {landmarks}")
        self.landmarks = landmarks
        self.min_side, self.max_side = int(min_side), int(max_side)
        self.recognition_path = model_file(RECOGNITION_FILE)
        self.shape_path = model_file(SHAPE_FILES[landmarks])
        self._dlib = dlib
        self.detector = dlib_models.frontal_face_detector()
        self.shape_predictor = dlib_models.shape_predictor(f"shape{landmarks}")
        self.recognizer = dlib_models.face_recognizer()
        self.used_fallback_box = 0
        self.no_face = 0

    def _prepare(self, img: np.ndarray) -> np.ndarray:
        img = np.asarray(img)
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=2)
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] not in (3, 4):
            raise ValueError(f"expected an RGB uint8 image [H, W, 3], got {img.dtype} {img.shape}")
        img = np.ascontiguousarray(img[..., :3])
        short, long = min(img.shape[:2]), max(img.shape[:2])
        if long > self.max_side:
            img = _resize(img, self.max_side / long)
        elif short < self.min_side:
            img = _resize(img, self.min_side / short)
        return np.ascontiguousarray(img)

    def face_box(self, img: np.ndarray, aligned: bool = False) -> Optional[Any]:
        """Largest detected face (dlib.rectangle) in a prepared image; the FFHQ box if ``aligned``."""
        dets = list(self.detector(img, 0)) or list(self.detector(img, 1))
        if dets:
            return max(dets, key=lambda r: r.width() * r.height())
        if aligned:
            h, w = img.shape[:2]
            l, t, r, b = FFHQ_FACE_BOX
            self.used_fallback_box += 1
            return self._dlib.rectangle(int(l * w), int(t * h), int(r * w), int(b * h))
        return None

    def chip(self, img: np.ndarray, aligned: bool = False) -> Optional[np.ndarray]:
        """dlib's aligned 150 px face chip (uint8 [150, 150, 3]) of the largest face, or None."""
        prepared = self._prepare(img)
        box = self.face_box(prepared, aligned=aligned)
        if box is None:
            self.no_face += 1
            return None
        shape = self.shape_predictor(prepared, box)
        return self._dlib.get_face_chip(prepared, shape, size=CHIP_SIZE, padding=CHIP_PADDING)

    def embed(self, img: np.ndarray, aligned: bool = False) -> Optional[np.ndarray]:
        """128-d identity embedding of the largest face in ``img`` (RGB uint8), or None if no face."""
        chip = self.chip(img, aligned=aligned)
        if chip is None:
            return None
        return np.asarray(self.recognizer.compute_face_descriptor(chip), dtype=np.float64)

    def describe(self) -> dict:
        return {"model": RECOGNITION_FILE, "shape_predictor": SHAPE_FILES[self.landmarks],
                "package": MODEL_PACKAGE, "detector": "dlib HOG frontal (largest face)",
                "chip": f"dlib.get_face_chip size {CHIP_SIZE} padding {CHIP_PADDING}",
                "rescale": f"detector input scaled to >= {self.min_side} / <= {self.max_side} px"}


def mean_pairwise_distance(emb: np.ndarray) -> float:
    """Mean L2 distance over all pairs i < j of the rows of ``emb`` [N, D] (NaN for N < 2)."""
    emb = np.asarray(emb, dtype=np.float64)
    n = emb.shape[0]
    if n < 2:
        return float("nan")
    d = np.linalg.norm(emb[:, None, :] - emb[None, :, :], axis=-1)
    return float(d[np.triu_indices(n, k=1)].mean())


def embed_frames(frames: Iterable[np.ndarray], embedder: FaceEmbedder, aligned: bool = True) -> np.ndarray:
    """Embeddings [K, 128] of the frames where a face was found (K may be < number of frames)."""
    out = [e for e in (embedder.embed(f, aligned=aligned) for f in frames) if e is not None]
    return np.stack(out) if out else np.zeros((0, 128))


def acd(videos: Iterable[Any], embedder: Optional[FaceEmbedder] = None, aligned: bool = True) -> dict:
    """ACD over ``videos`` (each an iterable of RGB uint8 frames [H, W, 3]): mean over videos of the
    mean pairwise embedding distance between frames."""
    embedder = embedder or FaceEmbedder()
    per_video, frames_total, frames_with_face = [], 0, 0
    fallback0, noface0 = embedder.used_fallback_box, embedder.no_face
    for video in videos:
        frames = list(video)
        frames_total += len(frames)
        emb = embed_frames(frames, embedder, aligned=aligned)
        frames_with_face += emb.shape[0]
        value = mean_pairwise_distance(emb)
        if np.isfinite(value):
            per_video.append(value)
    if not per_video:
        raise SvgenError("ACD: no video had two frames with a detectable face")
    return {"value": float(np.mean(per_video)), "std_over_videos": float(np.std(per_video)),
            "num_videos": len(per_video), "num_frames": frames_total, "frames_with_face": frames_with_face,
            "frames_with_fallback_box": embedder.used_fallback_box - fallback0,
            "frames_without_face": embedder.no_face - noface0, "distance": "L2 between 128-d dlib embeddings",
            "embedder": embedder.describe()}


def identity_distance(frames: Iterable[np.ndarray], photo: np.ndarray, embedder: Optional[FaceEmbedder] = None,
                      photo_name: str = "photo") -> dict:
    """Mean / max L2 distance between the face in each frame of an animation and its input photo."""
    embedder = embedder or FaceEmbedder()
    ref = embedder.embed(photo, aligned=False)
    if ref is None:
        ref = embedder.embed(photo, aligned=True)
    if ref is None:
        raise SvgenError("no face found in the identity photo", photo_name)
    emb = embed_frames(frames, embedder, aligned=True)
    if emb.shape[0] == 0:
        raise SvgenError("no face found in any frame of the animation")
    d = np.linalg.norm(emb - ref, axis=1)
    return {"value": float(d.mean()), "max": float(d.max()), "first_frame": float(d[0]),
            "frames_with_face": int(emb.shape[0]), "acd": mean_pairwise_distance(emb),
            "distance": "L2 between 128-d dlib embeddings", "embedder": embedder.describe()}
