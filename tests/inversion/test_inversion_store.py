"""The invert pipeline over aligned.zip -> latents.h5: contents, resume, refusals, clear errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from svgen.inversion.api import invert_dataset, invert_images
from svgen.inversion.encoders import build_encoder, make_encoder_config
from svgen.inversion.losses import ReconstructionLoss
from svgen.inversion.latent_store import LatentStore, partial_path
from svgen.preprocessing.dataset import AlignedDataset
from svgen.stage1_image_gan.networks import Generator
from svgen.stage1_image_gan.presets import get_preset
from svgen.utils.errors import SvgenError


class Interrupt(Exception):
    pass


@pytest.fixture(scope="module")
def nets():
    """An (untrained) tiny generator and W+/W encoders: the pipeline does not care about quality."""
    torch.manual_seed(0)
    G = Generator(get_preset("tiny", 32).G).eval().requires_grad_(False)
    encs = {}
    for space in ("w+", "w"):
        E = build_encoder(make_encoder_config(space, "tiny", G.num_ws, G.w_dim, 32), G.mapping.w_avg)
        encs[space] = E.eval().requires_grad_(False)
    return G, encs


def test_invert_dataset_contents_match_encoder(nets, real_frames_zip, tmp_path):
    G, encs = nets
    data = AlignedDataset(real_frames_zip)  # 64 px frames: the encoder resizes to its 32 px input
    for space, E in encs.items():
        out = tmp_path / f"latents_{space}.h5"
        invert_dataset(G, E, real_frames_zip, out, generator_sha256="g" * 64, encoder_sha256="e" * 64,
                       batch=16, extra_attrs={"data_path": str(real_frames_zip)})
        assert out.is_file() and not partial_path(out).exists()
        with LatentStore(out) as store:
            assert (store.space, store.num_ws, store.w_dim, store.resolution) == (space, 8, G.w_dim, 32)
            assert store.generator_sha256 == "g" * 64 and store.encoder_sha256 == "e" * 64
            assert set(store.clips) == set(data.clips) and store.total_frames == len(data)
            clip = store.clips[1]
            w = store.read(clip, 10, 14)
            assert w.shape == ((4, 8, G.w_dim) if space == "w+" else (4, G.w_dim))
            frames = data.read_clip(clip, 10, 4)
            direct = invert_images(G, E, frames)
            assert np.allclose(store.read(clip, 10, 14, as_wplus=True), direct, atol=1e-5)
            assert store.detected(clip).all() and store.fps(clip) == pytest.approx(data.clips[clip].fps)
            assert store.f.attrs["data_path"] == str(real_frames_zip)


def test_interrupted_invert_resumes_to_identical_store(nets, short_zip20, tmp_path):
    G, encs = nets
    E = encs["w+"]
    kw = dict(generator_sha256="g" * 64, encoder_sha256="e" * 64, batch=4, refine_steps=2,
              temporal_weight=0.5, seed=3, flush_frames=4)  # flush (= resume point) every batch
    full = tmp_path / "full.h5"
    invert_dataset(G, E, short_zip20, full, **kw)

    out = tmp_path / "resumed.h5"
    calls = []

    def stop(clip, a, b):
        calls.append((clip, a))
        if len(calls) == 7:  # in the middle of the second clip
            raise Interrupt

    with pytest.raises(Interrupt):
        invert_dataset(G, E, short_zip20, out, on_chunk=stop, **kw)
    assert not out.exists() and partial_path(out).exists()
    with LatentStore(partial_path(out), allow_partial=True) as st:
        done = [int(st.f["clips"][c].attrs["frames_done"]) for c in st.clips]
    assert sorted(done) == [8, 20]
    with pytest.raises(SvgenError, match="incomplete"):
        LatentStore(partial_path(out))
    # a different generator / different refinement settings are refused on resume
    with pytest.raises(SvgenError, match="different generator_sha256"):
        invert_dataset(G, E, short_zip20, out, resume=True, **dict(kw, generator_sha256="x" * 64))
    with pytest.raises(SvgenError, match="refine_steps"):
        invert_dataset(G, E, short_zip20, out, resume=True, **dict(kw, refine_steps=3))
    with pytest.raises(SvgenError, match="refine_lr"):
        invert_dataset(G, E, short_zip20, out, resume=True, **dict(kw, refine_lr=0.1))
    with pytest.raises(SvgenError, match="refine_msssim"):
        invert_dataset(G, E, short_zip20, out, resume=True, loss=ReconstructionLoss(msssim=0.0), **kw)
    resumed_chunks = []
    invert_dataset(G, E, short_zip20, out, resume=True,
                   on_chunk=lambda c, a, b: resumed_chunks.append((a, b)), **dict(kw, batch=16, flush_frames=64))
    assert resumed_chunks == [(8, 20)]  # only the missing frames, in the first run's batches of 4
    with LatentStore(full) as a, LatentStore(out) as b:
        for clip in a.clips:
            assert np.array_equal(a.read(clip), b.read(clip)), clip


def test_store_errors_are_clear(tmp_path, nets, short_zip20):
    G, encs = nets
    # (a foreign HDF5 file: tests/utils/test_utils_foundation.py)
    good = tmp_path / "good.h5"
    invert_dataset(G, encs["w"], short_zip20, good, generator_sha256="a" * 64)
    data = good.read_bytes()
    trunc = tmp_path / "trunc.h5"
    trunc.write_bytes(data[: len(data) // 2])
    with pytest.raises(SvgenError, match="truncated or corrupt"):
        LatentStore(trunc)
    with pytest.raises(SvgenError, match="does not exist"):
        LatentStore(tmp_path / "none.h5")
    with LatentStore(good) as store:
        store.check_generator("a" * 64)
        with pytest.raises(SvgenError, match="another generator"):
            store.check_generator("b" * 64)
        with pytest.raises(SvgenError, match="no clip named"):
            store.read("nope")
    # a damaged partial store cannot be resumed, and says so in one line
    part = partial_path(tmp_path / "again.h5")
    part.write_bytes(data[:2000])
    with pytest.raises(SvgenError, match="cannot resume: partial store is unreadable") as err:
        invert_dataset(G, encs["w"], short_zip20, tmp_path / "again.h5",
                       generator_sha256="a" * 64, resume=True)
    assert "\n" not in str(err.value)
    # mismatched encoder and generator shapes
    other = build_encoder(make_encoder_config("w+", "tiny", 6, G.w_dim, 16))
    with pytest.raises(SvgenError, match="encoder predicts 6x"):
        invert_images(G, other, np.zeros((1, 32, 32, 3), np.uint8))
