"""PTI's mouth term (#17): targets of the photo with its mouth opened, along the motion's mouth direction.

Pivotal tuning fits a copy of the generator to one photo. Around the pivot the tuned generator then draws
that photo's mouth (closed in most portraits) wherever the motion moves the codes: on the demo (64 px,
single-actor generator) it opened the mouth -0.14..0.33x as much per unit of the motion's mouth direction
as the original generator does on the training clip (`benchmarks/mouth_chain.py`, "mouth response"), so a
held-out photo's mouth barely moved. Neither moving the pivot, other layers, partial tuning nor a term
asking for the original's image change brought it back (README, #17 section): the original generator's
change is the training actor's, a blurred mouth at 64 px, and it does not open someone else's lips.

This term gives the tuned generator the photo's *own* mouth opened:

1. :func:`fit_mouth_direction`: the direction in the motion's W+ codes along which the original generator
   opens the mouth -- a least-squares fit of dlib's mouth aspect ratio (MAR) of the rendered codes on their
   leading principal components, kept to the layers the animation moves.
2. :func:`open_mouth`: the aligned photo with its lower lip and jaw moved down by a number of pixels (fading
   out toward the chin and past the mouth corners) and the gap between the lips filled with the dark of a
   mouth cavity (a quarter of the lower lip's colour); a negative opening closes the lips up to their gap.
3. :func:`mouth_targets`: for steps ``s`` of the codes' spread along the direction, the offset
   ``s * spread * direction`` and the photo opened by ``s * gain * std(MAR) * inner mouth width`` pixels.
   :func:`svgen.inversion.pti.pivotal_tuning` then asks ``G_t(w_p + offset) = target`` (pixel L2 + MS-SSIM,
   and the error inside the mouth region once more). The steps are +-0.75 and +-1.5 spreads, widened by
   :func:`mouth_steps` to where the animation's own codes go (up to 3 spreads): a driving video that opens
   the mouth wider than the training actor (MEAD W011 on the demo: 30 of 103 frames at the 3-spread limit)
   moved the tuned mouth 0.49-0.51x as much as the driving clip with targets at 1.5 spreads (three PTI
   seeds), 0.78-0.88x with the opening steps widened to 1.5 / 3.

The same direction carries a driving video's mouth (``svgen animate --driving``): the demo's encoder, trained on
one actor, keeps little of another person's mouth (a MEAD clip's codes moved the rendered mouth 0.06x as much
as the clip), so :func:`retarget_mouth` sets each driving code's coordinate along the direction from dlib's
mouth aspect ratio of the driving frame itself, through the fit's slope (``mar_per_unit``).

``gain`` (default 3) is the opening per spread over the codes' own MAR spread; at 64 px the tuned generator
follows part of what the targets ask. Measured on the demo folder (`benchmarks/mouth_chain.py --models gru`:
3 GRU motions of 150 frames through animate's defaults; demo photo / 000031.jpg / jackson.jpg), without ->
with the term: mouth response at the pivot 0.27 / 0.29 / 0.09x -> 0.70 / 0.96 / 0.65x; the animations' mouth
spread 0.69 / 0.40 / 0.45x -> 0.67 / 0.56 / 0.56x of the clip's; a face in 100 / 100 / 98 % -> 100 / 98 / 100 %
of the frames.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from svgen.utils.errors import SvgenError

#: steps along the mouth direction, in spreads of the codes along it, at which the targets are made
MOUTH_STEPS = (-1.5, -0.75, 0.75, 1.5)
#: the farthest step, in spreads, when the steps are widened to the animation's codes (:func:`mouth_steps`)
STEP_LIMIT = 3.0
#: the targets' opening per spread, in units of the codes' own MAR spread (see the module doc)
OPENING_GAIN = 3.0
#: the cavity's colour: this fraction of the lower lip's
CAVITY_SHADE = 0.25

_INNER = (60, 64)            # inner mouth corners (dlib 68-point indices)
_OUTER = (48, 54)            # outer mouth corners
_LOWER_LIP, _CHIN = 57, 8
_INNER_GAPS = ((61, 67), (62, 66), (63, 65))


@dataclass
class MouthDirection:
    """Where the motion's codes open the mouth: ``direction`` [num_ws, w_dim] (unit norm, zero off the moving
    layers), the codes' ``spread`` (std) along it, their MAR's std, the fit's R^2 over ``frames`` faces and
    ``mar_per_unit``, the slope of MAR on the codes' coordinate along the direction (NaN: not measured)."""

    direction: np.ndarray
    spread: float
    mar_std: float
    r2: float
    frames: int
    mar_per_unit: float = float("nan")

    def summary(self) -> dict:
        return {"spread": round(self.spread, 4), "mar_std": round(self.mar_std, 4), "r2": round(self.r2, 3),
                "frames": self.frames, "mar_per_unit": round(self.mar_per_unit, 6)}


def fit_mouth_direction(codes: np.ndarray, mar: np.ndarray, layers: Optional[Sequence[int]] = None,
                        components: int = 16) -> MouthDirection:
    """Least squares of the mouth aspect ratio ``mar`` [N] (NaN: no face) on the leading ``components``
    principal components of ``codes`` [N, num_ws, w_dim]; the direction is then kept to ``layers`` (None:
    all) and scaled to unit norm."""
    codes = np.asarray(codes, np.float64)
    mar = np.asarray(mar, np.float64)
    ok = np.isfinite(mar)
    if ok.sum() < 8:
        raise SvgenError(f"the mouth direction needs at least 8 rendered frames with a face, found {int(ok.sum())}")
    X = codes[ok].reshape(int(ok.sum()), -1)
    X = X - X.mean(0)
    y = mar[ok] - mar[ok].mean()
    U, S, Vt = np.linalg.svd(X, full_matrices=False)
    k = min(int(components), int((S > 1e-8 * S[0]).sum()))
    coef = (U[:, :k].T @ y) / S[:k]
    fit = U[:, :k] @ (U[:, :k].T @ y)
    r2 = float(1 - ((y - fit) ** 2).sum() / max((y ** 2).sum(), 1e-12))
    d = (coef @ Vt[:k]).reshape(codes.shape[1:])
    if layers is not None:
        keep = np.zeros(codes.shape[1], bool)
        keep[list(layers)] = True
        d[~keep] = 0.0
    norm = np.linalg.norm(d)
    if not norm > 0:
        raise SvgenError("the motion's codes do not move the mouth on the layers the animation moves")
    d /= norm
    p = X @ d.reshape(-1)                                     # the codes' coordinate along the direction
    return MouthDirection(direction=d.astype(np.float32), spread=float(p.std()), mar_std=float(mar[ok].std()),
                          r2=r2, frames=int(ok.sum()), mar_per_unit=float((p @ y) / max(float(p @ p), 1e-12)))


def retarget_mouth(traj: np.ndarray, first: np.ndarray, mar: np.ndarray, mar_ref: float,
                   mouth: MouthDirection, limit: float = 3.0) -> tuple[np.ndarray, int]:
    """A driving trajectory with the mouth of the driving *frames*: each code's coordinate along the mouth
    direction, measured from the trajectory's first code ``first`` [num_ws, w_dim] (the photo's pivot under
    the offset trick), becomes ``(mar - mar_ref) / mouth.mar_per_unit`` (``mar`` [n]: dlib's mouth aspect
    ratio of the driving frames; ``mar_ref`` the driving MAR that the photo's own mouth stands for), clipped
    to ``limit`` spreads of the codes along it. ``traj`` [n, num_ws, w_dim]; everything orthogonal to the
    direction is kept. Returns the codes and the number of clipped frames. Chunks of one trajectory give the
    same codes as the whole (nothing is carried over)."""
    d = np.asarray(mouth.direction, np.float64)
    x = np.asarray(traj, np.float64)
    now = ((x - np.asarray(first, np.float64)[None]) * d[None]).sum(axis=(1, 2))          # [n]
    want, clipped = mouth_coordinates(mar, mar_ref, mouth, limit)
    return (x + (want - now)[:, None, None] * d[None]).astype(np.float32), clipped


def mouth_coordinates(mar: np.ndarray, mar_ref: float, mouth: MouthDirection,
                      limit: float = 3.0) -> tuple[np.ndarray, int]:
    """:func:`retarget_mouth`'s coordinates [n] along the direction for the driving MARs ``mar`` [n], and how
    many were clipped to ``limit`` spreads."""
    if not (np.isfinite(mouth.mar_per_unit) and mouth.mar_per_unit > 0):
        raise SvgenError(f"the mouth direction does not open the mouth (MAR per unit {mouth.mar_per_unit:.3g})")
    want = (np.asarray(mar, np.float64) - float(mar_ref)) / mouth.mar_per_unit
    bound = float(limit) * mouth.spread
    return np.clip(want, -bound, bound), int((np.abs(want) > bound).sum())


def _sample(img: torch.Tensor, xy: np.ndarray) -> torch.Tensor:
    """Bilinear samples of ``img`` [1, C, R, R] at pixel positions ``xy`` [R, R, 2] (x, y; pixel i at i)."""
    r = img.shape[-1]
    grid = torch.from_numpy((xy + 0.5) / r * 2 - 1).to(img)[None]
    return F.grid_sample(img, grid, mode="bilinear", padding_mode="border", align_corners=False)


def inner_gap(lm: np.ndarray) -> float:
    """The mean vertical gap (pixels) between the inner lips of 68-point landmarks [68, 2]."""
    return float(np.mean([lm[b, 1] - lm[a, 1] for a, b in _INNER_GAPS]))


def open_mouth(photo: torch.Tensor, lm: np.ndarray, opening: float) -> torch.Tensor:
    """The aligned photo [1, 3, R, R] in [-1, 1] with its mouth opened by ``opening`` pixels (see the module
    doc); ``lm``: its 68 dlib landmarks [68, 2] in pixels. Pixels away from the mouth and jaw are unchanged."""
    r = photo.shape[-1]
    lm = np.asarray(lm, np.float64)
    opening = max(float(opening), -max(inner_gap(lm), 0.0))
    y0 = float(lm[60:68, 1].mean())                                   # the line between the lips
    y_lip, y_chin = float(lm[_LOWER_LIP, 1]), float(lm[_CHIN, 1])
    xl, xr = float(lm[_OUTER[0], 0]), float(lm[_OUTER[1], 0])
    xil, xir = float(lm[_INNER[0], 0]), float(lm[_INNER[1], 0])
    t = np.arange(r, dtype=np.float64)
    y, x = np.meshgrid(t, t, indexing="ij")
    below = np.clip(y - y0 + 0.5, 0, 1)                               # below the lips' line
    fade_down = np.where(y <= y_lip, 1.0, np.clip((y_chin - y) / max(y_chin - y_lip, 1.0), 0, 1))
    fade_side = np.clip(1 - (np.maximum(xl - x, 0) + np.maximum(x - xr, 0)) / (0.4 * max(xr - xl, 1.0)), 0, 1)
    shift = opening * below * fade_down * fade_side                   # [R, R] pixels down
    out = _sample(photo, np.stack([x, y - shift], -1))
    if opening > 0:    # the new gap, lens-shaped between the inner corners, gets a mouth cavity's dark
        half = 0.5 * (xir - xil) + 0.5
        profile = np.clip(1 - ((x - 0.5 * (xil + xir)) / half) ** 2, 0, 1)
        cover = np.clip(np.minimum(y + 0.5, y0 + opening * profile) - np.maximum(y - 0.5, y0), 0, 1)
        row = int(np.clip(round(y_lip) - 1, 0, r - 1))
        cols = slice(int(np.clip(round(xl), 0, r - 1)), int(np.clip(round(xr), 1, r)))
        lip = photo[0, :, row, cols].mean(-1).view(1, 3, 1, 1)
        dark = (lip + 1) * CAVITY_SHADE - 1
        a = torch.from_numpy(cover).to(photo)
        out = out * (1 - a) + dark * a
    return out.clamp(-1, 1)


def mouth_steps(offsets: Optional[np.ndarray], mouth: MouthDirection, base: Sequence[float] = MOUTH_STEPS,
                limit: float = STEP_LIMIT, tail: float = 0.05) -> tuple[float, ...]:
    """The targets' steps (spreads along the direction), widened on the opening side to where the animation's
    codes go: the outer opening step reaches the ``1 - tail`` quantile of the coordinates of ``offsets``
    [N, num_ws, w_dim] (the animation's offsets from the pivot; None: ``base``) when that lies beyond
    ``base``'s, at most ``limit`` spreads, and the inner one is half of it. A driving video that opens the
    mouth wider than the training actor sends its codes up to 3 spreads along the direction
    (:func:`retarget_mouth`), where targets at 1.5 left the tuned generator to guess. The closing side stays:
    its targets close the lips no further than their gap, so a farther step only spreads the same closed
    mouth over more of the codes (StyleInV's motions reach -2 to -3 spreads; widened there too, the mouths of
    three held-out photos moved 0.50 / 0.90 / 0.82x as much as the clip's instead of 0.62 / 1.15 / 0.85x)."""
    steps = tuple(float(x) for x in base)
    if offsets is None or not len(offsets):
        return steps
    d = np.asarray(mouth.direction, np.float64).reshape(-1)
    c = np.asarray(offsets, np.float64).reshape(len(offsets), -1) @ d / max(float(mouth.spread), 1e-12)
    hi = min(float(np.quantile(c, 1 - tail)), float(limit))
    if hi <= max(steps):
        return steps
    return tuple(x for x in steps if x < 0) + (hi / 2, hi)     # the opening steps: half way, and all the way


def mouth_targets(photo: torch.Tensor, lm: np.ndarray, mouth: MouthDirection,
                  steps: Sequence[float] = MOUTH_STEPS, gain: float = OPENING_GAIN
                  ) -> tuple[torch.Tensor, torch.Tensor, list[float]]:
    """Offsets [K, num_ws, w_dim] and targets [K, 3, R, R] for :func:`pivotal_tuning`'s mouth term, and the
    opening of each target in pixels."""
    width = float(np.linalg.norm(np.asarray(lm)[_INNER[1]] - np.asarray(lm)[_INNER[0]]))
    openings = [float(s) * gain * mouth.mar_std * width for s in steps]
    targets = torch.cat([open_mouth(photo, lm, o) for o in openings])
    offsets = torch.from_numpy(np.stack([float(s) * mouth.spread * mouth.direction for s in steps])).float()
    return offsets, targets, openings


def photo_landmarks(photo: np.ndarray, backend: Any = None) -> Optional[np.ndarray]:
    """dlib's 68 landmarks [68, 2] of an aligned photo (uint8 [R, R, 3]), or None when no face is found."""
    from svgen.metrics.landmark_motion import track_landmarks

    lm = track_landmarks(np.asarray(photo)[None], backend)[0]
    return None if not np.isfinite(lm).all() else lm


def rendered_mar(G: Any, codes: np.ndarray, backend: Any = None) -> np.ndarray:
    """dlib's mouth aspect ratio [N] (NaN: no face) of the frames ``G`` renders from ``codes`` [N, num_ws, w_dim]."""
    from svgen.metrics.landmark_motion import frames_features
    from svgen.stage1_image_gan.render import render_frames

    frames = render_frames(G, np.asarray(codes, np.float32)[None], batch=16)
    return frames_features(frames, 25.0, backend=backend).values[:, 0]   # (the frame rate plays no part)
