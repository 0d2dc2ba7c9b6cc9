"""Non-square pixels: a clip stored with a sample aspect ratio (ffmpeg ``setsar``) decodes at its
display size and aligns like its square-pixel twin; with rotation metadata on top as well."""
from __future__ import annotations

import subprocess

import numpy as np
import pytest

from svgen.preprocessing.dataset import AlignedDataset
from svgen.preprocessing.videos import preprocess_videos
from svgen.preprocessing.video_io import display_size, ffmpeg_exe, iter_frames, probe

FRAMES = 8


def _ffmpeg(*args: str) -> None:
    subprocess.run([ffmpeg_exe(), "-v", "error", "-y", *args], check=True)


@pytest.fixture(scope="module")
def twins(shared, tmp_path_factory):
    """(square-pixel 240x200 clip, the same stored 256x200 with SAR 15:16, that one rotated 90°)."""
    src = shared / "data" / "videos" / "dreamtalk_mead" / "M030_front_neutral_level1_001.mp4"
    d = tmp_path_factory.mktemp("aspect")
    square, sar, rotated = d / "square.mp4", d / "sar.mp4", d / "sar_rotated.mp4"
    common = ["-frames:v", str(FRAMES), "-an", "-c:v", "libx264", "-crf", "12"]
    _ffmpeg("-i", str(src), "-vf", "crop=240:200", *common, str(square))
    _ffmpeg("-i", str(src), "-vf", "crop=240:200,scale=256:200:flags=bicubic,setsar=15/16", *common, str(sar))
    _ffmpeg("-display_rotation", "90", "-i", str(sar), "-c", "copy", str(rotated))
    return square, sar, rotated


def test_display_size():
    assert display_size(512, 480, 15 / 16, 0) == (480, 480)
    assert display_size(1440, 1080, 4 / 3, 0) == (1920, 1080)
    assert display_size(256, 200, 15 / 16, 90) == (200, 240)
    assert display_size(640, 360, 1.0, 270) == (360, 640)


def test_sar_clip_decodes_at_display_size(twins):
    square, sar, rotated = twins
    info = probe(sar)
    assert (info.coded_width, info.coded_height) == (256, 200) and info.sar == pytest.approx(15 / 16)
    assert (info.width, info.height) == (240, 200)
    assert probe(square).sar == 1.0
    f_sq, f_sar = next(iter_frames(square)), next(iter_frames(sar))
    assert f_sar.shape == f_sq.shape == (200, 240, 3)
    assert np.abs(f_sar.astype(float) - f_sq).mean() < 4          # the same picture (two resamplings)
    rot = probe(rotated)
    assert rot.rotation in (90, 270) and (rot.width, rot.height) == (200, 240)
    f_rot = next(iter_frames(rotated))
    assert f_rot.shape == (240, 200, 3)
    k = 1 if rot.rotation == 90 else -1
    assert np.abs(np.rot90(f_sq, k).astype(float) - f_rot).mean() < 4


def test_sar_clip_aligns_like_its_square_twin(twins, tmp_path):
    square, sar, _ = twins
    quads = []
    for clip in (square, sar):
        out = tmp_path / f"{clip.stem}.zip"
        preprocess_videos([clip], out, size=64, smooth=0, show_progress=False)
        ds = AlignedDataset(out)
        try:
            (name,) = ds.clips
            frames = ds.clips[name].frames
            assert len(frames) == FRAMES and all(f["detected"] for f in frames)
            quads.append(np.array([f["quad"] for f in frames], dtype=float))
        finally:
            ds.close()
    side = np.linalg.norm(quads[0][:, 1] - quads[0][:, 0], axis=1).mean()     # crop side in pixels
    err = np.linalg.norm(quads[1] - quads[0], axis=-1).mean() / side          # mean corner error
    assert err <= 0.01, f"SAR clip's crop differs by {100 * err:.2f} % of the crop"
