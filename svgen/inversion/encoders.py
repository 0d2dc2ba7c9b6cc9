"""Inversion encoders: pSp's GradualStyleEncoder into W+ and a single-vector encoder into W.

Both read an aligned face ``img [N, 3, R, R]`` in [-1, 1] and predict *offsets* from the frozen
generator's mean latent ``w_avg``, so an untrained encoder already decodes to the average face:

    W+ (pSp):  features c1, c2, c3 of the IR-SE stages 2..4 (strides 4, 8, 16), a top-down feature
               pyramid p2 = up(c3) + lat1(c2), p1 = up(p2) + lat2(c1), and one map2style head per
               entry of W+: coarse entries read c3, middle ones p2, fine ones p1.
    W+ (e4e, Tov et al. 2021, the default): the same heads, but head 0 predicts one base code w0
               that every entry shares and heads i >= 1 predict deltas from it,
               w_i = w_avg + w0 + delta_i. Training unlocks the deltas one by one (``stage``) and
               penalises their size, so codes stay near the generator's W distribution (editable,
               renderable by a motion model) instead of drifting into W+ regions G never saw.
    W:         the last IR-SE stage, global average pool, one equalized linear -> one w, broadcast.

The split of the generator's ``num_ws`` entries follows pSp (entries 0-2 coarse, 3-6 middle, the
rest fine), which for StyleGAN2's layout means 4-8 px, 16-32 px and >= 64 px synthesis layers; a
smaller generator simply has fewer (or no) fine entries.

``encoder.pt``: ``{"format": "svgen-encoder", "version": 1, "config": {...}, "E": state,
"E_ema": state, "generator_sha256": str, "meta": {...}}`` (training checkpoints add optimizer,
RNG state and step). The W encoder's state is ``backbone.*``, ``head.*`` and the ``w_avg`` buffer.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

from svgen.inversion.backbone import BACKBONE_PRESETS, BackboneConfig, IRSEBackbone
from svgen.nn.equalized import EqualLinear
from svgen.utils.config import config_from_dict, config_to_dict
from svgen.utils.errors import PathLike, SvgenError

FORMAT = "svgen-encoder"
VERSION = 1
SPACES = ("w+", "w")
PRESETS = ("tiny", "ir_se50")
STRUCTURES = ("e4e", "psp")
COARSE_END = 3  # pSp: styles [0, 3) coarse, [3, 7) middle, [7, num_ws) fine
MIDDLE_END = 7


@dataclass
class EncoderConfig:
    """Everything needed to rebuild an encoder; saved in every encoder checkpoint."""

    space: str = "w+"            # "w+" (GradualStyleEncoder) or "w" (one vector)
    preset: str = "tiny"         # backbone preset: "tiny" (CPU) or "ir_se50" (published layout)
    num_ws: int = 8              # the generator's number of W+ entries
    w_dim: int = 512             # the generator's W dimension
    resolution: int = 32         # encoder input size (images are resized to it)
    img_resolution: int = 32     # the generator's output size
    offset_init: float = 0.1     # init scale of the last (offset-predicting) linear layers
    structure: str = "psp"       # W+ only: "psp" (independent entries) or "e4e" (base code + deltas);
                                 # new encoders use e4e, "psp" keeps older checkpoints loading
    backbone: BackboneConfig = field(default_factory=BackboneConfig)


def make_encoder_config(space: str, preset: str, num_ws: int, w_dim: int,
                        img_resolution: int, structure: str = "e4e") -> EncoderConfig:
    """Config for a generator: input size = generator size capped at 256 (as pSp recommends)."""
    if space not in SPACES:
        raise SvgenError(f"unknown latent space {space!r} (use w+ or w)")
    if structure not in STRUCTURES:
        raise SvgenError(f"unknown encoder structure {structure!r} (use {' or '.join(STRUCTURES)})")
    if preset not in BACKBONE_PRESETS:
        raise SvgenError(f"unknown encoder preset {preset!r} (use {', '.join(PRESETS)})")
    resolution = max(32, min(256, int(img_resolution)))
    resolution = 2 ** int(round(math.log2(resolution)))
    return EncoderConfig(space=space, preset=preset, num_ws=int(num_ws), w_dim=int(w_dim),
                         resolution=resolution, img_resolution=int(img_resolution),
                         structure=structure, backbone=BACKBONE_PRESETS[preset])


class GradualStyleBlock(nn.Module):
    """map2style: log2(spatial) stride-2 3x3 convs down to 1x1, then one equalized linear."""

    def __init__(self, channels: int, w_dim: int, spatial: int, init_gain: float = 1.0):
        super().__init__()
        n_convs = max(0, int(math.ceil(math.log2(max(1, spatial)))))
        layers: list[nn.Module] = []
        for _ in range(n_convs):
            layers += [nn.Conv2d(channels, channels, 3, 2, 1), nn.LeakyReLU()]
        self.convs = nn.Sequential(*layers)
        self.linear = EqualLinear(channels, w_dim, init_gain=init_gain)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [N, C, s, s] -> [N, C, 1, 1] -> [N, w_dim]
        x = self.convs(x)
        x = x.mean(dim=(2, 3))  # exactly 1x1 for power-of-two sizes; a safe pool otherwise
        return self.linear(x)


class Encoder(nn.Module):
    """Common part: input resizing, ``w_avg`` buffer and the public attributes."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.cfg = cfg
        self.space = cfg.space
        self.num_ws = cfg.num_ws
        self.w_dim = cfg.w_dim
        self.resolution = cfg.resolution
        self.generator_sha256 = ""
        self.register_buffer("w_avg", torch.zeros(cfg.w_dim))

    def prepare(self, img: torch.Tensor) -> torch.Tensor:
        """Resize [N, 3, H, W] images to the encoder's input size (antialiased)."""
        if img.ndim != 4 or img.shape[1] != 3:
            raise ValueError(f"expected images [N, 3, H, W], got {tuple(img.shape)}")
        if img.shape[-1] != self.resolution or img.shape[-2] != self.resolution:
            img = F.interpolate(img, size=(self.resolution, self.resolution), mode="bilinear",
                                align_corners=False, antialias=True)
        return img

    def encode(self, img: torch.Tensor) -> torch.Tensor:
        """Latents in the encoder's own space: [N, num_ws, w_dim] (W+) or [N, w_dim] (W)."""
        raise NotImplementedError

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        # img: [N, 3, R, R] in [-1, 1] -> ws [N, num_ws, w_dim]
        w = self.encode(img)
        if w.ndim == 2:
            w = w.unsqueeze(1).expand(-1, self.num_ws, -1)
        return w


class GradualStyleEncoder(Encoder):
    """pSp's encoder into W+: IR-SE body, feature pyramid and one map2style head per W+ entry
    (with ``structure="e4e"``: head 0 is the shared base code, the others deltas from it)."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__(cfg)
        self.backbone = IRSEBackbone(cfg.backbone)
        ch = tuple(cfg.backbone.channels)  # channels of the 4 stages; c1, c2, c3 = stages 2, 3, 4
        fpn = ch[3]
        s3 = cfg.resolution // 16  # spatial size of c3; p2 is twice that, p1 four times
        self.coarse_end = min(COARSE_END, cfg.num_ws)
        self.middle_end = min(MIDDLE_END, cfg.num_ws)
        self.e4e = cfg.structure == "e4e"
        styles = []
        for i in range(cfg.num_ws):
            spatial = s3 if i < self.coarse_end else (2 * s3 if i < self.middle_end else 4 * s3)
            styles.append(GradualStyleBlock(fpn, cfg.w_dim, spatial, cfg.offset_init))
        self.styles = nn.ModuleList(styles)
        self.latlayer1 = nn.Conv2d(ch[2], fpn, 1)  # c2 -> pyramid width
        self.latlayer2 = nn.Conv2d(ch[1], fpn, 1)  # c1 -> pyramid width
        # e4e's progressive stage: deltas 1..stage are on (num_ws - 1 = all, the inference setting)
        self.register_buffer("stage", torch.tensor(cfg.num_ws - 1, dtype=torch.long))

    @staticmethod
    def _upsample_add(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, size=y.shape[-2:], mode="bilinear", align_corners=True) + y

    def head_outputs(self, img: torch.Tensor) -> torch.Tensor:
        """The raw map2style outputs [N, num_ws, w_dim] (pSp: offsets; e4e: w0 then deltas)."""
        # img [N, 3, R, R] -> c1 [N, C2, R/4, R/4], c2 [N, C3, R/8, R/8], c3 [N, C4, R/16, R/16]
        _, c1, c2, c3 = self.backbone(self.prepare(img))
        n_heads = self.num_ws if not self.e4e else int(self.stage) + 1
        outs = [self.styles[i](c3) for i in range(min(self.coarse_end, n_heads))]
        if n_heads > self.coarse_end:
            p2 = self._upsample_add(c3, self.latlayer1(c2))                    # [N, C4, R/8, R/8]
            outs += [self.styles[i](p2) for i in range(self.coarse_end, min(self.middle_end, n_heads))]
            if n_heads > self.middle_end:
                p1 = self._upsample_add(p2, self.latlayer2(c1))                # [N, C4, R/4, R/4]
                outs += [self.styles[i](p1) for i in range(self.middle_end, n_heads)]
        out = torch.stack(outs, dim=1)
        if n_heads < self.num_ws:  # e4e: locked deltas are exactly zero
            out = F.pad(out, (0, 0, 0, self.num_ws - n_heads))
        return out

    def encode_with_deltas(self, img: torch.Tensor) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """(ws [N, num_ws, w_dim], e4e deltas [N, num_ws - 1, w_dim] or None for pSp)."""
        heads = self.head_outputs(img)
        if not self.e4e:
            return heads + self.w_avg, None
        w0, deltas = heads[:, :1], heads[:, 1:]
        ws = torch.cat([w0, w0 + deltas], dim=1) + self.w_avg
        return ws, deltas

    def encode(self, img: torch.Tensor) -> torch.Tensor:
        return self.encode_with_deltas(img)[0]


class WEncoder(Encoder):
    """Encoder into W: last IR-SE stage -> global average pool -> equalized linear -> one w."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__(cfg)
        self.backbone = IRSEBackbone(cfg.backbone)
        self.head = EqualLinear(cfg.backbone.channels[-1], cfg.w_dim, init_gain=cfg.offset_init)

    def encode(self, img: torch.Tensor) -> torch.Tensor:
        c4 = self.backbone(self.prepare(img))[-1]       # [N, C4, R/16, R/16]
        return self.head(c4.mean(dim=(2, 3))) + self.w_avg  # [N, w_dim]


def build_encoder(cfg: EncoderConfig, w_avg: Optional[torch.Tensor] = None) -> Encoder:
    """Instantiate the encoder ``cfg`` describes; ``w_avg`` is the generator's mean latent."""
    cls = GradualStyleEncoder if cfg.space == "w+" else WEncoder
    E = cls(cfg)
    if w_avg is not None:
        E.w_avg.copy_(torch.as_tensor(w_avg, dtype=torch.float32).reshape(cfg.w_dim))
    return E


def encoder_config_from_dict(data: dict) -> EncoderConfig:
    cfg = config_from_dict(EncoderConfig, data)
    if isinstance(cfg.backbone, dict):  # defensive: older checkpoints
        cfg.backbone = config_from_dict(BackboneConfig, cfg.backbone)
    cfg.backbone.channels = tuple(cfg.backbone.channels)
    cfg.backbone.units = tuple(cfg.backbone.units)
    return cfg


def encoder_checkpoint(E: Encoder, E_ema: Optional[Encoder], generator_sha256: str,
                       meta: Optional[dict] = None, **extra: Any) -> dict:
    """The ``encoder.pt`` dict (``extra`` adds optimizer/RNG/step for training checkpoints)."""
    ckpt = {"format": FORMAT, "version": VERSION, "config": config_to_dict(E.cfg),
            "E": E.state_dict(), "generator_sha256": generator_sha256, "meta": dict(meta or {})}
    if E_ema is not None:
        ckpt["E_ema"] = E_ema.state_dict()
    ckpt.update(extra)
    return ckpt


def encoder_from_checkpoint(ckpt: dict, path: PathLike = "encoder", use_ema: bool = True,
                            adopt: bool = False) -> Encoder:
    """Rebuild an encoder from a loaded checkpoint dict (EMA weights when present).

    ``adopt``: the module is built without weights (``meta`` device) and takes the checkpoint's
    tensors as its own instead of copying them, so the weights are in memory once, not twice (the
    IR-SE-50 encoder at 256 px is 0.84 GB; with a memory-mapped checkpoint, see ``load_encoder``)."""
    if ckpt.get("version", VERSION) > VERSION:
        raise SvgenError(f"encoder checkpoint version {ckpt.get('version')} is newer than this "
                         f"svgen understands ({VERSION})", path)
    try:
        cfg = encoder_config_from_dict(ckpt["config"])
        with torch.device("meta") if adopt else contextlib.nullcontext():
            E = build_encoder(cfg)
        state = dict(ckpt["E_ema"] if use_ema and "E_ema" in ckpt else ckpt["E"])
        if isinstance(E, GradualStyleEncoder) and "stage" not in state:  # written before e4e
            state["stage"] = torch.tensor(cfg.num_ws - 1, dtype=torch.long)
        E.load_state_dict(state, assign=adopt)
        if adopt and any(t.is_meta for t in (*E.parameters(), *E.buffers())):  # a tensor no state holds
            return encoder_from_checkpoint(ckpt, path, use_ema, adopt=False)
    except (KeyError, TypeError, RuntimeError, ValueError) as exc:
        msg = " ".join(str(exc).split())[:200]
        raise SvgenError(f"encoder checkpoint is damaged or incompatible ({msg})", path) from None
    E.generator_sha256 = str(ckpt.get("generator_sha256", ""))
    return E


def load_encoder(path: PathLike, device: Any = "cpu") -> Encoder:
    """Load ``encoder.pt`` (or a training ``latest.pt``) as an eval-mode, no-grad module.

    ``E(img [N, 3, R, R] in [-1, 1]) -> ws [N, num_ws, w_dim]``; attributes ``space``, ``num_ws``,
    ``w_dim``, ``resolution``, ``generator_sha256``.
    """
    from svgen.utils.rundir import load_checkpoint

    ckpt = load_checkpoint(path, expect_format=FORMAT, mmap=True)
    E = encoder_from_checkpoint(ckpt, path, adopt=True)
    E.eval().requires_grad_(False)
    return E.to(device)
