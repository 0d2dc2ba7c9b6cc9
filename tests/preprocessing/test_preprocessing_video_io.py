"""Decoding (probe, streaming, fps resampling, rotation) and H.264 encoding, plus broken files."""
from __future__ import annotations

import subprocess

import numpy as np
import pytest

from svgen.preprocessing.video_io import (VideoWriter, ffmpeg_exe, iter_frames, iter_frames_indexed,
                                          probe, write_video)
from svgen.utils.errors import SvgenError


def test_probe_real_videos(shared):
    v = shared / "data" / "videos"
    hevc = probe(v / "latentsync" / "demo2_video.mp4")
    assert (hevc.width, hevc.height, hevc.fps, hevc.num_frames, hevc.codec) == (1080, 1920, 25.0, 502, "hevc")
    mead = probe(v / "dreamtalk_mead" / "M030_front_neutral_level1_001.mp4")
    assert (mead.width, mead.height, mead.rotation) == (256, 256, 0)
    frames = list(iter_frames(v / "dreamtalk_mead" / "M030_front_neutral_level1_001.mp4"))
    assert len(frames) == mead.num_frames and frames[0].shape == (256, 256, 3) and frames[0].dtype == np.uint8
    pexels = probe(v / "pyfeat" / "WolfgangLanger_Pexels.mp4")
    assert pexels.fps == pytest.approx(23.98) and (pexels.width, pexels.height) == (640, 360)


def test_rotation_metadata_gives_upright_frames(shared, tmp_path):
    src = shared / "data" / "videos" / "pyfeat" / "single_face.mp4"
    rotated = tmp_path / "rotated.mp4"
    subprocess.run([ffmpeg_exe(), "-v", "error", "-y", "-display_rotation", "90", "-i", str(src),
                    "-c", "copy", "-an", str(rotated)], check=True)
    info = probe(rotated)
    assert info.rotation in (90, 270) and (info.width, info.height) == (360, 640)
    f_rot = next(iter_frames(rotated))
    f_src = next(iter_frames(src))
    assert f_rot.shape == (640, 360, 3)
    k = 1 if info.rotation == 90 else -1  # the display matrix turns the picture
    assert np.abs(np.rot90(f_src, k).astype(int) - f_rot).mean() < 2


def test_fps_resampling_and_max_frames(shared):
    path = shared / "data" / "videos" / "pyfeat" / "single_face.mp4"  # 30 fps, 72 frames
    down = [i for i, _ in iter_frames_indexed(path, fps=15)]
    assert down[:5] == [0, 2, 4, 6, 8] and len(down) == 36
    up = [i for i, _ in iter_frames_indexed(path, fps=60, max_frames=7)]
    assert up == [0, 1, 1, 2, 2, 3, 3] or up == [0, 0, 1, 1, 2, 2, 3]
    assert len(list(iter_frames(path, max_frames=5))) == 5


def test_frame_count_is_exact_even_with_longer_audio(tmp_path):
    path = tmp_path / "long_audio.mp4"
    subprocess.run([ffmpeg_exe(), "-v", "error", "-y", "-f", "lavfi", "-i",
                    "testsrc=duration=2:size=64x64:rate=25", "-f", "lavfi", "-i", "sine=duration=4",
                    "-c:v", "libx264", "-c:a", "aac", str(path)], check=True)
    info = probe(path)
    assert info.duration == pytest.approx(4.0)  # the container lasts as long as the audio
    assert info.num_frames == 50 == len(list(iter_frames(path)))
    for n in (7, 11):  # frame counts that centisecond durations would round wrongly
        short = tmp_path / f"{n}.mp4"
        write_video(short, [np.zeros((16, 16, 3), np.uint8)] * n, fps=30)
        assert probe(short).num_frames == n


def test_writer_round_trip_odd_size(tmp_path):
    rng = np.random.default_rng(0)
    frames = [np.full((33, 47, 3), 20 + 10 * i, np.uint8) for i in range(12)]
    frames[3][5:10, 5:10] = rng.integers(0, 255, (5, 5, 3))
    out = tmp_path / "out.mp4"
    assert write_video(out, frames, fps=12) == 12
    info = probe(out)
    assert (info.width, info.height, info.fps, info.codec) == (48, 34, 12.0, "h264")
    back = list(iter_frames(out))
    assert len(back) == 12
    assert abs(float(back[7][:33, :47].mean()) - 90) < 3
    log = subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", str(out)], capture_output=True,
                         text=True).stderr
    assert "yuv420p" in log


@pytest.mark.filterwarnings("error::ResourceWarning", "error::pytest.PytestUnraisableExceptionWarning")
def test_writer_closes_ffmpegs_pipes(tmp_path):
    """Finished and aborted writers leave no open pipe behind (Python warns 'unclosed file' at exit,
    which reached users as a warning line after every animate)."""
    import gc

    with VideoWriter(tmp_path / "a.mp4", fps=25) as w:
        w.write(np.zeros((16, 16, 3), np.uint8))
    with pytest.raises(RuntimeError):
        with VideoWriter(tmp_path / "b.mp4", fps=25) as w:
            w.write(np.zeros((16, 16, 3), np.uint8))
            raise RuntimeError("interrupted")
    del w
    gc.collect()


def test_writer_abort_and_bad_frames_leave_nothing(tmp_path):
    out = tmp_path / "clip.mp4"
    with pytest.raises(RuntimeError):
        with VideoWriter(out, fps=25) as w:
            w.write(np.zeros((16, 16, 3), np.uint8))
            raise RuntimeError("interrupted")
    with pytest.raises(ValueError, match="differs"):
        with VideoWriter(out, fps=25) as w:
            w.write(np.zeros((16, 16, 3), np.uint8))
            w.write(np.zeros((18, 16, 3), np.uint8))
    with pytest.raises(SvgenError, match="no frames"):
        with VideoWriter(out, fps=25):
            pass
    assert list(tmp_path.iterdir()) == []


def test_broken_inputs_raise_one_line_errors(shared, tmp_path):
    good = (shared / "data" / "videos" / "pyfeat" / "single_face.mp4").read_bytes()
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n")
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    cut = tmp_path / "cut.mp4"  # moov atom at the end: missing
    cut.write_bytes(good[: len(good) // 3])
    faststart = tmp_path / "fs.mp4"
    subprocess.run([ffmpeg_exe(), "-v", "error", "-y", "-i", str(shared / "data" / "videos" / "pyfeat" /
                    "single_face.mp4"), "-c", "copy", "-movflags", "+faststart", str(faststart)], check=True)
    cut2 = tmp_path / "cut2.mp4"  # header complete, frames missing
    cut2.write_bytes(faststart.read_bytes()[:120000])
    image = shared / "data" / "photos" / "face_recognition" / "obama.jpg"
    for path, pattern in [(text, "not a"), (empty, "empty"), (cut, "not a complete mp4"),
                          (cut2, "truncated"), (image, "still image"),
                          (tmp_path / "nope.mp4", "does not exist")]:
        with pytest.raises(SvgenError, match=pattern) as exc:
            for _ in iter_frames(path):
                pass
        assert "\n" not in str(exc.value) and str(path) in str(exc.value)
