"""Import of NVIDIA .pkl and rosinality .pt generators, refused pickles, and the image CLI.

No pretrained file exists here, so the tests re-create both foreign layouts at a tiny size:
the NVIDIA pickle structure (persistent objects reduced to
``torch_utils.persistence._reconstruct_persistent_obj(meta)``, written with stand-in modules that
are removed before loading) and rosinality's state-dict keys. Converted networks must render the
same images (noise_mode const) as reference forward passes written here in plain torch,
following each project's own layer structure.
"""
from __future__ import annotations

import argparse
import collections
import math
import os
import pickle
import sys
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from svgen.cli.main import main as svgen_main
from svgen.stage1_image_gan.checkpoints import load_generator, read_generator_checkpoint
from svgen.utils.errors import SvgenError

SQRT2 = math.sqrt(2.0)
RES, Z, W, C = 16, 16, 16, {4: 8, 8: 8, 16: 4}  # tiny: channels min(64 // r, 8)


def lrelu(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, 0.2) * SQRT2


def fir_kernel(gain: float = 1.0) -> torch.Tensor:
    k = torch.tensor([1.0, 3.0, 3.0, 1.0])
    k = torch.outer(k, k)
    return k / k.sum() * gain


def blur(x: torch.Tensor, pad: tuple[int, int], gain: float = 1.0) -> torch.Tensor:
    k = fir_kernel(gain).flip([0, 1])[None, None].repeat(x.shape[1], 1, 1, 1)
    return F.conv2d(F.pad(x, [pad[0], pad[1], pad[0], pad[1]]), k, groups=x.shape[1])


def upsample(x: torch.Tensor) -> torch.Tensor:
    """Zero insertion then the [1,3,3,1] low-pass with gain 4 (pad 2, 1)."""
    N, Ch, H, Wd = x.shape
    up = torch.zeros(N, Ch, 2 * H, 2 * Wd)
    up[:, :, ::2, ::2] = x
    return blur(up, (2, 1), gain=4.0)


def modconv(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, demodulate: bool,
            up: bool = False, scale: float = 1.0) -> torch.Tensor:
    """Per-sample modulated convolution, one sample at a time (the definition, no grouping)."""
    outs = []
    for n in range(x.shape[0]):
        w = scale * weight * styles[n][None, :, None, None]            # [O, I, k, k]
        if demodulate:
            w = w * torch.rsqrt(w.square().sum(dim=[1, 2, 3], keepdim=True) + 1e-8)
        xn = x[n:n + 1]
        if up:  # transposed conv, stride 2, then the low-pass (pad 1, 1; gain 4)
            outs.append(blur(F.conv_transpose2d(xn, w.transpose(0, 1), stride=2), (1, 1), 4.0))
        else:
            outs.append(F.conv2d(xn, w, padding=w.shape[-1] // 2))
    return torch.cat(outs)


def dense(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, lr_mul: float = 1.0,
          act: bool = False) -> torch.Tensor:
    y = F.linear(x, weight * lr_mul / math.sqrt(weight.shape[1])) + bias * lr_mul
    return lrelu(y) if act else y


def pixel_norm(z: torch.Tensor) -> torch.Tensor:
    return z * torch.rsqrt(z.square().mean(dim=1, keepdim=True) + 1e-8)


def seeded(*shape: int, gen: torch.Generator, scale: float = 1.0, offset: float = 0.0) -> torch.Tensor:
    return torch.randn(shape, generator=gen) * scale + offset


# -- rosinality layout ---------------------------------------------------------------------------

def ros_generator_state(gen: torch.Generator, n_mlp: int = 3) -> dict:
    g = collections.OrderedDict()
    for i in range(1, n_mlp + 1):
        g[f"style.{i}.weight"] = seeded(W, Z if i == 1 else W, gen=gen, scale=100.0)  # randn / lr_mul
        g[f"style.{i}.bias"] = seeded(W, gen=gen, scale=10.0)
    g["input.input"] = seeded(1, C[4], 4, 4, gen=gen)

    def styled(prefix: str, cin: int, cout: int, up: bool) -> None:
        g[f"{prefix}.conv.weight"] = seeded(1, cout, cin, 3, 3, gen=gen)
        g[f"{prefix}.conv.modulation.weight"] = seeded(cin, W, gen=gen)
        g[f"{prefix}.conv.modulation.bias"] = seeded(cin, gen=gen, scale=0.2, offset=1.0)
        if up:
            g[f"{prefix}.conv.blur.kernel"] = fir_kernel(4.0)
        g[f"{prefix}.noise.weight"] = seeded(1, gen=gen, scale=0.5)
        g[f"{prefix}.activate.bias"] = seeded(cout, gen=gen, scale=0.2)

    def rgb(prefix: str, cin: int, up: bool) -> None:
        g[f"{prefix}.conv.weight"] = seeded(1, 3, cin, 1, 1, gen=gen)
        g[f"{prefix}.conv.modulation.weight"] = seeded(cin, W, gen=gen)
        g[f"{prefix}.conv.modulation.bias"] = seeded(cin, gen=gen, scale=0.2, offset=1.0)
        g[f"{prefix}.bias"] = seeded(1, 3, 1, 1, gen=gen, scale=0.2)
        if up:
            g[f"{prefix}.upsample.kernel"] = fir_kernel(4.0)

    styled("conv1", C[4], C[4], False)
    rgb("to_rgb1", C[4], False)
    for k, r in enumerate([8, 16]):
        styled(f"convs.{2 * k}", C[r // 2], C[r], True)
        styled(f"convs.{2 * k + 1}", C[r], C[r], False)
        rgb(f"to_rgbs.{k}", C[r], True)
    for i, r in enumerate([4, 8, 8, 16, 16]):  # num_layers = 2 log2(16) - 3
        g[f"noises.noise_{i}"] = seeded(1, 1, r, r, gen=gen)
    return g


def ros_reference_image(g: dict, z: torch.Tensor, latent_avg: torch.Tensor, psi: float) -> torch.Tensor:
    """rosinality Generator.forward with randomize_noise=False and truncation around latent_avg."""
    x = pixel_norm(z)
    i = 1
    while f"style.{i}.weight" in g:
        x = dense(x, g[f"style.{i}.weight"], g[f"style.{i}.bias"], lr_mul=0.01, act=True)
        i += 1
    latent = (latent_avg + psi * (x - latent_avg))[:, None].repeat(1, 2 * int(math.log2(RES)) - 2, 1)

    def styled(prefix: str, out: torch.Tensor, w: torch.Tensor, noise: torch.Tensor, up: bool):
        weight = g[f"{prefix}.conv.weight"][0]
        style = dense(w, g[f"{prefix}.conv.modulation.weight"], g[f"{prefix}.conv.modulation.bias"])
        out = modconv(out, weight, style, True, up, scale=1 / math.sqrt(weight[0].numel()))
        out = out + g[f"{prefix}.noise.weight"] * noise
        return lrelu(out + g[f"{prefix}.activate.bias"][None, :, None, None])

    def to_rgb(prefix: str, out: torch.Tensor, w: torch.Tensor, skip):
        weight = g[f"{prefix}.conv.weight"][0]
        style = dense(w, g[f"{prefix}.conv.modulation.weight"], g[f"{prefix}.conv.modulation.bias"])
        out = modconv(out, weight, style, False, scale=1 / math.sqrt(weight[0].numel()))
        out = out + g[f"{prefix}.bias"]
        return out if skip is None else out + upsample(skip)

    noise = [g[f"noises.noise_{j}"] for j in range(5)]
    out = g["input.input"].repeat(z.shape[0], 1, 1, 1)
    out = styled("conv1", out, latent[:, 0], noise[0], False)
    skip = to_rgb("to_rgb1", out, latent[:, 1], None)
    i = 1
    for k, (n1, n2) in enumerate(zip(noise[1::2], noise[2::2])):
        out = styled(f"convs.{2 * k}", out, latent[:, i], n1, True)
        out = styled(f"convs.{2 * k + 1}", out, latent[:, i + 1], n2, False)
        skip = to_rgb(f"to_rgbs.{k}", out, latent[:, i + 2], skip)
        i += 2
    return skip


def ros_discriminator_state(gen: torch.Generator) -> dict:
    d = collections.OrderedDict()
    d["convs.0.0.weight"] = seeded(C[16], 3, 1, 1, gen=gen)
    d["convs.0.1.bias"] = seeded(C[16], gen=gen, scale=0.1)
    for j, r in enumerate([16, 8], start=1):
        cin, cout = C[r], C[r // 2]
        d[f"convs.{j}.conv1.0.weight"] = seeded(cin, cin, 3, 3, gen=gen)
        d[f"convs.{j}.conv1.1.bias"] = seeded(cin, gen=gen, scale=0.1)
        d[f"convs.{j}.conv2.0.kernel"] = fir_kernel()
        d[f"convs.{j}.conv2.1.weight"] = seeded(cout, cin, 3, 3, gen=gen)
        d[f"convs.{j}.conv2.2.bias"] = seeded(cout, gen=gen, scale=0.1)
        d[f"convs.{j}.skip.0.kernel"] = fir_kernel()
        d[f"convs.{j}.skip.1.weight"] = seeded(cout, cin, 1, 1, gen=gen)
    d["final_conv.0.weight"] = seeded(C[4], C[4] + 1, 3, 3, gen=gen)
    d["final_conv.1.bias"] = seeded(C[4], gen=gen, scale=0.1)
    d["final_linear.0.weight"] = seeded(C[4], C[4] * 16, gen=gen)
    d["final_linear.0.bias"] = seeded(C[4], gen=gen, scale=0.1)
    d["final_linear.1.weight"] = seeded(1, C[4], gen=gen)
    d["final_linear.1.bias"] = seeded(1, gen=gen, scale=0.1)
    return d


def ros_reference_logits(d: dict, img: torch.Tensor) -> torch.Tensor:
    """rosinality Discriminator.forward (ResBlocks, minibatch std with group 4)."""
    def conv(x, w, **kw):
        return F.conv2d(x, w / math.sqrt(w[0].numel()), **kw)

    out = lrelu(conv(img, d["convs.0.0.weight"]) + d["convs.0.1.bias"][None, :, None, None])
    for j in (1, 2):
        p = f"convs.{j}"
        h = lrelu(conv(out, d[f"{p}.conv1.0.weight"], padding=1) + d[f"{p}.conv1.1.bias"][None, :, None, None])
        h = conv(blur(h, (2, 2)), d[f"{p}.conv2.1.weight"], stride=2)
        h = lrelu(h + d[f"{p}.conv2.2.bias"][None, :, None, None])
        s = conv(blur(out, (1, 1)), d[f"{p}.skip.1.weight"], stride=2)
        out = (h + s) / SQRT2
    N, Ch, H, Wd = out.shape
    group = min(N, 4)
    std = out.view(group, -1, 1, Ch, H, Wd)
    std = torch.sqrt(std.var(0, unbiased=False) + 1e-8).mean([2, 3, 4], keepdim=True).squeeze(2)
    out = torch.cat([out, std.repeat(group, 1, H, Wd)], 1)
    out = lrelu(conv(out, d["final_conv.0.weight"], padding=1) + d["final_conv.1.bias"][None, :, None, None])
    out = dense(out.view(N, -1), d["final_linear.0.weight"], d["final_linear.0.bias"], act=True)
    return dense(out, d["final_linear.1.weight"], d["final_linear.1.bias"])


# -- NVIDIA layout -------------------------------------------------------------------------------

def _reconstruct_persistent_obj(meta):  # stand-in, only used while pickling
    raise AssertionError("never called: the importer must not use it")


class _Persistent:
    """Pickles exactly like an NVIDIA persistent module: reduce to the reconstruct function."""

    def __init__(self, meta: dict):
        self.meta = meta

    def __reduce__(self):
        return (_reconstruct_persistent_obj, (self.meta,))


class EasyDict(dict):
    """Stand-in for dnnlib.util.EasyDict."""


def nv_module(class_name: str, params=None, buffers=None, modules=None, **attrs) -> _Persistent:
    state = {"training": False,
             "_parameters": collections.OrderedDict((k, torch.nn.Parameter(v, requires_grad=False))
                                                    for k, v in (params or {}).items()),
             "_buffers": collections.OrderedDict(buffers or {}),
             "_non_persistent_buffers_set": set(),
             "_modules": collections.OrderedDict(modules or {}),
             "_init_args": (), "_init_kwargs": EasyDict(), **attrs}
    return _Persistent({"type": "class", "version": 6, "module_src": "# network source (never run)",
                        "class_name": class_name, "state": state})


def nv_fc(weight, bias, lr_mul=1.0, act="linear") -> _Persistent:
    return nv_module("FullyConnectedLayer", {"weight": weight, "bias": bias}, activation=act,
                     weight_gain=np.float64(lr_mul / np.sqrt(weight.shape[1])), bias_gain=lr_mul)


def nv_generator(gen: torch.Generator, lr_mul: float = 0.05, n_mlp: int = 3, clamp=None,
                 weight_scale: float = 1.0) -> tuple[_Persistent, dict]:
    """An NVIDIA Generator record tree plus its flat state dict (for the reference forward)."""
    flat: dict = {}

    def take(name: str, t: torch.Tensor) -> torch.Tensor:
        flat[name] = t
        return t

    fcs = {f"fc{i}": nv_fc(take(f"mapping.fc{i}.weight", seeded(W, Z if i == 0 else W, gen=gen, scale=1 / lr_mul)),
                           take(f"mapping.fc{i}.bias", seeded(W, gen=gen, scale=1.0)), lr_mul, "lrelu")
           for i in range(n_mlp)}
    mapping = nv_module("MappingNetwork", modules=fcs,
                        buffers={"w_avg": take("mapping.w_avg", seeded(W, gen=gen))},
                        z_dim=Z, c_dim=0, w_dim=W, num_ws=6, num_layers=n_mlp, w_avg_beta=0.995)
    filt = fir_kernel()

    def layer(name: str, cin: int, cout: int, r: int, up: int) -> _Persistent:
        affine = nv_fc(take(f"{name}.affine.weight", seeded(cin, W, gen=gen)),
                       take(f"{name}.affine.bias", seeded(cin, gen=gen, scale=0.2, offset=1.0)))
        return nv_module(
            "SynthesisLayer",
            {"weight": take(f"{name}.weight", seeded(cout, cin, 3, 3, gen=gen, scale=weight_scale)),
             "noise_strength": take(f"{name}.noise_strength", seeded(gen=gen, scale=0.5).reshape([])),
             "bias": take(f"{name}.bias", seeded(cout, gen=gen, scale=0.2))},
            {"resample_filter": filt, "noise_const": take(f"{name}.noise_const", seeded(r, r, gen=gen))},
            {"affine": affine}, resolution=r, up=up, use_noise=True, activation="lrelu",
            conv_clamp=clamp, padding=1, act_gain=np.float64(np.sqrt(2)))

    def torgb(name: str, cin: int) -> _Persistent:
        affine = nv_fc(take(f"{name}.affine.weight", seeded(cin, W, gen=gen)),
                       take(f"{name}.affine.bias", seeded(cin, gen=gen, scale=0.2, offset=1.0)))
        return nv_module("ToRGBLayer", {"weight": take(f"{name}.weight", seeded(3, cin, 1, 1, gen=gen)),
                                        "bias": take(f"{name}.bias", seeded(3, gen=gen, scale=0.2))},
                         modules={"affine": affine}, conv_clamp=clamp,
                         weight_gain=np.float64(1 / np.sqrt(cin)))

    blocks = {}
    for r in (4, 8, 16):
        p = f"synthesis.b{r}"
        mods, params = {}, {}
        if r == 4:
            params["const"] = take(f"{p}.const", seeded(C[4], 4, 4, gen=gen))
        else:
            mods["conv0"] = layer(f"{p}.conv0", C[r // 2], C[r], r, 2)
        mods["conv1"] = layer(f"{p}.conv1", C[r], C[r], r, 1)
        mods["torgb"] = torgb(f"{p}.torgb", C[r])
        blocks[f"b{r}"] = nv_module("SynthesisBlock", params, {"resample_filter": filt}, mods,
                                    in_channels=0 if r == 4 else C[r // 2], w_dim=W, resolution=r,
                                    img_channels=3, is_last=(r == RES), architecture="skip",
                                    use_fp16=False, channels_last=False, num_conv=1 if r == 4 else 2,
                                    num_torgb=1)
    synthesis = nv_module("SynthesisNetwork", modules=blocks, w_dim=W, img_resolution=RES,
                          img_resolution_log2=4, img_channels=3, block_resolutions=[4, 8, 16], num_ws=6)
    G = nv_module("Generator", modules={"synthesis": synthesis, "mapping": mapping}, z_dim=Z, c_dim=0,
                  w_dim=W, img_resolution=RES, img_channels=3, num_ws=6)
    return G, flat


def nv_reference_image(s: dict, z: torch.Tensor, psi: float, lr_mul: float) -> torch.Tensor:
    """stylegan2-ada-pytorch Generator.forward with noise_mode='const', written out directly."""
    x = pixel_norm(z)
    i = 0
    while f"mapping.fc{i}.weight" in s:
        x = dense(x, s[f"mapping.fc{i}.weight"], s[f"mapping.fc{i}.bias"], lr_mul=lr_mul, act=True)
        i += 1
    ws = s["mapping.w_avg"].lerp(x, psi)[:, None].repeat(1, 6, 1)

    def layer(name: str, x: torch.Tensor, w: torch.Tensor, up: bool) -> torch.Tensor:
        style = dense(w, s[f"{name}.affine.weight"], s[f"{name}.affine.bias"])
        x = modconv(x, s[f"{name}.weight"], style, True, up)
        x = x + s[f"{name}.noise_const"] * s[f"{name}.noise_strength"]
        return lrelu(x + s[f"{name}.bias"][None, :, None, None])

    def torgb(name: str, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        style = dense(w, s[f"{name}.affine.weight"], s[f"{name}.affine.bias"]) / math.sqrt(x.shape[1])
        return modconv(x, s[f"{name}.weight"], style, False) + s[f"{name}.bias"][None, :, None, None]

    x = s["synthesis.b4.const"].repeat(z.shape[0], 1, 1, 1)
    x = layer("synthesis.b4.conv1", x, ws[:, 0], False)
    img = torgb("synthesis.b4.torgb", x, ws[:, 1])
    for k, r in enumerate((8, 16)):
        p = f"synthesis.b{r}"
        x = layer(f"{p}.conv0", x, ws[:, 1 + 2 * k], True)
        x = layer(f"{p}.conv1", x, ws[:, 2 + 2 * k], False)
        img = upsample(img) + torgb(f"{p}.torgb", x, ws[:, 3 + 2 * k])
    return img


def nv_discriminator() -> _Persistent:
    gen = torch.Generator().manual_seed(7)
    filt = fir_kernel()

    def conv(cin, cout, k, bias=True, **attrs):
        params = {"weight": seeded(cout, cin, k, k, gen=gen)}
        if bias:
            params["bias"] = seeded(cout, gen=gen, scale=0.1)
        return nv_module("Conv2dLayer", params, {"resample_filter": filt}, conv_clamp=None, **attrs)

    blocks = {}
    for r in (16, 8):
        mods = {"conv0": conv(C[r], C[r], 3), "conv1": conv(C[r], C[r // 2], 3, down=2),
                "skip": conv(C[r], C[r // 2], 1, bias=False, down=2)}
        if r == 16:
            mods["fromrgb"] = conv(3, C[r], 1)
        blocks[f"b{r}"] = nv_module("DiscriminatorBlock", buffers={"resample_filter": filt}, modules=mods,
                                    in_channels=0 if r == 16 else C[r], resolution=r,
                                    architecture="resnet", use_fp16=False)
    epi = nv_module("DiscriminatorEpilogue", modules={
        "mbstd": nv_module("MinibatchStdLayer", group_size=2, num_channels=1),
        "conv": conv(C[4] + 1, C[4], 3),
        "fc": nv_fc(seeded(C[4], C[4] * 16, gen=gen), seeded(C[4], gen=gen), act="lrelu"),
        "out": nv_fc(seeded(1, C[4], gen=gen), seeded(1, gen=gen))}, architecture="resnet", cmap_dim=0)
    blocks["b4"] = epi
    return nv_module("Discriminator", modules=blocks, c_dim=0, img_resolution=RES, img_channels=3,
                     block_resolutions=[16, 8])


@pytest.fixture()
def nvidia_modules(monkeypatch):
    """Register stand-in ``torch_utils.persistence`` / ``dnnlib.util`` modules while pickling."""
    tu, pers = types.ModuleType("torch_utils"), types.ModuleType("torch_utils.persistence")
    dn, util = types.ModuleType("dnnlib"), types.ModuleType("dnnlib.util")
    pers._reconstruct_persistent_obj = _reconstruct_persistent_obj
    util.EasyDict = EasyDict
    for mod in (tu, pers, dn, util):
        monkeypatch.setitem(sys.modules, mod.__name__, mod)
    monkeypatch.setattr(_reconstruct_persistent_obj, "__module__", "torch_utils.persistence")
    monkeypatch.setattr(EasyDict, "__module__", "dnnlib.util")

    def dump(obj, path):
        with open(path, "wb") as fh:
            pickle.dump(obj, fh, protocol=pickle.HIGHEST_PROTOCOL)
        return path
    return dump


def write_nvidia_pkl(dump, path, lr_mul=0.05):
    gen = torch.Generator().manual_seed(1)
    G_ema, flat = nv_generator(gen, lr_mul=lr_mul)
    G, flat_G = nv_generator(torch.Generator().manual_seed(1), lr_mul=lr_mul, weight_scale=0.5)
    data = {"G": G, "D": nv_discriminator(), "G_ema": G_ema, "augment_pipe": None,
            "training_set_kwargs": EasyDict(path="ffhq.zip", resolution=RES)}
    dump(data, path)
    return flat, flat_G


# -- tests ---------------------------------------------------------------------------------------

def test_nvidia_pickle_import_reproduces_images(nvidia_modules, tmp_path):
    flat, flat_G = write_nvidia_pkl(nvidia_modules, tmp_path / "net.pkl")
    for name in ("torch_utils", "torch_utils.persistence", "dnnlib", "dnnlib.util"):
        sys.modules.pop(name)  # the importer needs none of NVIDIA's code
    G = load_generator(tmp_path / "net.pkl")
    cfg = G.cfg
    assert (cfg.mapping_layers, cfg.mapping_lr_multiplier, cfg.channel_base, cfg.channel_max) == (3, 0.05, 64, 8)
    assert G.num_ws == 6 and torch.equal(G.mapping.w_avg, flat["mapping.w_avg"])
    z = torch.from_numpy(np.random.RandomState(0).randn(3, Z)).float()
    for psi in (1.0, 0.6):
        ref = nv_reference_image(flat, z, psi, lr_mul=0.05)
        out = G(z, truncation_psi=psi, noise_mode="const")
        assert out.shape == ref.shape == (3, 3, RES, RES)
        assert torch.allclose(out, ref, atol=1e-4, rtol=1e-4), (out - ref).abs().max()

    ckpt = read_generator_checkpoint(tmp_path / "net.pkl")
    assert ckpt["meta"]["source"] == "nvidia-pkl" and "D" in ckpt
    assert torch.equal(ckpt["G"]["synthesis.b8.conv0.weight"], flat_G["synthesis.b8.conv0.weight"])
    assert not torch.equal(ckpt["G"]["synthesis.b8.conv0.weight"], ckpt["G_ema"]["synthesis.b8.conv0.weight"])
    dcfg = ckpt["config"]["D"]
    assert (dcfg["mbstd_group_size"], dcfg["architecture"], dcfg["channel_base"]) == (2, "resnet", 64)


def test_refused_pickles_name_the_class(nvidia_modules, tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    nvidia_modules({"G_ema": Evil()}, tmp_path / "evil.pkl")
    with pytest.raises(SvgenError, match=r"refusing to unpickle.*(posix|os)\.system") as err:
        load_generator(tmp_path / "evil.pkl")
    assert "evil.pkl" in str(err.value) and not marker.exists()

    # a real torch module class (not a persistent record) is refused too
    nvidia_modules({"G_ema": torch.nn.Linear(2, 2)}, tmp_path / "linear.pkl")
    with pytest.raises(SvgenError, match="torch.nn.modules.linear.Linear"):
        load_generator(tmp_path / "linear.pkl")

    # a forbidden class hidden deep inside a persistent record's state
    G, _ = nv_generator(torch.Generator().manual_seed(0))
    G.meta["state"]["_init_kwargs"] = EasyDict(hook=Evil())
    nvidia_modules({"G_ema": G}, tmp_path / "nested.pkl")
    with pytest.raises(SvgenError, match="system"):
        load_generator(tmp_path / "nested.pkl")
    assert not marker.exists()


def test_refused_and_unsupported_network_pickles(nvidia_modules, tmp_path, monkeypatch):
    tf = types.ModuleType("dnnlib.tflib.network")

    class Network:
        pass
    Network.__module__, Network.__qualname__ = "dnnlib.tflib.network", "Network"
    tf.Network = Network
    monkeypatch.setitem(sys.modules, "dnnlib.tflib", types.ModuleType("dnnlib.tflib"))
    monkeypatch.setitem(sys.modules, "dnnlib.tflib.network", tf)
    nvidia_modules((Network(), Network(), Network()), tmp_path / "tf.pkl")
    with pytest.raises(SvgenError, match="TensorFlow"):
        load_generator(tmp_path / "tf.pkl")

    nvidia_modules({"G": 1, "D": 2}, tmp_path / "nog.pkl")
    with pytest.raises(SvgenError, match="G_ema"):
        load_generator(tmp_path / "nog.pkl")

    sg3 = nv_module("Generator", modules={"mapping": nv_module("MappingNetwork"),
                                          "synthesis": nv_module("SynthesisNetwork", modules={
                                              "input": nv_module("SynthesisInput")})},
                    z_dim=Z, c_dim=0, w_dim=W, img_resolution=RES, img_channels=3)
    nvidia_modules({"G_ema": sg3}, tmp_path / "sg3.pkl")
    with pytest.raises(SvgenError, match="StyleGAN3"):
        load_generator(tmp_path / "sg3.pkl")

    (tmp_path / "cut.pkl").write_bytes((tmp_path / "sg3.pkl").read_bytes()[:100])
    with pytest.raises(SvgenError, match="cut.pkl"):
        load_generator(tmp_path / "cut.pkl")


def test_rosinality_import_reproduces_images_and_discriminator(tmp_path):
    gen = torch.Generator().manual_seed(3)
    g, d = ros_generator_state(gen), ros_discriminator_state(gen)
    latent_avg = seeded(W, gen=gen)
    args = argparse.Namespace(size=RES, n_mlp=3, channel_multiplier=2)
    torch.save({"g_ema": g, "latent_avg": latent_avg, "d": d, "g": g, "args": args}, tmp_path / "ros.pt")

    G = load_generator(tmp_path / "ros.pt")
    assert (G.cfg.mapping_layers, G.num_ws, G.img_resolution) == (3, 6, RES)
    z = torch.from_numpy(np.random.RandomState(1).randn(2, Z)).float()
    for psi in (1.0, 0.5):
        ref = ros_reference_image(g, z, latent_avg, psi)
        out = G(z, truncation_psi=psi, noise_mode="const")
        assert torch.allclose(out, ref, atol=1e-4, rtol=1e-4), (out - ref).abs().max()

    from svgen.stage1_image_gan.checkpoints import build_networks
    ckpt = read_generator_checkpoint(tmp_path / "ros.pt")
    _, _, D = build_networks(ckpt)
    img = torch.randn(4, 3, RES, RES, generator=gen)
    assert torch.allclose(D(img), ros_reference_logits(d, img), atol=1e-4, rtol=1e-4)

    # without latent_avg the W average is estimated (and said so)
    torch.save({"g_ema": g}, tmp_path / "bare.pt")
    ckpt = read_generator_checkpoint(tmp_path / "bare.pt")
    assert "estimated" in ckpt["meta"]["w_avg"] and ckpt["w_avg"].abs().sum() > 0
    assert "D" not in ckpt

    torch.save({"g_ema": {"style.1.weight": torch.zeros(2, 2)}}, tmp_path / "broken.pt")
    with pytest.raises(SvgenError, match="broken.pt: unsupported rosinality"):
        load_generator(tmp_path / "broken.pt")


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    try:
        svgen_main(args)
        code = 0
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_convert_and_generate_images(nvidia_modules, tmp_path, capsys):
    write_nvidia_pkl(nvidia_modules, tmp_path / "net.pkl")
    out = tmp_path / "generator.pt"
    code, stdout, _ = run_cli(["convert", str(tmp_path / "net.pkl"), "--out", str(out)], capsys)
    assert code == 0 and "nvidia-pkl" in stdout
    ckpt = torch.load(out, weights_only=True)
    assert ckpt["format"] == "svgen-generator" and ckpt["meta"]["source"] == "nvidia-pkl"

    grid = tmp_path / "grid.png"
    code, _, _ = run_cli(["generate-images", "--generator", str(out), "--seeds", "0-4",
                          "--trunc", "0.7", "--out", str(grid)], capsys)
    assert code == 0
    from PIL import Image
    assert Image.open(grid).size == (3 * RES, 2 * RES)  # 5 images on a 3 x 2 grid

    folder = tmp_path / "imgs"
    code, _, _ = run_cli(["generate-images", "--generator", str(tmp_path / "net.pkl"), "--seeds",
                          "3,4", "--trunc", "0.7", "--out", str(folder)], capsys)
    assert code == 0 and sorted(p.name for p in folder.iterdir()) == ["seed0003.png", "seed0004.png"]
    # the converted file and the original pickle give the same pixels for the same seed
    grid_px = np.asarray(Image.open(grid))
    assert np.array_equal(np.asarray(Image.open(folder / "seed0003.png")), grid_px[RES:, :RES])

    # latest.pt-style input (extra training keys) is exported without them
    full = dict(ckpt, step=5, G_opt={"state": {}})
    torch.save(full, tmp_path / "latest.pt")
    code, _, _ = run_cli(["convert", str(tmp_path / "latest.pt"), "--out", str(tmp_path / "e.pt")], capsys)
    assert code == 0 and "step" not in torch.load(tmp_path / "e.pt", weights_only=True)


def test_cli_errors(tmp_path, capsys, random_generator_path):
    code, _, err = run_cli(["convert", str(tmp_path / "missing.pkl"), "--out", str(tmp_path / "o.pt")], capsys)
    assert code == 1 and err.strip() == f"svgen: error: {tmp_path / 'missing.pkl'}: checkpoint does not exist"

    torch.save({"format": "svgen-motion", "version": 1}, tmp_path / "motion.pt")
    code, _, err = run_cli(["convert", str(tmp_path / "motion.pt"), "--out", str(tmp_path / "o.pt")], capsys)
    assert code == 1 and "svgen-motion" in err and err.startswith("svgen: error: ")
    assert not (tmp_path / "o.pt").exists()

    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = run_cli(["convert", str(random_generator_path), "--out", str(blocker / "g.pt")], capsys)
    assert code == 1 and err.startswith("svgen: error: ") and len(err.strip().splitlines()) == 1
    code, _, err = run_cli(["generate-images", "--generator", str(random_generator_path), "--seeds", "0",
                            "--out", str(blocker / "grid.png")], capsys)
    assert code == 1 and err.startswith("svgen: error: ")
    code, _, err = run_cli(["generate-images", "--generator", str(random_generator_path), "--seeds", "x",
                            "--out", str(tmp_path / "g.png")], capsys)
    assert code == 2 and "--seeds" in err
    for cmd in ("convert", "generate-images"):
        code, stdout, _ = run_cli([cmd, "--help"], capsys)
        assert code == 0 and "--out" in stdout
    assert not list(tmp_path.glob("**/*.tmp*"))


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("true",))


@pytest.mark.parametrize("payload, blocked", [
    (_RunsCode(), r"(posix|nt)\.system"),                     # torch: "... GLOBAL posix.system whose module posix is blocked"
    (argparse.ArgumentParser, r"argparse\.ArgumentParser"),   # torch: "Unsupported global: GLOBAL argparse.ArgumentParser"
])
def test_unsafe_torch_file_names_the_global(tmp_path, payload, blocked):
    path = tmp_path / "unsafe.pt"
    torch.save({"G_ema": payload}, path)
    with pytest.raises(SvgenError, match=blocked) as err:
        load_generator(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}: ") and "\n" not in msg
    assert "svgen refuses to run code from checkpoints" in msg
    assert "weights_only" not in msg and "False" not in msg
