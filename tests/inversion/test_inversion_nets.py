"""IR-SE backbone, GradualStyleEncoder / W encoder layouts, encoder.pt save/load."""
from __future__ import annotations

import pytest
import torch

from svgen.inversion.backbone import (BACKBONE_PRESETS, IRSEBackbone, arcface_to_backbone_state,
                                      backbone_to_arcface_state, infer_units)
from svgen.inversion.encoders import (GradualStyleEncoder, WEncoder, build_encoder,
                                      encoder_checkpoint, load_encoder, make_encoder_config)
from svgen.utils.errors import SvgenError
from svgen.utils.io import torch_save_atomic


def test_ir_se50_layout_and_stage_shapes():
    cfg = BACKBONE_PRESETS["ir_se50"]
    assert cfg.units == (3, 4, 14, 3) and cfg.num_layers == 50
    net = IRSEBackbone(cfg).eval()
    assert isinstance(net.stages, torch.nn.ModuleList) and len(net.stages) == 4
    assert [len(s) for s in net.stages] == [3, 4, 14, 3]
    # unit 0 of stage 1 keeps 64 channels -> subsampling shortcut (ArcFace's MaxPool2d(1, 2),
    # same values); the others widen -> conv shortcut
    shortcut = net.stages[0][0].shortcut_layer
    x = torch.randn(2, 64, 9, 10)
    assert torch.equal(shortcut(x), torch.nn.functional.max_pool2d(x, 1, 2))
    assert isinstance(net.stages[1][0].shortcut_layer, torch.nn.Sequential)
    n_params = sum(p.numel() for p in net.parameters())
    assert 30e6 < n_params < 32e6  # reference: ~31.0 M for IR-SE50 body + input layer
    with torch.no_grad():
        feats = net(torch.zeros(1, 3, 32, 32))
    assert [tuple(f.shape[1:]) for f in feats] == [(64, 16, 16), (128, 8, 8), (256, 4, 4), (512, 2, 2)]


def test_arcface_key_mapping_round_trip():
    cfg = BACKBONE_PRESETS["tiny"]
    net = IRSEBackbone(cfg)
    flat = backbone_to_arcface_state(net.state_dict(), cfg)
    assert any(k.startswith("body.4.") for k in flat) and not any(k.startswith("stages.") for k in flat)
    assert infer_units(flat) == sum(cfg.units)
    back = arcface_to_backbone_state(flat, cfg)
    assert set(back) == set(net.state_dict())
    IRSEBackbone(cfg).load_state_dict(back)


@pytest.mark.parametrize("num_ws,resolution,expect", [
    (6, 16, (3, 3, 0)), (8, 32, (3, 4, 1)), (12, 64, (3, 4, 5)), (14, 256, (3, 4, 7)),
    (18, 1024, (3, 4, 11))])
def test_gradual_style_heads_follow_num_ws(num_ws, resolution, expect):
    cfg = make_encoder_config("w+", "tiny", num_ws, 16, resolution)
    assert cfg.resolution == min(256, max(32, resolution))
    E = build_encoder(cfg)
    assert isinstance(E, GradualStyleEncoder) and len(E.styles) == num_ws
    coarse, middle, fine = expect
    assert (E.coarse_end, E.middle_end - E.coarse_end, num_ws - E.middle_end) == (coarse, middle, fine)
    # map2style convs reduce each tapped feature map exactly to 1x1 (log2(spatial) stride-2 convs)
    s3 = cfg.resolution // 16
    n_convs = [sum(isinstance(m, torch.nn.Conv2d) for m in head.convs) for head in E.styles]
    spatial = [s3] * coarse + [2 * s3] * middle + [4 * s3] * fine
    assert n_convs == [max(0, (s - 1).bit_length()) for s in spatial]


def test_encoders_predict_offsets_from_w_avg_and_resize_inputs():
    torch.manual_seed(0)
    for space, cls in (("w+", GradualStyleEncoder), ("w", WEncoder)):
        cfg = make_encoder_config(space, "tiny", 8, 24, 32)
        E = build_encoder(cfg).eval()
        assert isinstance(E, cls) and (E.space, E.num_ws, E.w_dim, E.resolution) == (space, 8, 24, 32)
        x = torch.rand(2, 3, 32, 32) * 2 - 1
        with torch.no_grad():
            ws0 = E(x)
            E.w_avg.fill_(3.0)
            ws1 = E(x)
            big = E(torch.nn.functional.interpolate(x, size=(64, 64), mode="nearest"))
        assert ws0.shape == (2, 8, 24)
        assert torch.allclose(ws1 - ws0, torch.full_like(ws0, 3.0), atol=1e-5)
        assert big.shape == (2, 8, 24)
        if space == "w":  # one vector broadcast to every entry
            assert torch.equal(ws0[:, 0], ws0[:, 5]) and E.encode(x).shape == (2, 24)
        else:
            assert not torch.allclose(ws0[:, 0], ws0[:, 5])


def test_w_encoder_state_layout_is_backbone_plus_head():
    E = build_encoder(make_encoder_config("w", "tiny", 8, 24, 32))
    roots = {k.split(".")[0] for k in E.state_dict()}
    assert roots == {"backbone", "head", "w_avg"}
    assert any(k.startswith("backbone.stages.3.") for k in E.state_dict())


def test_encoder_checkpoint_round_trip_and_errors(tmp_path):
    torch.manual_seed(1)
    cfg = make_encoder_config("w+", "tiny", 8, 24, 32)
    E = build_encoder(cfg, w_avg=torch.randn(24))
    E_ema = build_encoder(cfg, w_avg=E.w_avg)
    path = tmp_path / "encoder.pt"
    torch_save_atomic(encoder_checkpoint(E, E_ema, "ab" * 32, {"note": 1}), path)
    loaded = load_encoder(path)
    assert loaded.generator_sha256 == "ab" * 32 and not loaded.training
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(loaded(x), E_ema.eval()(x), atol=1e-6)  # EMA weights are the ones used

    with pytest.raises(SvgenError, match="does not exist"):
        load_encoder(tmp_path / "missing.pt")
    torch.save({"format": "svgen-generator", "version": 1}, tmp_path / "g.pt")
    with pytest.raises(SvgenError, match="svgen-encoder"):
        load_encoder(tmp_path / "g.pt")
    bad = encoder_checkpoint(E, None, "", {})
    bad["E"] = {k: v for k, v in bad["E"].items() if not k.startswith("styles.0.")}
    torch.save(bad, tmp_path / "bad.pt")
    with pytest.raises(SvgenError, match="damaged or incompatible"):
        load_encoder(tmp_path / "bad.pt")
    (tmp_path / "trunc.pt").write_bytes(path.read_bytes()[:1000])
    with pytest.raises(SvgenError, match="not a readable"):
        load_encoder(tmp_path / "trunc.pt")


def test_load_encoder_adopts_the_checkpoint_tensors_instead_of_copying(tmp_path):
    """Inference loading holds the weights once (the 256 px IR-SE-50 encoder is 0.84 GB): the module's
    tensors are the checkpoint's own, and the encoder computes exactly what a copying load computes."""
    from svgen.inversion.encoders import encoder_from_checkpoint

    torch.manual_seed(2)
    cfg = make_encoder_config("w+", "tiny", 8, 24, 32)
    E = build_encoder(cfg, w_avg=torch.randn(24)).eval()
    ckpt = encoder_checkpoint(E, None, "cd" * 32)
    adopted = encoder_from_checkpoint(ckpt, adopt=True)
    state = ckpt["E"]
    assert all(t.data_ptr() == state[k].data_ptr() for k, t in adopted.state_dict().items())
    assert not any(t.is_meta for t in (*adopted.parameters(), *adopted.buffers()))
    del state["stage"]                                  # a checkpoint written before e4e
    old = encoder_from_checkpoint(ckpt, adopt=True)
    assert int(old.stage) == cfg.num_ws - 1 and not old.stage.is_meta
    path = tmp_path / "encoder.pt"
    torch_save_atomic(encoder_checkpoint(E, None, "cd" * 32), path)
    loaded = load_encoder(path)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.equal(loaded(x), E(x))
