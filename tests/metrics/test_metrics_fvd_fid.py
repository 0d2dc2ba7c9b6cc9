"""FVD/FID plumbing tests with small TorchScript detectors written by the test (same call signature
as StyleGAN-V's I3D and stylegan2-ada's Inception). PLUMBING TESTS: they check protocol counts,
caching, uint8 handling and detector discovery, not the published numbers. The real detectors are
exercised by ``test_real_detectors`` when the files are present (SVGEN_DETECTORS)."""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from svgen.metrics import fvd as fvd_mod
from svgen.metrics.detectors import (I3D, INCEPTION, Detector, DetectorMissing, find_detector,
                                     load_detector, to_uint8)
from svgen.metrics.fid import compute_fid
from svgen.metrics.frechet import StatsCache
from svgen.metrics.fvd import PROTOCOLS, FVDProtocol, compute_fvd, plan_real_clips
from svgen.preprocessing.dataset import AlignedDataset
from svgen.utils.io import file_sha256


class ToyI3D(torch.nn.Module):
    """Plumbing stand-in for i3d_torchscript.pt: uint8 [B, 3, T, H, W] -> [B, 400]."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.register_buffer("proj", torch.randn(3 * 4 * 4 * 4, 400, generator=g) / 8)

    def forward(self, x: torch.Tensor, rescale: bool = False, resize: bool = False,
                return_features: bool = False) -> torch.Tensor:
        if x.dtype != torch.uint8:
            raise RuntimeError("toy I3D expects uint8 videos")
        v = x.float()
        if rescale:
            v = v / 127.5 - 1.0
        pooled = F.adaptive_avg_pool3d(v, (4, 4, 4)).flatten(1)   # keeps coarse temporal structure
        return pooled @ self.proj


class ToyInception(torch.nn.Module):
    """Plumbing stand-in for inception-2015-12-05.pt: uint8 [B, 3, H, W] -> [B, 32]."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(1)
        self.register_buffer("proj", torch.randn(3 * 4 * 4, 32, generator=g) / 4)

    def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        if x.dtype != torch.uint8:
            raise RuntimeError("toy Inception expects uint8 images")
        return F.adaptive_avg_pool2d(x.float() / 255.0, (4, 4)).flatten(1) @ self.proj


TOY_INCEPTION = dataclasses.replace(INCEPTION, feature_dim=32)


@pytest.fixture(autouse=True)
def _one_blas_thread():
    """400x400 decompositions: multi-threaded OpenBLAS crawls on a loaded 2-core machine."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        yield


@pytest.fixture(scope="module")
def detector_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("detectors")
    torch.jit.script(ToyI3D()).save(str(d / I3D.filename))
    torch.jit.script(ToyInception()).save(str(d / INCEPTION.filename))
    return d


class ClipSource:
    """Fake-video source replaying real clips from t=0 (optionally frozen or noisy)."""

    def __init__(self, dataset: AlignedDataset, mode: str = "real"):
        self.ds, self.mode = dataset, mode
        self.calls = []

    def videos(self, num, frame_indices, seed):
        self.calls.append((num, list(frame_indices), seed))
        rng = np.random.default_rng(seed)
        clips = list(self.ds.clips)
        out = []
        for _ in range(num):
            clip = clips[int(rng.integers(len(clips)))]
            idx = [0] * len(frame_indices) if self.mode == "frozen" else list(frame_indices)
            v = np.stack([self.ds.read_frame(clip, i) for i in idx])
            if self.mode == "noise":
                v = rng.integers(0, 256, v.shape, dtype=np.uint8)
            out.append(torch.from_numpy(v).permute(0, 3, 1, 2))
        return torch.stack(out)

    def describe(self):
        return {"kind": f"test clips ({self.mode})"}


def test_plan_real_clips_follows_stylegan_v():
    lengths = {"a": 60, "b": 128, "c": 10, "d": 127}
    plan, info = plan_real_clips(lengths, 16, 1, max_real=2048, seed=0)
    assert [c for c, _ in plan] == ["a", "b", "d"]
    assert info["num_real_clips_used"] == 3 and info["num_real_videos_too_short"] == 1
    for clip, idx in plan:
        assert len(idx) == 16 and np.all(np.diff(idx) == 1) and idx[0] >= 0 and idx[-1] < lengths[clip]
    plan, info = plan_real_clips(lengths, 16, 8, max_real=2048, seed=0)      # 128f subsample 8
    assert [c for c, _ in plan] == ["b"] and np.all(np.diff(plan[0][1]) == 8)
    assert plan[0][1][0] in range(8) and plan[0][1][-1] <= 127
    plan, info = plan_real_clips(lengths, 16, 1, max_real=2, seed=0)
    assert [c for c, _ in plan] == ["a", "b"] and info["num_real_clips_requested"] == 2
    # offsets cover exactly 0 .. n - T*stride + stride - 1
    offsets = {int(plan_real_clips({"x": 20}, 4, 3, seed=s)[0][0][1][0]) for s in range(300)}
    assert offsets == set(range(0, 20 - 12 + 3))
    plan, info = plan_real_clips({"long": 500}, 16, 1, max_real=50, seed=0, sampling="windows")
    assert len(plan) == 50 and info["real_sampling"] == "windows"
    assert len({int(i[0]) for _, i in plan}) == 50
    assert PROTOCOLS["fvd128_sub8"].span == 128 and PROTOCOLS["fvd128"].num_frames == 128


def test_detector_discovery_and_messages(tmp_path, monkeypatch, detector_dir):
    monkeypatch.delenv("SVGEN_DETECTORS", raising=False)
    with pytest.raises(DetectorMissing) as err:
        find_detector(I3D, tmp_path)
    msg = str(err.value)
    assert "i3d_torchscript.pt" in msg and I3D.url in msg and str(tmp_path) in msg and "fvd16" in msg
    monkeypatch.setenv("SVGEN_DETECTORS", os.pathsep.join([str(tmp_path), str(detector_dir)]))
    assert find_detector(I3D) == detector_dir / I3D.filename
    det = load_detector(I3D)
    assert det.sha256 == file_sha256(detector_dir / I3D.filename)
    assert det.record()["kwargs"] == {"rescale": True, "resize": True, "return_features": True}
    bad = tmp_path / I3D.filename
    bad.write_bytes(b"not torchscript")
    with pytest.raises(Exception) as err2:
        load_detector(I3D, tmp_path)
    assert "TorchScript" in str(err2.value) and str(bad) in str(err2.value)
    with pytest.raises(ValueError):
        det.features(torch.zeros(1, 3, 4, 8, 8))  # float input is refused before the detector


def test_to_uint8_rounding():
    x = torch.tensor([-1.5, -1.0, 0.0, 0.999, 1.0, 2.0])
    assert to_uint8(x).tolist() == [0, 0, 128, 255, 255, 255]
    assert to_uint8(x).dtype == torch.uint8


def test_fvd_plumbing_counts_cache_and_ordering(real_frames_zip32, detector_dir, tmp_path, monkeypatch):
    ds = AlignedDataset(real_frames_zip32)
    ds_id = file_sha256(real_frames_zip32)
    det = load_detector(I3D, detector_dir)
    cache = StatsCache(tmp_path / "cache")
    proto = PROTOCOLS["fvd16"]
    source = ClipSource(ds, "real")
    res = compute_fvd(proto, ds, ds_id, source, det, num_fake=12, seed=3, cache=cache, method="svd")
    p = res["protocol"]
    assert p["num_real_clips_used"] == 2 and p["num_real_videos_eligible"] == 2
    assert p["num_fake_clips"] == 12 and p["num_frames"] == 16 and p["stride"] == 1
    assert p["detector"]["sha256"] == det.sha256 and p["sqrt_method"] == "svd"
    assert p["real_stats_cache"] == "stored" and "warning" in p     # 2 < 2048 real clips is flagged
    assert p["frames_per_detector_batch"] == 128
    assert [c[0] for c in source.calls] == [8, 4]                    # 128 frames per detector batch
    assert all(c[1] == list(range(16)) for c in source.calls)        # fake clips from t=0
    # cached real statistics: the real data is not read again and the value is identical
    monkeypatch.setattr(fvd_mod, "real_video_stats", lambda *a, **k: pytest.fail("real stats recomputed"))
    again = compute_fvd(proto, ds, ds_id, ClipSource(ds, "real"), det, num_fake=12, seed=3, cache=cache,
                        method="svd")
    assert again["protocol"]["real_stats_cache"] == "hit" and again["value"] == pytest.approx(res["value"])
    monkeypatch.undo()
    # (svd: scipy's sqrtm is slow on the rank-deficient covariances of a dozen clips)
    frozen = compute_fvd(proto, ds, ds_id, ClipSource(ds, "frozen"), det, num_fake=12, seed=3, cache=cache,
                         method="svd")
    noise = compute_fvd(proto, ds, ds_id, ClipSource(ds, "noise"), det, num_fake=12, seed=3, cache=cache,
                        method="svd")
    assert res["value"] < frozen["value"] < noise["value"]
    # subsampled protocol: clips too short for 16 x 8 frames -> clear error; strided fake frames
    with pytest.raises(ValueError, match="128 frames"):
        compute_fvd(PROTOCOLS["fvd128_sub8"], ds, ds_id, source, det, num_fake=2)
    short = FVDProtocol("fvd8_sub4", 8, 4, "custom")
    src = ClipSource(ds, "real")
    r = compute_fvd(short, ds, ds_id, src, det, num_fake=3, seed=0, method="svd")
    assert src.calls[0][1] == [0, 4, 8, 12, 16, 20, 24, 28] and r["protocol"]["num_fake_clips"] == 3

    class FloatSource(ClipSource):
        def videos(self, num, frame_indices, seed):
            return super().videos(num, frame_indices, seed).float()

    with pytest.raises(ValueError, match="uint8"):
        compute_fvd(proto, ds, ds_id, FloatSource(ds), det, num_fake=2, cache=cache)


def test_fid_plumbing(real_frames_zip32, detector_dir, tmp_path):
    ds = AlignedDataset(real_frames_zip32)
    det = Detector(TOY_INCEPTION, detector_dir / INCEPTION.filename)
    cache = StatsCache(tmp_path / "cache")
    src = ClipSource(ds, "real")
    res = compute_fid(ds, "zip32", src, det, num_fake_frames=40, seed=1, cache=cache, batch=32)
    p = res["protocol"]
    assert p["num_real_frames"] == len(ds) == 120 and p["real_selection"] == "all frames"
    assert p["num_fake_frames"] == 40 and p["num_fake_videos"] == 3 and p["fake_video_frames"] == 16
    assert all(c[1] == list(range(16)) for c in src.calls) and sum(c[0] for c in src.calls) == 3
    noise = compute_fid(ds, "zip32", ClipSource(ds, "noise"), det, num_fake_frames=40, seed=1, cache=cache,
                        method="svd")
    assert noise["protocol"]["real_stats_cache"] == "hit"
    assert res["value"] < noise["value"]
    sub = compute_fid(ds, "zip32", src, det, num_fake_frames=16, max_real=50, seed=1, cache=cache)
    assert sub["protocol"]["num_real_frames"] == 50 and sub["protocol"]["real_stats_cache"] == "stored"


def _real_detector_dir():
    for d in os.environ.get("SVGEN_DETECTORS", "").split(os.pathsep):
        if d and (Path(d) / I3D.filename).is_file() and (Path(d) / INCEPTION.filename).is_file():
            return Path(d)
    return None


@pytest.mark.slow
@pytest.mark.skipif(_real_detector_dir() is None, reason="real I3D/Inception files not in SVGEN_DETECTORS")
def test_real_detectors(real_frames_zip):
    d = _real_detector_dir()
    ds = AlignedDataset(real_frames_zip)
    i3d, inception = load_detector(I3D, d), load_detector(INCEPTION, d)
    clip = torch.from_numpy(ds.read_clip(next(iter(ds.clips)), 0, 16)).permute(3, 0, 1, 2)[None]
    f = i3d.features(clip)
    assert f.shape == (1, 400) and np.isfinite(f).all()
    g = inception.features(torch.from_numpy(np.stack([ds[0], ds[1]])).permute(0, 3, 1, 2).contiguous())
    assert g.shape == (2, 2048) and np.isfinite(g).all()
    res = compute_fvd(PROTOCOLS["fvd16"], ds, "real", ClipSource(ds, "real"), i3d, num_fake=4)
    noise = compute_fvd(PROTOCOLS["fvd16"], ds, "real", ClipSource(ds, "noise"), i3d, num_fake=4)
    assert res["value"] < noise["value"]
