"""ACD / identity distance with dlib's face-recognition ResNet on real photos and real video frames."""
from __future__ import annotations

import csv
import importlib
import sys

import numpy as np
import pytest
from PIL import Image

from svgen.metrics.acd import (RECOGNITION_FILE, SHAPE_FILES, FaceEmbedder, acd, identity_distance,
                               mean_pairwise_distance, model_file)
from svgen.preprocessing.dataset import AlignedDataset


def _load(path, max_side=1024):
    with Image.open(path) as im:
        im.draft("RGB", (max_side, max_side))  # fast JPEG decode of the 4000 px photos
        return np.asarray(im.convert("RGB"))


@pytest.fixture(scope="module")
def embedder():
    return FaceEmbedder(max_side=640)


def test_model_files_found_without_importing_the_package():
    sys.modules.pop("face_recognition_models", None)
    for name in (RECOGNITION_FILE, *SHAPE_FILES.values()):
        assert model_file(name).is_file()
    assert "face_recognition_models" not in sys.modules  # its __init__ needs pkg_resources
    assert importlib.util.find_spec("dlib") is not None


def test_mean_pairwise_distance():
    emb = np.array([[0.0, 0.0], [3.0, 4.0], [0.0, 0.0]])
    assert mean_pairwise_distance(emb) == pytest.approx((5 + 0 + 5) / 3)
    assert np.isnan(mean_pairwise_distance(emb[:1]))


def test_deepface_pairs_same_person_closer(shared, embedder):
    root = shared / "data" / "photos" / "deepface"
    rows = list(csv.DictReader(open(root / "master.csv")))
    files = sorted({r["file_x"] for r in rows} | {r["file_y"] for r in rows})
    emb = {f: embedder.embed(_load(root / f)) for f in files}
    assert sum(e is None for e in emb.values()) <= 1
    same, diff = [], []
    for r in rows:
        a, b = emb[r["file_x"]], emb[r["file_y"]]
        if a is not None and b is not None:
            (same if r["Decision"] == "Yes" else diff).append(float(np.linalg.norm(a - b)))
    assert len(same) >= 30 and len(diff) >= 200
    # dlib's verification threshold is 0.6; a clear majority on both sides
    assert np.mean(np.array(same) < 0.6) > 0.85
    assert np.mean(np.array(diff) >= 0.6) > 0.85
    assert np.median(same) < np.median(diff) - 0.3


def test_face_recognition_pairs(shared, embedder):
    root = shared / "data" / "photos" / "face_recognition"
    pairs = {"obama": ("obama.jpg", "obama2.jpg"), "biden": ("biden.jpg", "biden_biden2.jpg"),
             "lacamoire": ("alex-lacamoire.png", "alex_lacamoire_img1.jpg"),
             "harington": ("kit_harington_john1.jpeg", "kit_harington_john2.jpeg"),
             "leslie": ("rose_leslie_img1.jpg", "rose_leslie_img2.jpg")}
    emb = {k: [embedder.embed(_load(root / f)) for f in fs] for k, fs in pairs.items()}
    assert all(e is not None for v in emb.values() for e in v)
    wins = total = 0
    for k, (a, b) in emb.items():
        d_same = np.linalg.norm(a - b)
        for k2, (c, _) in emb.items():
            if k2 != k:
                wins += d_same < np.linalg.norm(a - c)
                total += 1
    assert wins / total > 0.9


def test_acd_and_identity_distance_on_video_frames(real_frames_zip, embedder):
    ds = AlignedDataset(real_frames_zip)              # 64 px aligned MEAD frames of two people
    man, woman = list(ds.clips)
    man_frames = [ds.read_frame(man, i) for i in range(0, 60, 15)]
    woman_frames = [ds.read_frame(woman, i) for i in range(0, 60, 15)]
    mixed = [man_frames[0], woman_frames[0], man_frames[1], woman_frames[1]]
    res = acd([man_frames, woman_frames], embedder)
    assert res["num_videos"] == 2 and res["num_frames"] == 8
    mixed_res = acd([mixed], embedder)
    assert res["value"] < 0.45 < mixed_res["value"]
    own = identity_distance(man_frames[1:], man_frames[0], embedder)
    other = identity_distance(man_frames[1:], woman_frames[0], embedder)
    assert own["value"] < other["value"] and own["value"] < 0.5
    assert own["frames_with_face"] == 3
