"""Fixtures shared by the inversion tests."""
from __future__ import annotations

from pathlib import Path

import pytest

from svgen.preprocessing.dataset import AlignedDataset, AlignedDatasetWriter


def cut_clips(src_zip: Path, out: Path, frames: int) -> Path:
    """Copy of an aligned.zip with every clip cut to its first ``frames`` frames."""
    src = AlignedDataset(src_zip)
    with AlignedDatasetWriter(out, src.resolution) as w:
        for name, info in src.clips.items():
            w.add_clip(name, source=info.source, fps=info.fps)
            for f in src.read_clip(name, 0, frames):
                w.add_frame(name, f)
    return out


@pytest.fixture(scope="module")
def short_zip20(real_frames_zip32, tmp_path_factory) -> Path:
    """The two real 32 px clips cut to 20 frames each."""
    return cut_clips(real_frames_zip32, tmp_path_factory.mktemp("short20") / "aligned.zip", 20)


@pytest.fixture(scope="module")
def short_zip24(real_frames_zip32, tmp_path_factory) -> Path:
    """The two real 32 px clips cut to 24 frames each."""
    return cut_clips(real_frames_zip32, tmp_path_factory.mktemp("short24") / "aligned.zip", 24)
