"""StyleGAN2 networks, presets and svgen checkpoints (tiny CPU sizes)."""
from __future__ import annotations

import copy
import dataclasses
import math

import numpy as np
import pytest
import torch

from svgen.stage1_image_gan.checkpoints import (build_networks, load_generator,
                                                make_generator_checkpoint, save_generator)
from svgen.stage1_image_gan.layers import MinibatchStdLayer
from svgen.stage1_image_gan.networks import Discriminator, Generator
from svgen.stage1_image_gan.presets import (DiscriminatorConfig, GeneratorConfig, TrainPreset,
                                            get_preset, num_ws_for, preset_from_dict)
from svgen.utils.errors import SvgenError


def small_preset(res: int = 16, **g_overrides) -> TrainPreset:
    """A very small preset (channels 8 -> 4) for fast tests."""
    G = GeneratorConfig(z_dim=16, w_dim=16, img_resolution=res, mapping_layers=2, channel_base=64,
                        channel_max=8, **g_overrides)
    D = DiscriminatorConfig(img_resolution=res, channel_base=64, channel_max=8, mbstd_group_size=2)
    return TrainPreset(name="test", G=G, D=D, batch=4)


def make_nets(res: int = 16, seed: int = 0, **g_overrides):
    preset = small_preset(res, **g_overrides)
    torch.manual_seed(seed)
    G, D = Generator(preset.G), Discriminator(preset.D)
    with torch.no_grad():  # non-trivial noise strengths and w_avg so every mode matters
        for name, p in G.named_parameters():
            if name.endswith("noise_strength"):
                p.fill_(0.5)
        G.mapping.w_avg.normal_()
    return preset, G, D


@pytest.mark.parametrize("res", [8, 16, 32, 64])
def test_shapes_and_num_ws(res):
    preset, G, D = make_nets(res)
    assert G.num_ws == num_ws_for(res) == 2 * int(math.log2(res)) - 2
    z = torch.randn(4, G.z_dim)
    ws = G.mapping(z)
    assert ws.shape == (4, G.num_ws, G.w_dim)
    img = G.synthesis(ws, noise_mode="const")
    assert img.shape == (4, 3, res, res) and img.dtype == torch.float32
    assert torch.isfinite(img).all()
    assert D(img).shape == (4, 1)


def test_num_ws_at_1024_and_256():
    cfg = GeneratorConfig(z_dim=8, w_dim=8, img_resolution=1024, mapping_layers=1, channel_base=2048,
                          channel_max=2)
    G = Generator(cfg)
    assert G.num_ws == 18 and G.mapping(torch.randn(2, 8)).shape == (2, 18, 8)
    assert num_ws_for(256) == 14
    with pytest.raises(ValueError, match="no channels"):
        Generator(dataclasses.replace(cfg, channel_base=16))


def test_parameter_counts_match_published_networks():
    # Counts logged by stylegan2-ada-pytorch (reference notes section 3.4): exact architecture check.
    auto1024 = get_preset("auto", 1024)
    G = Generator(auto1024.G)
    assert sum(p.numel() for p in G.parameters()) == 28_794_124
    assert sum(b.numel() for b in G.buffers()) == 2_797_104
    del G
    D = Discriminator(DiscriminatorConfig(img_resolution=128, channel_base=16384))
    assert sum(p.numel() for p in D.parameters()) == 23_882_369


def test_equalized_lr_initialisation():
    _, G, D = make_nets(16)
    fc = G.mapping.fc0
    assert fc.weight_gain == pytest.approx(0.01 / math.sqrt(16)) and fc.bias_gain == 0.01
    assert fc.weight.std().item() > 50  # stored as N(0,1) / lr_multiplier
    conv = G.synthesis.b8.conv0
    assert conv.affine.bias.detach().eq(1).all()  # styles start at 1
    fresh = Generator(small_preset(16).G)
    assert all(p.item() == 0.0 for n, p in fresh.named_parameters() if n.endswith("noise_strength"))
    assert D.b16.conv0.weight_gain == pytest.approx(1 / math.sqrt(4 * 9))  # 4 channels at 16 px


def test_truncation_and_cutoff():
    _, G, _ = make_nets(16)
    z = torch.randn(3, G.z_dim)
    w = G.mapping(z)
    w_avg = G.mapping.w_avg
    assert torch.allclose(G.mapping(z, truncation_psi=0.0), w_avg.expand_as(w))
    half = G.mapping(z, truncation_psi=0.5)
    assert torch.allclose(half, w_avg + 0.5 * (w - w_avg), atol=1e-6)
    cut = G.mapping(z, truncation_psi=0.0, truncation_cutoff=2)
    assert torch.allclose(cut[:, :2], w_avg.expand(3, 2, -1))
    assert torch.equal(cut[:, 2:], w[:, 2:])


def test_w_avg_updates_only_with_update_emas():
    _, G, _ = make_nets(16)
    before = G.mapping.w_avg.clone()
    z = torch.randn(5, G.z_dim)
    G.train()
    G.mapping(z)
    assert torch.equal(G.mapping.w_avg, before)
    w = G.mapping(z, update_emas=True)[:, 0]
    expected = w.mean(0).lerp(before, 0.995)
    assert torch.allclose(G.mapping.w_avg, expected, atol=1e-6)


def test_noise_modes():
    _, G, _ = make_nets(16)
    G.eval()
    ws = G.mapping(torch.randn(2, G.z_dim))
    with torch.no_grad():
        const1, const2 = G.synthesis(ws, noise_mode="const"), G.synthesis(ws, noise_mode="const")
        rand1, rand2 = G.synthesis(ws, noise_mode="random"), G.synthesis(ws, noise_mode="random")
        none = G.synthesis(ws, noise_mode="none")
        assert torch.equal(const1, const2)
        assert not torch.allclose(rand1, rand2) and not torch.allclose(const1, none)
        for name, buf in G.named_buffers():  # const noise is exactly the stored buffers
            if name.endswith("noise_const"):
                buf.zero_()
        assert torch.allclose(G.synthesis(ws, noise_mode="const"), none)
    with pytest.raises(ValueError):
        G.synthesis(ws, noise_mode="bogus")


@pytest.mark.parametrize("training", [False, True])
def test_fused_and_non_fused_modconv_agree(training):
    _, G, _ = make_nets(32)
    G.train(training)
    ws = G.mapping(torch.randn(3, G.z_dim))
    with torch.no_grad():
        fused = G.synthesis(ws, noise_mode="const", fused_modconv=True)
        plain = G.synthesis(ws, noise_mode="const", fused_modconv=False)
        default = G.synthesis(ws, noise_mode="const")
    assert torch.allclose(fused, plain, atol=1e-5, rtol=1e-4)
    assert torch.equal(default, plain if training else fused)


def test_synthesis_architectures():
    for arch in ("orig", "resnet"):
        _, G, _ = make_nets(16, architecture=arch)
        img = G(torch.randn(2, G.z_dim), noise_mode="none")
        assert img.shape == (2, 3, 16, 16) and torch.isfinite(img).all()
        # only the last block has a ToRGB; resnet adds a 1x1 upsampling skip per block
        assert not hasattr(G.synthesis.b8, "torgb") and hasattr(G.synthesis.b16, "torgb")
        assert hasattr(G.synthesis.b8, "skip") == (arch == "resnet")


def test_conditional_generator_and_discriminator():
    preset = small_preset(16)
    G = Generator(dataclasses.replace(preset.G, c_dim=3))
    D = Discriminator(dataclasses.replace(preset.D, c_dim=3))
    c = torch.eye(3)[[0, 2]]
    img = G(torch.randn(2, 16), c)
    assert D(img, c).shape == (2, 1)
    with pytest.raises(ValueError):
        G(torch.randn(2, 16))


def test_minibatch_std_layer():
    x = torch.randn(4, 6, 3, 3)
    y = MinibatchStdLayer(group_size=2, num_channels=1)(x)
    assert y.shape == (4, 7, 3, 3)
    # groups take samples with stride N/G: {0, 2} and {1, 3}
    for members in ([0, 2], [1, 3]):
        std = x[members].std(dim=0, unbiased=False).mean()
        for i in members:
            assert torch.allclose(y[i, 6], std.expand(3, 3), atol=1e-5)
    with pytest.raises(ValueError, match="divisible"):
        MinibatchStdLayer(group_size=4)(torch.randn(6, 2, 2, 2))


def test_gradients_reach_every_parameter_and_r1_double_backward():
    _, G, D = make_nets(16)
    G.train(), D.train()
    img = G(torch.randn(4, G.z_dim), noise_mode="random")
    torch.nn.functional.softplus(-D(img)).mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in G.parameters())
    real = torch.randn(4, 3, 16, 16, requires_grad=True)
    (grad,) = torch.autograd.grad(D(real).sum(), real, create_graph=True)
    D.zero_grad()
    grad.square().sum().backward()  # R1 needs the gradient of a gradient
    assert all(p.grad is not None for n, p in D.named_parameters() if n.endswith("weight"))


def test_presets_follow_published_configs():
    tiny = get_preset("tiny", 32)
    assert (tiny.G.z_dim, tiny.G.w_dim, tiny.G.mapping_layers, tiny.batch) == (128, 128, 2, 4)
    assert (tiny.lr_G, tiny.pl_weight, tiny.style_mixing_prob) == (0.004, 0.0, 0.0)   # measured: see get_preset
    assert tiny.G.channel_max <= 64 and tiny.G.img_resolution == 32
    p256 = get_preset("paper256")
    assert (p256.batch, p256.r1_gamma, p256.ema_kimg, p256.lr_G, p256.D.mbstd_group_size) == (64, 1.0, 20.0, 0.0025, 8)
    assert (p256.G.channel_base, p256.G.mapping_layers, p256.G.img_resolution) == (16384, 8, 256)
    sg2 = get_preset("stylegan2")
    assert (sg2.G.img_resolution, sg2.G.channel_base, sg2.batch, sg2.r1_gamma, sg2.lr_G) == (1024, 32768, 32, 10.0, 0.002)
    auto256 = get_preset("auto", 256)
    assert (auto256.batch, auto256.G.mapping_layers, auto256.ema_rampup) == (16, 2, 0.05)
    assert auto256.r1_gamma == pytest.approx(0.8192) and auto256.ema_kimg == pytest.approx(5.0)
    auto1024 = get_preset("auto", 1024)
    assert auto1024.batch == 4 and auto1024.r1_gamma == pytest.approx(52.4288)
    assert auto1024.G.channel_base == 32768 and auto1024.lr_G == 0.002
    assert get_preset("auto", 256, gpus=8).batch == 64
    assert all(isinstance(b, float) for b in tiny.betas)  # torch.optim.Adam wants floats
    with pytest.raises(ValueError):
        get_preset("tiny", 128)
    with pytest.raises(ValueError):
        get_preset("paper256", 100)
    with pytest.raises(ValueError):
        get_preset("huge", 256)


def test_checkpoint_round_trip(tmp_path):
    preset, G, D = make_nets(16)
    G_ema = copy.deepcopy(G)
    with torch.no_grad():
        G_ema.synthesis.b16.conv1.weight.mul_(0.5)  # G and G_ema must stay distinct
    path = save_generator(tmp_path / "generator.pt", preset, G, G_ema, D, meta={"kimg": 1.5})
    raw = torch.load(path, weights_only=True)  # plain data only
    assert raw["format"] == "svgen-generator" and raw["version"] == 1 and raw["meta"]["kimg"] == 1.5
    assert torch.equal(raw["w_avg"], G_ema.mapping.w_avg)
    assert preset_from_dict(raw["config"]) == preset
    G2, G_ema2, D2 = build_networks(raw)
    z = torch.randn(2, G.z_dim)
    for a, b in ((G, G2), (G_ema, G_ema2)):
        a.eval(), b.eval()
        assert torch.equal(a(z, noise_mode="const"), b(z, noise_mode="const"))
    img = torch.randn(2, 3, 16, 16)
    assert torch.equal(D(img), D2(img))

    loaded = load_generator(path)
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    assert torch.equal(loaded(z, noise_mode="const"), G_ema2(z, noise_mode="const"))

    # a training latest.pt is the same dict plus optimizer / RNG / step keys
    latest = make_generator_checkpoint(preset, G, G_ema, D)
    opt_state = {"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.zeros(4)}},
                 "param_groups": [{"lr": 0.002, "betas": (0.0, 0.99), "params": [0]}]}
    latest.update(step=7, kimg=0.1, G_opt=opt_state, rng={"torch": torch.get_rng_state()})
    torch.save(latest, tmp_path / "latest.pt")
    assert torch.equal(load_generator(tmp_path / "latest.pt")(z, noise_mode="const"),
                       G_ema2(z, noise_mode="const"))


def test_checkpoint_errors(tmp_path):
    preset, G, D = make_nets(16)
    good = save_generator(tmp_path / "g.pt", preset, G, G, D)
    torch.save({"format": "svgen-encoder", "version": 1}, tmp_path / "enc.pt")
    with pytest.raises(SvgenError, match="svgen-encoder") as err:
        load_generator(tmp_path / "enc.pt")
    assert "enc.pt" in str(err.value)
    data = good.read_bytes()
    (tmp_path / "trunc.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(SvgenError, match="trunc.pt"):
        load_generator(tmp_path / "trunc.pt")
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(SvgenError, match="unrecognised"):
        load_generator(tmp_path / "text.pt")
    with pytest.raises(SvgenError, match="does not exist"):
        load_generator(tmp_path / "missing.pt")
    bad = torch.load(good, weights_only=True)
    bad["config"]["G"]["channel_max"] = 4  # weights no longer fit the config
    torch.save(bad, tmp_path / "mismatch.pt")
    with pytest.raises(SvgenError, match="do not match"):
        load_generator(tmp_path / "mismatch.pt")
    newer = torch.load(good, weights_only=True)
    newer["version"] = 99
    torch.save(newer, tmp_path / "newer.pt")
    with pytest.raises(SvgenError, match="version"):
        load_generator(tmp_path / "newer.pt")


def test_random_generator_fixture(random_generator_path):
    import svgen

    G = svgen.load_generator(random_generator_path)
    assert (G.img_resolution, G.num_ws, G.z_dim) == (32, 8, 128)
    z = torch.from_numpy(np.random.RandomState(0).randn(2, G.z_dim)).float()
    img = G(z, noise_mode="const")
    assert img.shape == (2, 3, 32, 32) and torch.isfinite(img).all()
    assert G.mapping.w_avg.abs().sum() > 0


def test_mixed_precision_blocks(monkeypatch):
    # fp16 runs only on CUDA; force it here to exercise the dtype plumbing (fp16 blocks with
    # conv_clamp, fp32 image accumulation and D epilogue) on the CPU.
    import svgen.stage1_image_gan.layers as layers

    preset = small_preset(16, num_fp16_res=2, conv_clamp=256.0)
    torch.manual_seed(0)
    G = Generator(preset.G).eval()
    D = Discriminator(dataclasses.replace(preset.D, num_fp16_res=2, conv_clamp=256.0))
    assert [b.use_fp16 for b in G.synthesis.blocks()] == [False, True, True]
    z = torch.randn(2, G.z_dim)
    ref, ref_logits = G(z, noise_mode="const"), D(torch.zeros(2, 3, 16, 16))
    monkeypatch.setattr(layers, "_block_dtype", lambda use_fp16, force_fp32, device:
                        torch.float16 if use_fp16 and not force_fp32 else torch.float32)
    half = G(z, noise_mode="const")
    assert half.dtype == torch.float32 and torch.allclose(half, ref, atol=0.05)
    assert torch.equal(G(z, noise_mode="const", force_fp32=True), ref)
    logits = D(torch.zeros(2, 3, 16, 16))
    assert logits.dtype == torch.float32 and torch.allclose(logits, ref_logits, atol=0.05)
