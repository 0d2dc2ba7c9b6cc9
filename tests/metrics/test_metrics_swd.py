"""Sliced Wasserstein distance on Laplacian-pyramid patches: sanity on real frames."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from svgen.metrics.swd import laplacian_pyramid, sliced_wasserstein, swd_per_level
from svgen.preprocessing.dataset import AlignedDataset

# Fewer patches and directions than the defaults keep these tests fast; the effects are large.
FAST = {"descriptors_per_image": 32, "num_directions": 128}


def swd(a, b, **kw):
    return sliced_wasserstein(a, b, **{**FAST, **kw})


@pytest.fixture(scope="module")
def frames(real_frames_zip) -> dict[str, torch.Tensor]:
    """uint8 [60, 3, 64, 64] per clip (two different people)."""
    ds = AlignedDataset(real_frames_zip)
    return {name: torch.from_numpy(ds.read_clip(name)).permute(0, 3, 1, 2).contiguous()
            for name in ds.clips}


def test_laplacian_pyramid_reconstructs():
    x = torch.rand(2, 3, 64, 64) * 255
    levels = laplacian_pyramid(x, min_res=16)
    assert [lv.shape[-1] for lv in levels] == [64, 32, 16]
    from svgen.metrics.swd import _pyr_up

    rec = levels[-1]
    for band in reversed(levels[:-1]):
        rec = band + _pyr_up(rec)
    assert torch.allclose(rec, x, atol=1e-3)


def test_identical_sets_give_zero_and_same_distribution_is_small(frames):
    a, b = frames.values()
    assert swd(a, a) == 0.0
    same = swd(a[0::2], a[1::2])           # interleaved frames of one clip
    other_person = swd(a, b)
    assert 0 < same < 0.2 * other_person


def test_shifted_distributions_score_higher(frames):
    a = next(iter(frames.values()))
    real, held_out = a[0::2], a[1::2]
    base = swd(real, held_out)
    blurred = F.interpolate(F.avg_pool2d(held_out.float(), 4), scale_factor=4, mode="nearest")
    noisy = held_out.float() + torch.randn(held_out.shape, generator=torch.Generator().manual_seed(0)) * 25
    darker = held_out.float() * 0.8
    for shifted in (blurred, noisy, darker):
        shifted = shifted.clamp(0, 255).to(torch.uint8)
        assert swd(real, shifted) > 3 * base
    # blur removes the fine band: the finest level reacts most
    lv_base = swd_per_level(real, held_out, **FAST)
    lv_blur = swd_per_level(real, blurred.clamp(0, 255).to(torch.uint8), **FAST)
    assert len(lv_blur) == 3 and lv_blur[0] > 5 * lv_base[0]


def test_deterministic_and_input_ranges(frames):
    a, b = frames.values()
    assert swd(a, b, seed=3) == swd(a, b, seed=3)
    assert swd(a, b, seed=3) != swd(a, b, seed=4)
    # float images in [-1, 1] give the same value as uint8 (up to rounding)
    bf = b.float() / 127.5 - 1
    assert swd(a, bf) == pytest.approx(swd(a, b), rel=1e-3)
    # different set sizes are compared at common quantiles
    assert np.isfinite(swd(a, b[:17]))
    # the global RNG is untouched
    state = torch.get_rng_state()
    swd(a[:4], b[:4])
    assert torch.equal(state, torch.get_rng_state())


def test_normalisation_modes(frames):
    a = next(iter(frames.values()))
    darker = (a.float() * 0.7).to(torch.uint8)
    # ProGAN's per-set normalisation hides a global contrast change; ours (real stats) does not
    assert swd(a, darker, normalize="real") > 3 * swd(a, darker, normalize="each")


def test_bad_inputs():
    with pytest.raises(ValueError, match="differ in shape"):
        swd(torch.zeros(2, 3, 32, 32), torch.zeros(2, 3, 16, 16))
    with pytest.raises(ValueError, match="expected images"):
        swd(torch.zeros(3, 32, 32), torch.zeros(3, 32, 32))
