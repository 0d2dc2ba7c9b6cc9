"""End-to-end preprocessing on the real clips: every clip, stabilisation, hard videos, tracking."""
from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest
from PIL import Image

from svgen.preprocessing.alignment import crop_to_source, source_to_crop
from svgen.preprocessing.dataset import AlignedDataset
from svgen.preprocessing.videos import format_summary, preprocess_videos
from svgen.preprocessing.stabilize import jitter
from svgen.preprocessing.video_io import iter_frames, probe, write_video


@pytest.fixture(scope="module")
def backend():
    """One loaded dlib backend for the module (loading the 100 MB predictor takes a second)."""
    from svgen.preprocessing.landmarks import DlibLandmarks

    return DlibLandmarks("hog")


def _videos(shared, *folders):
    out = []
    for folder in folders:
        out += sorted((shared / "data" / "videos" / folder).glob("*.mp4"))
    return out


@pytest.mark.slow
def test_every_clip_preprocesses(shared, tmp_path, backend):
    videos = _videos(shared, "dreamtalk_mead", "sadtalker")
    assert len(videos) == 26
    out = tmp_path / "aligned.zip"
    n = 40  # frames per clip (keeps the test short; the hard-video test runs longer ones)
    summary = preprocess_videos(videos, out, size=32, max_frames=n, show_progress=False, backend=backend)
    ds = AlignedDataset(out)
    assert ds.resolution == 32 and len(ds.clips) == 26
    for video, v in zip(videos, summary["videos"]):
        info = probe(video)
        name = video.stem
        clip = ds.clips[name]
        # every frame has a face in these clips: nothing dropped or split
        assert info.num_frames > n and clip.num_frames == n == v["kept"], name
        assert clip.fps == pytest.approx(info.fps) and clip.source == str(video)
        assert [f["source_frame"] for f in clip.frames] == list(range(n))
        assert all(len(f["quad"]) == 4 for f in clip.frames)
        assert sum(f["detected"] for f in clip.frames) >= n - 2
    frames = ds.read_clip(videos[0].stem, 0, 5)
    assert frames.shape == (5, 32, 32, 3) and frames.dtype == np.uint8
    assert len(ds) == summary["kept"] == sum(c.num_frames for c in ds.clips.values())
    with zipfile.ZipFile(out) as zf:
        meta = json.loads(zf.read("dataset.json"))
    assert meta["format"] == "svgen-aligned" and meta["version"] == 1 and meta["labels"] is None


def test_stabilisation_reduces_jitter_and_follows_the_face(shared, tmp_path, backend):
    video = shared / "data" / "videos" / "tpsmm" / "driving.mp4"  # interview clip with head motion
    size = 32
    quads = {}
    for smooth in (0.0, 3.0):
        out = tmp_path / f"s{smooth}.zip"
        preprocess_videos([video], out, size=size, smooth=smooth, show_progress=False, backend=backend)
        ds = AlignedDataset(out)
        (clip,) = ds.clips.values()
        quads[smooth] = np.array([f["quad"] for f in clip.frames])
    raw, smooth = quads[0.0], quads[3.0]
    assert len(raw) == len(smooth) == probe(video).num_frames
    j_raw, j_smooth = jitter(raw), jitter(smooth)
    assert j_raw["center_px"] >= 3 * j_smooth["center_px"], (j_raw, j_smooth)
    assert j_raw["log_scale"] >= 3 * j_smooth["log_scale"], (j_raw, j_smooth)
    # Raw quads put the eye corners exactly where FFHQ puts them; in the smoothed crops the same
    # landmarks stay close to those places (error in crop pixels, relative to the crop size).
    canonical = np.array([[0.37, 0.44], [0.63, 0.44], [0.5, 0.6]]) * size
    errors = []
    for q_raw, q_sm in zip(raw, smooth):
        pts = crop_to_source(canonical, q_raw, size)
        errors.append(np.hypot(*(source_to_crop(pts, q_sm, size) - canonical).T))
    errors = np.array(errors) / size
    assert errors.mean() < 0.02 and errors.max() < 0.08, (errors.mean(), errors.max())
    side = np.hypot(*(raw[0, 3] - raw[0, 0]))
    assert np.hypot(*(smooth.mean(axis=1) - raw.mean(axis=1)).T).max() < 0.1 * side


@pytest.mark.slow
def test_hard_videos_complete_with_a_report(shared, tmp_path, backend):
    hevc = shared / "data" / "videos" / "latentsync" / "demo2_video.mp4"  # 1080x1920 HEVC
    hands = shared / "data" / "videos" / "pyfeat" / "WolfgangLanger_Pexels.mp4"  # hands over the face
    out = tmp_path / "hard.zip"
    summary = preprocess_videos([hevc, hands], out, size=32, max_frames=240, show_progress=False,
                                backend=backend)
    report = format_summary(summary)
    assert "demo2_video.mp4" in report and "WolfgangLanger_Pexels.mp4" in report and "interpolated" in report
    v_hevc, v_hands = summary["videos"]
    assert v_hevc["frames"] == 240 and v_hevc["kept"] >= 235
    assert v_hands["frames"] == 240 and v_hands["kept"] >= 0.8 * 240
    for v in summary["videos"]:
        assert v["kept"] + v["dropped"] == v["frames"]
        assert sum(v["clips"].values()) == v["kept"]
    ds = AlignedDataset(out)
    assert len(ds) == summary["kept"]
    # the face on the 1080x1920 frames is roughly 260 px: the crop quad is of that order
    q = np.array(ds.clips["demo2_video"].frames[0]["quad"])
    side = np.hypot(*(q[3] - q[0]))
    assert 250 < side < 800 and 0 < q[:, 0].mean() < 1080 and 0 < q[:, 1].mean() < 1920


def test_follows_the_largest_face_then_by_overlap(shared, tmp_path, backend):
    a = shared / "data" / "videos" / "dreamtalk_mead" / "M030_front_neutral_level1_001.mp4"
    b = shared / "data" / "videos" / "dreamtalk_mead" / "W009_front_happy_level3_001.mp4"
    frames = []
    for i, (fa, fb) in enumerate(zip(iter_frames(a, max_frames=30), iter_frames(b, max_frames=30))):
        canvas = np.zeros((400, 656, 3), np.uint8)
        if not 15 <= i < 18:                           # person A, face ~140 px (gone for 3 frames)
            canvas[72:328, :256] = fa
        side = 170 if i < 10 else 400                  # person B: smaller at first, then larger than A
        canvas[200 - side // 2:200 - side // 2 + side, 256:256 + side] = np.asarray(
            Image.fromarray(fb).resize((side, side), Image.BILINEAR))
        frames.append(canvas)
    video = tmp_path / "two.mp4"
    write_video(video, frames, fps=25)
    out = tmp_path / "two.zip"
    summary = preprocess_videos([video], out, size=32, show_progress=False, backend=backend)
    assert summary["kept"] == 30 and summary["interpolated"] == 3  # A's absence is bridged, not B
    quads = np.array([f["quad"] for f in AlignedDataset(out).clips["two"].frames])
    assert (quads.mean(axis=1)[:, 0] < 256).all()  # always person A, even once B is larger


def test_short_gaps_are_filled_and_long_gaps_split(shared, tmp_path, backend):
    mead = shared / "data" / "videos" / "dreamtalk_mead" / "M030_front_neutral_level1_001.mp4"
    frames = list(iter_frames(mead, max_frames=94))
    for i in list(range(25, 29)) + list(range(50, 80)):  # 4 frames (0.16 s) and 30 frames (1.2 s) lost
        frames[i] = np.zeros_like(frames[i])
    video = tmp_path / "gaps.mp4"
    write_video(video, frames, fps=25)
    out = tmp_path / "gaps.zip"
    summary = preprocess_videos([video], out, size=32, show_progress=False, backend=backend)
    v = summary["videos"][0]
    assert v["clips"] == {"gaps": 50, "gaps_part2": 14}
    assert v["interpolated"] == 4 and v["dropped"] == 30
    clips = AlignedDataset(out).clips
    first = clips["gaps"].frames
    assert [f["detected"] for f in first[24:30]] == [True, False, False, False, False, True]
    assert [f["source_frame"] for f in clips["gaps_part2"].frames][:2] == [80, 81]
    assert "2 segments" in format_summary(summary)


def test_generic_mode_crops_a_fixed_box(shared, tmp_path):
    video = shared / "data" / "videos" / "pyfeat" / "single_face.mp4"  # 640x360
    out = tmp_path / "box.zip"
    summary = preprocess_videos([video], out, size=48, landmarks="none", box=(100, 20, 240, 240),
                                max_frames=10, show_progress=False)
    assert summary["kept"] == 10
    ds = AlignedDataset(out)
    first = next(iter_frames(video))
    ref = np.asarray(Image.fromarray(first[20:260, 100:340]).resize((48, 48), Image.BOX)).astype(int)
    assert np.abs(ds[0].astype(int) - ref).mean() < 3
    out2 = tmp_path / "centre.zip"
    preprocess_videos([video], out2, size=32, landmarks="none", max_frames=3, show_progress=False)
    q = np.array(AlignedDataset(out2).clips["single_face"].frames[0]["quad"])
    np.testing.assert_allclose(q, [[139.5, -0.5], [139.5, 359.5], [499.5, 359.5], [499.5, -0.5]])


def test_fps_option_resamples(shared, tmp_path, backend):
    video = shared / "data" / "videos" / "pyfeat" / "single_face.mp4"  # 30 fps, 72 frames
    out = tmp_path / "fps.zip"
    summary = preprocess_videos([video], out, size=32, fps=15, show_progress=False, backend=backend)
    clip = AlignedDataset(out).clips["single_face"]
    assert clip.fps == 15.0 and clip.num_frames == summary["kept"] == 36
    assert [f["source_frame"] for f in clip.frames[:4]] == [0, 2, 4, 6]


def test_stored_frames_are_the_recorded_quads_cropped(shared, tmp_path, backend):
    """The quad in dataset.json reproduces the stored pixels exactly (paste-back relies on it)."""
    from svgen.preprocessing.alignment import warp_quad
    from svgen.preprocessing.dataset import encode_png  # odd sizes round-trip too

    video = shared / "data" / "videos" / "pyfeat" / "single_face.mp4"
    out = tmp_path / "q.zip"
    preprocess_videos([video], out, size=48, max_frames=12, show_progress=False, backend=backend)
    ds = AlignedDataset(out)
    frames = list(iter_frames(video, max_frames=12))
    for i in (0, 7, 11):
        rec = ds.clips["single_face"].frames[i]
        expected = warp_quad(frames[rec["source_frame"]], np.array(rec["quad"]), 48, quality="fast")
        np.testing.assert_array_equal(ds.read_frame("single_face", i), expected)
    img = np.random.default_rng(0).integers(0, 256, (37, 23, 3), dtype=np.uint8)
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(encode_png(img)))), img)


@pytest.mark.parametrize("deflate", ["isal", "zlib"])
def test_png_encoder_round_trips(monkeypatch, deflate):
    """Both deflate back ends write PNGs that PIL reads back bit-exactly (odd sizes too)."""
    from svgen.preprocessing import dataset

    if deflate == "zlib":
        monkeypatch.setattr(dataset, "_isal", None)
    else:
        assert dataset._isal is not None, "the isal package (a dependency) is not installed"
    rng = np.random.default_rng(1)
    for shape in ((37, 23, 3), (64, 64, 3)):
        img = rng.integers(0, 256, shape, dtype=np.uint8)
        img[:, : shape[1] // 2] = img[:1, : shape[1] // 2]  # some compressible rows
        np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(dataset.encode_png(img)))), img)
