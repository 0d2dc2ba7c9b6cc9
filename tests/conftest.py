"""Shared fixtures: where ../shared is, small real-data fixtures, GPU skipping."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def shared_dir() -> Path:
    return Path(os.environ.get("SVGEN_SHARED", REPO.parent / "shared")).resolve()


@pytest.fixture(scope="session")
def shared() -> Path:
    """``$SVGEN_SHARED`` (default ``../shared`` beside the repo); tests skip if it is absent."""
    d = shared_dir()
    if not (d / "data").is_dir():
        pytest.skip(f"shared data not found at {d} (set SVGEN_SHARED)")
    return d


def pytest_collection_modifyitems(config: pytest.Config, items: list) -> None:
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(autouse=True)
def _quiet_progress(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SVGEN_NO_PROGRESS", "1")


# -- real-frame fixture dataset ------------------------------------------------------------------
# Frames of MEAD clips (already frontal 256x256 face crops) resized to 64 px, written with the
# project's own dataset writer. Independent of the preprocessing stage so stage-1 tests stand alone.
FIXTURE_CLIPS = ("M030_front_neutral_level1_001.mp4", "W009_front_happy_level3_001.mp4")


def decode_frames(path: Path, size: int, max_frames: int):
    """Decode up to ``max_frames`` RGB frames of ``path`` resized to size x size (uint8)."""
    import imageio_ffmpeg
    import numpy as np
    from PIL import Image

    gen = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24")
    meta = next(gen)
    w, h = meta["size"]
    out = []
    try:
        for raw in gen:
            img = np.frombuffer(raw, np.uint8).reshape(h, w, 3)
            side = min(h, w)
            y0, x0 = (h - side) // 2, (w - side) // 2
            img = Image.fromarray(img[y0:y0 + side, x0:x0 + side]).resize((size, size), Image.LANCZOS)
            out.append(np.asarray(img))
            if len(out) >= max_frames:
                break
    finally:
        gen.close()
    return out, float(meta.get("fps", 25.0))


def build_real_frames_zip(shared: Path, out: Path, size: int = 64, max_frames: int = 60) -> Path:
    from svgen.preprocessing.dataset import AlignedDatasetWriter

    with AlignedDatasetWriter(out, size) as w:
        for name in FIXTURE_CLIPS:
            src = shared / "data" / "videos" / "dreamtalk_mead" / name
            frames, fps = decode_frames(src, size, max_frames)
            clip = name.rsplit(".", 1)[0]
            w.add_clip(clip, source=str(src), fps=fps)
            for i, f in enumerate(frames):
                w.add_frame(clip, f, source_frame=i, quad=None, detected=True)
    return out


@pytest.fixture(scope="session")
def real_frames_zip(shared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """aligned.zip with 2 real clips x 60 frames at 64 px (session-wide, read-only)."""
    return build_real_frames_zip(shared, tmp_path_factory.mktemp("realzip") / "aligned.zip")


@pytest.fixture(scope="session")
def real_frames_zip32(shared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same frames at 32 px, for the fastest tests."""
    return build_real_frames_zip(shared, tmp_path_factory.mktemp("realzip32") / "aligned.zip", size=32)
