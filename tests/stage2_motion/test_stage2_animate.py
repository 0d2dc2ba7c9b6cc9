"""`svgen animate` end to end (real photo -> align -> invert -> GRU motion + offset trick -> mp4) and
its failure modes. The chain uses real components at toy sizes: the untrained tiny generator fixture,
an untrained tiny W+ encoder, latents inverted from real MEAD frames and a GRU trained for 2 steps
(plumbing, not quality)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from svgen.utils.io import file_sha256, torch_save_atomic

from clitools import run_cli as _cli




@pytest.fixture(scope="module")
def chain(random_generator_path, real_frames_zip32, tmp_path_factory):
    """(generator, encoder, motion.pt) trained against real inverted latents."""
    from svgen.inversion.api import invert_dataset
    from svgen.inversion.encoders import build_encoder, encoder_checkpoint, make_encoder_config
    from svgen.stage1_image_gan.checkpoints import load_generator
    from motiontools import train_tiny_gru

    d = tmp_path_factory.mktemp("animate")
    G = load_generator(random_generator_path)
    sha = file_sha256(random_generator_path)
    torch.manual_seed(0)
    E = build_encoder(make_encoder_config("w+", "tiny", G.num_ws, G.w_dim, G.img_resolution),
                      w_avg=G.mapping.w_avg)
    enc = d / "encoder.pt"
    torch_save_atomic(encoder_checkpoint(E, None, sha, meta={"note": "untrained (test)"}), enc)
    latents = invert_dataset(G, E.eval(), real_frames_zip32, d / "latents.h5", generator_sha256=sha,
                             encoder_sha256=file_sha256(enc), show_progress=False)
    motion = train_tiny_gru(latents, d / "motion", random_generator_path, enc)
    return random_generator_path, enc, motion, G


def _photo(shared):
    return shared / "data" / "photos" / "hyperstyle_aligned" / "pitt.jpg"


def test_animate_writes_playable_mp4_latents_and_settings(chain, shared, tmp_path, capsys):
    from svgen.preprocessing.video_io import iter_frames, probe

    _, _, motion, G = chain
    out = tmp_path / "out.mp4"
    code, stdout, err = _cli(capsys, "animate", "--identity", _photo(shared), "--motion", motion,
                             "--frames", 30, "--fps", 20, "--seed", 3, "--out", out, "--device", "cpu")
    assert code == 0, err
    info = probe(out)
    assert info.num_frames == 30 and info.fps == pytest.approx(20.0)
    assert info.width == G.img_resolution and info.height == G.img_resolution
    frames = list(iter_frames(out))
    assert len(frames) == 30 and frames[0].shape == (G.img_resolution, G.img_resolution, 3)
    lat = np.load(out.with_suffix(".npy"))
    assert lat.shape == (1, 30, G.num_ws, G.w_dim) and np.isfinite(lat).all()
    settings = json.loads(out.with_suffix(".json").read_text())
    assert settings["settings"]["seed"] == 3 and settings["resolved"]["frames"] == 30
    assert settings["resolved"]["generator"] == str(chain[0].resolve())      # default from motion.pt
    assert settings["motion"][0]["offset"]["mode"] == "pca"
    assert settings["resolved"]["generator_sha256"] == file_sha256(chain[0])
    # the rendered video shows these latents: re-render frame 5 and compare with the decoded frame
    with torch.no_grad():
        img = G.synthesis(torch.from_numpy(lat[0, 5:6]), noise_mode="const")
    ref = ((img.clamp(-1, 1) + 1) * 127.5).round().byte()[0].permute(1, 2, 0).numpy()
    assert np.abs(ref.astype(float) - frames[5].astype(float)).mean() < 12    # lossy H.264 of 32 px frames


def test_animate_grid_naive_offset_and_driving(chain, shared, tmp_path, capsys):
    from svgen.preprocessing.video_io import probe

    gen, enc, motion, G = chain
    out = tmp_path / "grid.mp4"
    code, _, err = _cli(capsys, "animate", "--identity", _photo(shared), "--motion", motion, "--generator", gen,
                        "--encoder", enc, "--frames", 6, "--grid", 3, "--offset", "naive", "--landmarks", "none",
                        "--out", out)
    assert code == 0, err
    info = probe(out)
    assert (info.width, info.height, info.num_frames) == (3 * G.img_resolution, G.img_resolution, 6)
    lat = np.load(out.with_suffix(".npy"))
    assert lat.shape == (3, 6, G.num_ws, G.w_dim)
    assert not np.allclose(lat[0], lat[1])                                  # different seeds
    np.testing.assert_allclose(lat[0, 0], lat[1, 0], atol=1e-4)             # naive: all start at the identity

    drive = tmp_path / "drive.mp4"
    video = shared / "data" / "videos" / "dreamtalk_mead" / "M030_front_neutral_level1_001.mp4"
    # (the photo and the MEAD clip are already aligned crops: skip landmark detection here)
    code, _, err = _cli(capsys, "animate", "--identity", _photo(shared), "--driving", video, "--generator", gen,
                        "--encoder", enc, "--frames", 12, "--landmarks", "none", "--out", drive)
    assert code == 0, err
    info = probe(drive)
    assert info.num_frames == 12 and info.fps == pytest.approx(25.0)
    settings = json.loads(drive.with_suffix(".json").read_text())
    assert settings["motion"][0]["source"] == "driving"


def test_animate_bad_inputs_fail_with_one_line_and_no_mp4(chain, shared, tmp_path, capsys):
    from PIL import Image

    gen, enc, motion, _ = chain
    grey = tmp_path / "grey.png"
    Image.fromarray(np.full((128, 128, 3), 128, np.uint8)).save(grey)
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"this is not an image")
    other = tmp_path / "other_generator.pt"            # a loadable generator that is not the one trained against
    ckpt = torch.load(gen, weights_only=True)
    ckpt["meta"] = {**ckpt.get("meta", {}), "note": "another generator"}
    torch.save(ckpt, other)
    out = tmp_path / "bad.mp4"

    def fails(*extra, match):
        args = ["animate", "--motion", motion, "--out", out, "--frames", 4, *extra]
        code, _, err = _cli(capsys, *args)
        lines = err.strip().splitlines()
        assert code == 1 and len(lines) == 1 and lines[0].startswith("svgen: error:"), err
        assert match in lines[0], lines[0]
        assert not out.exists() and not out.with_suffix(".npy").exists() and not out.with_suffix(".json").exists()
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(".bad")]   # no temp leftovers

    fails("--identity", grey, match="no face")
    fails("--identity", junk, match=str(junk))
    fails("--identity", tmp_path / "missing.jpg", match="does not exist")
    fails("--identity", _photo(shared), "--generator", other, match="another generator")
    fails("--identity", _photo(shared), "--frames", 0, match="--frames must be a positive")
    fails("--identity", _photo(shared), "--frames", -5, match="--frames must be a positive")
    fails("--identity", _photo(shared), "--offset-layers", "0-99", match="offset layers")
