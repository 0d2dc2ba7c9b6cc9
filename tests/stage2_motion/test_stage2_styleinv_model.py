"""StyleInV building blocks: FFA-APE, the FFA-ST sampler, the discriminators, encoder init."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from svgen.stage2_motion.styleinv.model import (
    EncoderConfig,
    StyleInV,
    num_anchors_for,
    sample_motion_noise,
    styleinv_config_for,
)
from svgen.nn.losses import r1_penalty
from svgen.stage2_motion.styleinv.data import SparseClipSampler, SparseSamplingConfig, allowed_spans, sparse_times
from svgen.stage2_motion.styleinv.disc import DiscConfig, build_discriminator
from svgen.stage2_motion.styleinv.motion import frame_times
from svgen.stage2_motion.styleinv.transfer import encoder_config_from_file, init_encoder_from
from svgen.utils.errors import SvgenError


def tiny_encoder(resolution: int = 32, **kw) -> EncoderConfig:
    from svgen.inversion.backbone import BACKBONE_PRESETS

    return EncoderConfig(backbone=BACKBONE_PRESETS["tiny"], resolution=resolution, **kw)


@pytest.fixture(scope="module")
def si() -> StyleInV:
    torch.manual_seed(0)
    cfg = styleinv_config_for(64, 8, 32, encoder=tiny_encoder(bn_mode="train"), time_enc_dim=32)
    return StyleInV(cfg).eval()


# -- FFA-APE ----------------------------------------------------------------------------------------
def test_v0_is_identical_for_any_motion_noise(si: StyleInV) -> None:
    z_a = torch.randn(5, 9, 64)
    z_b = torch.randn(5, 9, 64) * 3.0
    t = torch.zeros(5, 1)
    v_a, v_b = si.ffa_ape(z_a, t), si.ffa_ape(z_b, t)
    assert torch.equal(v_a, v_b)
    assert torch.equal(v_a[0], v_a[4])
    # ... and the same is not true a little later (the noise does drive the motion)
    t1 = torch.full((5, 1), 5.0)
    assert not torch.allclose(si.ffa_ape(z_a, t1), si.ffa_ape(z_b, t1))
    # the whole generator: w at t = 0 does not depend on the motion noise
    x0, w0 = torch.randn(1, 3, 32, 32).expand(5, -1, -1, -1), torch.randn(1, 64).expand(5, -1)
    with torch.no_grad():
        w_a, w_b = si(x0, w0, z_a, t), si(x0, w0, z_b, t)
    torch.testing.assert_close(w_a, w_b, rtol=0, atol=1e-5)


def test_motion_mapping_is_causal(si: StyleInV) -> None:
    z = torch.randn(2, 12, 64)
    z2 = z.clone()
    z2[:, 6] += 1.0
    u, u2 = si.ffa_ape.mapping(z), si.ffa_ape.mapping(z2)
    assert torch.equal(u[:, :6], u2[:, :6])           # earlier anchors untouched
    assert not torch.allclose(u[:, 6:], u2[:, 6:])    # this and later anchors change
    # the masked taps are what makes it causal: without the mask the past changes too
    mask = si.ffa_ape.mapping.conv1.tap_mask.clone()
    try:
        si.ffa_ape.mapping.conv1.tap_mask.fill_(1.0)
        assert not torch.equal(si.ffa_ape.mapping(z)[:, :6], si.ffa_ape.mapping(z2)[:, :6])
    finally:
        si.ffa_ape.mapping.conv1.tap_mask.copy_(mask)


def test_extending_a_video_never_changes_earlier_frames(si: StyleInV) -> None:
    n = 40
    delta = si.cfg.motion_z_distance
    g = torch.Generator().manual_seed(3)
    z_short = sample_motion_noise(2, num_anchors_for(n - 1, delta), 64, g)
    g = torch.Generator().manual_seed(3)
    z_long = sample_motion_noise(2, num_anchors_for(2 * n - 1, delta), 64, g)
    assert z_long.shape[1] > z_short.shape[1]
    t_short = torch.arange(n, dtype=torch.float32)[None].expand(2, -1)
    t_long = torch.arange(2 * n, dtype=torch.float32)[None].expand(2, -1)
    x0, w0 = torch.randn(2, 3, 32, 32), torch.randn(2, 64)
    with torch.no_grad():
        w_short = si(x0, w0, z_short, t_short)
        w_long = si(x0, w0, z_long, t_long)
    torch.testing.assert_close(w_short, w_long[:, :n], rtol=0, atol=1e-5)


def test_continuity_at_anchor_boundaries(si: StyleInV) -> None:
    z = torch.randn(1, 9, 64)
    u = si.ffa_ape.mapping(z)
    delta = si.cfg.motion_z_distance
    for k in (1, 2, 5):
        a = float(k * delta)
        t = torch.tensor([[a - 1e-3, a, a + 1e-3]])
        v = si.ffa_ape(z, t)[0]
        # at an anchor v equals A(u_anchor) exactly; both sides converge to it
        torch.testing.assert_close(v[1], si.ffa_ape.time_encoder.aligner(u[0, k]), rtol=0, atol=1e-5)
        jump = max((v[0] - v[1]).abs().max().item(), (v[2] - v[1]).abs().max().item())
        step = (si.ffa_ape(z, torch.tensor([[a + 1.0]]))[0, 0] - v[1]).abs().max().item()
        assert jump < 0.02 * max(step, 1e-3) + 1e-3


def test_fractional_times_interpolate_smoothly(si: StyleInV) -> None:
    z = torch.randn(1, 9, 64)
    t = torch.arange(0, 40, 0.25)[None]
    v = si.ffa_ape(z, t)[0]                       # [160, V]
    assert torch.isfinite(v).all()
    d = (v[1:] - v[:-1]).norm(dim=1)              # quarter-frame steps
    d_int = (v[4:] - v[:-4]).norm(dim=1)          # whole-frame steps
    assert d.max() < 0.6 * d_int.max() + 1e-6     # no jumps between frames
    assert not torch.allclose(v[1], v[0])         # fractional t is not snapped to integers
    with torch.no_grad():
        w = si(torch.randn(1, 3, 32, 32), torch.randn(1, 64), z, torch.tensor([[0.0, 2.5, 7.25, 30.75]]))
    assert w.shape == (1, 4, 64) and torch.isfinite(w).all()


def test_frame_times_follow_fps_and_slowmo() -> None:
    np.testing.assert_allclose(frame_times(4, 25.0, 25.0), [0, 1, 2, 3])
    np.testing.assert_allclose(frame_times(4, 50.0, 25.0), [0, 0.5, 1, 1.5])
    np.testing.assert_allclose(frame_times(3, 25.0, 25.0, slowmo=4), [0, 0.25, 0.5])
    np.testing.assert_allclose(frame_times(2, None, 30.0, time_offset=10), [10, 11])
    for bad in (dict(frames=0, fps=25.0), dict(frames=3, fps=-1.0)):
        with pytest.raises(SvgenError):
            frame_times(bad["frames"], bad["fps"], 25.0)


# -- FFA-ST sampler ----------------------------------------------------------------------------------
def test_sparse_times_follow_the_specification() -> None:
    cfg = SparseSamplingConfig(num_sample=3, max_span=32, nframes=128)
    assert allowed_spans(128, 32) == [2, 4, 8, 16, 32]
    assert allowed_spans(128, 128) == [2, 4, 8, 16, 32, 64]          # capped at the window - 1
    g = torch.Generator().manual_seed(0)
    spans = set()
    for fractional in (False, True):
        for _ in range(400):
            t = sparse_times(128, cfg, fractional, g)
            assert len(t) == 4 and t[0] == 0.0
            assert t == sorted(t)
            d = t[3] - t[1]
            assert d in (2, 4, 8, 16, 32)
            spans.add(d)
            assert t[1] < t[2] < t[3] and float(t[2] - t[1]).is_integer()   # middle frame strictly inside
            assert 0 <= t[1] <= 127 - d and t[3] <= 127
            if not fractional:
                assert all(float(x).is_integer() for x in t)
    assert spans == {2, 4, 8, 16, 32}
    offsets = [sparse_times(128, cfg, True, g)[1] for _ in range(200)]
    assert any(not float(o).is_integer() for o in offsets)           # fractional offsets for G


def test_short_clips_are_clamped_or_refused() -> None:
    cfg = SparseSamplingConfig(max_span=32, nframes=128)
    sampler = SparseClipSampler([10, 2, 300], cfg, names=["short", "tiny", "long"])
    assert sampler.skipped == ["tiny"]
    g = torch.Generator().manual_seed(1)
    clips, starts, t = sampler.sample_real(500, g)
    for c, s, tt in zip(clips, starts, t.tolist()):
        n = sampler.lengths[c]
        assert c != 1
        assert s + tt[-1] <= n - 1                                    # never past the clip's end
        if c == 0:
            assert s == 0 and tt[3] - tt[1] in (2, 4, 8)              # spans clamped to 10 frames
    assert 0 in clips and 2 in clips
    fake = sampler.sample_fake_times(500, g)
    assert (fake[:, 0] == 0).all() and (fake[:, 1:] > fake[:, :-1]).all()
    assert float(fake[:, 3].max()) <= 127
    with pytest.raises(SvgenError, match="shorter than 3 frames"):
        SparseClipSampler([1, 2], cfg, names=["a", "b"], source="latents.h5")


# -- discriminators ----------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["latent", "image"])
def test_discriminators_score_clips_conditioned_on_time_gaps(mode: str) -> None:
    torch.manual_seed(0)
    cfg = DiscConfig(mode=mode, w_dim=32, hidden=64, cmap_dim=32, gap_embed_dim=16, img_resolution=32,
                     channel_base=512, channel_max=32, mbstd_group_size=2)
    D = build_discriminator(cfg)
    x = torch.randn(4, 4, 32) if mode == "latent" else torch.randn(4, 4, 3, 32, 32)
    x.requires_grad_(True)
    t1 = torch.tensor([[0.0, 3, 5, 7]] * 4)
    t2 = torch.tensor([[0.0, 40, 60, 92]] * 4)
    y1 = D(x, t1)
    assert y1.shape == (4, 1) and torch.isfinite(y1).all()
    assert not torch.allclose(y1, D(x, t2))                           # the time gaps matter
    r1 = r1_penalty(y1, x)
    assert r1.shape == (4,) and (r1 > 0).all()
    r1.mean().backward()
    assert all(p.grad is not None for p in D.parameters() if p.requires_grad and p.ndim > 1
               and "embed" not in str(p.shape))


# -- encoder initialisation from a W encoder --------------------------------------------------------
def test_encoder_starts_from_a_trained_w_encoder(tmp_path) -> None:
    from svgen.inversion.encoders import build_encoder, encoder_checkpoint, make_encoder_config, load_encoder

    torch.manual_seed(0)
    ecfg = make_encoder_config("w", "tiny", num_ws=8, w_dim=64, img_resolution=32)
    E = build_encoder(ecfg, w_avg=torch.randn(64))
    for m in E.modules():            # non-trivial BN statistics, as after training
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 2.0)
    path = tmp_path / "encoder.pt"
    torch.save(encoder_checkpoint(E, None, generator_sha256="x"), path)
    enc_cfg, bb, head, meta = encoder_config_from_file(path)
    assert meta["space"] == "w" and head is not None and enc_cfg.bn_mode == "frozen"
    # without the AdaIN blocks SI's encoder IS the W encoder
    cfg = styleinv_config_for(64, 8, 32, encoder=dataclasses.replace(enc_cfg, adain=False), time_enc_dim=32)
    si = StyleInV(cfg)
    summary = init_encoder_from(si, bb, head)
    assert summary["head"]
    si.train()                       # frozen BN: training mode uses the W encoder's statistics
    E = load_encoder(path)
    img = torch.rand(3, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        delta = si.encoder(img, torch.zeros(3, 2, cfg.style_dim))      # [3, 2, 64]
        expect = E.encode(img) - E.w_avg
    torch.testing.assert_close(delta[:, 0], expect, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(delta[:, 1], expect, rtol=1e-4, atol=1e-4)
    # with AdaIN blocks: backbone weights copied, AdaIN blocks random, styles change the output
    si2 = StyleInV(styleinv_config_for(64, 8, 32, encoder=enc_cfg, time_enc_dim=32))
    init_encoder_from(si2, bb, head)
    for k, v in bb.items():
        assert torch.equal(si2.encoder.backbone.state_dict()[k], v)
    with torch.no_grad():
        d = si2.encoder(img, torch.randn(3, 2, cfg.style_dim))
    assert not torch.allclose(d[:, 0], d[:, 1])


def test_plain_backbone_shapes_for_the_published_layout() -> None:
    cfg = styleinv_config_for(512, 14, 256)
    assert cfg.v_dim == 512 and cfg.z_motion_dim == 512 and cfg.motion_z_distance == 16
    assert cfg.encoder.backbone.units == (3, 4, 14, 3) and cfg.encoder.backbone.channels == (64, 128, 256, 512)
    assert math.isclose(cfg.motion_lr_multiplier, 0.01) and cfg.motion_kernel_size == 11
    assert num_anchors_for(127, 16) == 9


def test_encoder_config_is_the_inversion_backbone_and_old_flat_configs_load() -> None:
    """StyleInV's encoder config holds the inversion stage's BackboneConfig; a checkpoint written when
    the backbone fields were flat (``{"stem_channels": 8, ...}``) rebuilds the same config."""
    from svgen.inversion.backbone import BackboneConfig
    from svgen.stage2_motion.styleinv.model import config_from_checkpoint, encoder_config_from_dict
    from svgen.utils.config import config_to_dict

    old = {"in_channels": 3, "stem_channels": 8, "channels": [8, 16, 16, 32], "units": [1, 1, 2, 1],
           "se_reduction": 4, "resolution": 32, "adain": False, "bn_mode": "train"}
    enc = encoder_config_from_dict(old)
    assert enc.backbone == BackboneConfig(3, 8, (8, 16, 16, 32), (1, 1, 2, 1), 4)
    assert (enc.resolution, enc.adain, enc.bn_mode) == (32, False, "train")
    assert encoder_config_from_dict(config_to_dict(enc)) == enc          # the new layout round-trips
    model = config_to_dict(styleinv_config_for(64, 8, 32, time_enc_dim=32))
    model["encoder"] = old
    cfg = config_from_checkpoint({"config": {"model": model}})
    assert cfg.encoder == enc and cfg.time_enc_dim == 32
    assert StyleInV(cfg).encoder.backbone.cfg == enc.backbone
