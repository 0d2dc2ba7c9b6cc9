"""The embedded demo input: a procedural talking head whose known signals are really in the video."""
from __future__ import annotations

import json

import numpy as np

from svgen.demo.synth_talk import default_identity_photo, make_signals, synthesize_talking_head
from svgen.preprocessing.landmarks import detect_photo_faces, make_backend
from svgen.preprocessing.video_io import iter_frames, probe


def test_signals_are_speech_like_and_reproducible():
    a, b = make_signals(250, 25.0, seed=3), make_signals(250, 25.0, seed=3)
    assert a == b
    mouth = np.array(a.mouth_open)
    assert 0 <= mouth.min() and mouth.max() <= 1 and mouth.std() > 0.1
    # syllable rate: above the phrase envelope (< 1 Hz) the strongest frequency lies in 2-6 Hz,
    # and that band holds a good part of the energy
    power = np.abs(np.fft.rfft(mouth - mouth.mean())) ** 2
    freqs = np.fft.rfftfreq(len(mouth), 1 / 25.0)
    above = freqs > 1.0
    assert 2.0 <= freqs[above][power[above].argmax()] <= 6.0
    assert power[(freqs >= 2) & (freqs <= 6)].sum() > 0.25 * power.sum()
    assert max(a.blink) > 0.9  # at least one full blink in 10 s


def test_clip_carries_its_mouth_signal(tmp_path):
    out = tmp_path / "talk.mp4"
    sig = synthesize_talking_head(out, num_frames=40, fps=25.0, seed=0)
    info = probe(out)
    assert info.num_frames == 40 and info.fps == 25.0 and (info.width, info.height) == (256, 256)
    assert json.loads(out.with_suffix(".json").read_text())["mouth_open"] == sig.mouth_open
    backend = make_backend("dlib")
    gaps = []
    for frame in iter_frames(out):
        faces = detect_photo_faces(backend, frame)
        assert faces, "the synthetic face must stay detectable"
        lm = backend.predict(frame, faces[0][0])
        gaps.append(np.linalg.norm(lm[66] - lm[62]) / np.linalg.norm(lm[45] - lm[36]))
    r = np.corrcoef(gaps, sig.mouth_open)[0, 1]
    assert r > 0.7, f"inner-lip gap vs mouth_open correlation {r:.2f}"


def test_default_identity_photo_ships_with_matplotlib():
    assert default_identity_photo().is_file()
