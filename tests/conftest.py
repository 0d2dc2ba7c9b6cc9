"""Shared fixtures: where ../shared is, small real-data fixtures, GPU skipping."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("MKL_CBWR", "AUTO")   # as the CLI sets it (svgen/cli/main.py), before torch calls MKL
if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs pytest-xdist workers side by side (TEST_JOBS, one per core): each worker, and every
    # svgen process a test starts, computes on one thread, so N workers fill N cores instead of N x N
    # threads fighting over them (two 2-thread trainings on 2 cores ran 3.5x slower than one after the other)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
import torch  # noqa: E402

if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

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


@pytest.fixture(scope="session")
def _cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("svgen-cache")


@pytest.fixture(autouse=True)
def _quiet_progress(monkeypatch: pytest.MonkeyPatch, _cache_dir: Path) -> None:
    monkeypatch.setenv("SVGEN_NO_PROGRESS", "1")
    monkeypatch.setenv("SVGEN_CACHE", str(_cache_dir))  # tuned generators never land in ~/.cache


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


# -- stage 1: an untrained tiny generator (owner: stage-1 networks) ------------------------------
def build_random_generator(path: Path, resolution: int = 32, seed: int = 0) -> Path:
    """Save an untrained ``tiny`` preset G/G_ema/D (fixed seed) as an svgen ``generator.pt``.

    ``w_avg`` is set to the mean of mapped random z, as a trained network would have it, so
    truncation behaves normally. Plumbing only: its images are not faces.
    """
    import copy

    from svgen.stage1_image_gan.checkpoints import save_generator
    from svgen.stage1_image_gan.importers import estimate_w_avg
    from svgen.stage1_image_gan.networks import Discriminator, Generator
    from svgen.stage1_image_gan.presets import get_preset

    preset = get_preset("tiny", resolution)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        G = Generator(preset.G)
        D = Discriminator(preset.D)
    with torch.no_grad():
        G.mapping.w_avg.copy_(estimate_w_avg(G, num=1024, seed=seed))
    G_ema = copy.deepcopy(G)
    return save_generator(path, preset, G, G_ema, D, meta={"note": "untrained (test fixture)"})


@pytest.fixture(scope="session")
def random_generator_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained tiny 32 px svgen ``generator.pt`` (session-wide, read-only)."""
    return build_random_generator(tmp_path_factory.mktemp("randomG") / "generator.pt")


# -- stage 1: a briefly trained tiny generator (owner: stage-1 training) -------------------------
# The tiny preset trained on ``real_frames_zip32`` for a fixed, short budget with the real training
# loop (ADA, lazy regularisation, EMA). Its run folder (checkpoints, samples, log.jsonl and the SWD
# curve in metrics.jsonl) sits next to the returned generator.pt.
TINY_GENERATOR_KIMG = 1.0


@pytest.fixture(scope="session")
def tiny_generator_path(real_frames_zip32: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``generator.pt`` of the tiny preset (32 px) trained for TINY_GENERATOR_KIMG kimg (read-only)."""
    from svgen.stage1_image_gan.presets import get_preset
    from svgen.stage1_image_gan.train import TrainConfig, train

    out = tmp_path_factory.mktemp("tinyG") / "run"
    cfg = TrainConfig(data=str(real_frames_zip32), out=str(out), preset=get_preset("tiny", 32),
                      kimg=TINY_GENERATOR_KIMG, snap_kimg=TINY_GENERATOR_KIMG, seed=0,
                      swd_images=120, grid_size=16, device="cpu")
    return train(cfg)
