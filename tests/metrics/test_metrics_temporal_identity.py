"""TL-ID / TG-ID (STIT) with dlib embeddings on real MEAD clips: ~1 for a real clip against another clip
of the same person, lower for a clip with a second person spliced in; ``svgen evaluate`` reports them."""
from __future__ import annotations

import json

import numpy as np
import pytest

from clitools import run_cli

FRAMES = 24


def _clip(shared, name):
    from svgen.metrics.evaluate import _read_video_frames

    return _read_video_frames(shared / "data" / "videos" / "dreamtalk_mead" / f"{name}.mp4", FRAMES)


@pytest.fixture(scope="module")
def clips(shared):
    """W009 (neutral, happy) and M030 (neutral): 24 frames each, 256 px."""
    return {n: _clip(shared, n) for n in ("W009_front_neutral_level1_001", "W009_front_happy_level3_001",
                                          "M030_front_neutral_level1_001")}


@pytest.fixture(scope="module")
def embedder():
    from svgen.metrics.acd import FaceEmbedder

    return FaceEmbedder()


@pytest.mark.slow
def test_real_clip_near_one_and_spliced_second_person_lower(clips, embedder):
    from svgen.metrics.temporal_identity import temporal_identity

    w_neutral, w_happy, m_neutral = clips.values()
    real = temporal_identity(w_neutral, w_happy, embedder)
    assert real["normalised"] and real["video"]["frames_with_face"] == FRAMES
    assert real["tl_id"] == pytest.approx(1, abs=0.01) and real["tg_id"] == pytest.approx(1, abs=0.02), real
    assert real["video"]["local"] > 0.98 and real["video"]["global"] > 0.97
    spliced = w_neutral[:8] + m_neutral[8:16] + w_neutral[16:]        # another person in frames 8-15
    bad = temporal_identity(spliced, w_neutral, embedder)
    assert bad["tl_id"] < real["tl_id"] - 0.005 and bad["tg_id"] < 0.96, (real, bad)
    assert bad["tg_id"] < bad["tl_id"]          # 2 of 23 adjacent pairs cross, but 128 of 276 pairs
    raw = temporal_identity(spliced, None, embedder)
    assert not raw["normalised"] and raw["tg_id"] == pytest.approx(bad["video"]["global"])


@pytest.mark.slow
def test_evaluate_reports_tl_id_tg_id(clips, shared, tmp_path, capsys):
    from svgen.preprocessing.video_io import VideoWriter

    w_neutral, _, m_neutral = clips.values()
    spliced = tmp_path / "spliced.mp4"
    with VideoWriter(spliced, 25.0) as writer:
        for f in w_neutral[:8] + m_neutral[8:16] + w_neutral[16:]:
            writer.write(f)
    source = shared / "data" / "videos" / "dreamtalk_mead" / "W009_front_neutral_level1_001.mp4"
    out = tmp_path / "r.json"
    code, stdout, err = run_cli(capsys, "evaluate", "--metrics", "tl_id,tg_id", "--animation", spliced,
                                "--real-video", source, "--identity-frames", FRAMES, "--out", out)
    assert code == 0, err
    report = json.loads(out.read_text())
    assert report["values"]["tg_id"] < 0.96 and report["values"]["tl_id"] < 0.995, report["values"]
    res = report["metrics"]["temporal_identity"]
    assert res["normalised"] and res["source"]["frames"] == FRAMES and res["protocol"]["source"] == str(source)
    assert "tl_id:" in stdout and "tg_id:" in stdout
    code, _, err = run_cli(capsys, "evaluate", "--metrics", "tg_id", "--real-video", source, "--out", out)
    assert code == 2 and "needs --animation" in err
    assert np.isfinite(report["values"]["tl_id"])
