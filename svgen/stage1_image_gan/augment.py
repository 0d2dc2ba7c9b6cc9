"""Adaptive discriminator augmentation (Karras et al. 2020, "Training GANs with limited data").

Every image D sees (real and fake) goes through the same random, differentiable pipeline; each
transform is applied to an image with probability ``p`` (times its multiplier). Because the
transforms are invertible in distribution for p < ~0.8, they do not leak into G. ``p`` is tuned
on the fly by :class:`AdaptiveP` so that the overfitting heuristic r_t = E[sign(D(x_real))]
stays near its target 0.6.

Pipeline ``bgc`` = blit + geom + color, in this order:

* blit  — x-flip, 90° rotations, integer translation (±12.5 % of the size);
* geom  — isotropic scale (log2-normal, σ 0.2), rotation (uniform, applied before and after the
  anisotropic scale with p_rot = 1 - sqrt(1 - p) each), anisotropic scale (σ 0.2), fractional
  translation (normal, σ 0.125 of the size);
* color — brightness (+N(0, 0.2)), contrast (×2^N(0, 0.5)), luma flip, hue rotation (uniform
  around the luma axis), saturation (×2^N(0, 1) off the luma axis).

Geometric transforms are collected into one 3x3 matrix per image (output -> input pixel
coordinates, origin at the image centre) and executed once: reflect-pad, 2x upsample with a
low-pass FIR, bilinear resampling, low-pass and 2x downsample, crop. Colour transforms become one
4x4 matrix on homogeneous RGB. All operations are linear in the image (``grid_sample`` with a fixed
grid, ``upfirdn2d``), so gradients of any order flow through — R1 differentiates through
the pipeline.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from svgen.ops.upfirdn2d import downsample2d, setup_filter, upsample2d


@dataclass
class AugmentConfig:
    """Per-transform probability multipliers (0 disables) and strengths."""

    xflip: float = 0.0
    rotate90: float = 0.0
    xint: float = 0.0
    scale: float = 0.0
    rotate: float = 0.0
    aniso: float = 0.0
    xfrac: float = 0.0
    brightness: float = 0.0
    contrast: float = 0.0
    lumaflip: float = 0.0
    hue: float = 0.0
    saturation: float = 0.0
    # strengths
    xint_max: float = 0.125       # integer translation, fraction of the image size
    scale_std: float = 0.2        # log2 of the isotropic scale
    rotate_max: float = 1.0       # rotation range, fraction of a half turn
    aniso_std: float = 0.2        # log2 of the anisotropic scale
    xfrac_std: float = 0.125      # fractional translation, fraction of the image size
    brightness_std: float = 0.2   # additive, in [-1, 1] image units
    contrast_std: float = 0.5     # log2 of the contrast factor
    hue_max: float = 1.0          # hue rotation range, fraction of a half turn
    saturation_std: float = 1.0   # log2 of the saturation factor


_BLIT = ("xflip", "rotate90", "xint")
_GEOM = ("scale", "rotate", "aniso", "xfrac")
_COLOR = ("brightness", "contrast", "lumaflip", "hue", "saturation")
AUGPIPES: dict[str, tuple[str, ...]] = {
    "blit": _BLIT,
    "geom": _GEOM,
    "color": _COLOR,
    "bg": _BLIT + _GEOM,
    "bgc": _BLIT + _GEOM + _COLOR,
}


def augment_config(augpipe: str = "bgc") -> AugmentConfig:
    """The named pipeline (``blit``, ``geom``, ``color``, ``bg``, ``bgc``) with multipliers 1."""
    if augpipe not in AUGPIPES:
        raise ValueError(f"unknown augment pipeline {augpipe!r} (have: {', '.join(AUGPIPES)})")
    return AugmentConfig(**{name: 1.0 for name in AUGPIPES[augpipe]})


# -- homogeneous matrices [N, 3, 3] (2-D) and [N, 4, 4] (3-D colour) -----------------------------

def _mat(rows: list[list], n: int, device: torch.device) -> torch.Tensor:
    """Stack a matrix whose entries are scalars or [N] tensors into [N, R, C]."""
    out = []
    for row in rows:
        out.append(torch.stack([torch.as_tensor(v, dtype=torch.float32, device=device).expand(n)
                                for v in row], dim=-1))
    return torch.stack(out, dim=-2)


def translate2d(tx: torch.Tensor, ty: torch.Tensor) -> torch.Tensor:
    n = tx.shape[0]
    return _mat([[1, 0, tx], [0, 1, ty], [0, 0, 1]], n, tx.device)


def scale2d(sx: torch.Tensor, sy: torch.Tensor) -> torch.Tensor:
    n = sx.shape[0]
    return _mat([[sx, 0, 0], [0, sy, 0], [0, 0, 1]], n, sx.device)


def rotate2d(theta: torch.Tensor) -> torch.Tensor:
    n = theta.shape[0]
    c, s = torch.cos(theta), torch.sin(theta)
    return _mat([[c, -s, 0], [s, c, 0], [0, 0, 1]], n, theta.device)


def translate3d(t: torch.Tensor) -> torch.Tensor:
    """Add ``t`` [N] to all three colour channels."""
    n = t.shape[0]
    return _mat([[1, 0, 0, t], [0, 1, 0, t], [0, 0, 1, t], [0, 0, 0, 1]], n, t.device)


def scale3d(s: torch.Tensor) -> torch.Tensor:
    n = s.shape[0]
    return _mat([[s, 0, 0, 0], [0, s, 0, 0], [0, 0, s, 0], [0, 0, 0, 1]], n, s.device)


def rotate3d(axis: tuple[float, float, float], theta: torch.Tensor) -> torch.Tensor:
    """Rotation by ``theta`` [N] around the unit ``axis`` [3] (Rodrigues)."""
    n = theta.shape[0]
    x, y, z = (float(a) for a in axis)  # plain floats: no device sync
    c, s = torch.cos(theta), torch.sin(theta)
    cc = 1 - c
    return _mat([[x * x * cc + c, x * y * cc - z * s, x * z * cc + y * s, 0],
                 [y * x * cc + z * s, y * y * cc + c, y * z * cc - x * s, 0],
                 [z * x * cc - y * s, z * y * cc + x * s, z * z * cc + c, 0],
                 [0, 0, 0, 1]], n, theta.device)


def lowpass_filter(taps: int = 12, beta: float = 4.0) -> np.ndarray:
    """Kaiser-windowed sinc with cutoff at half the band: the 2x up/down anti-aliasing filter."""
    n = np.arange(taps) - (taps - 1) / 2
    h = np.sinc(0.5 * n) * np.kaiser(taps, beta)
    return h / h.sum()


def bilinear_sample(x: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Sample ``x`` [N, C, H, W] at pixel coordinates ``u`` (column) and ``v`` (row), both [N, Ho, Wo].

    Pixel (i, j) of ``x`` sits at integer (v, u) = (i, j); samples outside are zero. The result is
    linear in ``x``; ``F.grid_sample`` provides derivatives of any order w.r.t. ``x`` (the grid
    never needs a gradient here).
    """
    h, w = x.shape[-2:]
    grid = torch.stack([(2 * u + 1) / w - 1, (2 * v + 1) / h - 1], dim=-1)  # [N, Ho, Wo, 2]
    return F.grid_sample(x, grid.to(x.dtype), mode="bilinear", padding_mode="zeros",
                         align_corners=False)


class AugmentPipe(torch.nn.Module):
    """ADA pipeline: ``pipe(images [N, C, H, W] in [-1, 1]) -> augmented images`` (same shape).

    ``p`` is a buffer (saved with the module); at ``p == 0`` the input is returned unchanged.
    Randomness comes from the global torch RNG of the images' device (captured in checkpoints).
    """

    def __init__(self, cfg: Optional[AugmentConfig] = None, p: float = 0.0):
        super().__init__()
        self.cfg = cfg if cfg is not None else augment_config("bgc")
        self.register_buffer("p", torch.tensor(float(p)))
        self.register_buffer("lowpass", setup_filter(lowpass_filter()), persistent=False)

    def extra_repr(self) -> str:
        on = [f.name for f in fields(self.cfg) if f.name in AUGPIPES["bgc"] and getattr(self.cfg, f.name)]
        return f"p={float(self.p):.4f}, transforms={','.join(on)}"

    # -- random parameters --------------------------------------------------------------------
    @staticmethod
    def _gate(value: torch.Tensor, identity: float, prob: float | torch.Tensor) -> torch.Tensor:
        """Keep ``value`` [N] with probability ``prob`` per image, else the identity value."""
        keep = torch.rand(value.shape[0], device=value.device) < prob
        return torch.where(keep, value, torch.full_like(value, identity))

    def sample_geometry(self, n: int, height: int, width: int, device: torch.device) -> torch.Tensor:
        """Random G_inv [N, 3, 3]: output -> input pixel coordinates (origin at the centre)."""
        cfg, p = self.cfg, self.p
        G_inv = torch.eye(3, device=device).repeat(n, 1, 1)
        if cfg.xflip > 0:
            i = torch.floor(torch.rand(n, device=device) * 2)
            i = self._gate(i, 0, cfg.xflip * p)
            G_inv = G_inv @ scale2d(1 - 2 * i, torch.ones_like(i))
        if cfg.rotate90 > 0:
            i = torch.floor(torch.rand(n, device=device) * 4)
            i = self._gate(i, 0, cfg.rotate90 * p)
            G_inv = G_inv @ rotate2d(-math.pi / 2 * i)
        if cfg.xint > 0:
            t = (torch.rand(n, 2, device=device) * 2 - 1) * cfg.xint_max
            keep = torch.rand(n, 1, device=device) < cfg.xint * p
            t = torch.where(keep, t, torch.zeros_like(t))
            G_inv = G_inv @ translate2d(-torch.round(t[:, 0] * width), -torch.round(t[:, 1] * height))
        if cfg.scale > 0:
            s = torch.exp2(torch.randn(n, device=device) * cfg.scale_std)
            s = self._gate(s, 1, cfg.scale * p)
            G_inv = G_inv @ scale2d(1 / s, 1 / s)
        # Two rotations (around the anisotropic scale), each with p_rot so P(any) = rotate * p.
        p_rot = 1 - torch.sqrt(torch.clamp(1 - cfg.rotate * p, min=0))
        if cfg.rotate > 0:
            theta = (torch.rand(n, device=device) * 2 - 1) * math.pi * cfg.rotate_max
            theta = self._gate(theta, 0, p_rot)
            G_inv = G_inv @ rotate2d(-theta)
        if cfg.aniso > 0:
            s = torch.exp2(torch.randn(n, device=device) * cfg.aniso_std)
            s = self._gate(s, 1, cfg.aniso * p)
            G_inv = G_inv @ scale2d(1 / s, s)
        if cfg.rotate > 0:
            theta = (torch.rand(n, device=device) * 2 - 1) * math.pi * cfg.rotate_max
            theta = self._gate(theta, 0, p_rot)
            G_inv = G_inv @ rotate2d(-theta)
        if cfg.xfrac > 0:
            t = torch.randn(n, 2, device=device) * cfg.xfrac_std
            keep = torch.rand(n, 1, device=device) < cfg.xfrac * p
            t = torch.where(keep, t, torch.zeros_like(t))
            G_inv = G_inv @ translate2d(-t[:, 0] * width, -t[:, 1] * height)
        return G_inv

    def sample_color(self, n: int, device: torch.device) -> torch.Tensor:
        """Random colour matrix C [N, 4, 4] acting on homogeneous RGB."""
        cfg, p = self.cfg, self.p
        C = torch.eye(4, device=device).repeat(n, 1, 1)
        luma = torch.tensor([1.0, 1.0, 1.0, 0.0], device=device) / math.sqrt(3)  # grey axis
        vv = torch.outer(luma, luma)                                             # [4, 4]
        if cfg.brightness > 0:
            b = torch.randn(n, device=device) * cfg.brightness_std
            b = self._gate(b, 0, cfg.brightness * p)
            C = translate3d(b) @ C
        if cfg.contrast > 0:
            c = torch.exp2(torch.randn(n, device=device) * cfg.contrast_std)
            c = self._gate(c, 1, cfg.contrast * p)
            C = scale3d(c) @ C
        if cfg.lumaflip > 0:
            i = torch.floor(torch.rand(n, device=device) * 2)
            i = self._gate(i, 0, cfg.lumaflip * p)
            C = (torch.eye(4, device=device) - 2 * vv * i[:, None, None]) @ C  # Householder
        if cfg.hue > 0:
            theta = (torch.rand(n, device=device) * 2 - 1) * math.pi * cfg.hue_max
            theta = self._gate(theta, 0, cfg.hue * p)
            C = rotate3d((1 / math.sqrt(3),) * 3, theta) @ C
        if cfg.saturation > 0:
            s = torch.exp2(torch.randn(n, device=device) * cfg.saturation_std)
            s = self._gate(s, 1, cfg.saturation * p)
            C = (vv + (torch.eye(4, device=device) - vv) * s[:, None, None]) @ C
        return C

    # -- execution ----------------------------------------------------------------------------
    def apply_geometry(self, images: torch.Tensor, G_inv: torch.Tensor) -> torch.Tensor:
        """Resample ``images`` [N, C, H, W] through G_inv [N, 3, 3] with 2x oversampling."""
        n, c, h, w = images.shape
        f = self.lowpass.to(images.device)
        taps = f.shape[0]
        # Source side: reflect-pad enough to cover where the output corners come from.
        cx, cy = w / 2, h / 2
        corners = torch.tensor([[-cx, -cy, 1], [cx, -cy, 1], [cx, cy, 1], [-cx, cy, 1]],
                               device=images.device, dtype=torch.float32)
        src = corners @ G_inv.transpose(1, 2)                          # [N, 4, 3]
        lo = src[..., :2].amin(dim=(0, 1))                             # [2] (x, y)
        hi = src[..., :2].amax(dim=(0, 1))
        support = taps // 4 + 1                                        # filter reach, orig. px
        mx0 = int(min(max(math.ceil(float(-cx - lo[0])) + support, 0), w - 1))
        mx1 = int(min(max(math.ceil(float(hi[0] - cx)) + support, 0), w - 1))
        my0 = int(min(max(math.ceil(float(-cy - lo[1])) + support, 0), h - 1))
        my1 = int(min(max(math.ceil(float(hi[1] - cy)) + support, 0), h - 1))
        x = F.pad(images, [mx0, mx1, my0, my1], mode="reflect")
        x = upsample2d(x, f, up=2)                                     # [N, C, 2Hp, 2Wp]
        # Output side: the 2x grid of the output plus the downsampling filter's reach.
        e = taps // 2 - 1
        xo = (torch.arange(-e, 2 * w + e, device=images.device) + 0.5) / 2 - cx   # [2W+2e]
        yo = (torch.arange(-e, 2 * h + e, device=images.device) + 0.5) / 2 - cy   # [2H+2e]
        A = G_inv[:, :2]                                                          # [N, 2, 3]
        xi = (A[:, 0, 0, None, None] * xo[None, None, :] + A[:, 0, 1, None, None] * yo[None, :, None]
              + A[:, 0, 2, None, None])                                           # [N, 2H+2e, 2W+2e]
        yi = (A[:, 1, 0, None, None] * xo[None, None, :] + A[:, 1, 1, None, None] * yo[None, :, None]
              + A[:, 1, 2, None, None])
        u = 2 * (xi + mx0 + cx) - 0.5                                  # column in the 2x source
        v = 2 * (yi + my0 + cy) - 0.5
        x = bilinear_sample(x, u.to(x.dtype), v.to(x.dtype))
        return downsample2d(x, f, down=2, padding=-e)                  # [N, C, H, W]

    @staticmethod
    def apply_color(images: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
        """rgb' = C[:3, :3] rgb + C[:3, 3] per image."""
        n, c, h, w = images.shape
        if c != 3:
            raise ValueError(f"colour augmentation needs RGB images, got {c} channels")
        C = C.to(images.dtype)
        x = C[:, :3, :3] @ images.reshape(n, 3, h * w) + C[:, :3, 3:]
        return x.reshape(n, c, h, w)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        n, c, h, w = images.shape
        dev = images.device
        cfg = self.cfg
        if any(getattr(cfg, k) > 0 for k in _BLIT + _GEOM):
            G_inv = self.sample_geometry(n, h, w, dev)
            if not torch.equal(G_inv, torch.eye(3, device=dev).expand_as(G_inv)):
                images = self.apply_geometry(images, G_inv)
        if any(getattr(cfg, k) > 0 for k in _COLOR):
            C = self.sample_color(n, dev)
            if not torch.equal(C, torch.eye(4, device=dev).expand_as(C)):
                images = self.apply_color(images, C)
        return images


class AdaptiveP:
    """ADA's controller: every ``interval`` iterations move ``pipe.p`` by
    ``sign(r_t - target) * batch * interval / (ada_kimg * 1000)``, clamped to [0, 1].

    r_t = E[sign(D(x_real))] over the interval; call :meth:`accumulate` with every real-image
    logit batch and :meth:`step` once per iteration. Multi-process runs pass ``all_reduce`` (sums
    a tensor across processes) so every rank sees the same r_t and p.
    """

    def __init__(self, pipe: AugmentPipe, batch_size: int, target: float = 0.6, interval: int = 4,
                 ada_kimg: float = 500.0):
        self.pipe = pipe
        self.batch_size = int(batch_size)
        self.target = float(target)
        self.interval = int(interval)
        self.ada_kimg = float(ada_kimg)
        self.sign_sum = 0.0
        self.count = 0.0
        self.last_rt: Optional[float] = None

    def accumulate(self, real_logits: torch.Tensor) -> None:
        self.sign_sum += float(torch.sign(real_logits.detach()).sum())
        self.count += real_logits.numel()

    def step(self, iteration: int, all_reduce=None) -> Optional[float]:
        """After iteration ``iteration`` (0-based); returns r_t when p was adjusted, else None."""
        if (iteration + 1) % self.interval != 0:
            return None
        stats = torch.tensor([self.sign_sum, self.count], dtype=torch.float64)
        if all_reduce is not None:
            stats = all_reduce(stats)
        self.sign_sum, self.count = 0.0, 0.0
        if stats[1] <= 0:
            return None
        r_t = float(stats[0] / stats[1])
        adjust = np.sign(r_t - self.target) * (self.batch_size * self.interval) / (self.ada_kimg * 1000)
        new_p = min(max(float(self.pipe.p) + adjust, 0.0), 1.0)
        self.pipe.p.copy_(torch.tensor(new_p))
        self.last_rt = r_t
        return r_t

    def state_dict(self) -> dict:
        return {"sign_sum": self.sign_sum, "count": self.count,
                "last_rt": -2.0 if self.last_rt is None else self.last_rt,
                "p": float(self.pipe.p)}

    def load_state_dict(self, state: dict) -> None:
        self.sign_sum = float(state["sign_sum"])
        self.count = float(state["count"])
        self.last_rt = None if state["last_rt"] == -2.0 else float(state["last_rt"])
        self.pipe.p.copy_(torch.tensor(float(state["p"])))
