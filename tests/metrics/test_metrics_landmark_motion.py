"""Landmark motion metric: exact geometry of the per-frame features, blink detection, and on real
clips (dlib landmarks of shared/data/videos) the ranking real half < shuffled, frozen, the mouth
spread of speech, blink frames checked by eye, aligned 64 px input, issue #17's targets and the
``svgen evaluate`` path."""
from __future__ import annotations

import json

import numpy as np
import pytest

from svgen.metrics.landmark_motion import (FEATURES, MEANINGS, FeatureSeries, LandmarkMotionConfig, compare,
                                           detect_blinks, landmark_fd, landmark_features, motion_targets,
                                           plot_features, video_stats)
from svgen.utils.errors import SvgenError

MAR, EAR, YAW, PITCH = (FEATURES.index(n) for n in ("mar", "ear", "yaw", "pitch"))


def _face(mouth_open: float = 2.0, eye_open: float = 1.0, nose_x: float = 50.0) -> np.ndarray:
    """68 points with known geometry: eyes 10 wide, inner mouth 20 wide, jaw ends at x=10 and 90."""
    lm = np.zeros((68, 2))
    lm[0], lm[16], lm[8] = (10, 40), (90, 40), (50, 100)
    for base, cx in ((36, 30.0), (42, 70.0)):  # p1..p6 of each eye around (cx, 40)
        lm[base:base + 6] = [(cx - 5, 40), (cx - 2, 40 - eye_open), (cx + 2, 40 - eye_open), (cx + 5, 40),
                             (cx + 2, 40 + eye_open), (cx - 2, 40 + eye_open)]
    lm[30] = (nose_x, 60)
    lm[60], lm[64] = (40, 80), (60, 80)
    for top, bottom, x in ((61, 67, 45), (62, 66, 50), (63, 65, 55)):
        lm[top], lm[bottom] = (x, 80 - mouth_open / 2), (x, 80 + mouth_open / 2)
    return lm


def _rotated(lm: np.ndarray, degrees: float, scale: float) -> np.ndarray:
    a = np.deg2rad(degrees)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return (lm - 50) @ rot.T * scale + 200


def test_features_exact_geometry_and_invariance():
    lm = np.stack([_face(), _face(mouth_open=6.0, eye_open=0.5, nose_x=60.0), np.full((68, 2), np.nan)])
    f = landmark_features(lm)
    assert f[0, MAR] == pytest.approx(2.0 / 20) and f[1, MAR] == pytest.approx(6.0 / 20)
    assert f[0, EAR] == pytest.approx(2.0 / 10) and f[1, EAR] == pytest.approx(1.0 / 10)
    assert f[0, YAW] == pytest.approx(0.0) and f[1, YAW] == pytest.approx((50 - 30) / 80)
    assert f[0, PITCH] == pytest.approx(20 / 60)
    assert np.isnan(f[2]).all()
    # roll, scale and position of the face do not change any feature
    moved = landmark_features(np.stack([_rotated(x, 25.0, 3.0) for x in lm[:2]]))
    np.testing.assert_allclose(moved, f[:2], atol=1e-9)
    with pytest.raises(ValueError):
        landmark_features(np.zeros((3, 5, 2)))


def test_detect_blinks_synthetic():
    rng = np.random.default_rng(0)
    ear = 0.3 + 0.01 * rng.standard_normal(250)
    for start in (30, 110, 170):
        ear[start:start + 3] = [0.2, 0.1, 0.18]
    ear[200:240] = 0.1  # eyes closed for 1.6 s: not a blink
    assert detect_blinks(ear, 25.0) == [31, 111, 171]
    assert detect_blinks(np.full(100, 0.3), 25.0) == []
    assert detect_blinks(np.full(100, np.nan), 25.0) == []


def test_motion_targets_synthetic_and_compare_outputs(tmp_path):
    t = np.arange(200) / 25.0
    rng = np.random.default_rng(1)

    def series(amp: float, noise: float = 0.002) -> FeatureSeries:
        base = np.array([0.1, 0.3, 0.0, 0.3])
        wave = np.stack([np.sin(2 * np.pi * 4 * t), np.sin(2 * np.pi * 0.3 * t), np.sin(2 * np.pi * 0.2 * t),
                         np.cos(2 * np.pi * 0.25 * t)], axis=1) * np.array([0.06, 0.02, 0.05, 0.02])
        return FeatureSeries(base + amp * wave + noise * rng.standard_normal((200, 4)), 25.0, f"amp{amp}")

    train = series(1.0)
    good = motion_targets(series(1.2), train)
    assert good["ok"] and good["mar_spread_ok"] and not good["frozen"] and not good["exploding"]
    assert good["mar_spread_ratio"] == pytest.approx(1.2, rel=0.1) and good["all_frames_face"]
    weak = motion_targets(series(0.3), train)
    assert not weak["mar_spread_ok"] and not weak["frozen"] and not weak["ok"]
    frozen = motion_targets(series(0.0, noise=0.0), train)
    assert frozen["frozen"] and not frozen["ok"]
    wild = motion_targets(series(6.0), train)
    assert wild["exploding"] and not wild["ok"]
    lost = series(1.0)
    lost.values[50:60] = np.nan
    lost_t = motion_targets(lost, train)
    assert lost_t["face_detected"] == pytest.approx(0.95) and not lost_t["all_frames_face"] and not lost_t["ok"]

    stats = video_stats(train)
    assert stats["mar_dominant_hz"] == pytest.approx(4.0, abs=0.2) and stats["mar_speech_band"] > 0.9
    res = compare(train, series(1.0), LandmarkMotionConfig(window=8))
    for key in ("value", "ref_real_halves", "ref_frozen", "ref_shuffled"):
        assert np.isfinite(res[key])
    assert res["value"] < res["ref_frozen"] and res["value"] < res["ref_shuffled"]
    assert set(MEANINGS) >= {"landmark_fd", "ref_real_halves", "ref_frozen", "ref_shuffled", "mar_std",
                             "blinks_per_min", "mar_spread_ratio", "frozen", "exploding"}
    assert all(isinstance(v, str) and "\n" not in v for v in MEANINGS.values())
    faceless = compare(train, FeatureSeries(np.full((50, 4), np.nan), 25.0))
    assert np.isnan(faceless["value"]) and "generated" in faceless["problem"] and not faceless["targets"]["ok"]

    png = plot_features(train, series(0.5), tmp_path / "curves.png")
    from PIL import Image

    with Image.open(png) as im:
        assert im.format == "PNG" and im.size[0] > 400
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(SvgenError):
        plot_features(train, train, blocker / "curves.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curves.png", "file"]


# -- real clips (dlib) -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def backend():
    from svgen.preprocessing.landmarks import DlibLandmarks

    return DlibLandmarks()


@pytest.fixture(scope="module")
def talk(shared, backend) -> FeatureSeries:
    """dpe/d.mp4: a man talking, 334 frames at 25 fps, 256x256."""
    from svgen.metrics.landmark_motion import video_features

    return video_features(shared / "data/videos/dpe/d.mp4", backend)


@pytest.mark.slow
def test_real_clip_ranks_other_half_above_frozen_and_shuffled(talk):
    assert talk.detected.all() and len(talk) == 334
    half = len(talk) // 2
    first, second = talk.slice(0, half), talk.slice(half)
    other_half = landmark_fd(first, second, norm_from=talk)
    rng = np.random.default_rng(0)
    shuffled = landmark_fd(first, FeatureSeries(second.values[rng.permutation(len(second))], 25.0),
                           norm_from=talk)
    frozen = landmark_fd(first, FeatureSeries(np.repeat(second.values[:1], len(second), axis=0), 25.0),
                         norm_from=talk)
    # measured: 10.3, 32.1, 43.8
    assert 1.5 * other_half < shuffled and 1.5 * other_half < frozen
    # compare() gives the same ordering for its own references
    res = compare(first, second)
    assert res["ref_real_halves"] < res["ref_shuffled"] and res["ref_real_halves"] < res["ref_frozen"]
    assert res["targets"]["ok"]


@pytest.mark.slow
def test_real_talking_clip_mouth_spread(talk):
    stats = video_stats(talk)
    assert 0.03 < stats["mar_std"] < 0.15  # measured 0.061 (inner-lip MAR of speech)
    assert stats["mar_speech_band"] > 0.5  # measured 0.78: the mouth moves at syllable rhythm
    assert stats["face_detected"] == 1.0


@pytest.mark.slow
def test_real_clip_blinks(shared, backend):
    """WDA_AlexandriaOcasioCortez_000.mp4: eyes closed (checked frame by frame) at 10-12 and 33-36."""
    from svgen.metrics.landmark_motion import video_features

    s = video_features(shared / "data/videos/sadtalker/WDA_AlexandriaOcasioCortez_000.mp4", backend)
    blinks = detect_blinks(s.values[:, EAR], s.fps)
    assert any(abs(b - 11) <= 2 for b in blinks) and any(abs(b - 35) <= 2 for b in blinks)
    rate = video_stats(s)["blinks_per_min"]
    assert 6.0 <= rate <= 90.0  # measured 75 (a fast-blinking speaker; people blink ~10-60/min)


@pytest.mark.slow
def test_aligned_64px_frames_match_the_video(shared, backend, real_frames_zip):
    """aligned.zip input (64 px crops, upscaled before detection): a face in every frame and the same
    mouth spread as the 256 px video's frames (measured 0.090 vs 0.108)."""
    from svgen.metrics.landmark_motion import dataset_features, video_features

    series = dataset_features(real_frames_zip, backend)
    assert len(series) == 2 and all(len(s) == 60 and s.detected.all() for s in series)
    video = video_features(shared / "data/videos/dreamtalk_mead/M030_front_neutral_level1_001.mp4", backend,
                           max_frames=60)
    ratio = video_stats(series[0])["mar_std"] / video_stats(video)["mar_std"]
    assert 0.6 < ratio < 1.4


@pytest.mark.slow
def test_evaluate_landmark_motion_cli(shared, tmp_path, capsys, tiny_motion_pair):
    """A frozen animation (first real frame repeated) and rendered samples of an untrained tiny model
    (no face) against a real MEAD clip: the report says frozen and not a face in every frame, the FD
    matches the frozen reference; bad inputs fail with one line."""
    from svgen.cli.main import main
    from svgen.preprocessing.video_io import VideoWriter, iter_frames

    real = shared / "data/videos/dreamtalk_mead/M030_front_neutral_level1_001.mp4"
    first = next(iter(iter_frames(real))).copy()
    anim = tmp_path / "frozen.mp4"
    with VideoWriter(anim, 25.0) as w:
        for _ in range(40):
            w.write(first)
    motion, generator = tiny_motion_pair
    out, plot = tmp_path / "lm.json", tmp_path / "lm.png"
    try:
        main(["evaluate", "--metrics", "landmark_motion", "--animation", str(anim), "--real-video", str(real),
              "--motion", str(motion), "--generator", str(generator),
              "--landmark-samples", "1", "--landmark-frames", "20", "--landmark-plot", str(plot),
              "--out", str(out)])
    except SystemExit as exc:
        raise AssertionError(f"exit {exc.code}: {capsys.readouterr().err}") from None
    rep = json.loads(out.read_text())
    m = rep["metrics"]["landmark_motion"]
    values = rep["values"]
    # a frozen animation scores like the frozen reference, far from the shuffled one
    assert abs(values["landmark_fd"] - values["landmark_fd_ref_frozen"]) < 0.25 * values["landmark_fd_ref_frozen"]
    assert values["landmark_fd"] > 1.3 * values["landmark_fd_ref_shuffled"]
    assert m["targets"]["frozen"] and not m["targets"]["ok"] and not m["targets"]["all_frames_face"]
    assert m["targets"]["face_detected"] == pytest.approx(40 / 60)
    assert m["generated"]["videos"][0]["face_detected"] == 1.0 and m["generated"]["videos"][1]["frames"] == 20
    assert m["protocol"]["rendered"]["samples"] == 1 and plot.stat().st_size > 1000
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", "--metrics", "landmark_motion", "--animation", str(anim), "--out", str(out)])
    assert exc.value.code == 2 and "--real-video" in capsys.readouterr().err
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video")
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", "--metrics", "landmark_motion", "--animation", str(anim), "--real-video", str(bad),
              "--out", str(tmp_path / "none.json")])
    err = capsys.readouterr().err
    assert exc.value.code == 1 and str(bad) in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "none.json").exists()
