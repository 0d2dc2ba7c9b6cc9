"""The demo's motion verdict (landmark FD against the clip's own references) on a real talking clip."""
from __future__ import annotations

import numpy as np

from svgen.demo.targets import motion_check
from svgen.metrics.landmark_motion import FeatureSeries, video_features


def test_motion_check_passes_real_motion_and_fails_frozen_and_shuffled(shared):
    talk = video_features(shared / "data/videos/dpe/d.mp4")   # a man talking, 334 frames at 25 fps
    half = len(talk) // 2
    train, other = talk.slice(0, half), talk.slice(half)
    real = motion_check("real", [train], [other])
    assert real.ok and real.key == "motion_real"
    # the references are on the training clip's own scale: its halves closer than frozen or shuffled
    refs = real.references
    assert refs["real halves"] < min(refs["frozen first frame"], refs["time-shuffled"])
    frozen = FeatureSeries(np.repeat(other.values[:1], len(other), axis=0), other.fps)
    shuffled = FeatureSeries(other.values[np.random.default_rng(0).permutation(len(other))], other.fps)
    for fake in (frozen, shuffled):
        bad = motion_check("fake", [train], [fake])
        assert not bad.ok and bad.value > 1.5 * real.value
