"""MS-SSIM (own implementation), LPIPS / ArcFace identity loss from user weight files."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from svgen.inversion.backbone import BACKBONE_PRESETS, backbone_to_arcface_state
from svgen.inversion.losses import (LPIPS, ArcFaceIRSE, IDLoss, ReconstructionLoss, latent_l2,
                                    load_arcface, load_lpips, ms_ssim, pixel_l2)
from svgen.utils.errors import SvgenError


def _smooth_images(n: int, size: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, size // 4, size // 4, generator=g)
    return torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear") * 2 - 1


def test_single_scale_matches_scikit_image():
    from skimage.metrics import structural_similarity

    x = _smooth_images(1, 48, 0)
    y = (x + 0.15 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))).clamp(-1, 1)
    ours = float(ms_ssim(x, y, max_scales=1))
    a = ((x[0].permute(1, 2, 0).numpy() + 1) / 2).astype(np.float64)
    b = ((y[0].permute(1, 2, 0).numpy() + 1) / 2).astype(np.float64)
    ref = structural_similarity(a, b, channel_axis=2, data_range=1.0, gaussian_weights=True,
                                sigma=1.5, use_sample_covariance=False)
    assert abs(ours - ref) < 2e-3, (ours, ref)


def test_ms_ssim_properties():
    x = _smooth_images(3, 64, 2)
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(ms_ssim(x, x), torch.ones(3), atol=1e-5)
    values = [float(ms_ssim(x, (x + s * noise).clamp(-1, 1)).mean()) for s in (0.05, 0.2, 0.6)]
    assert values[0] > values[1] > values[2] and values[0] > 0.9
    y = (x + 0.3 * noise).clamp(-1, 1)
    assert torch.allclose(ms_ssim(x, y), ms_ssim(y, x), atol=1e-6)
    # differentiable, and also defined for 32 px and 256 px images (fewer / all five scales)
    x32 = _smooth_images(2, 32, 4).requires_grad_(True)
    (1 - ms_ssim(x32, _smooth_images(2, 32, 5))).sum().backward()
    assert torch.isfinite(x32.grad).all() and x32.grad.abs().sum() > 0
    x128 = _smooth_images(1, 128, 6)  # large enough for all five scales
    assert 0 < float(ms_ssim(x128, (x128 + 0.2 * torch.randn_like(x128)).clamp(-1, 1))) < 1


def test_l2_losses():
    x = torch.zeros(2, 3, 4, 4)
    assert torch.allclose(pixel_l2(x, x + 0.5), torch.full((2,), 0.25))
    w = torch.zeros(2, 8, 5)
    assert torch.allclose(latent_l2(w[:, 0] + 1, w), torch.ones(2))


def _lpips_package_state(trunk: str) -> dict:
    """Random weights in the key layout of the lpips package's ``LPIPS(net=trunk)`` state dict."""
    torch.manual_seed(0)
    net = LPIPS(trunk)
    slices = {"alex": [(0, 2), (2, 5), (5, 8), (8, 10), (10, 12)],
              "vgg": [(0, 4), (4, 9), (9, 16), (16, 23), (23, 30)]}[trunk]
    state = {}
    for k, v in net.state_dict().items():
        if k.startswith("features."):
            i = int(k.split(".")[1])
            s = next(j for j, (a, b) in enumerate(slices) if a <= i < b) + 1
            state[f"net.slice{s}.{i}.{k.split('.')[2]}"] = v
        elif k.startswith("lins."):
            state[f"lin{k.split('.')[1]}.model.1.weight"] = v.abs()
    state["scaling_layer.shift"] = net.shift.clone()
    return state


def test_lpips_loads_user_weights(tmp_path):
    path = tmp_path / "lpips_alex.pth"
    torch.save(_lpips_package_state("alex"), path)
    net = load_lpips(path)
    assert net.trunk == "alex" and not any(p.requires_grad for p in net.parameters())
    x = _smooth_images(2, 64, 7)
    y = (x + 0.3 * torch.randn_like(x)).clamp(-1, 1)
    assert torch.allclose(net(x, x), torch.zeros(2), atol=1e-6)
    d_near = net(x, (x + 0.05 * torch.randn_like(x)).clamp(-1, 1))
    d_far = net(x, y)
    assert (d_far > d_near).all() and (d_near > 0).all()
    # torchvision "features.*" + lpips "lin*" keys (a merged file) give the same network
    merged = {k.replace("net.slice", "features.").split(".", 1)[0] + "." + ".".join(k.split(".")[2:])
              if k.startswith("net.slice") else k: v for k, v in _lpips_package_state("alex").items()}
    torch.save(merged, tmp_path / "merged.pth")
    assert torch.allclose(load_lpips(tmp_path / "merged.pth")(x, y), d_far)


def test_lpips_and_id_errors_name_expected_file(tmp_path):
    with pytest.raises(SvgenError, match="LPIPS weights not found.*lpips"):
        load_lpips(tmp_path / "nope.pth")
    with pytest.raises(SvgenError, match="identity-loss weights not found.*model_ir_se50.pth"):
        load_arcface(tmp_path / "nope.pth")
    torch.save({"lin0.model.1.weight": torch.ones(1, 64, 1, 1)}, tmp_path / "partial.pth")
    with pytest.raises(SvgenError, match="LPIPS weights are incomplete"):
        load_lpips(tmp_path / "partial.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    with pytest.raises(SvgenError, match="cannot read LPIPS weights"):
        ReconstructionLoss(lpips_weights=tmp_path / "junk.pth")
    torch.save({"input_layer.0.weight": torch.zeros(64, 3, 3, 3)}, tmp_path / "id.pth")
    with pytest.raises(SvgenError, match="not an ArcFace IR-SE weight file"):
        load_arcface(tmp_path / "id.pth")


def _arcface_file_state(net: ArcFaceIRSE) -> dict:
    """Our ArcFace module's weights written in the TreB1eN InsightFace key layout."""
    state = {k[len("body."):] if k.startswith("body.") else k: v for k, v in net.state_dict().items()}
    return backbone_to_arcface_state(state, net.body.cfg)


def test_arcface_ir_se50_key_layout():
    keys = _arcface_file_state(ArcFaceIRSE(BACKBONE_PRESETS["ir_se50"]))
    assert {"input_layer.2.weight", "body.3.shortcut_layer.0.weight",
            "body.23.res_layer.5.fc2.weight", "output_layer.3.weight",
            "output_layer.4.running_var"} <= set(keys)
    assert not any(k.startswith("body.24.") for k in keys)
    assert tuple(keys["output_layer.3.weight"].shape) == (512, 512 * 7 * 7)


def test_identity_loss_from_arcface_weights(tmp_path):
    torch.manual_seed(0)
    net = ArcFaceIRSE(BACKBONE_PRESETS["tiny"]).eval()  # the ir_se50 file is 175 MB: test the path
    torch.save(_arcface_file_state(net), tmp_path / "model_ir_se50.pth")
    loaded = load_arcface(tmp_path / "model_ir_se50.pth")
    x = _smooth_images(2, 64, 8)
    y = _smooth_images(2, 64, 9)
    with torch.no_grad():
        crop = torch.nn.functional.interpolate(x[:, :, 9:56, 8:55], size=(112, 112), mode="bilinear")
        assert torch.allclose(loaded(crop), net(crop), atol=1e-5)
    loss = IDLoss(loaded)
    same = loss(x, x)
    assert torch.allclose(same, torch.zeros(2), atol=1e-5)
    assert (loss(x, y) > same + 1e-4).all()
    total, parts = ReconstructionLoss(id_weights=tmp_path / "model_ir_se50.pth")(y, x)
    assert set(parts) == {"l2", "msssim", "id"} and total.shape == (2,)
