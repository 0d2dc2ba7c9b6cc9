"""FFHQ-style face crops: the oriented crop square from landmarks, the warp, and its inverse.

Two ways to place the crop square (centre ``c``, half-side vector ``x``, ``y`` = ``x`` turned 90°):
- :func:`ffhq_transform` - NVIDIA's FFHQ formulas (eye centres + mouth corners), for still photos;
- :func:`eye_corner_transform` - StyleVideoGAN's video variant from the four eye corners only, so
  that the crop does not move when the mouth opens (the mouth vector is replaced by the average
  eye-to-mouth geometry of real faces, which keeps crops FFHQ-like on average).

A quad is four corners ``[c-x-y, c-x+y, c+x+y, c+x-y]`` (top-left, bottom-left, bottom-right,
top-right; PIL's QUAD order) in source pixel coordinates, pixel centres at integers.
:func:`warp_quad` cuts the quad out as an N x N image with FFHQ's shrink / crop / reflect-pad+blur
steps and supersampling; :func:`crop_to_source`, :func:`source_to_crop` and :func:`paste_back` undo it.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
from PIL import Image, ImageFilter

__all__ = ["ffhq_transform", "eye_corner_transform", "quad_from_transform", "transform_from_quad",
           "ffhq_quad", "eye_corner_quad", "warp_quad", "crop_to_source", "source_to_crop",
           "paste_back", "quad_size", "EYE_TO_MOUTH_RATIO"]

# Mean |eye_to_mouth| / |eye_to_eye| of FFHQ's vectors over real frontal faces (111 dlib faces from
# the project's clips: 1.12 +- 0.08); the eye-corner variant uses it in place of the mouth.
EYE_TO_MOUTH_RATIO = 1.12
# The midpoint of an eye's two corners sits 0.022 |eye_to_eye| below the mean of its six points, and
# the corner-midpoint distance is 0.991 of the six-point one (same measurement).
_CORNER_CENTRE_SHIFT = 0.022
_CORNER_DISTANCE_RATIO = 0.991


def _rot90(v: np.ndarray) -> np.ndarray:
    """flipud(v) * [-1, 1]: v turned by +90 degrees in image coordinates (x right, y down)."""
    return np.array([-v[1], v[0]])


def _ffhq_from_vectors(eye_avg: np.ndarray, eye_to_eye: np.ndarray,
                       eye_to_mouth: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """FFHQ's oriented square from its three auxiliary vectors -> (c, x, y)."""
    x = eye_to_eye - _rot90(eye_to_mouth)                 # average of eye line and mouth-normal
    x = x / np.hypot(*x)
    x = x * max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)  # half side
    y = _rot90(x)                                          # points "down" the face
    c = eye_avg + eye_to_mouth * 0.1
    return c, x, y


def ffhq_transform(lm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(c, x, y) of the FFHQ crop from 68 dlib landmarks [68, 2] (NVlabs ffhq-dataset formulas)."""
    lm = np.asarray(lm, dtype=np.float64)
    eye_left = lm[36:42].mean(axis=0)
    eye_right = lm[42:48].mean(axis=0)
    eye_avg = (eye_left + eye_right) * 0.5
    eye_to_eye = eye_right - eye_left
    mouth_avg = (lm[48] + lm[54]) * 0.5
    eye_to_mouth = mouth_avg - eye_avg
    return _ffhq_from_vectors(eye_avg, eye_to_eye, eye_to_mouth)


def eye_corner_transform(lm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(c, x, y) from the eye corners only (points 36, 39, 42, 45): StyleVideoGAN's video crop.

    The mouth vector becomes ``EYE_TO_MOUTH_RATIO * |eye_to_eye|`` along the eye line's normal, so
    rotation, scale and centre depend on the eyes alone and speech does not move the crop.
    """
    lm = np.asarray(lm, dtype=np.float64)
    eye_left = (lm[36] + lm[39]) * 0.5
    eye_right = (lm[42] + lm[45]) * 0.5
    eye_to_eye = (eye_right - eye_left) / _CORNER_DISTANCE_RATIO
    d = np.hypot(*eye_to_eye)
    normal = _rot90(eye_to_eye) / max(d, 1e-9)           # unit vector from the eyes towards the chin
    eye_avg = (eye_left + eye_right) * 0.5 - _CORNER_CENTRE_SHIFT * d * normal
    eye_to_mouth = EYE_TO_MOUTH_RATIO * d * normal
    return _ffhq_from_vectors(eye_avg, eye_to_eye, eye_to_mouth)


def quad_from_transform(c: np.ndarray, x: np.ndarray, y: Optional[np.ndarray] = None) -> np.ndarray:
    """Quad corners [4, 2]: c-x-y, c-x+y, c+x+y, c+x-y."""
    c = np.asarray(c, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    y = _rot90(x) if y is None else np.asarray(y, dtype=np.float64)
    return np.stack([c - x - y, c - x + y, c + x + y, c + x - y])


def transform_from_quad(quad: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inverse of :func:`quad_from_transform` for a parallelogram quad."""
    q = np.asarray(quad, dtype=np.float64)
    c = q.mean(axis=0)
    x = (q[3] + q[2] - q[0] - q[1]) / 4.0
    y = (q[1] + q[2] - q[0] - q[3]) / 4.0
    return c, x, y


def ffhq_quad(lm: np.ndarray) -> np.ndarray:
    """The FFHQ crop quad [4, 2] of 68 landmarks."""
    return quad_from_transform(*ffhq_transform(lm))


def eye_corner_quad(lm: np.ndarray) -> np.ndarray:
    """The eye-corner (video) crop quad [4, 2] of 68 landmarks."""
    return quad_from_transform(*eye_corner_transform(lm))


def quad_size(quad: np.ndarray) -> float:
    """Side length of the quad (FFHQ's ``qsize`` = 2 |x|)."""
    q = np.asarray(quad, dtype=np.float64)
    return float((np.hypot(*(q[3] - q[0])) + np.hypot(*(q[1] - q[0]))) * 0.5)


# -- warping ------------------------------------------------------------------------------------
def _gaussian_filter(img: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian over the first two axes with half-sample symmetric edges (what
    ``scipy.ndimage.gaussian_filter`` computes with mode "reflect", truncate 4) in plain numpy, so
    the warp never pays for importing scipy.ndimage."""
    r = int(4.0 * sigma + 0.5)
    if r < 1:
        return img.astype(np.float32, copy=True)
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k = (k / k.sum()).astype(np.float32)
    out = img.astype(np.float32, copy=False)
    for axis in (0, 1):
        n = out.shape[axis]
        # symmetric padding may need to reflect more than once for tiny images
        idx = np.arange(-r, n + r)
        idx = np.abs(idx + 0.5) - 0.5
        idx = (np.where((idx // n) % 2 == 1, n - 1 - idx % n, idx % n)).astype(np.intp)
        padded = np.take(out, idx, axis=axis)
        acc = np.zeros_like(out)
        for j, w in enumerate(k):
            acc += w * (padded[j:j + n] if axis == 0 else padded[:, j:j + n])
        out = acc
    return out


def _box_reduction(sigma: float, h: int, w: int) -> Optional[tuple[int, float]]:
    """(f, s) for blurring an h x w image with ``sigma`` on a copy box-reduced by f ~ sigma / 1.5:
    the box adds variance (f^2 - 1) / 12 per axis (in full-size pixels), so the reduced copy is
    blurred by s (in reduced pixels). None where the blur is too small or the image too tiny."""
    f = int(sigma / 1.5)
    if f < 2 or min(h, w) < 8 * f:
        return None
    return f, float(np.sqrt(max(sigma ** 2 - (f * f - 1) / 12.0, 0.25)) / f)


def _gaussian_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of a float32 [H, W, C] image over H and W.

    Large blurs are computed on a box-reduced copy and upsampled bilinearly: the result is a
    heavily low-passed image, so this matches the full-resolution filter closely, much faster.
    """
    h, w = img.shape[:2]
    reduction = _box_reduction(sigma, h, w)
    if reduction is None:
        return _gaussian_filter(img, sigma)
    f, s = reduction
    sh, sw = max(1, h // f), max(1, w // f)
    out = np.empty_like(img)
    for ch in range(img.shape[2]):
        small = Image.fromarray(np.ascontiguousarray(img[:, :, ch]), "F").resize((sw, sh), Image.BOX)
        small = Image.fromarray(_gaussian_filter(np.asarray(small), s), "F")
        out[:, :, ch] = np.asarray(small.resize((w, h), Image.BILINEAR))
    return out


def _pad_amounts(quad: np.ndarray, rw: int, rh: int, border: int) -> tuple[int, int, int, int]:
    """Padding (left, top, right, bottom) that the quad plus ``border`` needs beyond a region of
    rw x rh pixels; all zero while the overshoot stays within the last 4 pixels of the border."""
    p = (int(np.floor(quad[:, 0].min())), int(np.floor(quad[:, 1].min())),
         int(np.ceil(quad[:, 0].max())), int(np.ceil(quad[:, 1].max())))
    p = (max(-p[0] + border, 0), max(-p[1] + border, 0),
         max(p[2] - rw + border, 0), max(p[3] - rh + border, 0))
    return p if max(p) > border - 4 else (0, 0, 0, 0)


def _pad_masks(pw: int, ph: int, p) -> np.ndarray:
    """FFHQ's padding mask, float32 [ph, pw, 1]: < 0 inside the image, 0 on its edge, -> 1 at the
    padding's outer edge (``p`` = left, top, right, bottom padding)."""
    xs = np.arange(pw, dtype=np.float32)
    ys = np.arange(ph, dtype=np.float32)
    mx = 1.0 - np.minimum(xs / np.float32(p[0]), (pw - 1 - xs) / np.float32(p[2]))
    my = 1.0 - np.minimum(ys / np.float32(p[1]), (ph - 1 - ys) / np.float32(p[3]))
    return np.maximum(mx[None, :], my[:, None])[:, :, None]


def _pad_fade(region: Image.Image, p, blur: float) -> Image.Image:
    """FFHQ's padding in float, as ``recreate_aligned_images``: reflect-pad by ``p``, blend towards
    a Gaussian blur (sigma ``blur``) near and in the padding, fade the padding to the median colour."""
    arr = np.pad(np.asarray(region, dtype=np.float32), ((p[1], p[3]), (p[0], p[2]), (0, 0)), mode="reflect")
    ph, pw = arr.shape[:2]
    mask = _pad_masks(pw, ph, p)
    blurred = _gaussian_blur(arr, blur)
    blurred -= arr
    blurred *= np.clip(mask * 3.0 + 1.0, 0.0, 1.0)
    arr += blurred
    step = max(1, min(ph, pw) // 64)  # median of a subsample: same colour, far cheaper
    median = np.median(arr[::step, ::step].reshape(-1, 3), axis=0).astype(np.float32)
    arr += (median - arr) * np.clip(mask, 0.0, 1.0)
    np.rint(arr, out=arr)
    np.clip(arr, 0, 255, out=arr)
    return Image.fromarray(arr.astype(np.uint8), "RGB")


def _blur_8bit(img: Image.Image, sigma: float) -> Image.Image:
    """Gaussian blur of an 8-bit image; large blurs run on a box-reduced copy (:func:`_box_reduction`)
    and are upsampled bilinearly back onto the exact same grid - like :func:`_gaussian_blur`, several
    times cheaper than blurring at full size."""
    w, h = img.size
    reduction = _box_reduction(sigma, h, w)
    if reduction is None:
        return img.filter(ImageFilter.GaussianBlur(float(sigma)))
    f, s = reduction
    small = img.reduce(f).filter(ImageFilter.GaussianBlur(s))
    return small.resize((w, h), Image.BILINEAR, box=(0.0, 0.0, w / f, h / f))


def _pad_fade_fast(region: Image.Image, p, blur: float) -> Image.Image:
    """The same padding in 8 bit for video frames (about 3x cheaper): Pillow's Gaussian blur (three
    box passes) on a reduced copy and two alpha composites instead of float arithmetic on the whole
    padded region; differs from :func:`_pad_fade` by a level or two, only near and in the padding."""
    arr = np.pad(np.asarray(region), ((p[1], p[3]), (p[0], p[2]), (0, 0)), mode="reflect")
    padded = Image.fromarray(arr, "RGB")
    ph, pw = arr.shape[:2]
    mask = _pad_masks(pw, ph, p)[:, :, 0]

    def to_alpha(m: np.ndarray) -> Image.Image:
        return Image.fromarray((np.clip(m, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8), "L")

    out = Image.composite(_blur_8bit(padded, blur), padded, to_alpha(mask * 3.0 + 1.0))
    step = max(1, min(ph, pw) // 64)
    median = np.median(np.asarray(out)[::step, ::step].reshape(-1, 3), axis=0)
    return Image.composite(Image.new("RGB", out.size, tuple(int(v + 0.5) for v in median)), out, to_alpha(mask))


def warp_quad(image: np.ndarray, quad: np.ndarray, size: int, *, pad: bool = True,
              quality: str = "high") -> np.ndarray:
    """Cut ``quad`` out of an RGB uint8 image as [size, size, 3] uint8, the FFHQ way.

    Steps (NVlabs ffhq-dataset ``recreate_aligned_images``): shrink big faces by an integer factor,
    crop to the quad's bounding box plus a 10% border, reflect-pad where the quad leaves the image
    (padding blurred with sigma = 2% of the quad and faded to the median colour, so the network
    never sees hard edges), then sample the quad.

    ``quality="high"`` (photos, as FFHQ) supersamples: the quad is rendered at ``size * k`` with
    k ~ quad side / size (at most 4) and filtered down with Lanczos. ``quality="fast"`` (video
    frames) resamples once: the cropped region is box-filtered down so that the quad is ``size``
    pixels wide (the antialiasing), padded at that resolution if needed, and the quad is sampled
    bilinearly straight at the output size - about 3x cheaper than supersampling, slightly softer.
    """
    img = np.asarray(image)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"image must be uint8 [H, W, 3], got {img.dtype} {img.shape}")
    quad = np.asarray(quad, dtype=np.float64).copy()
    size = int(size)
    qsize = quad_size(quad)
    h, w = img.shape[:2]

    # Shrink: FFHQ downsizes by an integer factor when the quad is over twice the output; the
    # fast mode box-filters by the exact factor that brings the quad to the output size.
    fast = quality != "high"
    if fast:
        shrink = max(qsize / size, 1.0)
    else:
        shrink = float(max(int(np.floor(qsize / size * 0.5)), 1))
    border = max(int(np.rint(qsize / shrink * 0.1)), 3)  # in shrunk pixels
    # Crop (done before shrinking, in source pixels, so only the face region is resampled).
    b = int(np.ceil(border * shrink))
    x0 = max(int(np.floor(quad[:, 0].min())) - b, 0)
    y0 = max(int(np.floor(quad[:, 1].min())) - b, 0)
    x1 = min(int(np.ceil(quad[:, 0].max())) + b, w)
    y1 = min(int(np.ceil(quad[:, 1].max())) + b, h)
    if x1 - x0 < 2 or y1 - y0 < 2:  # quad entirely outside the frame: pad from the nearest edge
        x0, y0 = min(max(x0, 0), w - 2), min(max(y0, 0), h - 2)
        x1, y1 = x0 + 2, y0 + 2
    region = Image.fromarray(np.ascontiguousarray(img[y0:y1, x0:x1]))
    quad -= (x0, y0)
    if fast and pad:
        # Whether to pad is decided at the scale of the former supersampled warp (the quad at up
        # to twice the output size), so the same frames get padded as before.
        ref = max(qsize / (2.0 * size), 1.0)
        ref_w, ref_h = (max(1, int(np.rint(n / ref))) if ref > 1 else n for n in (x1 - x0, y1 - y0))
        pad = max(_pad_amounts((quad + 0.5) / ref - 0.5, ref_w, ref_h,
                               max(int(np.rint(qsize / ref * 0.1)), 3))) > 0
    if fast and shrink > 1 + 1e-9:
        # Box cells of exactly ``shrink`` source pixels, on a grid through the quad's top-left
        # bounding-box corner: an axis-aligned quad at an integer ratio becomes a plain box average.
        qc = quad.min(axis=0) + 0.5                                   # continuous coordinates
        g0 = qc - np.floor(qc / shrink + 1e-9) * shrink               # grid origin in [0, shrink)
        g0 = np.where(g0 + shrink > (x1 - x0, y1 - y0), 0.0, g0)      # tiny regions: start at 0
        rw = max(1, int(np.floor((x1 - x0 - g0[0]) / shrink + 1e-9)))
        rh = max(1, int(np.floor((y1 - y0 - g0[1]) / shrink + 1e-9)))
        box = (g0[0], g0[1], min(g0[0] + rw * shrink, x1 - x0), min(g0[1] + rh * shrink, y1 - y0))
        region = region.resize((rw, rh), Image.BOX, box=box)
        quad = (quad + 0.5 - g0) / shrink - 0.5
    elif shrink > 1:
        rw = max(1, int(np.rint((x1 - x0) / shrink)))
        rh = max(1, int(np.rint((y1 - y0) / shrink)))
        sx, sy = (x1 - x0) / rw, (y1 - y0) / rh
        region = region.resize((rw, rh), Image.LANCZOS)
        # map pixel-centre coordinates into the resized grid
        quad = (quad + 0.5) / (sx, sy) - 0.5
    qsize_s = quad_size(quad)

    # Pad: reflect where the quad (plus border) leaves the image, blur and fade the padding.
    if pad:
        p = _pad_amounts(quad, *region.size, border)
        if fast or max(p) > 0:  # fast: `pad` already says whether (decided above)
            p = np.maximum(p, int(np.rint(qsize_s * 0.3)))
            region = (_pad_fade_fast if fast else _pad_fade)(region, p, qsize_s * 0.02)
            quad += (p[0], p[1])

    # Transform: "fast" samples the (already box-filtered) region once at the output size; "high"
    # supersamples (about one sample per source pixel, at most 4 per output pixel) and filters down.
    t = size if fast else size * int(np.clip(np.ceil(qsize_s / size - 1e-6), 1, 4))
    out = region.transform((t, t), Image.QUAD, tuple((quad + 0.5).flatten()), Image.BILINEAR)
    if t > size:
        out = out.resize((size, size), Image.LANCZOS)
    return np.asarray(out)


# -- inverse transform --------------------------------------------------------------------------
def _crop_affine(quad: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(origin, M): continuous source = origin + M @ (continuous crop / size)."""
    q = np.asarray(quad, dtype=np.float64) + 0.5  # PIL continuous coordinates, as in the warp
    m = np.stack([q[3] - q[0], q[1] - q[0]], axis=1)  # columns: crop u axis, crop v axis
    return q[0], m


def crop_to_source(points: np.ndarray, quad: np.ndarray, size: int) -> np.ndarray:
    """Map crop pixel coordinates [..., 2] (pixel centres at integers) to source pixels."""
    origin, m = _crop_affine(quad, size)
    uv = (np.asarray(points, dtype=np.float64) + 0.5) / size
    return uv @ m.T + origin - 0.5


def source_to_crop(points: np.ndarray, quad: np.ndarray, size: int) -> np.ndarray:
    """Map source pixel coordinates [..., 2] into the crop of ``quad`` at ``size`` pixels."""
    origin, m = _crop_affine(quad, size)
    rel = np.asarray(points, dtype=np.float64) + 0.5 - origin
    return rel @ np.linalg.inv(m).T * size - 0.5


def paste_back(frame: np.ndarray, crop: np.ndarray, quad: np.ndarray,
               feather: float = 0.0, alpha: Optional[np.ndarray] = None) -> np.ndarray:
    """Paste an aligned crop (e.g. a generated face) back into its source frame.

    ``feather`` (fraction of the crop size) fades the crop's border into the frame; ``alpha``
    (float [S, S] in [0, 1], the crop's size) replaces that square mask with any mask, e.g. a
    feathered face region. Returns a new uint8 frame; pixels outside the quad are the frame's own.
    """
    frame = np.asarray(frame)
    crop = np.asarray(crop)
    s = crop.shape[0]
    origin, m = _crop_affine(quad, s)
    inv = np.linalg.inv(m) * s  # continuous source -> continuous crop
    coeffs = (inv[0, 0], inv[0, 1], -(inv[0] @ origin), inv[1, 0], inv[1, 1], -(inv[1] @ origin))
    h, w = frame.shape[:2]
    warped = Image.fromarray(np.ascontiguousarray(crop)).transform((w, h), Image.AFFINE, coeffs,
                                                                    Image.BILINEAR)
    alpha = np.ones((s, s), np.float32) if alpha is None else np.clip(np.asarray(alpha, np.float32), 0, 1)
    if feather > 0:
        ramp = max(1, int(round(feather * s)))
        r = np.minimum(np.arange(s), np.arange(s)[::-1]).astype(np.float32)
        edge = np.clip((r + 0.5) / ramp, 0, 1)
        alpha = np.minimum(alpha, np.minimum(edge[:, None], edge[None, :]))
    alpha_img = Image.fromarray(np.uint8(np.rint(alpha * 255)), "L")
    a = np.asarray(alpha_img.transform((w, h), Image.AFFINE, coeffs, Image.BILINEAR),
                   dtype=np.float32)[:, :, None] / 255.0
    out = frame.astype(np.float32) * (1 - a) + np.asarray(warped, dtype=np.float32) * a
    return np.uint8(np.clip(np.rint(out), 0, 255))
