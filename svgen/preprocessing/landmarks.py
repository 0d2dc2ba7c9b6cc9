"""68-point facial landmarks (iBUG 300-W convention) with face tracking for videos.

Backends:
- ``dlib`` (default): HOG frontal-face detector (or the CNN ``mmod`` detector) and the 68-point
  regression-tree shape predictor (Kazemi & Sullivan 2014). The model files are the ones shipped in
  the PyPI package ``face-recognition-models``.
- ``face-alignment`` (optional): the FAN heat-map network of Bulat & Tzimiropoulos on boxes found by
  dlib. It only uses weights already on disk and never downloads.

The dlib models are loaded once per process (:mod:`svgen.utils.dlib_models`).

:class:`FaceTracker` makes video landmarking cheap: a full-frame detection only at the start or after
the face was lost, a local re-detection around the tracked face every ``detect_every`` frames (which
also checks that the track still holds the same face; while re-detections keep confirming the track,
the interval doubles up to ``max_detect_every``), and the landmark predictor on every frame with a
box derived from the previous frame's landmarks.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Protocol

import numpy as np
from PIL import Image

from svgen.utils import dlib_models
from svgen.utils.errors import SvgenError

__all__ = ["DlibLandmarks", "FanLandmarks", "FaceTracker", "TrackerConfig",
           "make_backend", "box_iou", "box_from_landmarks", "to_gray", "detect_photo_faces"]

Box = np.ndarray  # float [4]: left, top, right, bottom (pixels)

# dlib HOG boxes relative to the landmarks' centroid c and RMS radius r (measured on the project's
# real clips, 111 faces): box centre = c + r * (-0.042, -0.076), box side = 2.74 r. The shape
# predictor was trained on HOG boxes, so boxes made from landmarks imitate them.
_HOG_BOX_OFFSET = np.array([-0.042, -0.076])
_HOG_BOX_SIDE = 2.74
# The CNN (mmod) detector's boxes sit higher and tighter; mapped to HOG-like boxes with
# centre += w * (0.04, 0.12), side = 1.10 w (measured on the same clips).
_MMOD_TO_HOG = (0.04, 0.12, 1.10)

def to_gray(image: np.ndarray) -> np.ndarray:
    """uint8 RGB [H, W, 3] -> contiguous grey [H, W] (ITU-R 601 luma, as PIL and dlib)."""
    if image.ndim == 2:
        return np.ascontiguousarray(image)
    return np.asarray(Image.fromarray(np.ascontiguousarray(image)).convert("L"))


def box_iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes (l, t, r, b)."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def box_from_landmarks(lm: np.ndarray) -> Box:
    """A HOG-detector-like square box for 68 landmarks (see ``_HOG_BOX_*``)."""
    c = lm.mean(axis=0)
    r = float(np.sqrt(((lm - c) ** 2).sum(axis=1).mean()))
    centre = c + r * _HOG_BOX_OFFSET
    half = 0.5 * _HOG_BOX_SIDE * r
    return np.array([centre[0] - half, centre[1] - half, centre[0] + half, centre[1] + half])


def _box_area(b: Box) -> float:
    return float(max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1]))


class LandmarkBackend(Protocol):
    """What :class:`FaceTracker` needs from a backend."""

    def detect(self, image: np.ndarray, upsample: int = 0) -> list[tuple[Box, float]]: ...

    def predict(self, image: np.ndarray, box: Box) -> np.ndarray: ...


class DlibLandmarks:
    """dlib face detection (``hog`` or ``cnn``) and the 68-point shape predictor.

    ``detect`` and ``predict`` take RGB or grey uint8 images; boxes are (l, t, r, b) floats. CNN
    boxes are converted to HOG-like boxes, the kind the shape predictor was trained on.
    """

    takes_gray = True  # predict gives the same landmarks on a grey crop (FaceTracker shares one)

    def __init__(self, detector: str = "hog"):
        import dlib

        if detector not in ("hog", "cnn"):
            raise SvgenError(f"unknown face detector {detector!r} (use hog or cnn)")
        self.detector_name = detector
        self._dlib = dlib
        self._predictor = dlib_models.shape_predictor("shape68")
        self._hog = dlib_models.frontal_face_detector() if detector == "hog" else None
        self._cnn = dlib_models.cnn_face_detector() if detector == "cnn" else None

    def detect(self, image: np.ndarray, upsample: int = 0) -> list[tuple[Box, float]]:
        """All faces in ``image`` as (box, score), best first."""
        img = np.ascontiguousarray(image)
        out = []
        if self._hog is not None:
            rects, scores, _ = self._hog.run(img, int(upsample), 0.0)
            for r, s in zip(rects, scores):
                out.append((np.array([r.left(), r.top(), r.right() + 1, r.bottom() + 1], float), float(s)))
        else:
            if img.ndim == 2:
                img = np.repeat(img[:, :, None], 3, axis=2)
            for d in self._cnn(img, int(upsample)):
                r = d.rect
                w = r.right() + 1 - r.left()
                cx = (r.left() + r.right() + 1) / 2 + _MMOD_TO_HOG[0] * w
                cy = (r.top() + r.bottom() + 1) / 2 + _MMOD_TO_HOG[1] * w
                half = 0.5 * _MMOD_TO_HOG[2] * w
                out.append((np.array([cx - half, cy - half, cx + half, cy + half]), float(d.confidence)))
        out.sort(key=lambda t: -t[1])
        return out

    def predict(self, image: np.ndarray, box: Box) -> np.ndarray:
        """68 landmarks (float [68, 2], x/y pixels) inside ``box``.

        Runs on a contiguous grey crop around the box (cheap even on 4K frames).
        """
        h, w = image.shape[:2]
        x0, y0, x1, y1 = _padded_region(box, image.shape, 0.5)
        if x1 - x0 < 8 or y1 - y0 < 8:
            x0, y0, x1, y1 = 0, 0, w, h
        crop = to_gray(image[y0:y1, x0:x1])
        rect = self._dlib.rectangle(int(round(box[0] - x0)), int(round(box[1] - y0)),
                                    int(round(box[2] - x0)) - 1, int(round(box[3] - y0)) - 1)
        shape = self._predictor(crop, rect)
        lm = np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)
        lm += (x0, y0)
        return lm


# File names of the FAN weights that face-alignment looks for in torch.hub's checkpoint folder.
_FAN_WEIGHT_PREFIX = "2DFAN4"


class FanLandmarks:
    """Landmarks from the optional ``face-alignment`` package (FAN), on boxes detected by dlib.

    Needs the package and its 2D-FAN weights in ``$TORCH_HOME/hub/checkpoints`` (default
    ``~/.cache/torch/hub/checkpoints``); checks both up front and never triggers a download.
    """

    def __init__(self, device: str = "cpu", detector: str = "hog"):
        import inspect

        try:
            import face_alignment
            import face_alignment.api as fa_api
        except ImportError:
            raise SvgenError(
                "--landmarks face-alignment needs the optional package 'face-alignment', which is not "
                "installed: pip install face-alignment (or svgen[face-alignment]), then put its 2D-FAN "
                "weights (e.g. 2DFAN4-cd938726ad.zip or 2DFAN4-11f355bf06.pth.tar from "
                "https://www.adrianbulat.com/downloads/python-fan/) into "
                f"{_hub_checkpoint_dir()}; svgen never downloads weights") from None
        wanted = _fan_weight_names(fa_api)
        folder = _hub_checkpoint_dir()
        present = {p.name for p in folder.glob(f"{_FAN_WEIGHT_PREFIX}*")} if folder.is_dir() else set()
        if not (present & wanted if wanted else present):
            names = ", ".join(sorted(wanted)) or f"{_FAN_WEIGHT_PREFIX}*"
            raise SvgenError(f"face-alignment weights not found: put {names} into {folder} "
                             "(set TORCH_HOME to use another folder); svgen never downloads weights")
        types = face_alignment.LandmarksType
        kind = getattr(types, "TWO_D", None) or getattr(types, "_2D")  # renamed after v1.3.4
        kwargs = {"device": device, "flip_input": False, "face_detector": "folder"}
        params = inspect.signature(face_alignment.FaceAlignment).parameters
        if "compile" in params:
            kwargs["compile"] = False
        try:
            self._fa = face_alignment.FaceAlignment(kind, **{k: v for k, v in kwargs.items() if k in params})
        except Exception as exc:  # noqa: BLE001 - third-party failures become one line
            raise SvgenError(f"cannot initialise face-alignment ({type(exc).__name__}: {exc})") from None
        self._dlib = DlibLandmarks(detector)

    def detect(self, image: np.ndarray, upsample: int = 0) -> list[tuple[Box, float]]:
        return self._dlib.detect(image, upsample)

    def predict(self, image: np.ndarray, box: Box) -> np.ndarray:
        rgb = image if image.ndim == 3 else np.repeat(image[:, :, None], 3, axis=2)
        res = self._fa.get_landmarks_from_image(rgb, detected_faces=[np.asarray(box, float)])
        if not res:  # FAN found nothing in the box: fall back to dlib's predictor
            return self._dlib.predict(image, box)
        return np.asarray(res[0], dtype=np.float64)[:, :2]


def _hub_checkpoint_dir() -> Path:
    try:
        import torch

        return Path(torch.hub.get_dir()) / "checkpoints"
    except Exception:  # noqa: BLE001
        return Path(os.path.expanduser("~/.cache/torch/hub/checkpoints"))


def _fan_weight_names(module) -> set[str]:
    """Basenames of the 2D-FAN weight URLs the installed face-alignment version uses."""
    names = set()

    def visit(obj) -> None:
        if isinstance(obj, dict):
            for v in obj.values():
                visit(v)
        elif isinstance(obj, str) and "2DFAN" in obj and "/" in obj:
            names.add(obj.rsplit("/", 1)[-1])

    for value in vars(module).values():  # e.g. default_model_urls / models_urls (version-dependent)
        if isinstance(value, dict):
            visit(value)
    return names


def make_backend(name: str = "dlib", detector: str = "hog", device: str = "cpu") -> LandmarkBackend:
    """Landmark backend by CLI name: ``dlib`` or ``face-alignment``."""
    if name == "dlib":
        return DlibLandmarks(detector)
    if name in ("face-alignment", "fan"):
        return FanLandmarks(device=device, detector=detector)
    raise SvgenError(f"unknown landmark backend {name!r} (use dlib, face-alignment or none)")


@dataclass
class TrackerConfig:
    """How :class:`FaceTracker` trades speed for robustness."""

    detect_every: int = 5       # local re-detection around the track every k frames
    max_detect_every: int = 20  # the interval doubles up to this while re-detections confirm the track
    confirm_iou: float = 0.75   # a re-detection confirms the track if it overlaps the tracked box this much
    detect_size: int = 800      # long side of the downscaled copy for full-frame detection
    roi_face_px: int = 120      # face size the local re-detection crop is scaled to
    min_iou: float = 0.3        # a detection continues the track if it overlaps this much
    forget_after: int = 25      # frames without the face after which any face may be picked
    min_similarity: float = 0.7  # face-patch correlation with the previous frame below which a
    #                              tracked frame is verified by a detection (cuts, occlusions)


class FaceTracker:
    """Per-frame landmarks that follow one person through a video.

    Call with consecutive frames; returns float [68, 2] or ``None`` where the face is not found.
    The largest face is chosen at the start (or after the track was forgotten); afterwards only a
    face that overlaps the last known position continues the track.
    """

    def __init__(self, backend: LandmarkBackend, config: Optional[TrackerConfig] = None):
        self.backend = backend
        self.cfg = config or TrackerConfig()
        self.landmarks: Optional[np.ndarray] = None   # last landmarks (None while lost)
        self._patch: Optional[np.ndarray] = None       # normalised 24x24 grey face patch of the last frame
        self.last_box: Optional[Box] = None            # last box of the followed face
        self.lost_for = 0
        self.since_detect = 0
        self.detect_every = self.cfg.detect_every     # current re-detection interval (adaptive)
        self.stats = {"frames": 0, "full_detections": 0, "local_detections": 0, "found": 0}

    # -- detection helpers -----------------------------------------------------------------------
    def _detect_full(self, frame: np.ndarray) -> list[tuple[Box, float]]:
        """Full-frame detection on a downscaled grey copy; small frames are upsampled once."""
        self.stats["full_detections"] += 1
        h, w = frame.shape[:2]
        long_side = max(h, w)
        factor = max(1, int(np.ceil(long_side / self.cfg.detect_size)))
        img = Image.fromarray(np.ascontiguousarray(frame))
        if factor > 1:
            img = img.reduce(factor)
        gray = np.asarray(img.convert("L"))
        upsample = 1 if long_side / factor < 480 else 0
        faces = self.backend.detect(gray, upsample)
        return [(box * factor, s) for box, s in faces]

    def _detect_local(self, frame: np.ndarray, box: Box) -> list[tuple[Box, float]]:
        """Detection in a crop of twice the tracked box, scaled so the face is ~roi_face_px."""
        self.stats["local_detections"] += 1
        h, w = frame.shape[:2]
        side = box[2] - box[0]
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        x0, y0 = int(max(0, cx - side)), int(max(0, cy - side))
        x1, y1 = int(min(w, cx + side)), int(min(h, cy + side))
        if x1 - x0 < 16 or y1 - y0 < 16:
            return []
        crop = Image.fromarray(np.ascontiguousarray(frame[y0:y1, x0:x1])).convert("L")
        scale = float(np.clip(self.cfg.roi_face_px / max(side, 1.0), 0.25, 2.0))
        if abs(scale - 1.0) > 0.05:
            new_size = (max(1, int(round(crop.width * scale))), max(1, int(round(crop.height * scale))))
            crop = crop.resize(new_size, Image.BILINEAR)
        faces = self.backend.detect(np.asarray(crop), 0)
        return [(b / scale + (x0, y0, x0, y0), s) for b, s in faces]

    def _pick(self, faces: list[tuple[Box, float]], reference: Optional[Box]) -> Optional[Box]:
        if not faces:
            return None
        if reference is None:
            return max(faces, key=lambda f: _box_area(f[0]))[0]
        best = max(faces, key=lambda f: box_iou(f[0], reference))
        return best[0] if box_iou(best[0], reference) >= self.cfg.min_iou else None

    # -- main entry ------------------------------------------------------------------------------
    def __call__(self, frame: np.ndarray) -> Optional[np.ndarray]:
        self.stats["frames"] += 1
        if self.lost_for > self.cfg.forget_after:
            self.last_box = None  # the person is gone: any (largest) face may start a new track
        tracked = self.last_box if self.landmarks is not None else None  # = box_from_landmarks(landmarks)
        scheduled = True  # whether a detection below is the periodic one (not a failed check)
        if tracked is not None and self.since_detect + 1 < self.detect_every:
            scheduled = False
            # one grey crop (the region the predictor reads) serves the landmarks and the patch
            view, off = self._view(frame, tracked)
            lm = self.backend.predict(view, tracked - np.tile(off, 2)) + off
            if np.all(np.isfinite(lm)) and self._plausible(lm, tracked):
                patch = _face_patch(view, box_from_landmarks(lm) - np.tile(off, 2))
                if (patch is not None and self._patch is not None
                        and float((patch * self._patch).mean()) >= self.cfg.min_similarity):
                    self.since_detect += 1
                    return self._accept(lm, patch)
            # the tracked box drifted or the face changed abruptly: verify with a detection
        reference = tracked if tracked is not None else self.last_box
        box: Optional[Box] = None
        if reference is not None:
            box = self._pick(self._detect_local(frame, reference), reference)
        confirmed = (scheduled and box is not None and tracked is not None
                     and box_iou(box, reference) >= self.cfg.confirm_iou)
        self.detect_every = (min(2 * self.detect_every, max(self.cfg.max_detect_every, self.cfg.detect_every))
                             if confirmed else self.cfg.detect_every)
        if box is None:
            box = self._pick(self._detect_full(frame), reference)
        self.since_detect = 0
        if box is None:
            self._lose()
            return None
        lm = self.backend.predict(frame, box)
        if not np.all(np.isfinite(lm)):
            self._lose()
            return None
        return self._accept(lm, _face_patch(frame, box_from_landmarks(lm)))

    def _view(self, frame: np.ndarray, box: Box) -> tuple[np.ndarray, np.ndarray]:
        """(image, its offset in the frame) for predicting inside ``box``: a grey crop of the box
        plus half its size on each side for backends that read grey, else the frame itself."""
        if not getattr(self.backend, "takes_gray", False):
            return frame, np.zeros(2)
        x0, y0, x1, y1 = _padded_region(box, frame.shape, 0.5)
        if x1 - x0 < 8 or y1 - y0 < 8:
            return frame, np.zeros(2)
        return to_gray(frame[y0:y1, x0:x1]), np.array([x0, y0], dtype=np.float64)

    def _accept(self, lm: np.ndarray, patch: Optional[np.ndarray]) -> np.ndarray:
        self.landmarks = lm
        self._patch = patch
        self.last_box = box_from_landmarks(lm)
        self.lost_for = 0
        self.stats["found"] += 1
        return lm

    def _plausible(self, lm: np.ndarray, prev: Box) -> bool:
        """Whether landmarks predicted from the tracked box ``prev`` still look like that face."""
        new = box_from_landmarks(lm)
        ratio = (new[2] - new[0]) / max(prev[2] - prev[0], 1e-6)
        return 0.75 < ratio < 1.33 and box_iou(prev, new) > 0.4

    def _lose(self) -> None:
        self.landmarks = None
        self.lost_for += 1
        self.since_detect = 0
        self.detect_every = self.cfg.detect_every


def _padded_region(box: Box, shape: tuple, margin: float) -> tuple[int, int, int, int]:
    """Integer (x0, y0, x1, y1) of ``box`` grown by ``margin`` x its size per side, inside the image."""
    h, w = shape[:2]
    bw, bh = box[2] - box[0], box[3] - box[1]
    return (int(max(0, np.floor(box[0] - margin * bw))), int(max(0, np.floor(box[1] - margin * bh))),
            int(min(w, np.ceil(box[2] + margin * bw))), int(min(h, np.ceil(box[3] + margin * bh))))


def _face_patch(frame: np.ndarray, box: Box, n: int = 24) -> Optional[np.ndarray]:
    """Zero-mean, unit-variance n x n grey patch of ``box`` (None if flat or outside the frame)."""
    h, w = frame.shape[:2]
    x0, y0 = int(max(0, box[0])), int(max(0, box[1]))
    x1, y1 = int(min(w, box[2])), int(min(h, box[3]))
    if x1 - x0 < 4 or y1 - y0 < 4:
        return None
    crop = Image.fromarray(np.ascontiguousarray(frame[y0:y1, x0:x1]))
    t = np.asarray(crop.convert("L").resize((n, n), Image.BILINEAR), dtype=np.float32)
    t = t - t.mean()
    sd = float(np.sqrt((t * t).mean()))
    return t / sd if sd > 2.0 else None


def detect_photo_faces(backend: LandmarkBackend, image: np.ndarray,
                       max_side: int = 1600) -> list[tuple[Box, float]]:
    """All faces in a still photo.

    Huge photos are searched on a downscaled copy; if nothing is found, the search is repeated
    with the image upsampled once (finds faces down to ~40 px).
    """
    h, w = image.shape[:2]
    factor = max(1, int(np.ceil(max(h, w) / max_side)))
    img = Image.fromarray(np.ascontiguousarray(image))
    if factor > 1:
        img = img.reduce(factor)
    gray = np.asarray(img.convert("L"))
    faces = backend.detect(gray, 0)
    if not faces and max(gray.shape) <= 2048:
        faces = backend.detect(gray, 1)
    return [(box * factor, s) for box, s in faces]
