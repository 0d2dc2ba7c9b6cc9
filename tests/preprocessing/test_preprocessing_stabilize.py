"""Segmenting, gap filling and zero-phase smoothing of crop parameters; streaming == offline."""
from __future__ import annotations

import numpy as np
import pytest

from svgen.preprocessing.alignment import quad_from_transform
from svgen.preprocessing.stabilize import (StabilizeConfig, StreamingStabilizer, jitter,
                                           params_from_transform, stabilize_offline,
                                           transform_from_params)


def _stream(params, cfg):
    st = StreamingStabilizer(cfg)
    out, max_held = [], 0
    for i, p in enumerate(params):
        out += st.push(p)
        max_held = max(max_held, i + 1 - len(out))
    return out + st.flush(), max_held


def test_streaming_equals_offline_with_bounded_delay():
    rng = np.random.default_rng(1)
    for trial in range(40):
        n = int(rng.integers(1, 160))
        cfg = StabilizeConfig(smooth=float(rng.choice([0.0, 1.0, 3.0])), max_gap=int(rng.integers(0, 10)),
                              min_length=int(rng.integers(2, 12)))
        present = rng.random(n) < rng.choice([0.6, 0.95])
        params = [np.array([200 + 0.5 * i + rng.normal(), 100 + rng.normal(), 0.2 * np.sin(i / 9),
                            np.log(80) + 0.01 * rng.normal()]) if present[i] else None for i in range(n)]
        offline = stabilize_offline(params, cfg)
        online, held = _stream(params, cfg)
        assert [d.index for d in online] == list(range(n))
        for a, b in zip(offline, online):
            assert (a.keep, a.detected, a.segment) == (b.keep, b.detected, b.segment), trial
            if a.keep:
                np.testing.assert_allclose(a.params, b.params, atol=1e-9)
        assert held <= max(cfg.lookahead(), cfg.min_length + cfg.max_gap) + 1


def test_long_stream_forgets_old_frames_and_matches_offline():
    rng = np.random.default_rng(2)
    n = 3000
    cfg = StabilizeConfig(smooth=3.0, max_gap=12, min_length=8)
    present = rng.random(n) > 0.05
    present[1000:1040] = False  # a long gap: two segments
    params = [np.array([rng.normal(), rng.normal(), 0.01 * rng.normal(), 4.0]) if present[i] else None
              for i in range(n)]
    st = StreamingStabilizer(cfg)
    online = []
    for p in params:
        online += st.push(p)
        assert len(st._vals) < 256 + 2 * cfg.lookahead() + 2  # bounded history
    online += st.flush()
    offline = stabilize_offline(params, cfg)
    assert max(d.segment for d in online) == 1
    for a, b in zip(offline, online):
        assert (a.keep, a.segment) == (b.keep, b.segment)
        if a.keep:
            np.testing.assert_allclose(a.params, b.params, atol=1e-9)


def test_gaps_are_interpolated_or_split():
    cfg = StabilizeConfig(smooth=0.0, max_gap=3, min_length=3)
    p = lambda v: np.array([v, 0.0, 0.0, 0.0])  # noqa: E731
    seq = ([p(0), p(1), None, None, p(4), p(5)] + [None] * 5 + [p(11), p(12), p(13)]
           + [None, p(15)] + [None] * 4)
    out = stabilize_offline(seq, cfg)
    kept = [d for d in out if d.keep]
    assert [d.index for d in kept] == [0, 1, 2, 3, 4, 5, 11, 12, 13, 14, 15]
    assert [d.segment for d in kept] == [0] * 6 + [1] * 5
    assert [d.detected for d in kept if d.index in (2, 3, 14)] == [False] * 3
    np.testing.assert_allclose([kept[2].params[0], kept[3].params[0]], [2.0, 3.0])  # linear fill
    # a lone detection is too short to be a clip
    lone = stabilize_offline([None, p(0), None, None, None, None, None], cfg)
    assert not any(d.keep for d in lone)


def test_smoothing_reduces_jitter_and_keeps_the_motion():
    rng = np.random.default_rng(0)
    t = np.arange(200)
    true_c = np.stack([300 + 40 * np.sin(t / 30), 200 + 10 * np.cos(t / 45)], 1)
    true_s = 100 * (1 + 0.1 * np.sin(t / 50))
    true_a = 0.15 * np.sin(t / 40)
    raw = []
    for i in t:
        c = true_c[i] + rng.normal(0, 1.5, 2)
        s = true_s[i] * np.exp(rng.normal(0, 0.01))
        a = true_a[i] + rng.normal(0, 0.01)
        raw.append(params_from_transform(c, s * np.array([np.cos(a), np.sin(a)])))

    def quads(cfg):
        return np.stack([quad_from_transform(*transform_from_params(d.params))
                         for d in stabilize_offline(raw, cfg)])

    j_raw = jitter(quads(StabilizeConfig(smooth=0.0)))
    sm = quads(StabilizeConfig(smooth=3.0))
    j_sm = jitter(sm)
    assert j_raw["center_px"] > 3 * j_sm["center_px"]
    assert j_raw["log_scale"] > 3 * j_sm["log_scale"]
    # still following the true motion
    assert np.abs(sm.mean(axis=1) - true_c).mean() < 1.5


def test_angles_wrap_around():
    cfg = StabilizeConfig(smooth=2.0, max_gap=2, min_length=2)
    seq = []
    for i, a in enumerate(np.linspace(np.pi - 0.2, np.pi + 0.2, 30)):
        a = (a + np.pi) % (2 * np.pi) - np.pi  # crosses the +-pi seam
        seq.append(np.array([0.0, 0.0, a, 0.0]))
    out = stabilize_offline(seq, cfg)
    xs = np.stack([transform_from_params(d.params)[1] for d in out])
    assert np.all(xs[:, 0] < -0.95)  # stays pointing left; no spin through 0


@pytest.mark.parametrize("smooth", [0.0, 3.0])
def test_lookahead_covers_radius(smooth):
    cfg = StabilizeConfig(smooth=smooth, max_gap=5)
    assert cfg.lookahead() == cfg.radius() + 6
