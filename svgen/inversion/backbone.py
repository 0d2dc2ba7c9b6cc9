"""The IR-SE backbone (ArcFace's "improved residual" units with squeeze-and-excitation).

Layout of the 50-layer network used by pSp/e4e (and the ArcFace identity net)::

    input_layer: Conv3x3(3->64, s1) -> BN -> PReLU                  [N, 64, R, R]
    stage 1: 3 units  64->64   (first unit stride 2)                 [N, 64, R/2, R/2]
    stage 2: 4 units  64->128                                        [N, 128, R/4, R/4]
    stage 3: 14 units 128->256                                       [N, 256, R/8, R/8]
    stage 4: 3 units  256->512                                       [N, 512, R/16, R/16]

A unit is ``BN -> Conv3x3 -> PReLU -> Conv3x3(stride) -> BN -> SE`` plus a shortcut (max-pool of
kernel 1 when the width is unchanged, else Conv1x1 + BN), summed without a final activation.
Sub-module names (``res_layer``, ``shortcut_layer``, ``fc1``/``fc2``) follow the public ArcFace
weight files so ``model_ir_se50.pth`` can be mapped onto :class:`IRSEBackbone` by renaming keys
(:func:`arcface_to_backbone_state`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn


@dataclass
class BackboneConfig:
    """Widths and unit counts of the four IR-SE stages."""

    in_channels: int = 3
    stem_channels: int = 64
    channels: tuple = (64, 128, 256, 512)
    units: tuple = (3, 4, 14, 3)
    se_reduction: int = 16

    @property
    def num_layers(self) -> int:
        """ArcFace naming: 2 convs per unit + stem + head, e.g. 24 units -> "50 layers"."""
        return 2 * sum(self.units) + 2


# The presets the encoders use. ``ir_se50`` is the published layout; ``tiny`` is a narrow
# variant (same structure, few channels and units) that trains in seconds on a CPU.
BACKBONE_PRESETS: dict[str, BackboneConfig] = {
    "ir_se50": BackboneConfig(),
    "ir_se100": BackboneConfig(units=(3, 13, 30, 3)),
    "ir_se152": BackboneConfig(units=(3, 8, 36, 3)),
    "tiny": BackboneConfig(stem_channels=16, channels=(16, 32, 48, 64), units=(1, 1, 2, 1),
                           se_reduction=4),
}


class SEModule(nn.Module):
    """Squeeze-and-excitation: channel gates from globally pooled features."""

    def __init__(self, channels: int, reduction: int):
        super().__init__()
        hidden = max(1, channels // reduction)
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, hidden, 1, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(hidden, channels, 1, bias=False)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [N, C, H, W] -> gate [N, C, 1, 1]
        gate = self.sigmoid(self.fc2(self.relu(self.fc1(self.avg_pool(x)))))
        return x * gate


class Subsample(nn.Module):
    """Every ``stride``-th pixel: the identity shortcut of a strided unit (ArcFace writes it as
    ``MaxPool2d(1, stride)``, which computes the same thing several times slower)."""

    def __init__(self, stride: int):
        super().__init__()
        self.stride = int(stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.stride == 1 else x[:, :, ::self.stride, ::self.stride]


class BottleneckIRSE(nn.Module):
    """One IR-SE unit: ``res_layer(x) + shortcut_layer(x)``; the stride acts on the second conv."""

    def __init__(self, in_channels: int, depth: int, stride: int, se_reduction: int = 16):
        super().__init__()
        if in_channels == depth:
            self.shortcut_layer: nn.Module = Subsample(stride)
        else:
            self.shortcut_layer = nn.Sequential(
                nn.Conv2d(in_channels, depth, 1, stride, bias=False), nn.BatchNorm2d(depth))
        self.res_layer = nn.Sequential(
            nn.BatchNorm2d(in_channels),
            nn.Conv2d(in_channels, depth, 3, 1, 1, bias=False),
            nn.PReLU(depth),
            nn.Conv2d(depth, depth, 3, stride, 1, bias=False),
            nn.BatchNorm2d(depth),
            SEModule(depth, se_reduction),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [N, Cin, H, W] -> [N, depth, H/stride, W/stride]
        return self.res_layer(x) + self.shortcut_layer(x)


class IRSEBackbone(nn.Module):
    """``input_layer`` then ``stages`` (one ``nn.Sequential`` of units per resolution stage).

    ``forward(x)`` returns the list of per-stage features (strides 2, 4, 8, 16 of the input), so
    heads can tap any level (pSp's feature pyramid) and StyleInV can modulate after each stage.
    """

    def __init__(self, cfg: BackboneConfig):
        super().__init__()
        self.cfg = cfg
        self.input_layer = nn.Sequential(
            nn.Conv2d(cfg.in_channels, cfg.stem_channels, 3, 1, 1, bias=False),
            nn.BatchNorm2d(cfg.stem_channels),
            nn.PReLU(cfg.stem_channels),
        )
        stages = []
        cin = cfg.stem_channels
        for depth, n in zip(cfg.channels, cfg.units):
            units = [BottleneckIRSE(cin, depth, 2, cfg.se_reduction)]
            units += [BottleneckIRSE(depth, depth, 1, cfg.se_reduction) for _ in range(n - 1)]
            stages.append(nn.Sequential(*units))
            cin = depth
        self.stages = nn.ModuleList(stages)

    @property
    def out_channels(self) -> Sequence[int]:
        return tuple(self.cfg.channels)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        # x: [N, 3, R, R] in [-1, 1] -> [[N, C1, R/2, R/2], ..., [N, C4, R/16, R/16]]
        x = self.input_layer(x)
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats


def arcface_to_backbone_state(state: dict, cfg: BackboneConfig) -> dict:
    """Rename an ArcFace IR-SE state dict (``input_layer.*``, flat ``body.<i>.*``) to our layout.

    ``body.<i>`` becomes ``stages.<s>.<j>``; keys outside the backbone (``output_layer.*``) are
    returned unchanged so a caller can use them for its own head.
    """
    bounds = []
    for s, n in enumerate(cfg.units):
        bounds += [(s, j) for j in range(n)]
    out = {}
    pat = re.compile(r"^body\.(\d+)\.(.*)$")
    for k, v in state.items():
        m = pat.match(k)
        if m:
            i = int(m.group(1))
            if i >= len(bounds):
                raise KeyError(f"unit body.{i} does not exist in a {cfg.num_layers}-layer IR-SE net")
            s, j = bounds[i]
            out[f"stages.{s}.{j}.{m.group(2)}"] = v
        else:
            out[k] = v
    return out


def backbone_to_arcface_state(state: dict, cfg: BackboneConfig) -> dict:
    """Inverse of :func:`arcface_to_backbone_state` (used to write files in the ArcFace layout)."""
    offsets = [sum(cfg.units[:s]) for s in range(len(cfg.units))]
    out = {}
    pat = re.compile(r"^stages\.(\d+)\.(\d+)\.(.*)$")
    for k, v in state.items():
        m = pat.match(k)
        if m:
            out[f"body.{offsets[int(m.group(1))] + int(m.group(2))}.{m.group(3)}"] = v
        else:
            out[k] = v
    return out


def infer_units(state: dict) -> int:
    """Number of IR-SE units in an ArcFace-layout state dict (24 for IR-SE50)."""
    idx = {int(m.group(1)) for k in state for m in [re.match(r"^body\.(\d+)\.", k)] if m}
    return (max(idx) + 1) if idx else 0
