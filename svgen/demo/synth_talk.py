"""A reproducible talking-head clip made from one real photograph.

The 68 dlib landmarks of the photo are animated with known signals — mouth opening and closing at a
syllable-like rate, blinks, a small head turn (inner face shifted against the jaw line) and roll —
and the photo is warped piecewise-affinely onto them. The per-frame signals are the ground truth
(``mouth_open`` in particular), so later stages can be checked against motion we know.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from svgen.utils.errors import PathLike, SvgenError

# 68-point scheme (0-based): jaw 0-16, brows 17-26, nose 27-35, eyes 36-47, outer lips 48-59,
# inner lips 60-67.
JAW_LOWER = np.arange(4, 13)
LOWER_LIP = np.array([55, 56, 57, 58, 59, 65, 66, 67])
UPPER_LIDS = {37: 41, 38: 40, 43: 47, 44: 46}  # upper-lid point -> the lower-lid point it closes onto
INNER_FACE = np.arange(17, 68)


@dataclass
class TalkSignals:
    """Per-frame ground truth of the synthetic clip (each a list of floats)."""

    fps: float
    mouth_open: list
    blink: list
    yaw: list
    roll_deg: list


def default_photo() -> np.ndarray:
    """scikit-image's ``astronaut`` (a real photograph shipped with the package), RGB uint8."""
    from skimage import data

    return np.ascontiguousarray(data.astronaut())


def default_identity_photo() -> Path:
    """matplotlib's ``grace_hopper.jpg`` (a real portrait shipped with matplotlib): a new identity."""
    import matplotlib

    p = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    if not p.is_file():
        raise SvgenError("matplotlib's sample photo is missing; pass PHOTO=your_photo.jpg", p)
    return p


def make_signals(num_frames: int, fps: float, seed: int = 0) -> TalkSignals:
    """Speech-like mouth opening (~4 syllables/s with phrase pauses), blinks every 2-4 s,
    slow small head yaw and roll."""
    rng = np.random.default_rng(seed)
    t = np.arange(num_frames) / fps
    syll = 0.5 - 0.5 * np.cos(2 * np.pi * (3.2 + 0.8 * rng.random()) * t + rng.random() * 6.28)
    phrase = np.clip(np.sin(2 * np.pi * t / (2.6 + rng.random()) + rng.random() * 6.28) + 0.35, 0, 1)
    mouth = np.clip(syll * phrase * (0.75 + 0.25 * rng.random(num_frames)), 0, 1)
    blink = np.zeros(num_frames)
    k = rng.uniform(0.5, 1.5)
    while k < t[-1] if num_frames else False:
        centre = k
        blink = np.maximum(blink, np.clip(1 - np.abs(t - centre) / 0.09, 0, 1))
        k += rng.uniform(2.0, 4.0)
    yaw = 0.6 * np.sin(2 * np.pi * t / 4.7 + rng.random() * 6.28)
    roll = 2.5 * np.sin(2 * np.pi * t / 6.1 + rng.random() * 6.28)
    return TalkSignals(fps=float(fps), mouth_open=mouth.round(4).tolist(), blink=blink.round(4).tolist(),
                       yaw=yaw.round(4).tolist(), roll_deg=roll.round(4).tolist())


def animate_landmarks(base: np.ndarray, s: TalkSignals, i: int) -> np.ndarray:
    """Landmarks of frame ``i``: base landmarks [68, 2] moved by the frame's signals."""
    pts = base.astype(np.float64).copy()
    face_h = np.linalg.norm(base[8] - base[27])  # chin to nose bridge
    eye_w = np.linalg.norm(base[45] - base[36])
    # mouth: lower lip and (less) the lower jaw move down
    open_px = 0.16 * face_h * s.mouth_open[i]
    pts[LOWER_LIP, 1] += open_px
    jaw_w = 1.0 - np.abs(JAW_LOWER - 8) / 6.0
    pts[JAW_LOWER, 1] += 0.55 * open_px * np.clip(jaw_w, 0.1, 1)
    # blink: upper lids close onto the lower lids
    for up, low in UPPER_LIDS.items():
        pts[up] = pts[up] + s.blink[i] * 0.9 * (base[low] - base[up])
    # head turn: the inner face shifts sideways against the jaw outline (nose most)
    shift = s.yaw[i] * 0.08 * eye_w
    pts[INNER_FACE, 0] += shift
    pts[27:36, 0] += 0.5 * shift
    # roll about the face centre
    c = base[27:48].mean(axis=0)
    a = np.deg2rad(s.roll_deg[i])
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return (pts - c) @ rot.T + c


def _anchor_points(base: np.ndarray, shape: tuple) -> np.ndarray:
    """Fixed points: the image border and a ring well outside the face, so only the face moves."""
    h, w = shape[:2]
    border = [(x, y) for x in np.linspace(0, w - 1, 6) for y in (0, h - 1)]
    border += [(x, y) for y in np.linspace(0, h - 1, 6)[1:-1] for x in (0, w - 1)]
    c = base.mean(axis=0)
    r = 1.45 * np.max(np.linalg.norm(base - c, axis=1))
    ring = [(c[0] + r * np.cos(a), c[1] + r * np.sin(a)) for a in np.linspace(0, 2 * np.pi, 16, endpoint=False)]
    pts = np.array(border + ring, dtype=np.float64)
    pts[:, 0] = pts[:, 0].clip(0, w - 1)
    pts[:, 1] = pts[:, 1].clip(0, h - 1)
    return pts


def largest_face_landmarks(img: np.ndarray) -> Optional[np.ndarray]:
    """68 dlib landmarks [68, 2] of the largest face in ``img`` (None without a face)."""
    from svgen.preprocessing.landmarks import detect_photo_faces, make_backend

    backend = make_backend("dlib")
    faces = detect_photo_faces(backend, img)
    if not faces:
        return None
    box = max(faces, key=lambda f: (f[0][2] - f[0][0]) * (f[0][3] - f[0][1]))[0]
    return backend.predict(img, box)


def frame_photo(img: np.ndarray, size: int, landmarks_fn) -> tuple[np.ndarray, np.ndarray]:
    """Crop ``img`` to a square talking-head framing around its face and resize it to ``size``.

    Returns the framed photo and its 68 landmarks in the framed coordinates.
    """
    from PIL import Image

    pts = landmarks_fn(img)
    if pts is None:
        raise SvgenError("no face found in the demo photo")
    c = pts.mean(axis=0)
    side = min(2.8 * (pts[:, 0].max() - pts[:, 0].min()), *img.shape[:2])
    # keep the window inside the photo (no black borders)
    x0 = float(np.clip(c[0] - side / 2, 0, img.shape[1] - side))
    y0 = float(np.clip(c[1] - side / 2, 0, img.shape[0] - side))
    crop = Image.fromarray(img).transform((size, size), Image.EXTENT, (x0, y0, x0 + side, y0 + side),
                                          Image.BICUBIC)
    framed = np.asarray(crop)
    return framed, (pts - [x0, y0]) * (size / side)


def synthesize_talking_head(out: PathLike, num_frames: int = 125, fps: float = 25.0, size: int = 256,
                            seed: int = 0, photo: Optional[np.ndarray] = None) -> TalkSignals:
    """Write an mp4 talking-head clip of ``num_frames`` frames and ``<out>.json`` with its signals.

    Only the region inside the fixed anchor ring is re-warped each frame; the rest is the photo.
    """
    from matplotlib.tri import LinearTriInterpolator, Triangulation
    from scipy.ndimage import map_coordinates

    from svgen.preprocessing.video_io import VideoWriter
    from svgen.utils.io import write_json

    img, base = frame_photo(default_photo() if photo is None else photo, size, largest_face_landmarks)
    anchors = _anchor_points(base, img.shape)
    # the sub-window that can change: bounding box of the anchor ring (plus a margin)
    x0, y0 = np.floor(anchors[16:].min(axis=0)).astype(int).clip(0)
    x1, y1 = np.ceil(anchors[16:].max(axis=0)).astype(int) + 1
    x1, y1 = min(x1, img.shape[1]), min(y1, img.shape[0])
    src = np.concatenate([base, anchors])
    signals = make_signals(num_frames, fps, seed)
    imgf = img.astype(np.float64) / 255.0
    yy, xx = np.mgrid[y0:y1, x0:x1]
    grid = np.stack([xx.ravel(), yy.ravel()], axis=1).astype(np.float64)
    out = Path(out)
    with VideoWriter(out, fps=fps, crf=16) as writer:
        for i in range(num_frames):
            dst = np.concatenate([animate_landmarks(base, signals, i), anchors])
            # piecewise-affine map from output (animated) to photo coordinates = linear
            # interpolation of the photo positions over the Delaunay triangles of the animated points
            tri = Triangulation(dst[:, 0], dst[:, 1])
            coords = np.stack([np.ma.filled(LinearTriInterpolator(tri, src[:, k])(grid[:, 0], grid[:, 1]),
                                            np.nan) for k in range(2)], axis=1)
            inside = np.isfinite(coords).all(axis=1)
            coords[~inside] = grid[~inside]
            patch = np.stack([map_coordinates(imgf[..., ch], [coords[:, 1], coords[:, 0]], order=1,
                                              mode="nearest") for ch in range(3)], axis=1)
            frame = imgf.copy()
            frame[y0:y1, x0:x1] = patch.reshape(y1 - y0, x1 - x0, 3)
            writer.write((frame * 255).round().clip(0, 255).astype(np.uint8))
    write_json(out.with_suffix(".json"), asdict(signals))
    return signals


def load_signals(path: PathLike) -> TalkSignals:
    return TalkSignals(**json.loads(Path(path).read_text()))
