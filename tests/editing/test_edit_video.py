"""``svgen edit-video`` on a real 1080x1920 clip with a small face: size, fps, frame count and audio kept,
the face region replaced, pixels far from the face as in the source."""
from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
import torch

from svgen.utils.io import file_sha256, torch_save_atomic

from clitools import ok_cli, run_cli

FRAMES = 5


@pytest.fixture(scope="module")
def models(random_generator_path, tmp_path_factory):
    """(generator, untrained tiny W+ encoder for it, 4 GANSpace directions)."""
    from svgen.editing.directions import GanspaceConfig, ganspace, save_directions
    from svgen.inversion.encoders import build_encoder, encoder_checkpoint, make_encoder_config
    from svgen.stage1_image_gan.checkpoints import load_generator

    d = tmp_path_factory.mktemp("editvideo")
    G = load_generator(random_generator_path)
    torch.manual_seed(0)
    E = build_encoder(make_encoder_config("w+", "tiny", G.num_ws, G.w_dim, G.img_resolution), w_avg=G.mapping.w_avg)
    enc = d / "encoder.pt"
    torch_save_atomic(encoder_checkpoint(E, None, file_sha256(random_generator_path), meta={"note": "test"}), enc)
    dirs = save_directions(ganspace(G, GanspaceConfig(num_components=4, num_samples=2000)), d / "dirs.pt")
    return random_generator_path, enc, dirs


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255 ** 2 / mse)


@pytest.mark.slow
def test_edit_video_keeps_size_fps_frames_audio_and_background(models, shared, tmp_path, capsys):
    from svgen.preprocessing.video_io import ffmpeg_exe, iter_frames, probe

    gen, enc, dirs = models
    src = shared / "data" / "videos" / "latentsync" / "demo1_video.mp4"
    out = tmp_path / "edited.mp4"
    stdout, _ = ok_cli(capsys, "edit-video", src, "--generator", gen, "--encoder", enc, "--edit", f"{dirs}:0:2",
                       "--out", out, "--max-frames", FRAMES, "--device", "cpu")
    assert "audio copied" in stdout
    info, src_info = probe(out), probe(src)
    assert (info.width, info.height, info.num_frames) == (1080, 1920, FRAMES)
    assert info.fps == pytest.approx(src_info.fps)
    streams = subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", str(out)], capture_output=True, text=True).stderr
    assert "Audio: aac" in streams
    side = json.loads(out.with_suffix(".json").read_text())
    assert side["frames_edited"] == FRAMES and side["edits"][0]["strength"] == 2 and side["audio_copied"]
    x0, y0, x1, y1 = side["face_region"]
    assert 0 < x1 - x0 < 600 and 0 < y1 - y0 < 600               # a small face in a tall frame
    got = np.stack(list(iter_frames(out)))
    ref = np.stack(list(iter_frames(src, max_frames=FRAMES)))
    far = np.ones(got.shape[1:3], bool)                          # pixels 40 px or more away from every crop quad
    far[max(0, int(y0) - 40):int(y1) + 40, max(0, int(x0) - 40):int(x1) + 40] = False
    assert _psnr(got[:, far], ref[:, far]) >= 30
    face = np.s_[:, int(y0) + (int(y1) - int(y0)) // 3:int(y1) - (int(y1) - int(y0)) // 3,
                 int(x0) + (int(x1) - int(x0)) // 3:int(x1) - (int(x1) - int(x0)) // 3]
    assert _psnr(got[face], ref[face]) < 25                      # the face itself was replaced


def test_edit_video_refusals(models, shared, tmp_path, capsys):
    gen, enc, dirs = models
    src = shared / "data" / "videos" / "latentsync" / "demo1_video.mp4"
    for args, match in ((("--out", tmp_path / "o.avi"), "output must be an .mp4"),
                        (("--out", tmp_path / "o.mp4", "--edit", f"{tmp_path / 'x.pt'}:0:1"), "x.pt: direction file")):
        code, _, err = run_cli(capsys, "edit-video", src, "--generator", gen, "--encoder", enc, *args)
        assert code == 1 and err.startswith("svgen: error: ") and match in err and err.count("\n") == 1, err
    code, _, err = run_cli(capsys, "edit-video", src, "--generator", shared.parent / "none", "--encoder", enc,
                           "--out", tmp_path / "o.mp4")
    assert code == 1 and "generator does not exist" in err
    other = tmp_path / "other.pt"
    other.write_bytes(gen.read_bytes() + b"\0")                  # another file: another sha256
    code, _, err = run_cli(capsys, "edit-video", src, "--generator", other, "--encoder", enc, "--out", tmp_path / "o.mp4")
    assert code == 1 and "encoder was trained against another generator" in err, err
    code, _, err = run_cli(capsys, "edit-video", tmp_path / "none.mp4", "--generator", gen, "--encoder", enc,
                           "--out", tmp_path / "o.mp4")
    assert code == 1 and "none.mp4: video does not exist" in err
    assert not list(tmp_path.glob("o.*"))
